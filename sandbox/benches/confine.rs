//! Per-run cost of confining a process with a precompiled tier profile, measured inside forked
//! children (the only place `confine::apply` may run: it is irreversible).
//!
//! `cargo bench -p perry-runtime --bench confine`. Each sample forks a child that times only its
//! own work with a monotonic clock and reports the nanoseconds through a pipe, so fork/wait are
//! not counted. Groups:
//! * `apply/<tier>`: `confine::apply` with the tier's cached profile (rlimits, securebits, caps,
//!   no_new_privs, Landlock, both seccomp filters) — what every run pays;
//! * `compile_then_apply/<tier>`: building the seccomp programs from the rules and then applying
//!   — what every run would pay without the per-tier cache (the peer);
//! * `seccomp_only/<tier>`: installing the two precompiled filters alone.
//!
//! A summary prints the medians and the ratio compile_then_apply / apply from the same run.
//! Run as root (the confinement drops capabilities the test user must hold).
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use perry_policies::Tier;
use perry_profiles::{Grants, Profile};
use perry_runtime::confine;

/// Forks; the child runs `f`, timing it, and writes the nanoseconds to a pipe; the parent
/// returns them. A child whose `f` fails exits 2 without writing, and the parent panics.
fn in_child(f: &dyn Fn() -> bool) -> Duration {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid two-int buffer.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the benchmark thread is the only one running user code while samples are taken;
    // the child only runs `f` (which may allocate) and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let t = Instant::now();
        let ok = f();
        let ns = t.elapsed().as_nanos() as u64;
        if ok {
            // SAFETY: writing 8 bytes from a live local to our end of the pipe.
            unsafe { libc::write(fds[1], (&ns as *const u64).cast(), 8) };
        }
        // SAFETY: leave the child at once, without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 2 }) };
    }
    // SAFETY: closing our copy of the write end, a descriptor we own.
    unsafe { libc::close(fds[1]) };
    let mut ns = 0u64;
    // SAFETY: reading at most 8 bytes into a live local.
    let n = unsafe { libc::read(fds[0], (&mut ns as *mut u64).cast(), 8) };
    // SAFETY: closing our read end; reaping our own child.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert_eq!(n, 8, "the confined child failed");
    Duration::from_nanos(ns)
}

fn profile(tier: Tier) -> Profile {
    Profile::for_tier(tier, None, &Grants::default()).unwrap()
}

fn apply(p: &Profile) -> bool {
    confine::apply(black_box(p)).is_ok()
}

fn compile_then_apply(p: &Profile) -> bool {
    let fresh = perry_profiles::seccomp::compile(p.seccomp.rules.clone()).unwrap();
    let mut q = p.clone();
    q.seccomp = std::sync::Arc::new(fresh);
    confine::apply(&q).is_ok()
}

fn seccomp_only(p: &Profile) -> bool {
    confine::install_seccomp(black_box(p)).is_ok()
}

fn sampled(b: &mut criterion::Bencher, f: &dyn Fn() -> bool) {
    b.iter_custom(|iters| (0..iters).map(|_| in_child(f)).sum());
}

fn benches(c: &mut Criterion) {
    let profiles: Vec<Profile> = Tier::ALL.into_iter().map(profile).collect();
    for (name, f) in [
        ("apply", apply as fn(&Profile) -> bool),
        ("compile_then_apply", compile_then_apply),
        ("seccomp_only", seccomp_only),
    ] {
        let mut g = c.benchmark_group(name);
        for p in &profiles {
            g.bench_function(p.tier.name(), |b| sampled(b, &|| f(p)));
        }
        g.finish();
    }
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = benches
}

fn median(f: &dyn Fn() -> bool, n: usize) -> Duration {
    let mut v: Vec<Duration> = (0..n).map(|_| in_child(f)).collect();
    v.sort();
    v[n / 2]
}

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    println!("\nsummary (medians of 100 forked children in this run):");
    println!("tier        apply       compile+apply  seccomp only  (compile+apply)/apply");
    for tier in Tier::ALL {
        let p = profile(tier);
        let a = median(&|| apply(&p), 100);
        let c = median(&|| compile_then_apply(&p), 100);
        let s = median(&|| seccomp_only(&p), 100);
        println!(
            "{:<10} {:>10.1?}  {:>12.1?}  {:>11.1?}  {:>8.1}x",
            tier.name(),
            a,
            c,
            s,
            c.as_secs_f64() / a.as_secs_f64()
        );
    }
}
