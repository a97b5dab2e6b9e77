//! Enforcement in real processes: `perry-confine-probe` applies a tier's profile to itself with
//! the real `confine::apply`, then attempts each attack and reports the errno the kernel gave.
//! Every guarantee of the tier table is checked by the attack that would break it, and ordinary
//! work (threads under glibc, fork/exec, busybox, python3) is checked to keep working.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const PROBE: &str = env!("CARGO_BIN_EXE_perry-confine-probe");
const TIERS: [&str; 4] = ["default", "isolated", "hardened", "untrusted"];
const SIGSYS: i32 = 31;

fn run(args: &[&str]) -> Output {
    Command::new(PROBE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run perry-confine-probe")
}

/// Runs the probe under `tier` with `extra` options and `probes`; returns probe -> result.
fn probe(tier: &str, extra: &[&str], probes: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["--tier", tier];
    args.extend_from_slice(extra);
    args.extend_from_slice(probes);
    let out = run(&args);
    assert!(
        out.status.success(),
        "probe under {tier} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe prints one JSON object")
}

fn expect(tier: &str, got: &BTreeMap<String, String>, want: &[(&str, &str)]) {
    for (p, w) in want {
        assert_eq!(
            got.get(*p).map(String::as_str),
            Some(*w),
            "{tier}: probe {p}: {got:?}"
        );
    }
}

/// Scratch directories outside /tmp (which hardened grants writable) so Landlock decides: the
/// target dir's tmp, unless the checkout itself lives under /tmp (then /var/tmp).
fn scratch(name: &str) -> PathBuf {
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let base = if target_tmp.starts_with("/tmp") {
        PathBuf::from("/var/tmp")
    } else {
        target_tmp
    };
    let d = base.join(format!("confine-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ------------------------------------------------------------------ forbidden calls per tier

#[test]
fn every_tier_refuses_namespaces_mounts_and_kernel_attack_surface() {
    for tier in TIERS {
        let got = probe(
            tier,
            &[],
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
    for tier in TIERS {
        let got = probe(
            tier,
            &[],
            &[
                "clone3",
                "thread",
                "fork",
                "exec:/bin/busybox,sh,-c,echo hi; ls / | wc -l",
            ],
        );
        // glibc's pthread_create tries clone3 first; ENOSYS makes it fall back to clone.
        expect(
            tier,
            &got,
            &[("clone3", "errno:38"), ("thread", "ok"), ("fork", "ok")],
        );
        let sh = &got["exec:/bin/busybox,sh,-c,echo hi; ls / | wc -l"];
        assert!(sh.starts_with("exit:0;out:hi\n"), "{tier}: busybox: {sh}");
    }
}

#[test]
fn python3_threads_run_in_every_tier() {
    let py = "exec:/usr/bin/python3,-c,import threading;t=threading.Thread(target=lambda:print(7));t.start();t.join()";
    for tier in TIERS {
        let got = probe(tier, &[], &[py]);
        assert_eq!(got[py], "exit:0;out:7", "{tier}");
    }
}

#[test]
fn inet_sockets_are_refused_from_isolated_up_and_unix_sockets_are_not() {
    let probes = [
        "socket_inet",
        "socket_inet6",
        "socket_inet_udp",
        "socket_unix",
        "socketpair_unix",
    ];
    let got = probe("default", &[], &probes);
    expect(
        "default",
        &got,
        &[
            ("socket_inet", "ok"),
            ("socket_inet6", "ok"),
            ("socket_inet_udp", "ok"),
        ],
    );
    for tier in ["isolated", "hardened", "untrusted"] {
        let got = probe(tier, &[], &probes);
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

#[test]
fn ptrace_personality_and_tiocsti_are_refused_from_hardened_up() {
    let probes = [
        "ptrace",
        "personality_set",
        "personality_query",
        "tiocsti",
        "tiocsti_hi",
    ];
    for tier in ["default", "isolated"] {
        let got = probe(tier, &[], &probes);
        // Let through to the kernel: ESRCH (no such pid), ENOTTY (stdin is /dev/null).
        expect(
            tier,
            &got,
            &[
                ("ptrace", "errno:3"),
                ("tiocsti", "errno:25"),
                ("personality_query", "ok"),
            ],
        );
        assert_ne!(got["personality_set"], "ok", "{tier}: ADDR_NO_RANDOMIZE");
    }
    for tier in ["hardened", "untrusted"] {
        let got = probe(tier, &[], &probes);
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

#[test]
fn foreign_architecture_and_x32_calls_kill_the_process() {
    for tier in TIERS {
        for p in ["x32", "i386"] {
            let out = run(&["--tier", tier, p]);
            assert_eq!(
                out.status.signal(),
                Some(SIGSYS),
                "{tier} {p}: {:?}",
                out.status
            );
        }
    }
    // Unconfined, both calls work: the kill above is the profile's doing.
    let got = probe("none", &[], &["x32", "i386"]);
    assert_eq!(got["i386"], "ok");
}

#[test]
fn calls_newer_than_seccompiler_are_refused_by_number() {
    // file_getattr (468, Linux 6.17): not on any allowlist -> ENOSYS; denied by config -> EPERM.
    assert_eq!(probe("hardened", &[], &["raw:468"])["raw:468"], "errno:38");
    let got = probe(
        "hardened",
        &["--deny", "file_getattr"],
        &["raw:468", "raw:39"],
    );
    assert_eq!(got["raw:468"], "errno:1");
    assert_eq!(got["raw:39"], "ok", "getpid unaffected");
    // A name the table does not know: no profile, nothing runs.
    let out = run(&["--tier", "hardened", "--deny", "not_a_syscall", "fork"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown syscall `not_a_syscall`"));
}

// ------------------------------------------------------------------ capabilities, no_new_privs

fn status(tier: &str) -> BTreeMap<String, String> {
    probe(tier, &[], &["status"])["status"]
        .split(';')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.trim_end_matches(':').to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn capabilities_are_empty_and_no_new_privs_set_from_isolated_up() {
    // The test runs as root with (nearly) every capability: the drop is the profile's doing.
    for tier in ["isolated", "hardened", "untrusted"] {
        let s = status(tier);
        for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(s[k], "0000000000000000", "{tier} {k}");
        }
        assert_eq!(s["NoNewPrivs"], "1", "{tier}");
        assert_eq!(s["Seccomp"], "2", "{tier}: filter mode");
        assert_eq!(
            s["Seccomp_filters"], "2",
            "{tier}: allowlist + EPERM filter"
        );
    }
    // default: exactly docker's 14 capabilities, nothing inheritable or ambient.
    let s = status("default");
    for k in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(s[k], "00000000a80425fb", "default {k}");
    }
    assert_eq!(s["CapInh"], "0000000000000000");
    assert_eq!(s["CapAmb"], "0000000000000000");
    assert_eq!(s["NoNewPrivs"], "1");
}

// ------------------------------------------------------------------ Landlock

#[test]
fn landlock_blocks_writes_outside_granted_paths() {
    let granted = scratch("granted");
    let other = scratch("other");
    let g = granted.join("f").display().to_string();
    let o = other.join("f").display().to_string();
    let tmp = format!("/tmp/perry-confine-{}", std::process::id());
    let (wg, wo, wt) = (
        format!("write:{g}"),
        format!("write:{o}"),
        format!("write:{tmp}"),
    );
    let ro = "read:/etc/hostname".to_string();
    for tier in ["hardened", "untrusted"] {
        let got = probe(
            tier,
            &["--write", granted.to_str().unwrap()],
            &[&wg, &wo, &wt, &ro, "write:/dev/null"],
        );
        expect(
            tier,
            &got,
            &[
                ("landlock", "FullyEnforced"),
                (&wg, "ok"),
                (&wo, "errno:13"),
                (&wt, "ok"),
                (&ro, "ok"),
                ("write:/dev/null", "ok"),
            ],
        );
        assert!(!other.join("f").exists(), "{tier}: nothing written outside");
    }
    // Tiers without Landlock can write there: the refusal above is Landlock's.
    let got = probe("isolated", &[], &[&wo]);
    expect("isolated", &got, &[("landlock", "NotUsed"), (&wo, "ok")]);
    let _ = std::fs::remove_file(&tmp);
}

fn listener() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        // Serve one connection at most, then stop.
        l.set_nonblocking(false).unwrap();
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"hi");
        }
    });
    (port, h)
}

#[test]
fn landlock_blocks_tcp_connect_to_ports_not_granted() {
    let (granted, h) = listener();
    let (other, _h2) = listener();
    let (cg, co) = (format!("connect:{granted}"), format!("connect:{other}"));
    let got = probe(
        "hardened",
        &["--connect", &granted.to_string()],
        &[&cg, &co],
    );
    expect("hardened", &got, &[(&cg, "ok"), (&co, "errno:13")]);
    h.join().unwrap();
    // Without a grant the socket itself is refused, before Landlock is even asked.
    let got = probe("hardened", &[], &[&co]);
    assert_eq!(got[&co], "errno:1");
    // untrusted never takes a network grant: the profile is refused, nothing runs.
    let out = run(&["--tier", "untrusted", "--connect", "80", "fork"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

// ------------------------------------------------------------------ securebits, missing Landlock

#[test]
fn securebits_are_locked_so_root_regains_nothing_at_exec() {
    let exec = "exec:/bin/busybox,grep,CapEff,/proc/self/status";
    for tier in ["isolated", "hardened", "untrusted"] {
        let got = probe(tier, &[], &["securebits", "unlock_securebits", exec]);
        // NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE and their locks.
        expect(
            tier,
            &got,
            &[("securebits", "0xcf"), ("unlock_securebits", "errno:1")],
        );
        // The probe is uid 0: without NOROOT, execve would hand root its capabilities back.
        assert_eq!(got[exec], "exit:0;out:CapEff:\t0000000000000000", "{tier}");
    }
    // default behaves like docker: no securebits, root keeps the default set across exec.
    let got = probe("default", &[], &["securebits", exec]);
    expect("default", &got, &[("securebits", "0x0")]);
    assert_eq!(got[exec], "exit:0;out:CapEff:\t00000000a80425fb");
}

#[test]
fn missing_landlock_is_recorded_and_refused_where_required() {
    // Fault injection: the landlock_* calls return ENOSYS, as on a kernel without Landlock.
    let got = probe("hardened", &["--no-landlock-kernel"], &["fork"]);
    expect(
        "hardened",
        &got,
        &[("landlock", "NotEnforced"), ("fork", "ok")],
    );
    for args in [
        &["--tier", "untrusted", "--no-landlock-kernel", "fork"][..],
        &[
            "--tier",
            "hardened",
            "--require-landlock",
            "--no-landlock-kernel",
            "fork",
        ][..],
    ] {
        let out = run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}");
        assert!(
            stdout.contains("landlock is required"),
            "{args:?}: {stdout}"
        );
        assert!(!stdout.contains("\"fork\""), "nothing ran: {stdout}");
    }
}
