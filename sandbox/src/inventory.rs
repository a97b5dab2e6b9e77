//! What the image store holds, and garbage collection by reachability.
//!
//! Exists for `perry-sandbox store ls` and `store gc`: operators need to see which images are
//! stored and unpacked, and to reclaim space without ever deleting a blob a kept image needs.
//!
//! **Roots** are the images (manifest digests) that must survive: every image with an unpacked
//! rootfs (it has been run and may run again without a pull), plus the digests the operator
//! names. With `all`, only the named digests are roots, and the rootfs of every other image is
//! removed too. A blob is kept when a root's manifest reaches it (the manifest itself, its
//! config, its layers) or when it is younger than the grace period — another process may be
//! pulling an image whose manifest is not unpacked yet.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use perry_policies::Digest;
use serde::Serialize;

use crate::manifest::{ImageManifest, MAX_DOCUMENT_SIZE};
use crate::store::{BlobInfo, BlobStore, StoreError};
use crate::unpack::RootfsStore;

/// What a stored blob is to the images in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobKind {
    /// An image manifest.
    Manifest,
    /// The config of a stored manifest.
    Config,
    /// A layer of a stored manifest.
    Layer,
    /// No stored manifest refers to it.
    Unreferenced,
}

/// One stored blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlobEntry {
    /// Its digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: BlobKind,
    /// Seconds since the epoch of its commit.
    pub modified: u64,
}

/// One stored image (a manifest blob).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageEntry {
    /// The manifest digest.
    pub digest: String,
    /// Bytes of the manifest, config and layers that are present.
    pub size: u64,
    /// Number of layers.
    pub layers: usize,
    /// Referenced blobs that are not in the store.
    pub missing: Vec<String>,
    /// Whether `<state_dir>/rootfs/<hex>` exists.
    pub unpacked: bool,
}

/// The store's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Images, sorted by digest.
    pub images: Vec<ImageEntry>,
    /// Blobs, sorted by digest.
    pub blobs: Vec<BlobEntry>,
    /// Unpacked rootfs directories whose manifest blob is gone.
    pub orphan_rootfs: Vec<String>,
    /// Sum of all blob sizes.
    pub total_bytes: u64,
}

/// Why listing or collecting failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Listing or removing a rootfs failed.
    #[error("{path}: {source}")]
    Rootfs {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The manifest digests that have an unpacked rootfs.
pub fn unpacked_images(rootfs: &RootfsStore) -> Result<Vec<Digest>, InventoryError> {
    let rd = std::fs::read_dir(rootfs.dir()).map_err(|source| InventoryError::Rootfs {
        path: rootfs.dir().to_path_buf(),
        source,
    })?;
    let mut out: Vec<Digest> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| Digest::parse(&format!("sha256:{n}")).ok())
        .filter(|d| rootfs.get(d).is_some())
        .collect();
    out.sort();
    Ok(out)
}

/// A stored manifest's parsed form, when the blob is a (verified, parseable) image manifest.
fn manifest_of(blobs: &BlobStore, info: &BlobInfo) -> Option<ImageManifest> {
    if info.size > MAX_DOCUMENT_SIZE {
        return None;
    }
    let bytes = blobs.read_verified(&info.digest, MAX_DOCUMENT_SIZE).ok()?;
    ImageManifest::parse(&bytes).ok()
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lists images and blobs. Every small blob is read and hashed to find the manifests.
pub fn inventory(blobs: &BlobStore, rootfs: &RootfsStore) -> Result<Inventory, InventoryError> {
    let listed = blobs.ls()?;
    let sizes: BTreeMap<Digest, u64> = listed.iter().map(|b| (b.digest.clone(), b.size)).collect();
    let mut kinds: BTreeMap<Digest, BlobKind> = BTreeMap::new();
    let mut images = Vec::new();
    let unpacked: HashSet<Digest> = unpacked_images(rootfs)?.into_iter().collect();
    for info in &listed {
        let Some(m) = manifest_of(blobs, info) else {
            continue;
        };
        kinds.insert(info.digest.clone(), BlobKind::Manifest);
        let mut size = info.size;
        let mut missing = Vec::new();
        let refs = std::iter::once((&m.config.digest, BlobKind::Config))
            .chain(m.layers.iter().map(|l| (&l.digest, BlobKind::Layer)));
        for (d, kind) in refs {
            match sizes.get(d) {
                Some(s) => {
                    size += s;
                    kinds.entry(d.clone()).or_insert(kind);
                }
                None => missing.push(d.to_string()),
            }
        }
        images.push(ImageEntry {
            digest: info.digest.to_string(),
            size,
            layers: m.layers.len(),
            missing,
            unpacked: unpacked.contains(&info.digest),
        });
    }
    let orphan_rootfs = unpacked
        .iter()
        .filter(|d| !kinds.contains_key(*d))
        .map(|d| d.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let blobs_out: Vec<BlobEntry> = listed
        .iter()
        .map(|b| BlobEntry {
            digest: b.digest.to_string(),
            size: b.size,
            kind: kinds
                .get(&b.digest)
                .copied()
                .unwrap_or(BlobKind::Unreferenced),
            modified: secs(b.modified),
        })
        .collect();
    Ok(Inventory {
        images,
        total_bytes: listed.iter().map(|b| b.size).sum(),
        blobs: blobs_out,
        orphan_rootfs,
    })
}

/// How to collect.
#[derive(Clone, Debug, Default)]
pub struct GcOptions {
    /// Images to keep whatever else is decided.
    pub keep: Vec<Digest>,
    /// Keep only `keep`: also remove the rootfs of every other image.
    pub all: bool,
    /// Blobs younger than this are kept (a pull may be in progress in another process).
    pub grace: Duration,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcOutcome {
    /// Removed blobs.
    pub removed_blobs: Vec<String>,
    /// Removed rootfs directories (by manifest digest).
    pub removed_rootfs: Vec<String>,
    /// Bytes of removed blobs and temp files.
    pub freed_bytes: u64,
    /// Abandoned temp files removed.
    pub temp_files_removed: usize,
    /// Unreachable blobs kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Blobs kept.
    pub kept_blobs: usize,
}

/// Removes everything no root reaches (see the module docs).
pub fn collect(
    blobs: &BlobStore,
    rootfs: &RootfsStore,
    opts: &GcOptions,
) -> Result<GcOutcome, InventoryError> {
    let mut out = GcOutcome::default();
    let mut roots: Vec<Digest> = opts.keep.clone();
    for d in unpacked_images(rootfs)? {
        if opts.all && !opts.keep.contains(&d) {
            out.removed_rootfs.push(d.to_string());
            if !opts.dry_run {
                rootfs.remove(&d).map_err(|source| InventoryError::Rootfs {
                    path: rootfs.path(&d),
                    source,
                })?;
            }
        } else {
            roots.push(d);
        }
    }
    let mut keep: HashSet<Digest> = HashSet::new();
    for root in &roots {
        keep.insert(root.clone());
        if let Some(info) = blobs.stat(root) {
            if let Some(m) = manifest_of(blobs, &info) {
                keep.insert(m.config.digest.clone());
                keep.extend(m.layers.iter().map(|l| l.digest.clone()));
            }
        }
    }
    let now = SystemTime::now();
    let listed = blobs.ls()?;
    for b in &listed {
        if keep.contains(&b.digest) {
            continue;
        }
        let age = now.duration_since(b.modified).unwrap_or(Duration::ZERO);
        if age < opts.grace {
            out.kept_young += 1;
            keep.insert(b.digest.clone());
        }
    }
    out.kept_blobs = listed.iter().filter(|b| keep.contains(&b.digest)).count();
    if opts.dry_run {
        for b in listed.iter().filter(|b| !keep.contains(&b.digest)) {
            out.removed_blobs.push(b.digest.to_string());
            out.freed_bytes += b.size;
        }
        return Ok(out);
    }
    let report = blobs.gc(&keep)?;
    out.removed_blobs = report.removed.iter().map(|d| d.to_string()).collect();
    out.freed_bytes = report.freed_bytes;
    out.temp_files_removed = report.temp_files_removed;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::digest_of;

    struct Fixture {
        _dir: tempfile::TempDir,
        blobs: BlobStore,
        rootfs: RootfsStore,
        manifest: Digest,
        config: Digest,
        layer: Digest,
        stray: Digest,
    }

    fn put(blobs: &BlobStore, bytes: &[u8]) -> Digest {
        let d = digest_of(bytes);
        blobs.ingest(bytes, &d, Some(bytes.len() as u64)).unwrap();
        d
    }

    fn age(blobs: &BlobStore, d: &Digest, secs: u64) {
        let f = std::fs::File::options()
            .write(true)
            .open(blobs.path(d))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open_in(dir.path()).unwrap();
        let rootfs = RootfsStore::open_in(dir.path()).unwrap();
        let layer = put(&blobs, b"not really a tar, never unpacked here");
        let config = put(&blobs, br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#);
        let manifest_json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":42}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":37}}]}}"#
        );
        let manifest = put(&blobs, manifest_json.as_bytes());
        let stray = put(&blobs, b"left over from an old image");
        for d in [&layer, &config, &manifest, &stray] {
            age(&blobs, d, 7200);
        }
        Fixture {
            _dir: dir,
            blobs,
            rootfs,
            manifest,
            config,
            layer,
            stray,
        }
    }

    #[test]
    fn inventory_names_images_and_blob_kinds() {
        let f = fixture();
        std::fs::create_dir(f.rootfs.path(&f.manifest)).unwrap();
        let inv = inventory(&f.blobs, &f.rootfs).unwrap();
        assert_eq!(inv.images.len(), 1);
        let img = &inv.images[0];
        assert_eq!(img.digest, f.manifest.to_string());
        assert!(img.unpacked && img.missing.is_empty() && img.layers == 1);
        let kind = |d: &Digest| {
            inv.blobs
                .iter()
                .find(|b| b.digest == d.to_string())
                .unwrap()
                .kind
        };
        assert_eq!(kind(&f.manifest), BlobKind::Manifest);
        assert_eq!(kind(&f.config), BlobKind::Config);
        assert_eq!(kind(&f.layer), BlobKind::Layer);
        assert_eq!(kind(&f.stray), BlobKind::Unreferenced);
    }

    #[test]
    fn gc_keeps_what_an_unpacked_image_reaches_and_removes_the_rest() {
        let f = fixture();
        std::fs::create_dir(f.rootfs.path(&f.manifest)).unwrap();
        let opts = GcOptions {
            grace: Duration::from_secs(3600),
            ..Default::default()
        };
        let dry = collect(
            &f.blobs,
            &f.rootfs,
            &GcOptions {
                dry_run: true,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!(dry.removed_blobs, vec![f.stray.to_string()]);
        assert!(f.blobs.contains(&f.stray), "a dry run removed something");
        let out = collect(&f.blobs, &f.rootfs, &opts).unwrap();
        assert_eq!(out.removed_blobs, vec![f.stray.to_string()]);
        for d in [&f.manifest, &f.config, &f.layer] {
            assert!(f.blobs.contains(d), "{d} was collected");
        }
        assert!(!f.blobs.contains(&f.stray));
    }

    #[test]
    fn gc_spares_young_blobs_and_all_removes_unkept_rootfs() {
        let f = fixture();
        let young = put(&f.blobs, b"being pulled right now");
        std::fs::create_dir(f.rootfs.path(&f.manifest)).unwrap();
        let out = collect(
            &f.blobs,
            &f.rootfs,
            &GcOptions {
                all: true,
                grace: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out.removed_rootfs, vec![f.manifest.to_string()]);
        assert!(f.rootfs.get(&f.manifest).is_none());
        assert_eq!(out.kept_young, 1);
        assert!(f.blobs.contains(&young));
        assert!(!f.blobs.contains(&f.manifest) && !f.blobs.contains(&f.layer));
    }

    #[test]
    fn gc_keeps_named_images_without_a_rootfs() {
        let f = fixture();
        let out = collect(
            &f.blobs,
            &f.rootfs,
            &GcOptions {
                keep: vec![f.manifest.clone()],
                all: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out.removed_blobs, vec![f.stray.to_string()]);
        assert_eq!(out.kept_blobs, 3);
    }
}
