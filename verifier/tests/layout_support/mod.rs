//! Building OCI image layouts and archives in tests, from the test world's tiny busybox images,
//! with signatures made by the loopback sigstore-js stack and exported from the loopback
//! registry exactly as `@sigstore/oci` (referrers-tag index) or cosign (legacy `.sig`) stored
//! them. Shared by `verifier/tests/layout.rs` and `sandbox/tests/pull_layout.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use perry_policies::{Digest, ImageRef};
use perry_testworld::{TinyImage, TinyIndex};
use perry_verifier::registry::RegistryClient;
use sha2::{Digest as _, Sha256};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OCI image layout directory being written.
pub(crate) struct LayoutBuilder {
    pub dir: PathBuf,
    pub entries: Vec<serde_json::Value>,
}

impl LayoutBuilder {
    /// Creates `dir` with `oci-layout` and `blobs/sha256/`.
    pub(crate) fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let b = Self {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        };
        b.write_index();
        b
    }

    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Writes a blob; returns its digest.
    pub(crate) fn blob(&mut self, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        std::fs::write(self.blob_path(&d), bytes).unwrap();
        d
    }

    /// Adds an `index.json` entry.
    pub(crate) fn entry(
        &mut self,
        media_type: &str,
        digest: &str,
        size: usize,
        ref_name: Option<&str>,
    ) {
        let mut e = serde_json::json!({"mediaType": media_type, "digest": digest, "size": size});
        if let Some(r) = ref_name {
            e["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": r});
        }
        self.entries.push(e);
        self.write_index();
    }

    /// Writes an image's blobs (without an index.json entry); returns the manifest digest.
    pub(crate) fn image_blobs(&mut self, img: &TinyImage) -> String {
        self.blob(&img.config);
        self.blob(&img.layer);
        self.blob(&img.manifest)
    }

    /// Writes an image and lists it under `tag`.
    pub(crate) fn image(&mut self, img: &TinyImage, tag: Option<&str>) -> String {
        let d = self.image_blobs(img);
        self.entry(OCI_MANIFEST, &d, img.manifest.len(), tag);
        d
    }

    /// Writes a multi-platform index (and its images) and lists it under `tag`.
    pub(crate) fn index(&mut self, idx: &TinyIndex, tag: Option<&str>) -> String {
        for i in &idx.images {
            self.image_blobs(i);
        }
        let d = self.blob(&idx.index);
        self.entry(OCI_INDEX, &d, idx.index.len(), tag);
        d
    }

    pub(crate) fn write_index(&self) {
        let idx = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": self.entries,
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }

    /// Copies the signatures attached to `digest` in `repo` (the referrers-tag index
    /// `sha256-<hex>` with every referrer manifest and blob, and the legacy `sha256-<hex>.sig`
    /// manifest with its blobs) into this layout under the same names, as `ref.name`s. Returns
    /// how many signature tags were exported. `as_digest` relabels them as signatures of
    /// another digest (an attacker copying A's signatures onto B).
    pub(crate) async fn export_signatures(
        &mut self,
        client: &RegistryClient,
        repo: &ImageRef,
        digest: &str,
        as_digest: Option<&str>,
    ) -> usize {
        let hex_of = |d: &str| d.trim_start_matches("sha256:").to_string();
        let mut n = 0;
        for suffix in ["", ".sig"] {
            let tag = format!("sha256-{}{suffix}", hex_of(digest));
            let Ok((bytes, _)) = client.fetch_tag(repo, &tag).await else {
                continue;
            };
            n += 1;
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let d = self.blob(&bytes);
            let media_type = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
            let name = format!("sha256-{}{suffix}", hex_of(as_digest.unwrap_or(digest)));
            self.entry(&media_type, &d, bytes.len(), Some(&name));
            let mut manifests = Vec::new();
            if let Some(list) = v["manifests"].as_array() {
                for m in list {
                    let md = Digest::parse(m["digest"].as_str().unwrap()).unwrap();
                    let mb = client.fetch_manifest(repo, &md).await.unwrap();
                    self.blob(&mb);
                    manifests.push(serde_json::from_slice::<serde_json::Value>(&mb).unwrap());
                }
            } else {
                manifests.push(v);
            }
            for m in manifests {
                let mut descs: Vec<serde_json::Value> =
                    m["layers"].as_array().cloned().unwrap_or_default();
                descs.push(m["config"].clone());
                for desc in descs {
                    let Some(bd) = desc["digest"].as_str() else {
                        continue;
                    };
                    let bd = Digest::parse(bd).unwrap();
                    let bytes = client.fetch_blob(repo, &bd, 4 << 20).await.unwrap();
                    self.blob(&bytes);
                }
            }
        }
        n
    }

    /// The layout as an OCI archive (a plain tar, as skopeo writes them: `./`-less names,
    /// directory entries for `blobs/` and `blobs/sha256/`).
    pub(crate) fn to_archive(&self, file: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
        b.mode(tar::HeaderMode::Deterministic);
        b.append_dir("blobs", self.dir.join("blobs")).unwrap();
        b.append_dir("blobs/sha256", self.dir.join("blobs/sha256"))
            .unwrap();
        let mut blobs: Vec<_> = std::fs::read_dir(self.dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        blobs.sort();
        for p in blobs {
            let name = format!("blobs/sha256/{}", p.file_name().unwrap().to_str().unwrap());
            b.append_path_with_name(&p, name).unwrap();
        }
        b.append_path_with_name(self.dir.join("oci-layout"), "oci-layout")
            .unwrap();
        b.append_path_with_name(self.dir.join("index.json"), "index.json")
            .unwrap();
        b.finish().unwrap();
    }
}

/// A tar header with a raw name (the `tar` crate's builder refuses `..` and absolute names,
/// which is what an attacker's archive would contain).
pub(crate) fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    h
}

/// A copy of `layout` as an archive, plus one extra hostile entry appended at the start.
pub(crate) fn archive_with_extra(
    layout: &LayoutBuilder,
    file: &Path,
    header: tar::Header,
    data: &[u8],
    link_target: Option<&str>,
) {
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let mut h = header;
    if let Some(t) = link_target {
        h.set_link_name(t).unwrap();
        h.set_cksum();
    }
    b.append(&h, data).unwrap();
    for name in ["oci-layout", "index.json"] {
        b.append_path_with_name(layout.dir.join(name), name)
            .unwrap();
    }
    for e in std::fs::read_dir(layout.dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let name = format!("blobs/sha256/{}", p.file_name().unwrap().to_str().unwrap());
        b.append_path_with_name(&p, name).unwrap();
    }
    b.finish().unwrap();
}
