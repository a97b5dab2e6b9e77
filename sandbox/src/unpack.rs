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

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use perry_policies::{Digest, SandboxConfig};
use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::manifest::{ImageConfig, ImageManifest, LayerMediaType, ManifestError};
use crate::store::{BlobStore, StoreError};

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
    fn add(&mut self, o: &UnpackReport) {
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

/// Why an unpack was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackErrorKind {
    /// A hostile or unsupported entry.
    #[error("refused: {0}")]
    Refused(String),
    /// The layer's uncompressed digest is not the config's diff_id.
    #[error(
        "uncompressed content hashes to {actual}, but the image config's diff_id is {expected}"
    )]
    DiffIdMismatch {
        /// From the config.
        expected: Digest,
        /// Of the bytes.
        actual: Digest,
    },
    /// More uncompressed bytes than `max_layer_size`.
    #[error("layer is larger than the {limit}-byte limit when uncompressed (decompression bomb?)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// More entries than `max_layer_entries`.
    #[error("layer has more than the {limit}-entry limit")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The tar or compressed stream is corrupt.
    #[error("malformed layer: {0}")]
    Malformed(io::Error),
    /// The blob store refused (missing blob, corrupt blob).
    #[error(transparent)]
    Blob(#[from] StoreError),
    /// The manifest/config pair is inconsistent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// An unpack failure, naming the layer and entry involved.
#[derive(Debug)]
pub struct UnpackError {
    /// The layer being unpacked, if any.
    pub layer: Option<Digest>,
    /// The entry path (lossy UTF-8), if the failure concerns one.
    pub entry: Option<String>,
    /// What went wrong (boxed: it is large and errors travel through every `?`).
    pub kind: Box<UnpackErrorKind>,
}

impl std::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(layer) = &self.layer {
            write!(f, "layer {layer}: ")?;
        }
        if let Some(entry) = &self.entry {
            write!(f, "entry `{entry}`: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for UnpackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source()
    }
}

impl UnpackError {
    fn new(layer: Option<&Digest>, entry: Option<&[u8]>, kind: UnpackErrorKind) -> Self {
        Self {
            layer: layer.cloned(),
            entry: entry.map(|e| String::from_utf8_lossy(e).into_owned()),
            kind: Box::new(kind),
        }
    }
}

fn io_kind(what: &'static str, source: impl Into<io::Error>) -> UnpackErrorKind {
    UnpackErrorKind::Io {
        what,
        source: source.into(),
    }
}

fn refused(msg: impl Into<String>) -> UnpackErrorKind {
    UnpackErrorKind::Refused(msg.into())
}

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

/// Removes a tree we created (staging), never following symlinks.
fn remove_tree(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    if let Ok(p) = open_dir(parent) {
        let _ = remove_all_at(p.as_fd(), name.as_bytes(), 0);
    }
    if path.exists() {
        let _ = fs::remove_dir_all(path);
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Unpacks one layer (compressed bytes from `reader`) into the existing directory `root`, with
/// all the checks described in the module docs, including the diff_id. Exists for tests, benches
/// and callers that manage their own target directory; it does not make the tree read-only and
/// does not clean up on failure (the caller owns `root`).
pub fn unpack_layer_into<R: Read>(
    root: &Path,
    reader: R,
    layer: &LayerSpec,
    limits: &Limits,
) -> Result<UnpackReport, UnpackError> {
    let fd = open_dir(root).map_err(|e| {
        UnpackError::new(
            Some(&layer.digest),
            None,
            io_kind("cannot open the target dir", e),
        )
    })?;
    unpack_layer_fd(fd.as_fd(), reader, layer, limits)
}

/// Counts, hashes and limits the uncompressed stream.
struct Tally {
    bytes: u64,
    limit: u64,
    exceeded: bool,
    hasher: Sha256,
}

struct Counting<R> {
    inner: R,
    tally: Rc<RefCell<Tally>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut t = self.tally.borrow_mut();
        t.bytes += n as u64;
        if t.bytes > t.limit {
            t.exceeded = true;
            return Err(io::Error::other("layer size limit exceeded"));
        }
        t.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn decoder<'a, R: Read + 'a>(
    media_type: LayerMediaType,
    reader: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match media_type {
        LayerMediaType::Tar => Box::new(reader),
        LayerMediaType::TarGzip => {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader)))
        }
        LayerMediaType::TarZstd => {
            let mut d = zstd::stream::read::Decoder::new(reader)?;
            // Refuse frames that ask for more than a 128 MiB window (memory bomb).
            d.window_log_max(27)?;
            Box::new(d)
        }
    })
}

fn unpack_layer_fd<R: Read>(
    root: BorrowedFd<'_>,
    reader: R,
    layer: &LayerSpec,
    limits: &Limits,
) -> Result<UnpackReport, UnpackError> {
    let digest = &layer.digest;
    let tally = Rc::new(RefCell::new(Tally {
        bytes: 0,
        limit: limits.max_layer_size,
        exceeded: false,
        hasher: Sha256::new(),
    }));
    let stream_err = |tally: &Rc<RefCell<Tally>>, e: io::Error| {
        let kind = if tally.borrow().exceeded {
            UnpackErrorKind::TooLarge {
                limit: limits.max_layer_size,
            }
        } else if e.get_ref().is_some_and(|i| i.is::<StoreError>()) {
            UnpackErrorKind::Blob(crate::store::into_store_error(
                e,
                digest,
                Path::new("(blob)"),
            ))
        } else {
            UnpackErrorKind::Malformed(e)
        };
        UnpackError::new(Some(digest), None, kind)
    };
    let decoded = decoder(layer.media_type, reader).map_err(|e| stream_err(&tally, e))?;
    let counting = Counting {
        inner: decoded,
        tally: tally.clone(),
    };
    let mut archive = tar::Archive::new(counting);
    let mut unpacker = Unpacker {
        root,
        limits,
        chown: rustix::process::geteuid().is_root(),
        this_layer: HashSet::new(),
        dir_times: Vec::new(),
        report: UnpackReport::default(),
    };
    {
        let entries = archive.entries().map_err(|e| stream_err(&tally, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| stream_err(&tally, e))?;
            unpacker.report.entries += 1;
            if unpacker.report.entries > limits.max_layer_entries {
                return Err(UnpackError::new(
                    Some(digest),
                    None,
                    UnpackErrorKind::TooManyEntries {
                        limit: limits.max_layer_entries,
                    },
                ));
            }
            let path = entry.path_bytes().into_owned();
            unpacker.entry(entry).map_err(|kind| {
                // A read error inside an entry's data may really be the size limit.
                let kind = match kind {
                    UnpackErrorKind::Io { .. } | UnpackErrorKind::Malformed(_)
                        if tally.borrow().exceeded =>
                    {
                        UnpackErrorKind::TooLarge {
                            limit: limits.max_layer_size,
                        }
                    }
                    k => k,
                };
                UnpackError::new(Some(digest), Some(&path), kind)
            })?;
        }
    }
    // Drain padding and anything after the end-of-archive marker so the diff_id covers every
    // byte of the uncompressed stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| stream_err(&tally, e))?;
    unpacker.finish_dirs();
    let mut report = unpacker.report;
    let t = tally.borrow();
    report.tar_bytes = t.bytes;
    let actual = Digest::from_sha256(&t.hasher.clone().finalize().into());
    if actual != layer.diff_id {
        return Err(UnpackError::new(
            Some(digest),
            None,
            UnpackErrorKind::DiffIdMismatch {
                expected: layer.diff_id.clone(),
                actual,
            },
        ));
    }
    Ok(report)
}

/// A numeric header field; an empty field (all NUL or spaces, as some writers leave unused
/// fields) reads as 0, like Go's `archive/tar`. Garbage is `None`.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// Splits an entry name into components: drops empty and `.` components; refuses absolute
/// paths, `..`, and NUL bytes.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, UnpackErrorKind> {
    if path.first() == Some(&b'/') {
        return Err(refused("absolute path"));
    }
    if path.contains(&0) {
        return Err(refused("NUL byte in path"));
    }
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refused("`..` component (path traversal)")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    limits: &'a Limits,
    chown: bool,
    /// Every path (and parent path) this layer created, for whiteout semantics.
    this_layer: HashSet<Vec<u8>>,
    /// Directory mtimes, applied after the layer (creating children changes them).
    dir_times: Vec<(Vec<u8>, u64)>,
    report: UnpackReport,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackErrorKind> {
        let raw_path = entry.path_bytes().into_owned();
        let comps = components(&raw_path)?;
        let header = entry.header();
        let etype = header.entry_type();
        let meta = self.meta(header)?;

        // Extended attributes travel in PAX records; all are dropped (see module docs).
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                if key.starts_with(b"SCHILY.xattr.") || key.starts_with(b"LIBARCHIVE.xattr.") {
                    self.report.dropped_xattrs += 1;
                }
            }
        }

        // Whiteouts are recognised by name, whatever their type.
        if let Some(last) = comps.last() {
            if let Some(target) = last.strip_prefix(b".wh.") {
                let parent = &comps[..comps.len() - 1];
                if target == b".wh..opq" {
                    return self.opaque(parent);
                }
                if target.starts_with(b".wh.") {
                    return Ok(()); // aufs bookkeeping (.wh..wh.plnk, …)
                }
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(refused("whiteout of an invalid name"));
                }
                return self.whiteout(parent, target);
            }
        }

        use tar::EntryType as T;
        match etype {
            T::Regular | T::Continuous => {
                let (parent, name) = self.split_create(&comps)?;
                let size = entry.size();
                if self.report.file_bytes.saturating_add(size) > self.limits.max_layer_size {
                    return Err(UnpackErrorKind::TooLarge {
                        limit: self.limits.max_layer_size,
                    });
                }
                self.clear(&parent, name, false)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_kind("cannot create file", e))?;
                let mut file = File::from(fd);
                let copied = io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(UnpackErrorKind::Malformed)?;
                if copied != size {
                    return Err(UnpackErrorKind::Malformed(
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                file.flush().map_err(|e| io_kind("cannot write file", e))?;
                self.report.file_bytes += size;
                self.apply_fd(file.as_fd(), &meta)?;
                self.times_at(&parent, name, meta.mtime);
                self.report.files += 1;
                self.created(&comps);
            }
            T::Directory => {
                if comps.is_empty() {
                    // `./`: the root's own metadata.
                    self.apply_fd(self.root, &meta)?;
                    self.report.dirs += 1;
                    return Ok(());
                }
                let (parent, name) = self.split_create(&comps)?;
                if !self.clear(&parent, name, true)? {
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_kind("cannot create directory", e))?;
                }
                let dir = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_kind("cannot open directory", e))?;
                self.apply_fd(dir.as_fd(), &meta)?;
                self.dir_times.push((join(&comps), meta.mtime));
                self.report.dirs += 1;
                self.created(&comps);
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.contains(&0) || target.len() > 4095 {
                    return Err(refused("symlink with an empty, overlong or NUL target"));
                }
                let (parent, name) = self.split_create(&comps)?;
                self.clear(&parent, name, false)?;
                rustix::fs::symlinkat(target.as_slice(), &parent, name)
                    .map_err(|e| io_kind("cannot create symlink", e))?;
                if self.chown {
                    rustix::fs::chownat(
                        &parent,
                        name,
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_kind("cannot chown symlink", e))?;
                }
                self.times_at(&parent, name, meta.mtime);
                self.report.symlinks += 1;
                self.created(&comps);
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let tcomps = components(&target).map_err(|e| match e {
                    UnpackErrorKind::Refused(m) => refused(format!("hardlink target: {m}")),
                    e => e,
                })?;
                if tcomps.is_empty() {
                    return Err(refused("hardlink to the root"));
                }
                if tcomps == comps {
                    return Ok(()); // a link to itself changes nothing
                }
                let tparent = self
                    .resolve_dir(&tcomps[..tcomps.len() - 1], false)
                    .map_err(|e| match e {
                        UnpackErrorKind::Refused(m) => refused(format!("hardlink target: {m}")),
                        e => e,
                    })?;
                let tname = tcomps[tcomps.len() - 1];
                match rustix::fs::statat(&tparent, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        return Err(refused("hardlink to a directory"))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(refused("hardlink target does not exist inside the root"))
                    }
                }
                let (parent, name) = self.split_create(&comps)?;
                self.clear(&parent, name, false)?;
                rustix::fs::linkat(&tparent, tname, &parent, name, AtFlags::empty())
                    .map_err(|e| io_kind("cannot create hardlink", e))?;
                self.report.hardlinks += 1;
                self.created(&comps);
            }
            T::Char | T::Block | T::Fifo => {
                self.report.dropped_special += 1;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            T::GNUSparse => return Err(refused("GNU sparse entries are not supported")),
            other => {
                return Err(refused(format!(
                    "unsupported entry type {:?}",
                    other.as_byte() as char
                )))
            }
        }
        Ok(())
    }

    fn meta(&mut self, header: &tar::Header) -> Result<Meta, UnpackErrorKind> {
        let old = header.as_old();
        let mode = numeric(header.mode().map(u64::from), &old.mode)
            .ok_or_else(|| refused("unreadable mode field"))?
            & 0o7777;
        let mode = mode as u32;
        if mode & 0o6000 != 0 {
            self.report.stripped_setid += 1;
        }
        let id = |v: Option<u64>, what: &str| -> Result<u32, UnpackErrorKind> {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| refused(format!("invalid {what}")))
        };
        Ok(Meta {
            mode: mode & 0o1777,
            uid: id(numeric(header.uid(), &old.uid), "uid")?,
            gid: id(numeric(header.gid(), &old.gid), "gid")?,
            mtime: header.mtime().unwrap_or(0),
        })
    }

    fn apply_fd(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackErrorKind> {
        if self.chown {
            rustix::fs::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io_kind("cannot chown", e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| io_kind("cannot chmod", e))?;
        Ok(())
    }

    fn times_at(&self, parent: &OwnedFd, name: &[u8], mtime: u64) {
        let t = Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let _ = rustix::fs::utimensat(
            parent,
            name,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        );
    }

    fn created(&mut self, comps: &[&[u8]]) {
        for i in 1..=comps.len() {
            self.this_layer.insert(join(&comps[..i]));
        }
    }

    /// Resolves (creating missing directories) the parent of `comps`; returns it and the last
    /// component.
    fn split_create<'c>(
        &mut self,
        comps: &[&'c [u8]],
    ) -> Result<(OwnedFd, &'c [u8]), UnpackErrorKind> {
        let Some((name, parent)) = comps.split_last() else {
            return Err(refused("empty path"));
        };
        Ok((self.resolve_dir(parent, true)?, name))
    }

    /// Opens the directory `comps` with in-root resolution (symlinks are resolved as if the
    /// staging dir were `/`), creating missing directories when `create`.
    fn resolve_dir(&mut self, comps: &[&[u8]], create: bool) -> Result<OwnedFd, UnpackErrorKind> {
        let root = self.root;
        let open = |comps: &[&[u8]]| {
            let path = if comps.is_empty() {
                b".".to_vec()
            } else {
                join(comps)
            };
            rustix::fs::openat2(
                root,
                path.as_slice(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
        };
        let describe = |e: Errno, comps: &[&[u8]]| -> UnpackErrorKind {
            let p = String::from_utf8_lossy(&join(comps)).into_owned();
            match e {
                Errno::NOTDIR => refused(format!("parent `{p}` is not a directory")),
                Errno::LOOP => refused(format!("symlink loop resolving `{p}`")),
                Errno::XDEV => refused(format!("`{p}` resolves across a mount")),
                Errno::NOENT => refused(format!(
                    "parent `{p}` does not exist inside the root (dangling symlink?)"
                )),
                Errno::NAMETOOLONG => refused(format!("path `{p}` is too long")),
                e => io_kind("cannot resolve parent directory", e),
            }
        };
        match open(comps) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(describe(e, comps)),
        }
        // Create missing components one at a time, each inside an already-resolved directory.
        let mut cur = open(&[]).map_err(|e| describe(e, &[]))?;
        for i in 1..=comps.len() {
            cur = match open(&comps[..i]) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, comps[i - 1], Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => return Err(describe(Errno::NOENT, &comps[..i])),
                        Err(e) => return Err(io_kind("cannot create parent directory", e)),
                    }
                    self.created(&comps[..i]);
                    open(&comps[..i]).map_err(|e| describe(e, &comps[..i]))?
                }
                Err(e) => return Err(describe(e, &comps[..i])),
            };
        }
        Ok(cur)
    }

    /// Makes room for a new entry `name` in `parent`. Returns true if an existing directory was
    /// kept (`keep_dir` and it is a directory); otherwise anything there is removed without
    /// following symlinks.
    fn clear(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool, UnpackErrorKind> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_kind("cannot stat existing entry", e)),
            Ok(st) => {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    if keep_dir {
                        return Ok(true);
                    }
                    remove_all_at(parent.as_fd(), name, 0)
                        .map_err(|e| io_kind("cannot remove existing directory", e))?;
                } else {
                    rustix::fs::unlinkat(parent, name, AtFlags::empty())
                        .map_err(|e| io_kind("cannot remove existing entry", e))?;
                }
                Ok(false)
            }
        }
    }

    fn whiteout(&mut self, parent: &[&[u8]], name: &[u8]) -> Result<(), UnpackErrorKind> {
        let mut full = parent.to_vec();
        full.push(name);
        if self.this_layer.contains(&join(&full)) {
            return Ok(()); // whiteouts only hide lower layers
        }
        let dir = match self.resolve_dir(parent, false) {
            Ok(d) => d,
            Err(UnpackErrorKind::Refused(_)) => return Ok(()), // nothing there to hide
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_kind("cannot stat whiteout target", e)),
            Ok(st) => {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    remove_all_at(dir.as_fd(), name, 0)
                        .map_err(|e| io_kind("cannot remove whiteout target", e))?;
                } else {
                    rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                        .map_err(|e| io_kind("cannot remove whiteout target", e))?;
                }
            }
        }
        self.report.whiteouts += 1;
        Ok(())
    }

    fn opaque(&mut self, dir: &[&[u8]]) -> Result<(), UnpackErrorKind> {
        let pfd = self.resolve_dir(dir, true)?;
        let rd = rustix::fs::openat(
            &pfd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_kind("cannot open opaque directory", e))?;
        let prefix = join(dir);
        let mut doomed = Vec::new();
        for ent in rustix::fs::Dir::read_from(&rd).map_err(|e| io_kind("cannot list", e))? {
            let ent = ent.map_err(|e| io_kind("cannot list", e))?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut key = prefix.clone();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name);
            if !self.this_layer.contains(&key) {
                doomed.push(name.to_vec());
            }
        }
        for name in doomed {
            remove_all_at(rd.as_fd(), &name, 0)
                .map_err(|e| io_kind("cannot clear opaque directory", e))?;
        }
        self.created(dir);
        self.report.whiteouts += 1;
        Ok(())
    }

    fn finish_dirs(&mut self) {
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let comps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
            let Some((name, parent)) = comps.split_last() else {
                continue;
            };
            if let Ok(p) = self.resolve_dir(parent, false) {
                self.times_at(&p, name, mtime);
            }
        }
    }
}

/// Removes `name` in `dir` (a file, symlink or whole tree) without following symlinks.
fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    if depth > MAX_WALK_DEPTH {
        return Err(io::Error::other("directory tree too deep"));
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(&sub)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_all_at(sub.as_fd(), &n, depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// The directories the native runner mounts over (`/proc`, `/dev`, `/tmp`), created when the
/// image lacks them, and the root made searchable by other users (the runner sets the sandbox
/// up as an unprivileged host uid). An image that has one of them as a non-directory keeps it;
/// the runner then refuses to mount there.
fn add_mount_points(root: BorrowedFd<'_>) -> io::Result<()> {
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

/// Clears the write bits of every file and directory under `dir` (symlinks have no mode).
fn make_read_only(dir: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
    if depth > MAX_WALK_DEPTH {
        return Err(io::Error::other("directory tree too deep"));
    }
    let st = rustix::fs::fstat(dir)?;
    rustix::fs::fchmod(dir, Mode::from_raw_mode(st.st_mode & 0o7555))?;
    let mut subdirs = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        match ent.file_type() {
            FileType::Directory => subdirs.push(n.to_vec()),
            FileType::Symlink => {}
            _ => {
                let st = rustix::fs::statat(dir, n, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && st.st_mode & 0o222 != 0
                {
                    // A regular file (checked with NOFOLLOW just above, and nothing else writes
                    // to the staging dir), so chmodat follows no symlink.
                    rustix::fs::chmodat(
                        dir,
                        n,
                        Mode::from_raw_mode(st.st_mode & 0o7555),
                        AtFlags::empty(),
                    )?;
                }
            }
        }
    }
    for n in subdirs {
        let sub = rustix::fs::openat(
            dir,
            n.as_slice(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        make_read_only(sub.as_fd(), depth + 1)?;
    }
    Ok(())
}
