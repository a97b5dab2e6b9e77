//! Tiny OCI images built in memory from Debian's static busybox.

use std::io::Write;

use sha2::{Digest as _, Sha256};

/// Applets linked to `/bin/busybox` in every [`TinyImage`].
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "nc", "id", "true", "false", "env", "sleep", "wc", "head", "tail",
    "touch", "mkdir", "rm", "whoami", "ps", "hostname", "uname", "grep", "printf", "test", "stat",
    "cp", "mv", "ln", "readlink", "pwd", "date", "dd", "seq", "sort", "tr", "yes", "kill", "mount",
    "df", "du", "find", "chmod", "wget", "ip", "ping",
];

/// Where the static busybox comes from (Debian `busybox-static`).
pub(crate) const BUSYBOX_PATH: &str = "/bin/busybox";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A single-platform image: config, one layer, manifest — all bytes, ready to push.
#[derive(Clone, Debug)]
pub struct TinyImage {
    /// OCI image config JSON.
    pub config: Vec<u8>,
    /// The gzip'ed tar layer.
    pub layer: Vec<u8>,
    /// OCI image manifest JSON (what the image digest is the hash of).
    pub manifest: Vec<u8>,
    /// `amd64`, `arm64`, …
    pub architecture: String,
}

/// Options for [`TinyImage::build`].
#[derive(Clone, Debug)]
pub struct ImageSpec<'a> {
    /// Config `architecture` (the layer is always the host's busybox).
    pub architecture: &'a str,
    /// Written to `/etc/perry-marker`: a different marker gives a different digest.
    pub marker: &'a str,
    /// Extra regular files: (path without leading `/`, contents, mode).
    pub files: &'a [(&'a str, &'a [u8], u32)],
    /// Config `Cmd`.
    pub cmd: &'a [&'a str],
    /// Config `User`, e.g. `65534:65534`; empty for none.
    pub user: &'a str,
}

impl Default for ImageSpec<'_> {
    fn default() -> Self {
        Self {
            architecture: "amd64",
            marker: "perry-testworld",
            files: &[],
            cmd: &["/bin/sh"],
            user: "",
        }
    }
}

impl TinyImage {
    /// The default busybox image for `architecture`.
    pub fn busybox(architecture: &str) -> Self {
        Self::build(&ImageSpec {
            architecture,
            ..Default::default()
        })
    }

    /// A busybox image whose digest differs from every other marker's.
    pub fn busybox_marked(architecture: &str, marker: &str) -> Self {
        Self::build(&ImageSpec {
            architecture,
            marker,
            ..Default::default()
        })
    }

    /// Builds an image from `spec`. Deterministic: the same spec gives the same digest.
    pub fn build(spec: &ImageSpec<'_>) -> Self {
        let busybox = std::fs::read(BUSYBOX_PATH).unwrap_or_else(|e| {
            panic!("{BUSYBOX_PATH}: {e} (install Debian busybox-static; scripts/test does)")
        });
        let tar = layer_tar(&busybox, spec);
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip in memory");
        let layer = gz.finish().expect("gzip in memory");
        let mut cfg = serde_json::json!({
            "architecture": spec.architecture,
            "os": "linux",
            "config": {
                "Cmd": spec.cmd,
                "Env": ["PATH=/bin:/usr/bin"],
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": format!("perry-testworld {}", spec.marker) }],
        });
        if !spec.user.is_empty() {
            cfg["config"]["User"] = spec.user.into();
        }
        let config = serde_json::to_vec(&cfg).expect("json");
        let manifest = single_layer_manifest(&config, &layer);
        Self {
            config,
            layer,
            manifest,
            architecture: spec.architecture.to_string(),
        }
    }

    /// `sha256:<hex>` of the manifest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// `sha256:<hex>` of the (compressed) layer blob.
    pub fn digest_of_layer(&self) -> String {
        sha256_digest(&self.layer)
    }

    /// `sha256:<hex>` of the config blob.
    pub fn digest_of_config(&self) -> String {
        sha256_digest(&self.config)
    }
}

fn layer_tar(busybox: &[u8], spec: &ImageSpec<'_>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, std::io::empty()).expect("tar");
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, data).expect("tar");
    };
    for d in ["bin/", "etc/", "tmp/", "usr/", "usr/bin/", "work/"] {
        dir(&mut b, d, if d == "tmp/" { 0o1777 } else { 0o755 });
    }
    file(&mut b, "bin/busybox", busybox, 0o755);
    for applet in BUSYBOX_APPLETS {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("tar");
    }
    file(
        &mut b,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    );
    file(&mut b, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644);
    file(
        &mut b,
        "etc/perry-marker",
        format!("{}\n", spec.marker).as_bytes(),
        0o644,
    );
    for (path, data, mode) in spec.files {
        file(&mut b, path.trim_start_matches('/'), data, *mode);
    }
    b.into_inner().expect("tar")
}

/// A multi-platform OCI index of [`TinyImage`]s.
#[derive(Clone, Debug)]
pub struct TinyIndex {
    /// The platform images, in index order.
    pub images: Vec<TinyImage>,
    /// OCI index JSON (what the index digest is the hash of).
    pub index: Vec<u8>,
}

impl TinyIndex {
    /// An index of busybox images for `linux/amd64` and `linux/arm64` (distinct digests).
    pub fn two_platform(marker: &str) -> Self {
        Self::of(vec![
            TinyImage::busybox_marked("amd64", marker),
            TinyImage::busybox_marked("arm64", marker),
        ])
    }

    /// An index listing `images` (platform `linux/<architecture>` each).
    pub fn of(images: Vec<TinyImage>) -> Self {
        let manifests: Vec<_> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": i.digest(),
                    "size": i.manifest.len(),
                    "platform": { "os": "linux", "architecture": i.architecture },
                })
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .expect("json");
        Self { images, index }
    }

    /// `sha256:<hex>` of the index.
    pub fn digest(&self) -> String {
        sha256_digest(&self.index)
    }

    /// The image for `architecture`.
    pub fn image(&self, architecture: &str) -> &TinyImage {
        self.images
            .iter()
            .find(|i| i.architecture == architecture)
            .unwrap_or_else(|| panic!("index has no {architecture} image"))
    }
}

/// The OCI image manifest of a one-layer (tar+gzip) image.
pub(crate) fn single_layer_manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256_digest(layer),
            "size": layer.len(),
        }],
    }))
    .expect("json")
}
