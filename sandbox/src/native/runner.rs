//! [`run`]: prepare, clone init into its namespaces and cgroups, release it, supervise, collect
//! the [`Outcome`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cgroup::{CgLimits, RunCgroups};
use super::fds::pipe;
use super::lease::Lease;
use super::plan::{ChildFds, Plan, PARKED};
use super::seccomp_notify::{Handoff, Supervisor};
use super::spawner::{SpawnFds, Spawner, StepRecipe};
use super::supervise::supervise;
use super::{child, last, netns, socket_pair, sys, FinalStep, Outcome, RunError, RunSpec, Step};

/// Run `spec` in a fresh sandbox, applying `final_step` right before `execve`.
///
/// Blocks the calling thread until the command and every process it started are gone (call it
/// from `spawn_blocking` in async code). The calling thread must not exit during the run: the
/// sandbox is bound to it with `PR_SET_PDEATHSIG`.
///
/// Returns `Err` when the command did not start (setup or `execve` failed — nothing ran) or when
/// supervision itself failed; otherwise an [`Outcome`], whatever the command's own status.
pub fn run(spec: &RunSpec, final_step: &dyn FinalStep) -> Result<Outcome, RunError> {
    run_with(spec, final_step, None)
}

fn run_with(
    spec: &RunSpec,
    final_step: &dyn FinalStep,
    via: Option<(&Spawner, &StepRecipe)>,
) -> Result<Outcome, RunError> {
    let started = start(spec, final_step, via, false)?;
    finish(spec, final_step, started)
}

/// [`run`], handing the outcome to `then` as soon as every process that ran the command is
/// gone, before init's own exit is waited for and the run's cgroups are removed: what the
/// caller does with the outcome (durably recording it) overlaps that teardown instead of
/// following it.
///
/// With `via`, the sandbox's init is cloned by that spawner (a process that never held the
/// service's secrets, see [`Spawner`]) from its recipe, which must be what `final_step` was
/// built from. Everything else — the plan's checks, the uid lease, cgroups, id maps, release,
/// supervision and the seccomp supervisor — stays in the calling process, as in [`run`]. A
/// spawner that dies or breaks protocol during the run fails it with
/// [`RunError::SpawnerUnavailable`]; the sandbox dies with the spawner (parent-death signal). The teardown is complete when this returns; a
/// failure to remove the cgroups then is logged, not returned, because the run and whatever
/// `then` did with its outcome stand.
pub fn run_then<T>(
    spec: &RunSpec,
    final_step: &dyn FinalStep,
    via: Option<(&Spawner, &StepRecipe)>,
    then: impl FnOnce(&Outcome) -> T,
) -> Result<(Outcome, T), RunError> {
    let started = start(spec, final_step, via, false)?;
    let (outcome, rest) = finish_leaving(spec, final_step, started)?;
    let after = then(&outcome);
    if let Err(e) = rest.clean_up() {
        tracing::warn!("a finished sandbox's cgroups were not removed: {e}");
    }
    Ok((outcome, after))
}

/// A sandbox cloned, id-mapped, in its cgroups and released: what [`finish`] supervises. For a
/// pooled sandbox (`bind_w` set) init builds its filesystem and its workload then waits for its
/// command ([`Started::parked`] says when it does).
pub(crate) struct Started {
    lease: Lease,
    cgroups: RunCgroups,
    child: Child,
    /// The service's end of the seccomp supervisor handoff, when the final step has a program.
    seccomp: Option<OwnedFd>,
    /// Held for the whole run: init checks for its hang-up to learn whether we are alive.
    sync_w: OwnedFd,
    err_r: OwnedFd,
    status_r: OwnedFd,
    stdin_w: OwnedFd,
    stdout_r: OwnedFd,
    stderr_r: OwnedFd,
    /// A pooled sandbox's end of its bind socket: the request's command goes here (see
    /// `LateSlot`), and the workload's "parked" byte comes back.
    pub(crate) bind_w: Option<OwnedFd>,
    /// When the clone was asked for (a pooled run counts from its bind instead).
    pub(crate) at: Instant,
}

impl Started {
    /// True while init is alive (its pidfd not yet readable): a pooled sandbox whose init died
    /// while waiting must not take a request.
    pub(crate) fn alive(&self) -> bool {
        self.child.alive()
    }

    /// Waits up to `within` for a pooled sandbox's workload to say it is parked (one byte on the
    /// bind socket, written just before it blocks for its command): init has then built the
    /// sandbox's filesystem and pivoted into it (it is suspended until the workload execs), so
    /// its mount namespace is final. False when the sandbox died or took longer.
    pub(crate) fn parked(&self, within: std::time::Duration) -> bool {
        let Some(sock) = &self.bind_w else {
            return false;
        };
        let mut p = [rustix::event::PollFd::new(
            sock,
            rustix::event::PollFlags::IN,
        )];
        let Ok(timeout) = rustix::event::Timespec::try_from(within) else {
            return false;
        };
        if !matches!(rustix::event::poll(&mut p, Some(&timeout)), Ok(1)) {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(rustix::io::read(sock, &mut byte), Ok(1)) && byte[0] == PARKED
    }

    /// Init's pidfd (a spawner-cloned init always has one): a pooled sandbox's request mounts
    /// are moved into its mount namespace through it.
    pub(crate) fn init_pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.child.pidfd.as_ref().map(|f| f.as_fd())
    }
}

/// Everything up to the release byte: plan, lease, cgroups, pipes, the clone (here or by the
/// spawner), id maps, cgroup attach. With `late`, init waits for its command on a bind socket
/// once its sandbox is built.
pub(crate) fn start(
    spec: &RunSpec,
    final_step: &dyn FinalStep,
    via: Option<(&Spawner, &StepRecipe)>,
    late: bool,
) -> Result<Started, RunError> {
    let mut plan = Plan::build(spec, final_step.keep_fds(), late)?;
    let lease = spec.leases.acquire()?;
    let cgroups = RunCgroups::create(CgLimits {
        memory: spec.limits.memory,
        pids: spec.limits.pids,
        cpus: spec.limits.cpus,
    })?;
    let handoff = match final_step.seccomp_supervision() {
        Some(_) => Some(Handoff::new()?),
        None => None,
    };
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    // Both ways: the frame in, and the workload's "parked" byte out (see `Started::parked`).
    let bind = if late {
        Some(socket_pair(libc::SOCK_STREAM)?)
    } else {
        None
    };
    plan.set_fds(ChildFds {
        sync_r: sync_r.as_raw_fd(),
        sync_w: sync_w.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        stdin_r: stdin_r.as_raw_fd(),
        stdout_w: stdout_w.as_raw_fd(),
        stderr_w: stderr_w.as_raw_fd(),
        seccomp_sock: handoff.as_ref().map_or(-1, |h| h.sock_child.as_raw_fd()),
        bind_r: bind.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
    });
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::SIGCHLD;
    // A prepared empty network namespace if one is ready (see `netns`), else a new one. Runs
    // granted loopback need their own: init brings `lo` up with its capabilities there.
    let prepared = if spec.loopback { None } else { netns::take() };
    if prepared.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    let leaf = cgroups.unified_leaf_fd()?;
    let at = Instant::now();
    let (mut child, born_in_unified) = match via {
        None => clone_here(flags, prepared.as_ref(), leaf.as_ref(), &plan, final_step)?,
        Some((spawner, recipe)) => {
            let fds = SpawnFds {
                pipes: [&sync_r, &err_w, &status_w, &stdin_r, &stdout_w, &stderr_w],
                seccomp: handoff.as_ref().map(|h| &h.sock_child),
                leaf: leaf.as_ref(),
                netns: prepared.as_ref(),
                bind: bind.as_ref().map(|(r, _)| r),
            };
            spawner.spawn(spec, recipe, flags, &fds)?
        }
    };
    drop(leaf);
    drop(prepared);
    drop((sync_r, err_w, status_w, stdin_r, stdout_w, stderr_w));
    let bind_w = bind.map(|(_, w)| w);
    child.ensure_pidfd()?;

    // Host ids: inside 0 -> base, inside uid/gid -> base + 1.
    let base = lease.host_base;
    let map = |inside: u32| {
        let mut m = format!("0 {base} 1\n");
        if inside != 0 {
            m.push_str(&format!("{inside} {} 1\n", base + 1));
        }
        m
    };
    for (file, content) in [("uid_map", map(spec.uid)), ("gid_map", map(spec.gid))] {
        let path = PathBuf::from(format!("/proc/{}/{file}", child.pid));
        std::fs::write(&path, content).map_err(|source| RunError::IdMap { file: path, source })?;
    }
    // init is a copy of this (possibly large) process, so its RSS could make it the memory
    // cgroup's OOM victim, and killing init ends the whole sandbox. Exempt it where we hold
    // CAP_SYS_RESOURCE (a root service does; some CI containers drop it). The workload sets its
    // own score to +1000 in any case, so it is always the preferred victim.
    let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.pid), "-1000");
    cgroups.attach(child.pid, born_in_unified)?;
    // SAFETY: write one byte to the sync pipe; the child proceeds. `sync_w` stays open until the
    // run ends: init checks for its hang-up to learn whether we are still alive.
    if unsafe { libc::write(sync_w.as_raw_fd(), b"g".as_ptr().cast(), 1) } != 1 {
        return Err(last("release child"));
    }
    Ok(Started {
        lease,
        cgroups,
        child,
        seccomp: handoff.map(|h| h.sock_parent),
        sync_w,
        err_r,
        status_r,
        stdin_w,
        stdout_r,
        stderr_r,
        bind_w,
        at,
    })
}

/// Supervises a released sandbox to its end and collects the [`Outcome`]; `final_step` is the
/// one the sandbox was started with.
pub(crate) fn finish(
    spec: &RunSpec,
    final_step: &dyn FinalStep,
    started: Started,
) -> Result<Outcome, RunError> {
    let (outcome, rest) = finish_leaving(spec, final_step, started)?;
    rest.clean_up()?;
    Ok(outcome)
}

/// What is left of a sandbox once every process of it but init is gone and init is in `_exit`:
/// init to reap, its cgroups and its uid lease. Dropping it reaps init (waiting out its exit),
/// removes the cgroups, then frees the lease.
pub(crate) struct Leftovers {
    /// init, exiting or exited but not yet reaped (declared first: dropped, i.e. reaped, first).
    child: Option<Child>,
    cgroups: RunCgroups,
    _lease: Lease,
}

impl Leftovers {
    /// Reaps init (if not yet) and removes the run's cgroups, reporting a failure to remove.
    fn clean_up(mut self) -> Result<(), RunError> {
        drop(self.child.take());
        self.cgroups.remove()
    }
}

/// The workload's wait status from init's report.
fn report_status(r: &[u8; child::STATUS_REPORT]) -> i32 {
    i32::from_ne_bytes([r[0], r[1], r[2], r[3]])
}

/// init's resource use (with all it reaped) from its report, as `wait4` would give it.
fn report_rusage(r: &[u8; child::STATUS_REPORT]) -> libc::rusage {
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&r[i..i + 8]);
        b
    };
    super::spawner::rusage(
        u64::from_ne_bytes(word(4)),
        u64::from_ne_bytes(word(12)),
        i64::from_ne_bytes(word(20)),
    )
}

/// [`finish`], leaving init's reaping and the removal of the run's cgroups to the caller (a warm
/// pool does it off the request's path). Every process that ran the request's code is gone when
/// this returns; init is the last one, and it is exiting (its report says so).
pub(crate) fn finish_leaving(
    spec: &RunSpec,
    final_step: &dyn FinalStep,
    started: Started,
) -> Result<(Outcome, Leftovers), RunError> {
    let Started {
        lease,
        mut cgroups,
        mut child,
        seccomp,
        sync_w,
        err_r,
        status_r,
        stdin_w,
        stdout_r,
        stderr_r,
        bind_w,
        at,
    } = started;
    debug_assert!(
        bind_w.is_none(),
        "a pooled sandbox is bound before it is finished"
    );
    drop(bind_w);
    let mut seccomp = match (seccomp, final_step.seccomp_supervision()) {
        (Some(sock), Some(program)) => Some(Supervisor {
            sock: Some(sock),
            listener: None,
            program,
            denied: std::collections::BTreeMap::new(),
            error: None,
        }),
        _ => None,
    };
    let supervised = supervise(
        spec,
        &mut child,
        err_r,
        &status_r,
        stdin_w,
        stdout_r,
        stderr_r,
        &cgroups,
        seccomp.as_mut(),
    )?;
    // init reported (it is the last process and exiting) or has exited: its report is in the
    // pipe, unless init itself was killed, when only its reaper knows how it ended.
    let mut report = [0u8; child::STATUS_REPORT];
    // SAFETY: read into a stack buffer; the report is there or init has exited (its write end
    // is closed), so this cannot block.
    let n = unsafe {
        libc::read(
            status_r.as_raw_fd(),
            report.as_mut_ptr().cast(),
            report.len(),
        )
    };
    let (wstatus, ru, child) = if n == report.len() as isize {
        // Every process of the sandbox but init is gone and init is exiting; reaping it (by
        // the spawner, for a remote child) is left to whoever drops the leftovers.
        (report_status(&report), report_rusage(&report), Some(child))
    } else {
        let (status, ru) = child.wait()?;
        (status, ru, None)
    };
    drop(sync_w);
    let wall_time = at.elapsed();

    if let Some(e) = seccomp.as_mut().and_then(|s| s.error.take()) {
        cgroups.remove()?;
        return Err(e);
    }
    if let Some((step, errno, index)) = supervised.error {
        cgroups.remove()?;
        return Err(match step {
            Step::Exec => RunError::Exec {
                program: spec.argv[0].clone(),
                errno,
            },
            Step::FinalStep => RunError::FinalStep { errno },
            step => RunError::Setup { step, index, errno },
        });
    }
    let (exit_code, signal) = if libc::WIFEXITED(wstatus) {
        (Some(libc::WEXITSTATUS(wstatus)), None)
    } else if libc::WIFSIGNALED(wstatus) {
        (None, Some(libc::WTERMSIG(wstatus)))
    } else {
        (None, Some(libc::SIGKILL))
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let outcome = Outcome {
        exit_code,
        signal,
        stdout: supervised.stdout.buf,
        stderr: supervised.stderr.buf,
        stdout_truncated: supervised.stdout.truncated,
        stderr_truncated: supervised.stderr.truncated,
        timed_out: supervised.timed_out,
        oom_killed: cgroups.oom_killed(),
        max_rss: (ru.ru_maxrss as u64) * 1024,
        memory_peak: cgroups.memory_peak(),
        cpu_time: tv(ru.ru_utime) + tv(ru.ru_stime),
        wall_time,
        denied_syscalls: seccomp.map(Supervisor::report).unwrap_or_default(),
    };
    Ok((
        outcome,
        Leftovers {
            child,
            cgroups,
            _lease: lease,
        },
    ))
}

/// Clones init from this process, inside the prepared network namespace when there is one
/// (entered for the clone only; the calling thread goes back to its own at once).
pub(crate) fn clone_here(
    flags: libc::c_int,
    netns: Option<&OwnedFd>,
    leaf: Option<&OwnedFd>,
    plan: &Plan,
    final_step: &dyn FinalStep,
) -> Result<(Child, bool), RunError> {
    let entered = match netns {
        Some(ns) => Some(netns::Entered::enter(ns).map_err(sys("setns (prepared netns)"))?),
        None => None,
    };
    let cloned = clone_init(flags, leaf, plan, final_step);
    // Back to our own network namespace before anything else; the sandbox now holds its own.
    if let Some(e) = entered {
        e.leave().map_err(sys("setns (back from prepared netns)"))?;
    }
    cloned
}

/// `CLONE_INTO_CGROUP` (linux/sched.h); `libc`'s constant is an `i32` that overflows.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3`'s argument (`struct clone_args`, up to `cgroup`, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Clones init with `flags` (namespaces and `SIGCHLD`; fork semantics, no `CLONE_VM`). With the
/// run's unified-hierarchy leaf, `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)` starts init inside it
/// and returns its pidfd in the same call; a kernel that refuses (before 5.7, or a cgroup it
/// will not clone into) gets the plain `clone`, and the caller attaches and opens the pidfd.
/// Returns the child and whether it was born in the unified leaf.
fn clone_init(
    flags: libc::c_int,
    leaf: Option<&OwnedFd>,
    plan: &Plan,
    final_step: &dyn FinalStep,
) -> Result<(Child, bool), RunError> {
    if let Some(leaf) = leaf {
        let mut pidfd: libc::c_int = -1;
        let args = CloneArgs {
            flags: ((flags & !libc::CSIGNAL) as u64) | libc::CLONE_PIDFD as u64 | CLONE_INTO_CGROUP,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            exit_signal: (flags & libc::CSIGNAL) as u64,
            cgroup: leaf.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM = fork semantics with new namespaces; `args` and
        // `pidfd` outlive the call. The child only runs `child::init_main`, which reads the
        // prepared plan and never allocates or returns.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            child::init_main(plan, final_step);
        }
        if pid > 0 {
            // SAFETY: the kernel stored a fresh pidfd for the child.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            return Ok((Child::local(pid as libc::pid_t, Some(pidfd)), true));
        }
    }
    // SAFETY: raw clone without CLONE_VM = fork semantics with new namespaces. The child only
    // runs `child::init_main`, which reads the prepared plan and never allocates or returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_long, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(last("clone"));
    }
    if pid == 0 {
        child::init_main(plan, final_step);
    }
    Ok((Child::local(pid as libc::pid_t, None), false))
}

/// The cloned init: killed and reaped on drop unless already reaped.
pub(crate) struct Child {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: Option<OwnedFd>,
    reaped: bool,
    /// Set when a spawner cloned init: the run's socket to it, where the spawner reports the
    /// end it reaped (only a parent can `wait4`).
    remote: Option<OwnedFd>,
}

impl Child {
    /// Our own child.
    pub(crate) fn local(pid: libc::pid_t, pidfd: Option<OwnedFd>) -> Self {
        Child {
            pid,
            pidfd,
            reaped: false,
            remote: None,
        }
    }

    /// Opens init's pidfd when the clone did not return one (plain `clone`).
    pub(crate) fn ensure_pidfd(&mut self) -> Result<(), RunError> {
        if self.pidfd.is_none() {
            // SAFETY: pidfd_open on our unreaped child.
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
            if pidfd < 0 {
                return Err(last("pidfd_open"));
            }
            // SAFETY: a fresh fd.
            self.pidfd = Some(unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) });
        }
        Ok(())
    }

    /// A child of the spawner at the other end of `run_socket`.
    pub(crate) fn remote(pid: libc::pid_t, pidfd: OwnedFd, run_socket: OwnedFd) -> Self {
        Child {
            pid,
            pidfd: Some(pidfd),
            reaped: false,
            remote: Some(run_socket),
        }
    }

    /// True while the process has not exited (its pidfd is not readable yet).
    pub(crate) fn alive(&self) -> bool {
        let Some(fd) = &self.pidfd else {
            return !self.reaped;
        };
        let mut p = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut p, Some(&now)), Ok(0))
    }

    pub(crate) fn kill(&self) {
        match &self.pidfd {
            // SAFETY: pidfd_send_signal on our own pidfd: cannot hit a recycled pid.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            // SAFETY: the child is unreaped, so its pid cannot have been recycled.
            None => unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            },
        }
    }

    pub(crate) fn wait(&mut self) -> Result<(i32, libc::rusage), RunError> {
        if let Some(sock) = &self.remote {
            let waited = super::spawner::wait_remote(sock);
            self.reaped = true;
            return waited;
        }
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 for our own child with valid out-pointers.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::__WALL, &mut ru) };
            if r == self.pid {
                self.reaped = true;
                return Ok((status, ru));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(RunError::Sys {
                    op: "wait4",
                    source: e,
                });
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.wait();
        }
    }
}
