//! The sigstore-conformance `bundle-verify` cases, run through the built `perry-sandbox
//! verify-bundle` binary exactly as the conformance suite drives a client: once with the
//! artifact as a file PATH, once as `sha256:<hex>` DIGEST. Directories ending in `_fail` must be
//! rejected (exit 3, the "denied" status), all others accepted (exit 0).
//!
//! Registered as a test of the root package (see the root `Cargo.toml`; kept out of
//! `verifier/tests/*.rs` so the verifier crate does not also compile it) so that Cargo builds
//! the binary and hands its path in `CARGO_BIN_EXE_perry-sandbox`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("verifier/tests/fixtures/conformance")
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Path,
    Digest,
}

/// Runs one case; returns a description of the mismatch, if any.
fn run_case(dir: &Path, mode: Mode) -> Option<String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let expect_ok = !name.ends_with("_fail");
    let artifact = if dir.join("artifact").exists() {
        dir.join("artifact")
    } else {
        fixtures().join("a.txt")
    };
    let input = match mode {
        Mode::Path => artifact.display().to_string(),
        Mode::Digest => format!(
            "sha256:{}",
            hex::encode(Sha256::digest(std::fs::read(&artifact).unwrap()))
        ),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_perry-sandbox"));
    cmd.arg("verify-bundle")
        .arg("--bundle")
        .arg(dir.join("bundle.sigstore.json"));
    if dir.join("key.pub").exists() {
        cmd.arg("--key").arg(dir.join("key.pub"));
    } else {
        let id = read_trimmed(&dir.join("identity")).unwrap_or_else(|| DEFAULT_IDENTITY.into());
        let iss = read_trimmed(&dir.join("issuer")).unwrap_or_else(|| DEFAULT_ISSUER.into());
        cmd.arg("--certificate-identity")
            .arg(id)
            .arg("--certificate-oidc-issuer")
            .arg(iss);
    }
    if dir.join("trusted_root.json").exists() {
        cmd.arg("--trusted-root").arg(dir.join("trusted_root.json"));
    }
    cmd.arg(&input);
    cmd.current_dir(std::env::temp_dir());
    let out = cmd.output().expect("run perry-sandbox");
    let code = out.status.code();
    let ok = match (expect_ok, code) {
        (true, Some(0)) => true,
        // Rejected as a verification refusal, not as a usage or I/O error.
        (false, Some(3)) => true,
        _ => false,
    };
    (!ok).then(|| {
        format!(
            "{name} ({mode:?}): expected {}, got exit {code:?}\nstdout: {}\nstderr: {}",
            if expect_ok {
                "accept (0)"
            } else {
                "reject (3)"
            },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures/conformance")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn run_all(mode: Mode) {
    let cases = cases();
    assert!(
        cases.len() >= 30,
        "expected the conformance cases, found {}",
        cases.len()
    );
    assert!(cases.iter().any(|c| c.to_string_lossy().ends_with("_fail")));
    assert!(cases
        .iter()
        .any(|c| !c.to_string_lossy().ends_with("_fail")));
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c, mode)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} conformance cases misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn conformance_bundle_verify_path_mode() {
    run_all(Mode::Path);
}

#[test]
fn conformance_bundle_verify_digest_mode() {
    run_all(Mode::Digest);
}

/// The protocol's argument shape: an identity without an issuer is a usage error, not a
/// verification (so a typo cannot silently weaken the policy).
#[test]
fn identity_without_issuer_is_a_usage_error() {
    let dir = fixtures().join("happy-path-v0.3");
    let out = Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
        .args(["verify-bundle", "--bundle"])
        .arg(dir.join("bundle.sigstore.json"))
        .args(["--certificate-identity", DEFAULT_IDENTITY])
        .arg(fixtures().join("a.txt"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
