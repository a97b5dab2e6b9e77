//! Unpack throughput of a busybox-sized layer (`/bin/busybox` from Debian's busybox-static plus
//! one symlink per applet), against `tar -x` of the very same layer in the same run.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-runtime cargo bench -p perry-runtime --bench unpack`.
//! Criterion reports each variant; at the end a direct comparison (medians of interleaved runs)
//! prints the perry/tar ratio.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use perry_runtime::manifest::LayerMediaType;
use perry_runtime::store::digest_of;
use perry_runtime::unpack::{unpack_layer_into, LayerSpec, Limits};

struct Fixture {
    tar: Vec<u8>,
    tgz: Vec<u8>,
    applets: usize,
}

fn busybox_layer() -> Fixture {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (Debian busybox-static)");
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, &[][..]).unwrap();
    };
    for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin"] {
        dir(&mut b, d);
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .unwrap();
    for a in &applets {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_link(&mut h, a, "/bin/busybox").unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&tar).unwrap();
    let tgz = e.finish().unwrap();
    Fixture {
        tar,
        tgz,
        applets: applets.len(),
    }
}

fn perry(blob: &[u8], tar: &[u8], mt: LayerMediaType, dest: &Path) {
    let spec = LayerSpec {
        digest: digest_of(blob),
        media_type: mt,
        diff_id: digest_of(tar),
    };
    let limits = Limits {
        max_layer_size: 1 << 30,
        max_layer_entries: 1 << 20,
    };
    unpack_layer_into(dest, blob, &spec, &limits).expect("unpack");
}

fn tar_x(file: &Path, gz: bool, dest: &Path) {
    let st = Command::new("tar")
        .arg(if gz { "-xzf" } else { "-xf" })
        .arg(file)
        .arg("-C")
        .arg(dest)
        .stdout(Stdio::null())
        .status()
        .expect("tar");
    assert!(st.success());
}

fn fresh(scratch: &Path, n: &mut u64) -> std::path::PathBuf {
    *n += 1;
    let d = scratch.join(format!("d{n}"));
    std::fs::create_dir(&d).unwrap();
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let fx = busybox_layer();
    let scratch = tempfile::tempdir().unwrap();
    let tar_file = scratch.path().join("layer.tar");
    let tgz_file = scratch.path().join("layer.tar.gz");
    std::fs::write(&tar_file, &fx.tar).unwrap();
    std::fs::write(&tgz_file, &fx.tgz).unwrap();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    eprintln!(
        "busybox layer: {} applet symlinks, {} bytes tar, {} bytes tar.gz",
        fx.applets,
        fx.tar.len(),
        fx.tgz.len()
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(30)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let mut n = 0u64;
    {
        let mut g = c.benchmark_group("unpack_busybox");
        g.throughput(Throughput::Bytes(fx.tar.len() as u64));
        for (label, blob, mt, file, gz) in [
            ("tar", &fx.tar, LayerMediaType::Tar, &tar_file, false),
            (
                "tar+gzip",
                &fx.tgz,
                LayerMediaType::TarGzip,
                &tgz_file,
                true,
            ),
        ] {
            g.bench_function(format!("perry/{label}"), |b| {
                b.iter_batched(
                    || fresh(&work, &mut n),
                    |d| perry(blob, &fx.tar, mt, &d),
                    BatchSize::PerIteration,
                )
            });
            g.bench_function(format!("tar-x/{label}"), |b| {
                b.iter_batched(
                    || fresh(&work, &mut n),
                    |d| tar_x(file, gz, &d),
                    BatchSize::PerIteration,
                )
            });
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir(&work).unwrap();
        }
        g.finish();
    }
    c.final_summary();

    // Direct comparison, interleaved so machine noise hits both alike.
    for (label, blob, mt, file, gz) in [
        ("tar", &fx.tar, LayerMediaType::Tar, &tar_file, false),
        (
            "tar+gzip",
            &fx.tgz,
            LayerMediaType::TarGzip,
            &tgz_file,
            true,
        ),
    ] {
        let (mut p, mut t) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let d = fresh(&work, &mut n);
            let s = Instant::now();
            perry(blob, &fx.tar, mt, &d);
            p.push(s.elapsed());
            let d = fresh(&work, &mut n);
            let s = Instant::now();
            tar_x(file, gz, &d);
            t.push(s.elapsed());
        }
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir(&work).unwrap();
        let (pm, tm) = (median(p), median(t));
        let mbps = |d: Duration| fx.tar.len() as f64 / d.as_secs_f64() / 1e6;
        println!(
            "busybox {label}: perry median {:.2} ms ({:.0} MB/s), tar -x median {:.2} ms ({:.0} MB/s), perry/tar = {:.2}x",
            pm.as_secs_f64() * 1e3,
            mbps(pm),
            tm.as_secs_f64() * 1e3,
            mbps(tm),
            pm.as_secs_f64() / tm.as_secs_f64()
        );
    }
}
