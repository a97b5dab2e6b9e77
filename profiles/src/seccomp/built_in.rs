//! The built-in tiers' programs, compiled at build time.
//!
//! `build.rs` runs this crate's compiler ([`compile`](super::compile) over
//! [`rules`](super::rules)) for every tier and socket policy with an empty deny list, and writes
//! the allowlist, the EPERM program and the notification merge of each as static data, included
//! here. [`compiled`](super::compiled) takes them for any key without a deny list, so a run of a
//! built-in tier neither compiles nor parses the tier tables; a site's `deny_syscalls` still
//! compiles at run time. The tests below hold the data to what the run-time compiler emits,
//! instruction for instruction, for every entry.

use perry_policies::Tier;
use seccompiler::sock_filter;

use super::{SeccompKey, SeccompProgram, SocketPolicy};

/// One tier's programs for one socket policy, as `build.rs` compiled them.
pub(super) struct BuiltIn {
    /// The tier.
    pub tier: Tier,
    /// The socket policy the programs were built for.
    pub sockets: SocketPolicy,
    /// [`SeccompProgram::allowlist`].
    pub allowlist: &'static [sock_filter],
    /// [`SeccompProgram::eperm`].
    pub eperm: &'static [sock_filter],
    /// [`SeccompProgram::notify`].
    pub notify: &'static [sock_filter],
}

/// One instruction; the generated data is a list of these.
const fn i(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

include!(concat!(env!("OUT_DIR"), "/built_in_programs.rs"));

/// The built-in entry for `key`: only a key without a deny list has one.
fn lookup(key: &SeccompKey) -> Option<&'static BuiltIn> {
    if !key.deny.is_empty() {
        return None;
    }
    PROGRAMS
        .iter()
        .find(|p| p.tier == key.tier && p.sockets == key.sockets)
}

/// The built-in programs for `key`, or `None` when it must be compiled at run time.
pub(super) fn program(key: &SeccompKey) -> Option<SeccompProgram> {
    lookup(key).map(|p| {
        SeccompProgram::built_in(
            key.clone(),
            p.allowlist.to_vec(),
            p.eperm.to_vec(),
            p.notify.to_vec(),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use perry_policies::TierOverride;

    use super::*;
    use crate::seccomp::{compile, rules};
    use crate::{Grants, NetworkGrant, Profile, Verdict};

    const SOCKETS: [SocketPolicy; 3] = [
        SocketPolicy::AnyFamily,
        SocketPolicy::UnixAndTcp,
        SocketPolicy::UnixOnly,
    ];

    fn key(tier: Tier, sockets: SocketPolicy) -> SeccompKey {
        SeccompKey {
            tier,
            sockets,
            deny: BTreeSet::new(),
        }
    }

    /// `a == b`, or the index and both instructions where they first differ.
    fn same(what: &str, built: &[sock_filter], runtime: &[sock_filter]) {
        if let Some(at) =
            (0..built.len().max(runtime.len())).find(|&n| built.get(n) != runtime.get(n))
        {
            panic!(
                "{what}: the build-time program ({} instructions) differs from the run-time \
                 compiler's ({}) at instruction {at}: {:?} vs {:?}",
                built.len(),
                runtime.len(),
                built.get(at),
                runtime.get(at)
            );
        }
    }

    /// The guard the brief asks for: every built-in program is exactly what the run-time
    /// compiler makes of the current tier tables and rules. Fails if either changes and the
    /// build-time data does not.
    #[test]
    fn every_built_in_program_is_what_the_runtime_compiler_emits() {
        assert_eq!(PROGRAMS.len(), Tier::ALL.len() * SOCKETS.len());
        for p in PROGRAMS {
            let k = key(p.tier, p.sockets);
            let fresh = compile(rules(&k).unwrap()).unwrap();
            let what = |prog| format!("{:?}/{:?} {prog}", p.tier, p.sockets);
            same(&what("allowlist"), p.allowlist, &fresh.allowlist);
            same(&what("eperm"), p.eperm, &fresh.eperm);
            same(&what("notify"), p.notify, &fresh.notify);
            // And the rules a built-in program explains itself with are those rules.
            let built = program(&k).unwrap();
            assert!(built.is_built_in());
            assert_eq!(built.rules(), fresh.rules(), "{:?}/{:?}", p.tier, p.sockets);
        }
    }

    #[test]
    fn every_tier_and_socket_policy_is_built_in_once() {
        for tier in Tier::ALL {
            for sockets in SOCKETS {
                let n = PROGRAMS
                    .iter()
                    .filter(|p| p.tier == tier && p.sockets == sockets)
                    .count();
                assert_eq!(n, 1, "{tier:?}/{sockets:?}");
            }
        }
    }

    /// A profile with no site override (or one that leaves seccomp alone) takes the built-in
    /// programs; a `deny_syscalls` override is compiled at run time and is in force.
    #[test]
    fn profiles_take_built_in_programs_unless_a_site_denies_syscalls() {
        for tier in Tier::ALL {
            let p = Profile::for_tier(tier, None, &Grants::default()).unwrap();
            assert!(p.seccomp.is_built_in(), "{tier}");
        }
        let net = Grants {
            network: Some(NetworkGrant::default()),
            ..Grants::default()
        };
        let p = Profile::for_tier(Tier::Hardened, None, &net).unwrap();
        assert!(p.seccomp.is_built_in());
        assert_eq!(
            p.seccomp.evaluate_name("socket", &[2, 1, 0, 0, 0, 0]),
            Some(Verdict::Allow)
        );
        let limits_only = TierOverride {
            pids: Some(16),
            network: Some(false),
            ..TierOverride::default()
        };
        for tier in Tier::ALL {
            let p = Profile::for_tier(tier, Some(&limits_only), &Grants::default()).unwrap();
            assert!(p.seccomp.is_built_in(), "{tier}");
        }

        let deny = TierOverride {
            deny_syscalls: vec!["uname".into()],
            ..TierOverride::default()
        };
        let p = Profile::for_tier(Tier::Hardened, Some(&deny), &Grants::default()).unwrap();
        assert!(!p.seccomp.is_built_in());
        assert_eq!(
            p.seccomp.evaluate_name("uname", &[0; 6]),
            Some(Verdict::Errno(1))
        );
        let plain = Profile::for_tier(Tier::Hardened, None, &Grants::default()).unwrap();
        assert_eq!(
            plain.seccomp.evaluate_name("uname", &[0; 6]),
            Some(Verdict::Allow)
        );
    }
}
