//! A tier's rule sets: the name lists from `data/tiers.json` plus the argument rules, which are
//! code here because each one needs a reason next to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use perry_policies::Tier;

use super::{ArgCheck, ArgRule, Op, SocketPolicy, SyscallRules, Width};
use crate::{syscalls, ProfileError};

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const SOCK_STREAM: u64 = 1;
const SOCK_TYPE_MASK: u64 = 0xf;
const IPPROTO_TCP: u64 = 6;
/// Every defined socket type other than SOCK_STREAM.
const SOCK_OTHER_TYPES: [(u64, &str); 6] = [
    (2, "type is SOCK_DGRAM"),
    (3, "type is SOCK_RAW"),
    (4, "type is SOCK_RDM"),
    (5, "type is SOCK_SEQPACKET"),
    (6, "type is SOCK_DCCP"),
    (10, "type is SOCK_PACKET"),
];
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const PERSONALITY_QUERY: u64 = 0xffff_ffff;
/// Every `CLONE_NEW*` flag `clone(2)` accepts (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET); CLONE_NEWTIME only exists for `clone3`/`unshare`, both of which are refused.
const CLONE_NEW_FLAGS: [(u64, &str); 7] = [
    (0x0002_0000, "CLONE_NEWNS"),
    (0x0200_0000, "CLONE_NEWCGROUP"),
    (0x0400_0000, "CLONE_NEWUTS"),
    (0x0800_0000, "CLONE_NEWIPC"),
    (0x1000_0000, "CLONE_NEWUSER"),
    (0x2000_0000, "CLONE_NEWPID"),
    (0x4000_0000, "CLONE_NEWNET"),
];

#[derive(serde::Deserialize)]
struct TierData {
    allow: BTreeMap<String, Vec<String>>,
    eperm: BTreeMap<String, Vec<String>>,
}

fn tier_data() -> &'static TierData {
    static D: OnceLock<TierData> = OnceLock::new();
    D.get_or_init(|| {
        serde_json::from_str(include_str!("../../data/tiers.json")).expect("data/tiers.json parses")
    })
}

/// The inputs that decide a tier's seccomp program; also the compile cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeccompKey {
    /// The tier.
    pub tier: Tier,
    /// Socket families allowed.
    pub sockets: SocketPolicy,
    /// Extra calls denied by configuration (`[tiers.<tier>] deny_syscalls`).
    pub deny: BTreeSet<String>,
}

/// Builds the rule sets for `key`. Fails on any syscall name the table does not know.
pub fn rules(key: &SeccompKey) -> Result<SyscallRules, ProfileError> {
    let data = tier_data();
    let name = key.tier.name();
    let mut allow: BTreeMap<String, Vec<ArgRule>> = data.allow[name]
        .iter()
        .map(|n| (n.clone(), Vec::new()))
        .collect();
    let mut eperm: BTreeMap<String, Vec<ArgRule>> = data.eperm[name]
        .iter()
        .map(|n| (n.clone(), Vec::new()))
        .collect();
    let strict = key.tier >= Tier::Hardened;

    // socket/socketpair: the family is the whole network policy as far as seccomp can see.
    let fam = |op, v, m| ArgRule::one(0, Width::Dword, op, v, m);
    match key.sockets {
        SocketPolicy::AnyFamily => {
            // moby: everything but AF_ALG (38, kernel crypto) and AF_VSOCK (40, host channel).
            allow.insert(
                "socket".into(),
                vec![
                    fam(Op::Lt, 38, "family below AF_ALG"),
                    fam(Op::Eq, 39, "family is AF_NFC"),
                    fam(Op::Gt, 40, "family above AF_VSOCK"),
                ],
            );
        }
        SocketPolicy::UnixOnly => {
            for s in ["socket", "socketpair"] {
                allow.insert(s.into(), vec![fam(Op::Eq, AF_UNIX, "family is AF_UNIX")]);
                eperm.insert(
                    s.into(),
                    vec![fam(Op::Ne, AF_UNIX, "family is not AF_UNIX")],
                );
            }
        }
        SocketPolicy::UnixAndTcp => {
            // TCP only: a SOCK_STREAM of another protocol (SCTP) would pass Landlock's TCP port
            // rules untouched, so the protocol must be 0 (the default, TCP) or IPPROTO_TCP.
            let tcp = |family, m, proto, pm| ArgRule {
                checks: vec![
                    ArgCheck {
                        index: 0,
                        width: Width::Dword,
                        op: Op::Eq,
                        value: family,
                        meaning: m,
                    },
                    ArgCheck {
                        index: 1,
                        width: Width::Dword,
                        op: Op::MaskedEq {
                            mask: SOCK_TYPE_MASK,
                        },
                        value: SOCK_STREAM,
                        meaning: "type is SOCK_STREAM",
                    },
                    ArgCheck {
                        index: 2,
                        width: Width::Dword,
                        op: Op::Eq,
                        value: proto,
                        meaning: pm,
                    },
                ],
            };
            let mut allowed = vec![fam(Op::Eq, AF_UNIX, "family is AF_UNIX")];
            for (family, m) in [
                (AF_INET, "family is AF_INET"),
                (AF_INET6, "family is AF_INET6"),
            ] {
                allowed.push(tcp(family, m, 0, "protocol is 0 (TCP)"));
                allowed.push(tcp(family, m, IPPROTO_TCP, "protocol is IPPROTO_TCP"));
            }
            allow.insert("socket".into(), allowed);
            // Anything else is EPERM: other families, and the other socket types of the inet
            // families (UDP, raw, ...; BPF cannot test "masked != ", so each defined type is
            // listed; an undefined type gets ENOSYS from the allowlist).
            let mut refused = Vec::new();
            for (family, fname) in [
                (AF_INET, "family is AF_INET"),
                (AF_INET6, "family is AF_INET6"),
            ] {
                for (ty, tname) in SOCK_OTHER_TYPES {
                    refused.push(ArgRule {
                        checks: vec![
                            ArgCheck {
                                index: 0,
                                width: Width::Dword,
                                op: Op::Eq,
                                value: family,
                                meaning: fname,
                            },
                            ArgCheck {
                                index: 1,
                                width: Width::Dword,
                                op: Op::MaskedEq {
                                    mask: SOCK_TYPE_MASK,
                                },
                                value: ty,
                                meaning: tname,
                            },
                        ],
                    });
                }
            }
            eperm.insert(
                "socket".into(),
                vec![ArgRule {
                    checks: [AF_UNIX, AF_INET, AF_INET6]
                        .into_iter()
                        .map(|v| ArgCheck {
                            index: 0,
                            width: Width::Dword,
                            op: Op::Ne,
                            value: v,
                            meaning: "family is not AF_UNIX/AF_INET/AF_INET6",
                        })
                        .collect(),
                }]
                .into_iter()
                .chain(refused)
                .collect(),
            );
            allow.insert(
                "socketpair".into(),
                vec![fam(Op::Eq, AF_UNIX, "family is AF_UNIX")],
            );
            eperm.insert(
                "socketpair".into(),
                vec![fam(Op::Ne, AF_UNIX, "family is not AF_UNIX")],
            );
        }
    }

    // personality: changing the execution domain (e.g. READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE)
    // weakens exploit mitigations. Up to isolated: moby's harmless values; hardened up: query only.
    let pers = |v, m| ArgRule::one(0, Width::Dword, Op::Eq, v, m);
    if strict {
        allow.insert(
            "personality".into(),
            vec![pers(PERSONALITY_QUERY, "query only (0xffffffff)")],
        );
        eperm.insert(
            "personality".into(),
            vec![ArgRule::one(
                0,
                Width::Dword,
                Op::Ne,
                PERSONALITY_QUERY,
                "any change of personality",
            )],
        );
    } else {
        allow.insert(
            "personality".into(),
            vec![
                pers(0, "PER_LINUX"),
                pers(8, "PER_LINUX32"),
                pers(0x20000, "UNAME26"),
                pers(0x20008, "PER_LINUX32|UNAME26"),
                pers(PERSONALITY_QUERY, "query (0xffffffff)"),
            ],
        );
    }

    // clone: plain fork/thread creation yes, new namespaces no (they are the sandbox's walls).
    let mask: u64 = CLONE_NEW_FLAGS.iter().map(|(f, _)| f).sum();
    allow.insert(
        "clone".into(),
        vec![ArgRule::one(
            0,
            Width::Qword,
            Op::MaskedEq { mask },
            0,
            "no CLONE_NEW* flag",
        )],
    );
    eperm.insert(
        "clone".into(),
        CLONE_NEW_FLAGS
            .iter()
            .map(|&(f, m)| ArgRule::one(0, Width::Qword, Op::MaskedEq { mask: f }, f, m))
            .collect(),
    );
    // clone3 passes its flags in memory BPF cannot read: it must return ENOSYS (glibc then falls
    // back to clone, which we can check). EPERM would make glibc fail thread creation.
    allow.remove("clone3");
    eperm.remove("clone3");

    // ioctl: TIOCSTI pushes bytes into the controlling terminal's input (a classic escape from a
    // sandbox sharing the tty); TIOCLINUX can do the same on a virtual console.
    if strict {
        allow.insert("ioctl".into(), Vec::new());
        eperm.insert(
            "ioctl".into(),
            vec![
                ArgRule::one(1, Width::Dword, Op::Eq, TIOCSTI, "TIOCSTI"),
                ArgRule::one(1, Width::Dword, Op::Eq, TIOCLINUX, "TIOCLINUX"),
            ],
        );
    }

    for d in &key.deny {
        if syscalls::number(d).is_none() {
            return Err(ProfileError::UnknownSyscall(d.clone()));
        }
        if d == "clone3" {
            // Already refused, and it must stay ENOSYS: EPERM would break glibc's threads.
            continue;
        }
        allow.remove(d);
        eperm.insert(d.clone(), Vec::new());
    }
    for n in allow.keys().chain(eperm.keys()) {
        if syscalls::number(n).is_none() {
            return Err(ProfileError::UnknownSyscall(n.clone()));
        }
    }
    Ok(SyscallRules { allow, eperm })
}
