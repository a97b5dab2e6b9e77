//! The OCI 1.1 referrers API path. Debian's docker-registry 2.8 has no referrers API, so a
//! minimal registry serves one here — with a real bundle signed by sigstore-js — and the
//! signature must be found there (layout `referrers`) and verify end to end.

mod registry_fake;

use std::sync::Arc;

use perry_policies::{Config, Digest, ImageRef};
use perry_testworld::{sha256_digest, ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};
use perry_verifier::discover::{discover, SignatureLayout, BUNDLE_ARTIFACT_TYPE};
use perry_verifier::registry::{Platform, RegistryClient};
use perry_verifier::Verifier;
use registry_fake::{FakeRegistry, Request, Response};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Serves `image` at `demo/app:v1` and one referrer carrying `bundle` through the API.
fn referrers_registry(image: &TinyImage, bundle: Vec<u8>) -> FakeRegistry {
    let digest = image.digest();
    let empty = b"{}".to_vec();
    let referrer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_ARTIFACT_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": sha256_digest(&empty), "size": 2},
        "layers": [{"mediaType": BUNDLE_ARTIFACT_TYPE,
                    "digest": sha256_digest(&bundle), "size": bundle.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": image.manifest.len()},
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256_digest(&referrer),
                       "size": referrer.len(), "artifactType": BUNDLE_ARTIFACT_TYPE}],
    }))
    .unwrap();
    let manifest = Arc::new(image.manifest.clone());
    let (ref_digest, bundle_digest) = (sha256_digest(&referrer), sha256_digest(&bundle));
    FakeRegistry::start(move |r: &Request| {
        let path = r.path.split('?').next().unwrap_or_default();
        let ok =
            |body: &[u8], ct: &str| Response::new(200, body.to_vec()).header("Content-Type", ct);
        if path == "/v2/" {
            ok(b"{}", "application/json")
        } else if path == "/v2/demo/app/manifests/v1"
            || path == format!("/v2/demo/app/manifests/{digest}")
        {
            ok(&manifest, OCI_MANIFEST)
        } else if path == format!("/v2/demo/app/referrers/{digest}") {
            ok(&index, "application/vnd.oci.image.index.v1+json")
        } else if path == format!("/v2/demo/app/manifests/{ref_digest}") {
            ok(&referrer, OCI_MANIFEST)
        } else if path == format!("/v2/demo/app/blobs/{bundle_digest}") {
            ok(&bundle, "application/octet-stream")
        } else {
            Response::not_found()
        }
    })
}

#[tokio::test]
async fn a_bundle_listed_by_the_referrers_api_is_found_and_verifies() {
    let image = TinyImage::busybox_marked("amd64", "api");
    let stack = SigStack::shared();
    let bundle = stack.sign_detached("demo/app", &image.digest(), &SignOptions::default());
    let fake = referrers_registry(&image, serde_json::to_vec(&bundle).unwrap());
    let toml = format!("[registries.\"{}\"]\ninsecure = true\n", fake.host());
    let client =
        RegistryClient::new(&Config::from_bytes(toml.as_bytes(), "t.toml".as_ref()).unwrap());
    let repo = ImageRef::parse(&format!("{}/demo/app", fake.host())).unwrap();
    let d = Digest::parse(&image.digest()).unwrap();

    let found = discover(&client, &repo, &d).await.unwrap();
    assert_eq!(found.found.len(), 1, "{:?}", found.looked_in);
    assert_eq!(found.found[0].layout(), SignatureLayout::Referrers);
    assert_eq!(found.found[0].signed_digest(), &d);
    let looked = found.looked_in.join("\n");
    assert!(
        looked.contains("referrers API") && looked.contains("(1 bundle artifact(s)"),
        "{looked}"
    );
    assert!(fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.path.starts_with(&format!("/v2/demo/app/referrers/{d}"))));

    // And through the whole verifier.
    let reg = Registry::start(); // only to build the config; the image lives on the fake
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigBuilder::new(&reg, stack)
        .images(&[&format!("{}/**", fake.host())])
        .extra(&toml)
        .write(dir.path());
    let v = Verifier::new(&Config::load(&cfg).unwrap()).unwrap();
    let ok = v
        .verify(
            &ImageRef::parse(&format!("{}/demo/app:v1", fake.host())).unwrap(),
            &Platform::default(),
        )
        .await
        .unwrap();
    assert_eq!(*ok.image.layout(), SignatureLayout::Referrers);
    assert_eq!(ok.image.digest(), &d);
}
