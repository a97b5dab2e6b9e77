//! Why a run did not start or could not be supervised.

use std::io;
use std::path::PathBuf;

use super::Step;

/// Why a run could not start (nothing ran), or could not be supervised.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec is unusable.
    #[error("invalid run spec: {field}: {reason}")]
    InvalidSpec {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A path the sandbox needs does not exist.
    #[error("{path}: does not exist (the rootfs must contain /proc, /dev and /tmp)")]
    MountPointMissing {
        /// The path.
        path: PathBuf,
    },
    /// A mount point inside the rootfs is a symlink.
    #[error("{path}: mount point is a symlink")]
    MountPointSymlink {
        /// The path.
        path: PathBuf,
    },
    /// A directory on the way to the rootfs or a mount source is not searchable by "other".
    #[error(
        "{path}: not searchable by other users (needs o+x; setup runs as an unprivileged uid)"
    )]
    NotSearchable {
        /// The directory.
        path: PathBuf,
    },
    /// The lease file could not be used.
    #[error("uid lease file {path}: {source}")]
    Lease {
        /// The lease file or state dir.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Every host id block of the configured range is in use.
    #[error("all {slots} uid leases are in use")]
    LeasesExhausted {
        /// How many leases the range holds.
        slots: u32,
    },
    /// A cgroup operation failed.
    #[error("cgroup {op} {path}: {source}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// A required cgroup controller is in neither hierarchy.
    #[error("cgroup controller {controller} is not available (v1 or v2)")]
    ControllerMissing {
        /// The controller.
        controller: &'static str,
    },
    /// A parent-side system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Writing the child's uid/gid map failed.
    #[error("writing {file}: {source}")]
    IdMap {
        /// The map file.
        file: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A setup step inside the sandbox failed; the command did not run.
    #[error("sandbox setup step {step} (#{index}) failed: {}", io::Error::from_raw_os_error(*errno))]
    Setup {
        /// The step.
        step: Step,
        /// Which item of the step (mount index, rlimit index, ...).
        index: u32,
        /// The errno.
        errno: i32,
    },
    /// The final confinement step failed; the command did not run.
    #[error("final confinement step failed: {}", io::Error::from_raw_os_error(*errno))]
    FinalStep {
        /// The errno.
        errno: i32,
    },
    /// The spawner process (see `spawner`) is gone or answered out of protocol: nothing is
    /// known to have run, and the service starts a new spawner for the next call.
    #[error("the sandbox spawner is unavailable: {0}")]
    SpawnerUnavailable(String),
    /// The spawner could not set the sandbox up (it reports what failed); nothing ran.
    #[error("the sandbox spawner could not start the sandbox: {0}")]
    SpawnerRefused(String),
    /// `execve` failed: the command was not found (ENOENT) or could not be executed.
    #[error("cannot execute {program}: {}", io::Error::from_raw_os_error(*errno))]
    Exec {
        /// The command as given.
        program: String,
        /// The errno.
        errno: i32,
    },
}

impl RunError {
    /// The `docker run`-style exit status for a run that did not start: 127 command not found,
    /// 126 cannot execute, 125 anything else.
    pub fn exit_status(&self) -> i32 {
        match self {
            RunError::Exec { errno, .. } if *errno == libc::ENOENT => 127,
            RunError::Exec { .. } => 126,
            _ => 125,
        }
    }
}

pub(crate) fn sys(op: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Sys { op, source }
}

pub(crate) fn last(op: &'static str) -> RunError {
    RunError::Sys {
        op,
        source: io::Error::last_os_error(),
    }
}
