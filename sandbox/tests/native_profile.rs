//! The tier profile inside a real sandbox: the probe binary (`perry-confine-probe`, which
//! applies nothing itself) runs under the runner with the `hardened` [`ProfileStep`], tries
//! ptrace, keyctl, bpf, mount, unshare, inet sockets and io_uring, and each must be refused —
//! and each refusal must appear in the run's `denied_syscalls`, which bubblewrap cannot report.

mod native_support;

use std::path::Path;

use native_support::{hardened, rootfs, text};
use perry_runtime::native::{run, MinimalFinalStep};

/// Copy the probe binary and the shared libraries it links into the busybox rootfs.
fn install_probe(root: &Path) {
    let bin = env!("CARGO_BIN_EXE_perry-confine-probe");
    std::fs::copy(bin, root.join("bin/probe")).unwrap();
    let ldd = std::process::Command::new("ldd").arg(bin).output().unwrap();
    assert!(ldd.status.success(), "ldd {bin}");
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(Path::new);
        if let Some(lib) = path {
            let dst = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dst).unwrap();
        }
    }
}

const PROBES: [&str; 12] = [
    "ptrace",
    "keyctl",
    "bpf",
    "mount",
    "unshare",
    "unshare_user",
    "socket_inet",
    "io_uring_setup",
    "clone_newuser",
    "clone3",
    "thread",
    "status",
];

fn probe_argv() -> Vec<String> {
    let mut argv: Vec<String> = vec!["/bin/probe".to_string()];
    argv.extend(PROBES.iter().map(|s| s.to_string()));
    argv
}

#[test]
fn hardened_profile_refuses_and_reports_each_denied_syscall() {
    let r = rootfs();
    install_probe(&r.rootfs);
    let o = run(&r.spec(probe_argv()), &hardened()).expect("run");
    assert_eq!(o.exit_code, Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&o.stdout), text(&o.stderr)));
    for p in [
        "ptrace",
        "keyctl",
        "bpf",
        "mount",
        "unshare",
        "unshare_user",
        "socket_inet",
        "io_uring_setup",
        "clone_newuser",
    ] {
        assert_eq!(v[p], "errno:1", "{p} was not refused with EPERM: {v}");
    }
    assert_eq!(v["clone3"], "errno:38", "clone3 must be ENOSYS: {v}");
    assert_eq!(v["thread"], "ok", "glibc threads must still work: {v}");
    let status = v["status"].as_str().unwrap();
    for f in [
        "CapInh:=0000000000000000",
        "CapPrm:=0000000000000000",
        "CapEff:=0000000000000000",
        "CapBnd:=0000000000000000",
        "CapAmb:=0000000000000000",
        "NoNewPrivs:=1",
        "Seccomp:=2",
    ] {
        assert!(status.contains(f), "{f} missing in {status}");
    }
    // The report: every refused call with the errno it got, and nothing the filter allowed.
    let denied: Vec<(&str, u32)> = o
        .denied_syscalls
        .iter()
        .map(|d| (d.name.as_str(), d.errno))
        .collect();
    for want in [
        ("ptrace", 1),
        ("keyctl", 1),
        ("bpf", 1),
        ("mount", 1),
        ("unshare", 1),
        ("socket", 1),
        ("io_uring_setup", 1),
        ("clone", 1),
        ("clone3", 38),
    ] {
        assert!(denied.contains(&want), "{want:?} not reported: {denied:?}");
    }
    let profile = perry_profiles::Profile::for_tier(
        perry_policies::Tier::Hardened,
        None,
        &Default::default(),
    )
    .unwrap();
    for d in &o.denied_syscalls {
        assert!(d.count >= 1);
        assert_ne!(
            profile.seccomp.rules().access(&d.name),
            perry_profiles::Access::Allowed,
            "an unconditionally allowed syscall was reported denied: {d:?}"
        );
    }
}

#[test]
fn without_a_supervisor_nothing_is_reported_and_the_floor_still_holds() {
    let r = rootfs();
    install_probe(&r.rootfs);
    let o = run(&r.spec(probe_argv()), &MinimalFinalStep).expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(o.denied_syscalls.is_empty());
    // No seccomp here: the namespaces and the capability drop alone stop these.
    for p in ["mount", "unshare", "unshare_user", "clone_newuser"] {
        assert_ne!(v[p], "ok", "{p} succeeded under the floor: {v}");
    }
    assert!(v["status"].as_str().unwrap().contains("Seccomp:=0"));
}

#[test]
fn every_refusal_is_answered_and_counted() {
    // 500 refused calls in one run: each is a round trip to the supervisor and must neither
    // hang nor be lost.
    let r = rootfs();
    install_probe(&r.rootfs);
    let mut argv: Vec<String> = vec!["/bin/probe".to_string()];
    argv.extend(std::iter::repeat_n("keyctl".to_string(), 500));
    let o = run(&r.spec(argv), &hardened()).expect("run");
    assert_eq!(o.exit_code, Some(0), "{}", text(&o.stderr));
    let keyctl: Vec<_> = o
        .denied_syscalls
        .iter()
        .filter(|d| d.name == "keyctl")
        .collect();
    assert_eq!(keyctl.len(), 1, "{:?}", o.denied_syscalls);
    assert_eq!((keyctl[0].count, keyctl[0].errno), (500, 1));
}
