//! Errors at the edge: every failure has a stable machine code, an HTTP-like status, a human
//! message and a process exit code.
//!
//! Library crates return precise `thiserror` enums; the CLI (and later the API) maps them onto
//! [`CliError`] so scripts can rely on `code` and humans can read `message`.

use std::fmt;

use perry_sandbox::error::ApiError;
use perry_sandbox::exec::Code;
use serde::Serialize;

pub(super) use perry_sandbox::exec::EXIT_REFUSED;

/// A failure as the user sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CliError {
    /// Stable machine code from the one table (a service's own code is passed through as it
    /// came, even one this build does not know).
    pub code: std::borrow::Cow<'static, str>,
    /// HTTP-like status, e.g. 400.
    pub status: u16,
    /// What went wrong, in words.
    pub message: String,
    /// Process exit status.
    #[serde(skip)]
    pub exit: u8,
}

impl CliError {
    /// A failure with `code`, its status and its exit status from the table.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().into(),
            status: code.status(),
            message: message.into(),
            exit: code.exit(),
        }
    }

    /// A configuration that does not parse or validate (exit 2).
    pub(crate) fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidConfig, message)
    }

    /// Bad command-line input (exit 2).
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// Something named does not exist (exit 125).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// An internal or environmental failure (exit 125).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// An API error (from the service, or the host-program contract) as the CLI reports it,
    /// with exit 125: nothing ran.
    pub(crate) fn from_api(e: &ApiError) -> Self {
        Self {
            code: e.code.clone().into(),
            status: e.status,
            message: e.message.clone(),
            exit: EXIT_REFUSED,
        }
    }

    /// The same error with another exit status.
    pub(crate) fn with_exit(mut self, exit: u8) -> Self {
        self.exit = exit;
        self
    }

    /// Prints the error to stderr, as JSON on stdout when `json` is set.
    pub(crate) fn report(&self, json: bool) {
        if json {
            let v = serde_json::json!({ "ok": false, "error": self });
            println!("{v}");
        } else {
            eprintln!("perry-sandbox: error[{}]: {}", self.code, self.message);
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<perry_policies::ConfigError> for CliError {
    fn from(e: perry_policies::ConfigError) -> Self {
        CliError::invalid_config(e.to_string())
    }
}

/// What every subcommand returns.
pub(crate) type CliResult = Result<std::process::ExitCode, CliError>;
