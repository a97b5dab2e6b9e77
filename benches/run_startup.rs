//! Whole-process startup of `perry-sandbox run IMAGE -- /bin/true` with the store and the
//! verification cache warm: a busybox image on a loopback docker-registry, signed by the
//! sigstore-js mock stack (perry-testworld), verified and pulled once, then run N times — in
//! three ways, each a line `perry-sandbox-run variant=…`:
//!
//! * `tag`: `repo:v1` with the default configuration, so the tag is resolved at the registry
//!   on every run (the digest's verification comes from the cache);
//! * `tag_ttl`: the same with `[trust] tag_ttl = "1h"`: the tag's resolution is reused too;
//! * `digest`: `repo@sha256:…`, answered from the cache without the registry.
//!
//! With `PERRY_BENCH_BWRAP_RUNS` / `PERRY_BENCH_PODMAN_RUNS`, the peers follow on the very
//! rootfs this run unpacked, timed by the same harness: `bwrap --unshare-all --ro-bind` and
//! `podman --runtime runc run --rm --network none --read-only` (lines `peer=…`). Every line
//! also gives the host's busy CPU per run, all cores. `scripts/bench/startup` runs this, then
//! the in-process runner on the same rootfs (printed as `rootfs=PATH`).
//!
//! Environment: `PERRY_BENCH_DIR` (where the config, state and rootfs live; default a temp dir
//! removed at exit), `PERRY_BENCH_RUNS` (default 50), `PERRY_BENCH_HOLD` (seconds to keep the
//! registry and signer up after printing, so the printed `config=` can be profiled by hand).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use perry_runtime::native::host_busy_cpu;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("PERRY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runs: usize = std::env::var("PERRY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let reg = Registry::start();
    let image = TinyImage::busybox_marked("amd64", "bench");
    let pushed = reg.push_image("bench/true", "v1", &image);
    SigStack::shared().sign(&reg, "bench/true", &pushed.digest, &SignOptions::default());
    let builder = ConfigBuilder::new(&reg, SigStack::shared());
    let config = builder.write(&dir);
    // The same state, with tag resolutions reused for an hour.
    let ttl_config = dir.join("perryconfig-tag-ttl.toml");
    std::fs::write(
        &ttl_config,
        builder.clone().tag_ttl("1h").render(&dir.join("state")),
    )
    .unwrap();
    let reference = format!("{}/bench/true:v1", reg.host());
    let pinned = format!("{}/bench/true@{}", reg.host(), pushed.digest);
    let bin = env!("CARGO_BIN_EXE_perry-sandbox");
    let once = |config: &PathBuf, reference: &str| {
        let out = Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(["run", reference, "--", "/bin/true"])
            .env_remove("PERRY_CONFIG")
            .output()
            .expect("perry-sandbox run");
        assert!(
            out.status.success(),
            "perry-sandbox run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (variant, config, reference) in [
        ("tag", &config, &reference),
        ("tag_ttl", &ttl_config, &reference),
        ("digest", &config, &pinned),
    ] {
        let (p50, p90, min, cpu) = measure(runs, || once(config, reference));
        println!(
            "perry-sandbox-run variant={variant} runs={runs} p50_ms={p50:.3} p90_ms={p90:.3} min_ms={min:.3} cpu_ms_per_run={cpu:.3}"
        );
    }
    let rootfs = dir
        .join("state/rootfs")
        .join(pushed.digest.trim_start_matches("sha256:"));
    println!("rootfs={}", rootfs.display());
    // The peers, on the rootfs `run` unpacked, timed by this same harness (spawn, wait, output
    // collected), so that no driver's own overhead favours either side.
    let root = rootfs.to_str().expect("utf-8 rootfs path");
    let bwrap: &[&str] = &[
        "bwrap",
        "--unshare-all",
        "--ro-bind",
        root,
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "/bin/true",
    ];
    let podman: &[&str] = &[
        "podman",
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--rootfs",
        root,
        "/bin/true",
    ];
    for (peer, argv, var) in [
        ("bwrap", bwrap, "PERRY_BENCH_BWRAP_RUNS"),
        ("podman", podman, "PERRY_BENCH_PODMAN_RUNS"),
    ] {
        let Some(n) = std::env::var(var)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        let (p50, p90, min, cpu) = measure(n.max(1), || {
            let out = Command::new(argv[0])
                .args(&argv[1..])
                .output()
                .unwrap_or_else(|e| panic!("{peer}: {e}"));
            assert!(
                out.status.success(),
                "{peer} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
        println!(
            "peer={peer} runs={n} p50_ms={p50:.3} p90_ms={p90:.3} min_ms={min:.3} cpu_ms_per_run={cpu:.3}"
        );
    }
    println!("config={} image={reference}", config.display());
    if let Some(secs) = std::env::var("PERRY_BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        std::thread::sleep(Duration::from_secs(secs));
    }
}

/// Runs `once` a few times to warm up, then `runs` times: p50, p90 and min wall time (ms) and
/// the host's busy CPU per run (ms, all cores).
fn measure(runs: usize, mut once: impl FnMut()) -> (f64, f64, f64, f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // Warm: verify (cache), pull and unpack (store), page cache.
    for _ in 0..3 {
        once();
    }
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let cpu_before = host_busy_cpu().expect("/proc/stat");
    for _ in 0..runs {
        let t = Instant::now();
        once();
        times.push(t.elapsed());
    }
    let cpu = host_busy_cpu().expect("/proc/stat") - cpu_before;
    times.sort();
    (
        ms(times[(runs - 1) / 2]),
        ms(times[(runs - 1) * 9 / 10]),
        ms(times[0]),
        ms(cpu) / runs as f64,
    )
}
