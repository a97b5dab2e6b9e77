//! macOS detection through the desktops' own CLIs, simulated by fake `colima` and `orb`
//! scripts on `PATH` (the desktops are probed by those names; their own binary, in its own
//! process, so no other test sees this `PATH`). The docker CLI they serve is
//! `[backends.colima] program`, and it must answer too.

mod common;

use common::{calls, fake};
use perry_backends::{detect_with, probe_with, BackendSettings, DetectOptions, Mode};

#[tokio::test]
async fn colima_is_picked_on_macos_only_when_running_and_its_docker_cli_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", dir.path().display()));
    let colima = |running: bool| {
        let status = if running {
            "echo 'colima is running using macOS Virtualization.Framework'"
        } else {
            "echo 'colima is not running' >&2; exit 1"
        };
        fake(
            dir.path(),
            "colima",
            &format!(
                "case \"$1\" in --version) echo 'colima version 0.8.1';; status) {status};; *) exit 2;; esac"
            ),
        )
    };
    let docker = fake(dir.path(), "docker", "echo 'Docker version 27.3.1'");
    let settings = |program: &std::path::Path| BackendSettings {
        program: Some(program.to_path_buf()),
        ..BackendSettings::default()
    };

    colima(false);
    let p = probe_with("colima", Mode::LocalFirst, "macos", &settings(&docker)).await;
    assert!(!p.available, "{p:?}");
    assert_eq!(p.version.as_deref(), Some("colima version 0.8.1"));
    assert!(p.reason.contains("colima is not running"), "{p:?}");

    colima(true);
    let missing = dir.path().join("no-docker");
    let p = probe_with("colima", Mode::LocalFirst, "macos", &settings(&missing)).await;
    assert!(!p.available, "{p:?}");
    assert!(
        p.reason.contains("docker CLI it serves does not answer") && p.reason.contains("no-docker"),
        "{p:?}"
    );

    // The macOS order: apple/container and orbstack are not here, colima is next and wins,
    // driven through the configured docker CLI.
    let opts = DetectOptions {
        os: Some("macos".into()),
        config: toml::from_str(&format!("[colima]\nprogram = {docker:?}\n")).unwrap(),
        ..DetectOptions::default()
    };
    let d = detect_with(&opts).await.expect("colima runs");
    let names: Vec<&str> = d.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["apple-container", "orbstack", "colima"]);
    assert!(d.probes[2].available, "{:?}", d.probes[2]);
    assert_eq!(
        d.backend.argv(&["ps"]),
        [docker.display().to_string(), "ps".into()]
    );
    assert!(calls(dir.path(), "colima").contains(&"status".to_string()));
    assert!(calls(dir.path(), "docker").contains(&"--version".to_string()));
}
