//! `perry-sandbox serve` end to end: a real service process on a temporary Unix socket, real
//! capability images pushed to the loopback registry and signed by the sigstore-js stack, real
//! sandboxes. Callers are the library's `Client` (as root) and Python's `http.client` running
//! as other uids, so the peer-credential check is exercised with real `SO_PEERCRED` values.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perry_sandbox::capability::CapabilityRequest;
use perry_sandbox::service::Client;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

/// A uid allowed by the test configuration besides root, and one that is not.
const ALLOWED_UID: u32 = 4242;
const DENIED_UID: u32 = 4343;

struct World {
    reg: Registry,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
    workspace: PathBuf,
}

/// What the service section of a test's configuration says.
struct ServiceToml {
    max_concurrent: u32,
    max_queue: u32,
    request_timeout: &'static str,
}

impl Default for ServiceToml {
    fn default() -> Self {
        Self {
            max_concurrent: 8,
            max_queue: 64,
            request_timeout: "30s",
        }
    }
}

impl World {
    fn new(service: ServiceToml) -> Self {
        let reg = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = reg.host();
        let signed = reg.push_image(
            "caps/busybox",
            "v1",
            &TinyImage::busybox_marked("amd64", "svc"),
        );
        SigStack::shared().sign(
            &reg,
            "caps/busybox",
            &signed.digest,
            &SignOptions::default(),
        );
        reg.push_image(
            "caps/unsigned",
            "v1",
            &TinyImage::busybox_marked("amd64", "unsigned"),
        );
        let roots = dir.path().join("roots");
        let workspace = roots.join("ws");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(workspace.join("hello.txt"), "hello from the workspace\n").unwrap();
        std::fs::set_permissions(
            workspace.join("hello.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let socket = dir.path().join("run/api.sock");
        let image = format!("{host}/caps/busybox:v1");
        let extra = format!(
            r#"
[shellCapabilities.echo]
command = ["echo"]
args = {{ max = 4, pattern = "[a-z0-9-]{{1,20}}" }}
image = "{image}"

[shellCapabilities.cat]
command = ["cat"]
args = {{ max = 1, positions = [{{ pattern = "[a-z.]{{1,20}}" }}] }}
image = "{image}"
mounts = [{{ source = "{{workspace}}", target = "/work" }}]
workdir = "/work"

[shellCapabilities.write]
command = ["touch"]
args = {{ max = 1, positions = [{{ one_of = ["/work/ran"] }}] }}
image = "{image}"
mounts = [{{ source = "{{workspace}}", target = "/work", read_only = false }}]

[shellCapabilities.sleep]
command = ["sleep"]
args = {{ max = 1, pattern = "[0-9]{{1,2}}" }}
image = "{image}"
timeout = "60s"

[shellCapabilities.unsigned]
command = ["touch", "/work/ran"]
image = "{host}/caps/unsigned:v1"
mounts = [{{ source = "{{workspace}}", target = "/work", read_only = false }}]

[service]
socket = "{socket}"
allowed_uids = [0, {ALLOWED_UID}]
max_concurrent = {mc}
max_queue = {mq}
max_request_size = "4KiB"
request_timeout = "{rt}"
"#,
            socket = socket.display(),
            mc = service.max_concurrent,
            mq = service.max_queue,
            rt = service.request_timeout,
        );
        let builder = ConfigBuilder::new(&reg, SigStack::shared()).extra(&extra);
        // workspace_roots belongs in [sandbox], which the builder writes: add it there.
        let config = builder.write(dir.path());
        let text = std::fs::read_to_string(&config).unwrap().replacen(
            "[sandbox]\n",
            &format!("[sandbox]\nworkspace_roots = [\"{}\"]\n", roots.display()),
            1,
        );
        std::fs::write(&config, text).unwrap();
        Self {
            reg,
            dir,
            config,
            socket,
            workspace,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts `perry-sandbox serve` and waits until it answers.
    fn serve(&self, extra_args: &[&str]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .args(extra_args)
            .env_remove("PERRY_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = Client::new(&self.socket);
        let rt = rt();
        loop {
            if rt.block_on(client.health()).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("serve exited with {status}: {}", log.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not come up: {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Service { child, log }
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.state().join("audit/log.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Audit records of `action` with `decision`.
    fn records(&self, action: &str, decision: &str) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["action"] == action && r["decision"] == decision)
            .collect()
    }

    /// A raw HTTP call over the socket from a process running as `uid` (gid 0, so the 0660
    /// socket lets it connect): (status, body).
    fn call_as(&self, uid: u32, method: &str, path: &str, body: &str) -> (u16, String) {
        const CLIENT: &str = r#"
import http.client, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
c = C("perry")
body = sys.argv[4].encode() if sys.argv[4] else None
c.request(sys.argv[2], sys.argv[3], body=body, headers={"Content-Type": "application/json"})
r = c.getresponse()
sys.stdout.write(str(r.status) + "\n" + r.read().decode())
"#;
        let out = Command::new("python3")
            .args(["-c", CLIENT])
            .arg(&self.socket)
            .args([method, path, body])
            .uid(uid)
            .gid(0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, body) = text.split_once('\n').unwrap_or_else(|| {
            panic!(
                "python client failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (status.parse().unwrap(), body.to_string())
    }
}

struct Service {
    child: Child,
    log: Arc<std::sync::Mutex<String>>,
}

impl Service {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the service to exit; its status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "service did not exit: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn req(args: &[&str]) -> CapabilityRequest {
    CapabilityRequest::new(args.iter().map(|s| s.to_string()).collect())
}

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

/// Run cgroups (`perry-run-<pid>-*`) of process `pid`, in every hierarchy.
fn run_cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("perry-run-{pid}-");
    let mut found = Vec::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for mnt in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for line in own.lines() {
            let rel = line.splitn(3, ':').nth(2).unwrap().trim_start_matches('/');
            if let Ok(entries) = std::fs::read_dir(mnt.path().join(rel)) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        found.push(e.path());
                    }
                }
            }
        }
    }
    // A unified hierarchy mounted directly at /sys/fs/cgroup.
    for line in own.lines().filter(|l| l.starts_with("0::")) {
        let rel = line.trim_start_matches("0::").trim_start_matches('/');
        if let Ok(entries) = std::fs::read_dir(Path::new("/sys/fs/cgroup").join(rel)) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(e.path());
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn after_kill_9_mid_run_the_next_start_removes_what_was_left() {
    let w = World::new(ServiceToml::default());
    let mut svc = w.serve(&["--prewarm"]);
    let pid = svc.pid();
    let rt = rt();
    let c = w.client();
    // A distinctive sleep, so its process can be found on the host.
    let call = rt.spawn({
        let c = c.clone();
        async move { c.invoke("sleep", &req(&["47"])).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with("sleep 47").is_empty() || run_cgroups_of(pid).is_empty() {
        assert!(Instant::now() < deadline, "the sandbox never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    svc.signal("-KILL");
    svc.wait(Duration::from_secs(10));
    let err = rt.block_on(call).unwrap().unwrap_err();
    assert_eq!(err.code, "service_unavailable", "{err:?}");
    // The sandbox died with its supervisor (parent-death signal): no process outlives it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with("sleep 47").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sandboxed sleep outlived the service"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its cgroups were left behind by the kill; the next start removes them.
    assert!(
        !run_cgroups_of(pid).is_empty(),
        "nothing was left to clean up"
    );
    let svc2 = w.serve(&[]);
    assert!(
        run_cgroups_of(pid).is_empty(),
        "stale cgroups survived a restart: {:?}",
        run_cgroups_of(pid)
    );
    // And the restarted service works.
    let out = rt.block_on(c.invoke("echo", &req(&["again"]))).unwrap();
    assert_eq!(out.stdout, "again\n");
    drop(svc2);
}
