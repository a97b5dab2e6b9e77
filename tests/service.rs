//! `perry-sandbox serve` end to end: a real service process on a temporary Unix socket, real
//! capability images pushed to the loopback registry and signed by the sigstore-js stack, real
//! sandboxes. Callers are the library's `Client` (as root) and Python's `http.client` running
//! as other uids, so the peer-credential check is exercised with real `SO_PEERCRED` values.

mod service_support;

use std::time::{Duration, Instant};

use perry_sandbox::service::Client;
use service_support::*;

#[test]
fn permitted_peers_get_results_and_others_get_403_with_nothing_run() {
    let w = World::new(ServiceToml::default());
    let _svc = w.serve(&[]);
    let rt = rt();
    let c = w.client();

    let caps = rt.block_on(c.capabilities()).unwrap();
    let names: Vec<&str> = caps.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cat", "echo", "sleep", "unsigned", "write"]);

    // Root (allowed) through the library client.
    let out = rt
        .block_on(c.invoke("echo", &req(&["hello", "world"])))
        .unwrap();
    assert_eq!(out.stdout, "hello world\n");
    assert_eq!(out.exit_code, Some(0));
    assert!(out.image_digest.starts_with("sha256:"));
    assert!(out.audit_seq > 0);
    // The workspace is mounted read-only where the capability says so.
    let mut r = req(&["hello.txt"]);
    r.workspace = Some(w.workspace.clone());
    let out = rt.block_on(c.invoke("cat", &r)).unwrap();
    assert_eq!(out.stdout, "hello from the workspace\n", "{out:?}");

    // Another allowed uid, over a raw socket from another process.
    let (status, body) = w.call_as(
        ALLOWED_UID,
        "POST",
        "/v1/capabilities/echo/invoke",
        r#"{"args":["from-4242"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["stdout"], "from-4242\n");

    // A uid that is not allowed: 403 on every endpoint, and nothing runs.
    let before = w.records("capability", "allow").len();
    let mut r = serde_json::json!({"args": ["/work/ran"], "workspace": w.workspace});
    for (method, path, body) in [
        ("POST", "/v1/capabilities/write/invoke", r.to_string()),
        ("GET", "/v1/capabilities", String::new()),
        ("GET", "/metrics", String::new()),
        ("POST", "/v1/verify", r#"{"image":"x/y:1"}"#.to_string()),
    ] {
        let (status, body) = w.call_as(DENIED_UID, method, path, &body);
        assert_eq!(status, 403, "{method} {path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "forbidden");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("uid {DENIED_UID}")),
            "{v}"
        );
    }
    assert!(
        !w.workspace.join("ran").exists(),
        "a denied peer ran a command"
    );
    // The socket itself is 0660 and owned by the configured group: a process outside that
    // group cannot even connect, whatever its uid.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&w.socket).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o777, meta.gid()),
        (0o660, SOCKET_GID)
    );
    let out = w.python_call(ALLOWED_UID, ALLOWED_UID, "GET", "/v1/health", "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionError"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.records("capability", "allow").len(), before);
    let denials = w.records("api_access", "deny");
    assert_eq!(denials.len(), 4, "{denials:?}");
    assert_eq!(denials[0]["actor"]["uid"], DENIED_UID);

    // The allowed peer can write where the capability grants it.
    r["args"] = serde_json::json!(["/work/ran"]);
    let (status, body) = w.call_as(
        ALLOWED_UID,
        "POST",
        "/v1/capabilities/write/invoke",
        &r.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(w.workspace.join("ran").exists());
    let allows = w.records("capability", "allow");
    let last = allows.last().unwrap();
    assert_eq!(last["actor"]["uid"], ALLOWED_UID);
    assert_eq!(last["subject"]["capability"], "write");
}

#[test]
fn bad_requests_get_clear_errors_and_nothing_runs() {
    let w = World::new(ServiceToml::default());
    let _svc = w.serve(&[]);
    let ws = w.workspace.display().to_string();
    let outside = w.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // A symlink inside the allowed root that points outside it.
    std::os::unix::fs::symlink(&outside, w.dir.path().join("roots/escape")).unwrap();
    let escape = w.dir.path().join("roots/escape").display().to_string();
    let big = format!(r#"{{"args":["{}"]}}"#, "a".repeat(5000));
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "echo",
            "{not json".into(),
            400,
            "invalid_request",
            "request body",
        ),
        (
            "echo",
            r#"{"argz":[]}"#.into(),
            400,
            "invalid_request",
            "unknown field `argz`",
        ),
        ("echo", big, 413, "payload_too_large", "max_request_size"),
        (
            "nope",
            "{}".into(),
            404,
            "not_found",
            "no capability named `nope`",
        ),
        (
            "echo",
            r#"{"args":["a","b","c","d","e"]}"#.into(),
            400,
            "argument_denied",
            "args.max = 4",
        ),
        (
            "echo",
            r#"{"args":["$(id)"]}"#.into(),
            400,
            "argument_denied",
            "does not match args.pattern",
        ),
        (
            "write",
            r#"{"args":["/etc/passwd"]}"#.into(),
            400,
            "argument_denied",
            "args.positions[0].one_of",
        ),
        (
            "write",
            r#"{"args":["/work/ran"],"workspace":"/etc"}"#.into(),
            403,
            "workspace_denied",
            "not under an allowed workspace root",
        ),
        (
            "write",
            format!(r#"{{"args":["/work/ran"],"workspace":"{escape}"}}"#),
            403,
            "workspace_denied",
            "not under an allowed workspace root",
        ),
        (
            // The root itself holds every workspace: only directories below it qualify.
            "write",
            format!(
                r#"{{"args":["/work/ran"],"workspace":"{}"}}"#,
                w.dir.path().join("roots").display()
            ),
            403,
            "workspace_denied",
            "not under an allowed workspace root",
        ),
        (
            "write",
            r#"{"args":["/work/ran"],"workspace":"relative/dir"}"#.into(),
            403,
            "workspace_denied",
            "not an absolute path",
        ),
        (
            "write",
            r#"{"args":["/work/ran"]}"#.into(),
            403,
            "workspace_denied",
            "must name one",
        ),
        (
            "unsigned",
            format!(r#"{{"workspace":"{ws}"}}"#),
            403,
            "verification_failed",
            "caps/unsigned",
        ),
    ];
    for (name, body, status, code, words) in cases {
        let (got, text) = w.call_as(0, "POST", &format!("/v1/capabilities/{name}/invoke"), &body);
        assert_eq!(got, status, "{name} {body:.80}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], code, "{text}");
        assert_eq!(v["error"]["status"], status, "{text}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(words), "{name}: {msg:?} lacks {words:?}");
    }
    // Nothing ran: no allow record, no witness file, no rootfs for the unsigned image.
    assert!(w.records("capability", "allow").is_empty());
    assert!(!w.workspace.join("ran").exists());
    assert!(!outside.join("ran").exists());
    let rootfs = w.state().join("rootfs");
    let unpacked = std::fs::read_dir(&rootfs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(unpacked, 0, "an image was unpacked for a refused request");
    // Each policy refusal is on the record.
    let denied = w.records("capability", "deny");
    assert!(denied.len() >= 8, "{denied:?}");
    // An unknown endpoint is a structured 404 too.
    let (status, text) = w.call_as(0, "GET", "/v1/nothing", "");
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("\"not_found\""));
    // Verification over the API.
    let rt = rt();
    let ok = rt
        .block_on(
            w.client()
                .verify(&format!("{}/caps/busybox:v1", w.reg.host())),
        )
        .unwrap();
    assert_eq!(ok["ok"], true);
    assert!(ok["pinned"].as_str().unwrap().contains("@sha256:"));
    let err = rt
        .block_on(
            w.client()
                .verify(&format!("{}/caps/unsigned:v1", w.reg.host())),
        )
        .unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.status),
        ("verification_failed", 403)
    );
}

#[test]
fn sixteen_concurrent_invocations_succeed_and_metrics_count_them() {
    let w = World::new(ServiceToml::default());
    let _svc = w.serve(&["--prewarm"]);
    // --prewarm unpacked the capability image before the first call.
    let rootfs = w.state().join("rootfs");
    assert!(std::fs::read_dir(&rootfs).unwrap().count() >= 1);
    let rt = rt();
    let c = w.client();
    let outs = rt.block_on(async {
        let calls = (0..16).map(|i| {
            let c = c.clone();
            async move { c.invoke("echo", &req(&[&format!("call-{i}")])).await }
        });
        futures_join_all(calls).await
    });
    for (i, o) in outs.into_iter().enumerate() {
        let o = o.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(o.stdout, format!("call-{i}\n"));
        assert!(o.cache_hit, "call {i} verified afresh after prewarm");
    }
    let m = rt.block_on(c.metrics()).unwrap();
    assert!(
        m.contains("perry_invocations_total{capability=\"echo\",result=\"exit_0\"} 16"),
        "{m}"
    );
    assert!(m.contains("perry_run_duration_seconds_count 16"), "{m}");
    assert!(m.contains("perry_verify_cache_hits_total 16"), "{m}");
    assert!(m.contains("perry_queue_depth 0"), "{m}");
}

/// Runs the futures concurrently on the current task (no extra dependency for join_all).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn a_full_queue_answers_429_and_sigterm_drains_calls_in_flight() {
    let w = World::new(ServiceToml {
        max_concurrent: 1,
        max_queue: 1,
        ..Default::default()
    });
    let mut svc = w.serve(&["--prewarm"]);
    let rt = rt();
    let c = w.client();
    let (first, second, third) = rt.block_on(async {
        let c1 = c.clone();
        let first = tokio::spawn(async move { c1.invoke("sleep", &req(&["2"])).await });
        wait_for(&c, |h| h["in_flight"] == 1).await;
        let c2 = c.clone();
        let second = tokio::spawn(async move { c2.invoke("echo", &req(&["queued"])).await });
        wait_for(&c, |h| h["queued"] == 1).await;
        // One running, one waiting: the next is turned away at once.
        let t = Instant::now();
        let third = c.invoke("echo", &req(&["overflow"])).await;
        assert!(t.elapsed() < Duration::from_secs(1));
        (first, second, third)
    });
    let err = third.unwrap_err();
    assert_eq!((err.code.as_str(), err.status), ("too_many_requests", 429));
    assert!(err.message.contains("max_queue"), "{}", err.message);
    let (first, second) = rt.block_on(async { (first.await.unwrap(), second.await.unwrap()) });
    assert_eq!(first.unwrap().exit_code, Some(0));
    assert_eq!(second.unwrap().stdout, "queued\n");

    // SIGTERM while a call is running: it completes, then the service exits and removes its
    // socket.
    let (done, status) = rt.block_on(async {
        let c1 = c.clone();
        let call = tokio::spawn(async move { c1.invoke("sleep", &req(&["2"])).await });
        wait_for(&c, |h| h["in_flight"] == 1).await;
        svc.signal("-TERM");
        let done = call.await.unwrap();
        (done, svc.wait(Duration::from_secs(30)))
    });
    let done = done.expect("the in-flight call was cut off by SIGTERM");
    assert_eq!(done.exit_code, Some(0));
    assert!(status.success(), "{status}: {}", svc.log.lock().unwrap());
    assert!(!w.socket.exists(), "socket left behind after drain");
    // Start and stop are on the record.
    let states: Vec<String> = w
        .records("serve", "allow")
        .iter()
        .map(|r| r["details"]["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["started", "stopped"]);
}

async fn wait_for(c: &Client, pred: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(h) = c.health().await {
            if pred(&h) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn cap_run_goes_through_a_running_service_with_socket() {
    let w = World::new(ServiceToml::default());
    let _svc = w.serve(&[]);
    let cap = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
            .arg("--config")
            .arg(&w.config)
            .args(["cap", "run", "--socket"])
            .arg(&w.socket)
            .args(args)
            .env_remove("PERRY_CONFIG")
            .output()
            .unwrap()
    };
    let out = cap(&["echo", "--", "via-socket"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-socket\n");
    // The service decided and ran it: the allow record names the service's peer (this test's
    // uid, via the API), not a CLI process.
    let allow = w.records("capability", "allow");
    assert_eq!(allow.last().unwrap()["actor"]["via"], "api", "{allow:?}");
    // A refusal from the service: exit 125 with the service's code and message.
    let out = cap(&["echo", "--", "$(id)"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("argument_denied") && err.contains("args.pattern"),
        "{err}"
    );
    // No service on the socket: a clear 'unavailable', exit 125.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
        .arg("--config")
        .arg(&w.config)
        .args([
            "cap",
            "run",
            "--socket",
            "/nonexistent/perry.sock",
            "echo",
            "--",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service_unavailable"));
}

/// One failure, three edges: the audit record, the CLI's `--json` and the API answer carry the
/// same code and status, all taken from the one table. Checked for a refusal (an unsigned image)
/// and for a failure to decide (the registry gone), where the audit log and the CLI used to
/// disagree (`registry_error` against `registry_unavailable`).
#[test]
fn one_failure_has_the_same_code_in_the_audit_log_the_cli_and_the_api() {
    let mut w = World::new(ServiceToml::default());
    let _svc = w.serve(&[]);
    same_code_at_every_edge(&w, "verification_failed", 403);
    // The registry goes away: nobody can decide, and every edge says so the same way.
    let port = w.reg.port();
    w.reg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    same_code_at_every_edge(&w, "registry_unavailable", 503);
}

/// Invokes the `unsigned` capability through the service and through `cap run --json` in its
/// own process, and checks both answers and both audit records name `code` and `status`.
fn same_code_at_every_edge(w: &World, code: &str, status: u16) {
    let mut r = req(&[]);
    r.workspace = Some(w.workspace.clone());
    let api = rt()
        .block_on(w.client().invoke("unsigned", &r))
        .expect_err("the invocation must be refused");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
        .arg("--config")
        .arg(&w.config)
        .args(["--json", "cap", "run", "unsigned", "--workspace"])
        .arg(&w.workspace)
        .env_remove("PERRY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let cli: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let recorded: Vec<_> = w
        .audit()
        .into_iter()
        .filter(|r| r["action"] == "capability" && r["subject"]["capability"] == "unsigned")
        .filter(|r| r["details"]["code"] == code)
        .collect();
    assert_eq!((api.code.as_str(), api.status), (code, status), "{api:?}");
    assert_eq!(cli["error"]["code"], code, "{cli}");
    assert_eq!(cli["error"]["status"], status, "{cli}");
    assert_eq!(recorded.len(), 2, "one record per door: {recorded:?}");
    for rec in &recorded {
        assert_eq!(rec["details"]["status"], status, "{rec}");
        assert_ne!(rec["decision"], "allow", "{rec}");
    }
    assert!(!w.workspace.join("ran").exists(), "a refused image ran");
}
