//! Registry failures, worded without credentials, and how oci-client errors map onto them.

use std::fmt;

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// A registry interaction that failed. Every message names the registry host and what was being
/// fetched; none contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or the connection failed.
    #[error("registry {host}: cannot fetch {what}: {reason}")]
    Transport {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The underlying error.
        reason: String,
    },
    /// The registry says the thing does not exist.
    #[error("registry {host}: {what} not found")]
    NotFound {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
    },
    /// The registry refused our credentials (or wants some).
    #[error("registry {host}: not authorized to fetch {what}{hint}")]
    Unauthorized {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// A hint about configuring credentials, or empty.
        hint: String,
    },
    /// Any other refusal by the registry.
    #[error("registry {host}: fetching {what} failed: {reason}")]
    Refused {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The status and message the registry sent.
        reason: String,
    },
    /// The bytes served do not hash to the digest that was asked for (or that the registry
    /// announced): the registry is broken or hostile.
    #[error("registry {host}: {what}: content digest mismatch: {mismatch}")]
    DigestMismatch {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The digest expected and the one the bytes have (boxed: keeps this error, which
        /// callers wrap in their own, small).
        mismatch: Box<Mismatch>,
    },
    /// The content is larger than we accept.
    #[error("registry {host}: {what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The content is not a manifest (or index) we understand.
    #[error("registry {host}: {what}: {reason}")]
    BadManifest {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A multi-arch index has no manifest for the requested platform.
    #[error("{what} has no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        /// The index, as `index host/repo@digest`.
        what: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the index offers, comma-separated.
        available: String,
    },
    /// Credentials for the host are configured but unusable.
    #[error("registry {host}: credentials: {reason}")]
    Credentials {
        /// `host[:port]`.
        host: String,
        /// What is wrong (never the secret itself).
        reason: String,
    },
}

/// The two digests of a [`RegistryError::DigestMismatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The digest asked for or announced.
    pub expected: String,
    /// What the bytes served hash to.
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {}, the bytes served hash to {}",
            self.expected, self.actual
        )
    }
}

impl RegistryError {
    pub(super) fn mismatch(host: &str, what: &str, expected: String, actual: String) -> Self {
        Self::DigestMismatch {
            host: host.into(),
            what: what.into(),
            mismatch: Box::new(Mismatch { expected, actual }),
        }
    }

    /// True when the registry answered that the thing does not exist (used by discovery: a
    /// missing signature tag is "nothing here", not a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

pub(super) fn map_oci_error(e: OciDistributionError, host: &str, what: &str) -> RegistryError {
    let host = host.to_string();
    let what = what.to_string();
    match e {
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => RegistryError::mismatch(&host, &what, expected, actual),
        OciDistributionError::ImageManifestNotFoundError(_) => {
            RegistryError::NotFound { host, what }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            });
            let unauthorized = envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            if not_found {
                RegistryError::NotFound { host, what }
            } else if unauthorized {
                RegistryError::Unauthorized {
                    hint: auth_hint(&host),
                    host,
                    what,
                }
            } else {
                let reason = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                RegistryError::Refused { host, what, reason }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            RegistryError::NotFound { host, what }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
            hint: auth_hint(&host),
            host,
            what,
        },
        OciDistributionError::ServerError { code, message, .. } => RegistryError::Refused {
            host,
            what,
            reason: format!("HTTP {code}: {}", truncate(&message, 200)),
        },
        OciDistributionError::RequestError(e) => RegistryError::Transport {
            host,
            what,
            reason: describe_reqwest(&e),
        },
        other => RegistryError::Refused {
            host,
            what,
            reason: truncate(&other.to_string(), 300),
        },
    }
}

pub(super) fn auth_hint(host: &str) -> String {
    format!(" (configure credentials under [registries.\"{host}\"])")
}

pub(super) fn describe_reqwest(e: &(dyn std::error::Error + 'static)) -> String {
    // Walk the source chain: reqwest's top-level message alone ("error sending request") hides
    // the useful part (connection refused, TLS failure, timeout).
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        src = s.source();
    }
    truncate(&parts.join(": "), 300)
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}
