//! The four-tier attack matrix, as the tiers really run: `perry-confine-probe` (which applies
//! nothing itself) is the workload of `native::run` under the production [`ProfileStep`] of
//! each tier, as uid 0 of the sandbox (the strongest position a workload can hold: non-root
//! tiers normally run it as 65534), attempts each attack and reports the errno the kernel gave.
//! Every guarantee of the tier table is checked by the attack that would break it, and ordinary
//! work (threads under glibc, fork/exec, busybox, python3) is checked to keep working. A tier
//! this host cannot run (`untrusted` needs Landlock) must be refused up front with its reason.
//!
//! The sandbox's root holds the probe; the host's `/usr` is bound read-only for the dynamic
//! loader, glibc, coreutils, busybox and python3.

mod native_support;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};

use native_support::{text, TestRoot};
use perry_policies::{Tier, TierOverride};
use perry_profiles::{Grants, NetworkGrant, Profile};
use perry_runtime::native::{
    landlock_abi, run, BindMount, LandlockOutcome, Limits, Outcome, ProfileStep, RunSpec,
};

const PROBE: &str = env!("CARGO_BIN_EXE_perry-confine-probe");
const TIERS: [Tier; 4] = [
    Tier::Default,
    Tier::Isolated,
    Tier::Hardened,
    Tier::Untrusted,
];
const SIGSYS: i32 = 31;

/// A root with the probe at `/probe`, `bin`, `lib`, `lib64` and `sbin` linked into `/usr` (as
/// on the host), mount points for the host's `/usr` and two scratch directories.
fn matrix_root() -> TestRoot {
    // Beside the probe binary (same filesystem), so it can be hard-linked in: a copy leaves a
    // write fd that a sandbox forked meanwhile by a parallel test inherits, and exec of the
    // probe then fails with ETXTBSY.
    let dir = tempfile::Builder::new()
        .prefix("perry-confine-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in ["proc", "dev", "tmp", "usr", "etc", "granted", "other"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for l in ["bin", "lib", "lib64", "sbin"] {
        symlink(format!("usr/{l}"), rootfs.join(l)).unwrap();
    }
    if std::fs::hard_link(PROBE, rootfs.join("probe")).is_err() {
        std::fs::copy(PROBE, rootfs.join("probe")).unwrap();
    }
    std::fs::write(rootfs.join("etc/hostname"), "sandbox\n").unwrap();
    let state = dir.path().join("state");
    TestRoot { dir, rootfs, state }
}

/// The tier's production step with `ov` and `grants`, or why the tier cannot run here.
fn step(tier: Tier, ov: Option<&TierOverride>, grants: &Grants) -> Result<ProfileStep, String> {
    let p = Profile::for_tier(tier, ov, grants).map_err(|e| format!("profile: {e}"))?;
    ProfileStep::new(&p).map_err(|e| e.to_string())
}

/// The tiers this host can run; a refused tier must say why (only `untrusted` may be refused,
/// and only for want of Landlock).
fn runnable() -> Vec<(Tier, ProfileStep)> {
    let mut out = Vec::new();
    for tier in TIERS {
        match step(tier, None, &Grants::default()) {
            Ok(s) => out.push((tier, s)),
            Err(why) => {
                assert_eq!(tier, Tier::Untrusted, "{tier:?} refused: {why}");
                assert!(
                    why.contains("Landlock"),
                    "refused without its reason: {why}"
                );
                eprintln!("{tier:?} refused up front on this host: {why}");
            }
        }
    }
    out
}

/// A spec running the probe with `probes` as uid 0, the tier's limits, the host's `/usr`.
fn spec(r: &TestRoot, tier: Tier, probes: &[&str]) -> RunSpec {
    let mut argv = vec!["/probe".to_string()];
    argv.extend(probes.iter().map(|p| p.to_string()));
    let mut s = r.spec(argv);
    s.uid = 0;
    s.gid = 0;
    s.limits = Limits::from_tier(&tier.spec().limits);
    s.mounts = vec![BindMount::read_only("/usr", "/usr")];
    s
}

/// Runs `spec` under `step`; the probe must exit 0 and print one JSON object.
fn probe_run(s: &RunSpec, step: &ProfileStep) -> BTreeMap<String, String> {
    let o = run(s, step).expect("the sandbox starts");
    assert_eq!(
        o.exit_code,
        Some(0),
        "probe failed: {o:?}\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&o.stdout), text(&o.stderr)))
}

fn probe(
    r: &TestRoot,
    tier: Tier,
    step: &ProfileStep,
    probes: &[&str],
) -> BTreeMap<String, String> {
    probe_run(&spec(r, tier, probes), step)
}

fn expect(tier: Tier, got: &BTreeMap<String, String>, want: &[(&str, &str)]) {
    for (p, w) in want {
        assert_eq!(
            got.get(*p).map(String::as_str),
            Some(*w),
            "{tier:?}: probe {p}: {got:?}"
        );
    }
}

// ------------------------------------------------------------------ forbidden calls per tier

#[test]
fn every_tier_refuses_namespaces_mounts_and_kernel_attack_surface() {
    let r = matrix_root();
    for (tier, step) in runnable() {
        let got = probe(
            &r,
            tier,
            &step,
            &[
                "unshare",
                "unshare_user",
                "mount",
                "clone_newns",
                "clone_newuser",
                "keyctl",
                "bpf",
                "io_uring_setup",
                "clone3",
            ],
        );
        expect(
            tier,
            &got,
            &[
                ("unshare", "errno:1"),
                ("unshare_user", "errno:1"),
                ("mount", "errno:1"),
                ("clone_newns", "errno:1"),
                ("clone_newuser", "errno:1"),
                ("keyctl", "errno:1"),
                ("bpf", "errno:1"),
                ("io_uring_setup", "errno:1"),
                // ENOSYS, not EPERM: glibc then falls back to clone, which is checked by flags.
                ("clone3", "errno:38"),
            ],
        );
    }
}

#[test]
fn threads_fork_and_exec_keep_working_in_every_tier() {
    let r = matrix_root();
    let sh = "exec:/bin/busybox,sh,-c,echo hi; ls / | wc -l";
    for (tier, step) in runnable() {
        let got = probe(&r, tier, &step, &["clone3", "thread", "fork", sh]);
        // glibc's pthread_create tries clone3 first; ENOSYS makes it fall back to clone.
        expect(
            tier,
            &got,
            &[("clone3", "errno:38"), ("thread", "ok"), ("fork", "ok")],
        );
        assert!(
            got[sh].starts_with("exit:0;out:hi\n"),
            "{tier:?}: busybox: {}",
            got[sh]
        );
    }
}

#[test]
fn python3_threads_run_in_every_tier() {
    let r = matrix_root();
    let py = "exec:/usr/bin/python3,-c,import threading;t=threading.Thread(target=lambda:print(7));t.start();t.join()";
    for (tier, step) in runnable() {
        let got = probe(&r, tier, &step, &[py]);
        assert_eq!(got[py], "exit:0;out:7", "{tier:?}");
    }
}

#[test]
fn inet_sockets_are_refused_from_isolated_up_and_unix_sockets_are_not() {
    let r = matrix_root();
    let probes = [
        "socket_inet",
        "socket_inet6",
        "socket_inet_udp",
        "socket_unix",
        "socketpair_unix",
    ];
    for (tier, step) in runnable() {
        let got = probe(&r, tier, &step, &probes);
        if tier == Tier::Default {
            expect(
                tier,
                &got,
                &[
                    ("socket_inet", "ok"),
                    ("socket_inet6", "ok"),
                    ("socket_inet_udp", "ok"),
                ],
            );
        } else {
            expect(
                tier,
                &got,
                &[
                    ("socket_inet", "errno:1"),
                    ("socket_inet6", "errno:1"),
                    ("socket_inet_udp", "errno:1"),
                    ("socket_unix", "ok"),
                    ("socketpair_unix", "ok"),
                ],
            );
        }
    }
}

#[test]
fn ptrace_personality_and_tiocsti_are_refused_from_hardened_up() {
    let r = matrix_root();
    let probes = [
        "ptrace",
        "personality_set",
        "personality_query",
        "tiocsti",
        "tiocsti_hi",
    ];
    for (tier, step) in runnable() {
        let got = probe(&r, tier, &step, &probes);
        if tier < Tier::Hardened {
            // Let through to the kernel: ESRCH (no such pid), ENOTTY (stdin is a pipe).
            expect(
                tier,
                &got,
                &[
                    ("ptrace", "errno:3"),
                    ("tiocsti", "errno:25"),
                    ("personality_query", "ok"),
                ],
            );
            assert_ne!(got["personality_set"], "ok", "{tier:?}: ADDR_NO_RANDOMIZE");
        } else {
            expect(
                tier,
                &got,
                &[
                    ("ptrace", "errno:1"),
                    ("personality_set", "errno:1"),
                    ("personality_query", "ok"),
                    ("tiocsti", "errno:1"),
                    // The command is an int: upper bits set must not smuggle TIOCSTI through.
                    ("tiocsti_hi", "errno:1"),
                ],
            );
        }
    }
}

#[test]
fn foreign_architecture_and_x32_calls_kill_the_process() {
    let r = matrix_root();
    for (tier, step) in runnable() {
        for p in ["x32", "i386"] {
            let o: Outcome = run(&spec(&r, tier, &[p]), &step).expect("the sandbox starts");
            assert_eq!(o.signal, Some(SIGSYS), "{tier:?} {p}: {o:?}");
        }
    }
    // Unconfined (the probe on the host, no sandbox), both calls work: the kill above is the
    // profile's doing.
    let out = std::process::Command::new(PROBE)
        .args(["x32", "i386"])
        .output()
        .unwrap();
    let got: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["i386"], "ok");
}

#[test]
fn calls_newer_than_seccompiler_are_refused_by_number() {
    let r = matrix_root();
    let t = Tier::Hardened;
    // file_getattr (468, Linux 6.17): not on any allowlist -> ENOSYS; denied by config -> EPERM.
    let plain = step(t, None, &Grants::default()).unwrap();
    assert_eq!(probe(&r, t, &plain, &["raw:468"])["raw:468"], "errno:38");
    let deny = TierOverride {
        deny_syscalls: vec!["file_getattr".into()],
        ..Default::default()
    };
    let denying = step(t, Some(&deny), &Grants::default()).unwrap();
    let got = probe(&r, t, &denying, &["raw:468", "raw:39"]);
    assert_eq!(got["raw:468"], "errno:1");
    assert_eq!(got["raw:39"], "ok", "getpid unaffected");
    // A name the table does not know: no profile, nothing runs.
    let unknown = TierOverride {
        deny_syscalls: vec!["not_a_syscall".into()],
        ..Default::default()
    };
    let e = step(t, Some(&unknown), &Grants::default()).unwrap_err();
    assert!(e.contains("unknown syscall `not_a_syscall`"), "{e}");
}

// ------------------------------------------------------------------ capabilities, no_new_privs

fn status(r: &TestRoot, tier: Tier, step: &ProfileStep) -> BTreeMap<String, String> {
    probe(r, tier, step, &["status"])["status"]
        .split(';')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.trim_end_matches(':').to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn capabilities_are_empty_and_no_new_privs_set_from_isolated_up() {
    // The probe is uid 0 of the sandbox with the namespace's full set before the final step:
    // the drop is the profile's doing.
    let r = matrix_root();
    for (tier, step) in runnable() {
        let s = status(&r, tier, &step);
        assert_eq!(s["NoNewPrivs"], "1", "{tier:?}");
        assert_eq!(s["Seccomp"], "2", "{tier:?}: filter mode");
        // The allowlist and the EPERM program, merged into one supervised filter.
        assert_eq!(s["Seccomp_filters"], "1", "{tier:?}: one merged filter");
        if tier == Tier::Default {
            // default: exactly docker's 14 capabilities, nothing inheritable or ambient.
            for k in ["CapPrm", "CapEff", "CapBnd"] {
                assert_eq!(s[k], "00000000a80425fb", "default {k}");
            }
            assert_eq!(s["CapInh"], "0000000000000000");
            assert_eq!(s["CapAmb"], "0000000000000000");
        } else {
            for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                assert_eq!(s[k], "0000000000000000", "{tier:?} {k}");
            }
        }
    }
}

// ------------------------------------------------------------------ Landlock

/// A host directory bound writable into the sandbox at `target`.
fn scratch(target: &str) -> (tempfile::TempDir, BindMount) {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let m = BindMount {
        read_only: false,
        ..BindMount::read_only(d.path(), target)
    };
    (d, m)
}

#[test]
fn landlock_blocks_writes_outside_granted_paths() {
    let r = matrix_root();
    let (_g, granted) = scratch("/granted");
    let (other_dir, other) = scratch("/other");
    let (wo, wt) = ("write:/other/f", "write:/tmp/f");
    let ro = "read:/etc/hostname";
    let grants = Grants {
        writable: vec!["/granted".into()],
        ..Grants::default()
    };
    for tier in [Tier::Hardened, Tier::Untrusted] {
        let step = match step(tier, None, &grants) {
            Ok(s) => s,
            Err(why) if tier == Tier::Untrusted => {
                eprintln!("untrusted refused up front on this host: {why}");
                continue;
            }
            Err(why) => panic!("{tier:?}: {why}"),
        };
        assert_eq!(step.landlock(), LandlockOutcome::FullyEnforced, "{tier:?}");
        // A file of its own per tier: each run's uid 0 is another leased host uid, and the
        // previous run's file is not this one's to overwrite.
        let wg = format!("write:/granted/{}", tier.name());
        let wg = wg.as_str();
        let mut s = spec(&r, tier, &[wg, wo, wt, ro, "write:/dev/null"]);
        s.mounts.extend([granted.clone(), other.clone()]);
        let got = probe_run(&s, &step);
        expect(
            tier,
            &got,
            &[
                (wg, "ok"),
                (wo, "errno:13"),
                (wt, "ok"),
                (ro, "ok"),
                ("write:/dev/null", "ok"),
            ],
        );
        assert!(
            !other_dir.path().join("f").exists(),
            "{tier:?}: nothing written outside"
        );
    }
    // Tiers without Landlock can write there: the refusal above is Landlock's.
    let isolated = step(Tier::Isolated, None, &Grants::default()).unwrap();
    assert_eq!(isolated.landlock(), LandlockOutcome::NotUsed);
    let mut s = spec(&r, Tier::Isolated, &[wo]);
    s.mounts.push(other);
    expect(Tier::Isolated, &probe_run(&s, &isolated), &[(wo, "ok")]);
}

#[test]
fn landlock_blocks_tcp_connect_to_ports_not_granted() {
    let r = matrix_root();
    let (granted, other) = (40_001u16, 40_002u16);
    let (cg, co) = (format!("connect:{granted}"), format!("connect:{other}"));
    let grants = Grants {
        network: Some(NetworkGrant {
            tcp_connect: vec![granted],
            ..NetworkGrant::default()
        }),
        ..Grants::default()
    };
    let t = Tier::Hardened;
    let with_grant = step(t, None, &grants).unwrap();
    let mut s = spec(&r, t, &[&cg, &co]);
    s.loopback = true;
    let got = probe_run(&s, &with_grant);
    // Landlock lets the granted port through to the kernel, which finds nobody listening in
    // the sandbox's own network namespace (ECONNREFUSED); the other port it refuses (EACCES).
    expect(t, &got, &[(&cg, "errno:111"), (&co, "errno:13")]);
    // Without a grant the socket itself is refused, before Landlock is even asked.
    let plain = step(t, None, &Grants::default()).unwrap();
    assert_eq!(probe(&r, t, &plain, &[&co])[&co], "errno:1");
    // untrusted never takes a network grant: the profile is refused, nothing runs.
    let e = step(Tier::Untrusted, None, &grants).unwrap_err();
    assert!(e.contains("does not allow"), "{e}");
}

// ------------------------------------------------------------------ securebits, missing Landlock

#[test]
fn securebits_are_locked_so_root_regains_nothing_at_exec() {
    let r = matrix_root();
    let exec = "exec:/bin/busybox,grep,CapEff,/proc/self/status";
    for (tier, step) in runnable() {
        if tier == Tier::Default {
            // default behaves like docker: no securebits, root keeps the default set across exec.
            let got = probe(&r, tier, &step, &["securebits", exec]);
            expect(tier, &got, &[("securebits", "0x0")]);
            assert_eq!(got[exec], "exit:0;out:CapEff:\t00000000a80425fb");
            continue;
        }
        let got = probe(&r, tier, &step, &["securebits", "unlock_securebits", exec]);
        // NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE and their locks.
        expect(
            tier,
            &got,
            &[("securebits", "0xcf"), ("unlock_securebits", "errno:1")],
        );
        // The probe is uid 0: without NOROOT, execve would hand root its capabilities back.
        assert_eq!(
            got[exec], "exit:0;out:CapEff:\t0000000000000000",
            "{tier:?}"
        );
    }
}

/// Fault injection: runs `f` on a thread whose `landlock_*` calls return ENOSYS, as on a kernel
/// without Landlock (a seccomp filter on that thread alone, inherited by the sandbox it starts).
fn without_landlock_in_the_kernel<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rules = [
                    libc::SYS_landlock_create_ruleset,
                    libc::SYS_landlock_add_rule,
                    libc::SYS_landlock_restrict_self,
                ]
                .into_iter()
                .map(|nr| (nr, vec![]))
                .collect();
                let filter = SeccompFilter::new(
                    rules,
                    SeccompAction::Allow,
                    SeccompAction::Errno(libc::ENOSYS as u32),
                    TargetArch::x86_64,
                )
                .expect("filter");
                let prog: BpfProgram = filter.try_into().expect("compile");
                seccompiler::apply_filter(&prog).expect("install the landlock-hiding filter");
                f()
            })
            .join()
            .expect("the fault-injection thread")
    })
}

#[test]
fn missing_landlock_is_recorded_and_refused_where_required() {
    let r = matrix_root();
    without_landlock_in_the_kernel(|| {
        assert_eq!(landlock_abi(), 0, "the fault injection did not take");
        let t = Tier::Hardened;
        let hardened = step(t, None, &Grants::default()).unwrap();
        assert_eq!(hardened.landlock(), LandlockOutcome::NotEnforced);
        expect(t, &probe(&r, t, &hardened, &["fork"]), &[("fork", "ok")]);
        let require = TierOverride {
            require_landlock: Some(true),
            ..Default::default()
        };
        for (tier, ov) in [(Tier::Untrusted, None), (Tier::Hardened, Some(&require))] {
            // Refused before anything starts: there is no step to run.
            let why = step(tier, ov, &Grants::default()).unwrap_err();
            assert!(why.contains("requires Landlock"), "{tier:?}: {why}");
        }
    });
}
