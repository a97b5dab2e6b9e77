//! The service test world shared by tests/service.rs and tests/service_restart.rs: a
//! perryconfig.toml with capabilities on signed and unsigned busybox images, a `perry-sandbox
//! serve` child process, raw callers as other uids, audit-log readers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perry_sandbox::capability::CapabilityRequest;
use perry_sandbox::service::Client;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

/// A uid allowed by the test configuration besides root, and one that is not.
pub(crate) const ALLOWED_UID: u32 = 4242;
pub(crate) const DENIED_UID: u32 = 4343;
/// The socket's group (`[service] socket_group`): callers need it to connect at all.
pub(crate) const SOCKET_GID: u32 = 4200;

pub(crate) struct World {
    pub reg: Registry,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub workspace: PathBuf,
}

/// What the service section of a test's configuration says.
pub(crate) struct ServiceToml {
    pub max_concurrent: u32,
    pub max_queue: u32,
    pub request_timeout: &'static str,
    /// `[service] pool`; `None` leaves the configuration's default.
    pub pool: Option<u32>,
}

impl Default for ServiceToml {
    fn default() -> Self {
        Self {
            max_concurrent: 8,
            max_queue: 64,
            request_timeout: "30s",
            pool: None,
        }
    }
}

impl World {
    pub(crate) fn new(service: ServiceToml) -> Self {
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
socket_group = {SOCKET_GID}
max_concurrent = {mc}
max_queue = {mq}
max_request_size = "4KiB"
request_timeout = "{rt}"
{pool}
"#,
            socket = socket.display(),
            mc = service.max_concurrent,
            mq = service.max_queue,
            rt = service.request_timeout,
            pool = service
                .pool
                .map(|n| format!("pool = {n}"))
                .unwrap_or_default(),
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

    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts `perry-sandbox serve` and waits until it answers.
    pub(crate) fn serve(&self, extra_args: &[&str]) -> Service {
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

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    pub(crate) fn audit(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.state().join("audit/log.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Audit records of `action` with `decision`.
    pub(crate) fn records(&self, action: &str, decision: &str) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["action"] == action && r["decision"] == decision)
            .collect()
    }

    /// A raw HTTP call over the socket from a process running as `uid` in the socket's group
    /// (so the 0660 socket lets it connect): (status, body).
    pub(crate) fn call_as(&self, uid: u32, method: &str, path: &str, body: &str) -> (u16, String) {
        let out = self.python_call(uid, SOCKET_GID, method, path, body);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, body) = text.split_once('\n').unwrap_or_else(|| {
            panic!(
                "python client failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (status.parse().unwrap(), body.to_string())
    }

    /// Runs the Python HTTP-over-socket client as `uid`:`gid` and returns its output.
    pub(crate) fn python_call(
        &self,
        uid: u32,
        gid: u32,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::process::Output {
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
        Command::new("python3")
            .args(["-c", CLIENT])
            .arg(&self.socket)
            .args([method, path, body])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    }
}

pub(crate) struct Service {
    pub child: Child,
    pub log: Arc<std::sync::Mutex<String>>,
}

impl Service {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the service to exit; its status.
    pub(crate) fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
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

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn req(args: &[&str]) -> CapabilityRequest {
    CapabilityRequest::new(args.iter().map(|s| s.to_string()).collect())
}

/// Run cgroups (`perry-run-<pid>-*`) of process `pid` (a child of this test process, so its
/// run cgroups live under ours), in every hierarchy.
pub(crate) fn run_cgroups_of(pid: u32) -> Vec<PathBuf> {
    perry_runtime::native::run_cgroups()
        .into_iter()
        .filter(|(p, _)| *p == pid)
        .map(|(_, dir)| dir)
        .collect()
}

/// Processes whose command line contains `needle`.
pub(crate) fn processes_with(needle: &str) -> Vec<u32> {
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
