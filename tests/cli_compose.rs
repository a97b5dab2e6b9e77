//! `perry-sandbox compose` end to end on real podman: the example web stack (YAML and TOML)
//! from `examples/web-stack`, its images pushed to the loopback registry and signed by the
//! sigstore-js stack. Whatever a refused or killed `up` leaves is asked of podman itself.

use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

/// One registry for the binary: signed `stack/{proxy,app,db}` and `other/signed` (which no
/// trust rule names), unsigned `stack/rogue`, and `stack/moved`, whose signed tag was moved to
/// an unsigned image.
fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = Registry::start();
        let sign = |repo: &str, marker: &str| {
            let p = reg.push_image(repo, "v1", &TinyImage::busybox_marked("amd64", marker));
            SigStack::shared().sign(&reg, repo, &p.digest, &SignOptions::default());
        };
        for name in ["proxy", "app", "db"] {
            sign(&format!("stack/{name}"), name);
        }
        sign("other/signed", "other");
        sign("stack/moved", "moved-signed");
        reg.push_image(
            "stack/moved",
            "v1",
            &TinyImage::busybox_marked("amd64", "moved-unsigned"),
        );
        reg.push_image(
            "stack/rogue",
            "v1",
            &TinyImage::busybox_marked("amd64", "rogue"),
        );
        reg
    })
}

struct World {
    dir: tempfile::TempDir,
    config: PathBuf,
    project: String,
}

impl World {
    fn new(prefix: &str) -> Self {
        let reg = registry();
        let dir = tempfile::tempdir().unwrap();
        let host = reg.host();
        // The site's tiers for the stack: the edge proxy may have a route out, the rest starts
        // at `isolated`; `other/*` matches no rule at all.
        let config = ConfigBuilder::new(reg, SigStack::shared())
            .images(&[&format!("{host}/unused/*")])
            .tiered_rule(&[&format!("{host}/stack/proxy")], "default")
            .tiered_rule(
                &[
                    &format!("{host}/stack/app"),
                    &format!("{host}/stack/db"),
                    &format!("{host}/stack/moved"),
                    &format!("{host}/stack/rogue"),
                ],
                "isolated",
            )
            .host_podman()
            .write(dir.path());
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let project = format!("perrytest-{prefix}-{}-{n:x}", std::process::id());
        Self {
            dir,
            config,
            project,
        }
    }

    /// Copies the example `file` into the world, optionally edited, and returns its path.
    fn example(&self, file: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/web-stack")
            .join(file);
        let dst = self.dir.path().join(file);
        std::fs::write(&dst, edit(std::fs::read_to_string(src).unwrap())).unwrap();
        dst
    }

    fn compose(&self, file: &Path, args: &[&str]) -> Std {
        let mut c = Std::new(assert_cmd::cargo::cargo_bin("perry-sandbox"));
        c.arg("--config")
            .arg(&self.config)
            .arg("compose")
            .arg("-f")
            .arg(file)
            .args(["-p", &self.project])
            .args(args)
            .env_remove("PERRY_CONFIG")
            .env("REGISTRY", registry().host())
            .env("PROXY_PORT", free_port().to_string());
        c
    }

    fn run(&self, file: &Path, args: &[&str]) -> std::process::Output {
        self.compose(file, args).output().unwrap()
    }

    /// Everything podman holds with the project's label, asked of podman itself.
    fn left_behind(&self) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        let mut out = Vec::new();
        for (kind, args) in [
            ("container", vec!["ps", "-a", "-q", "--filter", &filter]),
            ("network", vec!["network", "ls", "-q", "--filter", &filter]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
        ] {
            let o = Std::new("podman").args(&args).output().unwrap();
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("{kind} {l}")),
            );
        }
        out
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn podman(args: &[&str]) -> String {
    text(&Std::new("podman").args(args).output().unwrap().stdout)
        .trim()
        .to_string()
}

#[test]
fn the_example_stack_runs_healthy_from_yaml_and_from_toml_and_down_leaves_nothing() {
    for file in ["compose.yaml", "compose.toml"] {
        let w = World::new("example");
        let f = w.example(file, |s| s);
        let up = w.run(&f, &["--json", "up", "--wait"]);
        assert!(
            up.status.success(),
            "{file}: {}{}",
            text(&up.stdout),
            text(&up.stderr)
        );
        let last = text(&up.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let report: serde_json::Value = serde_json::from_str(&last).unwrap();
        let services: Vec<(String, String)> = report["up"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["service"].as_str().unwrap().to_string(),
                    s["health"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect();
        let healthy = |s: &str| (s.to_string(), "healthy".to_string());
        assert_eq!(
            services,
            [healthy("db"), healthy("app"), healthy("proxy")],
            "{file}"
        );

        // The backend network is internal (no route out); the frontend is not.
        let p = &w.project;
        assert_eq!(
            podman(&[
                "network",
                "inspect",
                "--format",
                "{{.Internal}}",
                &format!("{p}_backend")
            ]),
            "true"
        );
        assert_eq!(
            podman(&[
                "network",
                "inspect",
                "--format",
                "{{.Internal}}",
                &format!("{p}_frontend")
            ]),
            "false"
        );
        let ps = w.run(&f, &["--json", "ps"]);
        assert!(ps.status.success(), "{}", text(&ps.stderr));
        let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
        // (service, tier, isolation) of each entry of a JSON array, in its order: `ps` lists by service.
        let triples = |v: &serde_json::Value| -> Vec<(String, String, String)> {
            let s = |x: &serde_json::Value, k: &str| x[k].as_str().unwrap().to_string();
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| (s(x, "service"), s(x, "tier"), s(x, "isolation")))
                .collect()
        };
        let tiers = triples(&ps["containers"]);
        let row = |s: &str, t: &str| (s.to_string(), t.to_string(), "container".to_string());
        assert_eq!(
            tiers,
            [
                row("app", "isolated"),
                row("db", "isolated"),
                row("proxy", "default")
            ]
        );
        // On the record: the plan names each service's tier and isolation, and so does each
        // container's create record, before the container exists.
        let audit = std::fs::read_to_string(w.dir.path().join("state/audit/log.jsonl")).unwrap();
        let records: Vec<serde_json::Value> = audit
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let plan = records
            .iter()
            .find(|r| r["action"] == "plan" && r["decision"] == "allow")
            .expect("a plan record");
        let mut planned = triples(&plan["details"]["services"]);
        planned.sort();
        assert_eq!(planned, tiers, "{file}: plan record");
        let mut created: Vec<(String, String, String)> = records
            .iter()
            .filter(|r| r["action"] == "create" && r["details"]["container"].is_string())
            .map(|r| {
                (
                    r["details"]["service"].as_str().unwrap().to_string(),
                    r["policy"]["tier"].as_str().unwrap().to_string(),
                    r["details"]["isolation"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        created.sort();
        assert_eq!(created, tiers, "{file}: create records");
        let exec = w.run(
            &f,
            &["exec", "app", "sh", "-c", "echo $DATABASE_HOST; id -u"],
        );
        assert!(exec.status.success(), "{}", text(&exec.stderr));
        assert_eq!(text(&exec.stdout), "db\n65534\n");

        let down = w.run(&f, &["down", "--volumes"]);
        assert!(down.status.success(), "{}", text(&down.stderr));
        assert_eq!(w.left_behind(), Vec::<String>::new(), "{file}");
    }
}

/// Each attack on the gate, added to the stack as one more service, refuses the whole `up`:
/// nothing of the project exists afterwards.
#[test]
fn every_refusal_refuses_the_whole_up_and_nothing_is_created() {
    let host = registry().host();
    let attacks: Vec<(&str, String, &str)> = vec![
        (
            "unsigned",
            format!("image: {host}/stack/rogue:v1"),
            "verification_failed",
        ),
        (
            "moved tag",
            format!("image: {host}/stack/moved:v1"),
            "verification_failed",
        ),
        (
            "no trust rule",
            format!("image: {host}/other/signed:v1"),
            "policy_denied",
        ),
        (
            "a looser tier than its rule",
            format!("image: {host}/stack/app:v1\n    x-perry-tier: default"),
            "policy_denied",
        ),
        (
            "privileged",
            format!("image: {host}/stack/app:v1\n    privileged: true"),
            "policy_denied",
        ),
        ("build", "build: .".to_string(), "policy_denied"),
        (
            "host network",
            format!("image: {host}/stack/app:v1\n    network_mode: host"),
            "policy_denied",
        ),
    ];
    for (what, service, code) in attacks {
        let w = World::new("refused");
        let f = w.example("compose.yaml", |s| {
            s.replacen(
                "\nnetworks:\n",
                &format!("\n  evil:\n    {service}\n\nnetworks:\n"),
                1,
            )
        });
        let up = w.run(&f, &["--json", "up", "--wait"]);
        assert!(!up.status.success(), "{what}: the up succeeded");
        let out = text(&up.stdout);
        let err: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("{}"))
            .unwrap_or_else(|e| panic!("{what}: {e}: {out} {}", text(&up.stderr)));
        assert_eq!(err["error"]["code"], code, "{what}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("services.evil"),
            "{what}: {err}"
        );
        assert_eq!(w.left_behind(), Vec::<String>::new(), "{what}");
    }
}

/// `kill -9` of `up` while it waits on a healthcheck that never passes; the next `down` finds
/// the journal and leaves nothing.
#[test]
fn an_up_killed_with_sigkill_is_undone_by_the_next_down() {
    let w = World::new("sigkill");
    let f = w.example("compose.yaml", |s| {
        s.replacen(
            "test: [\"CMD-SHELL\", \"test -f /tmp/ready\"]",
            "test: [\"CMD-SHELL\", \"false\"]",
            1,
        )
        .replacen("retries: 5", "retries: 100000", 1)
    });
    let mut child = w
        .compose(&f, &["up", "--wait", "--wait-timeout", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !w.left_behind().iter().any(|l| l.starts_with("container ")) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no container appeared"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!w.left_behind().is_empty());

    let down = w.run(&f, &["--json", "down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    let report: serde_json::Value =
        serde_json::from_str(text(&down.stdout).lines().last().unwrap()).unwrap();
    assert!(report["down"]["recovered"].is_object(), "{report}");
    assert_eq!(w.left_behind(), Vec::<String>::new());
}

/// A file of its own: `w.dir/name` with `text`.
fn write_file(w: &World, name: &str, text: &str) -> PathBuf {
    let p = w.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn attached_up_streams_prefixed_logs_and_abort_on_container_exit_stops_the_rest_with_its_code() {
    let host = registry().host();
    let w = World::new("attached");
    // `job` talks on both streams and exits 3; `server` would run for ten minutes.
    let f = write_file(
        &w,
        "compose.yaml",
        &format!(
            "services:\n  \
               job:\n    image: {host}/stack/app:v1\n    \
                 command: [\"sh\", \"-c\", \"echo job-says-hello; echo job-warns >&2; sleep 2; echo job-done; exit 3\"]\n  \
               server:\n    image: {host}/stack/db:v1\n    \
                 command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; echo server-up; while true; do sleep 1; done\"]\n"
        ),
    );
    let started = Instant::now();
    let up = w.run(&f, &["up", "--abort-on-container-exit"]);
    let out = text(&up.stdout);
    assert_eq!(
        up.status.code(),
        Some(3),
        "job's code: {out}\n{}",
        text(&up.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "did not abort"
    );
    assert!(out.contains("Attaching to"), "{out}");
    // Prefixed like compose (no colours: not a terminal), both streams, as they came.
    for line in [
        "job-1    | job-says-hello",
        "job-1    | job-warns",
        "job-1    | job-done",
        "server-1 | server-up",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(out.contains("job-1 exited with code 3"), "{out}");
    assert!(!out.contains("\x1b["), "colours off a terminal: {out:?}");
    assert!(text(&up.stderr).contains("Aborting on container exit"));
    // The rest was stopped, not removed (like compose), by its stop signal (its TERM
    // trap exits 0); down removes it. Podman reports such a container as `stopped`
    // until its own cleanup has run and `exited` after, so the test reads the facts
    // both share: not running, and the code the trap chose.
    let server = format!("{}-server-1", w.project);
    assert_eq!(
        podman(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            &server
        ]),
        "false 0"
    );

    // Attached without abort: the command returns when every container has exited, 0.
    let w2 = World::new("attached-all");
    let f2 = write_file(
        &w2,
        "compose2.yaml",
        &format!(
            "services:\n  \
               one:\n    image: {host}/stack/app:v1\n    command: [\"sh\", \"-c\", \"echo one-ran\"]\n  \
               two:\n    image: {host}/stack/db:v1\n    command: [\"sh\", \"-c\", \"sleep 1; echo two-ran; exit 5\"]\n"
        ),
    );
    let up2 = w2.run(&f2, &["up"]);
    let out2 = text(&up2.stdout);
    assert_eq!(up2.status.code(), Some(0), "{out2}\n{}", text(&up2.stderr));
    assert!(
        out2.contains("one-ran") && out2.contains("two-ran"),
        "{out2}"
    );
    assert!(out2.contains("two-1 exited with code 5"), "{out2}");
    for (w, file) in [(&w, &f), (&w2, &f2)] {
        let down = w.run(file, &["down"]);
        assert!(down.status.success(), "{}", text(&down.stderr));
        assert_eq!(w.left_behind(), Vec::<String>::new());
    }
}
