//! The one table of error codes: every failure perry-sandbox reports, at every edge (the
//! audit log, the CLI's `--json`, the local API), has exactly one of these codes, and each code
//! has exactly one HTTP-like status and one CLI exit status.
//!
//! It lives in the lowest crate because every layer's error enum maps itself onto it once
//! (`fn code(&self) -> Code`), and every edge reads the status and exit from here: there is no
//! second list to drift.
//!
//! ```
//! use perry_policies::Code;
//! assert_eq!(Code::PolicyDenied.as_str(), "policy_denied");
//! assert_eq!(Code::PolicyDenied.status(), 403);
//! assert_eq!(Code::parse("registry_unavailable"), Some(Code::RegistryUnavailable));
//! ```

use std::fmt;

/// Exit status when perry-sandbox itself refuses or fails before a command starts (like
/// `docker run`); commands that run a workload (`run`, `cap run`) use it for every refusal so
/// that the workload's own statuses stay unambiguous.
pub const EXIT_REFUSED: u8 = 125;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = ($name:literal, $status:literal, $exit:expr), )*) => {
        /// A stable machine code for a failure, with its status and exit status.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The wire name, e.g. `policy_denied`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The HTTP-like status: 4xx the request or the image was refused, 5xx perry-sandbox
            /// or something it depends on failed.
            pub fn status(self) -> u16 {
                match self { $(Code::$variant => $status,)* }
            }

            /// The exit status of a command that reports this failure (`verify`, `config`,
            /// `compose`, …); commands that run a workload exit [`EXIT_REFUSED`] instead.
            pub fn exit(self) -> u8 {
                match self { $(Code::$variant => $exit,)* }
            }
        }
    };
}

codes! {
    /// The configuration file does not parse or validate.
    InvalidConfig = ("invalid_config", 400, 2),
    /// A command-line argument or library request field is unusable.
    InvalidArgument = ("invalid_argument", 400, 2),
    /// An API request body is malformed or has an unknown field.
    InvalidRequest = ("invalid_request", 400, 2),
    /// An image (or OCI layout) is malformed.
    InvalidImage = ("invalid_image", 400, EXIT_REFUSED),
    /// A capability argument violates the capability's rules.
    ArgumentDenied = ("argument_denied", 400, EXIT_REFUSED),
    /// The API caller is not allowed to connect.
    Forbidden = ("forbidden", 403, EXIT_REFUSED),
    /// The workspace is not absolute, missing, or outside `workspace_roots`.
    WorkspaceDenied = ("workspace_denied", 403, EXIT_REFUSED),
    /// Denied by policy: no trust rule, a signer the rule does not trust, a grant the tier
    /// refuses, a compose field that would loosen a tier.
    PolicyDenied = ("policy_denied", 403, 3),
    /// No signature, or one that does not verify.
    VerificationFailed = ("verification_failed", 403, 3),
    /// Something named does not exist (image, capability, record, container).
    NotFound = ("not_found", 404, EXIT_REFUSED),
    /// A request body over `max_request_size`.
    PayloadTooLarge = ("payload_too_large", 413, EXIT_REFUSED),
    /// The dependencies between services or nodes form a cycle.
    DependencyCycle = ("dependency_cycle", 422, EXIT_REFUSED),
    /// `max_concurrent` are running and `max_queue` are waiting.
    TooManyRequests = ("too_many_requests", 429, EXIT_REFUSED),
    /// A bug or an unexpected local failure.
    Internal = ("internal", 500, EXIT_REFUSED),
    /// The sandbox could not be set up; the command never started.
    SandboxFailed = ("sandbox_failed", 500, EXIT_REFUSED),
    /// The command could not be executed or was not found in the image (126/127).
    CannotExecute = ("cannot_execute", 500, 126),
    /// Pulling or unpacking a verified image failed.
    PullFailed = ("pull_failed", 502, EXIT_REFUSED),
    /// A compose service failed to start, exited, or never became healthy; the `up` was
    /// rolled back.
    ServiceFailed = ("service_failed", 424, 1),
    /// A container backend answered with an error.
    BackendError = ("backend_error", 502, EXIT_REFUSED),
    /// The registry could not be reached or answered wrongly.
    RegistryUnavailable = ("registry_unavailable", 503, EXIT_REFUSED),
    /// The isolation a tier requires is missing on this host (Landlock, a sandboxed kernel).
    IsolationUnavailable = ("isolation_unavailable", 503, EXIT_REFUSED),
    /// The audit log cannot take the record; nothing is done without one.
    AuditUnavailable = ("audit_unavailable", 503, EXIT_REFUSED),
    /// A dependency of the service (the local API, the spawner) is unavailable.
    ServiceUnavailable = ("service_unavailable", 503, EXIT_REFUSED),
    /// No usable container backend, or the one asked for is not available.
    BackendUnavailable = ("backend_unavailable", 503, EXIT_REFUSED),
    /// No container backend is installed and running (every probe failed); the message lists
    /// each probe's reason and the recommended install command.
    NoBackendFound = ("no_backend_found", 503, EXIT_REFUSED),
    /// A deadline passed (`request_timeout`, a wait for a healthy dependency).
    Timeout = ("timeout", 504, EXIT_REFUSED),
}

impl Code {
    /// The code with this wire name (the negative verification cache stores names).
    pub fn parse(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == name)
    }

    /// True for refusals by policy or verification (as opposed to failures to decide).
    pub fn is_denial(self) -> bool {
        matches!(self, Code::PolicyDenied | Code::VerificationFailed)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.status()), "{c}");
            assert!(c.exit() != 0, "{c}");
        }
        assert_eq!(Code::parse("registry_error"), None);
    }

    #[test]
    fn the_table_holds_the_documented_statuses() {
        assert_eq!(Code::InvalidConfig.status(), 400);
        assert_eq!(Code::InvalidConfig.exit(), 2);
        assert_eq!(Code::VerificationFailed.exit(), 3);
        assert_eq!(Code::DependencyCycle.status(), 422);
        assert_eq!(Code::BackendUnavailable.status(), 503);
        assert_eq!(Code::NotFound.status(), 404);
    }
}
