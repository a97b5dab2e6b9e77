//! The parent's side of a running sandbox: pump the pipes, answer seccomp notifications, kill
//! the tree at the deadline.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::cgroup::RunCgroups;
use super::fds::set_nonblocking;
use super::runner::Child;
use super::seccomp_notify::Supervisor;
use super::{last, sys, LiveOutput, RunError, RunSpec, Step, Stream};

/// What supervision collected.
pub(crate) struct Supervised {
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    pub(crate) timed_out: bool,
    pub(crate) error: Option<(Step, i32, u32)>,
}

/// Pump stdin/stdout/stderr and the error pipe until the sandbox's processes are gone and every
/// pipe is closed, killing the tree at the deadline. Gone means init's status report is in
/// `status_r` (init writes it once it is the last process: see `child`) or init has exited.
/// The report is left in the pipe for the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn supervise(
    spec: &RunSpec,
    child: &mut Child,
    err_r: OwnedFd,
    status_r: &OwnedFd,
    stdin_w: OwnedFd,
    stdout_r: OwnedFd,
    stderr_r: OwnedFd,
    cgroups: &RunCgroups,
    mut seccomp: Option<&mut Supervisor<'_>>,
) -> Result<Supervised, RunError> {
    for fd in [&err_r, &stdin_w, &stdout_r, &stderr_r] {
        set_nonblocking(fd.as_raw_fd())?;
    }
    let live = |stream| spec.live.clone().map(|l| (l, stream));
    let mut out = Capture::new(stdout_r, spec.stdout_limit, live(Stream::Stdout));
    let mut errc = Capture::new(stderr_r, spec.stderr_limit, live(Stream::Stderr));
    let mut report = Capture::new(err_r, 12, None);
    let stdin_data: &[u8] = spec.stdin.as_deref().unwrap_or(&[]);
    let mut stdin_off = 0;
    let mut stdin_fd = (!stdin_data.is_empty()).then_some(stdin_w);
    let deadline = Instant::now() + spec.limits.timeout;
    let mut exited = false;
    // Watched until init reports or its write end closes without a report (init killed).
    let mut watch_status = true;
    let mut timed_out = false;
    let mut exit_seen: Option<Instant> = None;
    let mut scratch = vec![0u8; 64 * 1024];
    let pidfd = child
        .pidfd
        .as_ref()
        .map(|f| f.as_raw_fd())
        .ok_or_else(|| last("pidfd"))?;
    loop {
        if exited && out.fd.is_none() && errc.fd.is_none() && report.fd.is_none() {
            break;
        }
        let now = Instant::now();
        if !exited && !timed_out && now >= deadline {
            timed_out = true;
            child.kill();
            cgroups.kill_all();
        }
        // After init is gone the pipes close as the namespace's last processes die; wait a
        // bounded time for that rather than forever.
        let wait = if exited {
            let seen = *exit_seen.get_or_insert(now);
            let grace = Duration::from_secs(2);
            if now >= seen + grace {
                break;
            }
            seen + grace - now
        } else if timed_out {
            Duration::from_millis(100)
        } else {
            deadline - now
        };
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(5);
        let mut tags: Vec<u8> = Vec::with_capacity(5);
        let mut add = |fd: RawFd, events: libc::c_short, tag: u8| {
            pfds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            tags.push(tag);
        };
        if !exited {
            add(pidfd, libc::POLLIN, 0);
            if watch_status {
                add(status_r.as_raw_fd(), libc::POLLIN, 5);
            }
        }
        for (c, tag) in [(&out, 1), (&errc, 2), (&report, 3)] {
            if let Some(fd) = &c.fd {
                add(fd.as_raw_fd(), libc::POLLIN, tag);
            }
        }
        if let Some(fd) = &stdin_fd {
            add(fd.as_raw_fd(), libc::POLLOUT, 4);
        }
        if let Some(sup) = seccomp.as_deref() {
            for (fd, tag) in [(&sup.sock, 6), (&sup.listener, 7)] {
                if let Some(fd) = fd {
                    add(fd.as_raw_fd(), libc::POLLIN, tag);
                }
            }
        }
        let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: poll on a Vec of pollfd structs of the given length.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms.max(1)) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(sys("poll")(e));
        }
        for (p, tag) in pfds.iter().zip(&tags) {
            if p.revents == 0 {
                continue;
            }
            match tag {
                0 => exited = true,
                // The report is there: the sandbox's processes are gone (init is in _exit).
                5 if p.revents & libc::POLLIN != 0 => exited = true,
                // Hung up without a report: init died another way; its pidfd tells when.
                5 => watch_status = false,
                1 => out.drain(&mut scratch),
                2 => errc.drain(&mut scratch),
                3 => report.drain(&mut scratch),
                6 | 7 => {
                    if let Some(sup) = seccomp.as_deref_mut() {
                        sup.on_ready(*tag, p.revents);
                        if sup.error.is_some() {
                            child.kill();
                            cgroups.kill_all();
                        }
                    }
                }
                _ => {
                    let fd = stdin_fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
                    let rest = &stdin_data[stdin_off..];
                    // SAFETY: write from a slice we borrow to a non-blocking pipe.
                    let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
                    if n > 0 {
                        stdin_off += n as usize;
                    }
                    let again =
                        n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
                    if stdin_off >= stdin_data.len() || (n < 0 && !again) {
                        stdin_fd = None;
                    }
                }
            }
        }
    }
    let error = (report.buf.len() >= 12).then(|| {
        let w = |i: usize| {
            [
                report.buf[i],
                report.buf[i + 1],
                report.buf[i + 2],
                report.buf[i + 3],
            ]
        };
        let step = Step::from_u32(u32::from_ne_bytes(w(0))).unwrap_or(Step::Exec);
        (step, i32::from_ne_bytes(w(4)), u32::from_ne_bytes(w(8)))
    });
    Ok(Supervised {
        stdout: out,
        stderr: errc,
        timed_out,
        error,
    })
}

/// Bounded capture of one output pipe.
pub(crate) struct Capture {
    fd: Option<OwnedFd>,
    pub(crate) buf: Vec<u8>,
    limit: usize,
    pub(crate) truncated: bool,
    /// Bytes kept so far (collected or passed to `live`).
    kept: usize,
    /// Pass kept bytes here instead of collecting them.
    live: Option<(LiveOutput, Stream)>,
}

impl Capture {
    fn new(fd: OwnedFd, limit: usize, live: Option<(LiveOutput, Stream)>) -> Self {
        Self {
            fd: Some(fd),
            buf: Vec::new(),
            limit,
            truncated: false,
            kept: 0,
            live,
        }
    }

    /// Read until EAGAIN or EOF; keep up to `limit` bytes and drop the rest.
    fn drain(&mut self, scratch: &mut [u8]) {
        let Some(fd) = &self.fd else { return };
        loop {
            // SAFETY: read into a scratch buffer we own.
            let n =
                unsafe { libc::read(fd.as_raw_fd(), scratch.as_mut_ptr().cast(), scratch.len()) };
            if n > 0 {
                let n = n as usize;
                let room = self.limit.saturating_sub(self.kept);
                let keep = room.min(n);
                self.kept += keep;
                match &self.live {
                    Some((sink, stream)) if keep > 0 => (sink.0)(*stream, &scratch[..keep]),
                    Some(_) => {}
                    None => self.buf.extend_from_slice(&scratch[..keep]),
                }
                if keep < n {
                    self.truncated = true;
                }
                continue;
            }
            if n == 0 {
                self.fd = None;
                return;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return,
                _ => {
                    self.fd = None;
                    return;
                }
            }
        }
    }
}
