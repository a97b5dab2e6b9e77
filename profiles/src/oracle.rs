//! The seccompiler-based compiler this crate used before [`crate::bpf`], kept as the reference
//! the new programs are tested against (and measured against in `benches/compile.rs`).
//!
//! Built for this crate's unit tests and with the `oracle` feature only: production code never
//! calls it. seccompiler emits a linear chain (1303 + 433 instructions for `hardened`), but its
//! argument conditions are the semantics [`crate::seccomp::Width`] and [`crate::seccomp::Op`]
//! promise, so every program the new compiler emits must evaluate exactly like this one.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::seccomp::{
    arch_guard, ArgCheck, ArgRule, Op, SeccompProgram, SyscallRules, Width, ENOSYS, EPERM,
};
use crate::{syscalls, ProfileError};

/// Compiles `rules` the way the crate did with seccompiler: the allowlist is the arch/x32 guard
/// followed by seccompiler's program (default `ENOSYS`), the EPERM program is seccompiler's
/// program (default allow). Hidden: a test and benchmark reference, not an API.
#[doc(hidden)]
pub fn compile_with_seccompiler(rules: SyscallRules) -> Result<SeccompProgram, ProfileError> {
    let mut allowlist = arch_guard();
    allowlist.extend(compile_map(
        &rules.allow,
        SeccompAction::Errno(ENOSYS),
        SeccompAction::Allow,
    )?);
    let eperm = compile_map(
        &rules.eperm,
        SeccompAction::Allow,
        SeccompAction::Errno(EPERM),
    )?;
    SeccompProgram::from_parts(rules, allowlist, eperm)
}

fn condition(c: &ArgCheck) -> Result<SeccompCondition, ProfileError> {
    let len = match c.width {
        Width::Dword => SeccompCmpArgLen::Dword,
        Width::Qword => SeccompCmpArgLen::Qword,
    };
    let op = match c.op {
        Op::Eq => SeccompCmpOp::Eq,
        Op::Ne => SeccompCmpOp::Ne,
        Op::Lt => SeccompCmpOp::Lt,
        Op::Gt => SeccompCmpOp::Gt,
        Op::MaskedEq { mask } => SeccompCmpOp::MaskedEq(mask),
    };
    SeccompCondition::new(c.index, len, op, c.value)
        .map_err(|e| ProfileError::Compile(e.to_string()))
}

fn compile_map(
    map: &BTreeMap<String, Vec<ArgRule>>,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, ProfileError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (name, rs) in map {
        let nr =
            syscalls::number(name).ok_or_else(|| ProfileError::UnknownSyscall(name.clone()))?;
        let mut out = Vec::new();
        for r in rs {
            let conds = r.checks.iter().map(condition).collect::<Result<_, _>>()?;
            out.push(SeccompRule::new(conds).map_err(|e| ProfileError::Compile(e.to_string()))?);
        }
        rules.insert(nr, out);
    }
    let filter = SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
        .map_err(|e| ProfileError::Compile(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| ProfileError::Compile(e.to_string()))
}
