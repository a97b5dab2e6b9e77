//! Compiling a tier's seccomp rules to BPF versus the cached lookup every run actually does, and
//! the crate's compiler versus the seccompiler one it replaced (the `oracle` feature, which this
//! package's dev-dependency on itself turns on).
//!
//! `cargo bench -p perry-profiles --bench compile` — criterion groups `compile/<tier>` (rules ->
//! two BPF programs, what a per-run compile would cost), `seccompiler/<tier>` (the same with the
//! old compiler) and `cached/<tier>` (`Profile::for_tier` with the program already compiled:
//! caps, limits, Landlock rules, one cache lookup), then one summary line per tier with the
//! instruction counts of both compilers and the medians, measured in the same run.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use perry_policies::Tier;
use perry_profiles::oracle::compile_with_seccompiler;
use perry_profiles::seccomp::{self, SeccompKey, SocketPolicy};
use perry_profiles::{Grants, Profile};

fn key(tier: Tier) -> SeccompKey {
    SeccompKey {
        tier,
        sockets: if tier == Tier::Default {
            SocketPolicy::AnyFamily
        } else {
            SocketPolicy::UnixOnly
        },
        deny: Default::default(),
    }
}

fn compile(tier: Tier) -> seccomp::SeccompProgram {
    seccomp::compile(seccomp::rules(&key(tier)).unwrap()).unwrap()
}

fn compile_old(tier: Tier) -> seccomp::SeccompProgram {
    compile_with_seccompiler(seccomp::rules(&key(tier)).unwrap()).unwrap()
}

fn cached(tier: Tier) -> Profile {
    Profile::for_tier(tier, None, &Grants::default()).unwrap()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    for tier in Tier::ALL {
        g.bench_function(tier.name(), |b| b.iter(|| compile(black_box(tier))));
    }
    g.finish();
    let mut g = c.benchmark_group("seccompiler");
    for tier in Tier::ALL {
        g.bench_function(tier.name(), |b| b.iter(|| compile_old(black_box(tier))));
    }
    g.finish();
    let mut g = c.benchmark_group("cached");
    for tier in Tier::ALL {
        let _ = cached(tier); // compile once, as the first run of a tier does
        g.bench_function(tier.name(), |b| b.iter(|| cached(black_box(tier))));
    }
    g.finish();
}

criterion_group!(group, benches);

fn median(mut f: impl FnMut(), n: usize) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[n / 2]
}

fn main() {
    group();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    println!("\nsummary (medians of 200 in this run; BPF = allowlist+eperm instructions):");
    println!(
        "tier       allow  eperm  BPF new    BPF seccompiler  compile new  seccompiler  \
         speedup  cached     compile/cached"
    );
    for tier in Tier::ALL {
        let p = cached(tier);
        let old = compile_old(tier);
        let c = median(|| drop(black_box(compile(tier))), 200);
        let o = median(|| drop(black_box(compile_old(tier))), 200);
        let h = median(|| drop(black_box(cached(tier))), 200);
        println!(
            "{:<10} {:>5}  {:>5}  {:>4}+{:<4}  {:>5}+{:<5}      {:>9.3?}  {:>9.3?}  {:>6.1}x  \
             {:>9.3?}  {:>8.0}x",
            tier.name(),
            p.seccomp.rules().allowed_names().len(),
            p.seccomp.rules().eperm.len(),
            p.seccomp.allowlist.len(),
            p.seccomp.eperm.len(),
            old.allowlist.len(),
            old.eperm.len(),
            c,
            o,
            o.as_secs_f64() / c.as_secs_f64(),
            h,
            c.as_secs_f64() / h.as_secs_f64()
        );
    }
    // Both compile columns include building the rules (`seccomp::rules`), which is this much:
    let r = median(
        || drop(black_box(seccomp::rules(&key(Tier::Hardened)))),
        200,
    );
    println!("(of which seccomp::rules for hardened: {r:.3?})");
}
