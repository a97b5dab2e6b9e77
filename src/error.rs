//! Errors as the edges show them: a stable machine code, an HTTP-like status and a message.
//!
//! Library layers return precise enums ([`crate::exec::ExecError`],
//! [`crate::capability::CapabilityError`]); each converts into an [`ApiError`] for the API's JSON
//! bodies and the host-program contract, so a caller can branch on `code` and show `message`.

use serde::{Deserialize, Serialize};

/// A failure in the stable wire form `{"code":…,"status":…,"message":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable machine code, e.g. `policy_denied`, `invalid_argument`, `not_found`.
    pub code: String,
    /// HTTP-like status, e.g. 403.
    pub status: u16,
    /// What went wrong, in words.
    pub message: String,
}

impl ApiError {
    /// An error with this code, status and message.
    pub fn new(code: impl Into<String>, status: u16, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            status,
            message: message.into(),
        }
    }
}
