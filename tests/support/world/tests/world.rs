//! The test world itself works: a real registry, real images, real signatures in both layouts,
//! and a configuration perry-policies accepts.

use perry_testworld::{
    sha256_digest, ConfigBuilder, Layout, Registry, SigStack, SignOptions, TinyImage, TinyIndex,
};

#[test]
fn images_push_and_tags_move() {
    let reg = Registry::start();
    let a = TinyImage::busybox_marked("amd64", "a");
    let b = TinyImage::busybox_marked("amd64", "b");
    assert_ne!(a.digest(), b.digest());
    assert_eq!(
        a.digest(),
        TinyImage::busybox_marked("amd64", "a").digest(),
        "deterministic"
    );
    let pa = reg.push_image("demo/app", "v1", &a);
    let pb = reg.push_image("demo/app", "other", &b);
    let (bytes, _) = reg.get_manifest("demo/app", "v1").unwrap();
    assert_eq!(sha256_digest(&bytes), pa.digest);
    reg.move_tag("demo/app", "v1", &pb.digest);
    let (bytes, _) = reg.get_manifest("demo/app", "v1").unwrap();
    assert_eq!(sha256_digest(&bytes), pb.digest);

    let idx = TinyIndex::two_platform("multi");
    let pi = reg.push_index("demo/multi", "v1", &idx);
    assert_eq!(pi.digest, idx.digest());
    assert_eq!(pi.platform("arm64"), idx.image("arm64").digest());
    let (bytes, ct) = reg.get_manifest("demo/multi", "v1").unwrap();
    assert_eq!(sha256_digest(&bytes), pi.digest);
    assert_eq!(ct, "application/vnd.oci.image.index.v1+json");
    assert!(reg.get_manifest("demo/app", "missing").is_none());
}

#[test]
fn busybox_layer_has_the_applets() {
    let img = TinyImage::busybox("amd64");
    let tar = flate2::read::GzDecoder::new(&img.layer[..]);
    let mut names = Vec::new();
    for e in tar::Archive::new(tar).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    for want in [
        "bin/busybox",
        "bin/sh",
        "bin/nc",
        "bin/id",
        "etc/passwd",
        "etc/perry-marker",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let cfg: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    let gunzipped = {
        use std::io::Read;
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&img.layer[..])
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    assert_eq!(cfg["rootfs"]["diff_ids"][0], sha256_digest(&gunzipped));
}

#[test]
fn signs_in_both_layouts() {
    let reg = Registry::start();
    let stack = SigStack::shared();
    let img = TinyImage::busybox_marked("amd64", "signed");
    let p = reg.push_image("demo/signed", "v1", &img);
    let hex = p.digest.trim_start_matches("sha256:").to_string();

    let s = stack.sign(&reg, "demo/signed", &p.digest, &SignOptions::default());
    assert_eq!(s.layout, Layout::ReferrersTag);
    assert_eq!(
        s.response["bundle"]["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    let (idx, _) = reg
        .get_manifest("demo/signed", &format!("sha256-{hex}"))
        .expect("referrers tag");
    let idx: serde_json::Value = serde_json::from_slice(&idx).unwrap();
    assert_eq!(
        idx["manifests"][0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );

    let opts = SignOptions {
        layout: Layout::LegacySig,
        ..Default::default()
    };
    stack.sign(&reg, "demo/signed", &p.digest, &opts);
    stack.sign(&reg, "demo/signed", &p.digest, &opts);
    let (sig, _) = reg
        .get_manifest("demo/signed", &format!("sha256-{hex}.sig"))
        .expect(".sig tag");
    let sig: serde_json::Value = serde_json::from_slice(&sig).unwrap();
    let layers = sig["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "second signature appended");
    let ann = &layers[0]["annotations"];
    for k in [
        "dev.cosignproject.cosign/signature",
        "dev.sigstore.cosign/certificate",
        "dev.sigstore.cosign/chain",
        "dev.sigstore.cosign/bundle",
    ] {
        assert!(ann[k].is_string(), "{k} missing: {ann}");
    }
    let rekor: serde_json::Value =
        serde_json::from_str(ann["dev.sigstore.cosign/bundle"].as_str().unwrap()).unwrap();
    assert!(rekor["SignedEntryTimestamp"].is_string());
    assert!(rekor["Payload"]["integratedTime"].is_u64());
}

#[test]
fn config_is_accepted_by_perry_policies() {
    let reg = Registry::start();
    let stack = SigStack::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = ConfigBuilder::new(&reg, stack).write(dir.path());
    let cfg = perry_policies::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let img = perry_policies::ImageRef::parse(&format!("{}/demo/app:v1", reg.host())).unwrap();
    assert_eq!(cfg.trust.rules_for(&img).len(), 1);
    assert!(cfg.registries[&reg.host()].insecure);
}

#[test]
fn independent_stacks_have_different_roots() {
    let a = SigStack::shared();
    let b = SigStack::start();
    let ra = std::fs::read(a.trusted_root()).unwrap();
    let rb = std::fs::read(b.trusted_root()).unwrap();
    assert_ne!(ra, rb);
}
