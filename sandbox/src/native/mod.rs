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
mod final_step;
mod lease;
mod netns;
mod plan;
mod profile_step;
mod seccomp_notify;

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use perry_policies::TierLimits;

use crate::pull::VerifiedRootfs;

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

use cgroup::{CgLimits, RunCgroups};
use plan::{ChildFds, Plan};
use seccomp_notify::{Handoff, Supervisor};

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

/// The named steps of sandbox setup; a failure names the step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Arrange SIGKILL on the death of the supervising thread.
    ParentDeathSignal = 1,
    /// Wait for the parent to write id maps and attach cgroups.
    WaitForParent,
    /// Become uid/gid 0 of the sandbox's user namespace.
    SetIds,
    /// Drop supplementary groups inherited from the host.
    SetGroups,
    /// Enter a new cgroup namespace rooted at the run's cgroup.
    CgroupNamespace,
    /// Set the hostname in the new UTS namespace.
    Hostname,
    /// Make every mount private so nothing propagates to the host.
    PrivatePropagation,
    /// Bind the rootfs onto itself.
    BindRootfs,
    /// Remount the rootfs read-only (repeating locked flags).
    RemountRootfs,
    /// Mount the tmpfs layer that holds mount points the image lacks.
    MountPointLayer,
    /// Create a missing mount point's directory in that layer (index: which directory).
    MountPointDir,
    /// Mount the read-only overlay of that layer over the rootfs.
    MountPointOverlay,
    /// Mount a fresh procfs.
    MountProc,
    /// Set `user.max_user_namespaces` to 0 inside the sandbox.
    LimitUserNamespaces,
    /// Mask a sensitive `/proc` path (index: file `i`, or dir `100 + i`).
    MaskProc,
    /// Make a `/proc` subtree read-only.
    ReadOnlyProc,
    /// Mount the tmpfs for `/dev`.
    MountDev,
    /// Create a device node placeholder.
    CreateDevNode,
    /// Bind a host device node.
    BindDevNode,
    /// Create a `/dev` symlink.
    DevSymlink,
    /// Remount `/dev` read-only.
    RemountDev,
    /// Mount the `/tmp` tmpfs.
    MountTmp,
    /// Bind a configured mount.
    BindMount,
    /// Remount a configured mount with its final flags.
    RemountBind,
    /// A pinned mount source was replaced between its check and the mount (errno `ESTALE`):
    /// what was mounted is not what was checked, so nothing runs.
    BindSourceChanged,
    /// `pivot_root` into the rootfs.
    PivotRoot,
    /// Detach the old root.
    DetachOldRoot,
    /// Bring up the loopback interface.
    LoopbackUp,
    /// Install stdio pipes as fds 0–2.
    Stdio,
    /// Close every other fd.
    CloseFds,
    /// Make init non-dumpable.
    NonDumpable,
    /// Fork the workload from init.
    ForkWorkload,
    /// Start a new session.
    NewSession,
    /// Set an rlimit (index into NOFILE, NPROC, CORE).
    Rlimit,
    /// Make the workload the preferred OOM victim (oom_score_adj 1000).
    OomScore,
    /// Change to the working directory.
    Cwd,
    /// Switch to the workload's uid/gid.
    SwitchIds,
    /// The caller's final confinement step.
    FinalStep,
    /// `execve` of the command.
    Exec,
}

impl Step {
    const ALL: [Step; 39] = [
        Step::ParentDeathSignal,
        Step::WaitForParent,
        Step::SetIds,
        Step::SetGroups,
        Step::CgroupNamespace,
        Step::Hostname,
        Step::PrivatePropagation,
        Step::BindRootfs,
        Step::RemountRootfs,
        Step::MountPointLayer,
        Step::MountPointDir,
        Step::MountPointOverlay,
        Step::MountProc,
        Step::LimitUserNamespaces,
        Step::MaskProc,
        Step::ReadOnlyProc,
        Step::MountDev,
        Step::CreateDevNode,
        Step::BindDevNode,
        Step::DevSymlink,
        Step::RemountDev,
        Step::MountTmp,
        Step::BindMount,
        Step::RemountBind,
        Step::BindSourceChanged,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::LoopbackUp,
        Step::Stdio,
        Step::CloseFds,
        Step::NonDumpable,
        Step::ForkWorkload,
        Step::NewSession,
        Step::Rlimit,
        Step::OomScore,
        Step::Cwd,
        Step::SwitchIds,
        Step::FinalStep,
        Step::Exec,
    ];

    fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == v)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A host path made visible inside the sandbox.
#[derive(Clone, Debug)]
pub struct BindMount {
    /// Host path (file or directory). For a [pinned](BindMount::pinned) mount, the path the
    /// pinned file resolved to when it was opened (for checks and messages; the mount uses the
    /// file itself).
    pub source: PathBuf,
    /// Absolute path inside the sandbox. When the image lacks it, the sandbox provides it as an
    /// empty directory in its own mount namespace; the rootfs itself is never written to.
    pub target: PathBuf,
    /// Read-only unless a grant says otherwise.
    pub read_only: bool,
    /// The source opened once (`O_PATH`): what gets mounted, whatever its path points at later.
    pub pinned: Option<std::sync::Arc<OwnedFd>>,
}

impl BindMount {
    /// A read-only bind mount, the default for every configured mount.
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        BindMount {
            source: source.into(),
            target: target.into(),
            read_only: true,
            pinned: None,
        }
    }

    /// A bind mount of `source` as it resolves *now*: the path is opened once (`O_PATH`,
    /// following symlinks) and [`BindMount::source`] becomes the path the open file really has.
    /// The sandbox mounts that path and then checks that what it mounted is the very file that
    /// was opened (device and inode); if not, setup fails at [`Step::BindSourceChanged`] and
    /// nothing runs.
    ///
    /// This closes the window between checking a path and mounting it: a caller that checks
    /// `source` (say, "lies under an allowed workspace root") after this call has checked
    /// exactly what can be mounted, even if someone swaps a symlink into the path meanwhile.
    /// (The open file itself cannot be mounted from inside the sandbox's new mount namespace:
    /// the kernel refuses bind sources from another namespace.)
    pub fn pinned(
        source: &std::path::Path,
        target: impl Into<PathBuf>,
        read_only: bool,
    ) -> io::Result<Self> {
        let fd = rustix::fs::open(
            source,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        Ok(BindMount {
            source: real,
            target: target.into(),
            read_only,
            pinned: Some(std::sync::Arc::new(fd)),
        })
    }
}

/// Resource limits of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Memory cgroup limit in bytes (swap is limited to the same total).
    pub memory: u64,
    /// Maximum tasks (pids cgroup and RLIMIT_NPROC).
    pub pids: u32,
    /// CPU quota in cores.
    pub cpus: f64,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
    /// Wall-clock limit; the whole process tree is killed when it passes.
    pub timeout: Duration,
}

impl Limits {
    /// The limits a tier imposes.
    pub fn from_tier(l: &TierLimits) -> Self {
        Limits {
            memory: l.memory.as_u64(),
            pids: l.pids,
            cpus: l.cpus,
            nofile: l.nofile,
            timeout: l.timeout.as_std(),
        }
    }
}

/// Which output stream a chunk of [`LiveOutput`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// A destination for output as it arrives (the terminal of `perry-sandbox run`), instead of
/// collecting it into [`Outcome::stdout`]/[`Outcome::stderr`]. The byte limits still apply: what
/// is past a stream's limit is dropped and flagged as truncated, never buffered. Called on the
/// supervising thread; a slow sink slows the command (its pipe fills), it never grows memory.
#[derive(Clone)]
pub struct LiveOutput(pub std::sync::Arc<LiveSink>);

/// The function a [`LiveOutput`] calls with each chunk kept.
pub type LiveSink = dyn Fn(Stream, &[u8]) + Send + Sync;

impl fmt::Debug for LiveOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveOutput(..)")
    }
}

/// Everything needed to run one command in a sandbox. Plain data; see [`run`].
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The verified, unpacked root filesystem (read-only; see the module doc for its needs).
    /// Private: only [`RunSpec::new`] sets it, from a [`VerifiedRootfs`] the puller minted.
    rootfs: VerifiedRootfs,
    /// The command; `argv[0]` is looked up in `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// The whole environment (nothing is inherited); `PATH` defaults to [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Configured bind mounts.
    pub mounts: Vec<BindMount>,
    /// Size of the `/tmp` tmpfs in bytes.
    pub tmpfs_size: u64,
    /// uid of the workload inside the sandbox.
    pub uid: u32,
    /// gid of the workload inside the sandbox.
    pub gid: u32,
    /// Where the host ids come from.
    pub leases: LeaseConfig,
    /// Resource limits.
    pub limits: Limits,
    /// Bytes of stdout kept; more is dropped and flagged.
    pub stdout_limit: usize,
    /// Bytes of stderr kept; more is dropped and flagged.
    pub stderr_limit: usize,
    /// Bytes fed to stdin (then EOF); `None` gives an empty stdin.
    pub stdin: Option<Vec<u8>>,
    /// Stream output here as it arrives instead of collecting it (see [`LiveOutput`]).
    pub live: Option<LiveOutput>,
    /// Bring `lo` up in the sandbox's empty network namespace (a tier grant).
    pub loopback: bool,
}

impl RunSpec {
    /// A spec with the `hardened` tier's limits, uid/gid 65534, cwd `/`, no mounts, no network.
    pub fn new(rootfs: VerifiedRootfs, argv: Vec<String>, leases: LeaseConfig) -> Self {
        let tier = perry_policies::Tier::Hardened.spec();
        let out = tier.limits.output.as_u64() as usize;
        RunSpec {
            rootfs,
            argv,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            hostname: "sandbox".into(),
            mounts: Vec::new(),
            tmpfs_size: tier.limits.tmpfs.as_u64(),
            uid: 65534,
            gid: 65534,
            leases,
            limits: Limits::from_tier(&tier.limits),
            stdout_limit: out,
            stderr_limit: out,
            stdin: None,
            live: None,
            loopback: false,
        }
    }
}

impl RunSpec {
    /// The verified root filesystem this spec runs.
    pub fn rootfs(&self) -> &VerifiedRootfs {
        &self.rootfs
    }
}

/// What happened to a run that started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Exit status when the command exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed the command, if it was killed.
    pub signal: Option<i32>,
    /// Captured stdout (at most `stdout_limit` bytes; empty when it was streamed to `live`).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most `stderr_limit` bytes; empty when it was streamed to `live`).
    pub stderr: Vec<u8>,
    /// stdout produced more than `stdout_limit` bytes.
    pub stdout_truncated: bool,
    /// stderr produced more than `stderr_limit` bytes.
    pub stderr_truncated: bool,
    /// The wall-clock limit passed and the tree was killed.
    pub timed_out: bool,
    /// The memory cgroup OOM-killed a process of the run.
    pub oom_killed: bool,
    /// Largest resident set of any process of the run, in bytes (`wait4`).
    pub max_rss: u64,
    /// Peak memory of the run's cgroup in bytes, when the kernel reports it.
    pub memory_peak: Option<u64>,
    /// User + system CPU time of the run's reaped processes.
    pub cpu_time: Duration,
    /// From `clone` to the end of the run.
    pub wall_time: Duration,
    /// System calls the seccomp filter refused, by syscall and errno, with counts (only when
    /// the final step has a seccomp supervisor, e.g. [`ProfileStep`]; empty otherwise).
    pub denied_syscalls: Vec<DeniedSyscall>,
}

/// One kind of refused system call and how often the run made it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeniedSyscall {
    /// The x86_64 syscall name (`"nr:<n>"` when the table does not know it).
    pub name: String,
    /// The syscall number.
    pub number: i32,
    /// The errno the call failed with.
    pub errno: u32,
    /// How many times.
    pub count: u64,
}

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

fn sys(op: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Sys { op, source }
}

fn last(op: &'static str) -> RunError {
    RunError::Sys {
        op,
        source: io::Error::last_os_error(),
    }
}

/// A close-on-exec pipe whose ends are both >= 3 (fds 0–2 may be closed in a daemon, and the
/// child `dup2`s onto them).
fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above2(r)?, above2(w)?))
}

fn above2(fd: OwnedFd) -> Result<OwnedFd, RunError> {
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

fn set_nonblocking(fd: RawFd) -> Result<(), RunError> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(last("O_NONBLOCK"));
        }
    }
    Ok(())
}

/// The cloned init: killed and reaped on drop unless already reaped.
struct Child {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    reaped: bool,
}

impl Child {
    fn kill(&self) {
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

    fn wait(&mut self) -> Result<(i32, libc::rusage), RunError> {
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

/// Bounded capture of one output pipe.
struct Capture {
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
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

/// Run `spec` in a fresh sandbox, applying `final_step` right before `execve`.
///
/// Blocks the calling thread until the command and every process it started are gone (call it
/// from `spawn_blocking` in async code). The calling thread must not exit during the run: the
/// sandbox is bound to it with `PR_SET_PDEATHSIG`.
///
/// Returns `Err` when the command did not start (setup or `execve` failed — nothing ran) or when
/// supervision itself failed; otherwise an [`Outcome`], whatever the command's own status.
pub fn run(spec: &RunSpec, final_step: &dyn FinalStep) -> Result<Outcome, RunError> {
    let mut plan = Plan::build(spec, final_step.keep_fds())?;
    let lease = spec.leases.acquire()?;
    let mut cgroups = RunCgroups::create(CgLimits {
        memory: spec.limits.memory,
        pids: spec.limits.pids,
        cpus: spec.limits.cpus,
    })?;
    let program = final_step.seccomp_supervision();
    let handoff = match program {
        Some(_) => Some(Handoff::new()?),
        None => None,
    };
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    plan.set_fds(ChildFds {
        sync_r: sync_r.as_raw_fd(),
        sync_w: sync_w.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        stdin_r: stdin_r.as_raw_fd(),
        stdout_w: stdout_w.as_raw_fd(),
        stderr_w: stderr_w.as_raw_fd(),
        seccomp_sock: handoff.as_ref().map_or(-1, |h| h.sock_child.as_raw_fd()),
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
    let entered = match &prepared {
        Some(ns) => Some(netns::Entered::enter(ns).map_err(sys("setns (prepared netns)"))?),
        None => {
            flags |= libc::CLONE_NEWNET;
            None
        }
    };
    let leaf = cgroups.unified_leaf_fd()?;
    let started = Instant::now();
    let (mut child, born_in_unified) = clone_init(flags, leaf.as_ref(), &plan, final_step)?;
    drop(leaf);
    // Back to our own network namespace before anything else; the sandbox now holds its own.
    if let Some(e) = entered {
        e.leave().map_err(sys("setns (back from prepared netns)"))?;
    }
    drop(prepared);
    drop((sync_r, err_w, status_w, stdin_r, stdout_w, stderr_w));
    let handoff = handoff.map(|h| Supervisor {
        sock: Some(h.sock_parent),
        listener: None,
        program: program.expect("handoff exists only with a program"),
        denied: std::collections::BTreeMap::new(),
        error: None,
    });
    if child.pidfd.is_none() {
        // SAFETY: pidfd_open on our unreaped child.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.pid, 0) };
        if pidfd < 0 {
            return Err(last("pidfd_open"));
        }
        // SAFETY: a fresh fd.
        child.pidfd = Some(unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) });
    }

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

    let mut seccomp = handoff;
    let supervised = supervise(
        spec,
        &mut child,
        err_r,
        stdin_w,
        stdout_r,
        stderr_r,
        &cgroups,
        seccomp.as_mut(),
    )?;
    let (status, ru) = child.wait()?;
    drop(sync_w);
    let wall_time = started.elapsed();

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
    // The workload's own status, as init reported it; absent when init itself was killed.
    let mut sb = [0u8; 4];
    // SAFETY: read into a stack buffer; init has exited so this cannot block.
    let n = unsafe { libc::read(status_r.as_raw_fd(), sb.as_mut_ptr().cast(), 4) };
    let wstatus = if n == 4 {
        i32::from_ne_bytes(sb)
    } else {
        status
    };
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
    cgroups.remove()?;
    drop(lease);
    Ok(outcome)
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
            let child = Child {
                pid: pid as libc::pid_t,
                pidfd: Some(pidfd),
                reaped: false,
            };
            return Ok((child, true));
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
    let child = Child {
        pid: pid as libc::pid_t,
        pidfd: None,
        reaped: false,
    };
    Ok((child, false))
}

struct Supervised {
    stdout: Capture,
    stderr: Capture,
    timed_out: bool,
    error: Option<(Step, i32, u32)>,
}

/// Pump stdin/stdout/stderr and the error pipe until init has exited and every pipe is closed,
/// killing the tree at the deadline.
#[allow(clippy::too_many_arguments)]
fn supervise(
    spec: &RunSpec,
    child: &mut Child,
    err_r: OwnedFd,
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
