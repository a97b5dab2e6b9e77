//! The parent's half of seccomp supervision: take the workload's listener and answer every
//! refused system call with the errno the tier's filters give, counting each one.
//!
//! The handoff (see `profile_step` for why a listener at all): the workload installs its
//! filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, sends the listener over a `SOCK_SEQPACKET`
//! socket (`SCM_RIGHTS`), closes its own copy and goes on to `execve` without waiting: the
//! message in flight holds the listener, and a refused call made before we take it simply
//! waits in the kernel until we answer it. We check that what arrived really is a seccomp
//! listener, then poll it.
//!
//! Any failure kills the run: a workload whose refusals nobody answers would see `ENOSYS`
//! instead of the tier's errno (or wait forever), and nothing would be reported.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use perry_profiles::{SeccompProgram, Verdict};

use super::{DeniedSyscall, RunError};

/// The socket pair created before `clone` for the handoff.
pub(crate) struct Handoff {
    pub sock_parent: OwnedFd,
    pub sock_child: OwnedFd,
}

impl Handoff {
    pub(crate) fn new() -> Result<Self, RunError> {
        let (sock_parent, sock_child) = super::socket_pair(libc::SOCK_SEQPACKET)?;
        Ok(Handoff {
            sock_parent,
            sock_child,
        })
    }
}

/// Supervisor state during one run.
pub(crate) struct Supervisor<'a> {
    /// Our end of the handoff socket, until the listener arrived (or the workload is gone).
    pub sock: Option<OwnedFd>,
    pub listener: Option<OwnedFd>,
    pub program: &'a SeccompProgram,
    pub denied: BTreeMap<(i32, u32), u64>,
    /// Set when the handoff failed; the run is killed and reports this.
    pub error: Option<RunError>,
}

impl Supervisor<'_> {
    /// One of our fds is ready: 6 the handoff socket, 7 the listener.
    pub(crate) fn on_ready(&mut self, tag: u8, revents: libc::c_short) {
        if tag == 6 {
            self.receive_listener();
        } else if revents & libc::POLLIN != 0 {
            self.answer_one();
        } else if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            // No task uses the filter any more.
            self.listener = None;
        }
    }

    fn receive_listener(&mut self) {
        let Some(sock) = &self.sock else { return };
        let fd = match recv_fd(sock.as_raw_fd()) {
            Ok(Some(fd)) => fd,
            // EOF: the workload is gone without a filter (its setup failed and says so).
            Ok(None) => {
                self.sock = None;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(source) => {
                self.sock = None;
                self.error = Some(RunError::Sys {
                    op: "receiving the seccomp listener",
                    source,
                });
                return;
            }
        };
        self.sock = None;
        // It must really be a seccomp listener: only the workload's own code (before execve)
        // sends on this socket, but a wrong fd would leave its refusals unanswered.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !link.contains("seccomp notify") {
            self.error = Some(RunError::Sys {
                op: "seccomp listener handoff",
                source: io::Error::other(format!("received {link:?}, not a seccomp listener")),
            });
            return;
        }
        self.listener = Some(fd);
    }

    /// Receive one notification and answer it with the tier's errno.
    fn answer_one(&mut self) {
        let Some(l) = &self.listener else { return };
        // SAFETY: the kernel requires a zeroed seccomp_notif for RECV.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: ioctl with a pointer to a struct of the size the request encodes.
        let r = unsafe { libc::ioctl(l.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
        if r != 0 {
            // ENOENT: the caller died meanwhile; EINTR: try on the next poll.
            return;
        }
        let d = &req.data;
        let errno = match self.program.evaluate(d.arch, d.nr, &d.args) {
            Verdict::Errno(e) if e > 0 => e,
            // The merged program and the interpreter disagree: fail closed.
            _ => libc::EPERM as u32,
        };
        *self.denied.entry((d.nr, errno)).or_insert(0) += 1;
        let resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: -(errno as i32),
            flags: 0,
        };
        // SAFETY: ioctl with a pointer to a response struct of the size the request encodes.
        // ENOENT (the caller died) is fine.
        unsafe { libc::ioctl(l.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    }

    /// The denials, sorted by syscall number.
    pub(crate) fn report(self) -> Vec<DeniedSyscall> {
        self.denied
            .into_iter()
            .map(|((nr, errno), count)| DeniedSyscall {
                name: perry_profiles::syscalls::name(i64::from(nr))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("nr:{nr}")),
                number: nr,
                errno,
                count,
            })
            .collect()
    }
}

/// Receive one fd (SCM_RIGHTS) from a non-blocking unix socket. `Ok(None)` on EOF.
fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut buf = Cmsg([0; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr pointing at stack buffers that outlive recvmsg; CMSG_* walk `buf` within
    // the length the kernel reports.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = buf.0.len() as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            let mut fd: i32 = -1;
            std::ptr::copy_nonoverlapping(
                libc::CMSG_DATA(c),
                (&mut fd as *mut i32).cast::<u8>(),
                4,
            );
            return Ok(Some(OwnedFd::from_raw_fd(fd)));
        }
        if n == 0 {
            return Ok(None);
        }
        Err(io::Error::other("message without an fd"))
    }
}
