//! A compact classic-BPF compiler for one seccomp filter.
//!
//! seccompiler emits a linear chain, one `jeq` per listed syscall plus three helper jumps each,
//! so the hardened allowlist was 1303 instructions: the kernel converts and JITs all of them on
//! every sandbox start, and a syscall late in the chain walks hundreds of compares. This compiler
//! emits, after a caller-supplied prefix that leaves the syscall number in the accumulator:
//!
//! 1. a **dispatch tree**: a balanced binary search (`jge`) over sorted syscall-number ranges.
//!    Consecutive numbers with the same unconditional outcome, including numbers the rules do not
//!    mention (the mismatch action), form one range; a syscall with argument rules is a range of
//!    its own whose leaf is its argument block. One instruction per inner node, none per leaf.
//! 2. the **argument blocks**: per syscall, its rules in order; a rule is a conjunction of
//!    checks, the first failing check jumps to the next rule, the last rule's failure to the
//!    mismatch return, a rule that holds to the match return. Each check means exactly what
//!    seccompiler's condition of the same width and operator meant.
//! 3. the **shared returns**: one `RET K` per action actually used.
//!
//! Every jump goes forward and every path ends in a `RET K`. Conditional jump offsets are 8 bits:
//! a target further than 255 instructions is reached through a `ja` trampoline placed right after
//! the jump (see [`Asm::assemble`]). Only the opcodes the runtime's notification merge accepts
//! are emitted: `ld w abs`, `and k`, `ja`, `ret k`, `jeq k`, `jgt k`, `jge k`.

use std::collections::BTreeMap;

use seccompiler::sock_filter;

use crate::seccomp::{ArgCheck, ArgRule, Op, Width};
use crate::ProfileError;

/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `seccomp_data`.
pub(crate) const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`.
pub(crate) const AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`: unconditional jump, 32-bit offset.
pub(crate) const JA: u16 = 0x05;
/// `BPF_RET | BPF_K`.
pub(crate) const RET_K: u16 = 0x06;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub(crate) const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`.
pub(crate) const JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K`.
pub(crate) const JGE_K: u16 = 0x35;

/// `BPF_JMP | BPF_JSET | BPF_K`: never emitted here, but seccompiler (the test oracle) does.
pub(crate) const JSET_K: u16 = 0x45;

/// `SECCOMP_RET_KILL_PROCESS`.
pub(crate) const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_ALLOW`.
pub(crate) const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO`; the errno goes in the low 16 bits.
pub(crate) const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_USER_NOTIF`: the call waits for the listener's answer.
pub(crate) const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `SECCOMP_RET_ACTION_FULL`: the action part of a return value.
pub(crate) const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
/// The kernel's limit on the length of one program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// Refuses a program longer than the kernel accepts: nothing runs rather than a failed install.
pub(crate) fn check_size(p: &[sock_filter]) -> Result<(), ProfileError> {
    if p.len() > MAX_INSNS {
        return Err(ProfileError::Compile(format!(
            "BPF program has {} instructions; the kernel's limit is {MAX_INSNS}",
            p.len()
        )));
    }
    Ok(())
}

/// `seccomp_data.args[0]`, low half on little-endian x86_64; the high half is 4 bytes further.
const ARGS_OFFSET: u32 = 16;
/// seccomp passes six arguments.
const MAX_ARG_INDEX: u8 = 5;
/// The furthest a conditional jump reaches (its offsets are `u8`).
const MAX_SHORT_JUMP: usize = u8::MAX as usize;

/// A statement: an instruction without branch offsets.
pub(crate) fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump with resolved offsets.
pub(crate) fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn error(what: impl Into<String>) -> ProfileError {
    ProfileError::Compile(what.into())
}

/// The two `RET K` values of one filter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Actions {
    /// Returned when the syscall is listed and (if it has argument rules) one of them holds.
    pub on_match: u32,
    /// Returned for everything else.
    pub mismatch: u32,
}

/// Compiles one filter: `prefix` (which must leave the syscall number in the accumulator and
/// continue at the instruction right after it; its own jumps are kept as they are) followed by
/// the dispatch over `table` (syscall number -> rules; an empty rule list means "always
/// matches").
pub(crate) fn compile_filter(
    prefix: &[sock_filter],
    table: &BTreeMap<u32, &[ArgRule]>,
    actions: Actions,
) -> Result<Vec<sock_filter>, ProfileError> {
    let mut asm = Asm::default();
    for i in prefix {
        asm.insn(i.clone());
    }
    let on_match = asm.label();
    let mismatch = asm.label();
    let blocks: Vec<(Label, &[ArgRule])> = table
        .values()
        .filter(|r| !r.is_empty())
        .map(|&r| (asm.label(), r))
        .collect();
    // `segments` numbers the argument blocks in this same order (non-empty rule lists in
    // number order), so `Args(i)` always indexes `blocks`.
    let leaf = |l: Leaf| match l {
        Leaf::Match => on_match,
        Leaf::Mismatch => mismatch,
        Leaf::Args(i) => blocks[i].0,
    };
    emit_tree(&mut asm, &segments(table), &leaf);
    for &(label, rules) in &blocks {
        emit_block(&mut asm, label, rules, on_match, mismatch)?;
    }
    for (label, k) in [(on_match, actions.on_match), (mismatch, actions.mismatch)] {
        if asm.is_referenced(label) {
            asm.mark(label);
            asm.insn(stmt(RET_K, k));
        }
    }
    asm.assemble()
}

// ---------------------------------------------------------------- dispatch on the number

/// What a range of syscall numbers leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    /// The match action, unconditionally.
    Match,
    /// The mismatch action (numbers the table does not list).
    Mismatch,
    /// The argument block of the `n`-th syscall with rules (in number order).
    Args(usize),
}

/// Numbers from `lo` up to the next segment's `lo` (or `u32::MAX`) lead to `leaf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    lo: u32,
    leaf: Leaf,
}

/// Splits `0..=u32::MAX` into maximal ranges of one outcome; adjacent segments always differ.
fn segments(table: &BTreeMap<u32, &[ArgRule]>) -> Vec<Segment> {
    let mut out = Vec::new();
    push_segment(&mut out, 0, Leaf::Mismatch);
    let mut blocks = 0;
    for (&nr, rules) in table {
        let leaf = if rules.is_empty() {
            Leaf::Match
        } else {
            blocks += 1;
            Leaf::Args(blocks - 1)
        };
        push_segment(&mut out, nr, leaf);
        if let Some(next) = nr.checked_add(1) {
            push_segment(&mut out, next, Leaf::Mismatch);
        }
    }
    out
}

/// Appends a segment starting at `lo` (>= the last one's start), replacing a segment that
/// started at the same number and merging with an equal predecessor.
fn push_segment(out: &mut Vec<Segment>, lo: u32, leaf: Leaf) {
    if out.last().is_some_and(|s| s.lo == lo) {
        out.pop();
    }
    if out.last().map(|s| s.leaf) != Some(leaf) {
        out.push(Segment { lo, leaf });
    }
}

/// Emits the binary search over `segs` (the accumulator holds the syscall number).
fn emit_tree(asm: &mut Asm, segs: &[Segment], leaf: &dyn Fn(Leaf) -> Label) {
    let root = entry(asm, segs, leaf);
    if segs.len() < 2 {
        asm.goto(root);
    } else {
        emit_node(asm, segs, root, leaf);
    }
}

/// Where control goes to decide among `segs`: the leaf's label for one segment, else a fresh
/// label for the inner node [`emit_node`] will place.
fn entry(asm: &mut Asm, segs: &[Segment], leaf: &dyn Fn(Leaf) -> Label) -> Label {
    match segs {
        [one] => leaf(one.leaf),
        _ => asm.label(),
    }
}

/// Emits the inner node deciding among `segs` (at least two) at `here`, then its subtrees in
/// pre-order, so the lower half follows its parent directly.
fn emit_node(asm: &mut Asm, segs: &[Segment], here: Label, leaf: &dyn Fn(Leaf) -> Label) {
    if segs.len() < 2 {
        return;
    }
    let (lower, upper) = segs.split_at(segs.len() / 2);
    let below = entry(asm, lower, leaf);
    let above = entry(asm, upper, leaf);
    asm.mark(here);
    asm.jump(JGE_K, upper[0].lo, Target::At(above), Target::At(below));
    emit_node(asm, lower, below, leaf);
    emit_node(asm, upper, above, leaf);
}

// ---------------------------------------------------------------- argument blocks

/// Emits one syscall's rules at `here`: any rule holding jumps to `pass`, none to `fail`.
fn emit_block(
    asm: &mut Asm,
    here: Label,
    rules: &[ArgRule],
    pass: Label,
    fail: Label,
) -> Result<(), ProfileError> {
    asm.mark(here);
    for (i, rule) in rules.iter().enumerate() {
        if i + 1 == rules.len() {
            emit_rule(asm, rule, pass, fail)?;
        } else {
            let next = asm.label();
            emit_rule(asm, rule, pass, next)?;
            asm.mark(next);
        }
    }
    Ok(())
}

/// Emits a conjunction: each check falls through to the next when it holds.
fn emit_rule(asm: &mut Asm, rule: &ArgRule, pass: Label, fail: Label) -> Result<(), ProfileError> {
    if rule.checks.is_empty() {
        return Err(error(
            "an argument rule without checks (use an empty rule list to match unconditionally)",
        ));
    }
    for (i, check) in rule.checks.iter().enumerate() {
        if i + 1 == rule.checks.len() {
            emit_check(asm, check, pass, fail)?;
        } else {
            // A label, not `Target::Next`: inside a 64-bit check "next" is its low-half step.
            let next = asm.label();
            emit_check(asm, check, next, fail)?;
            asm.mark(next);
        }
    }
    Ok(())
}

/// One comparison, as seccompiler compiled it: `Dword` looks at the low 32 bits only (against
/// the low 32 bits of the value); `Qword` decides on the high halves first and compares the low
/// halves only when they are equal. `MaskedEq` compares against `value & mask`.
fn emit_check(asm: &mut Asm, c: &ArgCheck, holds: Label, fails: Label) -> Result<(), ProfileError> {
    if c.index > MAX_ARG_INDEX {
        return Err(error(format!(
            "argument index {} (seccomp passes arguments 0 to {MAX_ARG_INDEX})",
            c.index
        )));
    }
    let lo = ARGS_OFFSET + 8 * u32::from(c.index);
    let value = match c.op {
        Op::MaskedEq { mask } => c.value & mask,
        _ => c.value,
    };
    let (holds, fails) = (Target::At(holds), Target::At(fails));
    if c.width == Width::Qword && !high_half_always_holds(c.op) {
        emit_high_half(asm, c.op, lo + 4, high(value), holds, fails);
    }
    emit_low_half(asm, c.op, lo, value as u32, holds, fails);
    Ok(())
}

/// A 64-bit `MaskedEq` whose mask has no bit in the high half compares `hi & 0` with `0`
/// there (the value is masked too): always true, so only the low half needs code. This keeps
/// `clone`'s flag checks at three instructions each.
fn high_half_always_holds(op: Op) -> bool {
    matches!(op, Op::MaskedEq { mask } if high(mask) == 0)
}

fn high(v: u64) -> u32 {
    (v >> 32) as u32
}

/// The high-half step of a 64-bit check: decides `holds`/`fails` where the high halves settle
/// it and falls through (`Target::Next`) to the low-half step otherwise. `holds` and `fails`
/// are labels, never `Next`.
fn emit_high_half(asm: &mut Asm, op: Op, off: u32, v: u32, holds: Target, fails: Target) {
    use Target::Next;
    asm.insn(stmt(LD_W_ABS, off));
    match op {
        Op::Eq => asm.jump(JEQ_K, v, Next, fails),
        Op::Ne => asm.jump(JEQ_K, v, Next, holds),
        Op::Lt => {
            asm.jump(JGT_K, v, fails, Next);
            asm.jump(JEQ_K, v, Next, holds);
        }
        Op::Gt => {
            asm.jump(JGT_K, v, holds, Next);
            asm.jump(JEQ_K, v, Next, fails);
        }
        Op::MaskedEq { mask } => {
            asm.insn(stmt(AND_K, high(mask)));
            asm.jump(JEQ_K, v, Next, fails);
        }
    }
}

/// The 32-bit comparison of the low half (the whole check for `Dword`).
fn emit_low_half(asm: &mut Asm, op: Op, off: u32, v: u32, holds: Target, fails: Target) {
    asm.insn(stmt(LD_W_ABS, off));
    match op {
        Op::Eq => asm.jump(JEQ_K, v, holds, fails),
        Op::Ne => asm.jump(JEQ_K, v, fails, holds),
        Op::Lt => asm.jump(JGE_K, v, fails, holds),
        Op::Gt => asm.jump(JGT_K, v, holds, fails),
        Op::MaskedEq { mask } => {
            asm.insn(stmt(AND_K, mask as u32));
            asm.jump(JEQ_K, v, holds, fails);
        }
    }
}

// ---------------------------------------------------------------- assembler

/// A position in the program, placed with [`Asm::mark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// Where a branch of a conditional jump goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The instruction after the jump (after its trampolines, if it gets any).
    Next,
    /// A label, which must come later in the program.
    At(Label),
}

#[derive(Clone, Debug)]
enum Item {
    /// An instruction emitted as is.
    Insn(sock_filter),
    /// A conditional jump; becomes 1 to 3 instructions.
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    /// An unconditional jump.
    Goto(Label),
    /// Places a label before the next instruction.
    Mark(Label),
}

/// A program with symbolic forward jumps, resolved by [`Asm::assemble`].
#[derive(Debug, Default)]
pub(crate) struct Asm {
    items: Vec<Item>,
    labels: usize,
}

/// Instruction positions for one choice of trampolines.
struct Layout {
    /// Position of each item (for a mark: of the next instruction).
    at: Vec<usize>,
    /// Position of each label, once marked.
    label: Vec<Option<usize>>,
}

impl Asm {
    /// A new, not yet placed label.
    pub(crate) fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    /// Places `l` before the next instruction.
    pub(crate) fn mark(&mut self, l: Label) {
        self.items.push(Item::Mark(l));
    }

    /// Appends an instruction without symbolic jumps.
    pub(crate) fn insn(&mut self, i: sock_filter) {
        self.items.push(Item::Insn(i));
    }

    /// Appends a conditional jump.
    pub(crate) fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Jump { code, k, jt, jf });
    }

    /// Appends an unconditional jump.
    pub(crate) fn goto(&mut self, l: Label) {
        self.items.push(Item::Goto(l));
    }

    fn is_referenced(&self, l: Label) -> bool {
        self.items.iter().any(|i| match *i {
            Item::Jump { jt, jf, .. } => jt == Target::At(l) || jf == Target::At(l),
            Item::Goto(g) => g == l,
            _ => false,
        })
    }

    /// Resolves labels to offsets. A conditional jump whose target is more than 255 instructions
    /// away branches (offset 0 or 1) to a `ja` trampoline inserted right after it. Adding
    /// trampolines only lengthens forward jumps, so the fixpoint is reached in a few rounds.
    pub(crate) fn assemble(&self) -> Result<Vec<sock_filter>, ProfileError> {
        let mut extra = vec![0u8; self.items.len()];
        loop {
            let layout = self.layout(&extra)?;
            let mut changed = false;
            for (i, item) in self.items.iter().enumerate() {
                if let Item::Jump { jt, jf, .. } = *item {
                    let (t, f) = self.far(&layout, &extra, i, jt, jf)?;
                    let need = u8::from(t) + u8::from(f);
                    if need > extra[i] {
                        extra[i] = need;
                        changed = true;
                    }
                }
            }
            if !changed {
                return self.emit(&layout, &extra);
            }
        }
    }

    fn layout(&self, extra: &[u8]) -> Result<Layout, ProfileError> {
        let mut at = Vec::with_capacity(self.items.len());
        let mut label = vec![None; self.labels];
        let mut pos = 0usize;
        for (i, item) in self.items.iter().enumerate() {
            at.push(pos);
            pos += match *item {
                Item::Mark(Label(l)) => {
                    let slot = label.get_mut(l).ok_or_else(|| error("unknown label"))?;
                    if slot.replace(pos).is_some() {
                        return Err(error("label placed twice"));
                    }
                    0
                }
                Item::Jump { .. } => 1 + usize::from(extra[i]),
                Item::Insn(_) | Item::Goto(_) => 1,
            };
        }
        Ok(Layout { at, label })
    }

    /// Position of `t` as seen from the jump at item `i`; must lie after its trampolines.
    fn resolve(
        &self,
        layout: &Layout,
        extra: &[u8],
        i: usize,
        t: Target,
    ) -> Result<usize, ProfileError> {
        let after = layout.at[i] + 1 + usize::from(extra[i]);
        let pos = match t {
            Target::Next => after,
            Target::At(Label(l)) => layout
                .label
                .get(l)
                .copied()
                .flatten()
                .ok_or_else(|| error("jump to a label never placed"))?,
        };
        if pos < after {
            return Err(error("backward jump (BPF jumps only forward)"));
        }
        Ok(pos)
    }

    /// Whether each branch of the jump at item `i` is out of a conditional jump's reach.
    fn far(
        &self,
        layout: &Layout,
        extra: &[u8],
        i: usize,
        jt: Target,
        jf: Target,
    ) -> Result<(bool, bool), ProfileError> {
        let from = layout.at[i] + 1;
        let t = self.resolve(layout, extra, i, jt)? - from;
        let f = self.resolve(layout, extra, i, jf)? - from;
        Ok((t > MAX_SHORT_JUMP, f > MAX_SHORT_JUMP))
    }

    fn emit(&self, layout: &Layout, extra: &[u8]) -> Result<Vec<sock_filter>, ProfileError> {
        let mut out = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.iter().enumerate() {
            match *item {
                Item::Insn(ref ins) => out.push(ins.clone()),
                Item::Mark(_) => {}
                Item::Goto(Label(l)) => {
                    let to = layout.label.get(l).copied().flatten();
                    let to = to.ok_or_else(|| error("jump to a label never placed"))?;
                    out.push(long_jump(layout.at[i], to)?);
                }
                Item::Jump { code, k, jt, jf } => {
                    let t = self.resolve(layout, extra, i, jt)?;
                    let f = self.resolve(layout, extra, i, jf)?;
                    let far = self.far(layout, extra, i, jt, jf)?;
                    conditional(&mut out, (code, k), layout.at[i], (t, f), far, extra[i])?;
                }
            }
        }
        Ok(out)
    }
}

/// `ja` at position `at` to position `to`.
fn long_jump(at: usize, to: usize) -> Result<sock_filter, ProfileError> {
    let off = to
        .checked_sub(at + 1)
        .and_then(|o| u32::try_from(o).ok())
        .ok_or_else(|| error("unreachable jump target"))?;
    Ok(stmt(JA, off))
}

/// Appends a conditional jump at `at` to positions `to` = (true, false), followed by `extra`
/// trampolines: with one, the far branch (or the true branch) goes through it; with two, both.
fn conditional(
    out: &mut Vec<sock_filter>,
    (code, k): (u16, u32),
    at: usize,
    to: (usize, usize),
    far: (bool, bool),
    extra: u8,
) -> Result<(), ProfileError> {
    let short = |target: usize| {
        u8::try_from(target - (at + 1)).map_err(|_| error("conditional jump out of reach"))
    };
    match extra {
        0 => out.push(jump(code, k, short(to.0)?, short(to.1)?)),
        1 if far.0 || !far.1 => {
            out.push(jump(code, k, 0, short(to.1)?));
            out.push(long_jump(at + 1, to.0)?);
        }
        1 => {
            out.push(jump(code, k, short(to.0)?, 0));
            out.push(long_jump(at + 1, to.1)?);
        }
        _ => {
            out.push(jump(code, k, 0, 1));
            out.push(long_jump(at + 1, to.0)?);
            out.push(long_jump(at + 2, to.1)?);
        }
    }
    Ok(())
}

// Named by path so that it resolves the same from `build.rs`, which builds this file too.
#[cfg(test)]
#[path = "bpf/tests.rs"]
mod tests;
