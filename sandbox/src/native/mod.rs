//! The native sandbox runner: run one command from an unpacked, read-only root filesystem in
//! fresh namespaces, under cgroup limits, and collect its output and status.
//!
//! # Process model
//!
//! The service that calls [`run`] is a multi-threaded tokio process. `fork`ing such a process and
//! allocating in the child can deadlock (another thread may have held a malloc lock at the
//! instant of the fork), so we follow `std::process::Command`'s discipline and push it further:
//!
//! 1. **Parent, before clone:** validate the [`RunSpec`] and build a [`plan`](self) — every path,
//!    `argv`/`envp` array, mount option string and lookup candidate as `CString`s. Take a uid
//!    lease, create the run's cgroups, create the pipes.
//! 2. **`clone(CLONE_NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS)`** as a raw syscall without
//!    `CLONE_VM` (fork semantics, one syscall for all namespaces, no atfork handlers). The child
//!    is PID 1 ("init") of the new pid namespace. It blocks on a pipe. When an empty network
//!    namespace was prepared ahead ([`prepare_network_namespaces`]), the calling thread enters it
//!    for the clone instead of passing `CLONE_NEWNET` (see `netns`).
//! 3. **Parent:** write `uid_map`/`gid_map` (host ids from the lease, never host uid 0), move the
//!    child into the run's cgroups, then release it with one byte.
//! 4. **Init**, as explicit named [`Step`]s: become namespace root and drop supplementary groups,
//!    new cgroup namespace (now rooted at the run's cgroup), hostname, private propagation,
//!    read-only bind of the rootfs (repeating locked flags), missing mount points (a read-only
//!    overlay, only when a bind target is missing), `/proc` with masked paths and
//!    read-only `/proc/sys`, nested user namespaces capped at 0, minimal `/dev`, size-limited
//!    `/tmp`, configured bind mounts, `pivot_root`, optional `lo` up, stdio, close every other
//!    fd, non-dumpable. Then it starts the **workload** (`CLONE_VM | CLONE_VFORK` on a stack
//!    of its own, like `posix_spawn`: init's memory is shared, not copied, until the
//!    workload's `execve`) and reaps until the workload exits,
//!    reports the workload's wait status and exits — which kills everything else left in the
//!    pid namespace, so background children cannot outlive the command.
//! 5. **Workload:** new session, rlimits, cwd, switch to the sandbox uid/gid, the caller's
//!    [`FinalStep`] (securebits, capabilities, no_new_privs, Landlock, seccomp), `execve`.
//!
//! Steps 4–5 never allocate: they read the plan and issue raw syscalls (not glibc's set*id
//! wrappers, which would try to signal the parent's threads). A failing step writes
//! `(step, errno, index)` to a close-on-exec pipe; EOF on that pipe means `execve` happened.
//! We chose this over re-executing a helper binary (an extra exec of a Rust binary per run,
//! ~1 ms) and over glibc `fork` + `unshare` (needs an extra process outside the pid namespace to
//! be its parent, and still forbids allocation for anything but malloc).
//!
//! # Supervision
//!
//! The parent polls a pidfd of init, the stdout/stderr pipes (kept up to a byte limit each, the
//! rest drained and dropped, so memory use is bounded), the error pipe and the stdin pipe. On the
//! wall-clock deadline it SIGKILLs init through the pidfd (the kernel then kills the whole pid
//! namespace) and kills whatever is in the run's cgroups. Exit status, `wait4` rusage (CPU time,
//! max RSS) and the cgroup's OOM counter make up the [`Outcome`].
//!
//! # Nothing left behind
//!
//! Mounts live in the sandbox's mount namespace and vanish with it; cgroups are removed when the
//! run ends (also on every error path, by `Drop`); the uid lease is an OFD lock released on close;
//! every pipe is an `OwnedFd`; no temporary directory is created.
//!
//! # What the caller prepares
//!
//! A rootfs directory (read-only from then on, and never written to by a run) containing `/proc`,
//! `/dev` and `/tmp` directories; no component of those or of a bind mount target may be a
//! symlink. A bind target the image lacks is provided inside the sandbox's own mount namespace
//! (a small tmpfs layer under a read-only overlay of the rootfs, see `plan::MountPoints`), so the
//! content-addressed tree under a digest stays exactly what unpack produced. The rootfs and all
//! its ancestors must be searchable by "other" (mode `o+x`), because setup runs as an
//! unprivileged host uid.

mod cgroup;
mod child;
mod error;
mod fds;
mod final_step;
mod late_mounts;
mod lease;
mod netns;
mod plan;
mod pool;
mod profile_step;
mod runner;
mod seccomp_notify;
mod spawner;
mod spec;
mod step;
mod supervise;

use std::io;
use std::time::Duration;

pub use error::RunError;
pub(crate) use error::{last, sys};
pub(crate) use fds::socket_pair;
pub use pool::{PooledOutcome, WarmPool};
pub use runner::{run, run_then};
pub use spawner::{spawner_main, Spawner, StepRecipe, SPAWNER_ARG};
pub use spec::{BindMount, DeniedSyscall, Limits, LiveOutput, LiveSink, Outcome, RunSpec, Stream};
pub use step::Step;

pub use cgroup::run_cgroups;
pub use cgroup::sweep_stale as sweep_stale_cgroups;
pub use cgroup::warm_up_migration as warm_up_cgroup_migration;
/// The runner's floor without a tier profile: test support only, never a public door.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use final_step::MinimalFinalStep;
pub use final_step::{FinalStep, FinalStepError, StepChannel};
pub use lease::LeaseConfig;

/// Starts, in the background, the kernel work a process that runs one sandbox would otherwise
/// wait for when the sandbox starts: the slow first cgroup migration
/// ([`warm_up_cgroup_migration`]) and its empty network namespace
/// ([`prepare_one_network_namespace`]). Call it before verifying and pulling, which it overlaps.
pub fn prepare_for_one_run() {
    warm_up_cgroup_migration();
    prepare_one_network_namespace();
}
pub use netns::{
    prepare_network_namespaces, prepare_one_network_namespace, prepared_network_namespaces,
};
pub use profile_step::{landlock_abi, LandlockOutcome, ProfileStep, ProfileStepError};

/// Busy CPU time of the whole host since boot, all cores (`/proc/stat`: everything but idle and
/// iowait). Benchmarks take the difference over a loop of runs: a sandbox costs CPU outside
/// the calling process too (the kernel tears namespaces and cgroups down in worker threads), and
/// that is part of what it costs a busy host.
pub fn host_busy_cpu() -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .ok_or_else(|| io::Error::other("/proc/stat: no aggregate cpu line"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(
        busy.saturating_mul(1_000_000_000) / hz,
    ))
}

/// `PATH` used for command lookup (and given to the workload) when the spec sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::host_busy_cpu;
    use std::time::{Duration, Instant};

    #[test]
    fn host_busy_cpu_counts_a_busy_loop() {
        let before = host_busy_cpu().unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let busy = host_busy_cpu().unwrap() - before;
        // One core spun for 300 ms; ticks are 10 ms and other work only adds.
        assert!(busy >= Duration::from_millis(250), "{busy:?}");
    }
}
