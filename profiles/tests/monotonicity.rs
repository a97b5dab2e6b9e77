//! Tier monotonicity: a stricter tier never permits what a looser one refuses, and a
//! configuration override never loosens a tier. Checked on the compiled BPF (what the kernel
//! runs), on capability sets, securebits and every limit.

use perry_policies::units::{ByteSize, HumanDuration};
use perry_policies::{Tier, TierOverride};
use perry_profiles::{Grants, NetworkMode, Profile, Verdict};
use proptest::prelude::*;

const X86_64: u32 = 0xC000_003E;

fn profile(tier: Tier, ov: Option<&TierOverride>) -> Profile {
    Profile::for_tier(tier, ov, &Grants::default()).unwrap()
}

fn network_rank(m: NetworkMode) -> u8 {
    match m {
        NetworkMode::Host => 0,
        NetworkMode::Granted => 1,
        NetworkMode::None => 2,
    }
}

/// `strict` is at least as strict as `loose` in everything but seccomp (checked separately).
fn assert_not_looser(strict: &Profile, loose: &Profile) {
    let ctx = format!("{} vs {}", strict.tier, loose.tier);
    let (c, d) = (&strict.caps, &loose.caps);
    for (s, l, set) in [
        (&c.bounding, &d.bounding, "bounding"),
        (&c.permitted, &d.permitted, "permitted"),
        (&c.effective, &d.effective, "effective"),
        (&c.inheritable, &d.inheritable, "inheritable"),
        (&c.ambient, &d.ambient, "ambient"),
    ] {
        assert!(
            s.iter().all(|x| l.contains(x)),
            "{ctx}: {set} caps {s:?} ⊄ {l:?}"
        );
    }
    assert_eq!(
        strict.securebits & loose.securebits,
        loose.securebits,
        "{ctx}: securebits"
    );
    assert!(strict.no_new_privs >= loose.no_new_privs, "{ctx}");
    assert!(strict.read_only_root >= loose.read_only_root, "{ctx}");
    assert!(strict.non_root >= loose.non_root, "{ctx}");
    assert!(
        strict.landlock.is_some() >= loose.landlock.is_some(),
        "{ctx}"
    );
    if let (Some(s), Some(l)) = (&strict.landlock, &loose.landlock) {
        assert!(s.required >= l.required, "{ctx}");
        assert!(s.writable().all(|p| l.writable().any(|q| q == p)), "{ctx}");
    }
    assert!(
        network_rank(strict.network) >= network_rank(loose.network),
        "{ctx}"
    );
    // (Not `spec.network`: DESIGN.md lets a *capability* grant hardened TCP, never isolated; that
    // is a per-run grant, and without one both tiers get the same empty network.)
    for (s, l) in strict.rlimits.iter().zip(&loose.rlimits) {
        assert_eq!(s.resource, l.resource);
        assert!(s.limit <= l.limit, "{ctx}: {:?}", s.resource);
    }
    let (s, l) = (&strict.cgroup, &loose.cgroup);
    assert!(s.memory_max <= l.memory_max, "{ctx}: memory");
    assert!(s.pids_max <= l.pids_max, "{ctx}: pids");
    assert!(s.cpu_quota_us <= l.cpu_quota_us, "{ctx}: cpu");
    assert!(strict.tmpfs_bytes <= loose.tmpfs_bytes, "{ctx}: tmpfs");
    let (s, l) = (&strict.spec.limits, &loose.spec.limits);
    assert!(
        s.timeout <= l.timeout && s.output <= l.output && s.nofile <= l.nofile,
        "{ctx}"
    );
}

fn seccomp_not_looser(strict: &Profile, loose: &Profile, arch: u32, nr: i32, args: &[u64; 6]) {
    let (s, l) = (
        strict.seccomp.evaluate(arch, nr, args),
        loose.seccomp.evaluate(arch, nr, args),
    );
    assert!(
        s.rank() >= l.rank(),
        "{} {s:?} is looser than {} {l:?} for nr {nr} args {args:x?}",
        strict.tier,
        loose.tier
    );
}

/// Deterministic: every pair of tiers, every syscall name, by the rule summaries.
#[test]
fn allowed_syscalls_of_a_stricter_tier_are_a_subset() {
    for (i, &loose) in Tier::ALL.iter().enumerate() {
        for &strict in &Tier::ALL[i..] {
            let (s, l) = (profile(strict, None), profile(loose, None));
            let (sa, la) = (
                s.seccomp.rules().allowed_names(),
                l.seccomp.rules().allowed_names(),
            );
            assert!(
                sa.is_subset(&la),
                "{strict} allows {:?} that {loose} does not",
                sa.difference(&la).collect::<Vec<_>>()
            );
            for name in perry_profiles::syscalls::all_names() {
                assert!(
                    s.seccomp.rules().access(name) <= l.seccomp.rules().access(name),
                    "{strict} vs {loose}: {name}"
                );
                for args in [
                    [0u64; 6],
                    [u64::MAX; 6],
                    [2, 1, 0, 0, 0, 0],
                    [1, 0x5412, 0, 0, 0, 0],
                ] {
                    let nr = perry_profiles::syscalls::number(name).unwrap() as i32;
                    seccomp_not_looser(&s, &l, X86_64, nr, &args);
                }
            }
            assert_not_looser(&s, &l);
        }
    }
    // The tiers really differ: each step removes something.
    for w in Tier::ALL.windows(2) {
        let (l, s) = (profile(w[0], None), profile(w[1], None));
        let fewer =
            s.seccomp.rules().allowed_names().len() < l.seccomp.rules().allowed_names().len();
        let socket_tighter = s.seccomp.evaluate_name("socket", &[2, 1, 0, 0, 0, 0])
            != l.seccomp.evaluate_name("socket", &[2, 1, 0, 0, 0, 0]);
        assert!(
            fewer || socket_tighter || s.caps != l.caps,
            "{} adds nothing over {}",
            w[1],
            w[0]
        );
    }
}

fn tier() -> impl Strategy<Value = Tier> {
    prop::sample::select(Tier::ALL.to_vec())
}

fn arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..64u64,
        Just(0x5412u64),
        Just(0x541c),
        Just(0xffff_ffff),
        Just(0x0040000),
        prop::sample::select(vec![
            0x0002_0000u64,
            0x0200_0000,
            0x0400_0000,
            0x0800_0000,
            0x1000_0000,
            0x2000_0000,
            0x4000_0000
        ])
        .prop_map(|clone_new| clone_new | 17),
        any::<u64>(),
    ]
}

fn call_strategy() -> impl Strategy<Value = (u32, i32, [u64; 6])> {
    (
        prop_oneof![9 => Just(X86_64), 1 => Just(0x4000_0003u32), 1 => any::<u32>()],
        prop_oneof![8 => 0..480i32, 1 => any::<i32>(), 1 => (0..480i32).prop_map(|n| n | 0x4000_0000)],
        prop::array::uniform6(arg()),
    )
}

fn known_syscall() -> impl Strategy<Value = String> {
    let names: Vec<String> = perry_profiles::syscalls::all_names()
        .map(str::to_string)
        .collect();
    prop::sample::select(names)
}

/// Any override, loosening or not: `effective_spec` must clamp, so the result is never looser.
fn any_override() -> impl Strategy<Value = TierOverride> {
    (
        prop::option::of(0..20_000u64),
        prop::option::of(1..10_000u32),
        prop::option::of(0.01..8.0f64),
        prop::option::of(1..200_000u64),
        prop::option::of(0..4096u64),
        prop::option::of(1..100_000u64),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::collection::vec(known_syscall(), 0..4),
    )
        .prop_map(
            |(mem, pids, cpus, secs, tmp, nofile, ll, net, deny)| TierOverride {
                memory: mem.map(ByteSize::mib),
                pids,
                cpus,
                timeout: secs.map(HumanDuration::from_secs),
                tmpfs: tmp.map(ByteSize::mib),
                nofile,
                output: None,
                require_landlock: ll,
                network: net,
                deny_syscalls: deny,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// For tiers T stricter than S, the kernel's verdict under T is never looser than under S,
    /// for any call from any architecture with any arguments.
    #[test]
    fn stricter_tier_verdict_is_never_looser(a in tier(), b in tier(), (arch, nr, args) in call_strategy()) {
        let (loose, strict) = if a <= b { (a, b) } else { (b, a) };
        seccomp_not_looser(&profile(strict, None), &profile(loose, None), arch, nr, &args);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// An override only tightens: against the tier without it (every field, and seccomp for
    /// random calls), and the order between tiers survives the same override on both.
    #[test]
    fn overrides_only_tighten(
        t in tier(),
        other in tier(),
        ov in any_override(),
        calls in prop::collection::vec(call_strategy(), 20),
    ) {
        let base = profile(t, None);
        let tightened = profile(t, Some(&ov));
        assert_not_looser(&tightened, &base);
        for (arch, nr, args) in &calls {
            seccomp_not_looser(&tightened, &base, *arch, *nr, args);
        }
        // Every denied name is refused, and with EPERM (clone3 stays ENOSYS).
        for d in &ov.deny_syscalls {
            let v = tightened.seccomp.evaluate_name(d, &[0; 6]).unwrap();
            let want = if d == "clone3" { Verdict::Errno(38) } else { Verdict::Errno(1) };
            prop_assert_eq!(v, want, "{}", d);
        }
        // Accepted or not by `check_tightens`, applying it never loosens; when the config loader
        // would accept it, the same holds across tiers.
        let (loose, strict) = if t <= other { (t, other) } else { (other, t) };
        let (l, s) = (profile(loose, Some(&ov)), profile(strict, Some(&ov)));
        assert_not_looser(&s, &l);
        for (arch, nr, args) in &calls {
            seccomp_not_looser(&s, &l, *arch, *nr, args);
        }
    }
}

/// The loader rejects loosening overrides with the field named (the other half of "overrides
/// only tighten": a loosening value never even reaches `for_tier`).
#[test]
fn loosening_overrides_are_rejected_by_name() {
    for t in Tier::ALL {
        let spec = t.spec();
        let ov = TierOverride {
            pids: Some(spec.limits.pids + 1),
            ..Default::default()
        };
        assert_eq!(ov.check_tightens(t).unwrap_err().0, "pids");
        let ov = TierOverride {
            nofile: Some(spec.limits.nofile * 2),
            ..Default::default()
        };
        assert_eq!(ov.check_tightens(t).unwrap_err().0, "nofile");
        // Even if one slipped through, the profile keeps the tier's value.
        assert_eq!(profile(t, Some(&ov)).spec.limits.nofile, spec.limits.nofile);
    }
}
