//! The image gate on real podman: the backend's image is checked against the verified digest
//! before anything is created, whether it arrived by pull-by-digest or by `load` of an OCI
//! archive written from our own store; an image re-tagged or swapped under the verified name
//! is refused, never run.

mod common;

use std::path::Path;

use common::{podman, podman_cli, rt, spec_for, unique, verified};
use perry_backends::{
    provision_image, write_oci_archive, BackendError, ContainerBackend, PinnedImage,
};
use perry_policies::Tier;
use perry_testworld::TinyImage;

/// Writes `img`'s blobs as our store holds them: `<dir>/sha256/<hex>`.
fn store_with(dir: &Path, img: &TinyImage) {
    let d = dir.join("sha256");
    std::fs::create_dir_all(&d).unwrap();
    for (digest, bytes) in [
        (img.digest(), &img.manifest),
        (img.digest_of_config(), &img.config),
        (img.digest_of_layer(), &img.layer),
    ] {
        std::fs::write(d.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
    }
}

/// A hand-made OCI archive of `img` whose index names it `ref_name` (what an attacker who can
/// swap the archive file would write).
fn hostile_archive(out: &Path, img: &TinyImage, ref_name: &str) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": img.digest(), "size": img.manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": ref_name}}]});
    add("index.json", &serde_json::to_vec(&index).unwrap());
    for (digest, bytes) in [
        (img.digest(), &img.manifest),
        (img.digest_of_config(), &img.config),
        (img.digest_of_layer(), &img.layer),
    ] {
        add(
            &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
            bytes,
        );
    }
    b.finish().unwrap();
}

/// Removes every trace of an image from podman (the test's own hands).
fn forget(reference: &str) {
    let _ = podman_cli(&["rmi", "--force", reference]);
}

fn marker_of(p: &perry_backends::DockerProtocol, image: &PinnedImage, name: &str) -> String {
    let s = spec_for(
        name,
        image.clone(),
        Tier::Hardened,
        &["cat", "/etc/perry-marker"],
    );
    let out = rt().block_on(p.run(&s)).unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn an_impostor_tagged_or_loaded_under_the_verified_name_is_refused_never_run() {
    let rt = rt();
    let p = podman();
    let good = TinyImage::busybox_marked("amd64", "swap-verified");
    let evil = TinyImage::busybox_marked("amd64", "swap-impostor");
    let v = verified("swap/busybox", "v1", &good);
    let repo = v.repository().to_string();
    // The impostor is in the same repository under another tag; nobody signed it.
    let w = common::world();
    w.reg.push_image("swap/busybox", "evil", &evil);
    forget(v.reference());
    forget(&format!("{repo}:evil"));

    // Someone with access to the backend re-tags the impostor under the verified name.
    let o = podman_cli(&["pull", "--tls-verify=false", &format!("{repo}:evil")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for tag in ["v1", "latest"] {
        let o = podman_cli(&["tag", &format!("{repo}:evil"), &format!("{repo}:{tag}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(!rt.block_on(p.image_exists(&v)).unwrap());
    assert_eq!(rt.block_on(p.image_id(&v)).unwrap(), None);
    let name = unique("swap");
    let s = spec_for(&name, v.clone(), Tier::Hardened, &["true"]);
    for e in [
        rt.block_on(p.create(&s)).unwrap_err(),
        rt.block_on(p.run(&s)).map(drop).unwrap_err(),
    ] {
        assert_eq!(e.code().as_str(), "not_found", "{e}");
    }
    assert!(rt
        .block_on(p.list("io.perry-sandbox.test", &name))
        .unwrap()
        .is_empty());

    // An archive swapped for one holding the impostor, named by a tag of the verified
    // repository: the backend loads it, we refuse it.
    let dir = tempfile::tempdir().unwrap();
    let tagged = dir.path().join("tagged.tar");
    hostile_archive(&tagged, &evil, &format!("{repo}:v1"));
    let e = rt.block_on(p.load(&v, &tagged)).unwrap_err();
    assert!(matches!(e, BackendError::DigestMismatch { .. }), "{e}");
    assert_eq!(e.code().as_str(), "verification_failed");
    // ... or named by the verified digest itself: the backend refuses to load it at all.
    let pinned = dir.path().join("pinned.tar");
    hostile_archive(&pinned, &evil, v.reference());
    let e = rt.block_on(p.load(&v, &pinned)).unwrap_err();
    assert!(e.exit_code().is_some_and(|c| c != 0), "{e}");
    assert_eq!(rt.block_on(p.image_id(&v)).unwrap(), None);

    // Pulled by digest, the verified image runs, and the impostor's tags change nothing.
    let id = rt.block_on(p.pull(&v)).unwrap();
    let evil_id = String::from_utf8_lossy(
        &podman_cli(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{repo}:v1"),
        ])
        .stdout,
    )
    .trim()
    .to_string();
    assert_ne!(id, evil_id);
    assert_eq!(rt.block_on(p.image_id(&v)).unwrap(), Some(id));
    assert_eq!(marker_of(&p, &v, &unique("swap-run")), "swap-verified");

    // The backend remembers which image id it checked; when the verified image is then removed
    // behind its back and the impostor still wears the tags, `create` fails instead of
    // running anything else (the remembered id names the verified content only).
    forget(v.reference());
    let name = unique("swap-stale");
    let s = spec_for(&name, v.clone(), Tier::Hardened, &["true"]);
    let e = rt.block_on(p.create(&s)).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");
    assert!(rt
        .block_on(p.list("io.perry-sandbox.test", &name))
        .unwrap()
        .is_empty());
    forget(&format!("{repo}:evil"));
}

#[test]
fn an_archive_written_from_our_store_loads_and_runs_the_verified_image() {
    let rt = rt();
    let p = podman();
    let img = TinyImage::busybox_marked("amd64", "load-verified");
    let v = verified("load/busybox", "v1", &img);
    forget(v.reference());
    assert_eq!(rt.block_on(p.image_id(&v)).unwrap(), None);

    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    store_with(&blobs, &img);
    let out = dir.path().join("image.tar");
    let info = write_oci_archive(&blobs, &v, &out).unwrap();
    assert_eq!(info.blobs, 3);
    assert_eq!(
        info.bytes as usize,
        img.manifest.len() + img.config.len() + img.layer.len()
    );
    let id = rt.block_on(p.load(&v, &out)).unwrap();
    assert_eq!(rt.block_on(p.image_id(&v)).unwrap(), Some(id.clone()));
    // Recorded under the verified digest only: no tag was created.
    let tags = podman_cli(&["image", "inspect", "--format", "{{.RepoTags}}", &id]);
    assert_eq!(String::from_utf8_lossy(&tags.stdout).trim(), "[]");
    assert_eq!(marker_of(&p, &v, &unique("load-run")), "load-verified");
    // Held already: provisioning returns the same id without pulling or loading.
    let again = rt
        .block_on(provision_image(&p, &v, &blobs, dir.path()))
        .unwrap();
    assert_eq!(again, id);
    rt.block_on(p.remove_image(&v)).unwrap();
    assert_eq!(rt.block_on(p.image_id(&v)).unwrap(), None);
    // Idempotent, like forced container removal.
    rt.block_on(p.remove_image(&v)).unwrap();
}

#[test]
fn a_store_that_does_not_hold_the_verified_bytes_writes_no_archive() {
    let img = TinyImage::busybox_marked("amd64", "tamper-verified");
    let other = TinyImage::busybox_marked("amd64", "tamper-other");
    let v = verified("tamper/busybox", "v1", &img);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image.tar");
    let layer_path = |blobs: &Path| {
        blobs
            .join("sha256")
            .join(img.digest_of_layer().trim_start_matches("sha256:"))
    };

    // A flipped byte in the layer (same size).
    let blobs = dir.path().join("flipped");
    store_with(&blobs, &img);
    let mut layer = img.layer.clone();
    let mid = layer.len() / 2;
    layer[mid] ^= 1;
    std::fs::write(layer_path(&blobs), &layer).unwrap();
    let e = write_oci_archive(&blobs, &v, &out).unwrap_err();
    assert_eq!(e.code().as_str(), "verification_failed", "{e}");
    assert!(!out.exists());

    // A truncated layer.
    std::fs::write(layer_path(&blobs), &img.layer[..10]).unwrap();
    let e = write_oci_archive(&blobs, &v, &out).unwrap_err();
    assert_eq!(e.code().as_str(), "verification_failed", "{e}");

    // A missing layer.
    std::fs::remove_file(layer_path(&blobs)).unwrap();
    let e = write_oci_archive(&blobs, &v, &out).unwrap_err();
    assert_eq!(e.code().as_str(), "not_found", "{e}");

    // Another image's manifest stored under the verified digest's name.
    let blobs = dir.path().join("swapped");
    store_with(&blobs, &other);
    std::fs::write(
        blobs
            .join("sha256")
            .join(v.digest().trim_start_matches("sha256:")),
        &other.manifest,
    )
    .unwrap();
    let e = write_oci_archive(&blobs, &v, &out).unwrap_err();
    assert!(matches!(e, BackendError::DigestMismatch { .. }), "{e}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temp file left"
    );
}
