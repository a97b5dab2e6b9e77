//! `perry-sandbox profiles export|show|diff` through the real binary.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn bin() -> Command {
    let mut c = Command::cargo_bin("perry-sandbox").unwrap();
    c.env_remove("PERRY_CONFIG").env_remove("XDG_CONFIG_HOME");
    c
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = bin().arg("--json").args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn export_prints_exactly_the_committed_files() {
    for tier in ["default", "isolated", "hardened", "untrusted"] {
        let committed = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("profiles/generated/{tier}.json")),
        )
        .unwrap();
        let out = bin()
            .args(["profiles", "export", "--tier", tier, "--format", "oci"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), committed, "{tier}");
    }
}

#[test]
fn unknown_tier_or_format_is_a_usage_error() {
    bin()
        .args(["profiles", "export", "--tier", "strict", "--format", "oci"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown tier `strict`"));
    bin()
        .args([
            "profiles", "export", "--tier", "hardened", "--format", "apparmor",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("apparmor"));
    bin()
        .args(["profiles", "show", "hardend"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown tier `hardend`"));
}

#[test]
fn show_hardened_explains_in_plain_words() {
    let out = bin()
        .args(["profiles", "show", "hardened"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "Tier `hardened`",
        "root filesystem   read-only",
        "network           none: only local AF_UNIX sockets",
        "privileges        none: every capability dropped",
        // What seccomp is, before any seccomp detail.
        "A system call is a request a program makes to the kernel",
        "EPERM (\"operation not permitted\")",
        "ENOSYS\n  (\"function not implemented\")",
        // Groups with their purpose, and what is refused in them.
        "@mount           Mounting and unmounting of file systems — all refused",
        "refused (EPERM): add_key, keyctl, request_key",
        "io_uring_setup",
        "clone3\n      always ENOSYS",
        "TIOCSTI; or TIOCLINUX",
        "capabilities      none",
        "no_new_privs      yes",
        "files             read-only everywhere; writable: /tmp",
        "TCP connect to    none",
        "memory            1GiB",
        "processes         256",
        "BPF: allowlist ",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn show_json_is_machine_readable() {
    let v = json(&["profiles", "show", "hardened"]);
    assert_eq!(v["ok"], true);
    let s = &v["show"];
    assert_eq!(s["profile"]["tier"], "hardened");
    assert_eq!(s["profile"]["caps"]["bounding"], serde_json::json!([]));
    assert_eq!(s["profile"]["no_new_privs"], true);
    assert_eq!(
        s["profile"]["landlock"]["tcp_connect"],
        serde_json::json!([])
    );
    assert!(s["allowed_count"].as_u64().unwrap() > 200);
    assert!(s["eperm"].as_array().unwrap().contains(&"mount".into()));
    assert!(!s["allowed"].as_array().unwrap().contains(&"mount".into()));
    let bpf = s["bpf_instructions"]["allowlist"].as_u64().unwrap();
    assert!(bpf > 100 && bpf < 4096, "{bpf}");
    let mount = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "@mount")
        .unwrap();
    assert!(mount["allowed"].as_array().unwrap().is_empty());
    // default keeps docker's capabilities.
    let d = json(&["profiles", "show", "default"]);
    assert_eq!(
        d["show"]["profile"]["caps"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        14
    );
}

#[test]
fn diff_shows_what_the_looser_tier_adds_and_nothing_the_other_way() {
    let out = bin()
        .args(["profiles", "diff", "default", "hardened"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("What `default` permits that `hardened` does not"),
        "{text}"
    );
    assert!(text.contains("ptrace"), "{text}");
    assert!(text.contains("Capabilities (14)"), "{text}");
    assert!(text.contains("read-only root: false -> true"), "{text}");

    let v = json(&["profiles", "diff", "default", "hardened"]);
    let d = &v["diff"];
    assert!(d["syscalls_allowed"]
        .as_array()
        .unwrap()
        .contains(&"ptrace".into()));
    assert!(d["syscalls_less_checked"]
        .as_array()
        .unwrap()
        .contains(&"socket".into()));
    assert!(d["capabilities"]
        .as_array()
        .unwrap()
        .contains(&"CAP_SETUID".into()));

    // A stricter tier adds nothing over a looser one (monotonicity, as a user sees it).
    for (a, b) in [
        ("hardened", "default"),
        ("untrusted", "hardened"),
        ("isolated", "default"),
    ] {
        let v = json(&["profiles", "diff", a, b]);
        let d = &v["diff"];
        for k in ["syscalls_allowed", "syscalls_less_checked", "capabilities"] {
            assert_eq!(d[k], serde_json::json!([]), "{a} over {b}: {k}");
        }
    }
    let same = json(&["profiles", "diff", "untrusted", "untrusted"]);
    assert_eq!(same["diff"]["settings"], serde_json::json!([]));
}
