//! Escape probes, each run inside a real sandbox built from busybox. Every test asserts what it
//! would observe if the guarantee it names were broken.
//!
//! Every probe runs twice: under the runner's floor (`MinimalFinalStep`: no capabilities,
//! no_new_privs) and under the real `hardened` tier profile (`ProfileStep`: securebits,
//! capabilities, no_new_privs, Landlock, seccomp with a supervisor), so a guarantee never
//! rests on the profile alone nor on the namespaces alone.

mod native_support;

use std::io::Read;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use native_support::{rootfs, settle_processes, swap_workspaces, text};
use perry_runtime::native::{run, BindMount, FinalStep, RunError, Step};

fn runs_a_command_and_captures_everything(fs: &dyn FinalStep) {
    let r = rootfs();
    let mut s = r.sh("echo out; echo err >&2; cat; exit 3");
    s.stdin = Some(b"from stdin\n".to_vec());
    let o = run(&s, fs).expect("run");
    assert_eq!(o.exit_code, Some(3));
    assert_eq!(o.signal, None);
    assert_eq!(text(&o.stdout), "out\nfrom stdin\n");
    assert_eq!(text(&o.stderr), "err\n");
    assert!(!o.stdout_truncated && !o.stderr_truncated && !o.timed_out && !o.oom_killed);
    assert!(o.max_rss > 0, "wait4 rusage must report a max RSS");
    assert!(o.wall_time > Duration::ZERO);
}

fn environment_identity_cwd_and_hostname_are_the_specs(fs: &dyn FinalStep) {
    let r = rootfs();
    let mut s =
        r.sh("env | sort; id -u; id -g; id -G; pwd; hostname; ulimit -n; cat /proc/self/cgroup");
    s.env = vec![("FOO".into(), "bar".into())];
    s.cwd = "/tmp".into();
    s.hostname = "probe-host".into();
    std::env::set_var("PERRY_SECRET_SHOULD_NOT_LEAK", "1");
    let o = run(&s, fs).expect("run");
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    // Only the given variables, PATH, and what sh itself sets (PWD, SHLVL).
    assert!(
        !out.contains("PERRY_SECRET"),
        "host environment leaked: {out}"
    );
    assert!(lines.contains(&"FOO=bar"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{out}");
    for l in &lines {
        if let Some((k, _)) = l.split_once('=').filter(|(k, _)| !k.contains(':')) {
            assert!(
                ["FOO", "PATH", "PWD", "SHLVL"].contains(&k),
                "unexpected variable {l}"
            );
        }
    }
    let tail: Vec<&str> = lines
        .iter()
        .filter(|l| l.split_once('=').is_none_or(|(k, _)| k.contains(':')))
        .copied()
        .collect();
    // uid, gid, supplementary groups (host root's groups must be gone), cwd, hostname, nofile, cgroup
    assert_eq!(tail[0], "1000", "{out}");
    assert_eq!(tail[1], "1000", "{out}");
    assert_eq!(
        tail[2], "1000",
        "supplementary groups must be cleared: {out}"
    );
    assert_eq!(tail[3], "/tmp");
    assert_eq!(tail[4], "probe-host");
    assert_eq!(tail[5], "256");
    // cgroup namespace: the sandbox sees its own cgroup as the root of every hierarchy.
    for l in &tail[6..] {
        assert!(l.ends_with(":/"), "host cgroup path visible: {l}");
    }
}

fn probe_write_to_root_is_erofs_and_tmp_is_bounded(fs: &dyn FinalStep) {
    let r = rootfs();
    let o = run(
        &r.sh(
            "touch /x; echo rc=$?; touch /bin/x; echo rc=$?; echo hi > /tmp/ok && cat /tmp/ok; \
               dd if=/dev/zero of=/tmp/big bs=1M count=32 2>&1 | tail -n 3",
        ),
        fs,
    )
    .expect("run");
    let out = text(&o.stdout) + &text(&o.stderr);
    assert_eq!(
        out.matches("rc=1").count(),
        2,
        "a write to / succeeded: {out}"
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("hi\n"), "/tmp must be writable: {out}");
    assert!(
        out.contains("No space left on device"),
        "/tmp must be size-limited: {out}"
    );
    assert!(!r.rootfs.join("x").exists() && !r.rootfs.join("bin/x").exists());
}

fn probe_network_connect_is_impossible(fs: &dyn FinalStep) {
    let r = rootfs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for loopback in [false, true] {
        let mut s = r.sh(&format!(
            "echo probe | nc -w 1 127.0.0.1 {port}; echo rc=$?; cat /proc/net/dev | tail -n +3 | cut -d: -f1"
        ));
        s.loopback = loopback;
        let o = run(&s, fs).expect("run");
        let out = text(&o.stdout);
        assert!(
            out.contains("rc=1"),
            "nc connected (loopback={loopback}): {out}"
        );
        // The only interface is lo.
        let ifaces: Vec<&str> = out.lines().skip(1).map(str::trim).collect();
        assert_eq!(ifaces, vec!["lo"], "network namespace not empty: {out}");
        let mut buf = [0u8; 16];
        match listener.accept() {
            Ok((mut c, _)) => panic!("host listener reached: {:?}", c.read(&mut buf)),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
    }
    // With the loopback grant, lo works inside (proving the flag) — but it is the sandbox's own.
    // The client retries until the listener is up (a fixed sleep raced on a loaded CI host:
    // the client connected before `nc -l` listened), then waits for the listener to finish.
    let mut s = r.sh("nc -l -p 7777 > /tmp/got & \
         for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
           echo ping | nc -w 1 127.0.0.1 7777 2>/dev/null && break; sleep 0.1; \
         done; wait; cat /tmp/got");
    s.loopback = true;
    let o = run(&s, fs).expect("run");
    if fs.seccomp_supervision().is_some() {
        // The hardened profile refuses inet sockets outright, even on the sandbox's own lo.
        assert_eq!(text(&o.stdout), "", "{}", text(&o.stderr));
        assert!(
            o.denied_syscalls.iter().any(|d| d.name == "socket"),
            "{:?}",
            o.denied_syscalls
        );
    } else {
        assert_eq!(text(&o.stdout), "ping\n", "{}", text(&o.stderr));
    }
}

fn probe_no_capabilities_and_no_new_privs(fs: &dyn FinalStep) {
    let r = rootfs();
    for uid in [1000, 0] {
        let mut s = r.sh("grep -E '^(Cap|NoNewPrivs)' /proc/self/status");
        s.uid = uid;
        s.gid = uid;
        let o = run(&s, fs).expect("run");
        let out = text(&o.stdout);
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            let line = out
                .lines()
                .find(|l| l.starts_with(set))
                .unwrap_or_else(|| panic!("{out}"));
            assert!(line.ends_with("0000000000000000"), "uid {uid}: {line}");
        }
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    }
}

fn probe_mount_and_unshare_fail(fs: &dyn FinalStep) {
    let r = rootfs();
    for uid in [1000, 0] {
        let mut s = r.sh(
            "mount -t tmpfs none /tmp; echo mount=$?; unshare -m true; echo unshare_m=$?; \
             unshare -U true; echo unshare_u=$?; unshare -r -m true; echo unshare_rm=$?; \
             umount /proc; echo umount=$?",
        );
        s.uid = uid;
        s.gid = uid;
        let o = run(&s, fs).expect("run");
        let out = text(&o.stdout);
        for k in ["mount", "unshare_m", "unshare_u", "unshare_rm", "umount"] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{k}=")))
                .unwrap();
            assert_ne!(line, format!("{k}=0"), "uid {uid}: {k} succeeded: {out}");
        }
    }
}

fn probe_setuid_binary_gains_nothing(fs: &dyn FinalStep) {
    let r = rootfs();
    let o = run(&r.sh("/sbin/id -u; /sbin/id -ru"), fs).expect("run");
    assert_eq!(text(&o.stdout), "1000\n1000\n", "{}", text(&o.stderr));
}

fn probe_proc_is_masked_and_proc_sys_read_only(fs: &dyn FinalStep) {
    let r = rootfs();
    // Which masked entries exist depends on the kernel's config; compare against the host.
    let present: Vec<&str> = [
        "keys",
        "key-users",
        "timer_list",
        "kpagecount",
        "kcore",
        "sched_debug",
    ]
    .into_iter()
    .filter(|f| std::path::Path::new("/proc").join(f).exists())
    .collect();
    assert!(!present.is_empty(), "no maskable /proc file on this kernel");
    let mut script = String::from(
        "echo x > /proc/sys/kernel/hostname; echo sys=$?; \
         if [ -e /proc/sysrq-trigger ]; then echo h > /proc/sysrq-trigger; echo sysrq=$?; else echo sysrq=1; fi; \
         echo acpi=$(ls -A /proc/acpi 2>/dev/null | wc -l); echo driver=$(ls -A /proc/driver 2>/dev/null | wc -l); ",
    );
    for f in &present {
        script.push_str(&format!("echo {f}=$(cat /proc/{f} 2>/dev/null | wc -c); "));
    }
    let o = run(&r.sh(&script), fs).expect("run");
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert!(out.contains("sys=1\n"), "/proc/sys writable: {out}{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(out.contains("sysrq=1\n"), "{out}");
    assert!(
        out.contains("acpi=0\n") && out.contains("driver=0\n"),
        "{out}"
    );
    for f in &present {
        assert!(
            out.contains(&format!("{f}=0\n")),
            "/proc/{f} not masked: {out}"
        );
    }
}

fn probe_host_processes_are_invisible(fs: &dyn FinalStep) {
    let r = rootfs();
    let o = run(
        &r.sh("ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '"),
        fs,
    )
    .expect("run");
    let pids: Vec<u32> = text(&o.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // init (1), the shell (2), and its pipeline children.
    assert_eq!(pids[..2], [1, 2], "{pids:?}");
    assert!(
        pids.len() <= 6 && pids.iter().all(|&p| p < 10),
        "host pids visible: {pids:?}"
    );
    assert!(!pids.contains(&std::process::id()) || std::process::id() < 10);
}

/// init shares its memory with the workload until `execve`, and the workload briefly makes that
/// memory dumpable; init must be non-dumpable by the time the command runs (several steps see
/// to it: init's own setup, the workload's reset, and the kernel on each identity switch). A
/// dumpable init's `/proc/1` files belong to init's own uid (root of the sandbox) instead of
/// the host's root, and a process that became root inside could read and write its memory.
fn probe_init_stays_non_dumpable(fs: &dyn FinalStep) {
    let r = rootfs();
    let o = run(&r.sh("stat -c '%u' /proc/1/mem /proc/1/environ"), fs).expect("run");
    let out = text(&o.stdout);
    // 65534: the host root, which has no id inside the sandbox's user namespace.
    assert_eq!(out, "65534\n65534\n", "init is dumpable: {out}");
}

fn probe_parent_fds_are_not_inherited(fs: &dyn FinalStep) {
    let r = rootfs();
    // An fd without O_CLOEXEC in the parent, the kind a careless library leaves open.
    let path = std::ffi::CString::new(r.rootfs.join("etc/passwd").to_str().unwrap()).unwrap();
    // SAFETY: plain open(2) of an existing file; closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 3);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: clear FD_CLOEXEC on the listener too.
    unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_SETFD, 0) };
    let o = run(
        &r.spec(vec!["ls".into(), "-l".into(), "/proc/self/fd".into()]),
        fs,
    )
    .expect("run");
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    let out = text(&o.stdout);
    // ls's own fds: stdio, plus the directory it is listing.
    let mut fds = Vec::new();
    for l in out.lines().filter(|l| l.contains(" -> ")) {
        let (left, target) = l.split_once(" -> ").unwrap();
        let n: i32 = left.split_whitespace().last().unwrap().parse().unwrap();
        if n > 2 {
            assert!(
                target.starts_with("/proc/") && target.ends_with("/fd"),
                "leaked fd {n} -> {target}"
            );
        }
        fds.push(n);
    }
    assert!(
        fds.starts_with(&[0, 1, 2]) && fds.len() <= 4,
        "fds leaked into the sandbox: {out}"
    );
}

fn probe_fork_bomb_hits_the_pids_limit(fs: &dyn FinalStep) {
    let r = rootfs();
    let mut s = r.sh(
        "(i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; \
         set -- /proc/[0-9]*; echo $#",
    );
    s.limits.pids = 24;
    s.limits.timeout = Duration::from_secs(15);
    let t = Instant::now();
    let o = run(&s, fs).expect("run");
    let n: usize = text(&o.stdout).trim().parse().unwrap_or(usize::MAX);
    assert!(n <= 24, "more tasks than the pids limit: {n} {o:?}");
    assert!(
        n >= 10,
        "suspiciously few tasks ({n}); the probe did not fork"
    );
    assert!(
        !o.timed_out && t.elapsed() < Duration::from_secs(10),
        "backgrounded sleeps kept the run alive"
    );
    assert!(settle_processes().is_empty(), "{:?}", settle_processes());

    // The classic bomb: stopped by the limit, then by the timeout, leaving nothing.
    let mut s = r.sh("b() { b | b & }; b; sleep 30");
    s.limits.pids = 32;
    s.limits.timeout = Duration::from_secs(2);
    let o = run(&s, fs).expect("run");
    assert!(o.timed_out || o.exit_code.is_some());
    assert!(o.wall_time < Duration::from_secs(8), "{:?}", o.wall_time);
    assert!(settle_processes().is_empty(), "{:?}", settle_processes());
}

fn probe_memory_bomb_is_oom_killed(fs: &dyn FinalStep) {
    let r = rootfs();
    let mut s = r.sh("dd if=/dev/zero of=/dev/null bs=256M count=1; echo survived=$?");
    s.limits.memory = 32 << 20;
    let o = run(&s, fs).expect("run");
    assert!(o.oom_killed, "memory limit not enforced: {o:?}");
    assert!(
        text(&o.stdout).contains("survived=137"),
        "dd was not SIGKILLed: {}",
        text(&o.stdout)
    );
    assert!(
        o.memory_peak.unwrap_or(0) <= 33 << 20,
        "{:?}",
        o.memory_peak
    );

    // A bomb as the command itself: its own status is reported.
    let mut s = r.spec(vec![
        "dd".into(),
        "if=/dev/zero".into(),
        "of=/dev/null".into(),
        "bs=256M".into(),
        "count=1".into(),
    ]);
    s.limits.memory = 32 << 20;
    let o = run(&s, fs).expect("run");
    assert_eq!(o.signal, Some(libc::SIGKILL), "{o:?}");
    assert!(o.oom_killed);
}

fn probe_output_flood_is_truncated(fs: &dyn FinalStep) {
    let r = rootfs();
    let mut s = r.sh("head -c 20000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo done >&2");
    s.stdout_limit = 65536;
    s.stderr_limit = 1000;
    let o = run(&s, fs).expect("run");
    assert_eq!(
        o.exit_code,
        Some(0),
        "the writer must not block on a full pipe"
    );
    assert_eq!(o.stdout.len(), 65536);
    assert!(o.stdout_truncated);
    assert_eq!(o.stderr.len(), 1000);
    assert!(o.stderr_truncated);
}

fn probe_sleep_past_timeout_kills_the_whole_tree(fs: &dyn FinalStep) {
    let r = rootfs();
    let mut s = r.sh("(sleep 100; echo late) & sleep 100 & sleep 100");
    s.limits.timeout = Duration::from_millis(700);
    let t = Instant::now();
    let o = run(&s, fs).expect("run");
    assert!(o.timed_out);
    assert_eq!(o.signal, Some(libc::SIGKILL));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!text(&o.stdout).contains("late"));
    assert!(
        settle_processes().is_empty(),
        "left behind: {:?}",
        settle_processes()
    );
}

fn background_children_die_with_the_command(fs: &dyn FinalStep) {
    let r = rootfs();
    let t = Instant::now();
    let o = run(&r.sh("sleep 100 & echo started"), fs).expect("run");
    assert_eq!(text(&o.stdout), "started\n");
    assert!(!o.timed_out && t.elapsed() < Duration::from_secs(5));
    assert!(settle_processes().is_empty(), "{:?}", settle_processes());
}

fn bind_mounts_are_read_only_unless_granted(fs: &dyn FinalStep) {
    let r = rootfs();
    let host = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(host.path().join("in"), "hello").unwrap();
    let mut s = r.sh("cat /work/in; echo x > /work/out; echo rc=$?");
    s.mounts = vec![BindMount::read_only(host.path(), "/work")];
    let o = run(&s, fs).expect("run");
    assert_eq!(text(&o.stdout), "hellorc=1\n", "{}", text(&o.stderr));
    assert!(!host.path().join("out").exists());
    s.mounts[0].read_only = false;
    if fs.seccomp_supervision().is_some() {
        // Landlock, the second wall: a writable mount the profile does not grant stays
        // unwritable; granting it in the profile opens it.
        let o = run(&s, fs).expect("run");
        assert_eq!(text(&o.stdout), "hellorc=1\n", "{}", text(&o.stderr));
        assert!(!host.path().join("out").exists());
        let granted = native_support::hardened_with(perry_profiles::Grants {
            writable: vec!["/work".into()],
            ..Default::default()
        });
        let o = run(&s, &granted).expect("run");
        assert_eq!(text(&o.stdout), "hellorc=0\n", "{}", text(&o.stderr));
    } else {
        let o = run(&s, fs).expect("run");
        assert_eq!(text(&o.stdout), "hellorc=0\n", "{}", text(&o.stderr));
    }
    assert!(host.path().join("out").exists());
}

fn failures_before_exec_are_typed_and_run_nothing(fs: &dyn FinalStep) {
    let r = rootfs();
    let e = run(&r.spec(vec!["no-such-command".into()]), fs).unwrap_err();
    assert!(
        matches!(e, RunError::Exec { errno, .. } if errno == libc::ENOENT),
        "{e}"
    );
    assert_eq!(e.exit_status(), 127);
    let e = run(&r.spec(vec!["/bin/not-executable".into()]), fs).unwrap_err();
    assert!(
        matches!(e, RunError::Exec { errno, .. } if errno == libc::EACCES),
        "{e}"
    );
    assert_eq!(e.exit_status(), 126);
    let mut s = r.sh("true");
    s.cwd = "/does/not/exist".into();
    let e = run(&s, fs).unwrap_err();
    assert!(
        matches!(
            e,
            RunError::Setup {
                step: Step::Cwd,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.exit_status(), 125);
    std::fs::remove_dir(r.rootfs.join("tmp")).unwrap();
    let e = run(&r.sh("true"), fs).unwrap_err();
    assert!(matches!(e, RunError::MountPointMissing { .. }), "{e}");
    std::os::unix::fs::symlink("/etc", r.rootfs.join("tmp")).unwrap();
    let e = run(&r.sh("true"), fs).unwrap_err();
    assert!(matches!(e, RunError::MountPointSymlink { .. }), "{e}");
}

fn uid_range_containing_root_is_refused(fs: &dyn FinalStep) {
    let r = rootfs();
    let mut s = r.sh("true");
    s.leases.range.start = 0;
    let e = run(&s, fs).unwrap_err();
    assert!(
        matches!(
            e,
            RunError::InvalidSpec {
                field: "uid_range.start",
                ..
            }
        ),
        "{e}"
    );
}

/// `perry-sandbox run` prints output as it happens: the first line reaches the sink while the
/// command is still running, the limit still applies to what is streamed, nothing is buffered.
fn live_output_arrives_while_the_command_runs(fs: &dyn FinalStep) {
    use perry_runtime::native::{LiveOutput, Stream};
    use std::sync::{Arc, Mutex};
    let r = rootfs();
    let mut s = r.sh("echo first; echo warn >&2; sleep 1; echo second; head -c 5000 /dev/zero");
    s.stdout_limit = 100;
    type Chunk = (Stream, Vec<u8>, Instant);
    let seen: Arc<Mutex<Vec<Chunk>>> = Arc::default();
    let sink = Arc::clone(&seen);
    s.live = Some(LiveOutput(Arc::new(move |stream, bytes| {
        sink.lock()
            .unwrap()
            .push((stream, bytes.to_vec(), Instant::now()))
    })));
    let o = run(&s, fs).expect("run");
    let ended = Instant::now();
    assert_eq!(o.exit_code, Some(0));
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "streamed output was also buffered"
    );
    let seen = seen.lock().unwrap();
    let joined = |want: Stream| -> Vec<u8> {
        seen.iter()
            .filter(|(st, _, _)| *st == want)
            .flat_map(|(_, b, _)| b.clone())
            .collect()
    };
    let out = joined(Stream::Stdout);
    assert_eq!(out.len(), 100, "the stdout limit applies to streamed bytes");
    assert!(out.starts_with(b"first\nsecond\n"), "{}", text(&out));
    assert!(o.stdout_truncated);
    assert_eq!(joined(Stream::Stderr), b"warn\n");
    let first = seen
        .iter()
        .find(|(_, b, _)| b.starts_with(b"first"))
        .map(|(_, _, t)| *t)
        .unwrap();
    assert!(
        ended.duration_since(first) >= Duration::from_millis(700),
        "the first line arrived only at the end"
    );
}

/// A bind target missing from the image is provided inside the sandbox, never in the rootfs,
/// and safely: a symlink in the image on the way to a target is refused before anything runs,
/// so it cannot redirect a mount outside the root.
fn missing_mount_targets_are_provided_inside_the_sandbox_only(fs: &dyn FinalStep) {
    let r = rootfs();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "mounted\n").unwrap();
    std::fs::set_permissions(
        host.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut s = r.sh("cat /work/deep/f");
    s.mounts = vec![BindMount::read_only(host.path(), "/work/deep")];
    let o = run(&s, fs).expect("run");
    assert_eq!(text(&o.stdout), "mounted\n");
    assert!(
        !r.rootfs.join("work/deep").exists(),
        "the mount point was created in the rootfs"
    );
    // An image symlink pointing out of the root is not followed.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), r.rootfs.join("escape")).unwrap();
    let mut s = r.sh("true");
    s.mounts = vec![BindMount::read_only(host.path(), "/escape/x")];
    let e = run(&s, fs).unwrap_err();
    assert!(matches!(e, RunError::MountPointSymlink { .. }), "{e}");
    assert!(e.to_string().contains("symlink"), "{e}");
    assert!(
        !outside.path().join("x").exists(),
        "created outside the root"
    );
    for bad in ["/a/../b", "relative"] {
        s.mounts = vec![BindMount::read_only(host.path(), bad)];
        let e = run(&s, fs).unwrap_err();
        assert!(
            matches!(
                e,
                RunError::InvalidSpec {
                    field: "mounts.target",
                    ..
                }
            ),
            "{bad}: {e}"
        );
    }
}

/// A pinned mount is the directory that was opened and checked, never whatever its path points
/// at by the time the sandbox starts: when a symlink is swapped into the path in between (the
/// check-then-mount race a hostile workspace owner would try), setup fails and nothing runs.
fn pinned_mounts_refuse_a_path_swapped_after_the_check(fs: &dyn FinalStep) {
    let r = rootfs();
    let (host, ws, other) = swap_workspaces();
    let mount = BindMount::pinned(&ws, "/work", true).unwrap();
    assert_eq!(mount.source, ws);
    // Unchanged: the checked directory is mounted.
    let mut s = r.sh("ls /work");
    s.mounts = vec![mount.clone()];
    assert_eq!(text(&run(&s, fs).expect("run").stdout), "checked\n");
    // The race: after the check, the path leads elsewhere.
    std::fs::rename(&ws, host.path().join("ws.moved")).unwrap();
    std::os::unix::fs::symlink(&other, &ws).unwrap();
    let mut s = r.sh("ls /work > /work/ran");
    s.mounts = vec![BindMount {
        read_only: false,
        ..mount
    }];
    let e = run(&s, fs).unwrap_err();
    assert!(
        matches!(
            e,
            RunError::Setup {
                step: Step::BindSourceChanged,
                errno: libc::ESTALE,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        !other.join("ran").exists(),
        "ran with the swapped directory"
    );
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod minimal {
            $(#[test]
            fn $name() {
                super::$name(&perry_runtime::native::MinimalFinalStep)
            })*
        }
        mod hardened {
            $(#[test]
            fn $name() {
                super::$name(&super::native_support::hardened())
            })*
        }
    };
}

both!(
    runs_a_command_and_captures_everything,
    environment_identity_cwd_and_hostname_are_the_specs,
    probe_write_to_root_is_erofs_and_tmp_is_bounded,
    probe_network_connect_is_impossible,
    probe_no_capabilities_and_no_new_privs,
    probe_mount_and_unshare_fail,
    probe_setuid_binary_gains_nothing,
    probe_proc_is_masked_and_proc_sys_read_only,
    probe_host_processes_are_invisible,
    probe_init_stays_non_dumpable,
    probe_parent_fds_are_not_inherited,
    probe_fork_bomb_hits_the_pids_limit,
    probe_memory_bomb_is_oom_killed,
    probe_output_flood_is_truncated,
    probe_sleep_past_timeout_kills_the_whole_tree,
    background_children_die_with_the_command,
    bind_mounts_are_read_only_unless_granted,
    failures_before_exec_are_typed_and_run_nothing,
    uid_range_containing_root_is_refused,
    live_output_arrives_while_the_command_runs,
    missing_mount_targets_are_provided_inside_the_sandbox_only,
    pinned_mounts_refuse_a_path_swapped_after_the_check
);
