//! Per-run cost of a tier's confinement, the production [`ProfileStep`]: preparing it in the
//! parent, and applying it inside forked children (it is irreversible).
//!
//! `cargo bench -p perry-runtime --bench confine`. Each child sample forks a child that times
//! only its own work with a monotonic clock and reports the nanoseconds through a pipe, so
//! fork/wait are not counted. Groups:
//! * `new/<tier>`: `ProfileStep::new` from the tier's cached profile — what the parent pays per
//!   run (the merged notification program is precompiled with the tier's programs);
//! * `compile_then_new/<tier>`: compiling the seccomp programs (and their merge) from the rules,
//!   then `ProfileStep::new` — what every run would pay without the per-tier cache (the peer);
//! * `apply/<tier>`: `FinalStep::apply` in a child (rlimits, securebits, caps, no_new_privs,
//!   Landlock, the merged filter with its listener handed over a socket) — what the workload
//!   pays before `execve`.
//!
//! A summary prints the medians and the ratio compile_then_new / new from the same run.
//! Run as root (the confinement drops capabilities the test user must hold).
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use perry_policies::Tier;
use perry_profiles::{Grants, Profile};
use perry_runtime::native::{FinalStep, ProfileStep, StepChannel};

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

fn new(p: &Profile) -> Duration {
    let t = Instant::now();
    let step = ProfileStep::new(black_box(p)).unwrap();
    let d = t.elapsed();
    drop(black_box(step));
    d
}

fn compile_then_new(p: &Profile) -> Duration {
    let t = Instant::now();
    let fresh = perry_profiles::seccomp::compile(p.seccomp.rules().clone()).unwrap();
    let mut q = p.clone();
    q.seccomp = std::sync::Arc::new(fresh);
    let step = ProfileStep::new(&q).unwrap();
    let d = t.elapsed();
    drop(black_box(step));
    d
}

/// Applies `step` in the calling (forked) child, handing the listener over a fresh socket.
fn apply(step: &ProfileStep) -> bool {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two fds into the array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, sv.as_mut_ptr()) };
    r == 0 && step.apply(&StepChannel { sock: sv[1] }).is_ok()
}

fn benches(c: &mut Criterion) {
    let profiles: Vec<Profile> = Tier::ALL.into_iter().map(profile).collect();
    for (name, f) in [
        ("new", new as fn(&Profile) -> Duration),
        ("compile_then_new", compile_then_new),
    ] {
        let mut g = c.benchmark_group(name);
        for p in &profiles {
            g.bench_function(p.tier.name(), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| f(p)).sum())
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("apply");
    for p in &profiles {
        let Ok(step) = ProfileStep::new(p) else {
            continue; // refused up front on this host (untrusted without Landlock)
        };
        g.bench_function(p.tier.name(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| in_child(&|| apply(&step))).sum())
        });
    }
    g.finish();
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = benches
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    println!("\nsummary (medians of 100 samples in this run; apply in forked children):");
    println!("tier        new         compile+new   apply        (compile+new)/new");
    for tier in Tier::ALL {
        let p = profile(tier);
        let n = median((0..100).map(|_| new(&p)).collect());
        let c = median((0..100).map(|_| compile_then_new(&p)).collect());
        let a = match ProfileStep::new(&p) {
            Ok(step) => format!(
                "{:>10.1?}",
                median((0..100).map(|_| in_child(&|| apply(&step))).collect())
            ),
            Err(e) => format!("refused: {e}"),
        };
        println!(
            "{:<10} {:>10.1?}  {:>12.1?}  {a}  {:>8.1}x",
            tier.name(),
            n,
            c,
            c.as_secs_f64() / n.as_secs_f64()
        );
    }
}
