//! Shared helpers for the native runner tests: a busybox root filesystem built in the test, and
//! specs with small limits.
#![allow(dead_code)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use perry_policies::UidRange;
use perry_runtime::native::{LeaseConfig, Limits, ProfileStep, RunSpec};

/// A temporary busybox rootfs plus a state dir for leases.
pub(crate) struct TestRoot {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub state: PathBuf,
}

/// Host uid range used by these tests.
pub(crate) const RANGE: UidRange = UidRange {
    start: 300_000,
    count: 4096,
};

/// Build `<tmp>/rootfs` from /bin/busybox (Debian busybox-static): every applet linked in /bin,
/// the mount points the runner needs, and a setuid copy of busybox for the privilege probe.
pub(crate) fn rootfs() -> TestRoot {
    let dir = tempfile::Builder::new()
        .prefix("perry-native-")
        .tempdir()
        .expect("tempdir");
    // The runner sets up the sandbox as an unprivileged host uid: every ancestor needs o+x.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in [
        "bin", "proc", "dev", "tmp", "etc", "work", "usr/bin", "sbin",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("/bin/busybox (Debian busybox-static) must be installed");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    let suid = rootfs.join("sbin/id");
    std::fs::copy("/bin/busybox", &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("bin/not-executable"), "data\n").unwrap();
    std::fs::set_permissions(
        rootfs.join("bin/not-executable"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let state = dir.path().join("state");
    TestRoot { dir, rootfs, state }
}

impl TestRoot {
    /// A spec running `sh -c script` as uid/gid 1000 with small limits.
    pub(crate) fn sh(&self, script: &str) -> RunSpec {
        self.spec(vec!["sh".into(), "-c".into(), script.into()])
    }

    /// A spec running `argv` as uid/gid 1000 with small limits.
    pub(crate) fn spec(&self, argv: Vec<String>) -> RunSpec {
        let mut s = RunSpec::new(
            perry_runtime::pull::VerifiedRootfs::unverified_for_tests(&self.rootfs),
            argv,
            LeaseConfig {
                state_dir: self.state.clone(),
                range: RANGE,
            },
        );
        s.uid = 1000;
        s.gid = 1000;
        s.limits = Limits {
            memory: 64 << 20,
            pids: 64,
            cpus: 1.0,
            nofile: 256,
            timeout: Duration::from_secs(20),
        };
        s.tmpfs_size = 8 << 20;
        s.stdout_limit = 1 << 20;
        s.stderr_limit = 1 << 20;
        s
    }
}

/// Host pids of processes whose real uid lies in the test range: sandbox processes.
pub(crate) fn sandbox_processes() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid: Option<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok());
        if let Some(uid) = uid {
            if (RANGE.start..RANGE.start + RANGE.count).contains(&uid) {
                let name = status.lines().next().unwrap_or("").to_string();
                found.push((pid, name));
            }
        }
    }
    found
}

/// Wait (bounded) until no sandbox process is left, returning what remains.
pub(crate) fn settle_processes() -> Vec<(u32, String)> {
    for _ in 0..100 {
        let left = sandbox_processes();
        if left.is_empty() {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sandbox_processes()
}

/// Lossy text of captured bytes.
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Path helper.
pub(crate) fn p(s: &str) -> &Path {
    Path::new(s)
}

/// The `hardened` tier's real profile as the runner's final step.
pub(crate) fn hardened() -> ProfileStep {
    hardened_with(perry_profiles::Grants::default())
}

/// The `hardened` profile with `grants`.
pub(crate) fn hardened_with(grants: perry_profiles::Grants) -> ProfileStep {
    let p = perry_profiles::Profile::for_tier(perry_policies::Tier::Hardened, None, &grants)
        .expect("hardened profile");
    ProfileStep::new(&p).expect("profile step")
}

/// The directories of a check-then-mount race: a host dir holding `ws` (with the file
/// `checked`) and `other` (with `swapped`), both world-writable for the sandbox's uid.
pub(crate) fn swap_workspaces() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = host.path().join("ws");
    let other = host.path().join("other");
    for (d, f) in [(&ws, "checked"), (&other, "swapped")] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join(f), f).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    (host, ws, other)
}
