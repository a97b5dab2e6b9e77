//! A tier's [`Profile`] as the runner's [`FinalStep`], with a seccomp supervisor that reports
//! every denied system call.
//!
//! This is the one implementation of a tier's confinement: every sandboxed command runs under it
//! (the four-tier attack matrix in `tests/confine.rs` attacks it through `native::run`). The
//! runner's child is a raw `clone` of a possibly multi-threaded parent, where any allocation may
//! deadlock on a malloc lock held by a thread that does not exist in the child, so the work is
//! split in two:
//! * **[`ProfileStep::new`], in the parent**, turns the profile into plain numbers and C strings:
//!   capability bitmasks, rlimit pairs, the Landlock handled-access masks and one
//!   `(path, access)` pair per rule (computed with the `landlock` crate for the kernel's ABI),
//!   and takes the tier's precompiled notification program (below).
//! * **[`FinalStep::apply`], in the child**, issues raw syscalls only, in this fixed order (as in
//!   Firecracker's jailer): rlimits (lowered while we still may); securebits (set and locked
//!   while `CAP_SETPCAP` is held, so uid 0 means nothing); capabilities (bounding set first,
//!   then ambient, then the capset sets); no_new_privs (setuid binaries and file capabilities
//!   can no longer raise privilege); Landlock (needs the `landlock_*` syscalls, so before
//!   seccomp); seccomp last, because it may forbid the calls the earlier steps use.
//!   The Landlock ruleset is created and its path rules are added *in the child after
//!   `pivot_root`*, because Landlock binds rules to inodes: a rule on the host's `<rootfs>/tmp`
//!   would not cover the tmpfs mounted over it.
//!
//! # Which syscalls seccomp denied
//!
//! A tier has two programs (allowlist, default `ENOSYS`; then the `EPERM` argument filter).
//! `perry-profiles` merges them, once per compiled tier, into one program whose every `ERRNO`
//! return becomes `SECCOMP_RET_USER_NOTIF` ([`SeccompProgram::notify`]; an `ALLOW` of the first
//! part jumps to the second part, so the result is the same as stacking). It is installed with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`; the workload sends the listener to the supervisor over a
//! socket (`SCM_RIGHTS`) and goes on to `execve` (a refused call made before the supervisor has
//! taken it waits in the kernel). From then on each refused call reaches
//! the supervisor, which evaluates the tier's own programs for the call
//! ([`SeccompProgram::evaluate`], the same BPF interpreted in user space), answers with exactly
//! the errno the stacked filters would have returned, and counts it in
//! [`Outcome::denied_syscalls`](super::Outcome::denied_syscalls). Allowed calls never leave the
//! kernel; kill actions (foreign architecture, x32) stay kills.
//!
//! We chose this over `SECCOMP_FILTER_FLAG_LOG` + the kernel log: that log is global, rate
//! limited, needs root to read, and on this kernel only reaches it through the audit subsystem
//! when audit is enabled; attributing lines to one of many concurrent runs would be guesswork.
//! The notifier is per run, exact and lossless, and costs one round trip per *denied* call.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use landlock::{Access, AccessFs, AccessNet, BitFlags, Scope, ABI};
use perry_profiles::{PathAccess, Profile, Resource, SeccompProgram, Verdict};

use super::final_step::{CapData, CapHeader, FinalStep, FinalStepError, StepChannel, CAP_V3};

/// Why a profile cannot be turned into a final step. Nothing runs.
#[derive(Debug, thiserror::Error)]
pub enum ProfileStepError {
    /// The tier requires Landlock and this kernel's Landlock ABI is too old or absent.
    #[error("tier requires Landlock ABI {wanted}, the kernel offers {kernel}")]
    LandlockRequired {
        /// ABI version asked for.
        wanted: i32,
        /// ABI version the kernel reports (0: none).
        kernel: i32,
    },
    /// A Landlock path contains a NUL byte.
    #[error("landlock path {0:?} contains a NUL byte")]
    Path(std::path::PathBuf),
    /// The tier's seccomp program refuses a call the workload makes between installing it and
    /// `execve`, to hand its listener to the supervisor (e.g. `deny_syscalls = ["sendmsg"]`).
    #[error(
        "the tier's seccomp profile denies {0}, which the sandbox needs to hand its seccomp \
         listener to the supervisor before execve; remove it from deny_syscalls"
    )]
    HandoffDenied(&'static str),
}

/// The Landlock ABI asked for: V6 (filesystem incl. ioctl on devices, TCP bind/connect,
/// abstract-socket and signal scoping). V7 only adds audit-log flags.
const WANTED_ABI: i32 = 6;

/// How much of a tier's Landlock ruleset this kernel enforces (for the run's record), decided
/// by [`ProfileStep::new`] from the kernel's ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockOutcome {
    /// The tier does not use Landlock.
    NotUsed,
    /// Every requested restriction is enforced.
    FullyEnforced,
    /// Some restrictions are not supported by this kernel (an ABI older than the one asked for).
    PartiallyEnforced,
    /// Landlock is unavailable; the tier does not require it, so the run goes on without.
    NotEnforced,
}

/// `struct landlock_ruleset_attr` (ABI 6 layout; the size passed tells the kernel how much).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the UAPI header).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// `struct landlock_net_port_attr`.
#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

const LANDLOCK_RULE_PATH_BENEATH: libc::c_long = 1;
const LANDLOCK_RULE_NET_PORT: libc::c_long = 2;
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;

/// Landlock work prepared for the child.
#[derive(Debug)]
struct LandlockPlan {
    attr: RulesetAttr,
    attr_size: usize,
    /// `(path inside the sandbox, access for a directory, access for a non-directory)`.
    paths: Vec<(CString, u64, u64)>,
    /// `(access, port)`.
    net: Vec<(u64, u64)>,
}

/// A [`Profile`] prepared for the native runner: see the module docs.
#[derive(Debug)]
pub struct ProfileStep {
    rlimits: Vec<(libc::c_int, u64)>,
    securebits: libc::c_ulong,
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
    landlock: Option<LandlockPlan>,
    landlock_outcome: LandlockOutcome,
    /// The tier's programs; the child installs `program.notify`.
    program: Arc<SeccompProgram>,
}

fn mask(caps: &[caps::Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1u64 << c.index()))
}

/// The kernel's Landlock ABI version (0 when unavailable).
pub fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        0
    } else {
        v as i32
    }
}

fn abi_enum(v: i32) -> ABI {
    ABI::from(v.min(WANTED_ABI))
}

impl ProfileStep {
    /// Prepares `profile` for the runner. Fails (nothing may run) when the tier requires
    /// Landlock the kernel cannot enforce, or its seccomp program refuses a call the handoff
    /// needs.
    pub fn new(profile: &Profile) -> Result<Self, ProfileStepError> {
        let rlimits = profile
            .rlimits
            .iter()
            .map(|r| {
                let res = match r.resource {
                    Resource::Nofile => libc::RLIMIT_NOFILE,
                    Resource::Nproc => libc::RLIMIT_NPROC,
                    Resource::Core => libc::RLIMIT_CORE,
                };
                (res as libc::c_int, r.limit)
            })
            .collect();
        let mut landlock_outcome = LandlockOutcome::NotUsed;
        let landlock = match &profile.landlock {
            None => None,
            Some(rules) => {
                let kernel = landlock_abi();
                landlock_outcome = match kernel {
                    k if k <= 0 => LandlockOutcome::NotEnforced,
                    k if k < WANTED_ABI => LandlockOutcome::PartiallyEnforced,
                    _ => LandlockOutcome::FullyEnforced,
                };
                if rules.required && kernel < WANTED_ABI {
                    return Err(ProfileStepError::LandlockRequired {
                        wanted: WANTED_ABI,
                        kernel,
                    });
                }
                if kernel <= 0 {
                    None
                } else {
                    let abi = abi_enum(kernel);
                    let all = AccessFs::from_all(abi).bits();
                    let file = AccessFs::from_file(abi).bits();
                    let mut paths = Vec::with_capacity(rules.paths.len());
                    for r in &rules.paths {
                        let access = match r.access {
                            PathAccess::ReadExecute => AccessFs::from_read(abi).bits(),
                            PathAccess::ReadWrite => all,
                            PathAccess::WriteFile => {
                                (AccessFs::WriteFile | AccessFs::ReadFile).bits()
                            }
                        } & all;
                        let c = CString::new(r.path.as_os_str().as_bytes())
                            .map_err(|_| ProfileStepError::Path(r.path.clone()))?;
                        paths.push((c, access, access & file));
                    }
                    let net_all = AccessNet::from_all(abi).bits();
                    let mut net = Vec::new();
                    if net_all != 0 {
                        for &p in &rules.tcp_connect {
                            net.push((BitFlags::from(AccessNet::ConnectTcp).bits(), u64::from(p)));
                        }
                        for &p in &rules.tcp_bind {
                            net.push((BitFlags::from(AccessNet::BindTcp).bits(), u64::from(p)));
                        }
                    }
                    let scoped = if rules.scope_ipc {
                        Scope::from_all(abi).bits()
                    } else {
                        0
                    };
                    let attr = RulesetAttr {
                        handled_access_fs: all,
                        handled_access_net: net_all,
                        scoped,
                    };
                    let attr_size = if kernel >= 6 {
                        24
                    } else if kernel >= 4 {
                        16
                    } else {
                        8
                    };
                    Some(LandlockPlan {
                        attr,
                        attr_size,
                        paths,
                        net,
                    })
                }
            }
        };
        // Between installing the filter and execve the workload calls these (the handoff, then
        // closing its copies); a filter refusing one would leave the refusal unanswered.
        for call in ["sendmsg", "close", "execve"] {
            let args = [0, 0, libc::MSG_NOSIGNAL as u64, 0, 0, 0];
            if profile.seccomp.evaluate_name(call, &args) != Some(Verdict::Allow) {
                return Err(ProfileStepError::HandoffDenied(call));
            }
        }
        Ok(ProfileStep {
            rlimits,
            securebits: libc::c_ulong::from(profile.securebits),
            bounding: mask(&profile.caps.bounding),
            effective: mask(&profile.caps.effective),
            permitted: mask(&profile.caps.permitted),
            inheritable: mask(&profile.caps.inheritable),
            ambient: mask(&profile.caps.ambient),
            landlock,
            landlock_outcome,
            program: Arc::clone(&profile.seccomp),
        })
    }

    /// How much of the tier's Landlock ruleset this kernel enforces.
    pub fn landlock(&self) -> LandlockOutcome {
        self.landlock_outcome
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

fn fail(op: &'static str) -> FinalStepError {
    FinalStepError { op, errno: errno() }
}

impl super::final_step::sealed::Sealed for ProfileStep {}

impl FinalStep for ProfileStep {
    fn apply(&self, channel: &StepChannel) -> Result<(), FinalStepError> {
        self.set_rlimits()?;
        self.set_securebits()?;
        self.set_capabilities()?;
        // SAFETY: integer-only prctl.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail("PR_SET_NO_NEW_PRIVS"));
        }
        if let Some(ll) = &self.landlock {
            restrict_landlock(ll)?;
        }
        self.install_seccomp(channel)
    }

    fn seccomp_supervision(&self) -> Option<&SeccompProgram> {
        Some(&self.program)
    }
}

impl ProfileStep {
    /// Lower each limit (soft = hard); never try to raise a hard limit the runner already set.
    fn set_rlimits(&self) -> Result<(), FinalStepError> {
        for &(res, want) in &self.rlimits {
            let mut old = libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: prlimit64 on ourselves reading into a stack struct.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    res,
                    std::ptr::null::<libc::rlimit64>(),
                    &mut old as *mut libc::rlimit64,
                )
            };
            if r != 0 {
                return Err(fail("prlimit64 get"));
            }
            let v = want.min(old.rlim_max);
            let new = libc::rlimit64 {
                rlim_cur: v,
                rlim_max: v,
            };
            // SAFETY: prlimit64 on ourselves from a stack struct.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    res,
                    &new as *const libc::rlimit64,
                    std::ptr::null_mut::<libc::rlimit64>(),
                )
            };
            if r != 0 {
                return Err(fail("prlimit64 set"));
            }
        }
        Ok(())
    }

    fn set_securebits(&self) -> Result<(), FinalStepError> {
        if self.securebits == 0 {
            return Ok(());
        }
        // SAFETY: integer-only prctl.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, self.securebits, 0, 0, 0) } != 0 {
            return Err(fail("PR_SET_SECUREBITS"));
        }
        Ok(())
    }

    /// Bounding set first (needs CAP_SETPCAP), then ambient, then the three capset sets.
    fn set_capabilities(&self) -> Result<(), FinalStepError> {
        for cap in 0..64u64 {
            if self.bounding & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: integer-only prctl.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                if errno() == libc::EINVAL {
                    break; // past the kernel's last capability
                }
                return Err(fail("PR_CAPBSET_DROP"));
            }
        }
        // SAFETY: integer-only prctl.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        };
        if r != 0 {
            return Err(fail("PR_CAP_AMBIENT_CLEAR_ALL"));
        }
        let mut hdr = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let lo = |m: u64| m as u32;
        let hi = |m: u64| (m >> 32) as u32;
        let data = [
            CapData {
                effective: lo(self.effective),
                permitted: lo(self.permitted),
                inheritable: lo(self.inheritable),
            },
            CapData {
                effective: hi(self.effective),
                permitted: hi(self.permitted),
                inheritable: hi(self.inheritable),
            },
        ];
        // SAFETY: capset version 3 with a header and a two-element data array on the stack.
        if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
            return Err(fail("capset"));
        }
        for cap in 0..64u64 {
            if self.ambient & (1 << cap) != 0 {
                // SAFETY: integer-only prctl.
                let r = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
                if r != 0 {
                    return Err(fail("PR_CAP_AMBIENT_RAISE"));
                }
            }
        }
        Ok(())
    }

    /// Install the tier's notification program with a listener and hand the listener to the
    /// supervisor.
    fn install_seccomp(&self, ch: &StepChannel) -> Result<(), FinalStepError> {
        let notify = &self.program.notify;
        // `seccompiler::sock_filter` is `#[repr(C)]` with the kernel's layout, like libc's.
        let prog = libc::sock_fprog {
            len: notify.len() as u16,
            filter: notify.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        let supervised = ch.sock >= 0;
        let flags = if supervised {
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        } else {
            0
        };
        // SAFETY: seccomp(2) only reads the program, from a struct pointing at the profile's
        // buffer (held by our Arc), which outlives the call.
        let listener = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if listener < 0 {
            return Err(fail("seccomp"));
        }
        if !supervised {
            // Without a supervisor every notification would fail with ENOSYS: refuse instead.
            return Err(FinalStepError {
                op: "seccomp supervisor channel",
                errno: libc::EBADF,
            });
        }
        let listener = listener as i32;
        // Send the listener and close our copies; `new` made sure the filter allows sendmsg and
        // close. The message in flight keeps the listener alive until the supervisor takes it.
        let sent = send_fd(ch.sock, listener);
        // SAFETY: closing fds this process owns; the workload needs neither after the handoff.
        unsafe {
            libc::close(listener);
            libc::close(ch.sock);
        }
        sent
    }
}

/// Send `fd` over the unix socket `sock` (`SCM_RIGHTS`, one data byte). Stack buffers only.
fn send_fd(sock: i32, fd: i32) -> Result<(), FinalStepError> {
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut buf = Cmsg([0; 64]);
    let mut byte = [b'l'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below refers to stack data that
    // outlives sendmsg; CMSG_* compute offsets within `buf`, which is large and aligned enough
    // for one cmsghdr carrying one int.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::copy_nonoverlapping((&fd as *const i32).cast::<u8>(), libc::CMSG_DATA(c), 4);
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)
    };
    if sent != 1 {
        return Err(fail("seccomp listener handoff"));
    }
    Ok(())
}

/// Create the ruleset, add net and path rules (paths opened now, inside the new root), enforce.
fn restrict_landlock(ll: &LandlockPlan) -> Result<(), FinalStepError> {
    // SAFETY: landlock_create_ruleset with a stack attr of at least `attr_size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &ll.attr as *const RulesetAttr,
            ll.attr_size,
            0,
        )
    };
    if fd < 0 {
        return Err(fail("landlock_create_ruleset"));
    }
    let fd = fd as i32;
    let r = add_rules(fd, ll);
    let r = r.and_then(|()| {
        // SAFETY: landlock_restrict_self on the ruleset fd we created.
        if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) } != 0 {
            Err(fail("landlock_restrict_self"))
        } else {
            Ok(())
        }
    });
    // SAFETY: closing the ruleset fd we created.
    unsafe { libc::close(fd) };
    r
}

fn add_rules(fd: i32, ll: &LandlockPlan) -> Result<(), FinalStepError> {
    for &(access, port) in &ll.net {
        let attr = NetPortAttr {
            allowed_access: access,
            port,
        };
        // SAFETY: add a net-port rule from a stack struct.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                fd,
                LANDLOCK_RULE_NET_PORT,
                &attr as *const NetPortAttr,
                0,
            )
        };
        if r != 0 {
            return Err(fail("landlock_add_rule net"));
        }
    }
    for (path, dir_access, file_access) in &ll.paths {
        // SAFETY: open a plan-owned NUL-terminated path as O_PATH.
        let pfd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if pfd < 0 {
            if errno() == libc::ENOENT {
                continue; // a missing path only removes access
            }
            return Err(fail("landlock rule path"));
        }
        // SAFETY: zeroed stat is a valid out-parameter; fstat on the fd just opened.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let is_dir =
            unsafe { libc::fstat(pfd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let attr = PathBeneathAttr {
            allowed_access: if is_dir { *dir_access } else { *file_access },
            parent_fd: pfd,
        };
        // SAFETY: add a path-beneath rule from a stack struct, then close the path fd.
        let r = unsafe {
            let r = libc::syscall(
                libc::SYS_landlock_add_rule,
                fd,
                LANDLOCK_RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0,
            );
            libc::close(pfd);
            r
        };
        if r != 0 {
            return Err(fail("landlock_add_rule path"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use perry_policies::Tier;
    use perry_profiles::Grants;

    #[test]
    fn hardened_has_no_capabilities_and_landlock_paths() {
        let p = Profile::for_tier(Tier::Hardened, None, &Grants::default()).unwrap();
        let s = ProfileStep::new(&p).unwrap();
        assert_eq!(
            (s.bounding, s.effective, s.permitted, s.ambient),
            (0, 0, 0, 0)
        );
        if landlock_abi() >= WANTED_ABI {
            let ll = s.landlock.as_ref().expect("hardened uses Landlock");
            assert!(ll.paths.iter().any(|(p, ..)| p.as_bytes() == b"/tmp"));
            assert_ne!(ll.attr.handled_access_fs, 0);
        }
    }

    #[test]
    fn a_tier_denying_a_handoff_call_is_refused_up_front() {
        for call in ["sendmsg", "close"] {
            let tighter = perry_policies::TierOverride {
                deny_syscalls: vec![call.to_string()],
                ..Default::default()
            };
            let p = Profile::for_tier(Tier::Hardened, Some(&tighter), &Grants::default()).unwrap();
            // Without the check the workload would block in its handoff until the timeout.
            match ProfileStep::new(&p) {
                Err(ProfileStepError::HandoffDenied(c)) => assert_eq!(c, call),
                Err(e) => panic!("{call}: {e}"),
                Ok(_) => panic!("{call}: a profile denying it was accepted"),
            }
        }
        // Denying something else is fine.
        let tighter = perry_policies::TierOverride {
            deny_syscalls: vec!["ptrace".into()],
            ..Default::default()
        };
        let p = Profile::for_tier(Tier::Hardened, Some(&tighter), &Grants::default()).unwrap();
        assert!(ProfileStep::new(&p).is_ok());
    }
}
