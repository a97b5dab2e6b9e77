//! Errors as the edges show them: a stable machine code, an HTTP-like status and a message.
//!
//! Library layers return precise enums ([`crate::exec::ExecError`],
//! [`crate::capability::CapabilityError`]); each names its [`Code`] from the one table and
//! converts into an [`ApiError`] for the API's JSON bodies and the host-program contract, so a
//! caller can branch on `code` and show `message`.

use perry_policies::Code;
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
    /// An error with this code (and the code's status) and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_string(),
            status: code.status(),
            message: message.into(),
        }
    }

    /// The code in the one table (`None` for a code this build does not know, e.g. from a newer
    /// service).
    pub fn code(&self) -> Option<Code> {
        Code::parse(&self.code)
    }
}

impl From<&crate::exec::ExecError> for ApiError {
    fn from(e: &crate::exec::ExecError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}
