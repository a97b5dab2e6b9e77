//! Errors of the writer and readers. Each names the file and, where there is one, the line and
//! record seq, so an operator can go straight to the problem.

use std::path::PathBuf;

/// A failure to write or read the audit log. `Clone` so one failed group commit can be reported
/// to every writer that was waiting on it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditError {
    /// An I/O operation failed.
    #[error("{}: {op}: {msg}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        msg: String,
    },
    /// The log is damaged or was tampered with; writers refuse to append to it.
    #[error("{}:{line}: record seq {seq}: {msg} (run `perry-sandbox audit verify`)", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The seq expected at that line.
        seq: u64,
        /// What is wrong.
        msg: String,
    },
    /// The latest checkpoint does not match the log (truncated or replaced).
    #[error("{}: {msg} (run `perry-sandbox audit verify`)", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The signing key cannot be used.
    #[error("{}: {msg}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A bad setting.
    #[error("invalid audit setting: {0}")]
    Config(String),
}
