//! The compiler against the seccompiler oracle ([`crate::oracle`]), its size and depth, its
//! trampolines, and the shape the notification merge ([`crate::notify`]) relies on.
//!
//! Longer than ~700 lines on purpose: it is one test module whose fixtures (the oracle pairs,
//! compiled once for every key, and the boundary argument vectors) every section below uses;
//! the `// ----` sections (fixtures, equivalence, size and depth, segments, trampolines) are
//! its outline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use perry_policies::Tier;
use proptest::prelude::*;

use super::*;
use crate::oracle::compile_with_seccompiler;
use crate::seccomp::{
    compile, rules, run_bpf, run_bpf_counted, SeccompKey, SeccompProgram, SocketPolicy,
    SyscallRules, Verdict,
};
use crate::syscalls;

const X86_64: u32 = 0xC000_003E;
const I386: u32 = 0x4000_0003;
const X32_BIT: u32 = 0x4000_0000;

// ---------------------------------------------------------------- fixtures

/// Extra deny lists: none, one call in the middle of an allowed run, argument-checked calls
/// (their blocks disappear), and a mix that merges and splits ranges.
fn deny_sets() -> Vec<BTreeSet<String>> {
    [
        &[][..],
        &["getpid"][..],
        &["ioctl", "socket", "personality"][..],
        &["read", "write", "clone", "clone3", "exit_group", "getppid"][..],
    ]
    .iter()
    .map(|d| d.iter().map(|s| s.to_string()).collect())
    .collect()
}

/// Every tier x socket policy x deny list.
fn keys() -> Vec<SeccompKey> {
    let mut out = Vec::new();
    for tier in Tier::ALL {
        for sockets in [
            SocketPolicy::AnyFamily,
            SocketPolicy::UnixAndTcp,
            SocketPolicy::UnixOnly,
        ] {
            for deny in deny_sets() {
                out.push(SeccompKey {
                    tier,
                    sockets,
                    deny,
                });
            }
        }
    }
    out
}

/// (new, oracle) programs for every key, built once per test binary.
fn pairs() -> &'static Vec<(SeccompKey, SeccompProgram, SeccompProgram)> {
    static P: OnceLock<Vec<(SeccompKey, SeccompProgram, SeccompProgram)>> = OnceLock::new();
    P.get_or_init(|| {
        keys()
            .into_iter()
            .map(|k| {
                let r = rules(&k).unwrap();
                let new = compile(r.clone()).unwrap();
                let old = compile_with_seccompiler(r).unwrap();
                (k, new, old)
            })
            .collect()
    })
}

fn largest_known_nr() -> u32 {
    syscalls::all_names()
        .filter_map(syscalls::number)
        .max()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap()
}

/// Values around one check's right-hand side: just below, at and above it, with the upper half
/// set and cleared, the extremes, for 64-bit checks every mix of high half +-1 and low half
/// +-1, and for a mask the masked value, its complement and every single mask bit flipped.
fn boundary_values(c: &ArgCheck) -> Vec<u64> {
    let v = c.value;
    let mut out = vec![
        0,
        u64::MAX,
        v,
        v.wrapping_sub(1),
        v.wrapping_add(1),
        v | 0xffff_ffff_0000_0000,
        v & 0xffff_ffff,
        v ^ (1 << 32),
    ];
    if c.width == Width::Qword {
        let (h, l) = (v >> 32, v & 0xffff_ffff);
        for hh in [h.wrapping_sub(1), h, h.wrapping_add(1)] {
            for ll in [l.wrapping_sub(1), l, l.wrapping_add(1)] {
                out.push(((hh & 0xffff_ffff) << 32) | (ll & 0xffff_ffff));
            }
        }
    }
    if let Op::MaskedEq { mask } = c.op {
        out.extend([v & mask, v ^ mask, mask, !mask]);
        out.extend((0..64).filter(|b| mask >> b & 1 == 1).map(|b| v ^ (1 << b)));
    }
    out
}

/// Argument vectors for a call checked by `rules`: the full cross product of every checked
/// argument's boundary values when that is at most `cap` vectors, else every single-argument
/// variation of a base vector plus `cap` pseudo-random combinations. Unchecked arguments are 0,
/// and each vector comes again with them all-ones.
fn arg_vectors<'a>(rules: impl IntoIterator<Item = &'a ArgRule>, cap: usize) -> Vec<[u64; 6]> {
    let mut per_arg: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for c in rules.into_iter().flat_map(|r| &r.checks) {
        per_arg
            .entry(usize::from(c.index))
            .or_default()
            .extend(boundary_values(c));
    }
    let axes: Vec<(usize, Vec<u64>)> = per_arg
        .into_iter()
        .map(|(i, s)| (i, s.into_iter().collect()))
        .collect();
    let total = axes.iter().map(|(_, v)| v.len()).product::<usize>();
    let mut out = if total <= cap {
        cross_product(&axes)
    } else {
        sampled(&axes, cap)
    };
    let with_ones: Vec<[u64; 6]> = out
        .iter()
        .map(|a| {
            let mut b = [u64::MAX; 6];
            for (i, _) in &axes {
                b[*i] = a[*i];
            }
            b
        })
        .collect();
    out.extend(with_ones);
    out
}

fn cross_product(axes: &[(usize, Vec<u64>)]) -> Vec<[u64; 6]> {
    let mut out = vec![[0u64; 6]];
    for (i, values) in axes {
        out = out
            .iter()
            .flat_map(|a| {
                values.iter().map(move |&v| {
                    let mut b = *a;
                    b[*i] = v;
                    b
                })
            })
            .collect();
    }
    out
}

fn sampled(axes: &[(usize, Vec<u64>)], cap: usize) -> Vec<[u64; 6]> {
    let mut out = Vec::new();
    for (i, values) in axes {
        for &v in values {
            let mut a = [0u64; 6];
            a[*i] = v;
            out.push(a);
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..cap {
        let mut a = [0u64; 6];
        for (i, values) in axes {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            a[*i] = values[(seed >> 33) as usize % values.len()];
        }
        out.push(a);
    }
    out
}

/// The rules both filters of `r` have for `name`.
fn rules_of<'a>(r: &'a SyscallRules, name: &str) -> Vec<&'a ArgRule> {
    r.allow
        .get(name)
        .into_iter()
        .chain(r.eperm.get(name))
        .flatten()
        .collect()
}

/// A few vectors for calls without argument rules: nothing about them may depend on arguments.
fn plain_vectors() -> Vec<[u64; 6]> {
    vec![
        [0; 6],
        [u64::MAX; 6],
        [1, 1, 0, 0, 0, 0],
        [2, 1, 6, 0, 0, 0],
        [0x5412; 6],
        [0x1_0000_0001, 0xffff_ffff, 0x2000_0000, 7, 8, 9],
    ]
}

/// Both programs, one at a time and as the kernel stacks them, agree with the oracle's.
fn assert_same(new: &SeccompProgram, old: &SeccompProgram, arch: u32, nr: u32, args: &[u64; 6]) {
    let nr = nr as i32;
    assert_eq!(
        run_bpf(&new.allowlist, arch, nr, args),
        run_bpf(&old.allowlist, arch, nr, args),
        "allowlist arch {arch:#x} nr {nr} args {args:x?}"
    );
    assert_eq!(
        run_bpf(&new.eperm, arch, nr, args),
        run_bpf(&old.eperm, arch, nr, args),
        "eperm arch {arch:#x} nr {nr} args {args:x?}"
    );
    assert_eq!(
        new.evaluate(arch, nr, args),
        old.evaluate(arch, nr, args),
        "evaluate arch {arch:#x} nr {nr} args {args:x?}"
    );
}

/// Numbers in the x32 range, past it, and the top of the range (negative as an `i32`).
fn odd_numbers() -> Vec<u32> {
    let mut v: Vec<u32> = [0, 1, 2, 59, 60, 231, 435, 512, 547, 0x3fff_ffff]
        .iter()
        .map(|n| X32_BIT | n)
        .collect();
    v.extend([0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, u32::MAX]);
    v
}

/// The kernel's classic-BPF checks for seccomp (`bpf_check_classic` + `seccomp_check_filter`)
/// plus the runtime merge's: only the eight opcodes the merge accepts, every jump inside the
/// program, the last instruction a `RET K`, loads at aligned offsets of `seccomp_data`.
fn assert_well_formed(p: &[sock_filter]) {
    assert!(!p.is_empty() && p.len() <= 4096, "length {}", p.len());
    assert_eq!(p.last().map(|i| i.code), Some(RET_K), "ends in RET K");
    for (i, ins) in p.iter().enumerate() {
        let inside = |off: usize| i + 1 + off < p.len();
        match ins.code {
            LD_W_ABS => {
                assert!(ins.k < 64 && ins.k % 4 == 0, "load at {i}");
                assert!(inside(0), "load at {i} falls off the end")
            }
            AND_K => assert!(inside(0), "and at {i} falls off the end"),
            RET_K => {}
            JA => assert!(inside(ins.k as usize), "ja at {i} out of the program"),
            JEQ_K | JGT_K | JGE_K | 0x45 => {
                assert!(
                    inside(ins.jt.into()) && inside(ins.jf.into()),
                    "jump at {i}"
                )
            }
            code => panic!("opcode {code:#x} at {i}"),
        }
    }
}

// ---------------------------------------------------------------- equivalence

/// Every tier, socket policy and deny list: every syscall number up to the largest known + 20,
/// x32 and out-of-range numbers, a foreign architecture, and for every argument-checked call the
/// boundary values of its checks: the new programs return what seccompiler's returned.
#[test]
fn every_profile_matches_the_seccompiler_oracle() {
    let top = largest_known_nr() + 20;
    for (key, new, old) in pairs() {
        for nr in 0..=top {
            let checked = syscalls::name(i64::from(nr))
                .map(|n| rules_of(new.rules(), n))
                .unwrap_or_default();
            let vectors = if checked.is_empty() {
                plain_vectors()
            } else {
                arg_vectors(checked, 20_000)
            };
            for args in &vectors {
                assert_same(new, old, X86_64, nr, args);
            }
        }
        for nr in odd_numbers() {
            for args in &plain_vectors() {
                assert_same(new, old, X86_64, nr, args);
            }
        }
        for nr in (0..20).chain([102, 120, 359, 383]) {
            for args in &plain_vectors() {
                assert_same(new, old, I386, nr, args);
                assert_eq!(
                    new.evaluate(I386, nr as i32, args),
                    Verdict::Kill,
                    "{key:?}"
                );
            }
        }
    }
}

/// Every boundary value of every check of every profile, in one pool for random vectors.
fn value_pool() -> &'static Vec<u64> {
    static P: OnceLock<Vec<u64>> = OnceLock::new();
    P.get_or_init(|| {
        let mut s = BTreeSet::new();
        for (_, p, _) in pairs() {
            for rs in p.rules().allow.values().chain(p.rules().eperm.values()) {
                for c in rs.iter().flat_map(|r| &r.checks) {
                    s.extend(boundary_values(c));
                }
            }
        }
        s.into_iter().collect()
    })
}

fn any_arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<prop::sample::Index>().prop_map(|i| *i.get(value_pool())),
        1 => any::<u64>(),
        1 => 0..64u64,
        1 => (any::<u32>(), any::<prop::sample::Index>())
            .prop_map(|(h, i)| (u64::from(h) << 32) | (*i.get(value_pool()) & 0xffff_ffff)),
    ]
}

fn any_nr() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0..500u32,
        1 => any::<u32>(),
        1 => X32_BIT..X32_BIT + 600,
    ]
}

fn any_arch() -> impl Strategy<Value = u32> {
    prop_oneof![8 => Just(X86_64), 1 => Just(I386), 1 => any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Random numbers, architectures and arguments (biased to the checks' boundaries).
    #[test]
    fn random_calls_match_the_seccompiler_oracle(
        which in any::<prop::sample::Index>(),
        arch in any_arch(),
        nr in any_nr(),
        args in prop::array::uniform6(any_arg()),
    ) {
        let (_, new, old) = which.get(pairs());
        let nr_i = nr as i32;
        prop_assert_eq!(run_bpf(&new.allowlist, arch, nr_i, &args), run_bpf(&old.allowlist, arch, nr_i, &args));
        prop_assert_eq!(run_bpf(&new.eperm, arch, nr_i, &args), run_bpf(&old.eperm, arch, nr_i, &args));
        prop_assert_eq!(new.evaluate(arch, nr_i, &args), old.evaluate(arch, nr_i, &args));
    }
}

/// Every program of every profile has the shape the kernel and the runtime's merge accept.
#[test]
fn every_program_is_well_formed() {
    for (key, new, _) in pairs() {
        for p in [&new.allowlist, &new.eperm] {
            assert_well_formed(p);
        }
        // No trampolines are needed at these sizes: every `ja` would be one.
        let ja = new
            .allowlist
            .iter()
            .chain(&new.eperm)
            .filter(|i| i.code == JA);
        assert_eq!(ja.count(), 0, "{key:?}");
    }
}

// ---------------------------------------------------------------- size and depth

/// Instructions executed (and the result) for one call: the dispatch depth.
fn steps(prog: &[sock_filter], nr: u32, args: &[u64; 6]) -> (u32, usize) {
    run_bpf_counted(prog, X86_64, nr as i32, args).expect("a program the interpreter knows")
}

/// The `hardened` programs (allowlist + EPERM) are about an eighth of seccompiler's, every tier
/// is far smaller, and a call without argument rules runs a logarithmic number of instructions.
#[test]
fn programs_are_compact_and_shallow() {
    println!(
        "tier       sockets        new allow+eperm   seccompiler allow+eperm   max steps new/old"
    );
    for (key, new, old) in pairs().iter().filter(|(k, ..)| k.deny.is_empty()) {
        let (n, o) = (
            new.allowlist.len() + new.eperm.len(),
            old.allowlist.len() + old.eperm.len(),
        );
        let mut deepest = (0, 0);
        for nr in 0..=largest_known_nr() + 20 {
            let unchecked = syscalls::name(i64::from(nr))
                .is_none_or(|name| rules_of(new.rules(), name).is_empty());
            if unchecked {
                for (d, p) in [(&mut deepest.0, new), (&mut deepest.1, old)] {
                    let s = steps(&p.allowlist, nr, &[0; 6]).1 + steps(&p.eperm, nr, &[0; 6]).1;
                    *d = (*d).max(s);
                }
            }
        }
        println!(
            "{:<10} {:<14} {:>4}+{:<4} = {:<5}   {:>5}+{:<5} = {:<5}        {}/{}",
            key.tier.name(),
            format!("{:?}", key.sockets),
            new.allowlist.len(),
            new.eperm.len(),
            n,
            old.allowlist.len(),
            old.eperm.len(),
            o,
            deepest.0,
            deepest.1
        );
        assert!(n * 100 < o * 25, "{key:?}: {n} vs {o}");
        // Two prefixes (6 + 4), two searches of depth <= 7 (under 128 ranges), two returns.
        assert!(deepest.0 <= 26, "{key:?}: {} steps", deepest.0);
        if key.tier == Tier::Hardened && key.sockets == SocketPolicy::UnixOnly {
            // Measured 116 + 104 = 220 (seccompiler: 1303 + 433 = 1736).
            assert!(n <= 230, "hardened: {n}");
            assert_eq!(o, 1736, "the oracle is the old compiler");
        }
    }
}

// ---------------------------------------------------------------- segments

fn table(entries: &[(u32, usize)], rule: &ArgRule) -> Vec<(u32, Vec<ArgRule>)> {
    entries
        .iter()
        .map(|&(nr, n)| (nr, vec![rule.clone(); n]))
        .collect()
}

fn some_rule() -> ArgRule {
    ArgRule {
        checks: vec![ArgCheck {
            index: 0,
            width: Width::Dword,
            op: Op::Eq,
            value: 1,
            meaning: "test",
        }],
    }
}

/// Adjacent unconditional calls merge into one range, gaps are the mismatch action, and a call
/// with rules is a range of its own even between two unconditional neighbours.
#[test]
fn segments_merge_runs_and_isolate_checked_calls() {
    let owned = table(
        &[(0, 0), (1, 0), (2, 0), (5, 0), (6, 1), (7, 0)],
        &some_rule(),
    );
    let t: BTreeMap<u32, &[ArgRule]> = owned.iter().map(|(n, r)| (*n, r.as_slice())).collect();
    let seg = |lo, leaf| Segment { lo, leaf };
    assert_eq!(
        segments(&t),
        [
            seg(0, Leaf::Match),
            seg(3, Leaf::Mismatch),
            seg(5, Leaf::Match),
            seg(6, Leaf::Args(0)),
            seg(7, Leaf::Match),
            seg(8, Leaf::Mismatch),
        ]
    );
    let top: BTreeMap<u32, &[ArgRule]> = [(u32::MAX, &[][..])].into_iter().collect();
    assert_eq!(
        segments(&top),
        [seg(0, Leaf::Mismatch), seg(u32::MAX, Leaf::Match)]
    );
    assert_eq!(segments(&BTreeMap::new()), [seg(0, Leaf::Mismatch)]);
}

/// An empty table is the mismatch action for every number (the prefix still runs).
#[test]
fn an_empty_table_returns_the_mismatch_action() {
    let actions = Actions {
        on_match: 1,
        mismatch: 2,
    };
    let p = compile_filter(&[stmt(LD_W_ABS, 0)], &BTreeMap::new(), actions).unwrap();
    assert_well_formed(&p);
    for nr in [0, 1, 500, u32::MAX] {
        assert_eq!(run_bpf(&p, X86_64, nr as i32, &[0; 6]), Some(2));
    }
}

/// What seccompiler refused is refused: a rule with no checks, an argument index above 5.
#[test]
fn malformed_rules_are_errors_as_before() {
    let mut bad_index = some_rule();
    bad_index.checks[0].index = 6;
    for rule in [ArgRule { checks: vec![] }, bad_index] {
        let r = SyscallRules {
            allow: [("ioctl".to_string(), vec![rule])].into_iter().collect(),
            eperm: BTreeMap::new(),
        };
        assert!(compile(r.clone()).is_err(), "{r:?}");
        assert!(compile_with_seccompiler(r).is_err());
    }
}

/// A program over the kernel's 4096 instructions is an error, not a failed install later; one
/// just under it compiles (and needs trampolines everywhere).
#[test]
fn the_4096_instruction_limit_is_kept() {
    let program = |rules: u64| {
        let eq = |v| ArgRule {
            checks: vec![check(0, Width::Qword, Op::Eq, v)],
        };
        SyscallRules {
            allow: [("read".to_string(), (0..rules).map(eq).collect())]
                .into_iter()
                .collect(),
            eperm: BTreeMap::new(),
        }
    };
    // 6 guard + 2 dispatch + 4 per rule + 2 returns, plus a trampoline for each rule more than
    // 255 instructions from the ALLOW return (all but the last 64).
    let fits = compile(program(800)).unwrap();
    assert_eq!(fits.allowlist.len(), 6 + 2 + 4 * 800 + 2 + (800 - 64));
    assert_well_formed(&fits.allowlist);
    let err = compile(program(900)).unwrap_err();
    assert!(err.to_string().contains("4096"), "{err}");
}

// ---------------------------------------------------------------- trampolines

/// `ld nr; jeq 7` with one branch `distance` instructions away (returning 1) and the other
/// falling through to `RET 2`, in either orientation.
fn one_jump(distance: usize, far_when_equal: bool) -> Vec<sock_filter> {
    let mut asm = Asm::default();
    let far = asm.label();
    asm.insn(stmt(LD_W_ABS, 0));
    if far_when_equal {
        asm.jump(JEQ_K, 7, Target::At(far), Target::Next);
    } else {
        asm.jump(JEQ_K, 7, Target::Next, Target::At(far));
    }
    for _ in 0..distance - 1 {
        asm.insn(stmt(LD_W_ABS, 0));
    }
    asm.insn(stmt(RET_K, 2));
    asm.mark(far);
    asm.insn(stmt(RET_K, 1));
    asm.assemble().unwrap()
}

/// 255 is the last distance a conditional jump reaches; 256 needs one `ja` trampoline, on
/// either branch, and both branches still go where they should.
#[test]
fn a_jump_past_255_instructions_goes_through_a_trampoline() {
    for far_when_equal in [true, false] {
        let (hit, miss) = if far_when_equal { (1, 2) } else { (2, 1) };
        for (distance, trampolines) in [(255, 0), (256, 1), (300, 1), (3000, 1)] {
            let p = one_jump(distance, far_when_equal);
            assert_well_formed(&p);
            assert_eq!(p.len(), distance + 3 + trampolines, "{distance}");
            assert_eq!(p.iter().filter(|i| i.code == JA).count(), trampolines);
            assert_eq!(run_bpf(&p, X86_64, 7, &[0; 6]), Some(hit), "{distance}");
            assert_eq!(run_bpf(&p, X86_64, 8, &[0; 6]), Some(miss), "{distance}");
        }
    }
}

/// Both branches far: two trampolines. And a jump exactly at the limit that a later jump's
/// trampoline pushes past it gets one too (the layout is iterated to a fixpoint).
#[test]
fn trampolines_cascade_to_a_fixpoint() {
    let mut asm = Asm::default();
    let (x, y, z) = (asm.label(), asm.label(), asm.label());
    asm.insn(stmt(LD_W_ABS, 0));
    asm.jump(JEQ_K, 7, Target::At(x), Target::Next); // at 1; x at 257: offset 255
    asm.jump(JEQ_K, 8, Target::At(y), Target::Next); // at 2; y is far: needs a trampoline
    asm.jump(JEQ_K, 9, Target::At(y), Target::At(z)); // both far
    for _ in 0..252 {
        asm.insn(stmt(LD_W_ABS, 0));
    }
    asm.insn(stmt(RET_K, 3));
    asm.mark(x);
    asm.insn(stmt(RET_K, 1));
    for _ in 0..10 {
        asm.insn(stmt(LD_W_ABS, 0));
    }
    asm.insn(stmt(RET_K, 4));
    asm.mark(y);
    asm.insn(stmt(RET_K, 2));
    asm.mark(z);
    asm.insn(stmt(RET_K, 5));
    let p = asm.assemble().unwrap();
    assert_well_formed(&p);
    assert_eq!(p.iter().filter(|i| i.code == JA).count(), 1 + 1 + 2);
    for (nr, want) in [(7, 1), (8, 2), (9, 2), (10, 5)] {
        assert_eq!(run_bpf(&p, X86_64, nr, &[0; 6]), Some(want), "nr {nr}");
    }
}

/// A backward or dangling label is an error, not a wrong program.
#[test]
fn unplaced_or_backward_labels_are_errors() {
    let mut asm = Asm::default();
    let l = asm.label();
    asm.jump(JEQ_K, 1, Target::At(l), Target::Next);
    asm.insn(stmt(RET_K, 0));
    assert!(asm.assemble().is_err());
    let mut asm = Asm::default();
    let l = asm.label();
    asm.mark(l);
    asm.insn(stmt(LD_W_ABS, 0));
    asm.jump(JEQ_K, 1, Target::At(l), Target::Next);
    asm.insn(stmt(RET_K, 0));
    assert!(asm.assemble().is_err());
}

fn check(index: u8, width: Width, op: Op, value: u64) -> ArgCheck {
    ArgCheck {
        index,
        width,
        op,
        value,
        meaning: "synthetic",
    }
}

/// Rules long enough that argument blocks span far more than 255 instructions: every width and
/// operator, values with both halves in use, several rules per call, a long conjunction.
fn synthetic_rules() -> SyscallRules {
    let ops = |i: u64| match i % 5 {
        0 => Op::Eq,
        1 => Op::Ne,
        2 => Op::Lt,
        3 => Op::Gt,
        _ => Op::MaskedEq {
            mask: 0x0000_00f0_0000_ff0f ^ (i << 36),
        },
    };
    let rule = |seed: u64, n: u64| ArgRule {
        checks: (0..n)
            .map(|j| {
                let i = seed * 7 + j;
                let width = if i.is_multiple_of(3) {
                    Width::Dword
                } else {
                    Width::Qword
                };
                let value = ((i % 4) << 32) | ((i * 0x1001) % 0x3_0000);
                check((i % 3) as u8, width, ops(i), value)
            })
            .collect(),
    };
    let many = |base: u64, rules: u64, checks: u64| -> Vec<ArgRule> {
        (0..rules).map(|r| rule(base + r, checks)).collect()
    };
    let mut allow: BTreeMap<String, Vec<ArgRule>> = syscalls::all_names()
        .filter(|n| syscalls::number(n).is_some_and(|nr| nr % 3 != 0))
        .map(|n| (n.to_string(), Vec::new()))
        .collect();
    allow.insert("read".into(), many(0, 30, 3));
    allow.insert("ioctl".into(), many(100, 25, 2));
    allow.insert("socket".into(), vec![rule(500, 40)]);
    allow.insert("personality".into(), many(900, 3, 1));
    let mut eperm: BTreeMap<String, Vec<ArgRule>> = syscalls::all_names()
        .filter(|n| syscalls::number(n).is_some_and(|nr| nr % 7 == 1))
        .map(|n| (n.to_string(), Vec::new()))
        .collect();
    eperm.insert("ioctl".into(), many(300, 40, 2));
    eperm.insert("write".into(), many(700, 20, 3));
    SyscallRules { allow, eperm }
}

/// The synthetic rule set needs trampolines in both programs and still evaluates exactly like
/// seccompiler's programs, for the boundary values of its checks and for every number.
#[test]
fn long_argument_blocks_use_trampolines_and_still_match_the_oracle() {
    let r = synthetic_rules();
    let new = compile(r.clone()).unwrap();
    let old = compile_with_seccompiler(r.clone()).unwrap();
    println!(
        "synthetic: new {}+{}, seccompiler {}+{}",
        new.allowlist.len(),
        new.eperm.len(),
        old.allowlist.len(),
        old.eperm.len()
    );
    for p in [&new.allowlist, &new.eperm] {
        assert_well_formed(p);
        assert!(
            p.len() > 600,
            "long enough to need trampolines: {}",
            p.len()
        );
        assert!(p.iter().any(|i| i.code == JA), "trampolines used");
    }
    for name in ["read", "ioctl", "socket", "personality", "write"] {
        let nr = syscalls::number(name).unwrap() as u32;
        for args in arg_vectors(rules_of(&r, name), 30_000) {
            assert_same(&new, &old, X86_64, nr, &args);
        }
    }
    for nr in (0..=largest_known_nr() + 20).chain(odd_numbers()) {
        for args in &plain_vectors() {
            assert_same(&new, &old, X86_64, nr, args);
        }
    }
}

/// Every operator at both widths, alone, first and last of a conjunction, and in the EPERM
/// program too, with values whose two halves differ: each matches seccompiler's condition for
/// every boundary argument. (A 64-bit check that is not last once jumped to the wrong place
/// when its high half already decided "holds"; the profiles' own rules never exercised it.)
#[test]
fn every_operator_and_width_matches_the_oracle_in_every_position() {
    let ops = [
        Op::Eq,
        Op::Ne,
        Op::Lt,
        Op::Gt,
        Op::MaskedEq {
            mask: 0x0000_0f00_f0f0_000f,
        },
        Op::MaskedEq { mask: 0xff },
        Op::MaskedEq {
            mask: 0xffff_0000_0000_0000,
        },
    ];
    let other = check(1, Width::Dword, Op::Ne, 5);
    for op in ops {
        for width in [Width::Dword, Width::Qword] {
            for value in [0, 7, 0x0000_0300_8000_0007, u64::MAX, 0xffff_ffff] {
                let c = check(2, width, op, value);
                let shapes = [
                    vec![c.clone()],
                    vec![c.clone(), other.clone()],
                    vec![other.clone(), c.clone()],
                ];
                for checks in shapes {
                    let rule = vec![ArgRule { checks }, some_rule()];
                    let r = SyscallRules {
                        allow: [("read".to_string(), rule.clone()), ("write".into(), vec![])]
                            .into_iter()
                            .collect(),
                        eperm: [("read".to_string(), rule.clone())].into_iter().collect(),
                    };
                    let new = compile(r.clone()).unwrap();
                    let old = compile_with_seccompiler(r).unwrap();
                    for args in arg_vectors(&rule, 20_000) {
                        for nr in [0, 1, 2] {
                            assert_same(&new, &old, X86_64, nr, &args);
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random arguments for the synthetic set's checked calls.
    #[test]
    fn synthetic_random_calls_match_the_oracle(
        name in prop::sample::select(vec!["read", "ioctl", "socket", "personality", "write"]),
        args in prop::array::uniform6(prop_oneof![
            any::<u64>(),
            (0..4u64, 0..0x3_0000u64).prop_map(|(h, l)| (h << 32) | l),
            (0..4u64, any::<u32>()).prop_map(|(h, l)| (h << 32) | u64::from(l)),
        ]),
    ) {
        static P: OnceLock<(SeccompProgram, SeccompProgram)> = OnceLock::new();
        let (new, old) = P.get_or_init(|| {
            let r = synthetic_rules();
            (compile(r.clone()).unwrap(), compile_with_seccompiler(r).unwrap())
        });
        let nr = syscalls::number(name).unwrap() as i32;
        prop_assert_eq!(run_bpf(&new.allowlist, X86_64, nr, &args), run_bpf(&old.allowlist, X86_64, nr, &args));
        prop_assert_eq!(run_bpf(&new.eperm, X86_64, nr, &args), run_bpf(&old.eperm, X86_64, nr, &args));
    }
}
