//! Per-tier seccomp rules, their BPF programs, and their OCI (docker/podman) form.
//!
//! Each tier gets two filters, installed in this order:
//!
//! 1. the **allowlist**: anything not listed returns `ENOSYS` ("this kernel has no such call"),
//!    which programs handle gracefully (glibc falls back from `clone3` to `clone`); a short
//!    prefix kills the process for a non-x86_64 architecture or an x32 syscall number;
//! 2. the **EPERM filter**: calls known to be dangerous (mount, bpf, keyctl, ...) and dangerous
//!    argument values (non-AF_UNIX sockets, namespace flags in `clone`, `TIOCSTI`) return `EPERM`,
//!    so a denied privileged operation looks like what it is, a permission refusal.
//!
//! The kernel runs every installed filter and keeps the strictest action; between two `ERRNO`
//! results the most recently installed filter wins, so the EPERM filter goes on last.
//!
//! The name lists live in `data/tiers.json`; the argument rules are code in `rules.rs` because
//! each one needs a reason next to it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

mod args;
#[cfg(perry_built_in_programs)]
mod built_in;
mod oci;
mod program;
mod rules;

pub use args::{ArgCheck, ArgRule, Op, Width};
pub use oci::oci_json;
#[cfg(any(test, feature = "oracle"))]
pub(crate) use program::arch_guard;
pub use program::{compile, compiled, SeccompProgram, Verdict};
#[cfg(test)]
pub(crate) use program::{run_bpf, run_bpf_counted, AUDIT_ARCH_X86_64};
pub use rules::{rules, SeccompKey};

/// `ENOSYS`: returned for calls outside the allowlist.
pub const ENOSYS: u32 = 38;
/// `EPERM`: returned by the stacked filter for known-dangerous calls.
pub const EPERM: u32 = 1;

/// How the network shapes the `socket` rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketPolicy {
    /// Every family except AF_ALG and AF_VSOCK (moby's default).
    AnyFamily,
    /// AF_UNIX plus TCP over AF_INET/AF_INET6 (a network grant in `hardened`; Landlock then
    /// limits the ports).
    UnixAndTcp,
    /// AF_UNIX only.
    UnixOnly,
}

/// What a profile does with one syscall, summarised for humans and for monotonicity checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Refused, always (EPERM or ENOSYS).
    Denied,
    /// Allowed for some argument values only.
    Restricted,
    /// Allowed whatever the arguments.
    Allowed,
}

/// The two rule sets of a tier, before compilation. An empty rule list means "unconditionally".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyscallRules {
    /// The allowlist: anything not here returns ENOSYS.
    pub allow: BTreeMap<String, Vec<ArgRule>>,
    /// The stacked EPERM filter.
    pub eperm: BTreeMap<String, Vec<ArgRule>>,
}

impl SyscallRules {
    /// What this profile does with `name`.
    pub fn access(&self, name: &str) -> Access {
        match (self.allow.get(name), self.eperm.get(name)) {
            (_, Some(r)) if r.is_empty() => Access::Denied,
            (None, _) => Access::Denied,
            (Some(a), e) if a.is_empty() && e.is_none() => Access::Allowed,
            _ => Access::Restricted,
        }
    }

    /// Names allowed at least for some arguments.
    pub fn allowed_names(&self) -> BTreeSet<&str> {
        self.allow
            .keys()
            .map(String::as_str)
            .filter(|n| self.access(n) != Access::Denied)
            .collect()
    }

    /// The errno a call that is refused outright gets (EPERM from the stacked filter, else
    /// ENOSYS), or `None` when some call of that name may succeed.
    pub fn refusal(&self, name: &str) -> Option<u32> {
        match self.access(name) {
            Access::Denied if self.eperm.get(name).is_some_and(Vec::is_empty) => Some(EPERM),
            Access::Denied => Some(ENOSYS),
            _ => None,
        }
    }
}
