//! The four policy tiers and the numbers behind them.
//!
//! The tier table in DESIGN.md is a contract with users: a tier name must always mean at least
//! what the table says. This module holds the non-syscall half of that table (root filesystem,
//! network, user, Landlock, resource limits); `perry-profiles` turns it into kernel profiles.
//! Tiers are ordered by strictness (`Default < Isolated < Hardened < Untrusted`) so that "at
//! least hardened" is a comparison, and configuration overrides may only tighten a tier.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration};

/// A policy tier, ordered from least to most strict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Trusted workloads: network allowed, a moby-like syscall allowlist, the runtime default caps.
    Default,
    /// No network (AF_UNIX only), no capabilities, non-root.
    Isolated,
    /// Read-only root, tmpfs /tmp, tight seccomp, Landlock, no network unless granted.
    Hardened,
    /// Read-only root, no network ever, minimal syscalls; refuses to run without full isolation.
    Untrusted,
}

/// How a tier treats networking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicy {
    /// The workload may use the network as it asks.
    Allowed,
    /// A new, empty network namespace; a capability may be granted network explicitly.
    NoneUnlessGranted,
    /// No network namespace access at all; only AF_UNIX sockets may be created.
    UnixOnly,
    /// No network, and no grant can change that.
    Never,
}

/// Resource limits a tier imposes. Every field is an upper bound: overrides may lower it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TierLimits {
    /// Memory limit for the sandbox's cgroup.
    pub memory: ByteSize,
    /// Maximum number of tasks (processes and threads) in the sandbox.
    pub pids: u32,
    /// CPU quota, in cores (1.0 = one full core).
    pub cpus: f64,
    /// The longest a single run may take before the whole process tree is killed.
    pub timeout: HumanDuration,
    /// Size of the writable tmpfs mounted at /tmp.
    pub tmpfs: ByteSize,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
    /// Bytes of stdout and of stderr kept per run; the rest is dropped and flagged.
    pub output: ByteSize,
}

/// Everything the tier table says about a tier, except the syscall and capability lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierSpec {
    /// The tier this describes.
    pub tier: Tier,
    /// The root filesystem is mounted read-only whatever the workload asks.
    pub read_only_root: bool,
    /// Network treatment.
    pub network: NetworkPolicy,
    /// The workload must not run as uid 0 inside the sandbox.
    pub non_root: bool,
    /// Landlock filesystem and network rules are applied.
    pub landlock: bool,
    /// Running must fail when Landlock cannot be fully enforced.
    pub require_landlock: bool,
    /// Running must fail when any isolation layer (namespaces, seccomp, cgroups) is missing.
    pub require_full_isolation: bool,
    /// Upper bounds on resources.
    pub limits: TierLimits,
}

impl Tier {
    /// All tiers, least strict first.
    pub const ALL: [Tier; 4] = [
        Tier::Default,
        Tier::Isolated,
        Tier::Hardened,
        Tier::Untrusted,
    ];

    /// The lowercase name used in configuration and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Default => "default",
            Tier::Isolated => "isolated",
            Tier::Hardened => "hardened",
            Tier::Untrusted => "untrusted",
        }
    }

    /// True when `self` is at least as strict as `other`.
    pub fn at_least(self, other: Tier) -> bool {
        self >= other
    }

    /// The built-in specification of this tier (the DESIGN.md tier table, with numbers).
    pub fn spec(self) -> TierSpec {
        let mib = ByteSize::mib;
        let (read_only_root, network, non_root, landlock, require_landlock, full) = match self {
            Tier::Default => (false, NetworkPolicy::Allowed, false, false, false, false),
            Tier::Isolated => (false, NetworkPolicy::UnixOnly, true, false, false, false),
            Tier::Hardened => (
                true,
                NetworkPolicy::NoneUnlessGranted,
                true,
                true,
                false,
                false,
            ),
            Tier::Untrusted => (true, NetworkPolicy::Never, true, true, true, true),
        };
        let limits = match self {
            Tier::Default => TierLimits {
                memory: ByteSize::gib(8),
                pids: 4096,
                cpus: 2.0,
                timeout: HumanDuration::from_secs(24 * 3600),
                tmpfs: ByteSize::gib(1),
                nofile: 65536,
                output: mib(64),
            },
            Tier::Isolated => TierLimits {
                memory: ByteSize::gib(4),
                pids: 2048,
                cpus: 2.0,
                timeout: HumanDuration::from_secs(3600),
                tmpfs: mib(512),
                nofile: 4096,
                output: mib(16),
            },
            Tier::Hardened => TierLimits {
                memory: ByteSize::gib(1),
                pids: 256,
                cpus: 1.0,
                timeout: HumanDuration::from_secs(600),
                tmpfs: mib(64),
                nofile: 1024,
                output: mib(4),
            },
            Tier::Untrusted => TierLimits {
                memory: mib(512),
                pids: 64,
                cpus: 0.5,
                timeout: HumanDuration::from_secs(300),
                tmpfs: mib(16),
                nofile: 256,
                output: mib(1),
            },
        };
        TierSpec {
            tier: self,
            read_only_root,
            network,
            non_root,
            landlock,
            require_landlock,
            require_full_isolation: full,
            limits,
        }
    }

    /// The tier's specification with a configuration override applied. The override has been
    /// validated at load time to only tighten, so this never loosens the built-in spec.
    pub fn effective_spec(self, ov: Option<&TierOverride>) -> TierSpec {
        let mut spec = self.spec();
        let Some(ov) = ov else { return spec };
        let l = &mut spec.limits;
        macro_rules! lower {
            ($($f:ident),*) => {$( if let Some(v) = ov.$f { if v < l.$f { l.$f = v; } } )*};
        }
        lower!(memory, pids, timeout, tmpfs, nofile, output);
        if let Some(c) = ov.cpus {
            l.cpus = l.cpus.min(c);
        }
        if ov.require_landlock == Some(true) {
            spec.require_landlock = true;
            spec.landlock = true;
        }
        if ov.network == Some(false) && spec.network < NetworkPolicy::UnixOnly {
            spec.network = NetworkPolicy::UnixOnly;
        }
        spec
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a tier name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier `{0}` (tiers: default, isolated, hardened, untrusted)")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTier(s.to_string()))
    }
}

/// `[tiers.<tier>]` in perryconfig.toml: site-specific tightening of a built-in tier.
///
/// Every field may only make the tier stricter; `Config::load` rejects anything that would
/// loosen it and says which built-in value it would exceed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierOverride {
    /// Lower memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Lower task limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Lower CPU quota in cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Shorter maximum run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Smaller /tmp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<ByteSize>,
    /// Lower RLIMIT_NOFILE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
    /// Smaller captured-output limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ByteSize>,
    /// `true` makes missing Landlock support an error for this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_landlock: Option<bool>,
    /// `false` takes away networking the tier would otherwise allow or let be granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
    /// Extra syscalls to deny on top of the tier's profile (names as in the kernel table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_syscalls: Vec<String>,
}

impl TierOverride {
    /// Checks that the override only tightens `tier`; returns the offending field name and an
    /// explanation for the first one that would loosen it.
    pub fn check_tightens(&self, tier: Tier) -> Result<(), (&'static str, String)> {
        let spec = tier.spec();
        let l = spec.limits;
        let too_loose = |field: &'static str, got: String, builtin: String| {
            Err((
                field,
                format!(
                    "`{got}` would loosen tier `{tier}` (built-in {field} is {builtin}); \
                     overrides may only tighten a tier"
                ),
            ))
        };
        macro_rules! check {
            ($($f:ident),*) => {$(
                if let Some(v) = self.$f { if v > l.$f { return too_loose(stringify!($f), v.to_string(), l.$f.to_string()); } }
            )*};
        }
        check!(memory, pids, timeout, tmpfs, nofile, output);
        if let Some(c) = self.cpus {
            if c.is_nan() || c <= 0.0 {
                return Err(("cpus", format!("`{c}` must be a positive number of cores")));
            }
            if c > l.cpus {
                return too_loose("cpus", c.to_string(), l.cpus.to_string());
            }
        }
        if self.pids == Some(0) {
            return Err(("pids", "`0` would forbid even the first process".into()));
        }
        if self.require_landlock == Some(false) && spec.require_landlock {
            return too_loose("require_landlock", "false".into(), "true".into());
        }
        if self.network == Some(true) && spec.network >= NetworkPolicy::UnixOnly {
            return too_loose("network", "true".into(), format!("{:?}", spec.network));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_by_strictness() {
        assert!(Tier::Untrusted > Tier::Hardened);
        assert!(Tier::Hardened > Tier::Isolated);
        assert!(Tier::Isolated > Tier::Default);
        assert!(Tier::Untrusted.at_least(Tier::Hardened));
        assert!(!Tier::Isolated.at_least(Tier::Hardened));
    }

    #[test]
    fn stricter_tiers_never_have_higher_limits() {
        for w in Tier::ALL.windows(2) {
            let (loose, strict) = (w[0].spec(), w[1].spec());
            assert!(strict.limits.memory <= loose.limits.memory);
            assert!(strict.limits.pids <= loose.limits.pids);
            assert!(strict.limits.cpus <= loose.limits.cpus);
            assert!(strict.limits.timeout <= loose.limits.timeout);
            assert!(strict.limits.tmpfs <= loose.limits.tmpfs);
            assert!(strict.limits.nofile <= loose.limits.nofile);
            assert!(strict.read_only_root >= loose.read_only_root);
            assert!(strict.non_root >= loose.non_root);
            assert!(strict.landlock >= loose.landlock);
        }
    }

    #[test]
    fn table_matches_design() {
        assert_eq!(Tier::Default.spec().network, NetworkPolicy::Allowed);
        assert_eq!(Tier::Isolated.spec().network, NetworkPolicy::UnixOnly);
        assert_eq!(
            Tier::Hardened.spec().network,
            NetworkPolicy::NoneUnlessGranted
        );
        assert_eq!(Tier::Untrusted.spec().network, NetworkPolicy::Never);
        assert!(Tier::Hardened.spec().read_only_root && Tier::Untrusted.spec().read_only_root);
        assert!(Tier::Untrusted.spec().require_full_isolation);
    }

    #[test]
    fn override_may_tighten_but_not_loosen() {
        let ok = TierOverride {
            memory: Some(ByteSize::mib(256)),
            pids: Some(32),
            require_landlock: Some(true),
            ..Default::default()
        };
        assert!(ok.check_tightens(Tier::Hardened).is_ok());
        let eff = Tier::Hardened.effective_spec(Some(&ok));
        assert_eq!(eff.limits.memory, ByteSize::mib(256));
        assert_eq!(eff.limits.pids, 32);
        assert!(eff.require_landlock);

        let bad = TierOverride {
            memory: Some(ByteSize::gib(2)),
            ..Default::default()
        };
        let (field, why) = bad.check_tightens(Tier::Hardened).unwrap_err();
        assert_eq!(field, "memory");
        assert!(
            why.contains("would loosen tier `hardened` (built-in memory is 1GiB)"),
            "{why}"
        );

        let bad = TierOverride {
            network: Some(true),
            ..Default::default()
        };
        assert_eq!(
            bad.check_tightens(Tier::Untrusted).unwrap_err().0,
            "network"
        );
        let bad = TierOverride {
            require_landlock: Some(false),
            ..Default::default()
        };
        assert_eq!(
            bad.check_tightens(Tier::Untrusted).unwrap_err().0,
            "require_landlock"
        );
    }

    #[test]
    fn parses_tier_names() {
        assert_eq!("hardened".parse::<Tier>().unwrap(), Tier::Hardened);
        assert!("strict"
            .parse::<Tier>()
            .unwrap_err()
            .to_string()
            .contains("unknown tier `strict`"));
    }
}
