//! `serve`'s warm pool, attacked from outside: a real service, real sandboxes.
//!
//! - Two requests from different callers, each in a sandbox started ahead: the second sees
//!   nothing of the first — not its file in `/tmp`, not its stdin, not its process — and runs
//!   its own command, not the placeholder its sandbox was started with.
//! - A sandbox waiting in the pool is already confined: its workload process, blocked before
//!   `execve`, runs under the tier's seccomp filter with no_new_privs, no capabilities and an
//!   unprivileged host uid — a request's bytes only ever reach a confined process.
//! - A request's read-only workspace is moved into the warm sandbox that takes it: each caller
//!   reads its own workspace, never the previous caller's, and cannot write to it; a writable
//!   workspace runs cold.
//! - With `[service] pool = 0` no sandbox is started ahead.

mod service_support;

use std::time::{Duration, Instant};

use service_support::*;

/// A capability that leaves its caller's stdin in its sandbox's `/tmp`, and the ones that look
/// for it (capabilities run argv directly: no shell).
const PROBES: &str = r#"
[shellCapabilities.leave_trace]
command = ["dd", "of=/tmp/trace"]
image = "IMAGE"

[shellCapabilities.look_tmp]
command = ["ls", "-a", "/tmp"]
image = "IMAGE"

[shellCapabilities.look_trace]
command = ["cat", "/tmp/trace"]
image = "IMAGE"

[shellCapabilities.look_ps]
command = ["ps", "-o", "pid,args"]
image = "IMAGE"

[shellCapabilities.touch_ro]
command = ["touch", "/work/intruder"]
image = "IMAGE"
mounts = [{ source = "{workspace}", target = "/work" }]

[shellCapabilities.look_mounts]
command = ["cat", "/proc/self/mountinfo"]
image = "IMAGE"
mounts = [{ source = "{workspace}", target = "/work" }]
"#;

fn world(pool: u32) -> World {
    let w = World::new(ServiceToml {
        pool: Some(pool),
        ..ServiceToml::default()
    });
    let image = format!("{}/caps/busybox:v1", w.reg.host());
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str(&PROBES.replace("IMAGE", &image));
    std::fs::write(&w.config, text).unwrap();
    w
}

/// Calls `f` until it reports a run in a warm sandbox (the pool refills in the background),
/// returning that run's answer.
fn until_warm<T>(what: &str, mut f: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (warm, out) = f();
        if warm {
            return out;
        }
        assert!(Instant::now() < deadline, "{what} never ran warm");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Caller two's warm call of `capability`: (exit code, stdout, stderr).
fn look(w: &World, capability: &str) -> (i64, String, String) {
    until_warm(capability, || call(w, ALLOWED_UID, capability, "{}"))
}

/// One call of `capability` as `uid` with the request `body`: (warm, (exit code, stdout,
/// stderr)).
fn call(w: &World, uid: u32, capability: &str, body: &str) -> (bool, (i64, String, String)) {
    let (status, body) = w.call_as(
        uid,
        "POST",
        &format!("/v1/capabilities/{capability}/invoke"),
        body,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (
        v["warm"] == true,
        (
            v["exit_code"].as_i64().unwrap_or(-1),
            text("stdout"),
            text("stderr"),
        ),
    )
}

#[test]
fn a_request_in_a_warm_sandbox_sees_nothing_of_the_request_before_it() {
    let w = world(1);
    let _svc = w.serve(&[]);
    let rt = rt();
    let c = w.client();
    // Caller one (root): its secret arrives on stdin and is left in its sandbox's /tmp.
    let first = until_warm("the first caller", || {
        let mut r = req(&[]);
        r.stdin = Some("secret4711\n".into());
        let out = rt.block_on(c.invoke("leave_trace", &r)).unwrap();
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        (out.warm, out)
    });
    assert!(first.stderr.contains("records out"), "{first:?}");

    // Caller two (another uid), each call in the next sandbox of the same shape. Each runs its
    // own command (three different answers from sandboxes started with one placeholder).
    let (code, tmp, _) = look(&w, "look_tmp");
    assert_eq!((code, tmp.as_str()), (0, ".\n..\n"), "{tmp}");
    let (code, out, err) = look(&w, "look_trace");
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("secret4711"), "{out}");
    assert!(err.contains("No such file"), "{err}");
    let (code, ps, _) = look(&w, "look_ps");
    assert_eq!(code, 0, "{ps}");
    // Its pid namespace holds its init and ps: no process of another request, and nothing
    // of the placeholder command.
    let procs: Vec<&str> = ps.lines().skip(1).collect();
    assert_eq!(procs.len(), 2, "{ps}");
    assert!(procs[1].contains("ps -o pid,args"), "{ps}");
    for trace in ["dd", "secret4711", "placeholder"] {
        assert!(!ps.contains(trace), "{trace:?} in {ps}");
    }
    let metrics = rt.block_on(c.metrics()).unwrap();
    assert!(
        !metrics.contains("perry_sandboxes_total{start=\"warm\"} 0\n"),
        "{metrics}"
    );
    // On the record: each outcome says how its sandbox started.
    let warm_outcomes = w
        .audit()
        .into_iter()
        .filter(|r| r["details"]["sandbox"] == "warm")
        .count();
    assert!(warm_outcomes >= 4, "{warm_outcomes}");
}

#[test]
fn a_read_only_workspace_is_moved_into_the_warm_sandbox_of_the_request_that_brings_it() {
    let w = world(1);
    // A second caller's workspace beside the first one.
    let ws2 = w.workspace.parent().unwrap().join("ws2");
    std::fs::create_dir(&ws2).unwrap();
    std::fs::write(ws2.join("hello.txt"), "the second workspace\n").unwrap();
    for (p, mode) in [(&ws2, 0o777), (&ws2.join("hello.txt"), 0o644)] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let _svc = w.serve(&[]);
    let body = |cap_args: &str, ws: &std::path::Path| {
        serde_json::json!({"args": [cap_args], "workspace": ws}).to_string()
    };
    let (code, out, err) = until_warm("caller one's cat", || {
        call(&w, 0, "cat", &body("hello.txt", &w.workspace))
    });
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from the workspace\n"),
        "{err}"
    );
    // The next sandbox of the same shape, another caller, another workspace: it reads its own.
    let (code, out, err) = until_warm("caller two's cat", || {
        call(&w, ALLOWED_UID, "cat", &body("hello.txt", &ws2))
    });
    assert_eq!((code, out.as_str()), (0, "the second workspace\n"), "{err}");
    // Exactly one mount at /work, read-only, nosuid, nodev: the second caller's.
    let (code, mounts, err) = until_warm("caller two's mountinfo", || {
        let ws = serde_json::json!({"workspace": ws2}).to_string();
        call(&w, ALLOWED_UID, "look_mounts", &ws)
    });
    assert_eq!(code, 0, "{err}");
    let at_work: Vec<&str> = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some("/work"))
        .collect();
    assert_eq!(at_work.len(), 1, "{mounts}");
    let opts: Vec<&str> = at_work[0].split(' ').nth(5).unwrap().split(',').collect();
    for o in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&o), "{o} missing from {}", at_work[0]);
    }
    // A warm sandbox cannot write to its read-only workspace.
    let (code, _, err) = until_warm("touch in a read-only workspace", || {
        let ws = serde_json::json!({"workspace": ws2}).to_string();
        call(&w, ALLOWED_UID, "touch_ro", &ws)
    });
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!ws2.join("intruder").exists());
    // A writable workspace is not bound late: it runs cold, and writes.
    let (warm, (code, _, err)) = call(&w, 0, "write", &body("/work/ran", &w.workspace));
    assert_eq!((warm, code), (false, 0), "{err}");
    assert!(w.workspace.join("ran").exists());
}

/// The `Name:\tvalue` fields of `/proc/PID/status`.
fn status_of(pid: u32) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn a_sandbox_waiting_in_the_pool_is_already_confined() {
    let w = world(2);
    let _svc = w.serve(&[]);
    let rt = rt();
    let out = rt
        .block_on(w.client().invoke("echo", &req(&["shape"])))
        .unwrap();
    assert_eq!(out.stdout, "shape\n");
    // The spawner, its inits and their waiting workloads are all this binary, never exec'd:
    // the workloads are the ones under a seccomp filter.
    let spawned = perry_runtime::native::SPAWNER_ARG;
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let confined: Vec<u32> = processes_with(spawned)
            .into_iter()
            .filter(|p| status_of(*p).get("Seccomp").map(String::as_str) == Some("2"))
            .collect();
        if confined.len() >= 2 {
            break confined;
        }
        assert!(Instant::now() < deadline, "no workload waits in the pool");
        std::thread::sleep(Duration::from_millis(50));
    };
    for pid in waiting {
        let st = status_of(pid);
        assert_eq!(st["NoNewPrivs"], "1", "{st:?}");
        for caps in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            assert_eq!(st[caps], "0000000000000000", "{caps}: {st:?}");
        }
        let uid: u32 = st["Uid"]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(uid >= 100_000, "host uid {uid}: {st:?}");
        // Blocked in read, not running anything.
        assert!(st["State"].starts_with('S'), "{st:?}");
    }
}

#[test]
fn with_the_pool_off_no_sandbox_is_started_ahead() {
    let w = world(0);
    let svc = w.serve(&[]);
    let rt = rt();
    let c = w.client();
    for i in 0..4 {
        let arg = format!("n{i}");
        let out = rt.block_on(c.invoke("echo", &req(&[&arg]))).unwrap();
        assert_eq!(out.stdout, format!("{arg}\n"));
        assert!(!out.warm, "{out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Between calls nothing waits: no run cgroup exists while no call runs.
    assert!(run_cgroups_of(svc.pid()).is_empty());
    let starts: Vec<serde_json::Value> = w
        .audit()
        .into_iter()
        .filter_map(|r| r["details"].get("sandbox").cloned())
        .collect();
    assert_eq!(starts, vec![serde_json::json!("cold"); 4]);
}
