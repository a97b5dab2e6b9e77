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
//! The name lists live in `data/tiers.json`; the argument rules are code in this file because
//! each one needs a reason next to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use perry_policies::Tier;
use seccompiler::{sock_filter, BpfProgram};
use serde::Serialize;

pub(crate) use crate::bpf::check_size;
use crate::bpf::{
    self, jump, stmt, Actions, JEQ_K, JGE_K, LD_W_ABS, RET_K, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
};
use crate::{notify, syscalls, ProfileError};

/// `ENOSYS`: returned for calls outside the allowlist.
pub const ENOSYS: u32 = 38;
/// `EPERM`: returned by the stacked filter for known-dangerous calls.
pub const EPERM: u32 = 1;

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
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Width of an argument comparison. `ioctl` commands and socket families are C `int`s: the kernel
/// ignores the upper half of the register, so comparing all 64 bits would let `0x1_00005412`
/// slip past a `!= TIOCSTI` check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Width {
    /// Low 32 bits only.
    Dword,
    /// All 64 bits.
    Qword,
}

/// A comparison operator for one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg < value`
    Lt,
    /// `arg > value`
    Gt,
    /// `arg & mask == value`
    MaskedEq {
        /// The bits compared.
        mask: u64,
    },
}

/// One comparison on one syscall argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ArgCheck {
    /// Argument position, 0-based.
    pub index: u8,
    /// Compared width.
    pub width: Width,
    /// Operator.
    pub op: Op,
    /// Right-hand side.
    pub value: u64,
    /// What the comparison means, for humans.
    pub meaning: &'static str,
}

/// A conjunction of argument checks: the rule matches when every check holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ArgRule {
    /// Checks that must all hold.
    pub checks: Vec<ArgCheck>,
}

impl ArgRule {
    fn one(index: u8, width: Width, op: Op, value: u64, meaning: &'static str) -> Self {
        ArgRule {
            checks: vec![ArgCheck {
                index,
                width,
                op,
                value,
                meaning,
            }],
        }
    }

    /// A short human description ("arg0 == 1 (AF_UNIX)").
    pub fn describe(&self) -> String {
        self.checks
            .iter()
            .map(|c| c.meaning.to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

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

#[derive(serde::Deserialize)]
struct TierData {
    allow: BTreeMap<String, Vec<String>>,
    eperm: BTreeMap<String, Vec<String>>,
}

fn tier_data() -> &'static TierData {
    static D: OnceLock<TierData> = OnceLock::new();
    D.get_or_init(|| {
        serde_json::from_str(include_str!("../data/tiers.json")).expect("data/tiers.json parses")
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

/// A tier's compiled seccomp programs plus the rules they came from.
#[derive(Debug)]
pub struct SeccompProgram {
    /// The rules, for explaining and exporting.
    pub rules: SyscallRules,
    /// The allowlist program (arch/x32 guard + allowlist, default ENOSYS). Install first.
    pub allowlist: BpfProgram,
    /// The EPERM program (default allow). Install second, so its EPERM wins over ENOSYS.
    pub eperm: BpfProgram,
    /// Both programs merged into the one the native runner installs: every `ERRNO` return
    /// becomes `USER_NOTIF`, answered by the run's supervisor with the errno the stacked pair
    /// would give ([`notify::merge_for_notification`]). Computed with the programs, so once per
    /// tier and configuration.
    pub notify: BpfProgram,
}

/// The kernel's verdict on one syscall, as computed by [`SeccompProgram::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The call runs.
    Allow,
    /// The call fails with this errno.
    Errno(u32),
    /// The process is killed.
    Kill,
}

impl Verdict {
    /// Strictness rank: Allow < Errno < Kill.
    pub fn rank(self) -> u8 {
        match self {
            Verdict::Allow => 0,
            Verdict::Errno(_) => 1,
            Verdict::Kill => 2,
        }
    }
}

/// `map`'s names resolved to their x86_64 numbers, the form [`bpf::compile_filter`] takes.
fn numbered(
    map: &BTreeMap<String, Vec<ArgRule>>,
) -> Result<BTreeMap<u32, &[ArgRule]>, ProfileError> {
    map.iter()
        .map(|(name, rules)| {
            let nr = syscalls::number(name)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ProfileError::UnknownSyscall(name.clone()))?;
            Ok((nr, rules.as_slice()))
        })
        .collect()
}

/// The guard prepended to the allowlist: kill on a foreign architecture (i386 via int 0x80 has
/// different numbers, so an x86_64 allowlist would mean something else there) and on the x32
/// range (same arch value, numbers with bit 30 set, a second syscall table).
pub(crate) fn arch_guard() -> Vec<sock_filter> {
    vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, SECCOMP_RET_KILL_PROCESS),
    ]
}

/// The prefix of the EPERM program: kill on a foreign architecture (as the allowlist does, so
/// this program means the same when installed alone), then load the syscall number.
fn arch_check() -> Vec<sock_filter> {
    vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
    ]
}

/// Compiles `rules` to the two BPF programs (the crate's own compiler: a binary search over
/// syscall-number ranges, then the argument checks; see `src/bpf.rs`), which [`compiled`]
/// caches. Tens of microseconds, and about an eighth of seccompiler's instructions.
pub fn compile(rules: SyscallRules) -> Result<SeccompProgram, ProfileError> {
    let allowlist = bpf::compile_filter(
        &arch_guard(),
        &numbered(&rules.allow)?,
        Actions {
            on_match: SECCOMP_RET_ALLOW,
            mismatch: SECCOMP_RET_ERRNO | ENOSYS,
        },
    )?;
    let eperm = bpf::compile_filter(
        &arch_check(),
        &numbered(&rules.eperm)?,
        Actions {
            on_match: SECCOMP_RET_ERRNO | EPERM,
            mismatch: SECCOMP_RET_ALLOW,
        },
    )?;
    SeccompProgram::from_parts(rules, allowlist, eperm)
}

/// The compiled program for `key`, compiled on first use and shared afterwards: every run of a
/// tier reuses the same `Arc`, so per-run cost is installing, not compiling.
pub fn compiled(key: &SeccompKey) -> Result<Arc<SeccompProgram>, ProfileError> {
    static CACHE: OnceLock<Mutex<HashMap<SeccompKey, Arc<SeccompProgram>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
        return Ok(Arc::clone(p));
    }
    let program = Arc::new(compile(rules(key)?)?);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Arc::clone(map.entry(key.clone()).or_insert(program)))
}

/// Runs a classic-BPF seccomp program over a `seccomp_data` (arch, nr, args) in user space.
/// Used to check the compiled programs against the rules (tests, `profiles show`), not by the
/// kernel. Returns `None` for an instruction this interpreter does not know.
pub(crate) fn run_bpf(prog: &[sock_filter], arch: u32, nr: i32, args: &[u64; 6]) -> Option<u32> {
    run_bpf_counted(prog, arch, nr, args).map(|(ret, _)| ret)
}

/// [`run_bpf`], also returning how many instructions the call executed (the dispatch depth the
/// compiler's tests bound).
pub(crate) fn run_bpf_counted(
    prog: &[sock_filter],
    arch: u32,
    nr: i32,
    args: &[u64; 6],
) -> Option<(u32, usize)> {
    let word = |off: u32| -> Option<u32> {
        Some(match off {
            0 => nr as u32,
            4 => arch,
            8 | 12 => return None, // instruction pointer: never used by our programs
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let i = ((o - 16) / 8) as usize;
                let v = args[i];
                if (o - 16) % 8 == 0 {
                    v as u32
                } else {
                    (v >> 32) as u32
                }
            }
            _ => return None,
        })
    };
    let (mut a, mut pc, mut executed) = (0u32, 0usize, 0usize);
    loop {
        let ins = prog.get(pc)?;
        pc += 1;
        executed += 1;
        match ins.code {
            0x20 => a = word(ins.k)?,               // ld w abs
            0x54 => a &= ins.k,                     // alu and k
            0x05 => pc += ins.k as usize,           // ja
            0x06 => return Some((ins.k, executed)), // ret k
            0x15 | 0x25 | 0x35 | 0x45 => {
                let t = match ins.code {
                    0x15 => a == ins.k,
                    0x25 => a > ins.k,
                    0x35 => a >= ins.k,
                    _ => a & ins.k != 0,
                };
                pc += if t { ins.jt } else { ins.jf } as usize;
            }
            _ => return None,
        }
    }
}

fn verdict(ret: u32) -> Verdict {
    match ret & 0xffff_0000 {
        0x7fff_0000 => Verdict::Allow,
        0x0005_0000 => Verdict::Errno(ret & 0xffff),
        _ => Verdict::Kill,
    }
}

impl SeccompProgram {
    /// The compiled pair with its merged notification program; refuses a program longer than
    /// the kernel accepts.
    pub(crate) fn from_parts(
        rules: SyscallRules,
        allowlist: BpfProgram,
        eperm: BpfProgram,
    ) -> Result<Self, ProfileError> {
        check_size(&allowlist)?;
        check_size(&eperm)?;
        let notify = notify::merge_for_notification(&allowlist, &eperm)?;
        Ok(SeccompProgram {
            rules,
            allowlist,
            eperm,
            notify,
        })
    }

    /// What the kernel would do with syscall `nr` and `args` from an x86_64 process under both
    /// filters (strictest action wins; between two errnos the later filter, EPERM, wins).
    pub fn evaluate(&self, arch: u32, nr: i32, args: &[u64; 6]) -> Verdict {
        let first = run_bpf(&self.allowlist, arch, nr, args).map(verdict);
        let second = run_bpf(&self.eperm, arch, nr, args).map(verdict);
        match (first, second) {
            (Some(a), Some(b)) => {
                if b.rank() >= a.rank() {
                    b
                } else {
                    a
                }
            }
            _ => Verdict::Kill,
        }
    }

    /// [`evaluate`](Self::evaluate) for a native x86_64 call by name.
    pub fn evaluate_name(&self, name: &str, args: &[u64; 6]) -> Option<Verdict> {
        let nr = syscalls::number(name)?;
        Some(self.evaluate(AUDIT_ARCH_X86_64, nr as i32, args))
    }
}

/// The values of one argument that none of `refused` (single 32-bit equality checks on that
/// argument, like `ioctl`'s TIOCSTI/TIOCLINUX) matches, as libseccomp conditions: below the
/// smallest, above the largest, and each value in between. Values with the upper half set are
/// above the largest and so allowed by these; the EPERM rules (masked to 32 bits) still match
/// them, and libseccomp checks those first (the podman test probes exactly that case).
fn complement(name: &str, refused: &[ArgRule]) -> Result<Vec<serde_json::Value>, ProfileError> {
    use serde_json::json;
    let mut values = Vec::new();
    let mut index = None;
    for r in refused {
        match r.checks.as_slice() {
            [c] if c.op == Op::Eq
                && c.width == Width::Dword
                && index.is_none_or(|i| i == c.index) =>
            {
                index = Some(c.index);
                values.push(c.value);
            }
            _ => {
                return Err(ProfileError::NotExportable(format!(
                    "{name}: allowed except when {}; only single equality checks on one argument \
                     can be inverted for libseccomp",
                    r.describe()
                )))
            }
        }
    }
    let (Some(index), Some(&lo), Some(&hi)) = (index, values.iter().min(), values.iter().max())
    else {
        return Ok(vec![]);
    };
    if hi - lo > 64 {
        return Err(ProfileError::NotExportable(format!(
            "{name}: refused values {lo:#x}..{hi:#x} are too far apart to list the ones between"
        )));
    }
    let mut out = vec![
        json!({"index": index, "value": lo, "op": "SCMP_CMP_LT"}),
        json!({"index": index, "value": hi, "op": "SCMP_CMP_GT"}),
    ];
    for v in lo + 1..hi {
        if !values.contains(&v) {
            out.push(json!({"index": index, "value": v, "op": "SCMP_CMP_EQ"}));
        }
    }
    Ok(out)
}

/// The OCI runtime-spec / docker form of `rules` (`podman --security-opt seccomp=FILE`).
///
/// One libseccomp filter cannot stack, so the two filters are flattened: unconditional allows,
/// argument-conditioned allows, argument-conditioned EPERMs, unconditional EPERMs, default
/// ENOSYS. Differences from the native programs, all failing closed: x32 calls get the default
/// ENOSYS instead of a kill, and a conjunction of several checks on one argument (which runc would
/// turn into a disjunction) is refused.
pub fn oci_json(rules: &SyscallRules) -> Result<serde_json::Value, ProfileError> {
    use serde_json::json;
    let arg = |c: &ArgCheck| match (c.op, c.width) {
        (Op::MaskedEq { mask }, _) => {
            json!({"index": c.index, "value": mask, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"})
        }
        // A 32-bit equality is written as a masked compare so the upper half cannot hide a match.
        (Op::Eq, Width::Dword) => {
            json!({"index": c.index, "value": 0xffff_ffffu64, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"})
        }
        (Op::Eq, Width::Qword) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_EQ"}),
        (Op::Ne, _) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_NE"}),
        (Op::Lt, _) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_LT"}),
        (Op::Gt, _) => json!({"index": c.index, "value": c.value, "op": "SCMP_CMP_GT"}),
    };
    let conditional = |name: &str, r: &ArgRule, action: serde_json::Value| {
        let idx: BTreeSet<u8> = r.checks.iter().map(|c| c.index).collect();
        if idx.len() != r.checks.len() {
            return Err(ProfileError::NotExportable(format!(
                "{name}: several checks on one argument ({}) cannot be expressed for runc",
                r.describe()
            )));
        }
        let mut v = json!({"names": [name], "args": r.checks.iter().map(arg).collect::<Vec<_>>(),
                           "comment": r.describe()});
        for (k, val) in action.as_object().expect("action is an object") {
            v[k] = val.clone();
        }
        Ok(v)
    };
    let allow_action = json!({"action": "SCMP_ACT_ALLOW"});
    let eperm_action = json!({"action": "SCMP_ACT_ERRNO", "errnoRet": EPERM});
    let mut out = Vec::new();
    let plain: Vec<&str> = rules
        .allow
        .iter()
        .filter(|(n, r)| r.is_empty() && !rules.eperm.contains_key(*n))
        .map(|(n, _)| n.as_str())
        .collect();
    out.push(json!({"names": plain, "action": "SCMP_ACT_ALLOW"}));
    for (name, rs) in &rules.eperm {
        if rs.is_empty() {
            continue;
        }
        for r in rs {
            out.push(conditional(name, r, eperm_action.clone())?);
        }
    }
    for (name, rs) in &rules.allow {
        if rules.eperm.get(name).is_some_and(Vec::is_empty) {
            continue;
        }
        if rs.is_empty() {
            if let Some(refused) = rules.eperm.get(name) {
                // libseccomp lets an unconditional allow override every conditional EPERM of
                // the same call (TIOCSTI went through under podman): allow the complement.
                for args in complement(name, refused)? {
                    out.push(
                        json!({"names": [name], "action": "SCMP_ACT_ALLOW", "args": [args],
                                    "comment": "any other value"}),
                    );
                }
            }
            continue;
        }
        for r in rs {
            out.push(conditional(name, r, allow_action.clone())?);
        }
    }
    let denied: Vec<&str> = rules
        .eperm
        .iter()
        .filter(|(_, r)| r.is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    out.push(json!({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}));
    Ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": out,
    }))
}
