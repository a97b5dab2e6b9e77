//! What a run is asked to do ([`RunSpec`] and its parts) and what came of it ([`Outcome`]).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use perry_policies::TierLimits;

use super::LeaseConfig;
use crate::pull::VerifiedRootfs;

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
    /// was opened (device and inode); if not, setup fails at [`Step::BindSourceChanged`](super::Step::BindSourceChanged) and
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

/// Everything needed to run one command in a sandbox. Plain data; see [`run`](super::run()).
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The verified, unpacked root filesystem (read-only; see the module doc for its needs).
    /// Private: only [`RunSpec::new`] sets it, from a [`VerifiedRootfs`] the puller minted.
    rootfs: VerifiedRootfs,
    /// The command; `argv[0]` is looked up in `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// The whole environment (nothing is inherited); `PATH` defaults to [`DEFAULT_PATH`](super::DEFAULT_PATH).
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
    /// the final step has a seccomp supervisor, e.g. [`ProfileStep`](super::ProfileStep); empty otherwise).
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
