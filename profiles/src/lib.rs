//! perry-profiles: what a policy tier means to the kernel.
//!
//! A tier name ("hardened") is a promise to users; this crate is where the promise becomes
//! enforceable data: seccomp programs precompiled to BPF, exact capability sets and securebits,
//! Landlock rules, rlimits and cgroup values, the network mode and the root filesystem flags.
//! It never touches the running process (it is `#![forbid(unsafe_code)]`); the native runner's
//! `perry_runtime::native::ProfileStep` applies a [`Profile`], and `perry-sandbox profiles export` hands the same seccomp rules to
//! podman or docker as OCI JSON.
//!
//! Two properties are kept by construction and checked by tests: a stricter tier never allows
//! what a looser one refuses (syscalls, capabilities, limits), and configuration overrides only
//! tighten. Everything fails closed: an unknown syscall name, a grant a tier cannot take, or a
//! program too large for the kernel is an error, never a silently weaker profile.
//!
//! ```
//! use perry_policies::Tier;
//! use perry_profiles::{Grants, Profile, Verdict};
//!
//! let p = Profile::for_tier(Tier::Hardened, None, &Grants::default()).unwrap();
//! assert!(p.caps.is_empty());
//! assert!(p.no_new_privs);
//! // mount(2) is refused with EPERM; clone3 with ENOSYS so glibc falls back to clone.
//! assert_eq!(p.seccomp.evaluate_name("mount", &[0; 6]), Some(Verdict::Errno(1)));
//! assert_eq!(p.seccomp.evaluate_name("clone3", &[0; 6]), Some(Verdict::Errno(38)));
//! // Compiled at build time (build.rs), shared by every later run of the tier.
//! assert!(p.seccomp.is_built_in());
//! let again = Profile::for_tier(Tier::Hardened, None, &Grants::default()).unwrap();
//! assert!(std::sync::Arc::ptr_eq(&p.seccomp, &again.seccomp));
//! ```
#![forbid(unsafe_code)]

mod bpf;
pub mod caps;
mod error;
pub mod explain;
pub mod landlock;
pub mod limits;
pub mod notify;
#[cfg(any(test, feature = "oracle"))]
#[doc(hidden)]
pub mod oracle;
pub mod seccomp;
pub mod syscalls;

use std::path::PathBuf;
use std::sync::Arc;

use perry_policies::{NetworkPolicy, Tier, TierOverride, TierSpec};
use serde::{Deserialize, Serialize};

pub use crate::caps::CapSets;
pub use crate::error::ProfileError;
pub use crate::landlock::{LandlockRules, PathAccess, PathRule};
pub use crate::limits::{CgroupLimits, Resource, Rlimit};
pub use crate::seccomp::{Access, SeccompKey, SeccompProgram, SocketPolicy, SyscallRules, Verdict};

/// Network access granted to one run (a capability's `network` grant). Only `default` and
/// `hardened` take one; TCP only, and Landlock limits it to these ports where it applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkGrant {
    /// TCP ports the workload may connect to.
    pub tcp_connect: Vec<u16>,
    /// TCP ports the workload may listen on.
    pub tcp_bind: Vec<u16>,
}

/// What one run is granted beyond its tier: the runtime builds this from a capability's mounts
/// and grants. Paths are as seen inside the sandbox (mount targets).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Paths the workload may write (mounts with `read_only = false`), besides /tmp.
    pub writable: Vec<PathBuf>,
    /// Extra paths the workload may read (read-only mounts outside the image).
    pub readable: Vec<PathBuf>,
    /// Network access, if any.
    pub network: Option<NetworkGrant>,
}

impl Grants {
    /// Grants for a capability's mount list: writable targets for `read_only = false`, readable
    /// targets otherwise.
    pub fn from_mounts(mounts: &[perry_policies::MountSpec]) -> Self {
        let mut g = Grants::default();
        for m in mounts {
            let target = PathBuf::from(&m.target);
            if m.read_only {
                g.readable.push(target);
            } else {
                g.writable.push(target);
            }
        }
        g
    }
}

/// How the sandbox's network namespace is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// The host's (or the backend's default) network.
    Host,
    /// A fresh network namespace with loopback only; seccomp allows AF_UNIX sockets only.
    None,
    /// A fresh network namespace, TCP allowed by seccomp for a granted capability and limited to
    /// the granted ports by Landlock; the runtime decides how to connect it.
    Granted,
}

/// Everything a sandbox needs to confine a run of one tier.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    /// The tier.
    pub tier: Tier,
    /// The tier's table entry with configuration overrides applied.
    pub spec: TierSpec,
    /// Seccomp programs, shared with every other profile built from the same inputs.
    #[serde(skip)]
    pub seccomp: Arc<SeccompProgram>,
    /// Capability sets.
    pub caps: CapSets,
    /// Securebits to set (and lock) before dropping capabilities.
    pub securebits: u32,
    /// `PR_SET_NO_NEW_PRIVS`: always true; setuid binaries and file caps cannot raise privilege.
    pub no_new_privs: bool,
    /// Landlock rules, for tiers that use Landlock.
    pub landlock: Option<LandlockRules>,
    /// rlimits.
    pub rlimits: Vec<Rlimit>,
    /// cgroup limits.
    pub cgroup: CgroupLimits,
    /// Network namespace mode.
    pub network: NetworkMode,
    /// Mount the root filesystem read-only.
    pub read_only_root: bool,
    /// Size of the tmpfs at /tmp, in bytes.
    pub tmpfs_bytes: u64,
    /// The workload must not run as uid 0.
    pub non_root: bool,
}

impl Profile {
    /// The profile for `tier` with the site's override (`[tiers.<tier>]`) and this run's grants.
    /// The seccomp part is built once per distinct (tier, sockets, deny list) and reused: without
    /// a site `deny_syscalls` it is the programs compiled at build time, with one it is compiled
    /// on first use ([`seccomp::compiled`]).
    pub fn for_tier(
        tier: Tier,
        overrides: Option<&TierOverride>,
        grants: &Grants,
    ) -> Result<Profile, ProfileError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(ProfileError::UnsupportedArch(std::env::consts::ARCH));
        }
        let spec = tier.effective_spec(overrides);
        for p in grants.writable.iter().chain(&grants.readable) {
            if !p.is_absolute() {
                return Err(ProfileError::RelativePath(p.clone()));
            }
        }
        let network_granted = grants.network.is_some();
        if network_granted
            && !matches!(
                spec.network,
                NetworkPolicy::Allowed | NetworkPolicy::NoneUnlessGranted
            )
        {
            return Err(ProfileError::GrantRefused {
                tier,
                what: format!("network (its network policy is {:?})", spec.network),
            });
        }
        let (sockets, network) = match spec.network {
            NetworkPolicy::Allowed => (SocketPolicy::AnyFamily, NetworkMode::Host),
            NetworkPolicy::NoneUnlessGranted if network_granted => {
                (SocketPolicy::UnixAndTcp, NetworkMode::Granted)
            }
            _ => (SocketPolicy::UnixOnly, NetworkMode::None),
        };
        let key = SeccompKey {
            tier,
            sockets,
            deny: overrides
                .map(|o| o.deny_syscalls.iter().cloned().collect())
                .unwrap_or_default(),
        };
        let seccomp = seccomp::compiled(&key)?;
        let landlock = spec.landlock.then(|| {
            let net = grants.network.clone().unwrap_or_default();
            LandlockRules::read_only_except(
                &grants.writable,
                &grants.readable,
                &net.tcp_connect,
                &net.tcp_bind,
                spec.require_landlock,
            )
        });
        Ok(Profile {
            tier,
            seccomp,
            caps: CapSets::for_tier(tier),
            securebits: caps::securebits_for(tier),
            no_new_privs: true,
            landlock,
            rlimits: limits::rlimits(&spec.limits),
            cgroup: CgroupLimits::from_limits(&spec.limits),
            network,
            read_only_root: spec.read_only_root,
            tmpfs_bytes: spec.limits.tmpfs.as_u64(),
            non_root: spec.non_root,
            spec,
        })
    }

    /// The tier's seccomp profile as OCI runtime-spec / docker JSON.
    pub fn oci_seccomp_json(&self) -> Result<serde_json::Value, ProfileError> {
        seccomp::oci_json(self.seccomp.rules())
    }
}

/// The committed export for `tier` (no override, no grants): what `profiles export --format oci`
/// prints, pretty JSON with a trailing newline.
pub fn export_oci(tier: Tier) -> Result<String, ProfileError> {
    let p = Profile::for_tier(tier, None, &Grants::default())?;
    let mut s = serde_json::to_string_pretty(&p.oci_seccomp_json()?)
        .map_err(|e| ProfileError::NotExportable(e.to_string()))?;
    s.push('\n');
    Ok(s)
}
