//! The cgroup-migration warm-up `perry-sandbox run` starts before verifying: it must change
//! nothing about where this process lives (it "moves" the process into the cgroup it is already
//! in), and a sandbox run right after it still works and lands in its own cgroups.

mod native_support;

use native_support::{hardened, rootfs, text};
use perry_runtime::native::{run, warm_up_cgroup_migration};

#[test]
fn the_warm_up_moves_nothing_and_runs_still_work() {
    let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    warm_up_cgroup_migration();
    let r = rootfs();
    let o = run(&r.sh("cat /proc/self/cgroup"), &hardened()).expect("run");
    assert_eq!(o.exit_code, Some(0));
    // Inside its cgroup namespace the sandbox sees itself at the root of each hierarchy.
    assert!(
        text(&o.stdout).lines().all(|l| l.ends_with(":/")),
        "{}",
        text(&o.stdout)
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string("/proc/self/cgroup").unwrap(),
        before
    );
}
