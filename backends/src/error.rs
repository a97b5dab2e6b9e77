//! [`BackendError`]: one typed error for every backend call, with a stable code and status.

use std::sync::Arc;

use perry_policies::Code;
use thiserror::Error;

/// What went wrong talking to a container backend. `Clone`, so that a cached answer (the
/// per-process detection) hands out the same error, code included, every time.
#[derive(Clone, Debug, Error)]
pub enum BackendError {
    /// No usable backend (not installed, daemon down, probe timed out, unknown name).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend's CLI failed; its exit code and stderr are kept verbatim.
    #[error("{program} {verb} failed (exit {exit_code}): {stderr}")]
    Cli {
        /// The program run (`podman`, `limactl`, ...).
        program: String,
        /// The subcommand (`create`, `network create`, ...).
        verb: String,
        /// The CLI's exit code (-1 when killed by a signal).
        exit_code: i32,
        /// The CLI's stderr, trimmed.
        stderr: String,
    },
    /// The object does not exist (container, image, network, volume).
    #[error("{kind} not found: {name}")]
    NotFound {
        /// `container`, `image`, `network` or `volume`.
        kind: &'static str,
        /// The name or id asked for.
        name: String,
        /// The backend's stderr.
        stderr: String,
    },
    /// A call did not finish within its timeout; the process was killed.
    #[error("{program} {verb} timed out after {secs:.1}s")]
    Timeout {
        /// The program run.
        program: String,
        /// The subcommand.
        verb: String,
        /// The timeout that expired.
        secs: f64,
    },
    /// The image the backend holds is not the verified one.
    #[error("image digest mismatch: verified {expected}, backend has {actual}")]
    DigestMismatch {
        /// The verified platform manifest digest.
        expected: String,
        /// What the backend reported.
        actual: String,
    },
    /// No backend answered: every probe with its reason, and what to install.
    #[error("no container backend found (probed {probed}); {advice}")]
    NoneFound {
        /// `name: reason` for every probe, `; `-separated.
        probed: String,
        /// The recommended install command, or where to look.
        advice: String,
    },
    /// The spec asks for an isolation level this backend cannot give.
    #[error("policy violation: {0}")]
    PolicyViolation(String),
    /// The spec asks for something the tier's confinement refuses (a network with a route out
    /// for a tier that allows only internal networks).
    #[error("policy denied: {0}")]
    PolicyDenied(String),
    /// The backend's output could not be understood.
    #[error("unexpected output from {program} {verb}: {detail}")]
    BadOutput {
        /// The program run.
        program: String,
        /// The subcommand.
        verb: String,
        /// What was wrong.
        detail: String,
    },
    /// Invalid backend configuration (unknown mode, ...).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Local I/O (writing the seccomp profile, spawning the CLI).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause (shared: `io::Error` itself cannot be cloned).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A fault injected by [`crate::FaultyBackend`] (tests of orchestration).
    #[error("injected fault: {0}")]
    Injected(String),
}

impl BackendError {
    /// The error's code in the one table (`perry_policies::Code`). A tier whose isolation is
    /// missing here (`untrusted` without a sandboxed kernel) is `isolation_unavailable`, the code
    /// the native runner uses for the same situation.
    pub fn code(&self) -> Code {
        match self {
            BackendError::Unavailable(_) => Code::BackendUnavailable,
            BackendError::NoneFound { .. } => Code::NoBackendFound,
            BackendError::NotFound { .. } => Code::NotFound,
            BackendError::PolicyViolation(_) => Code::IsolationUnavailable,
            BackendError::PolicyDenied(_) => Code::PolicyDenied,
            BackendError::DigestMismatch { .. } => Code::VerificationFailed,
            BackendError::InvalidConfig(_) => Code::InvalidConfig,
            BackendError::Timeout { .. } => Code::Timeout,
            BackendError::Cli { .. }
            | BackendError::BadOutput { .. }
            | BackendError::Io { .. }
            | BackendError::Injected(_) => Code::BackendError,
        }
    }

    /// The HTTP-like status of [`BackendError::code`].
    pub fn status(&self) -> u16 {
        self.code().status()
    }

    /// The backend CLI's exit code, when a CLI call failed.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            BackendError::Cli { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }
}
