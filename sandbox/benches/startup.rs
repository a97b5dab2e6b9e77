//! Startup latency of the in-process native runner: setup + exec + wait of `/bin/true` in a
//! busybox rootfs, N times, printing the median — once with the runner's floor
//! (`MinimalFinalStep`) and once with the real `hardened` tier profile (`ProfileStep`:
//! Landlock, seccomp with its denial supervisor) — then both again with network namespaces
//! prepared ahead by the runner's refill thread (`prepare_network_namespaces`), which is what
//! `perry-sandbox run` and the service do. `scripts/bench/startup` runs this next to bubblewrap
//! and podman on the same rootfs and prints the ratios. Each step also prints the host's busy
//! CPU time per run, all cores (`host_busy_cpu`), kernel work in worker threads included.
//!
//! Last, `hardened_pooled`: the hardened profile through the service's path — a spawner (this
//! bench re-executed) and a warm pool of one sandbox — timed only when a warm sandbox is ready
//! (what a caller sees when the pool keeps up), interleaved run by run with `bwrap
//! --unshare-all` on the same rootfs, whose median is printed beside it.
//!
//! Environment: `PERRY_BENCH_ROOTFS` (a rootfs with /bin/true, /proc, /dev, /tmp; default: one
//! built from /bin/busybox in a temp dir), `PERRY_BENCH_RUNS` (default 200),
//! `PERRY_BENCH_STATE` (lease state dir; default a temp dir), `PERRY_BENCH_ONLY` (run only the
//! named step, e.g. `hardened_netns_ready`, for profiling).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use perry_policies::UidRange;
use perry_runtime::native::{
    host_busy_cpu, prepare_network_namespaces, run, spawner_main, FinalStep, LeaseConfig,
    MinimalFinalStep, ProfileStep, RunSpec, Spawner, StepRecipe, WarmPool, SPAWNER_ARG,
};

fn busybox_rootfs(dir: &std::path::Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox");
    for a in ["true", "sh"] {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn main() {
    // This binary is also the pooled step's spawner.
    if std::env::args().nth(1).as_deref() == Some(SPAWNER_ARG) {
        spawner_main();
    }
    // `cargo bench` passes `--bench`; nothing else to parse.
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = std::env::var_os("PERRY_BENCH_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| busybox_rootfs(tmp.path()));
    let runs: usize = std::env::var("PERRY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let state = std::env::var_os("PERRY_BENCH_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("state"));
    let mut spec = RunSpec::new(
        perry_runtime::pull::VerifiedRootfs::unverified_for_tests(&rootfs),
        vec!["/bin/true".into()],
        LeaseConfig {
            state_dir: state,
            range: UidRange {
                start: 400_000,
                count: 65_536,
            },
        },
    );
    spec.uid = 1000;
    spec.gid = 1000;
    let profile = perry_profiles::Profile::for_tier(
        perry_policies::Tier::Hardened,
        None,
        &perry_profiles::Grants::default(),
    )
    .expect("hardened profile");
    let hardened = std::sync::Arc::new(ProfileStep::new(&profile).expect("profile step"));
    let steps: [(&str, &dyn FinalStep); 4] = [
        ("floor", &MinimalFinalStep),
        ("hardened", &*hardened),
        ("floor_netns_ready", &MinimalFinalStep),
        ("hardened_netns_ready", &*hardened),
    ];
    let only = std::env::var("PERRY_BENCH_ONLY").ok();
    for (name, step) in steps {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        if name.ends_with("_netns_ready") {
            prepare_network_namespaces(1);
        }
        // Warm-up: cgroup layout detection, lease file, page cache.
        for _ in 0..5 {
            let o = run(&spec, step).expect("native run");
            assert_eq!(o.exit_code, Some(0), "{o:?}");
        }
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let cpu_before = host_busy_cpu().expect("/proc/stat");
        for _ in 0..runs {
            let t = Instant::now();
            let o = run(&spec, step).expect("native run");
            times.push(t.elapsed());
            assert_eq!(o.exit_code, Some(0), "{o:?}");
        }
        let cpu = host_busy_cpu().expect("/proc/stat") - cpu_before;
        times.sort();
        let pct = |p: usize| times[(times.len() - 1) * p / 100].as_secs_f64() * 1000.0;
        println!(
            "native-runner step={name} runs={runs} p50_ms={:.3} p90_ms={:.3} min_ms={:.3} cpu_ms_per_run={:.3}",
            pct(50),
            pct(90),
            times[0].as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1000.0 / runs as f64
        );
    }
    if only.as_deref().is_none_or(|o| o == "hardened_pooled") {
        pooled(&spec, &rootfs, hardened, runs);
    }
}

/// The `hardened_pooled` step (see the crate docs), with `bwrap` interleaved.
fn pooled(
    spec: &RunSpec,
    rootfs: &std::path::Path,
    step: std::sync::Arc<ProfileStep>,
    runs: usize,
) {
    let exe = std::env::current_exe().expect("this bench's path");
    let spawner = std::sync::Arc::new(Spawner::start_program(exe).expect("spawner"));
    let pool = WarmPool::new(spawner, 1).expect("warm pool");
    let recipe = StepRecipe {
        tier: perry_policies::Tier::Hardened,
        overrides: None,
        grants: perry_profiles::Grants::default(),
    };
    let bwrap = |root: &std::path::Path| {
        let t = Instant::now();
        let out = std::process::Command::new("bwrap")
            .args(["--unshare-all", "--ro-bind"])
            .arg(root)
            .args(["/", "--proc", "/proc", "--dev", "/dev", "/bin/true"])
            .output()
            .expect("bwrap");
        assert!(out.status.success(), "bwrap: {out:?}");
        t.elapsed()
    };
    let wait_ready = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.ready(spec, &recipe) == 0 {
            assert!(Instant::now() < deadline, "the pool never refilled");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    // Warm-up: registers the shape, spawner page cache.
    for _ in 0..5 {
        let o = pool.run(spec, &step, &recipe).expect("pooled run");
        assert_eq!(o.outcome.exit_code, Some(0), "{o:?}");
        wait_ready();
        bwrap(rootfs);
    }
    let (mut times, mut peer) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    // Before each timed run, a moment for the kernel's deferred work (the previous sandbox's
    // network namespace and cgroups are released asynchronously) to settle, for both sides.
    let settle = || std::thread::sleep(Duration::from_millis(3));
    for _ in 0..runs {
        wait_ready();
        settle();
        let t = Instant::now();
        let o = pool.run(spec, &step, &recipe).expect("pooled run");
        times.push(t.elapsed());
        assert!(o.warm && o.outcome.exit_code == Some(0), "{o:?}");
        wait_ready();
        settle();
        peer.push(bwrap(rootfs));
    }
    times.sort();
    peer.sort();
    let p50 = |v: &[Duration]| v[(v.len() - 1) / 2].as_secs_f64() * 1000.0;
    println!(
        "native-runner step=hardened_pooled runs={runs} p50_ms={:.3} p90_ms={:.3} min_ms={:.3} bwrap_interleaved_p50_ms={:.3} ratio_over_bwrap={:.2}",
        p50(&times),
        times[(times.len() - 1) * 9 / 10].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        p50(&peer),
        p50(&times) / p50(&peer),
    );
}
