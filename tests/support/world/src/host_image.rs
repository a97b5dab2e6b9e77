//! Tiny OCI images made from host binaries and their shared-library closure.
//!
//! ```no_run
//! use perry_testworld::HostImage;
//! // /usr/bin/jq, libjq, libonig, libm, libc and the dynamic loader, plus busybox as /bin/sh.
//! let image = HostImage::new("jq").binary("/usr/bin/jq").busybox().build();
//! # let _ = image;
//! ```
//!
//! Each binary is stored at its host path; every library `ldd` names is stored at the path `ldd`
//! prints (`/lib/x86_64-linux-gnu/libz.so.1`, the loader at `/lib64/ld-linux-x86-64.so.2`) with
//! the bytes of the file it resolves to, so the image needs no `ld.so.cache` and no symlinks into
//! a merged `/usr`. The layer also holds `/etc/passwd` and `/etc/group` (root and nobody) and a
//! world-writable `/tmp`. Deterministic: the same inputs give the same digest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::image::{sha256_digest, TinyImage, BUSYBOX_APPLETS, BUSYBOX_PATH};

/// One entry of the layer (paths without the leading `/`).
#[derive(Clone, Debug)]
enum Entry {
    File(Vec<u8>, u32),
    Symlink(String),
}

/// A builder for an image of host binaries (see the module docs).
#[derive(Clone, Debug)]
pub struct HostImage {
    marker: String,
    architecture: String,
    entries: BTreeMap<String, Entry>,
    cmd: Vec<String>,
}

/// The OCI architecture name of the host (`amd64`, `arm64`, …).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The shared libraries `binary` loads, dynamic loader included, as the absolute paths `ldd`
/// prints them (empty for a static binary). Panics when a library is not found.
pub fn shared_libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("ldd {}: {e} (Debian libc-bin)", binary.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Vec::new();
        }
        panic!("ldd {}: {stdout}{stderr}", binary.display());
    }
    let mut libs = Vec::new();
    for line in stdout.lines().map(str::trim) {
        // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`,
        // `linux-vdso.so.1 (0x…)` (in the kernel: nothing to copy), `libx.so => not found`.
        let path = match line.split_once(" => ") {
            Some((name, rest)) => {
                let path = rest.split(" (").next().unwrap_or("").trim();
                if !path.starts_with('/') {
                    panic!("ldd {}: {name} not found ({line})", binary.display());
                }
                path
            }
            None => line.split(" (").next().unwrap_or("").trim(),
        };
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    libs
}

impl HostImage {
    /// An empty image for the host's architecture; `marker` goes to `/etc/perry-marker` (a
    /// different marker gives a different digest).
    pub fn new(marker: &str) -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(
            "etc/passwd".into(),
            Entry::File(
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                    .to_vec(),
                0o644,
            ),
        );
        entries.insert(
            "etc/group".into(),
            Entry::File(b"root:x:0:\nnogroup:x:65534:\n".to_vec(), 0o644),
        );
        entries.insert(
            "etc/perry-marker".into(),
            Entry::File(format!("{marker}\n").into_bytes(), 0o644),
        );
        Self {
            marker: marker.to_string(),
            architecture: host_architecture().to_string(),
            entries,
            cmd: Vec::new(),
        }
    }

    /// Adds the host binary at `host_path` (stored at the same path) and every shared library
    /// it loads, the dynamic loader included. The first binary added is the config's `Cmd`.
    pub fn binary(mut self, host_path: &str) -> Self {
        let path = Path::new(host_path);
        assert!(
            path.is_absolute(),
            "{host_path}: give an absolute host path"
        );
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{host_path}: {e}"));
        self.entries
            .insert(rel(host_path), Entry::File(bytes, 0o755));
        for lib in shared_libraries(path) {
            let bytes = std::fs::read(&lib).unwrap_or_else(|e| panic!("{lib}: {e}"));
            self.entries.insert(rel(&lib), Entry::File(bytes, 0o755));
        }
        if self.cmd.is_empty() {
            self.cmd = vec![host_path.to_string()];
        }
        self
    }

    /// Adds a host file (a data file a binary reads) at its own path, following symlinks.
    pub fn file(mut self, host_path: &str) -> Self {
        let bytes = std::fs::read(host_path).unwrap_or_else(|e| panic!("{host_path}: {e}"));
        self.entries
            .insert(rel(host_path), Entry::File(bytes, 0o644));
        self
    }

    /// Adds a regular file with these contents and mode at `path` (absolute, in the image).
    pub fn data(mut self, path: &str, contents: &[u8], mode: u32) -> Self {
        self.entries
            .insert(rel(path), Entry::File(contents.to_vec(), mode));
        self
    }

    /// Adds Debian's static busybox as `/bin/busybox` with its applets ([`BUSYBOX_APPLETS`]) as
    /// `/bin/<applet>` symlinks, except where the image already has that path. The config's
    /// `Cmd` becomes `/bin/sh` when no binary was added before.
    pub fn busybox(mut self) -> Self {
        let bytes = std::fs::read(BUSYBOX_PATH).unwrap_or_else(|e| {
            panic!("{BUSYBOX_PATH}: {e} (install Debian busybox-static; scripts/test does)")
        });
        self.entries
            .insert("bin/busybox".into(), Entry::File(bytes, 0o755));
        for applet in BUSYBOX_APPLETS {
            self.entries
                .entry(format!("bin/{applet}"))
                .or_insert_with(|| Entry::Symlink("busybox".into()));
        }
        if self.cmd.is_empty() {
            self.cmd = vec!["/bin/sh".into()];
        }
        self
    }

    /// The image: one gzip'ed layer, an OCI config (`PATH=/usr/local/bin:/usr/bin:/bin`,
    /// `WorkingDir` `/`), an OCI manifest.
    pub fn build(&self) -> TinyImage {
        let tar = self.layer_tar();
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip in memory");
        let layer = gz.finish().expect("gzip in memory");
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": {
                "Cmd": self.cmd,
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": format!("perry-testworld host image {}", self.marker) }],
        }))
        .expect("json");
        let manifest = crate::image::single_layer_manifest(&config, &layer);
        TinyImage {
            config,
            layer,
            manifest,
            architecture: self.architecture.clone(),
        }
    }

    fn layer_tar(&self) -> Vec<u8> {
        // Every parent directory first (sorted: parents before children), then the entries.
        let mut dirs: BTreeSet<String> = ["bin", "etc", "tmp", "usr", "usr/bin"]
            .iter()
            .map(|d| d.to_string())
            .collect();
        for path in self.entries.keys() {
            let mut p = Path::new(path).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_string_lossy().into_owned());
                p = d.parent();
            }
        }
        let mut b = tar::Builder::new(Vec::new());
        let header = |kind: tar::EntryType, mode: u32, size: u64| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h
        };
        for d in &dirs {
            let mut h = header(
                tar::EntryType::Directory,
                if d == "tmp" { 0o1777 } else { 0o755 },
                0,
            );
            h.set_cksum();
            b.append_data(&mut h, format!("{d}/"), std::io::empty())
                .expect("tar");
        }
        for (path, entry) in &self.entries {
            match entry {
                Entry::File(data, mode) => {
                    let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, path, data.as_slice()).expect("tar");
                }
                Entry::Symlink(target) => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, path, target).expect("tar");
                }
            }
        }
        b.into_inner().expect("tar")
    }
}

/// `/a/b` -> `a/b`.
fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}
