//! A tier's compiled programs ([`SeccompProgram`]): compiling, the per-key cache, and the user
//! space interpreter that evaluates them for tests, `profiles show` and the run's supervisor.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use seccompiler::{sock_filter, BpfProgram};

use super::{rules, ArgRule, SeccompKey, SyscallRules, ENOSYS, EPERM};
use crate::bpf::{
    self, check_size, jump, stmt, Actions, JEQ_K, JGE_K, LD_W_ABS, RET_K, SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS,
};
use crate::{notify, syscalls, ProfileError};

pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A tier's compiled seccomp programs plus the rules they came from.
#[derive(Debug)]
pub struct SeccompProgram {
    /// The rules, for explaining and exporting ([`SeccompProgram::rules`]); built on first use
    /// for a built-in program, which a run never needs.
    rules: OnceLock<SyscallRules>,
    /// The key of a built-in program, whose rules are built from it on demand.
    built_in: Option<SeccompKey>,
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

/// The compiled program for `key`, shared by every later call: every run of a tier reuses the
/// same `Arc`, so per-run cost is installing, not compiling. A key without a deny list (a tier
/// with no site `deny_syscalls`) takes the programs compiled at build time (`build.rs`, see
/// [`SeccompProgram::is_built_in`]); any other key is compiled on first use.
pub fn compiled(key: &SeccompKey) -> Result<Arc<SeccompProgram>, ProfileError> {
    static CACHE: OnceLock<Mutex<HashMap<SeccompKey, Arc<SeccompProgram>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
        return Ok(Arc::clone(p));
    }
    let program = Arc::new(match built_in(key) {
        Some(p) => p,
        None => compile(rules(key)?)?,
    });
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Arc::clone(map.entry(key.clone()).or_insert(program)))
}

/// The build-time programs for `key`, if it has them.
#[cfg(perry_built_in_programs)]
fn built_in(key: &SeccompKey) -> Option<SeccompProgram> {
    super::built_in::program(key)
}

/// The build script's own copy of this module: it is what makes the built-in programs.
#[cfg(not(perry_built_in_programs))]
fn built_in(_: &SeccompKey) -> Option<SeccompProgram> {
    None
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
            rules: OnceLock::from(rules),
            built_in: None,
            allowlist,
            eperm,
            notify,
        })
    }

    /// The programs `build.rs` compiled for `key` (with [`compile`], from [`rules`]`(key)`),
    /// taken as they are: their size and opcodes were checked when they were compiled.
    pub(crate) fn built_in(
        key: SeccompKey,
        allowlist: BpfProgram,
        eperm: BpfProgram,
        notify: BpfProgram,
    ) -> Self {
        SeccompProgram {
            rules: OnceLock::new(),
            built_in: Some(key),
            allowlist,
            eperm,
            notify,
        }
    }

    /// The rules the programs were compiled from, for explaining and exporting. Built on the
    /// first call for a built-in program.
    pub fn rules(&self) -> &SyscallRules {
        self.rules.get_or_init(|| {
            let key = self
                .built_in
                .as_ref()
                .expect("a program without its rules is a built-in one, which has its key");
            // The build script built these very rules from the same tables and code.
            rules(key).expect("a built-in tier's rules were built at build time")
        })
    }

    /// Whether the programs were compiled at build time (a built-in tier with no site
    /// `deny_syscalls`) rather than at run time.
    pub fn is_built_in(&self) -> bool {
        self.built_in.is_some()
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
