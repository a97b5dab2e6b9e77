//! `perry-backends` against real podman + runc on this host, with an image pushed to the loopback
//! registry, signed by the sigstore-js stack and verified by the real verifier: the only way to
//! get the `PinnedImage` every container is created from.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{podman, rt, spec, status_field, unique, world};
use perry_backends::{
    BackendError, ContainerBackend, ExecSpec, NetworkSpec, PinnedImage, VolumeSpec,
};
use perry_policies::Tier;

#[test]
fn a_hardened_container_runs_confined_from_the_verified_digest() {
    let rt = rt();
    let p = podman();
    let w = world();
    let image = PinnedImage::from_verified(&w.image);
    rt.block_on(p.pull(&image)).unwrap();
    assert!(rt.block_on(p.image_exists(&image)).unwrap());
    let name = unique("hardened");
    let s = spec(
        &name,
        Tier::Hardened,
        &[
            "sh",
            "-c",
            "cat /proc/self/status; id -u; touch /x 2>/dev/null && echo wrote-root || echo ro-root; nc -w1 10.0.0.1 80 </dev/null 2>/dev/null && echo net || echo no-net; cat /etc/perry-marker",
        ],
    );
    let out = rt.block_on(p.run(&s)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Checked from inside: no capabilities at all, seccomp filtering, no_new_privs.
    assert_eq!(status_field(&text, "CapEff"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "CapBnd"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "Seccomp"), "2", "{text}");
    assert_eq!(status_field(&text, "NoNewPrivs"), "1", "{text}");
    assert!(text.contains("\n65534\n"), "non-root: {text}");
    assert!(
        text.contains("ro-root") && !text.contains("wrote-root"),
        "{text}"
    );
    assert!(text.contains("no-net"), "{text}");
    assert!(text.contains("backends"), "the verified image ran: {text}");
    // `run` removes what it made: nothing is left under the test label.
    let left = rt.block_on(p.list("io.perry-sandbox.test", &name)).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn lifecycle_exec_inspect_and_failure_paths() {
    let rt = rt();
    let p = podman();
    let w = world();
    rt.block_on(p.pull(&PinnedImage::from_verified(&w.image)))
        .unwrap();
    let name = unique("life");
    let s = spec(&name, Tier::Isolated, &["sleep", "60"]);
    let id = rt.block_on(p.create(&s)).unwrap();
    // A second container with the same name is refused by the backend, not hidden.
    let e = rt.block_on(p.create(&s)).unwrap_err();
    assert!(matches!(e, BackendError::Cli { .. }), "{e}");
    rt.block_on(p.start(&id)).unwrap();
    let info = rt.block_on(p.inspect(&id)).unwrap();
    assert_eq!(info.labels.get("io.perry-sandbox.test"), Some(&name));
    let out = rt
        .block_on(p.exec(
            &id,
            &ExecSpec {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo $GREETING; pwd; exit 3".into(),
                ],
                env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
                workdir: Some("/tmp".into()),
                user: None,
            },
        ))
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n/tmp\n");
    assert_eq!(
        rt.block_on(p.list("io.perry-sandbox.test", &name))
            .unwrap()
            .len(),
        1
    );
    rt.block_on(p.stop(&id, Duration::from_secs(1))).unwrap();
    let code = rt.block_on(p.wait(&id)).unwrap();
    assert_ne!(code, 0, "sleep was stopped, not finished");
    rt.block_on(p.remove(&id, true)).unwrap();
    assert!(rt
        .block_on(p.list("io.perry-sandbox.test", &name))
        .unwrap()
        .is_empty());
    // A container that is gone is `not_found`.
    let e = rt.block_on(p.inspect(&id)).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");
}

#[test]
fn networks_and_volumes_are_created_labelled_listed_and_removed() {
    let rt = rt();
    let p = podman();
    let net = unique("net");
    let labels = BTreeMap::from([("io.perry-sandbox.test".to_string(), net.clone())]);
    rt.block_on(p.network_create(&NetworkSpec {
        name: net.clone(),
        internal: true,
        labels: labels.clone(),
    }))
    .unwrap();
    let info = rt.block_on(p.network_inspect(&net)).unwrap();
    assert!(info.internal, "{info:?}");
    assert_eq!(
        rt.block_on(p.network_list("io.perry-sandbox.test", &net))
            .unwrap(),
        vec![net.clone()]
    );
    rt.block_on(p.network_remove(&net)).unwrap();
    let e = rt.block_on(p.network_inspect(&net)).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");

    let vol = unique("vol");
    rt.block_on(p.volume_create(&VolumeSpec {
        name: vol.clone(),
        labels: BTreeMap::from([("io.perry-sandbox.test".to_string(), vol.clone())]),
    }))
    .unwrap();
    assert_eq!(
        rt.block_on(p.volume_list("io.perry-sandbox.test", &vol))
            .unwrap(),
        vec![vol.clone()]
    );
    rt.block_on(p.volume_remove(&vol)).unwrap();
    assert!(rt
        .block_on(p.volume_list("io.perry-sandbox.test", &vol))
        .unwrap()
        .is_empty());
    let _ = &world().reg;
}

#[test]
fn untrusted_runs_under_gvisor_with_its_seccomp_profile_applied() {
    let rt = rt();
    let p = podman();
    let w = world();
    rt.block_on(p.pull(&PinnedImage::from_verified(&w.image)))
        .unwrap();
    let name = unique("untrusted");
    let s = spec(
        &name,
        Tier::Untrusted,
        &[
            "sh",
            "-c",
            "cat /proc/self/status; cat /proc/version; echo busybox-ran",
        ],
    );
    let out = rt.block_on(p.run(&s)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("busybox-ran"), "{text}");
    // The tier's seccomp profile is applied inside gVisor (oci-seccomp), not silently dropped.
    assert_eq!(status_field(&text, "Seccomp"), "2", "{text}");
    assert_eq!(status_field(&text, "CapEff"), "0000000000000000", "{text}");
    // gVisor's own kernel answers, not the host's.
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert!(
        !text.contains(host.trim()),
        "ran on the host kernel: {text}"
    );
}

#[test]
fn untrusted_is_refused_before_anything_is_created_without_a_sandboxed_kernel() {
    let rt = rt();
    let p = podman().with_sandbox(None);
    let name = unique("nosandbox");
    let s = spec(&name, Tier::Untrusted, &["true"]);
    let e = rt.block_on(p.run(&s)).unwrap_err();
    assert_eq!(e.code().as_str(), "isolation_unavailable", "{e}");
    assert!(
        e.to_string().contains("runsc"),
        "names what to install: {e}"
    );
    assert!(rt
        .block_on(p.list("io.perry-sandbox.test", &name))
        .unwrap()
        .is_empty());
}
