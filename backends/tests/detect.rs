//! Detection: the probe order, the overrides (environment over `[backends]`), every probe's
//! reason when none answers, and the once-per-process cache.
//!
//! Other platforms' CLIs are simulated by small scripts named through
//! `[backends.<name>] program` (so no test changes the process's `PATH`); podman is always the
//! real one.

use std::path::{Path, PathBuf};

use perry_backends::{
    detect_with, BackendError, BackendsConfig, ContainerBackend, DetectCache, DetectOptions, Mode,
};

/// A fake CLI: a shell script that appends its argv to `<dir>/<name>.calls`, then runs `body`.
fn fake(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let calls = dir.join(format!("{name}.calls"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n{body}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn config(toml_text: &str) -> BackendsConfig {
    toml::from_str(toml_text).unwrap()
}

fn opts(config: BackendsConfig) -> DetectOptions {
    DetectOptions {
        os: Some("linux".into()),
        config,
        ..DetectOptions::default()
    }
}

#[tokio::test]
async fn when_nothing_answers_every_probe_is_listed_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let podman = fake(
        dir.path(),
        "podman",
        "echo 'cannot connect to podman' >&2; exit 3",
    );
    let nerdctl = fake(
        dir.path(),
        "nerdctl",
        r#"case "$1" in --version) echo 'nerdctl version 2.0';; *) echo 'containerd socket missing' >&2; exit 1;; esac"#,
    );
    let docker = fake(
        dir.path(),
        "docker",
        r#"case "$1" in --version) echo 'Docker version 27';; *) echo 'Cannot connect to the Docker daemon' >&2; exit 1;; esac"#,
    );
    let c = config(&format!(
        "[podman]\nprogram = {:?}\n[nerdctl]\nprogram = {:?}\n[docker]\nprogram = {:?}\n",
        podman, nerdctl, docker
    ));
    let err = match detect_with(&opts(c)).await {
        Err(e) => e,
        Ok(d) => panic!("picked {} though nothing answers", d.backend.name()),
    };
    let BackendError::NoneFound { probed, advice } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(err.code().as_str(), "no_backend_found");
    // This Debian host's recommended install: podman with runc through apt-get.
    assert!(
        advice.contains("apt-get install -y podman runc"),
        "{advice}"
    );
    let msg = probed;
    for (name, why) in [
        ("podman", "cannot connect to podman"),
        ("nerdctl", "containerd socket missing"),
        ("docker", "Cannot connect to the Docker daemon"),
    ] {
        assert!(
            msg.contains(&format!("{name}: ")) && msg.contains(why),
            "{name}'s reason missing from: {msg}"
        );
    }
    // docker's CLI answers `--version` without a daemon: it is still not picked.
    assert!(calls(dir.path(), "docker")
        .iter()
        .any(|c| c.starts_with("version")));
}

#[tokio::test]
async fn the_configured_order_is_probed_in_order_and_the_first_live_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let nerdctl = fake(dir.path(), "nerdctl", "echo 'no nerdctl here' >&2; exit 1");
    let docker = fake(dir.path(), "docker", "exit 0");
    let c = config(&format!(
        "order = [\"nerdctl\", \"podman\", \"docker\"]\n[nerdctl]\nprogram = {nerdctl:?}\n[docker]\nprogram = {docker:?}\n"
    ));
    let d = detect_with(&opts(c)).await.expect("real podman answers");
    assert_eq!(d.backend.name(), "podman");
    let names: Vec<&str> = d.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["nerdctl", "podman"], "stops at the first live one");
    assert!(
        d.probes[0].reason.contains("no nerdctl here"),
        "{:?}",
        d.probes[0]
    );
    assert!(
        calls(dir.path(), "docker").is_empty(),
        "docker was probed after podman won"
    );
}

#[tokio::test]
async fn a_named_backend_skips_probing_and_the_environment_wins_over_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake(
        dir.path(),
        "docker",
        r#"case "$1" in --version) echo 'Docker version 27';; *) echo 'Cannot connect to the Docker daemon' >&2; exit 1;; esac"#,
    );
    let nerdctl = fake(dir.path(), "nerdctl", "exit 0");
    let c = config(&format!(
        "backend = \"docker\"\n[docker]\nprogram = {docker:?}\n[nerdctl]\nprogram = {nerdctl:?}\n"
    ));
    // The configuration names docker: only docker is probed, and its dead daemon is the error.
    let Err(err) = detect_with(&opts(c.clone())).await else {
        panic!("docker has no daemon, yet it was picked");
    };
    let msg = err.to_string();
    assert!(msg.contains("[backends] backend=docker"), "{msg}");
    assert!(msg.contains("daemon does not answer"), "{msg}");
    assert!(
        calls(dir.path(), "nerdctl").is_empty(),
        "probed past the named backend"
    );

    // PERRY_CONTAINER_BACKEND=podman wins over the configuration's docker.
    let mut o = opts(c);
    o.backend = Some("podman".into());
    let d = detect_with(&o).await.expect("podman");
    assert_eq!(d.backend.name(), "podman");
    assert_eq!(d.probes.len(), 1);

    // An unknown name is refused naming it and the known ones.
    o.backend = Some("kubelet".into());
    let msg = detect_with(&o).await.err().unwrap().to_string();
    assert!(
        msg.contains("kubelet") && msg.contains("podman, nerdctl"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_mode_comes_from_the_environment_else_the_configuration() {
    let mut o = opts(config("mode = \"server-first\"\n"));
    assert_eq!(o.mode().unwrap(), Mode::ServerFirst);
    o.docker_host = true;
    assert_eq!(o.probe_names("linux", Mode::ServerFirst)[0], "docker");
    o.mode = Some("local-first".into());
    assert_eq!(o.mode().unwrap(), Mode::LocalFirst);
    assert_eq!(
        o.probe_names("linux", Mode::LocalFirst),
        ["podman", "nerdctl", "docker"]
    );
    o.mode = Some("cloud-first".into());
    let msg = o.mode().unwrap_err().to_string();
    assert!(
        msg.contains("local-first") && msg.contains("server-first"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_cache_probes_once() {
    let dir = tempfile::tempdir().unwrap();
    // A podman-like CLI that answers every probe, counting calls.
    let fake_podman = fake(dir.path(), "podman", "echo 'podman version 9.9'");
    let c = config(&format!(
        "backend = \"podman\"\n[podman]\nprogram = {fake_podman:?}\n"
    ));
    let cache = DetectCache::new();
    let first = cache.get(&opts(c.clone())).await.expect("the fake answers");
    let probed = calls(dir.path(), "podman").len();
    assert!(probed >= 1, "the fake was never probed");
    for _ in 0..3 {
        let again = cache.get(&opts(c.clone())).await.unwrap();
        assert_eq!(again.probes.len(), first.probes.len());
    }
    assert_eq!(calls(dir.path(), "podman").len(), probed, "probed again");
}

#[tokio::test]
async fn a_live_apple_container_is_passed_over_because_it_cannot_apply_any_tier() {
    let dir = tempfile::tempdir().unwrap();
    let container = fake(
        dir.path(),
        "container",
        r#"case "$1" in --version) echo 'container CLI version 0.10.0';; system) echo 'apiserver is running';; esac"#,
    );
    let c = config(&format!(
        "order = [\"apple-container\", \"podman\"]\n[apple-container]\nprogram = {container:?}\n"
    ));
    // (The order is the configured one; podman is this Linux host's real podman.)
    let d = detect_with(&opts(c))
        .await
        .expect("podman after apple/container");
    assert_eq!(d.backend.name(), "podman");
    let apple = &d.probes[0];
    assert_eq!(apple.name, "apple-container");
    assert!(!apple.available);
    assert_eq!(
        apple.version.as_deref(),
        Some("container CLI version 0.10.0")
    );
    assert!(
        apple.reason.contains("running") && apple.reason.contains("seccomp"),
        "{apple:?}"
    );
    assert!(calls(dir.path(), "container")
        .iter()
        .any(|c| c == "system status"));
}

#[tokio::test]
async fn an_unknown_mode_stays_invalid_config_through_the_cache() {
    let cache = DetectCache::new();
    let mut o = opts(BackendsConfig::default());
    o.mode = Some("bogus".into());
    // The first answer is the probe's, every later one the cache's: the same code each time.
    for _ in 0..2 {
        let e = cache
            .get(&o)
            .await
            .expect_err("an unknown mode detects nothing");
        assert!(matches!(e, BackendError::InvalidConfig(_)), "{e:?}");
        assert_eq!(e.code().as_str(), "invalid_config", "{e}");
        assert!(e.to_string().contains("local-first, server-first"), "{e}");
    }
}
