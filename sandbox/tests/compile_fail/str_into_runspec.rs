// A &str is not a VerifiedRootfs: it cannot become a RunSpec.
use perry_runtime::native::{LeaseConfig, RunSpec};

fn main() {
    let leases: LeaseConfig = unimplemented!();
    let _spec = RunSpec::new("/tmp/evil", vec!["true".into()], leases);
}
