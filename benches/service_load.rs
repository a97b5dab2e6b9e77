//! Load on `perry-sandbox serve`: N concurrent clients invoking an `echo` capability through the
//! Unix-socket API, every call verified (cache), audit-recorded (fsync, group commit) and run in
//! a fresh hardened sandbox. Prints throughput, p50/p99 latency and errors, then checks that the
//! service leaked nothing: fds, mounts, child processes and run cgroups are counted before and
//! after. The peer, run in the same invocation on the same rootfs with the same concurrency, is
//! `bwrap --unshare-all` (no verification, no audit, no limits): the cost floor of a sandbox.
//!
//! Rows: `perry-serve pool=2`, the capability pinned by digest as a ShellBridge host should
//! configure it (verification from the cache, no registry on the call path) on a service with
//! the warm pool on (the default); `perry-serve pool=0`, the same on a second service, side by
//! side, with the pool off; `perry-serve-by-tag pool=2`, the same command named by tag with
//! `tag_ttl = "0s"` (a manifest request per call to a registry that shares these two cores);
//! `perry-serve-workspace pool=2|0`, a pinned `cat` of a file in the request's read-only
//! workspace, on both services, against its own peer row (`bwrap-peer-workspace`: the same with
//! `--ro-bind` of the workspace). `warm=` counts the calls a sandbox started ahead took. Each row's calls are split in rounds,
//! interleaved row by row with the bwrap peer, so that all of them see the same machine. The
//! leak check covers the pool-on service over all its rounds.
//!
//! `scripts/bench/service` runs this in release mode. Environment: `PERRY_BENCH_CALLS` (per row,
//! default 2000), `PERRY_BENCH_CLIENTS` (default 8), `PERRY_BENCH_PEER_CALLS` (default half the
//! calls), `PERRY_BENCH_ROUNDS` (default 10), `PERRY_BENCH_MAX_CONCURRENT` (the services'
//! `[service] max_concurrent`, default the number of clients: every call runs at once).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perry_sandbox::capability::CapabilityRequest;
use perry_sandbox::service::Client;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

/// What `cat_ws` prints: the file in the request's workspace.
const WORKSPACE_TEXT: &str = "from the workspace\n";

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
#[derive(Default)]
struct Load {
    latencies: Vec<Duration>,
    errors: usize,
    /// Calls that took a sandbox started ahead (the warm pool).
    warm: usize,
    wall: Duration,
}

impl Load {
    /// Adds another round's results.
    fn add(&mut self, round: Load) {
        self.latencies.extend(round.latencies);
        self.latencies.sort();
        self.errors += round.errors;
        self.warm += round.warm;
        self.wall += round.wall;
    }

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
    let expected = if capability == "cat_ws" {
        WORKSPACE_TEXT
    } else {
        "hello\n"
    };
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
                            Ok(o) if o.stdout == expected && o.exit_code == Some(0) => {
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
    let peer_calls = env_or("PERRY_BENCH_PEER_CALLS", calls / 2);
    let rounds = env_or("PERRY_BENCH_ROUNDS", 10).max(1);
    let max_concurrent = env_or("PERRY_BENCH_MAX_CONCURRENT", clients).max(1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let reg = Registry::start();
    let pushed = reg.push_image(
        "bench/echo",
        "v1",
        &TinyImage::busybox_marked("amd64", "svc-bench"),
    );
    SigStack::shared().sign(&reg, "bench/echo", &pushed.digest, &SignOptions::default());
    // One caller's workspace, read by `cat_ws`, under the services' workspace root.
    let roots = dir.path().join("roots");
    let ws = roots.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("hello.txt"), WORKSPACE_TEXT).unwrap();
    for (p, mode) in [
        (&roots, 0o755),
        (&ws, 0o755),
        (&ws.join("hello.txt"), 0o644),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // Two services side by side, each with its own state (audit log, store, uid range): the
    // warm pool on (the default) and off.
    let service = |name: &str, pool: &str, uid_start: u32| {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = sub.join("api.sock");
        let extra = format!(
            "[shellCapabilities.echo]\ncommand = [\"echo\"]\nargs = {{ max = 2 }}\nimage = \"{host}/bench/echo@{digest}\"\n\n\
             [shellCapabilities.echo_tag]\ncommand = [\"echo\"]\nargs = {{ max = 2 }}\nimage = \"{host}/bench/echo:v1\"\n\n\
             [shellCapabilities.cat_ws]\ncommand = [\"cat\", \"/work/hello.txt\"]\nimage = \"{host}/bench/echo@{digest}\"\n\
             mounts = [{{ source = \"{{workspace}}\", target = \"/work\" }}]\n\n\
             [service]\nsocket = \"{}\"\nallowed_uids = [0]\nmax_concurrent = {}\nmax_queue = 1024\n{pool}\n",
            socket.display(),
            max_concurrent,
            host = reg.host(),
            digest = pushed.digest,
        );
        let config = ConfigBuilder::new(&reg, SigStack::shared())
            .extra(&extra)
            .write(&sub);
        let text = std::fs::read_to_string(&config).unwrap().replacen(
            "[sandbox]\n",
            &format!(
                "[sandbox]\nuid_range = {{ start = {uid_start}, count = 65536 }}\nworkspace_roots = [\"{}\"]\n",
                roots.display()
            ),
            1,
        );
        std::fs::write(&config, text).unwrap();
        (sub, config, socket)
    };
    let (on_dir, on_config, on_socket) = service("pool-on", "", 300_000);
    let (_, off_config, off_socket) = service("pool-off", "pool = 0", 400_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (svc, client) = serve(&rt, &on_config, &on_socket);
    let (off_svc, off_client) = serve(&rt, &off_config, &off_socket);
    let req = CapabilityRequest::new(vec!["hello".into()]);
    let ws_req = CapabilityRequest::new(Vec::new()).workspace(&ws);
    // Warm: page cache, profile compilation, allocator.
    for _ in 0..20 {
        for capability in ["echo", "echo_tag"] {
            rt.block_on(client.invoke(capability, &req))
                .expect("warm-up call");
        }
        rt.block_on(off_client.invoke("echo", &req))
            .expect("warm-up call");
        for c in [&client, &off_client] {
            let o = rt
                .block_on(c.invoke("cat_ws", &ws_req))
                .expect("warm-up call");
            assert_eq!(o.stdout, WORKSPACE_TEXT, "{o:?}");
        }
    }
    let svc_pid = svc.id();
    let port = reg.port();
    let before = footprint(svc_pid, port);
    let fds_before = fd_targets(svc_pid);

    // The peer: bwrap on the same rootfs, same concurrency, sequential per worker.
    let rootfs: PathBuf = on_dir
        .join("state/rootfs")
        .join(pushed.digest.trim_start_matches("sha256:"));
    // With `workspace`, it binds it read-only (under a /tmp tmpfs: the rootfs is read-only and
    // lacks /work) and cats the file, like `cat_ws`.
    let bwrap_round = |n: usize, workspace: Option<&PathBuf>| -> Duration {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let (rootfs, next) = (rootfs.clone(), Arc::clone(&next));
                let workspace = workspace.cloned();
                std::thread::spawn(move || {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let mut cmd = Command::new("bwrap");
                        cmd.args(["--unshare-all", "--ro-bind"])
                            .arg(&rootfs)
                            .args(["/", "--proc", "/proc", "--dev", "/dev"]);
                        let expected: &[u8] = match &workspace {
                            Some(ws) => {
                                cmd.args(["--tmpfs", "/tmp", "--ro-bind"]).arg(ws).args([
                                    "/tmp/work",
                                    "/bin/cat",
                                    "/tmp/work/hello.txt",
                                ]);
                                WORKSPACE_TEXT.as_bytes()
                            }
                            None => {
                                cmd.args(["/bin/echo", "hello"]);
                                b"hello\n"
                            }
                        };
                        let out = cmd.output().expect("bwrap");
                        assert!(out.status.success() && out.stdout == expected, "{out:?}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        started.elapsed()
    };

    // Interleaved rounds, so that every row sees the same machine: pool on, pool off, bwrap,
    // and by tag (`[trust] tag_ttl = "0s"`: a manifest request per call to a registry that
    // shares these two cores).
    let (mut pinned, mut cold, mut tagged) = (Load::default(), Load::default(), Load::default());
    let (mut ws_on, mut ws_off) = (Load::default(), Load::default());
    let (mut peer_wall, mut ws_peer_wall) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        pinned.add(load(&rt, &client, "echo", &req, calls / rounds, clients));
        cold.add(load(
            &rt,
            &off_client,
            "echo",
            &req,
            calls / rounds,
            clients,
        ));
        peer_wall += bwrap_round(peer_calls / rounds, None);
        tagged.add(load(
            &rt,
            &client,
            "echo_tag",
            &req,
            calls / rounds,
            clients,
        ));
        ws_on.add(load(
            &rt,
            &client,
            "cat_ws",
            &ws_req,
            calls / rounds,
            clients,
        ));
        ws_off.add(load(
            &rt,
            &off_client,
            "cat_ws",
            &ws_req,
            calls / rounds,
            clients,
        ));
        ws_peer_wall += bwrap_round(peer_calls / rounds, Some(&ws));
    }
    // Let the last runs' cgroups go (a warm run's are removed just after its answer).
    std::thread::sleep(Duration::from_millis(200));
    let after = footprint(svc_pid, port);
    let fds_now = fd_targets(svc_pid);
    stop(svc);
    stop(off_svc);

    let peer_rate = (peer_calls / rounds * rounds) as f64 / peer_wall.as_secs_f64();
    println!(
        "bwrap-peer clients={clients} calls={} throughput_per_s={peer_rate:.1}",
        peer_calls / rounds * rounds
    );
    pinned.print("perry-serve pool=2", clients, peer_rate);
    cold.print("perry-serve pool=0", clients, peer_rate);
    tagged.print("perry-serve-by-tag pool=2", clients, peer_rate);
    let ws_peer_rate = (peer_calls / rounds * rounds) as f64 / ws_peer_wall.as_secs_f64();
    println!("bwrap-peer-workspace clients={clients} throughput_per_s={ws_peer_rate:.1}");
    ws_on.print("perry-serve-workspace pool=2", clients, ws_peer_rate);
    ws_off.print("perry-serve-workspace pool=0", clients, ws_peer_rate);
    println!("rounds={rounds} (each row's calls split in rounds, interleaved row by row)");
    println!("max_concurrent={max_concurrent} (the services' [service] max_concurrent; the rest of the clients wait in its queue)");
    println!("footprint before={before:?}");
    println!("footprint after={after:?}");
    // Registry connections are pooled by the HTTP client (about one or two per concurrent
    // caller); network namespaces are prepared ahead (at most max_concurrent, plus the refill
    // thread's own); the warm pool's sandboxes are counted in run_cgroups before and after.
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
    let errors = [&pinned, &cold, &tagged, &ws_on, &ws_off]
        .iter()
        .map(|l| l.errors)
        .sum::<usize>();
    if leaked || errors > 0 {
        std::process::exit(1);
    }
}
