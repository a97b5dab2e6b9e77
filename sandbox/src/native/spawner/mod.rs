//! The spawner: a small single-threaded process that clones sandbox inits for a long-running
//! service, so that no sandbox is a fork of the service.
//!
//! # Why
//!
//! [`run`](super::run) clones init from the calling process. In `perry-sandbox serve` that is a
//! multi-threaded process holding the audit signing key, the verification cache's MAC key and
//! registry credentials: every init starts as a copy of that memory (unreachable after `execve`,
//! but present until then), and every clone costs the service copy-on-write faults and TLB
//! shootdowns across its threads. The spawner is this same binary re-executed
//! ([`SPAWNER_ARG`], empty environment), so its memory never held any of those, and it is one
//! thread, so a clone copies a few megabytes and nothing can hold a lock across it.
//!
//! # What stays in the service
//!
//! Everything that decides: the plan's checks, the uid lease, the run's cgroups, the id maps,
//! the release byte, supervision (through the pidfd the spawner hands back), output, deadlines
//! and the seccomp supervisor. The spawner only rebuilds the plan from the request, clones init
//! (into the cgroup leaf and the prepared network namespace it is handed), and reports the end
//! it reaps. It is inside the trust boundary: it takes requests only over the socket pair the
//! service created, from the one process that started it.
//!
//! # Protocol
//!
//! The service holds the control socket (`SOCK_SEQPACKET`, the spawner's stdin). Per run it
//! creates a stream socket pair and sends one end over the control socket; on the run's socket
//! go the request with the run's descriptors (see `wire::Request`), then back `Spawned` with
//! init's pidfd (or `Failed`), and `Exited` with the `wait4` status and rusage. End of stream on
//! a run's socket means the spawner died: the run fails with
//! [`RunError::SpawnerUnavailable`] (503 `service_unavailable`), and the next call starts a new
//! spawner. The spawner exits when the control socket closes (the service is gone), killing
//! the inits it cloned; each init also dies with it by its parent-death signal.

mod server;
mod wire;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{socketpair, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage};
use rustix::net::{SendFlags, SocketFlags, SocketType};

use super::runner::Child;
use super::{RunError, RunSpec};
pub use server::spawner_main;
pub use wire::StepRecipe;
use wire::{Reply, Request, WireMount};

/// The first argument that makes this binary the spawner (checked before anything else runs).
pub const SPAWNER_ARG: &str = "__perry-spawner";

/// The service's handle on its spawner process: started on first use and again after it died.
#[derive(Debug)]
pub struct Spawner {
    program: PathBuf,
    live: Mutex<Option<Live>>,
}

#[derive(Debug)]
struct Live {
    process: std::process::Child,
    control: OwnedFd,
}

/// The descriptors of one run that init inherits (the spawner's copies are closed after the
/// clone).
pub(crate) struct SpawnFds<'a> {
    /// sync_r, err_w, status_w, stdin_r, stdout_w, stderr_w.
    pub pipes: [&'a OwnedFd; 6],
    pub seccomp: Option<&'a OwnedFd>,
    pub leaf: Option<&'a OwnedFd>,
    pub netns: Option<&'a OwnedFd>,
    /// A pooled sandbox's end of its bind socket: its workload waits on it for its command.
    pub bind: Option<&'a OwnedFd>,
}

impl Spawner {
    /// A spawner that re-executes this program (`/proc/self/exe`); started at once, so that a
    /// binary that cannot be the spawner fails at start-up, not on the first call.
    pub fn start() -> io::Result<Self> {
        Self::start_program(PathBuf::from("/proc/self/exe"))
    }

    /// A spawner that runs `program` [`SPAWNER_ARG`] (a binary whose `main` calls
    /// [`spawner_main`] for that argument).
    pub fn start_program(program: PathBuf) -> io::Result<Self> {
        let s = Spawner {
            program,
            live: Mutex::new(None),
        };
        let live = s.launch()?;
        *s.lock() = Some(live);
        Ok(s)
    }

    /// The spawner's process id, while one runs (for diagnostics and tests).
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(|l| l.process.id())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn launch(&self) -> io::Result<Live> {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let process = Command::new(&self.program)
            .arg(SPAWNER_ARG)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        tracing::debug!(pid = process.id(), "spawner started");
        Ok(Live {
            process,
            control: ours,
        })
    }

    /// A new run socket to a live spawner: the other end goes over the control socket. A
    /// spawner found dead is reaped and replaced once.
    fn open_run(&self) -> Result<OwnedFd, RunError> {
        let mut live = self.lock();
        for attempt in 0..2 {
            if let Some(l) = live.as_mut() {
                if matches!(l.process.try_wait(), Ok(None)) {
                    match send_run_socket(l.control.as_fd()) {
                        Ok(sock) => return Ok(sock),
                        Err(e) => tracing::warn!("spawner control socket: {e}"),
                    }
                }
            }
            if let Some(mut dead) = live.take() {
                let _ = dead.process.kill();
                let status = dead.process.wait();
                tracing::warn!(?status, "spawner gone; starting a new one");
            }
            if attempt == 0 {
                *live = Some(self.launch().map_err(|e| {
                    RunError::SpawnerUnavailable(format!(
                        "starting {}: {e}",
                        self.program.display()
                    ))
                })?);
            }
        }
        Err(RunError::SpawnerUnavailable(
            "a freshly started spawner did not take the run".into(),
        ))
    }

    /// Has the spawner clone init for `spec`; returns init (supervised through its pidfd,
    /// reaped by the spawner) and whether it was born in the unified cgroup leaf.
    pub(crate) fn spawn(
        &self,
        spec: &RunSpec,
        recipe: &StepRecipe,
        clone_flags: libc::c_int,
        fds: &SpawnFds<'_>,
    ) -> Result<(Child, bool), RunError> {
        let sock = self.open_run()?;
        let req = Request {
            digest: spec.rootfs().digest().to_string(),
            rootfs: spec.rootfs().path().to_path_buf(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            hostname: spec.hostname.clone(),
            mounts: spec
                .mounts
                .iter()
                .map(|m| WireMount {
                    source: m.source.clone(),
                    target: m.target.clone(),
                    read_only: m.read_only,
                    pinned: m.pinned.is_some(),
                })
                .collect(),
            tmpfs_size: spec.tmpfs_size,
            uid: spec.uid,
            gid: spec.gid,
            memory: spec.limits.memory,
            pids: spec.limits.pids,
            cpus: spec.limits.cpus,
            nofile: spec.limits.nofile,
            timeout_ms: spec.limits.timeout.as_millis() as u64,
            loopback: spec.loopback,
            recipe: recipe.clone(),
            clone_flags,
            seccomp: fds.seccomp.is_some(),
            leaf: fds.leaf.is_some(),
            netns: fds.netns.is_some(),
            late: fds.bind.is_some(),
        };
        let mut pass: Vec<BorrowedFd<'_>> = fds.pipes.iter().map(|f| f.as_fd()).collect();
        pass.extend(fds.seccomp.map(|f| f.as_fd()));
        pass.extend(fds.leaf.map(|f| f.as_fd()));
        pass.extend(fds.netns.map(|f| f.as_fd()));
        pass.extend(fds.bind.map(|f| f.as_fd()));
        pass.extend(
            spec.mounts
                .iter()
                .filter_map(|m| m.pinned.as_ref().map(|p| p.as_fd())),
        );
        wire::send_json(sock.as_fd(), &req, &pass).map_err(gone("sending the request"))?;
        let (reply, mut got) =
            wire::recv_json::<Reply>(sock.as_fd()).map_err(gone("waiting for the clone"))?;
        match reply {
            Reply::Spawned {
                pid,
                born_in_unified,
            } if got.len() == 1 => {
                let pidfd = got.pop().expect("one descriptor");
                Ok((Child::remote(pid, pidfd, sock), born_in_unified))
            }
            Reply::Failed { reason } => Err(RunError::SpawnerRefused(reason)),
            other => Err(RunError::SpawnerUnavailable(format!(
                "unexpected answer {other:?} with {} descriptors",
                got.len()
            ))),
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Some(mut l) = self.lock().take() {
            drop(l.control); // the spawner exits on end of stream, killing its inits
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while matches!(l.process.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = l.process.kill();
            let _ = l.process.wait();
        }
    }
}

/// Creates a run's socket pair and sends the spawner its end; returns ours.
fn send_run_socket(control: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let fds = [theirs.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ctl = SendAncillaryBuffer::new(&mut space);
    ctl.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        control,
        &[io::IoSlice::new(b"r")],
        &mut ctl,
        SendFlags::NOSIGNAL,
    )?;
    Ok(ours)
}

fn gone(what: &'static str) -> impl Fn(io::Error) -> RunError {
    move |e| RunError::SpawnerUnavailable(format!("{what}: {e}"))
}

/// Waits for the spawner's report of init's end: the `wait4` status and rusage.
pub(crate) fn wait_remote(sock: &OwnedFd) -> Result<(i32, libc::rusage), RunError> {
    match wire::recv_json::<Reply>(sock.as_fd()) {
        Ok((
            Reply::Exited {
                status,
                utime_us,
                stime_us,
                maxrss_kb,
            },
            _,
        )) => Ok((status, rusage(utime_us, stime_us, maxrss_kb))),
        Ok((other, _)) => Err(RunError::SpawnerUnavailable(format!(
            "unexpected answer {other:?}"
        ))),
        Err(e) => Err(RunError::SpawnerUnavailable(format!(
            "waiting for the sandbox's end: {e}"
        ))),
    }
}

/// A `rusage` with the fields a sandbox's end reports: user and system CPU (µs) and peak RSS
/// (KiB), the rest zero — from the spawner's `Exited` or from init's own status report.
pub(crate) fn rusage(utime_us: u64, stime_us: u64, maxrss_kb: i64) -> libc::rusage {
    // SAFETY: an all-zero rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    ru.ru_utime = timeval(utime_us);
    ru.ru_stime = timeval(stime_us);
    ru.ru_maxrss = maxrss_kb as libc::c_long;
    ru
}

fn timeval(us: u64) -> libc::timeval {
    libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    }
}
