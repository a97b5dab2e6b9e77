//! Load on `perry-sandbox serve`: N concurrent clients invoking an `echo` capability through the
//! Unix-socket API, every call verified (cache), audit-recorded (fsync, group commit) and run in
//! a fresh hardened sandbox. Prints throughput, p50/p99 latency and errors, then checks that the
//! service leaked nothing: fds, mounts, child processes and run cgroups are counted before and
//! after. The peer, run in the same invocation on the same rootfs with the same concurrency, is
//! `bwrap --unshare-all` (no verification, no audit, no limits): the cost floor of a sandbox.
//!
//! Two rows: `perry-serve`, the capability pinned by digest as a ShellBridge host should configure
//! it (verification from the cache, no registry on the call path), and `perry-serve-by-tag`, the
//! same command named by tag with `tag_ttl = "0s"` (a manifest request per call to a registry that
//! shares these two cores), both with the warm pool on (`[service] pool = 2`, the default); then
//! `perry-serve pool=0`, the pinned capability on a service with the pool off. `warm=` counts
//! the calls a sandbox started ahead took. The leak check covers the pinned run.
//!
//! `scripts/bench/service` runs this in release mode. Environment: `PERRY_BENCH_CALLS` (default
//! 2000), `PERRY_BENCH_CLIENTS` (default 8), `PERRY_BENCH_PEER_CALLS` (default 500).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perry_sandbox::capability::CapabilityRequest;
use perry_sandbox::service::Client;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// What the leak check counts for the service process. Idle pooled connections to the registry
/// (the HTTP client keeps about one or two per concurrent caller, closed after 90 s idle) are
/// counted apart and only bounded (2 x clients + 2): they do not grow with the number of
/// invocations (4 after 10 000 calls from 4 clients).
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    fds: usize,
    /// Prepared network namespaces (at most `[service] max_concurrent`) plus the refill
    /// thread's own.
    netns: usize,
    #[allow(dead_code)]
    registry_conns: usize,
    mounts: usize,
    children: usize,
    run_cgroups: usize,
}

/// Inodes of TCP sockets whose remote port is `port`.
fn tcp_inodes_to(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote_port = cols
                .get(2)
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) {
                if let Some(inode) = cols.get(9) {
                    out.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    out
}

fn footprint(pid: u32, registry_port: u16) -> Footprint {
    let pooled = tcp_inodes_to(registry_port);
    let (mut fds, mut registry_conns, mut netns) = (0, 0, 0);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        let target = target.display().to_string();
        if pooled.contains(&target) {
            registry_conns += 1;
        } else if target.starts_with("net:[") {
            // Network namespaces prepared ahead: a pool refilled at any moment.
            netns += 1;
        } else {
            fds += 1;
        }
    }
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let mut children = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
                    children += 1;
                }
            }
        }
    }
    // The service is our child: its run cgroups live under ours.
    let run_cgroups = perry_runtime::native::run_cgroups()
        .iter()
        .filter(|(p, _)| *p == pid)
        .count();
    Footprint {
        fds,
        registry_conns,
        netns,
        mounts,
        children,
        run_cgroups,
    }
}

/// What each open fd of `pid` points at, for a leak report.
fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let t = std::fs::read_link(e.path()).unwrap_or_default();
                    format!("{}->{}", e.file_name().to_string_lossy(), t.display())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Starts `perry-sandbox serve` on `config` and waits until it answers on `socket`.
fn serve(
    rt: &tokio::runtime::Runtime,
    config: &std::path::Path,
    socket: &std::path::Path,
) -> (std::process::Child, Client) {
    let svc = Command::new(env!("CARGO_BIN_EXE_perry-sandbox"))
        .arg("--config")
        .arg(config)
        .args(["serve", "--prewarm"])
        .env_remove("PERRY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perry-sandbox serve");
    let client = Client::new(socket);
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt.block_on(client.health()).is_err() {
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (svc, client)
}

/// Stops a service started by [`serve`] (SIGTERM: drain, then exit).
fn stop(mut svc: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &svc.id().to_string()])
        .status();
    let _ = svc.wait();
}

/// One load run's results: latencies of the good answers, errors, wall time.
struct Load {
    latencies: Vec<Duration>,
    errors: usize,
    /// Calls that took a sandbox started ahead (the warm pool).
    warm: usize,
    wall: Duration,
}

impl Load {
    fn print(&self, label: &str, clients: usize, peer_rate: f64) {
        let ok = self.latencies.len();
        let rate = ok as f64 / self.wall.as_secs_f64();
        println!(
            "{label} clients={clients} calls={} ok={ok} errors={} warm={} throughput_per_s={rate:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} ratio_over_bwrap={:.2}",
            ok + self.errors,
            self.errors,
            self.warm,
            percentile(&self.latencies, 0.50),
            percentile(&self.latencies, 0.99),
            percentile(&self.latencies, 1.0),
            rate / peer_rate,
        );
    }
}

/// `calls` invocations of `capability` from `clients` concurrent callers, each sequential.
fn load(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    capability: &'static str,
    req: &CapabilityRequest,
    calls: usize,
    clients: usize,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let warm = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (c, req, next, errors, warm) = (
                    client.clone(),
                    req.clone(),
                    Arc::clone(&next),
                    Arc::clone(&errors),
                    Arc::clone(&warm),
                );
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < calls {
                        let t = Instant::now();
                        match c.invoke(capability, &req).await {
                            Ok(o) if o.stdout == "hello\n" && o.exit_code == Some(0) => {
                                lat.push(t.elapsed());
                                warm.fetch_add(usize::from(o.warm), Ordering::Relaxed);
                            }
                            Ok(o) => {
                                eprintln!("wrong answer: {o:?}");
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("error: {e}");
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let wall = started.elapsed();
    latencies.sort();
    Load {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        warm: warm.load(Ordering::Relaxed),
        wall,
    }
}

fn main() {
    let calls = env_or("PERRY_BENCH_CALLS", 2000);
    let clients = env_or("PERRY_BENCH_CLIENTS", 8);
    let peer_calls = env_or("PERRY_BENCH_PEER_CALLS", 500);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let reg = Registry::start();
    let pushed = reg.push_image(
        "bench/echo",
        "v1",
        &TinyImage::busybox_marked("amd64", "svc-bench"),
    );
    SigStack::shared().sign(&reg, "bench/echo", &pushed.digest, &SignOptions::default());
    let socket = dir.path().join("api.sock");
    let extra = format!(
        "[shellCapabilities.echo]\ncommand = [\"echo\"]\nargs = {{ max = 2 }}\nimage = \"{host}/bench/echo@{digest}\"\n\n\
         [shellCapabilities.echo_tag]\ncommand = [\"echo\"]\nargs = {{ max = 2 }}\nimage = \"{host}/bench/echo:v1\"\n\n\
         [service]\nsocket = \"{}\"\nallowed_uids = [0]\nmax_concurrent = {}\nmax_queue = 1024\n",
        socket.display(),
        clients,
        host = reg.host(),
        digest = pushed.digest,
    );
    let config = ConfigBuilder::new(&reg, SigStack::shared())
        .extra(&extra)
        .write(dir.path());
    // The same service with the warm pool off, for the row beside it.
    let pool_off = dir.path().join("perryconfig-pool-off.toml");
    std::fs::write(
        &pool_off,
        std::fs::read_to_string(&config).unwrap().replacen(
            "max_queue = 1024\n",
            "max_queue = 1024\npool = 0\n",
            1,
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (svc, client) = serve(&rt, &config, &socket);
    let req = CapabilityRequest::new(vec!["hello".into()]);
    // Warm: page cache, profile compilation, allocator.
    for _ in 0..20 {
        for capability in ["echo", "echo_tag"] {
            rt.block_on(client.invoke(capability, &req))
                .expect("warm-up call");
        }
    }
    let svc_pid = svc.id();
    let port = reg.port();
    let before = footprint(svc_pid, port);
    let fds_before = fd_targets(svc_pid);

    let pinned = load(&rt, &client, "echo", &req, calls, clients);
    // Let the last runs' cgroups go (removal is synchronous, but give stragglers a moment).
    std::thread::sleep(Duration::from_millis(200));
    let after = footprint(svc_pid, port);

    // The peer: bwrap on the same rootfs, same concurrency, sequential per worker.
    let rootfs: PathBuf = dir
        .path()
        .join("state/rootfs")
        .join(pushed.digest.trim_start_matches("sha256:"));
    let peer_next = Arc::new(AtomicUsize::new(0));
    let peer_started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (rootfs, next) = (rootfs.clone(), Arc::clone(&peer_next));
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < peer_calls {
                    let out = Command::new("bwrap")
                        .args(["--unshare-all", "--ro-bind"])
                        .arg(&rootfs)
                        .args([
                            "/",
                            "--proc",
                            "/proc",
                            "--dev",
                            "/dev",
                            "/bin/echo",
                            "hello",
                        ])
                        .output()
                        .expect("bwrap");
                    assert!(out.status.success() && out.stdout == b"hello\n");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let peer_wall = peer_started.elapsed();
    // The same capability named by tag (`[trust] tag_ttl = "0s"`): one manifest request to the
    // registry per call, whose CPU shares these two cores. Run after the leak check, so it is
    // not counted in the footprint's registry connections.
    let tagged = load(&rt, &client, "echo_tag", &req, calls, clients);
    let fds_now = fd_targets(svc_pid);
    stop(svc);
    // Pool off: every call starts its sandbox.
    let (cold_svc, cold_client) = serve(&rt, &pool_off, &socket);
    for _ in 0..20 {
        rt.block_on(cold_client.invoke("echo", &req))
            .expect("warm-up call");
    }
    let cold = load(&rt, &cold_client, "echo", &req, calls, clients);
    stop(cold_svc);

    let peer_rate = peer_calls as f64 / peer_wall.as_secs_f64();
    println!("bwrap-peer clients={clients} calls={peer_calls} throughput_per_s={peer_rate:.1}");
    pinned.print("perry-serve pool=2", clients, peer_rate);
    cold.print("perry-serve pool=0", clients, peer_rate);
    tagged.print("perry-serve-by-tag pool=2", clients, peer_rate);
    println!("footprint before={before:?}");
    println!("footprint after={after:?}");
    let leaked = before.fds != after.fds
        || before.mounts != after.mounts
        || before.children != after.children
        || before.run_cgroups != after.run_cgroups
        || after.registry_conns > 2 * clients + 2
        || after.netns > before.netns.max(clients) + 1;
    if leaked {
        println!("fds before: {fds_before:?}");
        println!("fds now:    {fds_now:?}");
    }
    println!("leaks={}", if leaked { "YES" } else { "none" });
    if leaked || pinned.errors > 0 || tagged.errors > 0 || cold.errors > 0 {
        std::process::exit(1);
    }
}
