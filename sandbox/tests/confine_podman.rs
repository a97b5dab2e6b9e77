//! The committed OCI exports (`profiles/generated/<tier>.json`) under real podman + runc: the
//! same promises as the native profiles, checked by `perry-confine-probe` (no
//! confinement of its own) inside a container built from busybox-static, no registry involved.
//!
//! On these machines podman needs `--runtime runc --ulimit nofile=1024:1024 --ulimit
//! nproc=1024:1024`. For hardened and untrusted, `--security-opt no-new-privileges` is part of
//! the tier (and makes runc install the filter last, after its own setgroups/setuid, which those
//! allowlists do not contain).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROBE: &str = env!("CARGO_BIN_EXE_perry-confine-probe");

fn generated(tier: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles/generated")
        .join(format!("{tier}.json"))
}

/// A minimal rootfs: busybox-static with a few applets, the probe and the shared libraries it
/// links (found with ldd).
fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in ["sh", "true", "echo", "ls", "cat", "wc"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::copy(PROBE, root.join("bin/probe")).unwrap();
    let ldd = Command::new("ldd").arg(PROBE).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let dest = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dest).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )
    .unwrap();
    dir
}

const PROBES: [&str; 18] = [
    "unshare",
    "mount",
    "clone_newuser",
    "clone_newns",
    "keyctl",
    "bpf",
    "io_uring_setup",
    "clone3",
    "thread",
    "fork",
    "socket_inet",
    "socket_unix",
    "ptrace",
    "personality_set",
    "tiocsti",
    "tiocsti_hi",
    "status",
    "exec:/bin/sh,-c,echo hi",
];

fn podman(tier: &str) -> BTreeMap<String, String> {
    let root = rootfs();
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "run", "--rm", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg("--security-opt")
        .arg(format!("seccomp={}", generated(tier).display()));
    if tier != "default" {
        cmd.args(["--cap-drop", "all", "--user", "65534:65534"]);
    }
    if tier == "hardened" || tier == "untrusted" {
        cmd.args(["--security-opt", "no-new-privileges", "--read-only"]);
    }
    cmd.arg("--rootfs").arg(root.path());
    cmd.arg("/bin/probe").args(PROBES);
    let out = cmd.output().expect("podman installed");
    assert!(
        out.status.success(),
        "podman under {tier}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

fn check(tier: &str) {
    let got = podman(tier);
    let want_all = [
        ("unshare", "errno:1"),
        ("mount", "errno:1"),
        ("clone_newuser", "errno:1"),
        ("clone_newns", "errno:1"),
        ("keyctl", "errno:1"),
        ("bpf", "errno:1"),
        ("io_uring_setup", "errno:1"),
        ("clone3", "errno:38"),
        ("thread", "ok"),
        ("fork", "ok"),
        ("socket_unix", "ok"),
        ("exec:/bin/sh,-c,echo hi", "exit:0;out:hi"),
    ];
    for (p, w) in want_all {
        assert_eq!(got[p], w, "{tier}: {p}: {got:?}");
    }
    let strict = tier == "hardened" || tier == "untrusted";
    let want_inet = if tier == "default" { "ok" } else { "errno:1" };
    assert_eq!(got["socket_inet"], want_inet, "{tier}: {got:?}");
    if strict {
        // tiocsti_hi: TIOCSTI with junk in the upper half, which the kernel ignores; it matches
        // both the EPERM rule and the "above TIOCLINUX" allow rule, and EPERM must win.
        for p in ["ptrace", "personality_set", "tiocsti", "tiocsti_hi"] {
            assert_eq!(got[p], "errno:1", "{tier}: {p}: {got:?}");
        }
        assert!(
            got["status"].contains("NoNewPrivs:=1"),
            "{tier}: {}",
            got["status"]
        );
    } else {
        assert_eq!(
            got["ptrace"], "errno:3",
            "{tier}: let through to the kernel"
        );
    }
    if tier != "default" {
        for k in ["CapPrm", "CapEff", "CapBnd"] {
            assert!(
                got["status"].contains(&format!("{k}:=0000000000000000")),
                "{tier} {k}: {}",
                got["status"]
            );
        }
    }
    assert!(
        got["status"].contains("Seccomp:=2"),
        "{tier}: {}",
        got["status"]
    );
}

#[test]
fn default_export_runs_under_podman() {
    check("default");
}

#[test]
fn isolated_export_runs_under_podman() {
    check("isolated");
}

#[test]
fn hardened_export_runs_under_podman() {
    check("hardened");
}

#[test]
fn untrusted_export_runs_under_podman() {
    check("untrusted");
}
