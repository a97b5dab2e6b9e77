//! Nothing left behind: 1000 sandboxed runs, then no fd, mount, cgroup, process or uid lease of
//! ours remains. Its own test binary, so no other test's sandboxes run in this process meanwhile.

mod native_support;

use std::path::{Path, PathBuf};

use native_support::{hardened, rootfs, sandbox_processes};
use perry_runtime::native::{prepare_network_namespaces, run, FinalStep, MinimalFinalStep};

fn is_netns(e: &std::fs::DirEntry) -> bool {
    std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("net:["))
}

/// Open fds, not counting network namespace fds: the runner keeps a bounded pool of prepared
/// namespaces, refilled by a thread at any moment (counted by [`netns_fds`]).
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| !is_netns(e))
        .count()
}

/// The pool's namespaces plus the refill thread's fd of its own namespace.
fn netns_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(is_netns)
        .count()
}

fn mount_lines() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every run cgroup of ours (`perry-run-<our pid>-*`), in every hierarchy the runner uses.
fn our_cgroups() -> Vec<PathBuf> {
    let me = std::process::id();
    perry_runtime::native::run_cgroups()
        .into_iter()
        .filter(|(pid, _)| *pid == me)
        .map(|(_, dir)| dir)
        .collect()
}

/// OFD locks currently held on the lease file (by inode, from /proc/locks).
fn lease_locks(lease_file: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(lease_file) else {
        return 0;
    };
    let needle = format!(":{}", meta.ino());
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|l| l.contains("OFDLCK") && l.split_whitespace().any(|f| f.ends_with(&needle)))
        .count()
}

fn children_of_us() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            // ppid is the 2nd field after the ")" that closes comm.
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            if after.split_whitespace().nth(1) == Some(me.as_str()) {
                kids.push(pid);
            }
        }
    }
    kids
}

#[test]
fn a_thousand_runs_leave_nothing_behind() {
    let r = rootfs();
    lease_is_held_exactly_while_a_run_is_alive(&r);
    // As `perry-sandbox run` and the service do: namespaces prepared ahead.
    prepare_network_namespaces(1);
    let spec = r.spec(vec!["true".into()]);
    // Half the runs under the real hardened profile (Landlock, seccomp with its supervisor:
    // listener and its handoff socket), half under the floor.
    let profile = hardened();
    let steps: [&dyn FinalStep; 2] = [&MinimalFinalStep, &profile];
    assert_eq!(run(&spec, &profile).unwrap().exit_code, Some(0));
    // Warm up once so lazily initialised state (cgroup layout, lease file) exists.
    assert_eq!(run(&spec, &MinimalFinalStep).unwrap().exit_code, Some(0));
    let fds = fd_count();
    let mounts = mount_lines();
    let lease_file = spec.leases.lease_file();
    assert!(lease_file.exists());
    let t = std::time::Instant::now();
    for i in 0..1000 {
        let o = run(&spec, steps[i % 2]).unwrap_or_else(|e| panic!("run {i}: {e}"));
        assert_eq!(o.exit_code, Some(0), "run {i}: {o:?}");
        if i % 100 == 0 {
            assert_eq!(fd_count(), fds, "fd leak after run {i}");
            assert!(
                our_cgroups().is_empty(),
                "cgroups left after run {i}: {:?}",
                our_cgroups()
            );
        }
    }
    let elapsed = t.elapsed();
    eprintln!("1000 runs in {elapsed:?} ({:?}/run)", elapsed / 1000);
    assert_eq!(fd_count(), fds, "fd leak");
    assert!(
        netns_fds() <= 2,
        "netns pool over capacity: {}",
        netns_fds()
    );
    assert_eq!(mount_lines(), mounts, "mount table changed");
    assert!(
        our_cgroups().is_empty(),
        "cgroups left: {:?}",
        our_cgroups()
    );
    assert!(
        children_of_us().is_empty(),
        "child processes left: {:?}",
        children_of_us()
    );
    assert!(
        sandbox_processes().is_empty(),
        "sandbox processes left: {:?}",
        sandbox_processes()
    );
    assert_eq!(lease_locks(&lease_file), 0, "uid lease still held");
    // The rootfs is untouched and nothing was created next to it (no temp dirs).
    let entries: Vec<_> = std::fs::read_dir(r.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

fn lease_is_held_exactly_while_a_run_is_alive(r: &native_support::TestRoot) {
    let spec = r.sh("sleep 1");
    let lease_file = spec.leases.lease_file();
    let h = std::thread::spawn(move || run(&spec, &MinimalFinalStep).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        lease_locks(&lease_file),
        1,
        "a running sandbox must hold its lease"
    );
    let o = h.join().unwrap();
    assert_eq!(o.exit_code, Some(0));
    assert_eq!(lease_locks(&lease_file), 0, "lease not released");
}
