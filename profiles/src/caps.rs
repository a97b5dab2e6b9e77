//! Capability sets and securebits per tier.
//!
//! `default` mirrors what docker/runc give a container (the 14-capability default set in the
//! bounding, permitted and effective sets, nothing inheritable or ambient, no securebits), so
//! trusted images behave as they do elsewhere. From `isolated` up every set is empty and the
//! securebits that make uid 0 ordinary are set and locked: after that, neither `execve` of a
//! setuid binary nor becoming uid 0 can bring a capability back.

pub use caps::Capability;
use perry_policies::Tier;
use serde::Serialize;

/// The capabilities docker and podman grant by default (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The five capability sets of the confined process, exactly (each sorted by number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapSets {
    /// Upper bound for anything gained at exec.
    pub bounding: Vec<Capability>,
    /// What the process may make effective.
    pub permitted: Vec<Capability>,
    /// What the kernel checks now.
    pub effective: Vec<Capability>,
    /// What survives exec via file inheritable bits.
    pub inheritable: Vec<Capability>,
    /// What survives exec of unprivileged binaries.
    pub ambient: Vec<Capability>,
}

impl CapSets {
    /// The sets for `tier`.
    pub fn for_tier(tier: Tier) -> Self {
        let mut set: Vec<Capability> = if tier == Tier::Default {
            DOCKER_DEFAULT.to_vec()
        } else {
            Vec::new()
        };
        set.sort_by_key(|c| c.index());
        CapSets {
            bounding: set.clone(),
            permitted: set.clone(),
            effective: set,
            inheritable: Vec::new(),
            ambient: Vec::new(),
        }
    }

    /// True when every set is empty.
    pub fn is_empty(&self) -> bool {
        [
            &self.bounding,
            &self.permitted,
            &self.effective,
            &self.inheritable,
            &self.ambient,
        ]
        .iter()
        .all(|s| s.is_empty())
    }

    /// Every capability in any set, sorted by number, without duplicates.
    pub fn union(&self) -> Vec<Capability> {
        let mut all = self.bounding.clone();
        for s in [
            &self.permitted,
            &self.effective,
            &self.inheritable,
            &self.ambient,
        ] {
            all.extend(s.iter().copied());
        }
        all.sort_by_key(|c| c.index());
        all.dedup();
        all
    }
}

/// `SECBIT_NOROOT`: uid 0 gains no capabilities at exec.
pub const SECBIT_NOROOT: u32 = 1 << 0;
/// Locks `SECBIT_NOROOT`.
pub const SECBIT_NOROOT_LOCKED: u32 = 1 << 1;
/// `SECBIT_NO_SETUID_FIXUP`: changing uids does not adjust capability sets.
pub const SECBIT_NO_SETUID_FIXUP: u32 = 1 << 2;
/// Locks `SECBIT_NO_SETUID_FIXUP`.
pub const SECBIT_NO_SETUID_FIXUP_LOCKED: u32 = 1 << 3;
/// `SECBIT_NO_CAP_AMBIENT_RAISE`: the ambient set can never be raised.
pub const SECBIT_NO_CAP_AMBIENT_RAISE: u32 = 1 << 6;
/// Locks `SECBIT_NO_CAP_AMBIENT_RAISE`.
pub const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: u32 = 1 << 7;

/// The securebits for `tier`: none for `default` (root in a default container keeps the docker
/// set across exec, as with docker), all three set and locked from `isolated` up.
pub fn securebits_for(tier: Tier) -> u32 {
    if tier == Tier::Default {
        0
    } else {
        SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
    }
}

/// Human names of the bits set in `bits`.
pub fn securebit_names(bits: u32) -> Vec<&'static str> {
    [
        (SECBIT_NOROOT, "NOROOT"),
        (SECBIT_NOROOT_LOCKED, "NOROOT_LOCKED"),
        (SECBIT_NO_SETUID_FIXUP, "NO_SETUID_FIXUP"),
        (SECBIT_NO_SETUID_FIXUP_LOCKED, "NO_SETUID_FIXUP_LOCKED"),
        (SECBIT_NO_CAP_AMBIENT_RAISE, "NO_CAP_AMBIENT_RAISE"),
        (
            SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
            "NO_CAP_AMBIENT_RAISE_LOCKED",
        ),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect()
}
