//! The parent's half of seccomp supervision: take the workload's listener and answer every
//! refused system call with the errno the tier's filters give, counting each one.
//!
//! The handoff (see `profile_step` for why a listener at all):
//! 1. the workload, before its filter exists, sends a pidfd of itself over a `SOCK_SEQPACKET`
//!    socket (`SCM_RIGHTS`);
//! 2. the workload installs its filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, writes the
//!    listener's fd number to the notify pipe and blocks on the ack pipe;
//! 3. with both, the parent calls `pidfd_getfd` (it is the owner of the sandbox's user
//!    namespace, so it passes the ptrace access check), acks, and polls the listener.
//!
//! Any failure kills the run before `execve`: a workload whose refusals nobody answers would
//! see `ENOSYS` instead of the tier's errno, and nothing would be reported.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use perry_profiles::{SeccompProgram, Verdict};

use super::{pipe, DeniedSyscall, RunError};

/// Fds created before `clone` for the handoff.
pub(crate) struct Handoff {
    pub notify_r: OwnedFd,
    pub notify_w: OwnedFd,
    pub ack_r: OwnedFd,
    pub ack_w: OwnedFd,
    pub sock_parent: OwnedFd,
    pub sock_child: OwnedFd,
}

impl Handoff {
    pub(crate) fn new() -> Result<Self, RunError> {
        let (notify_r, notify_w) = pipe()?;
        let (ack_r, ack_w) = pipe()?;
        let mut sv = [0; 2];
        // SAFETY: socketpair writes two fds into the array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(RunError::Sys {
                op: "socketpair",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: both fds were just created and belong to nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        Ok(Handoff {
            notify_r,
            notify_w,
            ack_r,
            ack_w,
            sock_parent: super::above2(a)?,
            sock_child: super::above2(b)?,
        })
    }
}

/// Supervisor state during one run.
pub(crate) struct Supervisor<'a> {
    pub notify_r: Option<OwnedFd>,
    pub ack_w: Option<OwnedFd>,
    pub sock: Option<OwnedFd>,
    pub listener_no: Option<i32>,
    pub wpidfd: Option<OwnedFd>,
    pub listener: Option<OwnedFd>,
    pub program: &'a SeccompProgram,
    pub denied: BTreeMap<(i32, u32), u64>,
    /// Set when the handoff failed; the run is killed and reports this.
    pub error: Option<RunError>,
}

fn sys_err(op: &'static str) -> RunError {
    RunError::Sys {
        op,
        source: io::Error::last_os_error(),
    }
}

impl Supervisor<'_> {
    /// One of our fds is ready: 5 notify pipe, 6 pidfd socket, 7 listener.
    pub(crate) fn on_ready(&mut self, tag: u8, revents: libc::c_short) {
        match tag {
            5 => self.read_listener_number(),
            6 => self.receive_pidfd(),
            _ => {
                if revents & libc::POLLIN != 0 {
                    self.answer_one();
                } else if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    // No task uses the filter any more.
                    self.listener = None;
                }
            }
        }
        if self.listener.is_none() && self.error.is_none() {
            if let (Some(n), Some(pidfd)) = (self.listener_no, &self.wpidfd) {
                self.take_listener(pidfd.as_raw_fd(), n);
            }
        }
    }

    fn read_listener_number(&mut self) {
        let Some(fd) = &self.notify_r else { return };
        let mut b = [0u8; 4];
        // SAFETY: read up to 4 bytes into a stack buffer (a pipe write of 4 bytes is atomic).
        let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
        if n == 4 {
            self.listener_no = Some(i32::from_ne_bytes(b));
        }
        if n == 4 || n == 0 || (n < 0 && !would_block()) {
            self.notify_r = None;
        }
    }

    fn receive_pidfd(&mut self) {
        let Some(sock) = &self.sock else { return };
        match recv_fd(sock.as_raw_fd()) {
            Ok(Some(fd)) => {
                self.wpidfd = Some(fd);
                self.sock = None;
            }
            Ok(None) => self.sock = None, // EOF: init exited without sending (setup failed)
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(source) => {
                self.sock = None;
                self.error = Some(RunError::Sys {
                    op: "receiving the workload pidfd",
                    source,
                });
            }
        }
    }

    fn take_listener(&mut self, pidfd: RawFd, n: i32) {
        // SAFETY: pidfd_getfd duplicates fd `n` of the process behind our pidfd into our table.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, n, 0) };
        if fd < 0 {
            self.error = Some(sys_err("pidfd_getfd (seccomp listener)"));
            return;
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // It must really be a seccomp listener: the workload could only be impersonated by
        // itself, but a wrong fd would make us answer nothing and hang the run.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !link.contains("seccomp notify") {
            self.error = Some(RunError::Sys {
                op: "seccomp listener handoff",
                source: io::Error::other(format!("fd {n} of the workload is {link:?}")),
            });
            return;
        }
        // SAFETY: F_SETFD on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        self.listener = Some(fd);
        self.wpidfd = None;
        if let Some(ack) = self.ack_w.take() {
            // SAFETY: write one byte to the ack pipe; the workload continues to execve.
            if unsafe { libc::write(ack.as_raw_fd(), b"a".as_ptr().cast(), 1) } != 1 {
                self.error = Some(sys_err("seccomp supervisor ack"));
            }
        }
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

fn would_block() -> bool {
    io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
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
