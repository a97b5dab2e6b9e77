//! Cryptographic verification of one Sigstore bundle, and what it proves about the signer.
//!
//! This module answers "is this bundle a valid Sigstore signature over this artifact, chained
//! to this trusted root, and who made it?". It does not decide whether that signer is trusted
//! for an image: that is [`crate::policy`]. Keyless bundles are verified with an any-identity
//! policy (the certificate chain, SCT, transparency log and signature are all still checked) so
//! that the signer can then be matched against exact subjects *and* anchored regexes.

use std::path::{Path, PathBuf};

use sigstore_verify::types::{Artifact, Bundle, DerPublicKey, SignatureContent, Statement};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy};

use crate::error::{from_sigstore, VerifyError};
use crate::trust_root::TrustRoot;

/// Who made a verified signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A Fulcio certificate: its subject (SAN) and OIDC issuer.
    Keyless {
        /// Certificate subject (email or URI).
        subject: String,
        /// OIDC issuer URL.
        issuer: String,
    },
    /// A static public key from the configuration, named by its file.
    Key {
        /// The key file as written in `[[trust.policy]] keys`.
        path: PathBuf,
    },
}

impl Signer {
    /// The identity in words: the certificate subject or `key <path>`.
    pub fn identity(&self) -> String {
        match self {
            Self::Keyless { subject, .. } => subject.clone(),
            Self::Key { path } => format!("key {}", path.display()),
        }
    }

    /// The issuer: the OIDC issuer, or `static-key` for key signatures.
    pub fn issuer(&self) -> String {
        match self {
            Self::Keyless { issuer, .. } => issuer.clone(),
            Self::Key { .. } => "static-key".into(),
        }
    }
}

/// What a verified signature establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureFacts {
    /// Who signed.
    pub signer: Signer,
    /// Rekor integrated time (seconds since the epoch) or, failing that, the earliest verified
    /// timestamp.
    pub integrated_time: Option<i64>,
    /// Rekor log index of the entry.
    pub log_index: Option<u64>,
}

/// A public key named in the configuration, parsed once.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The configured path (identifies the key in policy and in records).
    pub path: PathBuf,
    key: DerPublicKey,
}

impl TrustedKey {
    /// Reads a PEM public key file.
    pub fn load(path: &Path) -> Result<Self, VerifyError> {
        let text = std::fs::read_to_string(path).map_err(|e| VerifyError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_pem(path, &text)
    }

    /// Parses PEM text; `path` names the key.
    pub fn from_pem(path: &Path, pem: &str) -> Result<Self, VerifyError> {
        let key = DerPublicKey::from_pem(pem).map_err(|e| VerifyError::KeyFile {
            path: path.display().to_string(),
            reason: format!("not a PEM public key: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            key,
        })
    }
}

/// Parses bundle JSON (v0.1–v0.3) with a clear error.
pub fn parse_bundle(json: &[u8]) -> Result<Bundle, VerifyError> {
    let text = std::str::from_utf8(json).map_err(|e| VerifyError::Malformed {
        what: "bundle".into(),
        reason: format!("not UTF-8: {e}"),
    })?;
    Bundle::from_json(text).map_err(|e| VerifyError::Malformed {
        what: "bundle".into(),
        reason: e.to_string(),
    })
}

/// The SHA-256 digests (`sha256:<hex>`) a bundle says it signs: the message digest of a
/// message signature, or the subjects of a DSSE in-toto statement. Empty when the bundle does
/// not say (the cryptographic check still binds the artifact).
pub fn claimed_digests(bundle: &Bundle) -> Vec<String> {
    match &bundle.content {
        SignatureContent::MessageSignature(m) => m
            .message_digest
            .iter()
            .filter(|d| d.digest.len() == 32)
            .map(|d| format!("sha256:{}", d.digest.to_hex()))
            .collect(),
        SignatureContent::DsseEnvelope(env) => {
            match serde_json::from_slice::<Statement>(env.payload.as_bytes()) {
                Ok(st) => st
                    .subject
                    .iter()
                    .filter_map(|s| s.digest.sha256.as_ref())
                    .map(|h| format!("sha256:{}", h.to_hex()))
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// Verifies `bundle` over `artifact` against `root`.
///
/// A bundle with a certificate is verified as keyless (any identity: the caller matches the
/// signer against policy). A bundle with a public-key hint is verified against each of `keys`
/// in turn; the first that verifies is the signer.
pub fn verify_bundle(
    root: &TrustRoot,
    bundle: &Bundle,
    artifact: Artifact<'_>,
    keys: &[TrustedKey],
) -> Result<SignatureFacts, VerifyError> {
    let (integrated_time, log_index) = tlog_facts(bundle);
    if bundle.signing_certificate().is_some() {
        let policy = VerificationPolicy::any_identity();
        let result = root
            .verifier()
            .verify(artifact, bundle, &policy)
            .map_err(from_sigstore)?;
        if !result.certificate_verified() {
            return Err(VerifyError::SignatureInvalid(
                "the signing certificate was not verified against the trusted root".into(),
            ));
        }
        let subject = result.identity().map(|s| s.as_str().to_string());
        let issuer = result.issuer().map(str::to_string);
        let (Some(subject), Some(issuer)) = (subject, issuer) else {
            return Err(VerifyError::SignatureInvalid(
                "the signing certificate carries no subject or no OIDC issuer".into(),
            ));
        };
        let time = integrated_time.or_else(|| {
            result
                .integrated_time()
                .or_else(|| result.verified_timestamps().iter().min().copied())
                .map(|t| t.as_second())
        });
        return Ok(SignatureFacts {
            signer: Signer::Keyless { subject, issuer },
            integrated_time: time,
            log_index,
        });
    }
    if keys.is_empty() {
        return Err(VerifyError::SignatureInvalid(
            "the bundle is signed with a key, and no public key is configured or given".into(),
        ));
    }
    let mut last = None;
    for k in keys {
        let policy = PublicKeyVerificationPolicy::new(k.key.clone());
        match root.verifier().verify(artifact.clone(), bundle, &policy) {
            Ok(result) => {
                let time = integrated_time.or_else(|| {
                    result
                        .integrated_time()
                        .or_else(|| result.verified_timestamps().iter().min().copied())
                        .map(|t| t.as_second())
                });
                return Ok(SignatureFacts {
                    signer: Signer::Key {
                        path: k.path.clone(),
                    },
                    integrated_time: time,
                    log_index,
                });
            }
            Err(e) => last = Some(from_sigstore(e)),
        }
    }
    Err(last.unwrap_or_else(|| VerifyError::SignatureInvalid("no key verified".into())))
}

fn tlog_facts(bundle: &Bundle) -> (Option<i64>, Option<u64>) {
    let entry = bundle.verification_material.tlog_entries.first();
    let time = entry.and_then(|e| e.integrated_time).map(|t| t.as_second());
    let index = entry.map(|e| e.log_index.get());
    (time, index)
}
