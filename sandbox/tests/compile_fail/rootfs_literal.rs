// VerifiedRootfs has private fields: no struct literal outside perry-runtime.
use perry_runtime::pull::VerifiedRootfs;

fn main() {
    let _forged = VerifiedRootfs {
        path: std::path::PathBuf::from("/tmp/evil"),
    };
}
