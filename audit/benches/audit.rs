//! Audit log throughput: durable appends per second with 1 and 8 concurrent writers (group
//! commit), `verify` of a 1 000 000-record log, and `AuditLog::open` + close of a 100 000-record
//! log (what every `perry-sandbox run` pays).
//!
//! Peers measured in the same run, so the numbers can be read as ratios on any machine:
//! * `append/raw_fdatasync_1` — one 400-byte `write` + `fdatasync` per record on the same file
//!   system with no audit logic: the device floor a single synchronous writer cannot beat;
//! * `append/*_tmpfs` — the same writers on tmpfs (`/dev/shm`, where `fdatasync` costs nothing):
//!   the CPU ceiling of the writer path itself;
//! * `verify/sha256_only_1m` — SHA-256 of every record line and nothing else: the floor for
//!   recomputing the tree.
//! * `open/replay_100k` — open + close with `writer.state` deleted before each open, i.e. the full
//!   replay every open did before that hint existed: the peer of `open/resume_100k`.
//!
//! Targets (issue 5): ≥ 20 000 appends/s with 8 writers; verify of 1 000 000 records ≤ 3 s.
//! With 8 synchronous writers a batch holds at most 8 records, so on a device whose flush takes
//! `t` the ceiling is `8 / t` appends/s; the bench prints that bound next to the measurement.
//!
//! Run: `CARGO_TARGET_DIR=/work/targets/audit cargo bench -p perry-audit --bench audit`.
//! `PERRY_AUDIT_BENCH_DIR` picks the on-disk directory (default: the system temp dir).
//! `PERRY_AUDIT_BENCH_ONLY=open` (or `append`, `verify`; comma-separated) runs only those groups
//! and skips the others' setup (generating the 1M-record log takes a while the first time).
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use perry_audit::{
    verify, Action, AuditLog, AuditSink, Correlation, Decision, Event, LogOptions, VerifyOptions,
};

const VERIFY_RECORDS: u64 = 1_000_000;
const OPEN_RECORDS: u64 = 100_000;

/// Whether `PERRY_AUDIT_BENCH_ONLY` (unset: all) selects the group `name`.
fn selected(name: &str) -> bool {
    std::env::var("PERRY_AUDIT_BENCH_ONLY").map_or(true, |v| v.split(',').any(|g| g.trim() == name))
}

/// A realistic record: an image verification allowed by a keyless trust rule (~450 bytes).
fn event(i: u64) -> Event {
    Event::new(Action::Verify, Decision::Allow)
        .image(format!("cgr.dev/chainguard/git:v{i}"))
        .digest("sha256:6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        .rule("chainguard-release")
        .tier("hardened")
        .reason("keyless signature matched policy chainguard-release")
        .detail("issuer", "https://token.actions.githubusercontent.com")
        .detail("rekor_index", i)
        .correlation(&Correlation::new())
}

fn disk_base() -> PathBuf {
    std::env::var_os("PERRY_AUDIT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn tmpfs_base() -> Option<PathBuf> {
    let p = Path::new("/dev/shm");
    p.is_dir().then(|| p.to_path_buf())
}

fn open(dir: &Path) -> Arc<AuditLog> {
    let mut o = LogOptions::new(dir);
    o.origin = "bench.example/audit".into();
    Arc::new(AuditLog::open(o).expect("open bench log"))
}

/// `iters` rounds in which each of `writers` threads appends one record; returns wall time.
fn run_writers(log: &Arc<AuditLog>, writers: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let log = Arc::clone(log);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    log.record(event(i)).expect("durable append");
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("writer thread");
    }
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median latency of one 400-byte append + fdatasync on the file system of `dir`.
fn fdatasync_latency(dir: &Path) -> Duration {
    let path = dir.join("raw.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("raw file");
    let line = [b'x'; 400];
    let samples = (0..50)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&line).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed()
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    median(samples)
}

fn appends(c: &mut Criterion) {
    if !selected("append") {
        return;
    }
    let disk = tempfile::tempdir_in(disk_base()).expect("bench dir");
    let flush = fdatasync_latency(disk.path());
    eprintln!(
        "[audit bench] {}: median 400-byte write+fdatasync {:.3} ms => ceiling for 8 synchronous writers (batches <= 8): {:.0} appends/s",
        disk.path().display(),
        flush.as_secs_f64() * 1e3,
        8.0 / flush.as_secs_f64()
    );
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    // Peer: the raw device floor for one synchronous writer.
    g.throughput(Throughput::Elements(1));
    {
        let path = disk.path().join("raw.bin");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("raw file");
        let line = [b'x'; 400];
        g.bench_function("raw_fdatasync_1", |b| {
            b.iter(|| {
                f.write_all(&line).unwrap();
                f.sync_data().unwrap();
            })
        });
    }

    let mut places = vec![("disk", disk.path().to_path_buf())];
    let shm = tmpfs_base().map(|b| tempfile::tempdir_in(b).expect("tmpfs dir"));
    if let Some(s) = &shm {
        places.push(("tmpfs", s.path().to_path_buf()));
    }
    for (place, base) in &places {
        for writers in [1usize, 8] {
            let dir = base.join(format!("log-{writers}"));
            let log = open(&dir);
            g.throughput(Throughput::Elements(writers as u64));
            g.bench_function(
                BenchmarkId::new(format!("durable_{place}"), format!("{writers}_writers")),
                |b| b.iter_custom(|iters| run_writers(&log, writers, iters)),
            );
        }
    }
    g.finish();
}

/// Builds a `records`-record log once: written by 16 writers on tmpfs (fast to make), then copied
/// to the on-disk directory that is measured.
fn build_big_log(target: &Path, records: u64) {
    let gen_base = tmpfs_base().unwrap_or_else(disk_base);
    let gen = tempfile::tempdir_in(gen_base).expect("generation dir");
    let t = Instant::now();
    {
        let log = open(gen.path());
        let writers = 16u64;
        let per = records / writers;
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..per {
                        log.record(event(w * per + i)).expect("append");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("generator");
        }
        assert_eq!(log.size(), records);
    }
    std::fs::create_dir_all(target).expect("verify dir");
    for entry in std::fs::read_dir(gen.path()).expect("read generation dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), target.join(entry.file_name())).expect("copy");
        }
    }
    eprintln!(
        "[audit bench] generated {records} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// A `records`-record log: generated once and kept under `CARGO_TARGET_TMPDIR` (on the same
/// disk as the target directory) in `name` for later runs; regenerated when it does not verify.
fn cached_log(name: &str, records: u64) -> (PathBuf, VerifyOptions, perry_audit::VerifyReport) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let check = |dir: &Path| -> Option<(VerifyOptions, perry_audit::VerifyReport)> {
        let key = perry_audit::store::read_vkey(dir).ok()?;
        let opts = VerifyOptions {
            key: Some(key),
            old_checkpoint: None,
        };
        let rep = verify(dir, &opts).ok()?;
        (rep.records == records && rep.checkpoint_size == Some(records)).then_some((opts, rep))
    };
    if let Some((opts, rep)) = check(&dir) {
        return (dir, opts, rep);
    }
    let _ = std::fs::remove_dir_all(&dir);
    build_big_log(&dir, records);
    let (opts, rep) = check(&dir).expect("the generated log verifies");
    (dir, opts, rep)
}

fn verification(c: &mut Criterion) {
    if !selected("verify") {
        return;
    }
    let (dir, opts, rep) = cached_log("audit-bench-1m", VERIFY_RECORDS);
    let bytes: u64 = perry_audit::store::segments(&dir)
        .expect("segments")
        .iter()
        .map(|s| std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!(
        "[audit bench] verify input: {} ({VERIFY_RECORDS} records, {} segments, {:.0} MB)",
        dir.display(),
        rep.segments,
        bytes as f64 / 1e6
    );

    // Wall time on a shared machine depends on the load; CPU time much less. One verify and
    // the hashing floor, measured both ways (CPU = user + sys of all threads, /proc/self/stat).
    let t = (Instant::now(), cpu_secs());
    verify(&dir, &opts).expect("verify");
    let (verify_wall, verify_cpu) = (t.0.elapsed().as_secs_f64(), cpu_secs() - t.1);
    let t = (Instant::now(), cpu_secs());
    hash_only(&dir);
    let (hash_wall, hash_cpu) = (t.0.elapsed().as_secs_f64(), cpu_secs() - t.1);
    eprintln!(
        "[audit bench] one verify of 1M: wall {verify_wall:.2} s, CPU {verify_cpu:.2} s; sha256-only: wall {hash_wall:.2} s, CPU {hash_cpu:.2} s; CPU ratio verify/sha256-only {:.2}; {} CPUs, load average {}",
        verify_cpu / hash_cpu,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?")
    );

    let mut g = c.benchmark_group("verify");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(VERIFY_RECORDS));
    g.bench_function("audit_verify_1m", |b| {
        b.iter(|| verify(&dir, &opts).expect("verify"))
    });
    // Peer: hashing every record line, nothing else.
    g.bench_function("sha256_only_1m", |b| b.iter(|| hash_only(&dir)));
    g.finish();
}

/// Reads every segment and hashes every record line: the floor for recomputing the tree.
fn hash_only(dir: &Path) {
    let mut n = 0u64;
    for s in perry_audit::store::segments(dir).unwrap() {
        let bytes = std::fs::read(&s.path).unwrap();
        for l in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            std::hint::black_box(perry_audit::merkle::leaf_hash(l));
            n += 1;
        }
    }
    assert_eq!(n, VERIFY_RECORDS);
}

/// CPU seconds (user + sys, all threads) this process has used, from /proc/self/stat (in clock
/// ticks of 1/100 s, the Linux USER_HZ).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// One open + close of the log in `dir`; with `replay`, `writer.state` is deleted first (untimed)
/// so the open replays every segment.
fn open_close(dir: &Path, replay: bool) -> Duration {
    if replay {
        let _ = std::fs::remove_file(dir.join(perry_audit::store::STATE));
    }
    let t = Instant::now();
    let mut o = LogOptions::new(dir);
    o.origin = "bench.example/audit".into();
    let log = AuditLog::open(o).expect("open bench log");
    assert_eq!(log.size(), OPEN_RECORDS);
    log.close().expect("close bench log");
    t.elapsed()
}

/// `AuditLog::open` + close of a 100 000-record log, resuming from `writer.state` and, as the
/// peer, replaying the whole log (the hint deleted before each open).
fn opening(c: &mut Criterion) {
    if !selected("open") {
        return;
    }
    let (dir, _, _) = cached_log("audit-bench-open-100k", OPEN_RECORDS);
    // A copied or regenerated log has other inodes than its hint names: a replay renews it.
    // Then a few untimed rounds of each, so the one-shot medians below see a warm page cache.
    for _ in 0..3 {
        open_close(&dir, true);
        open_close(&dir, false);
    }
    let bytes: u64 = perry_audit::store::segments(&dir)
        .expect("segments")
        .iter()
        .map(|s| std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    let resume = median((0..21).map(|_| open_close(&dir, false)).collect());
    let replay = median((0..5).map(|_| open_close(&dir, true)).collect());
    eprintln!(
        "[audit bench] open+close of {} ({OPEN_RECORDS} records, {:.0} MB): resume {:.3} ms, replay {:.1} ms (median); replay/resume {:.0}x",
        dir.display(),
        bytes as f64 / 1e6,
        resume.as_secs_f64() * 1e3,
        replay.as_secs_f64() * 1e3,
        replay.as_secs_f64() / resume.as_secs_f64()
    );
    let mut g = c.benchmark_group("open");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("resume_100k", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| open_close(&dir, false)).sum())
    });
    g.bench_function("replay_100k", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| open_close(&dir, true)).sum())
    });
    g.finish();
}

criterion_group!(benches, appends, verification, opening);
criterion_main!(benches);
