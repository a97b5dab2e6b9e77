//! Verification benchmarks.
//!
//! * `verify/cache_hit_pinned`: `Verifier::verify` of a digest-pinned reference whose decision
//!   is cached — what every `run` of an already-verified image pays (target ≤ 20 µs).
//! * `verify/cache_hit_tag`: the same by tag: a registry round trip (loopback) to resolve the
//!   tag, then the cache.
//! * `verify/cold_bundle_in_memory`: parse and fully verify a public-good Sigstore bundle held
//!   in memory (certificate chain, SCT, Rekor inclusion proof and SET, signature), root prepared.
//! * `verify/cold_image`: a full first verification against the loopback registry (resolve,
//!   discover, fetch, verify), with a fresh cache each time.
//!
//! The registry and signer are the real loopback test world (docker-registry, sigstore-js).
//! After criterion, a same-run summary prints medians and the cold/cached ratio.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use perry_policies::{Config, ImageRef};
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};
use perry_verifier::registry::Platform;
use perry_verifier::{verify_blob, BlobInput, BlobPolicy, TrustRoot, Verifier, VerifyCache};
use sha2::{Digest as _, Sha256};

const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const GHA: &str = "https://token.actions.githubusercontent.com";

struct World {
    _reg: Registry,
    _dir: tempfile::TempDir,
    config: Config,
    pinned: ImageRef,
    tagged: ImageRef,
}

fn world() -> World {
    let reg = Registry::start();
    let pushed = reg.push_image(
        "bench/app",
        "v1",
        &TinyImage::busybox_marked("amd64", "bench"),
    );
    SigStack::shared().sign(&reg, "bench/app", &pushed.digest, &SignOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = ConfigBuilder::new(&reg, SigStack::shared()).write(dir.path());
    let config = Config::load(&path).unwrap();
    let pinned = ImageRef::parse(&format!("{}/bench/app@{}", reg.host(), pushed.digest)).unwrap();
    let tagged = ImageRef::parse(&format!("{}/bench/app:v1", reg.host())).unwrap();
    World {
        _reg: reg,
        _dir: dir,
        config,
        pinned,
        tagged,
    }
}

fn fixture(p: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/conformance")
            .join(p),
    )
    .unwrap()
}

fn median(mut f: impl FnMut(), n: usize) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[n / 2]
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w = world();
    let platform = Platform::default();
    let verifier = Verifier::new(&w.config).unwrap();
    let first = rt.block_on(verifier.verify(&w.pinned, &platform)).unwrap();
    assert!(!first.cache_hit);
    assert!(
        rt.block_on(verifier.verify(&w.pinned, &platform))
            .unwrap()
            .cache_hit
    );

    let root = TrustRoot::public_good().unwrap();
    let bundle = fixture("happy-path-v0.3/bundle.sigstore.json");
    let input = BlobInput::Sha256(Sha256::digest(fixture("a.txt")).into());
    let policy = BlobPolicy::Identity {
        identity: BEACON.into(),
        issuer: GHA.into(),
    };
    verify_blob(&root, &bundle, &input, &policy).unwrap();

    let mut g = c.benchmark_group("verify");
    g.bench_function("cache_hit_pinned", |b| {
        b.iter(|| {
            let v = rt.block_on(verifier.verify(&w.pinned, &platform)).unwrap();
            assert!(v.cache_hit);
        })
    });
    g.bench_function("cache_hit_tag", |b| {
        b.iter(|| rt.block_on(verifier.verify(&w.tagged, &platform)).unwrap())
    });
    g.bench_function("cold_bundle_in_memory", |b| {
        b.iter(|| verify_blob(&root, &bundle, &input, &policy).unwrap())
    });
    g.sample_size(10);
    g.bench_function("cold_image", |b| {
        b.iter(|| {
            let cache = VerifyCache::in_memory(Duration::from_secs(60), Duration::from_secs(60));
            let v = Verifier::with_parts(&w.config, verifier.trust_root().clone(), cache).unwrap();
            let r = rt.block_on(v.verify(&w.pinned, &platform)).unwrap();
            assert!(!r.cache_hit);
        })
    });
    g.finish();

    // Same-run summary: medians and ratios (noisy shared machine: compare, don't trust one number).
    let hit = median(
        || {
            rt.block_on(verifier.verify(&w.pinned, &platform)).unwrap();
        },
        2001,
    );
    let bundle_cold = median(
        || {
            verify_blob(&root, &bundle, &input, &policy).unwrap();
        },
        101,
    );
    let image_cold = median(
        || {
            let cache = VerifyCache::in_memory(Duration::from_secs(60), Duration::from_secs(60));
            let v = Verifier::with_parts(&w.config, verifier.trust_root().clone(), cache).unwrap();
            rt.block_on(v.verify(&w.pinned, &platform)).unwrap();
        },
        21,
    );
    println!("\nsummary (medians, same run):");
    println!(
        "  cache-hit verify (pinned): {:>10.2} µs   target <= 20 µs: {}",
        hit.as_secs_f64() * 1e6,
        if hit <= Duration::from_micros(20) {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "  cold bundle (in memory):   {:>10.2} µs   {:.0}x the cache hit",
        bundle_cold.as_secs_f64() * 1e6,
        bundle_cold.as_secs_f64() / hit.as_secs_f64()
    );
    println!(
        "  cold image (loopback):     {:>10.2} µs   {:.0}x the cache hit",
        image_cold.as_secs_f64() * 1e6,
        image_cold.as_secs_f64() / hit.as_secs_f64()
    );
}

criterion_group!(verify, benches);

fn main() {
    verify();
    Criterion::default().configure_from_args().final_summary();
}
