//! The last thing that happens in the sandboxed process before `execve`: the tier's confinement.
//!
//! The runner owns namespaces, mounts, identities and limits; the *confinement* (securebits,
//! capability drop, no_new_privs, Landlock, seccomp) belongs to the `confine` module. The runner
//! takes it as a [`FinalStep`] so the two can evolve separately, and ships [`MinimalFinalStep`]
//! (no_new_privs + every capability dropped) as the floor every run gets when no profile is given.
// The floor (`MinimalFinalStep`) is only reachable with `test-support`; without it, unused.
#![cfg_attr(not(feature = "test-support"), allow(dead_code))]

use std::fmt;

/// Why a final step failed: which operation, and the `errno` it returned.
///
/// Plain `Copy` data (no `String`) because it is produced in the child between `clone` and
/// `execve`, where nothing may allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalStepError {
    /// A short static name of the operation that failed (e.g. `"PR_SET_NO_NEW_PRIVS"`).
    pub op: &'static str,
    /// The raw `errno` value.
    pub errno: i32,
}

impl fmt::Display for FinalStepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {}",
            self.op,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

/// The confinement applied in the sandboxed process right before `execve`.
///
/// # Contract (read before implementing)
/// * `apply` runs in the child after the identity switch (uid/gid already set to the sandbox
///   user, supplementary groups cleared), with **every capability of the sandbox's user namespace
///   still in the effective set** so that securebits, bounding-set drops and Landlock/seccomp
///   installation can succeed. It must leave no capability behind.
/// * It runs between `clone` and `execve` of a possibly multi-threaded parent: it **must not
///   allocate, lock, or panic**. Prepare everything (compiled BPF, Landlock ruleset fds, …) in
///   the parent, before [`run`](super::run) is called, and only issue syscalls here.
/// * Any fd it needs in the child must be listed by [`keep_fds`](FinalStep::keep_fds) (every
///   other fd is closed before it runs) and be `O_CLOEXEC` so it does not reach the workload.
/// * seccomp, if installed, must still allow `write` (the runner reports a failed `execve`
///   through a pipe), `execve`, and `exit_group` — and, when supervised, `sendmsg` and `close`
///   for handing the listener over [`StepChannel::sock`].
///
/// Sealed: only this crate implements it ([`ProfileStep`](super::ProfileStep) in every normal
/// build), so no caller can hand the runner a step that confines nothing.
pub trait FinalStep: Sync + sealed::Sealed {
    /// Apply the confinement to the calling (child) process. `channel` is the way to the
    /// supervisor when [`seccomp_supervision`](FinalStep::seccomp_supervision) is `Some`.
    fn apply(&self, channel: &StepChannel) -> Result<(), FinalStepError>;

    /// File descriptors, opened by the parent, that `apply` needs in the child.
    fn keep_fds(&self) -> &[i32] {
        &[]
    }

    /// The tier's seccomp program when `apply` installs a filter whose refusals are
    /// `SECCOMP_RET_USER_NOTIF` with a listener: the runner then collects the listener, answers
    /// each refused call with the errno `SeccompProgram::evaluate` gives, and reports it in
    /// [`Outcome::denied_syscalls`](super::Outcome::denied_syscalls).
    fn seccomp_supervision(&self) -> Option<&perry_profiles::SeccompProgram> {
        None
    }
}

/// The seal on [`FinalStep`]: a public trait in a private module.
pub(crate) mod sealed {
    /// Implemented only inside perry-runtime.
    pub trait Sealed {}
}

impl sealed::Sealed for MinimalFinalStep {}

/// The child's end of the seccomp supervisor handoff (an fd inherited from the runner; `-1`
/// when the final step asked for no supervision).
#[derive(Clone, Copy, Debug)]
pub struct StepChannel {
    /// A `SOCK_SEQPACKET` socket to the supervisor: send the listener here (`SCM_RIGHTS`, one
    /// data byte), then close both. The message in flight keeps the listener alive until the
    /// supervisor takes it, so nothing waits for the supervisor.
    pub sock: i32,
}

impl StepChannel {
    /// No supervisor.
    pub const NONE: StepChannel = StepChannel { sock: -1 };
}

/// The floor: clear securebits-protected root semantics, drop every capability from every set
/// (bounding, ambient, inheritable, permitted, effective) and set no_new_privs.
///
/// Kept inside the runner so a run is never left with capabilities even before the tier profile
/// (`confine`) is wired in. Uses `prctl`/`capset` directly rather than the `caps` crate: the
/// latter's bounding-set and error paths build `HashSet`s and `String`s, which must not happen
/// between `clone` and `execve`.
///
/// Not a public door: outside this crate it is reachable only with the `test-support` feature
/// (this crate's own tests and benches, which compare the floor with the tier profile).
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
pub struct MinimalFinalStep;

/// `SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | …_LOCKED | SECBIT_KEEP_CAPS_LOCKED
/// | SECBIT_NO_CAP_AMBIENT_RAISE | …_LOCKED`: uid 0 never regains capabilities through execve.
const SECUREBITS_LOCKED: libc::c_ulong = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80;

impl FinalStep for MinimalFinalStep {
    fn apply(&self, _channel: &StepChannel) -> Result<(), FinalStepError> {
        // SAFETY: plain prctl/capset syscalls on the calling thread with integer arguments or a
        // pointer to stack data of the layout the kernel expects; nothing is allocated.
        unsafe {
            if libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS_LOCKED, 0, 0, 0) != 0 {
                return Err(err("PR_SET_SECUREBITS"));
            }
            // Drop the whole bounding set; EINVAL marks the end of the kernel's capability list.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    let e = errno();
                    if e == libc::EINVAL {
                        break;
                    }
                    return Err(FinalStepError {
                        op: "PR_CAPBSET_DROP",
                        errno: e,
                    });
                }
            }
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) != 0
            {
                return Err(err("PR_CAP_AMBIENT_CLEAR_ALL"));
            }
            clear_all_caps()?;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(err("PR_SET_NO_NEW_PRIVS"));
            }
        }
        Ok(())
    }
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
pub(crate) struct CapHeader {
    pub version: u32,
    pub pid: i32,
}

/// `struct __user_cap_data_struct` (two of them for version 3).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
pub(crate) const CAP_V3: u32 = 0x2008_0522;

/// Empty the effective, permitted and inheritable sets of the calling thread.
fn clear_all_caps() -> Result<(), FinalStepError> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as capset(2) version 3 requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r != 0 {
        return Err(err("capset"));
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn err(op: &'static str) -> FinalStepError {
    FinalStepError { op, errno: errno() }
}
