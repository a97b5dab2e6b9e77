//! Air-gapped `perry-sandbox run` and `verify`: images from an OCI layout directory
//! (`oci:DIR[:tag]`) and an OCI archive (`oci-archive:FILE`), verified with a detached Sigstore
//! bundle (`--bundle`) made by the loopback sigstore-js stack, for the repository named with
//! `--name`. The registry is never contacted. Refusals exit 125 and run nothing.

#[path = "../verifier/tests/layout_support/mod.rs"]
mod layout_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use layout_support::LayoutBuilder;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

struct World {
    _reg: Registry,
    dir: tempfile::TempDir,
    config: PathBuf,
    name: String,
    layout: PathBuf,
    bundle: PathBuf,
}

fn world() -> World {
    // The registry only names the trust rule's glob (`127.0.0.1:PORT/**`); nothing is pushed.
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = ConfigBuilder::new(&reg, SigStack::shared()).write(dir.path());
    let name = format!("{}/airgap/busybox", reg.host());
    let layout = dir.path().join("layout");
    let mut l = LayoutBuilder::new(&layout);
    let digest = l.image(
        &TinyImage::busybox_marked("amd64", "air-gapped"),
        Some("v1"),
    );
    l.write_index();
    l.to_archive(&dir.path().join("image.tar"));
    let bundle = dir.path().join("image.sigstore.json");
    let b = SigStack::shared().sign_detached(&name, &digest, &SignOptions::default());
    std::fs::write(&bundle, serde_json::to_vec(&b).unwrap()).unwrap();
    World {
        _reg: reg,
        dir,
        config,
        name,
        layout,
        bundle,
    }
}

fn perry(w: &World, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
        .arg("--config")
        .arg(&w.config)
        .args(args)
        .env_remove("PERRY_CONFIG")
        .output()
        .unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn layout_and_archive_run_with_a_detached_bundle() {
    let w = world();
    let oci = format!("oci:{}:v1", s(&w.layout));
    let archive = format!("oci-archive:{}", s(&w.dir.path().join("image.tar")));
    let bundle = s(&w.bundle);
    for image in [&oci, &archive] {
        let out = perry(
            &w,
            &[
                "run",
                "--name",
                &w.name,
                "--bundle",
                &bundle,
                image,
                "--",
                "cat",
                "/etc/perry-marker",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{image}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "air-gapped\n");
    }
    let out = perry(
        &w,
        &[
            "--json", "verify", "--name", &w.name, "--bundle", &bundle, &oci,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["pinned"].as_str().unwrap().starts_with(&w.name), "{v}");
}

#[test]
fn without_a_name_or_a_signature_nothing_runs() {
    let w = world();
    let oci = format!("oci:{}:v1", s(&w.layout));
    let witness = w.dir.path().join("witness");
    std::fs::create_dir_all(&witness).unwrap();
    std::fs::set_permissions(&witness, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mount = format!("{}:/work:rw", s(&witness));
    let bundle = s(&w.bundle);
    let cmd = ["--", "sh", "-c", "echo ran > /work/ran"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // No --name: a layout has no name for the trust rules to match.
        (
            vec!["run", "--bundle", &bundle, "--mount", &mount, &oci],
            "--name",
        ),
        // No signature: the layout carries none and no bundle is given.
        (
            vec!["run", "--name", &w.name, "--mount", &mount, &oci],
            "no signature",
        ),
        // The bundle was made for another repository's name.
        (
            vec![
                "run",
                "--name",
                "127.0.0.1:1/other",
                "--bundle",
                &bundle,
                "--mount",
                &mount,
                &oci,
            ],
            "",
        ),
        // A tag the layout does not have.
        (
            vec![
                "run",
                "--name",
                &w.name,
                "--bundle",
                &bundle,
                "--mount",
                &mount,
                "oci:/nonexistent-perry-layout:v1",
            ],
            "",
        ),
    ];
    for (mut args, words) in cases {
        args.extend(cmd);
        let out = perry(&w, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains(&words.to_lowercase()),
            "{args:?}: {err}"
        );
        assert!(!witness.join("ran").exists(), "{args:?} ran");
    }
    let rootfs = w.dir.path().join("state/rootfs");
    assert_eq!(
        std::fs::read_dir(&rootfs).map(|d| d.count()).unwrap_or(0),
        0
    );
}
