//! [`BlobWriter`]: a blob streamed into a temp file, hashed, committed by rename under its digest.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use perry_policies::Digest;
use sha2::{Digest as _, Sha256};

use super::{sync_dir, BlobInfo, Inflight, StoreError};

pub(super) struct InflightGuard {
    pub(super) inflight: Arc<Inflight>,
    pub(super) digest: Digest,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut set = self
            .inflight
            .digests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.remove(&self.digest);
        drop(set);
        self.inflight.done.notify_all();
    }
}

/// The single in-process writer for one blob: push bytes (or use it as an [`io::Write`]), then
/// [`commit`](Self::commit). Dropping it without committing deletes the temp file and lets a
/// waiting ingest of the same digest take over. Exists so an async puller can feed chunks from a
/// network stream without this crate depending on an async runtime.
pub struct BlobWriter {
    pub(super) store_dir: PathBuf,
    pub(super) expected: Digest,
    pub(super) expected_size: Option<u64>,
    pub(super) temp_path: PathBuf,
    pub(super) file: Option<File>,
    pub(super) hasher: Sha256,
    pub(super) written: u64,
    pub(super) _guard: InflightGuard,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("expected", &self.expected)
            .field("written", &self.written)
            .finish()
    }
}

impl BlobWriter {
    /// Appends a chunk. Fails early (and discards the temp file) once more bytes arrived than the
    /// expected size.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.written += chunk.len() as u64;
        if let Some(expected) = self.expected_size {
            if self.written > expected {
                self.discard();
                return Err(StoreError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected,
                    actual: self.written,
                });
            }
        }
        self.hasher.update(chunk);
        let Some(file) = self.file.as_mut() else {
            return Err(self.io_err("write after failure to", io::ErrorKind::Other.into()));
        };
        if let Err(e) = file.write_all(chunk) {
            self.discard();
            return Err(self.io_err("cannot write temp file", e));
        }
        Ok(())
    }

    /// How many bytes were pushed so far (for progress reporting).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, fsyncs, renames into place, fsyncs the directory. On mismatch the
    /// temp file is removed and nothing is kept.
    pub fn commit(mut self) -> Result<BlobInfo, StoreError> {
        let actual = Digest::from_sha256(&std::mem::take(&mut self.hasher).finalize().into());
        if let Some(expected) = self.expected_size {
            if self.written != expected {
                self.discard();
                return Err(StoreError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected,
                    actual: self.written,
                });
            }
        }
        if actual != self.expected {
            self.discard();
            return Err(StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        let Some(file) = self.file.take() else {
            return Err(self.io_err("write after failure to", io::ErrorKind::Other.into()));
        };
        let finish = |file: &File| -> io::Result<()> {
            file.set_permissions(fs::Permissions::from_mode(0o444))?;
            file.sync_all()
        };
        if let Err(e) = finish(&file) {
            drop(file);
            self.discard();
            return Err(self.io_err("cannot fsync temp file", e));
        }
        drop(file);
        let dest = self.store_dir.join(self.expected.hex());
        if let Err(e) = fs::rename(&self.temp_path, &dest) {
            self.discard();
            return Err(self.io_err("cannot rename temp file", e));
        }
        sync_dir(&self.store_dir);
        let meta = fs::metadata(&dest).map_err(|e| self.io_err("cannot stat committed blob", e))?;
        Ok(BlobInfo {
            digest: self.expected.clone(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    fn discard(&mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.temp_path);
    }

    fn io_err(&self, what: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            digest: self.expected.clone(),
            what,
            path: self.temp_path.clone(),
            source,
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.discard();
        }
    }
}
