//! Shared by the backend tests: the loopback registry, the sigstore-js signer, a verified busybox
//! image, and podman as this host needs it.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use perry_backends::{hardening_for, ContainerSpec, DockerProtocol, PinnedImage};
use perry_policies::{Config, ImageRef, Tier};
use perry_profiles::{Grants, Profile};
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};
use perry_verifier::{registry::Platform, VerifiedImage, Verifier};

pub struct World {
    pub reg: Registry,
    pub dir: tempfile::TempDir,
    pub image: VerifiedImage,
    pub verifier: Verifier,
}

/// One registry, one signed busybox image, verified once for the whole binary.
pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let reg = Registry::start();
        let pushed = reg.push_image(
            "backends/busybox",
            "v1",
            &TinyImage::busybox_marked("amd64", "backends"),
        );
        SigStack::shared().sign(
            &reg,
            "backends/busybox",
            &pushed.digest,
            &SignOptions::default(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = ConfigBuilder::new(&reg, SigStack::shared()).write(dir.path());
        let config = Config::load(&path).unwrap();
        let verifier = Verifier::new(&config).unwrap();
        let image = ImageRef::parse(&format!("{}/backends/busybox:v1", reg.host())).unwrap();
        let image = rt()
            .block_on(verifier.verify(&image, &Platform::default()))
            .unwrap()
            .image;
        World {
            reg,
            dir,
            image,
            verifier,
        }
    })
}

/// One runtime for the whole test binary: the shared world's verifier keeps pooled registry
/// connections, whose tasks live on the runtime that opened them. A runtime per call dropped
/// those tasks under the next test's feet ("dispatch task is gone").
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// podman as this host needs it (crun fails on its hybrid cgroups).
pub fn podman() -> DockerProtocol {
    DockerProtocol::podman(Some("runc")).with_extra_args(
        [
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]
        .map(String::from)
        .to_vec(),
    )
}

pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("perrytest-{prefix}-{}-{n:x}", std::process::id())
}

pub fn spec(name: &str, tier: Tier, cmd: &[&str]) -> ContainerSpec {
    let w = world();
    let profile = Profile::for_tier(tier, None, &Grants::default()).unwrap();
    let hardening = hardening_for(&profile, w.dir.path()).unwrap();
    let mut s = ContainerSpec::new(name, PinnedImage::from_verified(&w.image), hardening);
    s.command = cmd.iter().map(|c| c.to_string()).collect();
    s.labels = BTreeMap::from([("io.perry-sandbox.test".to_string(), name.to_string())]);
    s
}

pub fn status_field(status: &str, key: &str) -> String {
    status_value(status, key).unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// The value of `key` in a `/proc/PID/status` text, if it is there (a process that exited
/// mid-read leaves an empty text).
pub fn status_value(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
}

/// Pushes `image` to `repo:tag` in the world's registry, signs it and verifies it: the only
/// way to a [`PinnedImage`].
pub fn verified(repo: &str, tag: &str, image: &TinyImage) -> PinnedImage {
    let w = world();
    let pushed = w.reg.push_image(repo, tag, image);
    SigStack::shared().sign(&w.reg, repo, &pushed.digest, &SignOptions::default());
    let r = ImageRef::parse(&format!("{}/{repo}:{tag}", w.reg.host())).unwrap();
    let v = rt()
        .block_on(w.verifier.verify(&r, &Platform::default()))
        .unwrap()
        .image;
    PinnedImage::from_verified(&v)
}

/// A spec for `image` (instead of the world's image).
pub fn spec_for(name: &str, image: PinnedImage, tier: Tier, cmd: &[&str]) -> ContainerSpec {
    let mut s = spec(name, tier, cmd);
    s.image = image;
    s
}

/// Runs real podman directly (the test's own hands, not the driver), returning stdout.
pub fn podman_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new("podman")
        .args(args)
        .output()
        .expect("podman")
}

/// A fake CLI (another platform's binary): a shell script that appends its argv to
/// `<dir>/<name>.calls`, then runs `body`.
pub fn fake(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
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

/// The argv lines a [`fake`] CLI was called with.
pub fn calls(dir: &std::path::Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}
