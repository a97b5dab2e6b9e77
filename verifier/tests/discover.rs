//! Signature discovery against a real docker-registry (no referrers API, so the tag fallback is
//! exercised) with signatures made and attached by the real sigstore-js signer.

use perry_policies::{Config, Digest, ImageRef};
use perry_testworld::{Layout, Registry, SigStack, SignOptions, TinyImage, TinyIndex};
use perry_verifier::discover::{discover, FoundSignature, SignatureLayout};
use perry_verifier::registry::RegistryClient;

fn client(reg: &Registry) -> RegistryClient {
    let toml = format!("[registries.\"{}\"]\ninsecure = true\n", reg.host());
    RegistryClient::new(&Config::from_bytes(toml.as_bytes(), "t.toml".as_ref()).unwrap())
}

fn repo(reg: &Registry, name: &str) -> ImageRef {
    ImageRef::parse(&format!("{}/{name}", reg.host())).unwrap()
}

fn legacy() -> SignOptions {
    SignOptions {
        layout: Layout::LegacySig,
        ..Default::default()
    }
}

#[tokio::test]
async fn unsigned_image_has_nothing_and_says_where_it_looked() {
    let reg = Registry::start();
    let p = reg.push_image(
        "demo/unsigned",
        "v1",
        &TinyImage::busybox_marked("amd64", "u"),
    );
    let d = Digest::parse(&p.digest).unwrap();
    let found = discover(&client(&reg), &repo(&reg, "demo/unsigned"), &d)
        .await
        .unwrap();
    assert!(found.found.is_empty());
    let looked = found.looked_in.join("\n");
    assert_eq!(found.looked_in.len(), 3, "{looked}");
    assert!(looked.contains("referrers API"), "{looked}");
    assert!(
        looked.contains(&format!(":sha256-{} (no such tag)", d.hex())),
        "{looked}"
    );
    assert!(
        looked.contains(&format!(":sha256-{}.sig (no such tag)", d.hex())),
        "{looked}"
    );
    assert!(looked.contains(&reg.host()), "{looked}");
}

#[tokio::test]
async fn finds_bundles_in_the_referrers_tag_and_legacy_signatures() {
    let reg = Registry::start();
    let stack = SigStack::shared();
    let p = reg.push_image(
        "demo/signed",
        "v1",
        &TinyImage::busybox_marked("amd64", "s"),
    );
    let d = Digest::parse(&p.digest).unwrap();
    stack.sign(&reg, "demo/signed", &p.digest, &SignOptions::default());
    stack.sign(&reg, "demo/signed", &p.digest, &legacy());

    let found = discover(&client(&reg), &repo(&reg, "demo/signed"), &d)
        .await
        .unwrap();
    assert_eq!(found.found.len(), 2, "{:?}", found.looked_in);
    match &found.found[0] {
        FoundSignature::Bundle {
            layout,
            signed_digest,
            bundle_json,
        } => {
            assert_eq!(*layout, SignatureLayout::ReferrersTag);
            assert_eq!(layout.to_string(), "referrers-tag");
            assert_eq!(signed_digest, &d);
            let b: serde_json::Value = serde_json::from_slice(bundle_json).unwrap();
            assert_eq!(
                b["mediaType"],
                "application/vnd.dev.sigstore.bundle.v0.3+json"
            );
            assert!(b["dsseEnvelope"]["payload"].is_string());
        }
        other => panic!("{other:?}"),
    }
    match &found.found[1] {
        FoundSignature::Legacy {
            signed_digest,
            payload,
            signature_b64,
            certificate_pem,
            chain_pem,
            rekor_bundle_json,
        } => {
            assert_eq!(signed_digest, &d);
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(v["critical"]["image"]["docker-manifest-digest"], p.digest);
            assert!(!signature_b64.is_empty());
            assert!(certificate_pem
                .as_deref()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE"));
            assert!(chain_pem.is_some());
            let rb: serde_json::Value =
                serde_json::from_str(rekor_bundle_json.as_deref().unwrap()).unwrap();
            assert!(rb["SignedEntryTimestamp"].is_string());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(found.found[1].layout().to_string(), "legacy-sig");
    let looked = found.looked_in.join("\n");
    assert!(looked.contains("(1 bundle artifact(s))"), "{looked}");
    assert!(looked.contains("(1 signature(s))"), "{looked}");
}

#[tokio::test]
async fn index_and_platform_digests_are_searched_separately() {
    let reg = Registry::start();
    let stack = SigStack::shared();
    let p = reg.push_index("demo/multi", "v1", &TinyIndex::two_platform("m"));
    let amd = p.platform("amd64").to_string();
    // Signature on the index only (referrers tag), and on the amd64 manifest only (legacy).
    stack.sign(&reg, "demo/multi", &p.digest, &SignOptions::default());
    stack.sign(&reg, "demo/multi", &amd, &legacy());
    let c = client(&reg);
    let r = repo(&reg, "demo/multi");

    let on_index = discover(&c, &r, &Digest::parse(&p.digest).unwrap())
        .await
        .unwrap();
    assert_eq!(on_index.found.len(), 1);
    assert_eq!(on_index.found[0].layout(), SignatureLayout::ReferrersTag);
    let on_amd = discover(&c, &r, &Digest::parse(&amd).unwrap())
        .await
        .unwrap();
    assert_eq!(on_amd.found.len(), 1);
    assert_eq!(on_amd.found[0].layout(), SignatureLayout::LegacySig);
    let arm = discover(&c, &r, &Digest::parse(p.platform("arm64")).unwrap())
        .await
        .unwrap();
    assert!(arm.found.is_empty());
}

#[tokio::test]
async fn unrelated_artifacts_and_junk_at_signature_tags_are_ignored() {
    let reg = Registry::start();
    let p = reg.push_image("demo/junk", "v1", &TinyImage::busybox_marked("amd64", "j"));
    let d = Digest::parse(&p.digest).unwrap();
    let hex = d.hex().to_string();
    // The referrers tag holds an index listing an SBOM, not a bundle.
    let sbom_cfg = reg.put_blob("demo/junk", b"{}");
    let sbom_layer = reg.put_blob("demo/junk", b"{\"spdxVersion\":\"SPDX-2.3\"}");
    let sbom = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sbom_cfg, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom_layer, "size": 26}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": p.digest, "size": 1},
    }))
    .unwrap();
    let sbom_digest = reg.put_manifest(
        "demo/junk",
        "sbom",
        "application/vnd.oci.image.manifest.v1+json",
        &sbom,
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sbom_digest, "size": sbom.len(),
                       "artifactType": "application/spdx+json"}],
    }))
    .unwrap();
    reg.put_manifest(
        "demo/junk",
        &format!("sha256-{hex}"),
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    // The .sig tag holds an ordinary image (no simple-signing layers).
    let plain = TinyImage::busybox_marked("amd64", "not-a-signature");
    reg.push_image("demo/junk", &format!("sha256-{hex}.sig"), &plain);

    let found = discover(&client(&reg), &repo(&reg, "demo/junk"), &d)
        .await
        .unwrap();
    assert!(found.found.is_empty(), "{:?}", found.found);
    let looked = found.looked_in.join("\n");
    assert!(looked.contains("(0 bundle artifact(s))"), "{looked}");
    assert!(looked.contains("(0 signature(s))"), "{looked}");
}

#[tokio::test]
async fn a_signature_attached_for_another_digest_reports_what_it_claims() {
    // Signed statement names digest A, attached to B: discovery returns it under B's search
    // with the subject B (what it is attached to); the verifier must then compare the signed
    // statement's subject with B and refuse (see e2e tests).
    let reg = Registry::start();
    let stack = SigStack::shared();
    let a = reg.push_image("demo/ab", "a", &TinyImage::busybox_marked("amd64", "A"));
    let b = reg.push_image("demo/ab", "b", &TinyImage::busybox_marked("amd64", "B"));
    let opts = SignOptions {
        subject_digest: Some(a.digest.clone()),
        ..Default::default()
    };
    let signed = stack.sign(&reg, "demo/ab", &b.digest, &opts);
    let payload = signed.response["bundle"]["dsseEnvelope"]["payload"]
        .as_str()
        .unwrap();
    use base64::Engine as _;
    let stmt: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        format!(
            "sha256:{}",
            stmt["subject"][0]["digest"]["sha256"].as_str().unwrap()
        ),
        a.digest
    );
    let found = discover(
        &client(&reg),
        &repo(&reg, "demo/ab"),
        &Digest::parse(&b.digest).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(found.found.len(), 1);
    assert_eq!(found.found[0].signed_digest().as_str(), b.digest);
}

#[tokio::test]
async fn an_image_at_the_referrers_tag_is_ignored_not_fatal() {
    // A plain image pushed under `sha256-<hex>` (not an index): nothing is found there, the
    // legacy layout is still searched, and discovery does not fail.
    let reg = Registry::start();
    let stack = SigStack::shared();
    let p = reg.push_image("demo/odd", "v1", &TinyImage::busybox_marked("amd64", "odd"));
    let d = Digest::parse(&p.digest).unwrap();
    reg.push_image(
        "demo/odd",
        &format!("sha256-{}", d.hex()),
        &TinyImage::busybox_marked("amd64", "squatter"),
    );
    stack.sign(&reg, "demo/odd", &p.digest, &legacy());
    let found = discover(&client(&reg), &repo(&reg, "demo/odd"), &d)
        .await
        .unwrap();
    assert_eq!(found.found.len(), 1, "{:?}", found.looked_in);
    assert_eq!(found.found[0].layout(), SignatureLayout::LegacySig);
    let looked = found.looked_in.join("\n");
    assert!(looked.contains(&format!("sha256-{}", d.hex())), "{looked}");
}
