//! Host id leases: which unprivileged host uids/gids a sandbox is mapped to.
//!
//! Each concurrent sandbox gets its own pair of host ids (`base` for root inside, `base + 1` for
//! the workload user) so that RLIMIT_NPROC, signal permission checks and file ownership of one
//! sandbox never see another's processes. A lease is an OFD byte-range lock on byte `slot` of
//! the single file `<state_dir>/uid-leases`: the kernel drops it when the fd is closed or the
//! process dies, so a crash can never leave a stale lease behind, and the file itself is the
//! only thing that persists.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use perry_policies::config::UidRange;

use super::RunError;

/// Where leases are kept and which host ids they come from (`[sandbox] state_dir` and
/// `[sandbox] uid_range` of the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The state directory; the lease file is `<state_dir>/uid-leases`.
    pub state_dir: PathBuf,
    /// The host id range sandboxes are mapped into; must not contain 0.
    pub range: UidRange,
}

/// Host ids per lease: inside uid/gid 0 and the workload's uid/gid.
pub(crate) const IDS_PER_LEASE: u32 = 2;

/// A held lease; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct Lease {
    _file: File,
    /// First host id of this lease.
    pub host_base: u32,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl LeaseConfig {
    /// The lease file's path.
    pub fn lease_file(&self) -> PathBuf {
        self.state_dir.join("uid-leases")
    }

    fn validate(&self) -> Result<u32, RunError> {
        let r = self.range;
        if r.start == 0 {
            return Err(RunError::InvalidSpec {
                field: "uid_range.start",
                reason: "the range must not contain host uid 0".into(),
            });
        }
        if r.start.checked_add(r.count).is_none() {
            return Err(RunError::InvalidSpec {
                field: "uid_range",
                reason: "start + count overflows u32".into(),
            });
        }
        let slots = r.count / IDS_PER_LEASE;
        if slots == 0 {
            return Err(RunError::InvalidSpec {
                field: "uid_range.count",
                reason: format!("needs at least {IDS_PER_LEASE} ids"),
            });
        }
        Ok(slots)
    }

    /// Take a free slot, probing from a rotating start so concurrent runs rarely collide.
    pub(crate) fn acquire(&self) -> Result<Lease, RunError> {
        let slots = self.validate()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.state_dir)
            .map_err(|source| RunError::Lease {
                path: self.state_dir.clone(),
                source,
            })?;
        let path = self.lease_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| RunError::Lease {
                path: path.clone(),
                source,
            })?;
        let first = NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(std::process::id().wrapping_mul(7919))
            % slots;
        for i in 0..slots {
            let slot = (first + i) % slots;
            let lock = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: slot as libc::off_t,
                l_len: 1,
                l_pid: 0,
            };
            // SAFETY: fcntl on an fd we own with a pointer to a valid `struct flock`.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
            if r == 0 {
                return Ok(Lease {
                    _file: file,
                    host_base: self.range.start + slot * IDS_PER_LEASE,
                });
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EACCES) => continue,
                _ => return Err(RunError::Lease { path, source: e }),
            }
        }
        Err(RunError::LeasesExhausted { slots })
    }
}
