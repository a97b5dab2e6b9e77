//! Why a verification failed, in words a person can act on.
//!
//! Every variant's `Display` states the reason ("identity mismatch: signed by X (issuer Y),
//! policy requires …"). [`VerifyError::is_denial`] separates refusals (the image is not
//! trusted: exit 3, codes `policy_denied` / `verification_failed`) from failures to decide at
//! all (registry down, unreadable root: exit 125).

use perry_policies::Code;

use crate::layout::LayoutError;
use crate::registry::RegistryError;

/// A verification refusal or failure.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Deny by default: no `[[trust.policy]]` governs this image.
    #[error("no trust rule matches {image}: denied by default (add a [[trust.policy]] for it)")]
    NoTrustRule {
        /// The normalised image name.
        image: String,
    },
    /// The signature verified, but its signer is not one the policy trusts.
    #[error("identity mismatch: signed by {signer} (issuer {issuer}), policy requires {required}")]
    IdentityMismatch {
        /// The certificate subject (or key) that signed.
        signer: String,
        /// The OIDC issuer in the certificate.
        issuer: String,
        /// What the unsatisfied rule accepts, in words.
        required: String,
    },
    /// Nothing that looks like a signature is attached to the image.
    #[error("no signature found (looked in: {})", .looked_in.join(", "))]
    NoSignature {
        /// Every place discovery looked.
        looked_in: Vec<String>,
    },
    /// The Rekor signed entry timestamp (inclusion promise) does not verify.
    #[error("SET signature invalid: {0}")]
    SetInvalid(String),
    /// A signature made for another image digest, attached to this one.
    #[error("signature is for {signed}, not this image {image}")]
    DigestMismatch {
        /// The digest the signature covers.
        signed: String,
        /// The digest of the image being verified.
        image: String,
    },
    /// A legacy cosign payload naming another repository.
    #[error("signature names repository {signed}, not this image's repository {image}")]
    RepositoryMismatch {
        /// `critical.identity.docker-reference` from the payload.
        signed: String,
        /// The repository being verified.
        image: String,
    },
    /// The signature, certificate chain or transparency-log proof does not verify.
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
    /// A bundle or legacy signature that cannot even be parsed.
    #[error("malformed signature ({what}): {reason}")]
    Malformed {
        /// Which part (bundle JSON, simple-signing payload, Rekor bundle annotation, …).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Several signatures were found and none satisfied the policy; each one's reason.
    #[error("no signature satisfies the policy: {}", .0.iter().enumerate().map(|(i, e)| format!("[{}] {e}", i + 1)).collect::<Vec<_>>().join("; "))]
    AllRejected(Vec<VerifyError>),
    /// A refusal served from the negative cache (same words as when it was first decided).
    #[error("{message}")]
    CachedDenial {
        /// The original reason.
        message: String,
        /// The original machine code (`policy_denied` or `verification_failed`).
        code: Code,
    },
    /// The trusted root cannot be read or parsed.
    #[error("trusted root {source_name}: {reason}")]
    TrustedRoot {
        /// `public-good` or the file path.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// A configured public key file cannot be read or parsed.
    #[error("public key {path}: {reason}")]
    KeyFile {
        /// The key file path from `[[trust.policy]] keys`.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry could not be asked (or answered wrongly).
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// The OCI layout or archive could not be read, or is malformed or altered.
    #[error("{0}")]
    Layout(#[from] LayoutError),
    /// An OCI layout or archive was given without the image name its signatures were made for.
    #[error("{source_name} has no image name of its own: give the name its signatures were made for (e.g. 127.0.0.1:5000/busybox); trust rules and signatures are matched against that name")]
    NameRequired {
        /// The source as written (`oci:/path:tag`).
        source_name: String,
    },
    /// The image name given for a source is not a plain repository name, or contradicts it.
    #[error("image name `{name}`: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A detached bundle file (`--bundle`) cannot be read.
    #[error("bundle file {path}: {reason}")]
    BundleFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The verification cache directory or key could not be set up.
    #[error("verification cache {path}: {reason}")]
    Cache {
        /// The path involved.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl VerifyError {
    /// True when the image was refused (not trusted); false when perry-sandbox could not decide.
    pub fn is_denial(&self) -> bool {
        !matches!(
            self,
            Self::TrustedRoot { .. }
                | Self::KeyFile { .. }
                | Self::Registry(_)
                | Self::Layout(_)
                | Self::NameRequired { .. }
                | Self::BadName { .. }
                | Self::BundleFile { .. }
                | Self::Cache { .. }
        )
    }

    /// The error's code in the one table: `policy_denied` (no rule / wrong signer),
    /// `verification_failed` (no or bad signature), or for failures to decide `internal`,
    /// `registry_unavailable` (`not_found` for a missing image), `invalid_config`,
    /// `invalid_argument` (no or a bad image name for a layout, unreadable bundle file) or a
    /// layout's own code ([`LayoutError::code`]: `not_found`, `invalid_image`, …).
    pub fn code(&self) -> Code {
        match self {
            Self::NoTrustRule { .. } | Self::IdentityMismatch { .. } => Code::PolicyDenied,
            Self::CachedDenial { code, .. } => *code,
            Self::AllRejected(v) if v.iter().all(|e| e.code() == Code::PolicyDenied) => {
                Code::PolicyDenied
            }
            Self::Registry(r) if r.is_not_found() => Code::NotFound,
            Self::Registry(_) => Code::RegistryUnavailable,
            Self::Layout(e) => e.code(),
            Self::NameRequired { .. } | Self::BadName { .. } | Self::BundleFile { .. } => {
                Code::InvalidArgument
            }
            Self::TrustedRoot { .. } | Self::KeyFile { .. } => Code::InvalidConfig,
            Self::Cache { .. } => Code::Internal,
            _ => Code::VerificationFailed,
        }
    }
}

pub(crate) fn from_sigstore(e: sigstore_verify::Error) -> VerifyError {
    use sigstore_verify::{Error, TransparencyLogError};
    match e {
        Error::TransparencyLog(TransparencyLogError::InclusionPromise(d)) => {
            VerifyError::SetInvalid(d)
        }
        other => VerifyError::SignatureInvalid(other.to_string()),
    }
}
