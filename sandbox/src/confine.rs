//! Applying a [`perry_profiles::Profile`] to the current process.
//!
//! This is the last thing a sandboxed child does before `execve`: after it returns, the process
//! can no longer gain privileges, write outside its granted paths, or make a refused system call.
//! The order matters and is fixed (as in Firecracker's jailer):
//!
//! 1. **rlimits** — lowered while we still may (raising a hard limit later is impossible anyway);
//! 2. **securebits** — set and locked while we still hold `CAP_SETPCAP`, so uid 0 means nothing;
//! 3. **capabilities** — bounding set first (needs `CAP_SETPCAP`), then ambient, inheritable,
//!    effective and permitted;
//! 4. **no_new_privs** — setuid binaries and file capabilities can no longer raise privilege;
//!    Landlock and seccomp both require it for an unprivileged process;
//! 5. **Landlock** — needs the `landlock_*` syscalls, so before seccomp;
//! 6. **seccomp** — last, because it may forbid the calls the earlier steps use. The allowlist
//!    goes on first and the EPERM filter second (between two errno results the newer filter wins).
//!
//! # Before calling [`apply`]
//!
//! * Call it in the **single-threaded** child (after `fork`/`clone`, before `execve`): seccomp,
//!   capabilities and securebits are per-thread, and a second thread would stay unconfined.
//! * Namespaces, mounts, `pivot_root`, the cgroup and the uid/gid switch come first (they need the
//!   privileges this drops). For non-root tiers, switch uid/gid before `apply`: with securebits
//!   locked the switch no longer clears capabilities, and `apply` drops them itself.
//! * Build the [`Profile`](perry_profiles::Profile) in the parent: its BPF is precompiled and
//!   shared, so `apply` allocates little (Landlock opens one fd per path rule).
//!
//! Each step is a small function returning a typed [`ConfineError`] naming the step; any error
//! means the caller must not `execve`.

use std::io;
use std::path::PathBuf;

use landlock::{
    Access, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use perry_profiles::{CapSets, LandlockRules, PathAccess, Profile, Resource, Rlimit};

/// The Landlock ABI this code asks for: V6 (filesystem incl. ioctl on devices, TCP bind/connect,
/// abstract-socket and signal scoping). V7 only adds audit-log flags.
pub const LANDLOCK_ABI: ABI = ABI::V6;

/// Why confinement failed. Whatever the variant, the process must not go on to `execve`.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// `setrlimit` failed.
    #[error("setting rlimit {resource:?} to {limit}: {source}")]
    Rlimit {
        /// Which limit.
        resource: Resource,
        /// The value.
        limit: u64,
        /// The OS error.
        source: io::Error,
    },
    /// `PR_SET_SECUREBITS` failed (usually: no `CAP_SETPCAP`).
    #[error("setting securebits {bits:#x}: {source}")]
    Securebits {
        /// The bits requested.
        bits: u32,
        /// The OS error.
        source: io::Error,
    },
    /// A capability operation failed.
    #[error("capabilities ({step}): {message}")]
    Capabilities {
        /// Which set or operation.
        step: &'static str,
        /// What the caps crate said.
        message: String,
    },
    /// `PR_SET_NO_NEW_PRIVS` failed or did not stick.
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(io::Error),
    /// Building or enforcing the Landlock ruleset failed.
    #[error("landlock: {0}")]
    Landlock(String),
    /// The tier requires Landlock, and the kernel did not enforce all of it.
    #[error("landlock is required by this tier but the kernel enforced it {0:?}")]
    LandlockRequired(LandlockOutcome),
    /// Installing a seccomp filter failed.
    #[error("installing the seccomp {which} filter: {message}")]
    Seccomp {
        /// `allowlist` or `eperm`.
        which: &'static str,
        /// seccompiler's error.
        message: String,
    },
}

/// How much of the Landlock ruleset the kernel enforced (recorded for the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockOutcome {
    /// The tier does not use Landlock.
    NotUsed,
    /// Every requested restriction is enforced.
    FullyEnforced,
    /// Some restrictions were not supported by this kernel.
    PartiallyEnforced,
    /// Landlock is unavailable.
    NotEnforced,
}

/// What [`apply`] did, for the run's record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Landlock enforcement level.
    pub landlock: LandlockOutcome,
    /// Landlock path rules skipped because the path does not exist in this root.
    pub skipped_paths: Vec<PathBuf>,
}

/// Confines the calling thread with `profile`. See the module docs for what must happen first.
pub fn apply(profile: &Profile) -> Result<Applied, ConfineError> {
    set_rlimits(&profile.rlimits)?;
    set_securebits(profile.securebits)?;
    set_capabilities(&profile.caps)?;
    set_no_new_privs()?;
    let applied = match &profile.landlock {
        Some(rules) => restrict_landlock(rules)?,
        None => Applied {
            landlock: LandlockOutcome::NotUsed,
            skipped_paths: vec![],
        },
    };
    install_seccomp(profile)?;
    Ok(applied)
}

/// Sets every rlimit with soft = hard, so the workload may lower but never raise it. A profile's
/// limit is a ceiling: when the process already has a lower hard limit, that one is kept (raising
/// it would need `CAP_SYS_RESOURCE` and would loosen what the caller set up).
pub fn set_rlimits(limits: &[Rlimit]) -> Result<(), ConfineError> {
    for l in limits {
        let resource = match l.resource {
            Resource::Nofile => libc::RLIMIT_NOFILE,
            Resource::Nproc => libc::RLIMIT_NPROC,
            Resource::Core => libc::RLIMIT_CORE,
        };
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `current` is a valid, writable rlimit that outlives the call.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            return Err(ConfineError::Rlimit {
                resource: l.resource,
                limit: l.limit,
                source: io::Error::last_os_error(),
            });
        }
        let limit = l.limit.min(current.rlim_max);
        let value = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: `value` is a valid, initialised rlimit that outlives the call; setrlimit only
        // reads it.
        let rc = unsafe { libc::setrlimit(resource, &value) };
        if rc != 0 {
            return Err(ConfineError::Rlimit {
                resource: l.resource,
                limit: l.limit,
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Sets (and, through the `_LOCKED` bits, locks) the securebits. Done while `CAP_SETPCAP` is
/// still held; skipped when the tier asks for none.
pub fn set_securebits(bits: u32) -> Result<(), ConfineError> {
    if bits == 0 {
        return Ok(());
    }
    // SAFETY: PR_SET_SECUREBITS takes an integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, libc::c_ulong::from(bits), 0, 0, 0) };
    if rc != 0 {
        return Err(ConfineError::Securebits {
            bits,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Makes the five capability sets exactly what the profile says. The bounding set goes first
/// (dropping from it needs `CAP_SETPCAP`, which the later steps may remove).
pub fn set_capabilities(want: &CapSets) -> Result<(), ConfineError> {
    use caps::CapSet;
    let err = |step: &'static str| {
        move |e: caps::errors::CapsError| ConfineError::Capabilities {
            step,
            message: e.to_string(),
        }
    };
    let set = |v: &[caps::Capability]| v.iter().copied().collect::<caps::CapsHashSet>();
    for cap in caps::all() {
        if !want.bounding.contains(&cap)
            && caps::has_cap(None, CapSet::Bounding, cap).map_err(err("bounding read"))?
        {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("ambient"))?;
    caps::set(None, CapSet::Inheritable, &set(&want.inheritable)).map_err(err("inheritable"))?;
    caps::set(None, CapSet::Effective, &set(&want.effective)).map_err(err("effective"))?;
    caps::set(None, CapSet::Permitted, &set(&want.permitted)).map_err(err("permitted"))?;
    for cap in &want.ambient {
        caps::raise(None, CapSet::Ambient, *cap).map_err(err("ambient raise"))?;
    }
    Ok(())
}

/// Sets `no_new_privs` and checks it stuck: from here on `execve` can never grant privileges.
pub fn set_no_new_privs() -> Result<(), ConfineError> {
    // SAFETY: integer-only prctl; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(ConfineError::NoNewPrivs(io::Error::last_os_error()));
    }
    // SAFETY: integer-only prctl; no memory is passed.
    let now = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    if now != 1 {
        return Err(ConfineError::NoNewPrivs(io::Error::other(
            "PR_GET_NO_NEW_PRIVS does not report 1",
        )));
    }
    Ok(())
}

/// Restricts the process with Landlock: read-only everywhere except the writable rules, TCP
/// only to granted ports, abstract UNIX sockets and signals scoped to the sandbox. A rule whose
/// path does not exist is skipped (that only removes access). Fails when `rules.required` and the
/// kernel did not enforce everything.
pub fn restrict_landlock(rules: &LandlockRules) -> Result<Applied, ConfineError> {
    let ll = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
    let abi = LANDLOCK_ABI;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(ll)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(ll)?;
    if rules.scope_ipc {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(ll)?;
    }
    let mut created = ruleset.create().map_err(ll)?;
    let mut skipped = Vec::new();
    for r in &rules.paths {
        let access = match r.access {
            PathAccess::ReadExecute => AccessFs::from_read(abi),
            PathAccess::ReadWrite => AccessFs::from_all(abi),
            PathAccess::WriteFile => AccessFs::WriteFile | AccessFs::ReadFile,
        };
        match PathFd::new(&r.path) {
            Ok(fd) => {
                created = created.add_rule(PathBeneath::new(fd, access)).map_err(ll)?;
            }
            Err(_) if !r.path.exists() => skipped.push(r.path.clone()),
            Err(e) => {
                return Err(ConfineError::Landlock(format!(
                    "opening {}: {e}",
                    r.path.display()
                )))
            }
        }
    }
    for &port in &rules.tcp_connect {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(ll)?;
    }
    for &port in &rules.tcp_bind {
        created = created
            .add_rule(NetPort::new(port, AccessNet::BindTcp))
            .map_err(ll)?;
    }
    let status = created.restrict_self().map_err(ll)?;
    let landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockOutcome::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockOutcome::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockOutcome::NotEnforced,
    };
    if rules.required && landlock != LandlockOutcome::FullyEnforced {
        return Err(ConfineError::LandlockRequired(landlock));
    }
    Ok(Applied {
        landlock,
        skipped_paths: skipped,
    })
}

/// Installs the precompiled allowlist, then the EPERM filter, on the calling thread.
pub fn install_seccomp(profile: &Profile) -> Result<(), ConfineError> {
    let p = &profile.seccomp;
    seccompiler::apply_filter(&p.allowlist).map_err(|e| ConfineError::Seccomp {
        which: "allowlist",
        message: e.to_string(),
    })?;
    seccompiler::apply_filter(&p.eperm).map_err(|e| ConfineError::Seccomp {
        which: "eperm",
        message: e.to_string(),
    })
}
