//! What installing a tier's seccomp programs costs the kernel (classic BPF checked, converted to
//! eBPF and JITed on every `seccomp(SECCOMP_SET_MODE_FILTER)`), for the crate's compiler versus
//! the seccompiler programs it replaced. Every sandbox start pays this once per process.
//!
//! `cargo bench -p perry-profiles --bench install [-- N]` (N samples per line, default 300):
//! each sample forks a child that sets `PR_SET_NO_NEW_PRIVS`, times the `seccomp(2)` call(s)
//! with the monotonic clock, reports through a pipe and exits. Three ways of installing:
//! `allowlist`, `eperm` (the two filters `confine` stacks, timed separately) and `merged` (one
//! program, allowlist then EPERM filter with each `RET ALLOW` of the first turned into a jump to
//! the second: what the native runner installs). Medians and 90th percentiles in microseconds.
//!
//! Not a criterion benchmark: the timed work happens in forked children, and criterion's
//! threads would make `fork` in the parent unsafe.

use std::time::{Duration, Instant};

use perry_policies::Tier;
use perry_profiles::oracle::compile_with_seccompiler;
use perry_profiles::seccomp::{self, SeccompKey, SeccompProgram, SocketPolicy};
use seccompiler::sock_filter;

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const sock_filter,
}

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

/// One program equivalent to stacking `p`'s two filters (the runtime's merge, minus its
/// ERRNO -> USER_NOTIF rewrite, which does not change the size).
fn merged(p: &SeccompProgram) -> Vec<sock_filter> {
    let first = p.allowlist.len();
    let mut out: Vec<sock_filter> = p
        .allowlist
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.code == 0x06 && f.k & 0xffff_0000 == 0x7fff_0000 {
                sock_filter {
                    code: 0x05,
                    jt: 0,
                    jf: 0,
                    k: (first - i - 1) as u32,
                }
            } else {
                f.clone()
            }
        })
        .collect();
    out.extend(p.eperm.iter().cloned());
    out
}

/// Forks a child that installs `progs` in order and reports each `seccomp(2)` call's duration.
fn install_in_child(progs: &[&[sock_filter]]) -> Vec<Duration> {
    assert!(progs.len() <= 4);
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) into a two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let fprogs: Vec<SockFprog> = progs
        .iter()
        .map(|p| SockFprog {
            len: p.len() as u16,
            filter: p.as_ptr(),
        })
        .collect();
    // SAFETY: this bench is single-threaded; the child only makes raw syscalls on memory
    // allocated before the fork, reads the vDSO clock, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        child(fds[1], &fprogs);
    }
    // SAFETY: closing our copy of the write end; reading into a stack buffer; reaping the child.
    unsafe {
        libc::close(fds[1]);
        let mut buf = [0u64; 4];
        let want = 8 * progs.len();
        let got = libc::read(fds[0], buf.as_mut_ptr().cast(), want);
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(
            got as usize, want,
            "child failed to install (status {status:#x})"
        );
        buf[..progs.len()]
            .iter()
            .map(|&ns| Duration::from_nanos(ns))
            .collect()
    }
}

/// The child's side of [`install_in_child`]: never returns.
fn child(w: i32, fprogs: &[SockFprog]) -> ! {
    let mut out = [0u64; 4];
    // SAFETY: integer prctl, then seccomp(2) with programs that outlive the calls (the parent's
    // copy-on-write memory); write(2) from a stack buffer; _exit.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            libc::_exit(2);
        }
        for (slot, f) in out.iter_mut().zip(fprogs) {
            let t = Instant::now();
            let r = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                f as *const SockFprog,
            );
            *slot = t.elapsed().as_nanos() as u64;
            if r != 0 {
                libc::_exit(3);
            }
        }
        libc::write(w, out.as_ptr().cast(), 8 * fprogs.len());
        libc::_exit(0);
    }
}

/// (median, 90th percentile) in microseconds.
fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(v[v.len() / 2]), us(v[v.len() * 9 / 10]))
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    println!("seccomp(2) install cost, {n} forked children per line (microseconds)");
    println!(
        "tier       compiler     insns (a+e / merged)   allowlist p50/p90   eperm p50/p90   \
         merged p50/p90"
    );
    for tier in Tier::ALL {
        let rules = seccomp::rules(&key(tier)).unwrap();
        let new = seccomp::compile(rules.clone()).unwrap();
        let old = compile_with_seccompiler(rules).unwrap();
        for (name, p) in [("seccompiler", &old), ("perry bpf", &new)] {
            let m = merged(p);
            let (mut a, mut e, mut one) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..n {
                let two = install_in_child(&[&p.allowlist, &p.eperm]);
                a.push(two[0]);
                e.push(two[1]);
                one.push(install_in_child(&[&m])[0]);
            }
            let (a, e, one) = (stats(a), stats(e), stats(one));
            println!(
                "{:<10} {:<12} {:>5}+{:<4} / {:<5}       {:>6.1} / {:<6.1}     {:>5.1} / {:<5.1}   \
                 {:>6.1} / {:<6.1}",
                tier.name(),
                name,
                p.allowlist.len(),
                p.eperm.len(),
                m.len(),
                a.0,
                a.1,
                e.0,
                e.1,
                one.0,
                one.1
            );
        }
    }
}
