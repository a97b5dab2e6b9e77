//! Loading benchmarks (`cargo bench -p perry-compose`).
//!
//! * `load/full_example`: compose-go's full example (every field), with `.env`-style
//!   files and labels files, paths resolved.
//! * `load/generated_200`: a generated project of 200 services (ports, volumes,
//!   environment, depends_on chains, healthchecks, an override file).
//!
//! Loading must stay far below the cost of starting one container (~100 ms): after
//! criterion, a summary prints the median of each and that ratio.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use perry_compose::{load, LoadOptions};

fn full_example() -> LoadOptions {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/full-example");
    LoadOptions {
        files: vec![dir.join("full-example.yml")],
        environment: [("HOME", "/home/bench"), ("BAR", "b"), ("QUX", "q")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        consistency: false,
        ..LoadOptions::default()
    }
}

fn generated(dir: &Path, n: usize) -> LoadOptions {
    let mut y = String::from("name: bench\nservices:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  svc{i}:\n    image: registry.local/app:{i}\n    command: run --id {i} --mode 'fast path'\n    ports: [\"{p}:80\", \"127.0.0.1:{q}:9000/udp\"]\n    environment:\n      ID: \"{i}\"\n      MODE: ${{MODE:-prod}}\n    volumes: [\"./data/{i}:/data\", \"cache{m}:/cache:ro\"]\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 10s\n      retries: 3\n    networks: [front, back]\n",
            p = 10000 + i,
            q = 20000 + i,
            m = i % 10,
        ));
        if i > 0 {
            y.push_str(&format!(
                "    depends_on:\n      svc{}:\n        condition: service_healthy\n",
                i - 1
            ));
        }
    }
    y.push_str("networks:\n  front: {}\n  back: {internal: true}\nvolumes:\n");
    for m in 0..10 {
        y.push_str(&format!("  cache{m}: {{}}\n"));
    }
    let mut o = String::from("services:\n");
    for i in (0..n).step_by(2) {
        o.push_str(&format!(
            "  svc{i}:\n    read_only: true\n    environment: [EXTRA=1]\n"
        ));
    }
    let main = dir.join("compose.yaml");
    let over = dir.join("compose.override.yaml");
    std::fs::write(&main, y).unwrap();
    std::fs::write(&over, o).unwrap();
    LoadOptions {
        files: vec![main, over],
        ..LoadOptions::default()
    }
}

fn median(opts: &LoadOptions) -> Duration {
    let mut times: Vec<Duration> = (0..21)
        .map(|_| {
            let t = Instant::now();
            load(opts).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path(), 200);
    let full = full_example();
    let p = load(&gen).unwrap();
    assert_eq!(p.services.len(), 200);
    let mut g = c.benchmark_group("load");
    g.bench_function("full_example", |b| b.iter(|| load(&full).unwrap()));
    g.bench_function("generated_200", |b| b.iter(|| load(&gen).unwrap()));
    g.finish();
    let (a, b) = (median(&full), median(&gen));
    let start = Duration::from_millis(100);
    println!("summary: full_example median {a:?}, generated_200 median {b:?}");
    println!(
        "summary: one container start ~{start:?}: full example {:.1}%, 200 services {:.1}%",
        a.as_secs_f64() / start.as_secs_f64() * 100.0,
        b.as_secs_f64() / start.as_secs_f64() * 100.0
    );
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
}
