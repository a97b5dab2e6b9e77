//! Verifying a bundle for a plain file or digest: `perry-sandbox verify-bundle`.
//!
//! This is the sigstore-conformance client protocol (`verify-bundle --bundle F
//! (--certificate-identity I --certificate-oidc-issuer U | --key K) [--trusted-root T]
//! FILE_OR_sha256:DIGEST`), and a convenience for users verifying blobs. It runs exactly the
//! same bundle verification as images do.

use std::path::Path;

use sigstore_verify::types::{Artifact, Sha256Hash};
use sigstore_verify::VerificationPolicy;

use crate::error::{from_sigstore, VerifyError};
use crate::signature::{parse_bundle, verify_bundle, SignatureFacts, Signer, TrustedKey};
use crate::trust_root::TrustRoot;

/// What was signed: the bytes of a file, or a `sha256:<hex>` digest of them.
#[derive(Clone, Debug)]
pub enum BlobInput {
    /// The artifact bytes.
    Bytes(Vec<u8>),
    /// A SHA-256 digest (32 bytes).
    Sha256([u8; 32]),
}

impl BlobInput {
    /// `sha256:<64 hex>` is a digest; anything else is a file path to read.
    pub fn from_arg(arg: &str) -> Result<Self, VerifyError> {
        if let Some(hex_part) = arg.strip_prefix("sha256:") {
            let bytes = hex::decode(hex_part).map_err(|e| VerifyError::Malformed {
                what: format!("digest argument {arg:?}"),
                reason: e.to_string(),
            })?;
            let arr: [u8; 32] = bytes.try_into().map_err(|_| VerifyError::Malformed {
                what: format!("digest argument {arg:?}"),
                reason: "a sha256 digest is 64 hex digits".into(),
            })?;
            return Ok(Self::Sha256(arr));
        }
        let bytes = std::fs::read(Path::new(arg)).map_err(|e| VerifyError::Malformed {
            what: format!("artifact file {arg}"),
            reason: e.to_string(),
        })?;
        Ok(Self::Bytes(bytes))
    }

    fn artifact(&self) -> Artifact<'_> {
        match self {
            Self::Bytes(b) => Artifact::from_blob(b),
            Self::Sha256(d) => Artifact::from(Sha256Hash::new(*d)),
        }
    }
}

/// Whom the bundle must be from.
#[derive(Clone, Debug)]
pub enum BlobPolicy {
    /// A keyless signer: exact certificate identity and OIDC issuer.
    Identity {
        /// `--certificate-identity`.
        identity: String,
        /// `--certificate-oidc-issuer`.
        issuer: String,
    },
    /// A managed key.
    Key(TrustedKey),
}

/// Verifies `bundle_json` over `input` against `root` for `policy`.
pub fn verify_blob(
    root: &TrustRoot,
    bundle_json: &[u8],
    input: &BlobInput,
    policy: &BlobPolicy,
) -> Result<SignatureFacts, VerifyError> {
    let bundle = parse_bundle(bundle_json)?;
    match policy {
        BlobPolicy::Key(k) => {
            verify_bundle(root, &bundle, input.artifact(), std::slice::from_ref(k))
        }
        BlobPolicy::Identity { identity, issuer } => {
            if bundle.signing_certificate().is_none() {
                return Err(VerifyError::SignatureInvalid(
                    "the bundle is signed with a key, but a certificate identity was required"
                        .into(),
                ));
            }
            let p = VerificationPolicy::new(identity.as_str(), issuer.as_str());
            let result = root
                .verifier()
                .verify(input.artifact(), &bundle, &p)
                .map_err(from_sigstore)?;
            let entry = bundle.verification_material.tlog_entries.first();
            Ok(SignatureFacts {
                signer: Signer::Keyless {
                    subject: result
                        .identity()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    issuer: result.issuer().unwrap_or_default().to_string(),
                },
                integrated_time: entry
                    .and_then(|e| e.integrated_time)
                    .or_else(|| result.integrated_time())
                    .or_else(|| result.verified_timestamps().iter().min().copied())
                    .map(|t| t.as_second()),
                log_index: entry.map(|e| e.log_index.get()),
            })
        }
    }
}
