//! `perry-sandbox run` end to end, all real and on loopback: busybox images pushed to
//! docker-registry, signed (or not) by sigstore-js through the mock Fulcio/Rekor/TSA, verified,
//! pulled by digest, unpacked and run in the native sandbox under the hardened profile.
//!
//! The gate: an unsigned image, or a signed tag moved to an unsigned digest, exits 125 and runs
//! nothing (proved by a writable mount the command would have written to).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

struct World {
    reg: Registry,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl World {
    fn new() -> Self {
        let reg = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        // The sandbox is set up as an unprivileged host uid: the rootfs's ancestors need o+x.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = ConfigBuilder::new(&reg, SigStack::shared()).write(dir.path());
        Self { reg, dir, config }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::cargo_bin("perry-sandbox")
            .unwrap()
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .args(args)
            .env_remove("PERRY_CONFIG")
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap()
    }

    fn image(&self, r: &str) -> String {
        format!("{}/{r}", self.reg.host())
    }

    fn signed(&self, repo: &str, marker: &str) -> String {
        let p = self
            .reg
            .push_image(repo, "v1", &TinyImage::busybox_marked("amd64", marker));
        SigStack::shared().sign(&self.reg, repo, &p.digest, &SignOptions::default());
        p.digest
    }

    /// A world-writable host directory to mount at /work, to prove whether a command ran.
    fn witness(&self) -> PathBuf {
        let d = self.dir.path().join("witness");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        d
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        let dir = self.dir.path().join("state/audit");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                for l in std::fs::read_to_string(p).unwrap().lines() {
                    out.push(serde_json::from_str(l).unwrap());
                }
            }
        }
        out
    }

    /// The `outcome` record that follows the allow record `seq`, checked to share its
    /// correlation id.
    fn outcome_of(&self, seq: u64) -> serde_json::Value {
        let log = self.audit();
        let allow = log.iter().find(|r| r["seq"] == seq).expect("allow record");
        let outcome = log
            .iter()
            .find(|r| r["action"] == "outcome" && r["details"]["allow_seq"] == seq)
            .unwrap_or_else(|| panic!("no outcome record for seq {seq}: {log:?}"));
        assert_eq!(outcome["correlation"], allow["correlation"], "{outcome}");
        assert_eq!(outcome["subject"]["digest"], allow["subject"]["digest"]);
        outcome.clone()
    }

    fn runs(&self) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|r| r.to_string().contains("\"run\""))
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mount(dir: &Path) -> String {
    format!("{}:/work:rw", dir.display())
}

#[test]
fn signed_image_runs_hardened_and_exits_with_the_commands_status() {
    let w = World::new();
    let digest = w.signed("demo/run", "cli-run");
    let witness = w.witness();
    let out = w.run(&[
        "--mount",
        &mount(&witness),
        &w.image("demo/run:v1"),
        "--",
        "sh",
        "-c",
        "cat /etc/perry-marker; id -u; touch /x 2>/dev/null || echo ro; echo ran > /work/ran; exit 7",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    assert_eq!(stdout, "cli-run\n65534\nro\n");
    assert_eq!(
        std::fs::read_to_string(witness.join("ran")).unwrap(),
        "ran\n"
    );
    // Pulled by digest and unpacked under the manifest digest.
    let hex = digest.trim_start_matches("sha256:");
    assert!(w.dir.path().join("state/rootfs").join(hex).is_dir());
    assert!(w.dir.path().join("state/blobs/sha256").join(hex).is_file());
    // The allow decision was recorded, with the pinned digest.
    let runs = w.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let rec = runs[0].to_string();
    assert!(rec.contains("allow") && rec.contains(&digest), "{rec}");
}

#[test]
fn json_reports_outcome_and_denied_syscalls_and_a_timeout_kills() {
    let w = World::new();
    w.signed("demo/json", "cli-json");
    let out = w.run(&[
        "--json",
        &w.image("demo/json:v1"),
        "--",
        "sh",
        "-c",
        "nc -w 1 127.0.0.1 9 </dev/null; echo done",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stdout"], "done\n");
    assert_eq!(v["tier"], "hardened");
    let denied = v["denied_syscalls"].as_array().unwrap();
    assert!(
        denied
            .iter()
            .any(|d| d["name"] == "socket" && d["errno"] == 1),
        "{v}"
    );
    // The outcome is on the record, correlated with the allow record it follows, with the
    // refused syscalls counted: what a reviewer needs to see that the workload tried.
    let outcome = w.outcome_of(v["audit_seq"].as_u64().unwrap());
    assert_eq!(outcome["decision"], "observed", "{outcome}");
    assert_eq!(outcome["details"]["exit_code"], 0, "{outcome}");
    assert_eq!(outcome["details"]["timed_out"], false, "{outcome}");
    let counted = outcome["details"]["denied_syscalls"].as_array().unwrap();
    assert!(
        counted
            .iter()
            .any(|d| d["syscall"] == "socket" && d["errno"] == 1 && d["count"].as_u64() >= Some(1)),
        "{outcome}"
    );
    // A sleep past --timeout: killed, 128 + SIGKILL.
    let t = std::time::Instant::now();
    let out = w.run(&[
        "--json",
        "--timeout",
        "1s",
        &w.image("demo/json:v1"),
        "--",
        "sh",
        "-c",
        "sleep 30 & sleep 30",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timed_out"], true);
    let outcome = w.outcome_of(v["audit_seq"].as_u64().unwrap());
    assert_eq!(outcome["details"]["timed_out"], true, "{outcome}");
    assert_eq!(outcome["details"]["signal"], 9, "{outcome}");
    assert_eq!(outcome["details"]["exit_code"], serde_json::Value::Null);
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    // Not found: 127, and the failure is recorded after the allow.
    let out = w.run(&[&w.image("demo/json:v1"), "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
}

#[test]
fn unsigned_image_exits_125_and_runs_nothing() {
    let w = World::new();
    w.reg.push_image(
        "demo/unsigned",
        "v1",
        &TinyImage::busybox_marked("amd64", "unsigned"),
    );
    let witness = w.witness();
    let out = w.run(&[
        "--mount",
        &mount(&witness),
        &w.image("demo/unsigned:v1"),
        "--",
        "sh",
        "-c",
        "echo ran > /work/ran",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(!witness.join("ran").exists(), "the unsigned image ran");
    assert!(
        !w.dir.path().join("state/rootfs").exists()
            || std::fs::read_dir(w.dir.path().join("state/rootfs"))
                .unwrap()
                .next()
                .is_none(),
        "an unverified image was unpacked"
    );
    let runs = w.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].to_string().contains("deny"), "{:?}", runs[0]);
}

#[test]
fn signed_tag_moved_to_an_unsigned_digest_exits_125_and_runs_nothing() {
    let w = World::new();
    w.signed("demo/moved", "signed-one");
    let witness = w.witness();
    let first = w.run(&[&w.image("demo/moved:v1"), "--", "true"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    // Re-tag v1 to an image nobody signed.
    let evil = w.reg.push_image(
        "demo/moved",
        "evil",
        &TinyImage::busybox_marked("amd64", "evil"),
    );
    w.reg.move_tag("demo/moved", "v1", &evil.digest);
    let out = w.run(&[
        "--mount",
        &mount(&witness),
        &w.image("demo/moved:v1"),
        "--",
        "sh",
        "-c",
        "echo ran > /work/ran",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(!witness.join("ran").exists(), "the re-tagged image ran");
    let hex = evil.digest.trim_start_matches("sha256:");
    assert!(!w.dir.path().join("state/rootfs").join(hex).exists());
}

/// A host without a system trust store (minimal images, air-gapped machines), simulated by
/// pointing the trust-store loader (`SSL_CERT_FILE`, `SSL_CERT_DIR`) at nothing. The loopback
/// plain-HTTP mirror must still work — its client trusts nothing from the system — and an HTTPS
/// registry must be a clean, recorded refusal. Both used to panic: the OCI client built a
/// default HTTP client (and the system trust store with it) behind every client it built.
#[test]
fn a_host_without_a_trust_store_runs_from_a_loopback_mirror_and_refuses_https_cleanly() {
    let w = World::new();
    w.signed("demo/notrust", "no-trust-store");
    // Also trust a non-loopback (HTTPS) registry, so that its client is the one built.
    let config = w.dir.path().join("with-https.toml");
    let text_cfg = std::fs::read_to_string(&w.config).unwrap();
    let glob = format!("\"{}/**\"", w.reg.host());
    assert!(text_cfg.contains(&glob), "{text_cfg}");
    std::fs::write(
        &config,
        text_cfg.replace(&glob, &format!("{glob}, \"registry.invalid/**\"")),
    )
    .unwrap();
    let nothing = w.dir.path().join("no-trust-store");
    let run = |image: &str| {
        Command::cargo_bin("perry-sandbox")
            .unwrap()
            .arg("--config")
            .arg(&config)
            .args(["run", image, "--", "cat", "/etc/perry-marker"])
            .env_remove("PERRY_CONFIG")
            .env("SSL_CERT_FILE", &nothing)
            .env("SSL_CERT_DIR", &nothing)
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap()
    };
    let out = run(&w.image("demo/notrust:v1"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "no-trust-store\n");

    let before = w.runs().len();
    let out = run("registry.invalid/demo/app:v1");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("registry_unavailable") && stderr.contains("No CA certificates"),
        "{stderr}"
    );
    let runs = w.runs();
    assert_eq!(runs.len(), before + 1, "the refusal is recorded: {runs:?}");
    assert!(
        runs[before].to_string().contains("No CA certificates"),
        "{}",
        runs[before]
    );
}

/// The audit log opens while verification runs; a log that cannot be opened must still stop
/// the command before anything is decided or run, with the log's own error.
#[test]
fn a_log_that_cannot_be_opened_stops_the_run_before_anything_runs() {
    let w = World::new();
    w.signed("demo/auditfail", "audit-fail");
    let witness = w.witness();
    let argv = |name: &str| {
        vec![
            "--mount".to_string(),
            mount(&witness),
            w.image("demo/auditfail:v1"),
            "--".into(),
            "touch".into(),
            format!("/work/{name}"),
        ]
    };
    let ok = argv("first");
    let out = w.run(&ok.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(witness.join("first").exists());
    // Cut the log below its signed checkpoint: a writer must refuse to append to it.
    let log = w.dir.path().join("state/audit/log.jsonl");
    std::fs::write(&log, b"").unwrap();
    let second = argv("second");
    let out = w.run(&second.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("audit"), "{stderr}");
    assert!(
        !witness.join("second").exists(),
        "the command ran without a record"
    );
    assert_eq!(std::fs::read(&log).unwrap(), b"", "nothing was appended");
}

#[test]
fn bad_arguments_exit_125_before_anything_is_decided() {
    let w = World::new();
    for args in [
        vec!["--tier", "bogus", "x/y:1", "--", "true"],
        vec!["--timeout", "soon", "x/y:1", "--", "true"],
        vec!["--mount", "/nonexistent-perry:/work", "x/y:1", "--", "true"],
        vec!["--env", "NOEQUALS", "x/y:1", "--", "true"],
    ] {
        let out = w.run(&args);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn output_is_printed_while_the_command_runs() {
    use std::io::BufRead;
    let w = World::new();
    w.signed("demo/live", "cli-live");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
        .arg("--config")
        .arg(&w.config)
        .args(["run", &w.image("demo/live:v1"), "--", "sh", "-c"])
        .arg("echo first; sleep 3; echo second")
        .env_remove("PERRY_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "first");
    // The command is still sleeping: the line came live, not at exit.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first line arrived only after the run ended"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_terminal_sees_pull_progress_and_a_pipe_does_not() {
    let w = World::new();
    w.signed("demo/bars", "cli-bars");
    let run = format!(
        "{} --config {} run {} -- echo hi",
        env!("CARGO_BIN_EXE_perry-sandbox"),
        w.config.display(),
        w.image("demo/bars:v1")
    );
    // util-linux `script` gives the command a pseudo-terminal.
    let out = std::process::Command::new("script")
        .args(["-qec", &run, "/dev/null"])
        .env_remove("PERRY_CONFIG")
        .output()
        .unwrap();
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}{}", text(&out.stderr));
    assert!(
        tty.contains("pulling "),
        "no progress bar on a terminal: {tty:?}"
    );
    assert!(tty.contains("hi"), "{tty:?}");
    // Piped (and now cached): no bars, no control characters.
    std::fs::remove_dir_all(w.dir.path().join("state/blobs")).unwrap();
    std::fs::remove_dir_all(w.dir.path().join("state/rootfs")).unwrap();
    let out = w.run(&[&w.image("demo/bars:v1"), "--", "echo", "hi"]);
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(
        !text(&out.stderr).contains("pulling"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue #13 (C): `run --tier T IMAGE -- true` runs for every tier, or exits 125 naming the
/// tier — never a sandbox setup failure (`default` once died at `Rlimit (#0): EPERM`).
#[test]
fn every_tier_runs_or_is_refused_by_name_never_a_setup_failure() {
    let w = World::new();
    w.signed("demo/tiers", "tiers");
    for tier in ["default", "isolated", "hardened", "untrusted"] {
        let out = w.run(&["--tier", tier, &w.image("demo/tiers:v1"), "--", "true"]);
        let err = text(&out.stderr);
        assert!(!err.contains("sandbox setup step"), "{tier}: {err}");
        match out.status.code() {
            Some(0) => {}
            Some(125) => assert!(
                err.contains(tier),
                "{tier}: refusal does not name it: {err}"
            ),
            c => panic!("{tier}: exit {c:?}: {err}"),
        }
    }
}
