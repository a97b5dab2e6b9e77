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
//! `scripts/bench/startup` runs this first and measures bubblewrap, podman and the in-process
//! runner on the very rootfs this run unpacked (printed as `rootfs=PATH`).
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (variant, config, reference) in [
        ("tag", &config, &reference),
        ("tag_ttl", &ttl_config, &reference),
        ("digest", &config, &pinned),
    ] {
        // Warm: verify (cache), pull and unpack (store), page cache.
        for _ in 0..3 {
            once(config, reference);
        }
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let cpu_before = host_busy_cpu().expect("/proc/stat");
        for _ in 0..runs {
            let t = Instant::now();
            once(config, reference);
            times.push(t.elapsed());
        }
        let cpu = host_busy_cpu().expect("/proc/stat") - cpu_before;
        times.sort();
        println!(
            "perry-sandbox-run variant={variant} runs={runs} p50_ms={:.3} p90_ms={:.3} min_ms={:.3} cpu_ms_per_run={:.3}",
            ms(times[(runs - 1) / 2]),
            ms(times[(runs - 1) * 9 / 10]),
            ms(times[0]),
            ms(cpu) / runs as f64
        );
    }
    let rootfs = dir
        .join("state/rootfs")
        .join(pushed.digest.trim_start_matches("sha256:"));
    println!("rootfs={}", rootfs.display());
    println!("config={} image={reference}", config.display());
    if let Some(secs) = std::env::var("PERRY_BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        std::thread::sleep(Duration::from_secs(secs));
    }
}
