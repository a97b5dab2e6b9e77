//! `perry-sandbox compose up --wait` + `down` against podman-compose on the same podman, the
//! same files and the same images, in one invocation: the example web stack (3 services) and
//! a generated 10-service stack, both with `service_healthy` dependencies.
//!
//! We verify every image (from the cache after the first run), honour `service_healthy` with
//! our own healthchecks, journal and label everything; podman-compose on this podman (4.3,
//! no systemd) ignores the health conditions and starts everything at once — the comparison
//! says so in its output. Both use one `CONTAINERS_CONF` (runc, this host's ulimits).
//!
//! `scripts/bench/compose` installs the newest podman-compose from PyPI into a venv and runs
//! this in release mode. Environment: `PERRY_BENCH_RUNS` (default 5),
//! `PERRY_BENCH_PODMAN_COMPOSE` (the podman-compose executable), `PERRY_BENCH_LOG` (a file
//! that gets our runs' debug log: each backend command with its duration).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

struct Bench {
    dir: tempfile::TempDir,
    config: PathBuf,
    containers_conf: PathBuf,
    registry: String,
    podman_compose: PathBuf,
    /// `PERRY_BENCH_LOG`: our runs at `PERRY_LOG=debug`, their stderr (every backend command
    /// with what it cost) appended to this file.
    log: Option<PathBuf>,
}

impl Bench {
    fn ours(&self, file: &Path, project: &str, args: &[&str]) -> Duration {
        let t = Instant::now();
        let o = Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
            .arg("--config")
            .arg(&self.config)
            .args(["compose", "-f"])
            .arg(file)
            .args(["-p", project])
            .args(args)
            .env("REGISTRY", &self.registry)
            .env("CONTAINERS_CONF", &self.containers_conf)
            .envs(self.log.as_ref().map(|_| ("PERRY_LOG", "debug")))
            .output()
            .expect("perry-sandbox");
        let took = t.elapsed();
        if let Some(log) = &self.log {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("PERRY_BENCH_LOG");
            writeln!(f, "== {project} {args:?}: {} ms", took.as_millis()).unwrap();
            f.write_all(&o.stderr).unwrap();
        }
        assert!(
            o.status.success(),
            "perry-sandbox compose {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        took
    }

    fn peer(&self, file: &Path, project: &str, args: &[&str]) -> Duration {
        let t = Instant::now();
        let o = Command::new(&self.podman_compose)
            .arg("-f")
            .arg(file)
            .args(["-p", project])
            .args(args)
            .env("REGISTRY", &self.registry)
            .env("CONTAINERS_CONF", &self.containers_conf)
            .output()
            .expect("podman-compose");
        let took = t.elapsed();
        assert!(
            o.status.success(),
            "podman-compose {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        took
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// db <- app1..app8 (each healthy) <- proxy: ten services, two levels of health waits.
fn ten_services(registry: &str) -> String {
    let svc = |name: &str, repo: &str, deps: &[String]| {
        let deps = if deps.is_empty() {
            String::new()
        } else {
            let d: String = deps
                .iter()
                .map(|d| format!("      {d}:\n        condition: service_healthy\n"))
                .collect();
            format!("    depends_on:\n{d}")
        };
        format!(
            "  {name}:\n    image: {registry}/stack/{repo}:v1\n    x-perry-tier: isolated\n    \
             command: [\"sh\", \"-c\", \"touch /tmp/ready; trap 'exit 0' TERM; sleep 86400 & wait\"]\n    \
             networks: [backend]\n{deps}    healthcheck:\n      test: [\"CMD-SHELL\", \"test -f /tmp/ready\"]\n      \
             interval: 1s\n      start_period: 30s\n      start_interval: 100ms\n      retries: 5\n"
        )
    };
    let apps: Vec<String> = (1..=8).map(|i| format!("app{i}")).collect();
    let mut s = String::from("services:\n");
    s.push_str(&svc("db", "db", &[]));
    for a in &apps {
        s.push_str(&svc(a, "app", &["db".to_string()]));
    }
    s.push_str(&svc("proxy", "proxy", &apps));
    s.push_str("networks:\n  backend:\n    internal: true\n");
    s
}

fn main() {
    let runs: usize = std::env::var("PERRY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let podman_compose = PathBuf::from(
        std::env::var("PERRY_BENCH_PODMAN_COMPOSE").unwrap_or_else(|_| "podman-compose".into()),
    );
    let reg = Registry::start();
    for name in ["proxy", "app", "db"] {
        let repo = format!("stack/{name}");
        let p = reg.push_image(&repo, "v1", &TinyImage::busybox_marked("amd64", name));
        SigStack::shared().sign(&reg, &repo, &p.digest, &SignOptions::default());
    }
    let dir = tempfile::tempdir().unwrap();
    let host = reg.host();
    // The peer pulls by tag over plain HTTP, which podman refuses by default: pull for it once.
    for name in ["proxy", "app", "db"] {
        let o = Command::new("podman")
            .args([
                "pull",
                "-q",
                "--tls-verify=false",
                &format!("{host}/stack/{name}:v1"),
            ])
            .output()
            .expect("podman pull");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let config = ConfigBuilder::new(&reg, SigStack::shared())
        .images(&[&format!("{host}/unused/*")])
        .tiered_rule(&[&format!("{host}/stack/proxy")], "default")
        .tiered_rule(
            &[&format!("{host}/stack/app"), &format!("{host}/stack/db")],
            "isolated",
        )
        .host_podman()
        .write(dir.path());
    let containers_conf = dir.path().join("containers.conf");
    std::fs::write(
        &containers_conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    // podman 4.3 (Debian 12) knows no `start_interval` (compose-spec 2.20): podman-compose,
    // which hands healthchecks to podman, gets the files without it; we run the healthchecks
    // ourselves and honour the file as written. Both get the same `start_period`.
    let for_the_peer = |yaml: String| -> String {
        yaml.lines()
            .filter(|l| !l.trim_start().starts_with("start_interval:"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web-stack/compose.yaml");
    let files = |label: &str, yaml: String| -> (PathBuf, PathBuf) {
        let ours = dir.path().join(format!("{label}.yaml"));
        let peer = dir.path().join(format!("{label}-peer.yaml"));
        std::fs::write(&peer, for_the_peer(yaml.clone())).unwrap();
        std::fs::write(&ours, yaml).unwrap();
        (ours, peer)
    };
    let three = files("three", std::fs::read_to_string(example).unwrap());
    let ten = files("ten", ten_services(&reg.host()));
    let b = Bench {
        dir,
        config,
        containers_conf,
        registry: reg.host(),
        podman_compose,
        log: std::env::var_os("PERRY_BENCH_LOG").map(PathBuf::from),
    };
    println!(
        "compose up (--wait) + down on podman, {runs} runs each, medians; ratio = ours / podman-compose"
    );
    println!("podman-compose ignores service_healthy on this podman (no systemd); we wait for it.");
    for (label, (file, peer_file)) in [("3 services", &three), ("10 services", &ten)] {
        // Warm-up: images pulled into podman, verifications cached, for both tools.
        let warm = "perrybench-warm";
        b.ours(file, warm, &["up", "--wait"]);
        b.ours(file, warm, &["down", "--volumes", "-t", "2"]);
        b.peer(peer_file, warm, &["up", "-d"]);
        b.peer(peer_file, warm, &["down", "-v", "-t", "2"]);
        let (mut up_o, mut down_o, mut up_p, mut down_p) = (vec![], vec![], vec![], vec![]);
        for i in 0..runs {
            let p = format!("perrybench-ours-{i}");
            up_o.push(b.ours(file, &p, &["up", "--wait"]));
            down_o.push(b.ours(file, &p, &["down", "--volumes", "-t", "2"]));
            let p = format!("perrybench-peer-{i}");
            up_p.push(b.peer(peer_file, &p, &["up", "-d"]));
            down_p.push(b.peer(peer_file, &p, &["down", "-v", "-t", "2"]));
        }
        let (uo, dn, up, dp) = (median(up_o), median(down_o), median(up_p), median(down_p));
        println!(
            "{label:<12} up:   perry-sandbox {:>7.0} ms   podman-compose {:>7.0} ms   ratio {:.2}",
            uo.as_secs_f64() * 1e3,
            up.as_secs_f64() * 1e3,
            uo.as_secs_f64() / up.as_secs_f64()
        );
        println!(
            "{label:<12} down: perry-sandbox {:>7.0} ms   podman-compose {:>7.0} ms   ratio {:.2}",
            dn.as_secs_f64() * 1e3,
            dp.as_secs_f64() * 1e3,
            dn.as_secs_f64() / dp.as_secs_f64()
        );
    }
    drop(b.dir);
}
