//! The content-addressed blob store: `<state_dir>/blobs/sha256/<hex>`.
//!
//! Every blob that reaches the runtime (manifests, configs, layers) passes through here, and
//! here is where invariant 2 ("blob bytes are hashed and compared before use") is enforced:
//!
//! * **Ingest** ([`BlobStore::ingest`], [`BlobStore::begin`]) hashes (SHA-256) and counts the bytes
//!   while they stream into a temp file *in the same directory*, fsyncs it, compares digest and
//!   (when known) size, and only then renames it to its content-addressed name and fsyncs the
//!   directory. A mismatch deletes the temp file and returns [`StoreError::DigestMismatch`] /
//!   [`StoreError::SizeMismatch`] naming expected and actual values: nothing is kept.
//! * **Open** ([`BlobStore::open`]) **re-verifies on every open**, streaming: the returned
//!   [`BlobReader`] hashes what is read and fails the read that reaches end-of-file if the content
//!   no longer matches its name. We chose this over "trust the name after one full hash per
//!   process" because the consumer (the unpacker) reads the whole blob anyway, so the check costs
//!   one SHA-256 pass and no extra I/O, and it needs no cache that could go stale when a file is
//!   replaced behind our back. A blob found corrupt is deleted so the next pull fetches it again.
//! * **Coalescing:** concurrent ingests of one digest inside a process share one writer; the
//!   others wait and then reuse the committed blob (or take over if the writer failed). Across
//!   processes, writers use distinct temp names and an atomic rename, so the worst case is
//!   duplicated download work, never a torn blob.
//!
//! A `kill -9` at any point leaves either no blob or a complete, verified one, plus perhaps a
//! `.tmp-*` file that [`BlobStore::gc`] removes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use perry_policies::Digest;
use sha2::{Digest as _, Sha256};

mod reader;
mod writer;

pub use reader::{into_store_error, BlobReader};
pub use writer::BlobWriter;
use writer::InflightGuard;

/// Temp files older than this are considered abandoned by a crashed writer and removed by `gc`.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// Why a store operation failed. Every variant names the digest involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes did not hash to the digest they were supposed to have.
    #[error("blob {expected}: content hashes to {actual}; nothing was kept")]
    DigestMismatch {
        /// The digest the caller asked for (from a verified manifest).
        expected: Digest,
        /// What the bytes actually hash to.
        actual: Digest,
    },
    /// The number of bytes differs from the size the descriptor announced.
    #[error("blob {digest}: expected {expected} bytes, got {actual}; nothing was kept")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The size from the descriptor.
        expected: u64,
        /// How many bytes arrived (at least; counting stops once the size is exceeded).
        actual: u64,
    },
    /// A stored blob no longer matches its name (disk corruption or tampering); it was removed.
    #[error("stored blob {digest} is corrupt (content hashes to {actual}); it was removed, pull it again")]
    Corrupt {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to now.
        actual: Digest,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
    /// The blob is larger than the caller allows for this kind of blob.
    #[error("blob {digest} is {size} bytes, more than the {limit} allowed here")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading the source or writing the store failed.
    #[error("blob {digest}: {what} {}: {source}", path.display())]
    Io {
        /// The blob.
        digest: Digest,
        /// What we were doing.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The store directory itself could not be created or listed.
    #[error("blob store {}: {what}: {source}", path.display())]
    Store {
        /// What we were doing.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// One stored blob, as listed by [`BlobStore::ls`] or returned from an ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest (and file name).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed (the file's mtime).
    pub modified: SystemTime,
}

/// What [`BlobStore::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed because they were not in the keep set.
    pub removed: Vec<Digest>,
    /// Bytes freed by removing them (temp files included).
    pub freed_bytes: u64,
    /// Abandoned temp files removed.
    pub temp_files_removed: usize,
}

#[derive(Default)]
pub(super) struct Inflight {
    pub(super) digests: Mutex<HashSet<Digest>>,
    pub(super) done: Condvar,
}

/// The content-addressed blob store. Cheap to clone; clones share the in-process coalescing
/// state, so give every puller thread a clone of one store rather than opening the directory
/// twice.
#[derive(Clone)]
pub struct BlobStore {
    dir: PathBuf,
    inflight: Arc<Inflight>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("dir", &self.dir).finish()
    }
}

/// The outcome of [`BlobStore::begin`]: either the blob is already stored, or the caller holds the
/// (only) writer for it and must feed it.
#[derive(Debug)]
pub enum Begin {
    /// Already present (possibly committed by a concurrent writer we waited for); skip the
    /// download.
    Present(BlobInfo),
    /// Write the blob's bytes into this writer and call [`BlobWriter::commit`].
    Write(BlobWriter),
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl BlobStore {
    /// Opens (creating if needed) the store under `<state_dir>/blobs/sha256`. The directory is
    /// made 0700: blobs are only ever read by the runtime, as root.
    pub fn open_in(state_dir: &Path) -> Result<Self, StoreError> {
        let dir = state_dir.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(|source| StoreError::Store {
            what: "cannot create",
            path: dir.clone(),
            source,
        })?;
        let _ = fs::set_permissions(state_dir.join("blobs"), fs::Permissions::from_mode(0o700));
        Ok(Self {
            dir,
            inflight: Arc::default(),
        })
    }

    /// The directory holding the blobs (`…/blobs/sha256`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob named `digest` lives (whether or not it is present).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is present (not verified; [`open`](Self::open) verifies).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size and mtime of a stored blob, if present.
    pub fn stat(&self, digest: &Digest) -> Option<BlobInfo> {
        let meta = fs::symlink_metadata(self.path(digest)).ok()?;
        if !meta.is_file() {
            return None;
        }
        Some(BlobInfo {
            digest: digest.clone(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Stores the bytes of `reader` under `expected`, verifying digest and (if given) size.
    ///
    /// If the blob is already present the reader is not read at all. Concurrent calls for one
    /// digest coalesce (see [`begin`](Self::begin)). From async code (an `oci-client` stream), run
    /// this in `spawn_blocking` with a sync bridge, or use [`begin`](Self::begin) and push chunks.
    pub fn ingest<R: Read>(
        &self,
        mut reader: R,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<BlobInfo, StoreError> {
        match self.begin(expected, expected_size)? {
            Begin::Present(info) => Ok(info),
            Begin::Write(mut writer) => {
                let mut buf = vec![0u8; 128 * 1024];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(source) => {
                            return Err(StoreError::Io {
                                digest: expected.clone(),
                                what: "reading the source for",
                                path: writer.temp_path.clone(),
                                source,
                            })
                        }
                    };
                    writer.push(&buf[..n])?;
                }
                writer.commit()
            }
        }
    }

    /// Starts an ingest: returns [`Begin::Present`] if the blob is stored, else the single writer
    /// for this digest in this process. Blocks while another thread holds that writer; when it
    /// finishes, returns `Present` (it committed) or a fresh writer (it failed or was dropped).
    pub fn begin(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Begin, StoreError> {
        let mut inflight = self
            .inflight
            .digests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(info) = self.stat(expected) {
                return Ok(Begin::Present(info));
            }
            if !inflight.contains(expected) {
                break;
            }
            inflight = self
                .inflight
                .done
                .wait(inflight)
                .unwrap_or_else(|e| e.into_inner());
        }
        inflight.insert(expected.clone());
        drop(inflight);
        let guard = InflightGuard {
            inflight: self.inflight.clone(),
            digest: expected.clone(),
        };
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = self.dir.join(format!(
            ".tmp-{}-{}-{n}",
            expected.hex(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&temp_path)
            .map_err(|source| StoreError::Io {
                digest: expected.clone(),
                what: "cannot create temp file",
                path: temp_path.clone(),
                source,
            })?;
        Ok(Begin::Write(BlobWriter {
            store_dir: self.dir.clone(),
            expected: expected.clone(),
            expected_size,
            temp_path,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
            _guard: guard,
        }))
    }

    /// Opens a stored blob for reading. The reader verifies the content against `digest` as it
    /// is read: the read that reaches end-of-file fails with `InvalidData` (wrapping
    /// [`StoreError::Corrupt`]) if it does not match, and the corrupt file is removed. Call
    /// [`BlobReader::finish`] to drain and verify explicitly.
    pub fn open(&self, digest: &Digest) -> Result<BlobReader, StoreError> {
        let path = self.path(digest);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    StoreError::NotFound(digest.clone())
                } else {
                    StoreError::Io {
                        digest: digest.clone(),
                        what: "cannot open",
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        Ok(BlobReader {
            file,
            path,
            digest: digest.clone(),
            hasher: Some(Sha256::new()),
            verified: false,
        })
    }

    /// Reads a whole (small) blob into memory, verified, refusing blobs over `limit` bytes.
    /// For manifests and configs.
    pub fn read_verified(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        if let Some(info) = self.stat(digest) {
            if info.size > limit {
                return Err(StoreError::TooLarge {
                    digest: digest.clone(),
                    size: info.size,
                    limit,
                });
            }
        }
        let mut reader = self.open(digest)?;
        let mut out = Vec::new();
        (&mut reader)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| reader.io_error(e))?;
        if out.len() as u64 > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size: out.len() as u64,
                limit,
            });
        }
        reader.finish()?;
        Ok(out)
    }

    /// Lists the stored blobs (temp files and foreign names are skipped), sorted by digest.
    pub fn ls(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let mut out = Vec::new();
        for entry in self.read_dir()? {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if let Some(info) = self.stat(&digest) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Removes every blob not in `keep`, and temp files abandoned by crashed writers (older than an
    /// hour and not being written by this process). Blobs being ingested right now are kept.
    pub fn gc(&self, keep: &HashSet<Digest>) -> Result<GcReport, StoreError> {
        let inflight = self
            .inflight
            .digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut report = GcReport::default();
        let now = SystemTime::now();
        for entry in self.read_dir()? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if let Some(rest) = name.strip_prefix(".tmp-") {
                let ours = rest
                    .split('-')
                    .nth(1)
                    .is_some_and(|pid| pid == std::process::id().to_string());
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > STALE_TEMP_AGE);
                if !ours && old && fs::remove_file(&path).is_ok() {
                    report.temp_files_removed += 1;
                    report.freed_bytes += meta.len();
                }
                continue;
            }
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if keep.contains(&digest) || inflight.contains(&digest) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.freed_bytes += meta.len();
                    report.removed.push(digest);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        digest,
                        what: "cannot remove",
                        path,
                        source,
                    })
                }
            }
        }
        if report.freed_bytes > 0 {
            sync_dir(&self.dir);
        }
        report.removed.sort();
        Ok(report)
    }

    fn read_dir(&self) -> Result<Vec<fs::DirEntry>, StoreError> {
        let rd = fs::read_dir(&self.dir).map_err(|source| StoreError::Store {
            what: "cannot list",
            path: self.dir.clone(),
            source,
        })?;
        Ok(rd.filter_map(Result::ok).collect())
    }
}

/// Best-effort fsync of a directory, so a rename or unlink in it is durable.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Hashes `bytes` into a digest; a convenience for callers building blobs (tests, the puller).
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::from_sha256(&Sha256::digest(bytes).into())
}
