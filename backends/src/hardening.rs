//! Tier hardening as container flags: a pure function from a [`Profile`] to [`Hardening`].
//!
//! The backend never decides policy; the engine computes this from the tier and hands it over.

use std::path::{Path, PathBuf};

use perry_policies::Tier;
use perry_profiles::{NetworkMode, Profile, Resource};

use crate::{BackendError, IsolationLevel};

/// The uid:gid non-root tiers run as (`nobody`).
pub const NON_ROOT_USER: &str = "65534:65534";

/// How a container is networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerNetwork {
    /// The networks the spec declares (tier `default`).
    AsDeclared,
    /// Only the spec's project networks, which must be `internal` (no route out).
    InternalOnly,
    /// `--network none`: loopback only.
    None,
}

/// The confinement of one container, as the backend applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct Hardening {
    /// The tier this was computed from.
    pub tier: Tier,
    /// OCI seccomp JSON file (`--security-opt seccomp=<path>`).
    pub seccomp_profile: PathBuf,
    /// Capabilities to add after `--cap-drop ALL` (empty above `default`).
    pub cap_add: Vec<String>,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--read-only`.
    pub read_only_root: bool,
    /// Size of the tmpfs at /tmp when the root is read-only.
    pub tmpfs_bytes: u64,
    /// Network treatment.
    pub network: ContainerNetwork,
    /// `--user` (None: as the image says).
    pub user: Option<String>,
    /// `--memory`, bytes.
    pub memory_bytes: u64,
    /// `--pids-limit`.
    pub pids: u32,
    /// `--cpus`.
    pub cpus: f64,
    /// `--ulimit name=soft:hard`.
    pub ulimits: Vec<(String, u64)>,
    /// The isolation level the tier requires.
    pub isolation: IsolationLevel,
}

impl Hardening {
    /// The flags for `profile`, with its seccomp profile at `seccomp_profile` (see
    /// [`write_seccomp`]). Pure.
    pub fn for_profile(profile: &Profile, seccomp_profile: PathBuf) -> Hardening {
        let tier = profile.tier;
        let network = match tier {
            Tier::Default => ContainerNetwork::AsDeclared,
            Tier::Isolated => ContainerNetwork::InternalOnly,
            Tier::Hardened if profile.network == NetworkMode::Granted => {
                ContainerNetwork::InternalOnly
            }
            Tier::Hardened | Tier::Untrusted => ContainerNetwork::None,
        };
        let cap_add = if tier == Tier::Default {
            profile
                .caps
                .bounding
                .iter()
                .map(|c| c.to_string())
                .collect()
        } else {
            Vec::new()
        };
        let ulimits = profile
            .rlimits
            .iter()
            .filter_map(|r| match r.resource {
                Resource::Nofile => Some(("nofile".to_string(), r.limit)),
                Resource::Core => Some(("core".to_string(), r.limit)),
                // RLIMIT_NPROC counts the host uid's processes across all containers; the pids
                // cgroup (`--pids-limit`) is the real limit.
                Resource::Nproc => None,
            })
            .collect();
        Hardening {
            tier,
            seccomp_profile,
            cap_add,
            no_new_privileges: profile.no_new_privs,
            read_only_root: profile.read_only_root,
            tmpfs_bytes: profile.tmpfs_bytes,
            network,
            user: profile.non_root.then(|| NON_ROOT_USER.to_string()),
            memory_bytes: profile.cgroup.memory_max,
            pids: profile.cgroup.pids_max,
            cpus: profile.spec.limits.cpus,
            ulimits,
            isolation: if tier == Tier::Untrusted {
                IsolationLevel::SandboxedKernel
            } else {
                IsolationLevel::Container
            },
        }
    }

    /// The `create`/`run` flags for this hardening (everything but networks).
    pub fn flags(&self) -> Vec<String> {
        let mut a = vec![
            "--security-opt".to_string(),
            format!("seccomp={}", self.seccomp_profile.display()),
            "--cap-drop".into(),
            "ALL".into(),
        ];
        for c in &self.cap_add {
            a.push("--cap-add".into());
            a.push(c.clone());
        }
        if self.no_new_privileges {
            a.push("--security-opt".into());
            a.push("no-new-privileges".into());
        }
        if self.read_only_root {
            a.push("--read-only".into());
            a.push("--tmpfs".into());
            a.push(format!(
                "/tmp:rw,nosuid,nodev,size={},mode=1777",
                self.tmpfs_bytes
            ));
        }
        if self.network == ContainerNetwork::None {
            a.push("--network".into());
            a.push("none".into());
        }
        if let Some(u) = &self.user {
            a.push("--user".into());
            a.push(u.clone());
        }
        a.push("--memory".into());
        a.push(self.memory_bytes.to_string());
        a.push("--pids-limit".into());
        a.push(self.host_pids_limit().to_string());
        a.push("--cpus".into());
        a.push(format!("{}", self.cpus));
        for (name, v) in &self.ulimits {
            a.push("--ulimit".into());
            a.push(format!("{name}={v}:{v}"));
        }
        if self.isolation == IsolationLevel::SandboxedKernel {
            // gVisor's own kernel counts only the sandbox's tasks: the workload's limit.
            a.push("--ulimit".into());
            a.push(format!("nproc={0}:{0}", self.pids));
        }
        a
    }

    /// The host's pids cgroup limit. On the host kernel it is the workload's limit. Under a
    /// sandboxed kernel it bounds gVisor itself (the workload's limit is its RLIMIT_NPROC):
    /// the host pids are the sandbox's threads, about 50 idle and 9 more per running task
    /// (systrap stubs; measured with runsc 2022-12 on 2 CPUs), so the tier's own 64 killed
    /// the sandbox after a few glibc programs.
    pub fn host_pids_limit(&self) -> u32 {
        match self.isolation {
            IsolationLevel::SandboxedKernel => self
                .pids
                .saturating_mul(SANDBOX_PIDS_PER_TASK)
                .saturating_add(SANDBOX_PIDS_BASE),
            _ => self.pids,
        }
    }
}

/// Host pids a gVisor sandbox may use per workload task (see [`Hardening::host_pids_limit`]).
const SANDBOX_PIDS_PER_TASK: u32 = 16;
/// Host pids a gVisor sandbox may use besides its tasks (its sentry, gofer and Go runtime).
const SANDBOX_PIDS_BASE: u32 = 256;

/// Writes the profile's OCI seccomp JSON to `<state_dir>/seccomp/<tier>-<hash>.json`
/// (temp file + rename) and returns the path.
pub fn write_seccomp(profile: &Profile, state_dir: &Path) -> Result<PathBuf, BackendError> {
    let json = profile
        .oci_seccomp_json()
        .map_err(|e| BackendError::InvalidConfig(format!("seccomp export: {e}")))?;
    let bytes = serde_json::to_vec(&json)
        .map_err(|e| BackendError::InvalidConfig(format!("seccomp export: {e}")))?;
    let dir = state_dir.join("seccomp");
    let io = |what: String| {
        move |source: std::io::Error| BackendError::Io {
            what,
            source: source.into(),
        }
    };
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let name = format!("{}-{:016x}.json", profile.tier.name(), fnv(&bytes));
    let path = dir.join(name);
    if !path.exists() {
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), fnv(&bytes)));
        std::fs::write(&tmp, &bytes).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))?;
    }
    Ok(path)
}

/// The hardening for `profile`, its seccomp profile written under `state_dir`.
pub fn hardening_for(profile: &Profile, state_dir: &Path) -> Result<Hardening, BackendError> {
    Ok(Hardening::for_profile(
        profile,
        write_seccomp(profile, state_dir)?,
    ))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use perry_profiles::Grants;

    fn flags(tier: Tier) -> (Hardening, Vec<String>) {
        let p = Profile::for_tier(tier, None, &Grants::default()).unwrap();
        let h = Hardening::for_profile(&p, PathBuf::from("/state/s.json"));
        let f = h.flags();
        (h, f)
    }

    fn has_pair(f: &[String], a: &str, b: &str) -> bool {
        f.windows(2).any(|w| w[0] == a && w[1] == b)
    }

    #[test]
    fn every_tier_drops_all_caps_sets_seccomp_and_no_new_privileges() {
        for t in Tier::ALL {
            let (_, f) = flags(t);
            assert!(has_pair(&f, "--cap-drop", "ALL"), "{t:?}");
            assert!(
                has_pair(&f, "--security-opt", "seccomp=/state/s.json"),
                "{t:?}"
            );
            assert!(has_pair(&f, "--security-opt", "no-new-privileges"), "{t:?}");
            assert!(f.iter().any(|a| a == "--memory"), "{t:?}");
            assert!(f.iter().any(|a| a == "--pids-limit"), "{t:?}");
            assert!(f.iter().any(|a| a == "--cpus"), "{t:?}");
            assert!(f.iter().any(|a| a.starts_with("nofile=")), "{t:?}");
        }
    }

    #[test]
    fn only_default_adds_capabilities_back() {
        let (h, f) = flags(Tier::Default);
        assert!(!h.cap_add.is_empty());
        assert!(f.iter().any(|a| a == "--cap-add"));
        for t in [Tier::Isolated, Tier::Hardened, Tier::Untrusted] {
            let (h, f) = flags(t);
            assert!(h.cap_add.is_empty(), "{t:?}");
            assert!(!f.iter().any(|a| a == "--cap-add"), "{t:?}");
        }
    }

    #[test]
    fn read_only_with_tmpfs_from_hardened_up() {
        for (t, ro) in [
            (Tier::Default, false),
            (Tier::Isolated, false),
            (Tier::Hardened, true),
            (Tier::Untrusted, true),
        ] {
            let (_, f) = flags(t);
            assert_eq!(f.iter().any(|a| a == "--read-only"), ro, "{t:?}");
            assert_eq!(f.iter().any(|a| a.starts_with("/tmp:")), ro, "{t:?}");
        }
    }

    #[test]
    fn network_and_user_per_tier() {
        let (h, f) = flags(Tier::Default);
        assert_eq!(h.network, ContainerNetwork::AsDeclared);
        assert!(!f.iter().any(|a| a == "--user"));
        let (h, _) = flags(Tier::Isolated);
        assert_eq!(h.network, ContainerNetwork::InternalOnly);
        for t in [Tier::Hardened, Tier::Untrusted] {
            let (h, f) = flags(t);
            assert_eq!(h.network, ContainerNetwork::None, "{t:?}");
            assert!(has_pair(&f, "--network", "none"), "{t:?}");
        }
        for t in [Tier::Isolated, Tier::Hardened, Tier::Untrusted] {
            let (_, f) = flags(t);
            assert!(has_pair(&f, "--user", NON_ROOT_USER), "{t:?}");
        }
        assert_eq!(
            flags(Tier::Untrusted).0.isolation,
            IsolationLevel::SandboxedKernel
        );
        assert_eq!(flags(Tier::Hardened).0.isolation, IsolationLevel::Container);
    }

    #[test]
    fn seccomp_is_written_as_oci_json_under_the_state_dir() {
        let d = tempfile::tempdir().unwrap();
        let p = Profile::for_tier(Tier::Hardened, None, &Grants::default()).unwrap();
        let h = hardening_for(&p, d.path()).unwrap();
        assert!(h.seccomp_profile.starts_with(d.path()));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&h.seccomp_profile).unwrap()).unwrap();
        assert!(v.get("defaultAction").is_some(), "{v}");
        assert_eq!(v, p.oci_seccomp_json().unwrap());
    }

    #[test]
    fn under_a_sandboxed_kernel_the_pids_limit_is_the_guests_and_the_host_bounds_gvisor() {
        for t in [Tier::Default, Tier::Isolated, Tier::Hardened] {
            let (h, f) = flags(t);
            assert!(has_pair(&f, "--pids-limit", &h.pids.to_string()), "{t:?}");
            assert!(!f.iter().any(|a| a.starts_with("nproc=")), "{t:?}: {f:?}");
        }
        let (h, f) = flags(Tier::Untrusted);
        assert_eq!(h.pids, 64);
        assert!(has_pair(&f, "--ulimit", "nproc=64:64"), "{f:?}");
        assert!(has_pair(&f, "--pids-limit", "1280"), "{f:?}");
    }
}
