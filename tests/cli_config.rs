//! Behaviour of `perry-sandbox config …` and configuration discovery, through the real binary.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn bin() -> Command {
    let mut c = Command::cargo_bin("perry-sandbox").unwrap();
    c.env_remove("PERRY_CONFIG").env_remove("XDG_CONFIG_HOME");
    c
}

fn example() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/perryconfig.example.toml"
    ))
}

#[test]
fn example_config_checks_ok() {
    bin()
        .args(["config", "check"])
        .arg(example())
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "1 trust policy, 3 capabilities, 2 registries, default tier hardened",
        ));
}

#[test]
fn json_check_prints_normalised_config() {
    let out = bin()
        .args(["--json", "config", "check"])
        .arg(example())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["config"]["sandbox"]["default_tier"], "hardened");
    assert_eq!(
        v["config"]["shellCapabilities"]["git-log"]["tier"],
        "untrusted"
    );
    assert_eq!(
        v["config"]["trust"]["policy"][0]["images"][0],
        "cgr.dev/chainguard/**"
    );
}

fn check_fails_with(src: &[u8], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, src).unwrap();
    bin()
        .args(["config", "check"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error[invalid_config]"))
        .stderr(predicate::str::contains(format!(
            "{}:{expected}",
            path.display()
        )));
}

#[test]
fn misspelled_key() {
    check_fails_with(
        b"[sandbox]\nstate_dirr = \"/x\"\n",
        "2:1: sandbox.state_dirr: unknown key `state_dirr`",
    );
}

#[test]
fn unknown_tier() {
    check_fails_with(
        b"[sandbox]\ndefault_tier = \"strict\"\n",
        "2:16: sandbox.default_tier: unknown value `strict`",
    );
}

#[test]
fn capability_with_default_tier() {
    check_fails_with(
        b"[shellCapabilities.x]\ncommand = [\"ls\"]\ntier = \"default\"\n",
        "3:8: shellCapabilities.x.tier: `default` is looser than `hardened`",
    );
}

#[test]
fn plain_http_non_loopback() {
    check_fails_with(b"[registries.\"registry.example.com\"]\ninsecure = true\n", "2:12: registries.\"registry.example.com\".insecure: plain HTTP is only allowed for loopback registries");
}

#[test]
fn unparseable_duration() {
    check_fails_with(
        b"[shellCapabilities.x]\ncommand = [\"ls\"]\ntimeout = \"soon\"\n",
        "3:11: shellCapabilities.x.timeout: `soon` has no number",
    );
}

#[test]
fn garbage_bytes() {
    check_fails_with(
        b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe",
        "1:10: the file is not valid UTF-8 text",
    );
}

#[test]
fn json_errors_are_structured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[sandbox]\nstate_dirr = 1\n").unwrap();
    let out = bin()
        .args(["--json", "config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "invalid_config");
    assert_eq!(v["error"]["status"], 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("did you mean `state_dir`?"));
}

#[test]
fn missing_explicit_config_is_an_error_not_a_fallback() {
    bin()
        .args(["--config", "/nonexistent/perry.toml", "config", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "/nonexistent/perry.toml: cannot read configuration",
        ));
    bin()
        .env("PERRY_CONFIG", "/nonexistent/env.toml")
        .args(["config", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/env.toml"));
}

#[test]
fn discovery_prefers_env_then_cwd_then_xdg() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("cwd");
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("perry-sandbox")).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(
        xdg.join("perry-sandbox/perryconfig.toml"),
        "[sandbox]\ndefault_tier = \"untrusted\"\n",
    )
    .unwrap();
    // Only XDG has a file.
    bin()
        .current_dir(&cwd)
        .env("XDG_CONFIG_HOME", &xdg)
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "xdg/perry-sandbox/perryconfig.toml (via search)",
        ))
        .stdout(predicate::str::contains("default tier untrusted"));
    // ./perryconfig.toml wins over XDG.
    std::fs::write(cwd.join("perryconfig.toml"), "").unwrap();
    bin()
        .current_dir(&cwd)
        .env("XDG_CONFIG_HOME", &xdg)
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "cwd/perryconfig.toml (via search)",
        ));
    // PERRY_CONFIG wins over both.
    bin()
        .current_dir(&cwd)
        .env("XDG_CONFIG_HOME", &xdg)
        .env("PERRY_CONFIG", example())
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "perryconfig.example.toml (via PERRY_CONFIG)",
        ));
}

#[test]
fn explain_image_matched_and_denied() {
    bin()
        .args(["--config"])
        .arg(example())
        .args(["config", "explain", "cgr.dev/chainguard/git:latest"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "chainguard (matched by cgr.dev/chainguard/**)",
        ))
        .stdout(predicate::str::contains(
            "issuer https://token.actions.githubusercontent.com",
        ));
    bin()
        .args(["--config"])
        .arg(example())
        .args(["config", "explain", "busybox"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "DENIED: no [[trust.policy]] glob matches `docker.io/library/busybox`",
        ));
}

#[test]
fn explain_capability() {
    let out = bin()
        .args(["--json", "--config"])
        .arg(example())
        .args(["config", "explain", "--capability", "git-log"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"], "cgr.dev/chainguard/git:latest");
    assert_eq!(v["image_source"], "capability_images");
    assert_eq!(v["tier"]["tier"], "untrusted");
    assert_eq!(v["tier"]["read_only_root"], true);
    bin()
        .args(["--config"])
        .arg(example())
        .args(["config", "explain", "--capability", "git-lgo"])
        .assert()
        .code(125)
        .stderr(
            predicate::str::contains("no capability `git-lgo`")
                .and(predicate::str::contains("did you mean `git-log`?")),
        );
}

#[test]
fn no_config_means_deny_everything_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    bin()
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .args(["config", "explain", "busybox"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "built-in defaults (no perryconfig.toml found; every image is denied)",
        ))
        .stdout(predicate::str::contains("DENIED"));
}

#[test]
fn completions_are_generated() {
    bin()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("perry-sandbox").and(predicate::str::contains("config")));
}
