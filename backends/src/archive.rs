//! Delivering a verified image to a backend without its registry: an OCI archive written from
//! our own content-addressed store, every blob re-hashed on the way out.
//!
//! Why: air-gapped sources (an image verified from an OCI layout or archive) have no registry
//! the backend could pull from, and the backend must still end up holding exactly the verified
//! manifest. The archive holds that one manifest, its config and its layers, read from a
//! `sha256/<hex>` blob directory (our store's `blobs/`, or an OCI layout's); its index names the
//! image only by its pinned reference (`repo@sha256:…`, no tag), so the backend records it under
//! the verified digest and nothing else. [`crate::ContainerBackend::load`] then checks the
//! loaded image's digest before anything is created from it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::backend::{ContainerBackend, Result};
use crate::{BackendError, PinnedImage};
use perry_verifier::Origin;

/// The OCI image manifest media type.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The docker schema 2 manifest media type (accepted in OCI layouts by podman and docker).
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest read into memory.
const MAX_MANIFEST: u64 = 4 << 20;

/// What [`write_oci_archive`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The archive file.
    pub path: PathBuf,
    /// Blobs written (manifest, config, layers; each once).
    pub blobs: usize,
    /// Total blob bytes written.
    pub bytes: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `<hex>` of a `sha256:<64 lowercase hex>` digest, or `None` (so that a manifest cannot
/// name a path such as `../../etc/shadow`).
fn sha256_hex(digest: &str) -> Option<&str> {
    let h = digest.strip_prefix("sha256:")?;
    (h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(h)
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let what = what.into();
    move |source: std::io::Error| BackendError::Io {
        what,
        source: source.into(),
    }
}

fn bad_manifest(detail: impl Into<String>) -> BackendError {
    BackendError::BadOutput {
        program: "store".into(),
        verb: "manifest".into(),
        detail: detail.into(),
    }
}

/// A blob in `blobs`, opened; missing is `not_found`.
fn open_blob(blobs: &Path, digest: &str) -> Result<(File, u64)> {
    let h = sha256_hex(digest).ok_or_else(|| bad_manifest(format!("bad digest {digest:?}")))?;
    let path = blobs.join("sha256").join(h);
    let f = File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            BackendError::NotFound {
                kind: "blob",
                name: digest.to_string(),
                stderr: format!("{} does not exist", path.display()),
            }
        } else {
            BackendError::Io {
                what: format!("opening {}", path.display()),
                source: e.into(),
            }
        }
    })?;
    let len = f
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .len();
    Ok((f, len))
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn header(path: &str, size: u64, dir: bool) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .map_err(io_err(format!("tar path {path}")))?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    Ok(h)
}

/// The blobs `manifest` refers to (config first, then layers), each `(digest, size)`.
fn referenced(manifest: &[u8]) -> Result<Vec<(String, u64)>> {
    let v: Value = serde_json::from_slice(manifest)
        .map_err(|e| bad_manifest(format!("manifest is not JSON: {e}")))?;
    match v.get("mediaType").and_then(Value::as_str) {
        None | Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => {}
        Some(other) => {
            return Err(bad_manifest(format!(
                "{other} is not an image manifest (an index must be resolved to its platform \
                 manifest first)"
            )))
        }
    }
    let desc = |d: &Value| -> Result<(String, u64)> {
        let digest = d.get("digest").and_then(Value::as_str).unwrap_or_default();
        sha256_hex(digest).ok_or_else(|| bad_manifest(format!("bad digest {digest:?}")))?;
        let size = d
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad_manifest(format!("descriptor {digest} has no size")))?;
        Ok((digest.to_string(), size))
    };
    let config = v
        .get("config")
        .ok_or_else(|| bad_manifest("manifest has no config"))?;
    let mut out = vec![desc(config)?];
    for l in v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_manifest("manifest has no layers"))?
    {
        out.push(desc(l)?);
    }
    Ok(out)
}

/// Writes an OCI archive (`oci-archive` tar) of `image` to `out`, reading from `blobs`: a
/// directory holding `sha256/<hex>` files (our store's `<state_dir>/blobs`, or an OCI
/// layout's `blobs`). The archive holds the verified platform manifest, its config and its
/// layers; its `index.json` names it by [`PinnedImage::reference`] only. Every blob is hashed
/// as it is copied and its size checked against the manifest: a blob that is not what its
/// digest says is `verification_failed`, a missing one `not_found`, and no archive is left
/// behind. Blocking (plain file I/O); call it from `spawn_blocking` in async code.
pub fn write_oci_archive(blobs: &Path, image: &PinnedImage, out: &Path) -> Result<ArchiveInfo> {
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("archive"),
        std::process::id()
    ));
    let r = write_to(blobs, image, &tmp);
    match r {
        Ok((blobs, bytes)) => {
            std::fs::rename(&tmp, out).map_err(io_err(format!("renaming to {}", out.display())))?;
            Ok(ArchiveInfo {
                path: out.to_path_buf(),
                blobs,
                bytes,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_to(blobs: &Path, image: &PinnedImage, tmp: &Path) -> Result<(usize, u64)> {
    // The manifest: read whole (bounded), and it must be the verified one.
    let (f, len) = open_blob(blobs, image.digest())?;
    if len > MAX_MANIFEST {
        return Err(bad_manifest(format!("manifest is {len} bytes")));
    }
    let mut manifest = Vec::with_capacity(len as usize);
    f.take(MAX_MANIFEST)
        .read_to_end(&mut manifest)
        .map_err(io_err("reading the manifest"))?;
    let actual = format!("sha256:{}", hex(&Sha256::digest(&manifest)));
    if actual != image.digest() {
        return Err(BackendError::DigestMismatch {
            expected: image.digest().into(),
            actual,
        });
    }
    let mut wanted = referenced(&manifest)?;
    let mut seen = std::collections::BTreeSet::new();
    wanted.retain(|(d, _)| seen.insert(d.clone()) && d != image.digest());

    let file = File::create(tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": image.digest(),
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": image.reference() },
        }],
    });
    let index = serde_json::to_vec(&index).map_err(|e| bad_manifest(e.to_string()))?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let w = io_err("writing the archive");
    tar.append(
        &header("oci-layout", layout.len() as u64, false)?,
        &layout[..],
    )
    .map_err(io_err("writing the archive"))?;
    tar.append(
        &header("index.json", index.len() as u64, false)?,
        &index[..],
    )
    .map_err(io_err("writing the archive"))?;
    tar.append(&header("blobs/", 0, true)?, io::empty())
        .map_err(io_err("writing the archive"))?;
    tar.append(&header("blobs/sha256/", 0, true)?, io::empty())
        .map_err(io_err("writing the archive"))?;
    let path_of = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    tar.append(
        &header(&path_of(image.digest()), manifest.len() as u64, false)?,
        &manifest[..],
    )
    .map_err(io_err("writing the archive"))?;
    let mut bytes = manifest.len() as u64;
    for (digest, size) in &wanted {
        let (f, len) = open_blob(blobs, digest)?;
        if len != *size {
            return Err(BackendError::DigestMismatch {
                expected: format!("{digest} ({size} bytes)"),
                actual: format!("a blob of {len} bytes"),
            });
        }
        let mut r = Hashing {
            inner: f.take(*size),
            hash: Sha256::new(),
        };
        tar.append(&header(&path_of(digest), *size, false)?, &mut r)
            .map_err(io_err(format!("copying {digest}")))?;
        let actual = format!("sha256:{}", hex(&r.hash.finalize()));
        if &actual != digest {
            return Err(BackendError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        bytes += size;
    }
    let mut inner = tar.into_inner().map_err(io_err("finishing the archive"))?;
    inner.flush().map_err(w)?;
    inner
        .get_ref()
        .sync_all()
        .map_err(io_err("syncing the archive"))?;
    Ok((wanted.len() + 1, bytes))
}

/// Makes sure `backend` holds `image` with its verified digest and returns the backend's image
/// id: already there, else pulled by digest from the registry it was verified at
/// ([`Origin::Registry`]), else — for images verified from an OCI layout or archive, which
/// have no registry to pull from — loaded from an archive written from `store_blobs` (our
/// store's `blobs` directory) into `work_dir`. Either way the digest is checked by the backend
/// call before the id is returned.
pub async fn provision_image<B: ContainerBackend>(
    backend: &B,
    image: &PinnedImage,
    store_blobs: &Path,
    work_dir: &Path,
) -> Result<String> {
    if let Some(id) = backend.image_id(image).await? {
        return Ok(id);
    }
    match image.origin() {
        Origin::Registry => backend.pull(image).await,
        Origin::OciLayout(_) | Origin::OciArchive(_) => {
            let hexd = image.digest().trim_start_matches("sha256:").to_string();
            let out = work_dir.join(format!("image-{hexd}.oci.tar"));
            let (blobs, img, o) = (store_blobs.to_path_buf(), image.clone(), out.clone());
            tokio::task::spawn_blocking(move || write_oci_archive(&blobs, &img, &o))
                .await
                .map_err(|e| BackendError::Io {
                    what: "writing the OCI archive".into(),
                    source: io::Error::other(e.to_string()).into(),
                })??;
            let r = backend.load(image, &out).await;
            let _ = std::fs::remove_file(&out);
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{referenced, sha256_hex};

    #[test]
    fn only_well_formed_sha256_digests_name_blobs() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(sha256_hex(&good).is_some());
        for bad in [
            "sha256:../../etc/shadow".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}/x", "a".repeat(62)),
            "sha256:".into(),
        ] {
            assert!(sha256_hex(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_index_or_a_manifest_naming_paths_is_refused() {
        let idx = br#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(referenced(idx).is_err());
        let evil = br#"{"config":{"digest":"sha256:../../x","size":1},"layers":[]}"#;
        assert!(referenced(evil).is_err());
        let nosize = format!(
            r#"{{"config":{{"digest":"sha256:{}"}},"layers":[]}}"#,
            "b".repeat(64)
        );
        assert!(referenced(nosize.as_bytes()).is_err());
    }
}
