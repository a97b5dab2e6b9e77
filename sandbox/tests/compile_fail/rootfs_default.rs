// VerifiedRootfs has no Default.
use perry_runtime::pull::VerifiedRootfs;

fn main() {
    let _forged = VerifiedRootfs::default();
}
