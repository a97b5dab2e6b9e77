//! `perry-sandbox backends` on this host: real podman is found and selected; the docker CLI,
//! present without a daemon, is reported unavailable with the reason; the environment overrides
//! behave as documented.

use assert_cmd::Command;

/// `perry-sandbox args` with `env` over an environment without the backend variables.
fn perry(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = Command::cargo_bin("perry-sandbox").unwrap();
    c.env_remove("PERRY_CONTAINER_BACKEND")
        .env_remove("PERRY_CONTAINER_MODE")
        .env_remove("PERRY_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn backends(env: &[(&str, &str)], json: bool) -> std::process::Output {
    perry(
        env,
        if json {
            &["--json", "backends"]
        } else {
            &["backends"]
        },
    )
}

fn doc(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn podman_is_selected_and_every_probe_is_listed_with_its_reason() {
    let out = backends(&[], true);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = doc(&out);
    assert_eq!(v["selected"], "podman", "{v}");
    let probes = v["probes"].as_array().unwrap();
    let names: Vec<&str> = probes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["podman", "nerdctl", "docker"], "Linux probe order");
    let podman = &probes[0];
    assert_eq!(podman["available"], true);
    assert!(
        podman["version"].as_str().unwrap().contains("podman"),
        "{podman}"
    );
    // The docker CLI is installed here but no daemon answers: not picked, and says why.
    let docker = &probes[2];
    assert_eq!(docker["available"], false, "{docker}");
    assert!(
        docker["reason"].as_str().unwrap().contains("daemon"),
        "{docker}"
    );
    // The table names the same facts for people, the mode and isolation level included.
    let out = backends(&[], false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(selected)") && text.contains("docker daemon does not answer"),
        "{text}"
    );
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "BACKEND",
            "AVAILABLE",
            "MODE",
            "ISOLATION",
            "VERSION",
            "REASON"
        ],
        "{text}"
    );
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("podman "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..4],
        ["podman", "yes", "local-first", "sandboxed-kernel"],
        "{text}"
    );
    let out = backends(&[("PERRY_CONTAINER_MODE", "server-first")], false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().skip(1).all(|l| l.contains(" server-first ")),
        "{text}"
    );
}

#[test]
fn an_override_skips_probing_and_an_unusable_one_is_backend_unavailable() {
    let out = backends(&[("PERRY_CONTAINER_BACKEND", "docker")], true);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let v = doc(&out);
    assert_eq!(v["probes"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["error"]["code"], "backend_unavailable", "{v}");
    assert_eq!(v["error"]["status"], 503, "{v}");

    let out = backends(&[("PERRY_CONTAINER_BACKEND", "no-such-runtime")], true);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let v = doc(&out);
    assert_eq!(v["error"]["code"], "backend_unavailable", "{v}");
    assert!(v.to_string().contains("no-such-runtime"), "{v}");

    let out = backends(&[("PERRY_CONTAINER_BACKEND", "podman")], true);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(doc(&out)["selected"], "podman");
}

#[test]
fn an_unknown_mode_is_invalid_config_listing_the_valid_ones() {
    let out = backends(&[("PERRY_CONTAINER_MODE", "cloud-first")], false);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid_config") && err.contains("local-first, server-first"),
        "{err}"
    );
    // compose detects through the per-process cache: the same code, not backend_unavailable.
    let out = perry(
        &[("PERRY_CONTAINER_MODE", "cloud-first")],
        &["compose", "-p", "modecheck", "ps"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("error[invalid_config]"), "{err}");
}
