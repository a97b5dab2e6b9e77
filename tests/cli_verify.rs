//! `perry-sandbox verify IMAGE` end to end: the built binary against a real docker-registry and
//! images signed by sigstore-js on loopback. Exit 0 and the pinned facts when verified; exit 3
//! and the reason in words when refused; every decision lands in the audit log.

use std::path::PathBuf;

use assert_cmd::Command;
use perry_testworld::{
    ConfigBuilder, Layout, Registry, SigStack, SignOptions, TinyImage, TinyIndex, DEFAULT_IDENTITY,
    DEFAULT_ISSUER,
};

struct World {
    reg: Registry,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl World {
    fn new() -> Self {
        let reg = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        let config = ConfigBuilder::new(&reg, SigStack::shared()).write(dir.path());
        Self { reg, dir, config }
    }

    fn verify(&self, args: &[&str]) -> std::process::Output {
        Command::cargo_bin("perry-sandbox")
            .unwrap()
            .arg("--config")
            .arg(&self.config)
            .arg("verify")
            .args(args)
            .env_remove("PERRY_CONFIG")
            .env("NO_COLOR", "1")
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap()
    }

    fn image(&self, r: &str) -> String {
        format!("{}/{r}", self.reg.host())
    }

    fn audit_log(&self) -> String {
        let dir = self.dir.path().join("state/audit");
        let mut all = String::new();
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                all.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
        all
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn verified_image_exits_0_and_prints_the_pin() {
    let w = World::new();
    let p = w
        .reg
        .push_image("demo/app", "v1", &TinyImage::busybox_marked("amd64", "cli"));
    SigStack::shared().sign(&w.reg, "demo/app", &p.digest, &SignOptions::default());

    let out = w.verify(&[&w.image("demo/app:v1")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let line = |k: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no `{k}` line in:\n{stdout}"))
            .trim_start_matches(k)
            .trim()
            .to_string()
    };
    assert_eq!(
        line("pinned:"),
        format!("{}/demo/app@{}", w.reg.host(), p.digest)
    );
    assert_eq!(line("signer identity:"), DEFAULT_IDENTITY);
    assert_eq!(line("issuer:"), DEFAULT_ISSUER);
    assert_eq!(line("layout:"), "referrers-tag");
    assert_eq!(line("cache:"), "miss");
    assert!(line("integrated time:").parse::<i64>().is_ok(), "{stdout}");
    assert!(line("log index:").parse::<u64>().is_ok(), "{stdout}");

    let again = w.verify(&[&w.image("demo/app:v1")]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("cache:           hit"),
        "{}",
        text(&again.stdout)
    );
    let log = w.audit_log();
    assert!(log.contains("\"allow\""), "{log}");
    assert!(log.contains(&p.digest), "{log}");
}

#[test]
fn legacy_signed_index_verifies_per_platform_with_json() {
    let w = World::new();
    let p = w
        .reg
        .push_index("demo/multi", "v1", &TinyIndex::two_platform("cli-ix"));
    let legacy = SignOptions {
        layout: Layout::LegacySig,
        ..Default::default()
    };
    SigStack::shared().sign(&w.reg, "demo/multi", &p.digest, &legacy);

    for arch in ["amd64", "arm64"] {
        let platform = format!("linux/{arch}");
        let out = w.verify(&["--json", "--platform", &platform, &w.image("demo/multi:v1")]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
        assert_eq!(v["ok"], true);
        assert_eq!(v["digest"], p.digest);
        assert_eq!(v["platform_digest"], p.platform(arch));
        assert_eq!(v["signed_digest"], p.digest);
        assert_eq!(v["layout"], "legacy-sig");
        assert_eq!(v["signer_identity"], DEFAULT_IDENTITY);
    }
}

#[test]
fn unsigned_image_exits_3_saying_where_it_looked() {
    let w = World::new();
    let p = w.reg.push_image(
        "demo/unsigned",
        "v1",
        &TinyImage::busybox_marked("amd64", "cli-u"),
    );
    let out = w.verify(&[&w.image("demo/unsigned:v1")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no signature found (looked in: "),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "sha256-{}.sig",
            p.digest.trim_start_matches("sha256:")
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing verified is printed");
    assert!(w.audit_log().contains("\"deny\""), "{}", w.audit_log());

    let out = w.verify(&["--json", &w.image("demo/unsigned:v1")]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "verification_failed");
    assert_eq!(v["error"]["status"], 403);
}

#[test]
fn wrong_signer_exits_3_with_identity_mismatch() {
    let w = World::new();
    let evil = "https://github.com/mallory/fork/.github/workflows/release.yml@refs/heads/main";
    let p = w.reg.push_image(
        "demo/app",
        "v1",
        &TinyImage::busybox_marked("amd64", "cli-w"),
    );
    let opts = SignOptions {
        identity: Some(evil.into()),
        ..Default::default()
    };
    SigStack::shared().sign(&w.reg, "demo/app", &p.digest, &opts);
    let out = w.verify(&["--json", &w.image("demo/app:v1")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "policy_denied");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("identity mismatch: signed by {evil}")),
        "{msg}"
    );
    assert!(msg.contains(DEFAULT_IDENTITY), "{msg}");
}

#[test]
fn signature_for_another_digest_exits_3() {
    let w = World::new();
    let a = w
        .reg
        .push_image("demo/ab", "a", &TinyImage::busybox_marked("amd64", "cli-a"));
    let b = w
        .reg
        .push_image("demo/ab", "b", &TinyImage::busybox_marked("amd64", "cli-b"));
    let opts = SignOptions {
        subject_digest: Some(a.digest.clone()),
        ..Default::default()
    };
    SigStack::shared().sign(&w.reg, "demo/ab", &b.digest, &opts);
    let out = w.verify(&[&w.image("demo/ab:b")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("signature is for {}", a.digest)),
        "{stderr}"
    );
}

#[test]
fn unreachable_registry_exits_125_not_3() {
    // Could not decide is not the same as denied.
    let w = World::new();
    let host = w.reg.host();
    drop(w.reg);
    let out = Command::cargo_bin("perry-sandbox")
        .unwrap()
        .arg("--config")
        .arg(&w.config)
        .args(["verify", &format!("{host}/demo/app:v1")])
        .env_remove("PERRY_CONFIG")
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains(&host), "{stderr}");
}
