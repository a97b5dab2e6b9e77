// A PathBuf is not a VerifiedRootfs: it cannot become a RunSpec.
use perry_runtime::native::{LeaseConfig, RunSpec};

fn main() {
    let leases: LeaseConfig = unimplemented!();
    let _spec = RunSpec::new(std::path::PathBuf::from("/tmp/evil"), vec!["true".into()], leases);
}
