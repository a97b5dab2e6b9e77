//! Legacy cosign signatures (`sha256-<hex>.sig` manifests) as Rekor-SET-only Sigstore bundles.
//!
//! A legacy signature is a simple-signing JSON payload (a layer), its base64 signature, the
//! Fulcio certificate and chain, and the Rekor "bundle" annotation (signed entry timestamp plus
//! the entry's body, integrated time, log index and log ID). We rebuild a v0.1 Sigstore bundle
//! from those parts and verify it like any other, with the payload bytes as the artifact, so
//! the one well-tested verifier does all cryptography. Before that, the payload itself must
//! name this image: `critical.image.docker-manifest-digest` must equal the digest the signature
//! is attached to, and `critical.identity.docker-reference` must name this repository —
//! otherwise a valid signature for image A could be attached to image B.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use perry_policies::ImageRef;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::VerifyError;

/// The parts of a legacy cosign signature, as discovery found them.
#[derive(Clone, Debug)]
pub struct LegacyParts<'a> {
    /// The simple-signing payload layer bytes.
    pub payload: &'a [u8],
    /// `dev.cosignproject.cosign/signature`: base64 signature over the payload.
    pub signature_b64: &'a str,
    /// `dev.sigstore.cosign/certificate`: the signing certificate (keyless), PEM.
    pub certificate_pem: Option<&'a str>,
    /// `dev.sigstore.cosign/bundle`: the Rekor bundle annotation JSON.
    pub rekor_bundle_json: Option<&'a str>,
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    signed_entry_timestamp: String,
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

#[derive(Deserialize)]
struct RekorBody {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
}

fn malformed(what: &str, reason: impl std::fmt::Display) -> VerifyError {
    VerifyError::Malformed {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Normalises a docker reference's repository name the way `ImageRef` does, also mapping
/// cosign's `index.docker.io` to `docker.io`.
fn repository_name(reference: &str) -> Option<String> {
    let r = reference
        .strip_prefix("index.docker.io/")
        .map(|rest| format!("docker.io/{rest}"))
        .unwrap_or_else(|| reference.to_string());
    ImageRef::parse(&r).ok().map(|i| i.name())
}

/// Checks that the simple-signing payload names `image` (repository) and `attached_to`
/// (digest). This is the binding that stops a signature for image A being replayed on B.
pub fn check_payload(
    payload: &[u8],
    image: &ImageRef,
    attached_to: &str,
) -> Result<(), VerifyError> {
    let ss: SimpleSigning =
        serde_json::from_slice(payload).map_err(|e| malformed("simple-signing payload", e))?;
    if ss.critical.kind != "cosign container image signature" {
        return Err(malformed(
            "simple-signing payload",
            format!(
                "critical.type is {:?}, not \"cosign container image signature\"",
                ss.critical.kind
            ),
        ));
    }
    let signed = ss.critical.image.docker_manifest_digest;
    if !signed.eq_ignore_ascii_case(attached_to) {
        return Err(VerifyError::DigestMismatch {
            signed,
            image: attached_to.to_string(),
        });
    }
    let named = ss.critical.identity.docker_reference;
    let want = image.name();
    match repository_name(&named) {
        Some(n) if n == want => Ok(()),
        _ => Err(VerifyError::RepositoryMismatch {
            signed: named,
            image: want,
        }),
    }
}

/// Builds a v0.1 Sigstore bundle (JSON) from legacy parts: the certificate as a one-element
/// chain (the trusted root supplies the rest), the Rekor entry with its SET as the inclusion
/// promise, and a message signature over SHA-256(payload).
pub fn to_bundle_json(parts: &LegacyParts<'_>) -> Result<String, VerifyError> {
    let rekor_json = parts.rekor_bundle_json.ok_or_else(|| {
        malformed(
            "legacy signature",
            "no Rekor bundle annotation (dev.sigstore.cosign/bundle): cannot prove it was logged",
        )
    })?;
    let rb: RekorBundle =
        serde_json::from_str(rekor_json).map_err(|e| malformed("Rekor bundle annotation", e))?;
    let body_bytes = B64
        .decode(rb.payload.body.as_bytes())
        .map_err(|e| malformed("Rekor bundle annotation Payload.body", e))?;
    let body: RekorBody = serde_json::from_slice(&body_bytes)
        .map_err(|e| malformed("Rekor bundle annotation Payload.body", e))?;
    let log_id = hex::decode(rb.payload.log_id.trim())
        .map_err(|e| malformed("Rekor bundle annotation Payload.logID", e))?;
    if rb.payload.log_index < 0 || rb.payload.integrated_time < 0 {
        return Err(malformed(
            "Rekor bundle annotation",
            "negative logIndex or integratedTime",
        ));
    }
    let sig = parts.signature_b64.trim();
    B64.decode(sig.as_bytes())
        .map_err(|e| malformed("signature annotation", e))?;
    let material = match parts.certificate_pem {
        Some(pem) => {
            let der = pem_to_der(pem)?;
            serde_json::json!({ "x509CertificateChain": { "certificates": [ { "rawBytes": B64.encode(der) } ] } })
        }
        None => serde_json::json!({ "publicKey": { "hint": "" } }),
    };
    let mut vm = material;
    vm["tlogEntries"] = serde_json::json!([{
        "logIndex": rb.payload.log_index.to_string(),
        "logId": { "keyId": B64.encode(&log_id) },
        "kindVersion": { "kind": body.kind, "version": body.api_version },
        "integratedTime": rb.payload.integrated_time.to_string(),
        "inclusionPromise": { "signedEntryTimestamp": rb.signed_entry_timestamp },
        "canonicalizedBody": rb.payload.body,
    }]);
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": vm,
        "messageSignature": {
            "messageDigest": { "algorithm": "SHA2_256", "digest": B64.encode(Sha256::digest(parts.payload)) },
            "signature": sig,
        }
    });
    Ok(bundle.to_string())
}

/// The first certificate in a PEM text, as DER.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, VerifyError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem
        .find(BEGIN)
        .ok_or_else(|| malformed("certificate annotation", "no BEGIN CERTIFICATE line"))?
        + BEGIN.len();
    let end = pem[start..]
        .find(END)
        .ok_or_else(|| malformed("certificate annotation", "no END CERTIFICATE line"))?
        + start;
    let b64: String = pem[start..end].split_whitespace().collect();
    B64.decode(b64.as_bytes())
        .map_err(|e| malformed("certificate annotation", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn payload(reference: &str, digest: &str) -> Vec<u8> {
        serde_json::json!({"critical":{"identity":{"docker-reference":reference},
            "image":{"docker-manifest-digest":digest},"type":"cosign container image signature"},
            "optional":null})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn payload_for_this_repo_and_digest_passes() {
        let img = ImageRef::parse("127.0.0.1:5000/demo/app:v1").unwrap();
        check_payload(&payload("127.0.0.1:5000/demo/app", D), &img, D).unwrap();
        let hub = ImageRef::parse("busybox").unwrap();
        check_payload(&payload("index.docker.io/library/busybox", D), &hub, D).unwrap();
    }

    #[test]
    fn payload_for_digest_a_attached_to_b_is_rejected() {
        let img = ImageRef::parse("127.0.0.1:5000/demo/app:v1").unwrap();
        let e = check_payload(&payload("127.0.0.1:5000/demo/app", D), &img, E).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("signature is for {D}, not this image {E}")
        );
    }

    #[test]
    fn payload_for_another_repository_is_rejected() {
        let img = ImageRef::parse("127.0.0.1:5000/demo/app:v1").unwrap();
        let e = check_payload(&payload("127.0.0.1:5000/demo/other", D), &img, D).unwrap_err();
        assert!(matches!(e, VerifyError::RepositoryMismatch { .. }), "{e}");
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let img = ImageRef::parse("a/b").unwrap();
        for p in [&b""[..], b"{}", b"[1]", b"{\"critical\":{}}", &[0xff, 0xfe]] {
            assert!(check_payload(p, &img, D).is_err());
        }
        let parts = LegacyParts {
            payload: b"x",
            signature_b64: "!!",
            certificate_pem: Some("junk"),
            rekor_bundle_json: Some("{}"),
        };
        assert!(to_bundle_json(&parts).is_err());
        let parts = LegacyParts {
            rekor_bundle_json: None,
            ..parts
        };
        assert!(to_bundle_json(&parts).is_err());
    }
}
