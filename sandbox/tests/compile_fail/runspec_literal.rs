// RunSpec's rootfs field is private: a struct literal cannot swap in another root filesystem.
use perry_runtime::native::RunSpec;
use perry_runtime::pull::VerifiedRootfs;

fn main() {
    let spec: RunSpec = unimplemented!();
    let other: VerifiedRootfs = unimplemented!();
    let _forged = RunSpec {
        rootfs: other,
        ..spec
    };
}
