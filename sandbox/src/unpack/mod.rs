//! Safe layer unpacking: verified layer blobs → a read-only root filesystem at
//! `<state_dir>/rootfs/<manifest-hex>`.
//!
//! Layer tars come from the image author, and the image author is who the sandbox defends
//! against, so the unpacker treats every entry as hostile:
//!
//! * **Path resolution never leaves the root.** Entry names are split into components and refused
//!   if absolute, if any component is `..`, or if they contain NUL. The parent directory of each
//!   entry is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`
//!   relative to the staging root, so symlinks met on the way (`a -> /etc`, `a -> ../../..`) are
//!   resolved *as the sandbox will see them*, with the staging dir as `/`: they are neutralised,
//!   never followed onto the host. The final component is always handled with `*at` calls on that
//!   parent fd with `O_NOFOLLOW`/`O_EXCL`/`AT_SYMLINK_NOFOLLOW`: an existing entry is unlinked
//!   (or, for a directory replaced by a non-directory, removed recursively without following
//!   symlinks) and a fresh one created, so nothing is ever written, chmod-ed or chown-ed through
//!   a symlink or an earlier hardlink.
//! * **Hardlinks** must name an existing non-directory inside the root (resolved the same way);
//!   a link to a symlink links the symlink itself.
//! * **Dropped:** device nodes, FIFOs (counted in the report) and all extended attributes —
//!   `security.capability` would grant file capabilities, `security.selinux`/`security.ima`
//!   labels and `trusted.overlay.*` redirects are host-security metadata an image must not set,
//!   and `user.*` is attacker-chosen metadata no workload we run needs; dropping the whole class
//!   is simpler to reason about than an allowlist.
//! * **Stripped:** setuid and setgid bits (files and directories). The sticky bit is kept
//!   (`/tmp`).
//! * **Refused (the whole unpack fails):** absolute or `..` paths, hardlinks that do not resolve
//!   inside the root, parents that are not directories (or dangling symlinks), GNU sparse and
//!   unknown entry types, ids that are not valid, a layer whose uncompressed stream or written
//!   content exceeds `max_layer_size`, a layer with more than `max_layer_entries` entries, a
//!   malformed tar or compressed stream, and a layer whose uncompressed SHA-256 differs from the
//!   config's `rootfs.diff_ids[i]`. A refused unpack removes its staging directory: nothing is
//!   left behind.
//! * **Whiteouts:** `.wh.<name>` removes `<name>` from lower layers; `.wh..wh..opq` empties the
//!   directory of lower-layer content. Both only affect lower layers, as the OCI spec says; other
//!   `.wh..wh.*` (aufs bookkeeping) entries are skipped.
//!
//! **Ownership:** files keep the uid/gid from the tar headers (when unpacking as root), unshifted.
//! One rootfs is shared by sandboxes mapped to different host id ranges, so the runner maps ids
//! at mount time (an idmapped mount), not here.
//!
//! **Read-only:** after the last layer every file and directory loses its write bits (`chmod
//! a-w`), the tree is flushed with `syncfs`, and the staging dir is renamed into place with
//! `RENAME_NOREPLACE`. A completed `<manifest-hex>` directory is never written again; the runner
//! additionally bind-mounts it read-only. Losing the write bits is visible inside the sandbox but
//! changes nothing there: the mount is read-only anyway.

use perry_policies::{Digest, SandboxConfig};

use crate::manifest::{ImageConfig, ImageManifest, LayerMediaType, ManifestError};

mod entry;
mod error;
mod layer;
mod store;
mod tree;

pub use error::{UnpackError, UnpackErrorKind};
pub use layer::unpack_layer_into;
pub use store::{sweep_staging, RootfsStore, Unpacked};

/// Deepest directory nesting walked when making a tree read-only or removing a directory.
const MAX_WALK_DEPTH: usize = 1024;

/// Per-layer limits against decompression bombs and entry floods. Exists separately from the
/// config so tests and benches can set them directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest uncompressed tar stream of one layer, and most file bytes one layer may write.
    pub max_layer_size: u64,
    /// Most tar entries in one layer.
    pub max_layer_entries: u64,
}

impl Limits {
    /// The limits configured in `[sandbox]`.
    pub fn from_config(config: &SandboxConfig) -> Self {
        Self {
            max_layer_size: config.max_layer_size.as_u64(),
            max_layer_entries: config.max_layer_entries,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&SandboxConfig::default())
    }
}

/// One layer to unpack: which blob, how it is compressed, and what its uncompressed SHA-256
/// must be. Built by [`plan_layers`] from a verified manifest and config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// The (compressed) blob's digest in the store.
    pub digest: Digest,
    /// Its compression.
    pub media_type: LayerMediaType,
    /// The config's `rootfs.diff_ids[i]`.
    pub diff_id: Digest,
}

/// Pairs the manifest's layers with the config's diff_ids, refusing a count mismatch.
pub fn plan_layers(
    manifest: &ImageManifest,
    config: &ImageConfig,
) -> Result<Vec<LayerSpec>, ManifestError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ManifestError::LayerCount {
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
        .map(|(index, (layer, diff_id))| {
            let media_type =
                LayerMediaType::from_media_type(&layer.media_type).ok_or_else(|| {
                    ManifestError::LayerMediaType {
                        index,
                        media_type: layer.media_type.clone(),
                    }
                })?;
            Ok(LayerSpec {
                digest: layer.digest.clone(),
                media_type,
                diff_id: diff_id.clone(),
            })
        })
        .collect()
}

/// What an unpack did, including what it neutralised. Exists so callers (audit, `store ls`,
/// tests) can see that hostile entries were dropped or stripped rather than silently applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Tar entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Uncompressed tar bytes read.
    pub tar_bytes: u64,
    /// File content bytes written.
    pub file_bytes: u64,
    /// Device nodes and FIFOs dropped.
    pub dropped_special: u64,
    /// Extended attributes dropped.
    pub dropped_xattrs: u64,
    /// Entries whose setuid/setgid bits were stripped.
    pub stripped_setid: u64,
}

impl UnpackReport {
    pub(super) fn add(&mut self, o: &UnpackReport) {
        self.entries += o.entries;
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.hardlinks += o.hardlinks;
        self.whiteouts += o.whiteouts;
        self.tar_bytes += o.tar_bytes;
        self.file_bytes += o.file_bytes;
        self.dropped_special += o.dropped_special;
        self.dropped_xattrs += o.dropped_xattrs;
        self.stripped_setid += o.stripped_setid;
    }
}
