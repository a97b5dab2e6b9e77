//! Detection: the probe order, the overrides (environment over `[backends]`), every probe's
//! reason when none answers, and the once-per-process cache.
//!
//! Other platforms' CLIs are simulated by small scripts named through
//! `[backends.<name>] program` (so no test changes the process's `PATH`); podman is always the
//! real one.

mod common;

use std::time::{Duration, Instant};

use common::{calls, fake};
use perry_backends::{
    detect_with, driver_with, probe_with, BackendError, BackendSettings, BackendsConfig,
    ContainerBackend, DetectCache, DetectOptions, IsolationLevel, Mode,
};

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

fn program(path: &std::path::Path) -> BackendSettings {
    BackendSettings {
        program: Some(path.to_path_buf()),
        ..BackendSettings::default()
    }
}

#[tokio::test]
async fn a_probe_has_one_deadline_for_all_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    // Answers `--version` after 1.5 s, then hangs: two calls of 2 s each would take 3.5 s.
    let slow = fake(
        dir.path(),
        "nerdctl",
        r#"case "$1" in --version) sleep 1.5; echo 'nerdctl version 2.0';; *) exec sleep 30;; esac"#,
    );
    let hung = fake(dir.path(), "docker", "exec sleep 30");
    for (name, cli, hangs) in [
        ("nerdctl", &slow, "version"),
        ("docker", &hung, "--version"),
    ] {
        let t = Instant::now();
        let p = probe_with(name, Mode::LocalFirst, "linux", &program(cli)).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(2900),
            "{name}: gave up after {took:?}"
        );
        assert!(!p.available, "{p:?}");
        assert!(
            p.reason.contains("did not answer within the probe's 2 s") && p.reason.contains(hangs),
            "{p:?}"
        );
    }
}

#[tokio::test]
async fn lima_is_live_only_when_its_own_instance_runs() {
    let dir = tempfile::tempdir().unwrap();
    let limactl = fake(
        dir.path(),
        "limactl",
        r#"case "$1" in
  --version) echo 'limactl version 1.0.6';;
  list) echo '{"name":"default","status":"Stopped","dir":"/x/default"}'
        echo '{"name":"dev","status":"Running","dir":"/x/dev"}';;
  *) exit 2;;
esac"#,
    );
    let with = |instance: Option<&str>| BackendSettings {
        instance: instance.map(String::from),
        ..program(&limactl)
    };
    let p = probe_with("lima", Mode::LocalFirst, "macos", &with(None)).await;
    assert!(!p.available, "{p:?}");
    assert!(
        p.reason.contains("lima instance default is Stopped"),
        "{p:?}"
    );
    let p = probe_with("lima", Mode::LocalFirst, "macos", &with(Some("dev"))).await;
    assert!(p.available, "{p:?}");
    assert_eq!(p.version.as_deref(), Some("limactl version 1.0.6"));
    assert!(calls(dir.path(), "limactl").contains(&"list --json".to_string()));
    // The driver's availability asks about the instance it drives.
    for (instance, live) in [(None, false), (Some("dev"), true), (Some("gone"), false)] {
        let d = driver_with("lima", &with(instance)).unwrap();
        let a = d.availability().await;
        assert_eq!(a.available, live, "{instance:?}: {a:?}");
    }
}

#[tokio::test]
async fn availability_probes_the_cli_and_the_sandbox_runtime_the_driver_runs() {
    let with = |sandbox: &str| BackendSettings {
        sandbox_runtime: Some(sandbox.into()),
        ..BackendSettings::default()
    };
    let a = driver_with("podman", &with("/nonexistent/runsc"))
        .unwrap()
        .availability()
        .await;
    assert!(a.available, "{a:?}");
    assert_eq!(a.isolation, IsolationLevel::Container, "{a:?}");
    let a = driver_with("podman", &with("/usr/bin/runsc"))
        .unwrap()
        .availability()
        .await;
    assert_eq!(a.isolation, IsolationLevel::SandboxedKernel, "{a:?}");
    let a = driver_with("podman", &BackendSettings::default())
        .unwrap()
        .with_sandbox(None)
        .availability()
        .await;
    assert_eq!(a.isolation, IsolationLevel::Container, "{a:?}");
    // The configured CLI is the one asked, not the podman on PATH.
    let dir = tempfile::tempdir().unwrap();
    let broken = fake(
        dir.path(),
        "podman",
        "echo 'podman is broken here' >&2; exit 9",
    );
    let a = driver_with("podman", &program(&broken))
        .unwrap()
        .availability()
        .await;
    assert!(!a.available, "{a:?}");
    assert!(a.reason.contains("podman is broken here"), "{a:?}");
}

#[tokio::test]
async fn server_first_puts_podman_first_when_its_default_connection_is_remote() {
    let dir = tempfile::tempdir().unwrap();
    let podman = fake(
        dir.path(),
        "podman",
        r#"echo '[{"Name":"build-host","URI":"ssh://core@build-host:22/run/podman/podman.sock","Identity":"","Default":true}]'"#,
    );
    let c = config(&format!(
        "order = [\"nerdctl\", \"podman\"]\n[podman]\nprogram = {podman:?}\n"
    ));
    let o = opts(c.clone());
    assert_eq!(
        o.names_to_probe("linux", Mode::LocalFirst).await,
        ["nerdctl", "podman"]
    );
    assert!(
        calls(dir.path(), "podman").is_empty(),
        "asked in local-first"
    );
    assert_eq!(
        o.names_to_probe("linux", Mode::ServerFirst).await,
        ["podman", "nerdctl"]
    );
    assert_eq!(
        calls(dir.path(), "podman"),
        ["system connection list --format json"]
    );
    // No default connection (the real podman here has none): the order stays.
    fake(dir.path(), "podman", "echo '[]'");
    assert_eq!(
        o.names_to_probe("linux", Mode::ServerFirst).await,
        ["nerdctl", "podman"]
    );
    let real = opts(config("order = [\"nerdctl\", \"podman\"]\n"));
    assert_eq!(
        real.names_to_probe("linux", Mode::ServerFirst).await,
        ["nerdctl", "podman"]
    );
}
