//! `AppleContainerProtocol`: apple/container's `container` CLI, and why it is never picked today.
//!
//! apple/container runs each container in its own lightweight VM, which is a strong boundary
//! for the host, but its CLI (command reference at the 0.x line) has no way to say what every
//! perry-sandbox tier promises *inside* the container: no seccomp profile, no capability
//! drop, no `no-new-privileges`, no read-only root, no pids limit, and no internal (no route
//! out) networks. A tier that cannot be applied is not applied weaker: [`unenforceable`] names
//! each control a hardening needs and the CLI lacks, [`AppleContainerProtocol::check`] refuses
//! any hardening for which that list is not empty (`isolation_unavailable`), and detection
//! reports a live apple/container unusable with that list as the reason and goes on to the
//! next backend (orbstack, colima, …, podman). When the CLI grows the missing flags, the
//! driver's argv is written against them and the entries leave [`unenforceable`].

use crate::{BackendError, ContainerNetwork, Hardening};

/// What every tier asks for and apple/container's CLI cannot apply.
pub const ALWAYS_UNENFORCEABLE: [&str; 2] = ["a seccomp profile", "dropping capabilities"];

/// The controls `h` asks for that apple/container's CLI cannot apply, in a fixed order.
pub fn unenforceable(h: &Hardening) -> Vec<&'static str> {
    let mut missing = ALWAYS_UNENFORCEABLE.to_vec();
    if h.no_new_privileges {
        missing.push("no-new-privileges");
    }
    if h.read_only_root {
        missing.push("a read-only root filesystem");
    }
    if h.pids > 0 {
        missing.push("a pids limit");
    }
    if h.network == ContainerNetwork::InternalOnly {
        missing.push("internal networks (no route out)");
    }
    missing
}

/// The reason apple/container cannot run `h`'s tier, or `None` when it can.
pub(crate) fn refusal(h: &Hardening) -> Option<String> {
    let missing = unenforceable(h);
    (!missing.is_empty()).then(|| {
        format!(
            "apple/container cannot apply tier {}: its CLI has no flag for {}; use podman \
             (`podman machine`) or a docker-compatible backend on this Mac",
            h.tier.name(),
            missing.join(", ")
        )
    })
}

/// apple/container's `container` CLI: probed like every backend, and able to create a
/// container only for a hardening [`unenforceable`] finds nothing in — none of today's tiers.
#[derive(Clone, Debug)]
pub struct AppleContainerProtocol {
    program: String,
}

impl AppleContainerProtocol {
    /// The driver running `program` (normally `container`).
    pub fn new(program: &str) -> Self {
        AppleContainerProtocol {
            program: program.into(),
        }
    }

    /// The CLI this driver runs.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The gate every create would pass first: `isolation_unavailable` naming each control
    /// of the tier the CLI cannot apply.
    pub fn check(&self, h: &Hardening) -> Result<(), BackendError> {
        match refusal(h) {
            Some(why) => Err(BackendError::PolicyViolation(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use perry_policies::Tier;
    use perry_profiles::{Grants, Profile};

    use super::*;
    fn hardening(tier: Tier) -> Hardening {
        let p = Profile::for_tier(tier, None, &Grants::default()).unwrap();
        Hardening::for_profile(&p, PathBuf::from("/state/s.json"))
    }

    #[test]
    fn every_tier_is_refused_naming_what_the_cli_cannot_apply() {
        let d = AppleContainerProtocol::new("container");
        for tier in [
            Tier::Default,
            Tier::Isolated,
            Tier::Hardened,
            Tier::Untrusted,
        ] {
            let err = d.check(&hardening(tier)).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, BackendError::PolicyViolation(_)),
                "{tier:?}: {err:?}"
            );
            assert!(
                msg.contains("seccomp") && msg.contains("capabilities"),
                "{msg}"
            );
            assert!(msg.contains(tier.name()), "{msg}");
        }
        let hardened = unenforceable(&hardening(Tier::Hardened));
        assert!(
            hardened.contains(&"a read-only root filesystem"),
            "{hardened:?}"
        );
        assert!(hardened.contains(&"no-new-privileges"), "{hardened:?}");
        let isolated = unenforceable(&hardening(Tier::Isolated));
        assert!(
            isolated.contains(&"internal networks (no route out)"),
            "{isolated:?}"
        );
    }
}
