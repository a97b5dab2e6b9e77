//! [`ProfileError`]: why a profile could not be built. Its own file because the build script
//! compiles the seccomp compiler's modules (which return it) on their own (`build.rs`).

use std::path::PathBuf;

use perry_policies::Tier;

/// Why a profile could not be built. Every variant means "nothing runs".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// A syscall name (from the tables or from `deny_syscalls`) is not in the x86_64 table.
    #[error(
        "unknown syscall `{0}` (not in the x86_64 syscall table); refusing to build a profile"
    )]
    UnknownSyscall(String),
    /// The rules cannot be compiled (an argument index above 5, a rule without checks), or
    /// the program is too large for the kernel.
    #[error("seccomp compilation failed: {0}")]
    Compile(String),
    /// The rules cannot be written in the OCI format without changing their meaning.
    #[error("cannot export to OCI JSON: {0}")]
    NotExportable(String),
    /// A grant the tier does not allow (e.g. network in `untrusted`).
    #[error("tier `{tier}` does not allow {what}")]
    GrantRefused {
        /// The tier.
        tier: Tier,
        /// What was asked for.
        what: String,
    },
    /// A grant path that is not absolute.
    #[error("grant path `{0}` must be absolute")]
    RelativePath(PathBuf),
    /// Profiles exist for x86_64 only.
    #[error("seccomp profiles are built for x86_64 only; this is {0}")]
    UnsupportedArch(&'static str),
}
