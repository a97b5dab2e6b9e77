//! Why a request did not run, with its one [`Code`].

use perry_audit::AuditError;
use perry_policies::{Code, EXIT_REFUSED};
use perry_profiles::ProfileError;
use perry_runtime::native;
use perry_runtime::pull::PullError;
use perry_verifier::VerifyError;

/// Why a request did not run (or did not finish starting). Nothing ran in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request itself is unusable (bad mount, bad working directory…).
    #[error("{0}")]
    InvalidRequest(String),
    /// The image was refused, or could not be verified.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Pulling or unpacking the verified image failed.
    #[error("pulling {image}: {source}")]
    Pull {
        /// The pinned reference.
        image: String,
        /// What failed.
        source: Box<PullError>,
    },
    /// The tier cannot grant what was asked (e.g. network under `untrusted`).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The isolation the tier requires is not available here (e.g. Landlock).
    #[error("{0}")]
    Isolation(String),
    /// The sandbox could not be set up, or the command could not be executed.
    #[error("{0}")]
    Start(native::RunError),
    /// The decision could not be recorded; nothing is done without a record.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
}

impl ExecError {
    /// The error's code in the one table (which gives its status and exit status).
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidRequest(_) => Code::InvalidArgument,
            Self::Verify(e) => e.code(),
            Self::Pull { .. } => Code::PullFailed,
            Self::Profile(_) => Code::PolicyDenied,
            Self::Isolation(_) => Code::IsolationUnavailable,
            Self::Start(native::RunError::SpawnerUnavailable(_)) => Code::ServiceUnavailable,
            Self::Start(e) if e.exit_status() == i32::from(EXIT_REFUSED) => Code::SandboxFailed,
            Self::Start(_) => Code::CannotExecute,
            Self::Audit(_) => Code::AuditUnavailable,
        }
    }

    /// The HTTP-like status of [`ExecError::code`].
    pub fn status(&self) -> u16 {
        self.code().status()
    }

    /// The process exit status for `perry-sandbox run`: 126/127 when the command cannot be
    /// executed or found, 125 for everything else.
    pub fn exit_status(&self) -> i32 {
        match self {
            Self::Start(e) => e.exit_status(),
            _ => i32::from(EXIT_REFUSED),
        }
    }

    /// True when the image or request was refused by policy (as opposed to a failure to decide).
    pub fn is_denial(&self) -> bool {
        match self {
            Self::Verify(e) => e.is_denial(),
            Self::Profile(_) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_one_table() {
        let e = ExecError::InvalidRequest("x".into());
        assert_eq!(
            (e.code().as_str(), e.status(), e.exit_status()),
            ("invalid_argument", 400, 125)
        );
        let e = ExecError::Verify(VerifyError::NoTrustRule {
            image: "a/b".into(),
        });
        assert_eq!((e.code().as_str(), e.status()), ("policy_denied", 403));
        assert!(e.is_denial());
        let e = ExecError::Isolation("no landlock".into());
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("isolation_unavailable", 503)
        );
        assert!(!e.is_denial());
        let e = ExecError::Verify(VerifyError::TrustedRoot {
            source_name: "x".into(),
            reason: "y".into(),
        });
        assert_eq!((e.code().as_str(), e.status()), ("invalid_config", 400));
    }
}
