//! A container's init process seen from this host, through a pidfd: how `stop_many` signals a
//! level of `down` and notices its exit without waiting on the backend.
//!
//! Why: podman reports a container as exited only after its cleanup has run (network
//! namespace and firewall rules torn down, ~200 ms with a bridge network here), and every
//! query blocks on the container's lock meanwhile. `down` stops dependents before what they
//! depend on, so that wait was paid once per level, on the critical path. What the order needs
//! is that the dependents' processes are gone; the cleanup can go on while the next level
//! stops. A pidfd says so the moment the process ends.
//!
//! A pid from `inspect` is only a number: it may be the container's init, or — when the
//! backend runs in a VM (lima, the desktops) or the pid was reused — any other process. So
//! [`HostProcess::open`] takes the pidfd first, then checks through `/proc` that the process
//! is PID 1 of its own namespace and sits in a cgroup named after the container's full id,
//! then that the pidfd's process is still alive (so the `/proc` it read was that process's).
//! Anything else is `None`, and the caller asks the backend as before.
//!
//! Containers are created without a restart policy, so a signal sent here ends the container
//! exactly as the backend's `kill` would (runc, crun and docker's shim all signal the init).

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::BackendError;

/// The verified init process of one container.
pub(crate) struct HostProcess {
    fd: OwnedFd,
}

impl HostProcess {
    /// The init process of the container with full id `id`, which the backend says has host
    /// pid `pid`; `None` when it cannot be shown to be that process, here and now (no such
    /// pid on this host, another process, already exited) — the backend then decides.
    pub(crate) fn open(pid: u32, id: &str) -> Option<Self> {
        let p = i32::try_from(pid).ok().and_then(Pid::from_raw)?;
        // An id that is not the full hex id could match a cgroup by accident.
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let fd = pidfd_open(p, PidfdFlags::empty()).ok()?;
        // The checks read /proc/PID; they were about the pidfd's process only if it is still
        // alive after them (a pid is not reused while its process exists).
        (is_container_init(pid, id) && !exited_now(&fd)).then_some(HostProcess { fd })
    }

    /// Sends `signal`; a process that has already exited is not an error.
    pub(crate) fn signal(&self, signal: Signal) -> std::io::Result<()> {
        match pidfd_send_signal(&self.fd, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// One container to stop through its init.
pub(crate) struct Held<'a> {
    /// The container's name, for errors.
    pub(crate) name: &'a str,
    /// Its init.
    pub(crate) process: HostProcess,
    /// Its stop signal.
    pub(crate) signal: Signal,
    /// How long after the signal it is killed.
    pub(crate) timeout: Duration,
}

/// Stops `held` together: each sent its signal, and each still running after its own timeout
/// sent SIGKILL, then given `grace` to go (one that outlives that is a timeout of `program`'s
/// stop). Returns the indices of those this process may not signal (`EPERM`: a rootless
/// backend's container under another user), which the caller leaves to the backend.
pub(crate) async fn stop_held(
    program: &str,
    held: &[Held<'_>],
    grace: Duration,
) -> Result<Vec<usize>, BackendError> {
    let failed = |h: &Held<'_>, source: std::io::Error| BackendError::Io {
        what: format!("signalling container {}", h.name),
        source: source.into(),
    };
    let mut refused = Vec::new();
    let mut signalled = Vec::new();
    for (i, h) in held.iter().enumerate() {
        match h.process.signal(h.signal) {
            Ok(()) => signalled.push(h),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => refused.push(i),
            Err(e) => return Err(failed(h, e)),
        }
    }
    if signalled.is_empty() {
        return Ok(refused);
    }
    let exits = exited_within(signalled.iter().map(|h| (&h.process, h.timeout))).await?;
    let late: Vec<&Held<'_>> = signalled
        .into_iter()
        .zip(exits)
        .filter_map(|(h, exited)| (!exited).then_some(h))
        .collect();
    for h in &late {
        h.process.signal(Signal::KILL).map_err(|e| failed(h, e))?;
    }
    let killed = exited_within(late.iter().map(|h| (&h.process, grace))).await?;
    match late.iter().zip(killed).find(|(_, exited)| !exited) {
        Some((h, _)) => Err(BackendError::Timeout {
            program: program.to_string(),
            verb: format!("stop {} (SIGKILL sent)", h.name),
            secs: (h.timeout + grace).as_secs_f64(),
        }),
        None => Ok(refused),
    }
}

/// Waits for each process to exit within its own limit; for each, whether it did. One
/// blocking thread polls every pidfd at once (tokio's `AsyncFd` would need `unsafe` here).
async fn exited_within<'a>(
    processes: impl Iterator<Item = (&'a HostProcess, Duration)>,
) -> Result<Vec<bool>, BackendError> {
    let now = std::time::Instant::now();
    let watched = processes
        .map(|(p, limit)| p.fd.try_clone().map(|fd| (fd, now + limit)))
        .collect::<std::io::Result<Vec<(OwnedFd, std::time::Instant)>>>()
        .map_err(|source| BackendError::Io {
            what: "holding a container's pidfd".into(),
            source: source.into(),
        })?;
    tokio::task::spawn_blocking(move || poll_exits(&watched))
        .await
        .map_err(|e| BackendError::Io {
            what: "waiting for containers to exit".into(),
            source: std::io::Error::other(e).into(),
        })
}

/// Blocks until every pidfd is readable (its process exited) or past its deadline.
fn poll_exits(watched: &[(OwnedFd, std::time::Instant)]) -> Vec<bool> {
    let mut exited = vec![false; watched.len()];
    loop {
        let now = std::time::Instant::now();
        let open: Vec<usize> = (0..watched.len())
            .filter(|&i| !exited[i] && watched[i].1 > now)
            .collect();
        let Some(left) = open.iter().map(|&i| watched[i].1 - now).min() else {
            return exited;
        };
        let mut polled: Vec<PollFd> = open
            .iter()
            .map(|&i| PollFd::new(&watched[i].0, PollFlags::IN))
            .collect();
        let wait = Timespec {
            tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        match poll(&mut polled, Some(&wait)) {
            Ok(_) => {
                for (p, &i) in polled.iter().zip(&open) {
                    exited[i] |= !p.revents().is_empty();
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return exited,
        }
    }
}

/// Whether `/proc/PID` shows PID 1 of its own pid namespace in a cgroup named by `id`.
fn is_container_init(pid: u32, id: &str) -> bool {
    let proc = format!("/proc/{pid}");
    let Ok(status) = std::fs::read_to_string(format!("{proc}/status")) else {
        return false;
    };
    let Ok(cgroup) = std::fs::read_to_string(format!("{proc}/cgroup")) else {
        return false;
    };
    namespace_init(&status) && cgroup.contains(id)
}

/// `NSpid:` in `/proc/PID/status` ends in 1: the process is the init of a namespace nested
/// in ours (a host process has one field, which is never 1 for a container's pid).
fn namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            let pids: Vec<&str> = v.split_whitespace().collect();
            pids.len() >= 2 && pids.last() == Some(&"1")
        })
        .unwrap_or(false)
}

/// A pidfd is readable once its process has exited.
fn exited_now(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// The signal a backend names (`15`, `TERM`, `SIGTERM`), when it is one we can send directly.
pub(crate) fn signal_named(name: &str) -> Option<Signal> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::from_named_raw(n);
    }
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    Some(match bare {
        "HUP" => Signal::HUP,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "KILL" => Signal::KILL,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "TERM" => Signal::TERM,
        "WINCH" => Signal::WINCH,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_init_of_a_nested_namespace_counts() {
        assert!(namespace_init("Name:\tsh\nNSpid:\t4242\t1\n"));
        assert!(namespace_init("NSpid:\t4242\t17\t1\n"));
        assert!(!namespace_init("NSpid:\t4242\t2\n"), "a second process");
        assert!(!namespace_init("NSpid:\t1\n"), "the host's own init");
        assert!(!namespace_init("Name:\tsh\n"), "no NSpid line");
    }

    #[test]
    fn a_process_of_this_host_is_never_taken_for_a_container() {
        let me = std::process::id();
        let id = "a".repeat(64);
        assert!(HostProcess::open(me, &id).is_none());
        assert!(HostProcess::open(me, "short").is_none());
        assert!(HostProcess::open(0, &id).is_none());
        assert!(HostProcess::open(u32::MAX, &id).is_none());
    }

    #[test]
    fn signals_are_read_as_backends_spell_them() {
        assert_eq!(signal_named("15"), Some(Signal::TERM));
        assert_eq!(signal_named("SIGQUIT"), Some(Signal::QUIT));
        assert_eq!(signal_named("INT"), Some(Signal::INT));
        assert_eq!(signal_named("SIGRTMIN+3"), None);
        assert_eq!(signal_named("0"), None);
    }
}
