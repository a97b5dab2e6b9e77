//! Legacy cosign `.sig` signatures are verified as Rekor-SET-only bundles.
//!
//! The parts of a legacy signature (payload, base64 signature, certificate PEM, Rekor bundle
//! annotation) are taken from a real public-good hashedrekord entry (the conformance
//! `happy-path-v0.1` bundle, whose artifact plays the payload), so the SET is Rekor's own
//! signature: the test proves the rebuilt bundle verifies with no inclusion proof at all, and
//! that tampering with any SET-covered field or the signature is refused.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use perry_verifier::legacy::{to_bundle_json, LegacyParts};
use perry_verifier::signature::{parse_bundle, verify_bundle, Signer};
use perry_verifier::{TrustRoot, VerifyError};
use sigstore_verify::types::Artifact;

const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";

fn fixture(p: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/conformance")
            .join(p),
    )
    .unwrap()
}

struct Parts {
    payload: Vec<u8>,
    signature: String,
    cert_pem: String,
    rekor: serde_json::Value,
}

/// Cosign-style parts from the v0.1 bundle.
fn parts() -> Parts {
    let b: serde_json::Value =
        serde_json::from_slice(&fixture("happy-path-v0.1/bundle.sigstore.json")).unwrap();
    let cert_b64 = b["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"]
        .as_str()
        .unwrap();
    let lines: Vec<String> = cert_b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let cert_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    let e = &b["verificationMaterial"]["tlogEntries"][0];
    let log_id = hex::encode(B64.decode(e["logId"]["keyId"].as_str().unwrap()).unwrap());
    let rekor = serde_json::json!({
        "SignedEntryTimestamp": e["inclusionPromise"]["signedEntryTimestamp"],
        "Payload": {
            "body": e["canonicalizedBody"],
            "integratedTime": e["integratedTime"].as_str().unwrap().parse::<i64>().unwrap(),
            "logIndex": e["logIndex"].as_str().unwrap().parse::<i64>().unwrap(),
            "logID": log_id,
        }
    });
    Parts {
        payload: fixture("a.txt"),
        signature: b["messageSignature"]["signature"].as_str().unwrap().into(),
        cert_pem,
        rekor,
    }
}

fn verify(p: &Parts) -> Result<perry_verifier::SignatureFacts, VerifyError> {
    let rekor = p.rekor.to_string();
    let json = to_bundle_json(&LegacyParts {
        payload: &p.payload,
        signature_b64: &p.signature,
        certificate_pem: Some(&p.cert_pem),
        rekor_bundle_json: Some(&rekor),
    })?;
    let bundle = parse_bundle(json.as_bytes())?;
    assert!(
        !bundle.has_inclusion_proof(),
        "the rebuilt bundle must be SET-only"
    );
    let root = TrustRoot::public_good().unwrap();
    verify_bundle(&root, &bundle, Artifact::from_blob(&p.payload), &[])
}

#[test]
fn legacy_parts_verify_with_the_set_alone() {
    let facts = verify(&parts()).expect("SET-only legacy signature verifies");
    assert_eq!(
        facts.signer,
        Signer::Keyless {
            subject: BEACON.into(),
            issuer: "https://token.actions.githubusercontent.com".into()
        }
    );
    assert_eq!(facts.integrated_time, Some(1689177396));
    assert_eq!(facts.log_index, Some(27246492));
}

#[test]
fn tampered_set_is_refused_as_set_invalid() {
    let mut p = parts();
    let mut set = B64
        .decode(p.rekor["SignedEntryTimestamp"].as_str().unwrap())
        .unwrap();
    let n = set.len();
    set[n - 2] ^= 0x01;
    p.rekor["SignedEntryTimestamp"] = B64.encode(set).into();
    let e = verify(&p).unwrap_err();
    assert!(e.to_string().starts_with("SET signature invalid"), "{e}");
}

#[test]
fn moved_integrated_time_or_log_index_breaks_the_set() {
    for field in ["integratedTime", "logIndex"] {
        let mut p = parts();
        let v = p.rekor["Payload"][field].as_i64().unwrap();
        p.rekor["Payload"][field] = (v - 1).into();
        let e = verify(&p).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::SetInvalid(_) | VerifyError::SignatureInvalid(_)
            ),
            "{field}: {e}"
        );
    }
}

#[test]
fn tampered_payload_is_refused() {
    let mut p = parts();
    p.payload.push(b'!');
    assert!(verify(&p).is_err());
}

#[test]
fn signature_swapped_for_another_is_refused() {
    let mut p = parts();
    let mut sig = B64.decode(&p.signature).unwrap();
    let n = sig.len();
    sig[n - 1] ^= 0x01;
    p.signature = B64.encode(sig);
    assert!(verify(&p).is_err());
}

#[test]
fn missing_rekor_bundle_is_refused() {
    let p = parts();
    let e = to_bundle_json(&LegacyParts {
        payload: &p.payload,
        signature_b64: &p.signature,
        certificate_pem: Some(&p.cert_pem),
        rekor_bundle_json: None,
    })
    .unwrap_err();
    assert!(e.to_string().contains("Rekor bundle"), "{e}");
}

#[test]
fn legacy_signature_under_an_untrusted_root_is_refused() {
    let p = parts();
    let rekor = p.rekor.to_string();
    let json = to_bundle_json(&LegacyParts {
        payload: &p.payload,
        signature_b64: &p.signature,
        certificate_pem: Some(&p.cert_pem),
        rekor_bundle_json: Some(&rekor),
    })
    .unwrap();
    let bundle = parse_bundle(json.as_bytes()).unwrap();
    let root = TrustRoot::from_json_bytes(
        &fixture("intoto-with-custom-trust-root/trusted_root.json"),
        "custom",
    )
    .unwrap();
    assert!(verify_bundle(&root, &bundle, Artifact::from_blob(&p.payload), &[]).is_err());
}
