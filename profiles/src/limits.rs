//! Resource limits: the tier's numbers (from perry-policies) as rlimits and cgroup files.
//!
//! cgroups carry the real limits (memory, tasks, CPU); rlimits are the per-process backstop that
//! works even where no cgroup could be created. This box has hybrid cgroups (v1 controllers plus
//! a v2 hierarchy), so both spellings are produced and the runtime writes whichever it has.

use perry_policies::TierLimits;
use serde::Serialize;

/// An rlimit resource the profile sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resource {
    /// Open file descriptors.
    Nofile,
    /// Processes/threads of the real uid. Not enforced for host uid 0 (see DESIGN.md): the pids
    /// cgroup is the real limit.
    Nproc,
    /// Core dump size: 0, a sandbox must not write its memory to disk.
    Core,
}

/// One rlimit, soft = hard (a sandboxed process may lower it, never raise it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rlimit {
    /// Which resource.
    pub resource: Resource,
    /// The soft and hard limit.
    pub limit: u64,
}

/// The rlimits for a tier's limits.
pub fn rlimits(l: &TierLimits) -> Vec<Rlimit> {
    vec![
        Rlimit {
            resource: Resource::Nofile,
            limit: l.nofile,
        },
        Rlimit {
            resource: Resource::Nproc,
            limit: u64::from(l.pids),
        },
        Rlimit {
            resource: Resource::Core,
            limit: 0,
        },
    ]
}

/// The CFS period used for CPU quotas, in microseconds (the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Cgroup limit values for one sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupLimits {
    /// Memory limit in bytes (swap is disabled alongside it).
    pub memory_max: u64,
    /// Maximum tasks.
    pub pids_max: u32,
    /// CPU quota per [`CPU_PERIOD_US`], in microseconds.
    pub cpu_quota_us: u64,
}

impl CgroupLimits {
    /// The values for a tier's limits.
    pub fn from_limits(l: &TierLimits) -> Self {
        CgroupLimits {
            memory_max: l.memory.as_u64(),
            pids_max: l.pids,
            cpu_quota_us: ((l.cpus * CPU_PERIOD_US as f64).round() as u64).max(1000),
        }
    }

    /// `(file, value)` pairs for a cgroup v2 directory.
    pub fn v2_files(&self) -> Vec<(&'static str, String)> {
        vec![
            ("memory.max", self.memory_max.to_string()),
            ("memory.swap.max", "0".into()),
            ("pids.max", self.pids_max.to_string()),
            (
                "cpu.max",
                format!("{} {}", self.cpu_quota_us, CPU_PERIOD_US),
            ),
        ]
    }

    /// `(controller, file, value)` triples for cgroup v1 hierarchies.
    pub fn v1_files(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            (
                "memory",
                "memory.limit_in_bytes",
                self.memory_max.to_string(),
            ),
            ("pids", "pids.max", self.pids_max.to_string()),
            ("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
            ("cpu", "cpu.cfs_quota_us", self.cpu_quota_us.to_string()),
        ]
    }
}
