//! The parent's pipe and fd helpers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{last, RunError};

/// A close-on-exec pipe whose ends are both >= 3 (fds 0–2 may be closed in a daemon, and the
/// child `dup2`s onto them).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above2(r)?, above2(w)?))
}

/// A close-on-exec Unix socket pair of `kind` (`SOCK_STREAM`, `SOCK_SEQPACKET`) whose ends are
/// both >= 3, like [`pipe`]'s.
pub(crate) fn socket_pair(kind: libc::c_int) -> Result<(OwnedFd, OwnedFd), RunError> {
    let mut sv = [0; 2];
    // SAFETY: socketpair writes two fds into the array.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) }
        != 0
    {
        return Err(last("socketpair"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    Ok((above2(a)?, above2(b)?))
}

pub(crate) fn above2(fd: OwnedFd) -> Result<OwnedFd, RunError> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: duplicating an fd we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(last("F_DUPFD_CLOEXEC"));
    }
    // SAFETY: n is a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

pub(crate) fn set_nonblocking(fd: RawFd) -> Result<(), RunError> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(last("O_NONBLOCK"));
        }
    }
    Ok(())
}
