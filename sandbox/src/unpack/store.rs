//! The per-manifest root filesystems under `<state_dir>/rootfs/`: staged unpack, read-only
//! commit by atomic rename, removal, stale-staging sweeps.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use perry_policies::Digest;
use rustix::fs::{Mode, RenameFlags};
use rustix::io::Errno;

use super::error::{io_kind, UnpackError, UnpackErrorKind};
use super::layer::unpack_layer_fd;
use super::tree::{make_read_only, open_dir, remove_tree};
use super::{plan_layers, LayerSpec, Limits, UnpackReport};
use crate::manifest::{ImageConfig, ImageManifest};
use crate::store::BlobStore;

/// A finished, read-only root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// `<state_dir>/rootfs/<manifest-hex>`.
    pub path: PathBuf,
    /// What the unpack did (all zero when the rootfs already existed).
    pub report: UnpackReport,
    /// False when an existing rootfs was reused.
    pub fresh: bool,
}

/// The per-manifest root filesystems under `<state_dir>/rootfs/`. Exists so "is this image
/// unpacked" is a single `stat` of a name that only ever appears complete (atomic rename).
#[derive(Clone, Debug)]
pub struct RootfsStore {
    dir: PathBuf,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl RootfsStore {
    /// Opens (creating if needed) `<state_dir>/rootfs`.
    pub fn open_in(state_dir: &Path) -> Result<Self, UnpackError> {
        let dir = state_dir.join("rootfs");
        fs::create_dir_all(&dir).map_err(|e| {
            UnpackError::new(None, None, io_kind("cannot create the rootfs directory", e))
        })?;
        Ok(Self { dir })
    }

    /// The directory holding the root filesystems.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the rootfs of `manifest` lives (whether or not it exists).
    pub fn path(&self, manifest: &Digest) -> PathBuf {
        self.dir.join(manifest.hex())
    }

    /// The rootfs of `manifest`, if it was unpacked (a present directory is always complete).
    pub fn get(&self, manifest: &Digest) -> Option<PathBuf> {
        let p = self.path(manifest);
        fs::symlink_metadata(&p)
            .ok()
            .filter(|m| m.is_dir())
            .map(|_| p)
    }

    /// Unpacks an image given its verified manifest and config (both already read from the
    /// store by digest): pairs layers with diff_ids, then [`unpack_layers`](Self::unpack_layers).
    pub fn unpack_image(
        &self,
        blobs: &BlobStore,
        manifest_digest: &Digest,
        manifest: &ImageManifest,
        config: &ImageConfig,
        limits: &Limits,
    ) -> Result<Unpacked, UnpackError> {
        let layers = plan_layers(manifest, config)
            .map_err(|e| UnpackError::new(None, None, UnpackErrorKind::Manifest(e)))?;
        self.unpack_layers(blobs, manifest_digest, &layers, limits)
    }

    /// Unpacks `layers` (base first) from `blobs` into a staging dir, makes it read-only, syncs
    /// it, and renames it to `<manifest-hex>`. If that rootfs already exists it is returned
    /// untouched. On any failure the staging dir is removed and nothing is left behind.
    /// Concurrent unpacks of one manifest each stage privately; the first rename wins and the
    /// others discard their copy.
    pub fn unpack_layers(
        &self,
        blobs: &BlobStore,
        manifest_digest: &Digest,
        layers: &[LayerSpec],
        limits: &Limits,
    ) -> Result<Unpacked, UnpackError> {
        if let Some(path) = self.get(manifest_digest) {
            return Ok(Unpacked {
                path,
                report: UnpackReport::default(),
                fresh: false,
            });
        }
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let staging_name = format!(
            ".staging-{}-{}-{n}",
            manifest_digest.hex(),
            std::process::id()
        );
        let staging = self.dir.join(&staging_name);
        let result = self.stage_and_commit(blobs, manifest_digest, layers, limits, &staging);
        if result.is_err() || staging.exists() {
            remove_tree(&staging);
        }
        result
    }

    fn stage_and_commit(
        &self,
        blobs: &BlobStore,
        manifest_digest: &Digest,
        layers: &[LayerSpec],
        limits: &Limits,
        staging: &Path,
    ) -> Result<Unpacked, UnpackError> {
        let err = |what, e: io::Error| UnpackError::new(None, None, io_kind(what, e));
        fs::create_dir(staging).map_err(|e| err("cannot create staging dir", e))?;
        fs::set_permissions(staging, fs::Permissions::from_mode(0o700))
            .map_err(|e| err("cannot chmod staging dir", e))?;
        let root = open_dir(staging).map_err(|e| err("cannot open staging dir", e))?;
        let mut report = UnpackReport::default();
        for layer in layers {
            let lerr = |kind| UnpackError::new(Some(&layer.digest), None, kind);
            let mut blob = blobs.open(&layer.digest).map_err(|e| lerr(e.into()))?;
            let r = unpack_layer_fd(root.as_fd(), &mut blob, layer, limits)?;
            blob.finish().map_err(|e| lerr(e.into()))?;
            report.add(&r);
        }
        add_mount_points(root.as_fd()).map_err(|e| err("cannot create the mount points", e))?;
        make_read_only(root.as_fd(), 0).map_err(|e| err("cannot make the rootfs read-only", e))?;
        rustix::fs::syncfs(&root).map_err(|e| err("cannot sync the rootfs", e.into()))?;
        drop(root);
        let dir = open_dir(&self.dir).map_err(|e| err("cannot open the rootfs directory", e))?;
        let staging_name = staging.file_name().unwrap_or_default();
        let dest = self.path(manifest_digest);
        match rustix::fs::renameat_with(
            &dir,
            staging_name,
            &dir,
            manifest_digest.hex(),
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                rustix::fs::fsync(&dir)
                    .map_err(|e| err("cannot sync the rootfs directory", e.into()))?;
                Ok(Unpacked {
                    path: dest,
                    report,
                    fresh: true,
                })
            }
            // Someone else committed the same manifest first; theirs is equally good.
            Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => Ok(Unpacked {
                path: dest,
                report,
                fresh: false,
            }),
            Err(e) => Err(err("cannot rename the staging dir into place", e.into())),
        }
    }

    /// Removes the rootfs of `manifest`; returns whether it existed. Removal renames it to a
    /// staging name first so a half-removed tree is never visible under the final name.
    pub fn remove(&self, manifest: &Digest) -> io::Result<bool> {
        let path = self.path(manifest);
        if !path.exists() {
            return Ok(false);
        }
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let doomed = self.dir.join(format!(
            ".staging-{}-{}-{n}",
            manifest.hex(),
            std::process::id()
        ));
        fs::rename(&path, &doomed)?;
        crate::store::sync_dir(&self.dir);
        remove_tree(&doomed);
        Ok(true)
    }

    /// Removes staging dirs left by crashed processes (their pid is no longer alive). Returns how
    /// many were removed.
    pub fn clean_stale_staging(&self) -> usize {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in rd.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".staging-")) else {
                continue;
            };
            let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                remove_tree(&entry.path());
                removed += 1;
            }
        }
        removed
    }
}

/// The directories the native runner mounts over (`/proc`, `/dev`, `/tmp`), created when the
/// image lacks them, and the root made searchable by other users (the runner sets the sandbox
/// up as an unprivileged host uid). An image that has one of them as a non-directory keeps it;
/// the runner then refuses to mount there.
pub(super) fn add_mount_points(root: BorrowedFd<'_>) -> io::Result<()> {
    for (name, mode) in [("proc", 0o555), ("dev", 0o755), ("tmp", 0o1777)] {
        match rustix::fs::mkdirat(root, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fchmod(root, Mode::from_raw_mode(0o755))?;
    Ok(())
}

/// Removes what a process killed mid-pull or mid-unpack left in `state_dir`: unpack staging
/// directories (`rootfs/.staging-<hex>-<pid>-<n>`) and blob downloads (`blobs/sha256/.tmp-<hex>-
/// <pid>-<n>`) whose process no longer exists. Work of live processes is never touched; the
/// finished rootfs and blobs are never partial (they appear by atomic rename). Returns what was
/// removed.
pub fn sweep_staging(state_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for (dir, prefix) in [
        (state_dir.join("rootfs"), ".staging-"),
        (state_dir.join("blobs").join("sha256"), ".tmp-"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(prefix)
                .and_then(|r| r.split('-').nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = e.path();
            if path.is_dir() {
                remove_tree(&path);
            } else {
                let _ = fs::remove_file(&path);
            }
            if fs::symlink_metadata(&path).is_err() {
                removed.push(path);
            }
        }
    }
    removed
}
