//! [`BlobReader`]: a stored blob read back and hashed, refused (and deleted) if it no longer
//! matches its digest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use perry_policies::Digest;
use sha2::{Digest as _, Sha256};

use super::{sync_dir, StoreError};

/// A verifying reader over one stored blob (see [`BlobStore::open`](super::BlobStore::open)).
pub struct BlobReader {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) digest: Digest,
    pub(super) hasher: Option<Sha256>,
    pub(super) verified: bool,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .finish()
    }
}

impl BlobReader {
    /// The blob being read.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Reads whatever is left and verifies the digest. Consumers that may stop early (a tar
    /// reader stops at the end-of-archive marker) call this so trailing bytes are covered too.
    pub fn finish(mut self) -> Result<(), StoreError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        if self.verified {
            Ok(())
        } else {
            Err(StoreError::Io {
                digest: self.digest.clone(),
                what: "verification did not complete for",
                path: self.path.clone(),
                source: io::ErrorKind::UnexpectedEof.into(),
            })
        }
    }

    /// Turns an error from `read` back into a [`StoreError`] (recovering `Corrupt`).
    pub fn io_error(&self, e: io::Error) -> StoreError {
        into_store_error(e, &self.digest, &self.path)
    }
}

/// Recovers the [`StoreError`] carried by an `io::Error` from a [`BlobReader`], or wraps it.
pub fn into_store_error(e: io::Error, digest: &Digest, path: &Path) -> StoreError {
    let source = if e.get_ref().is_some_and(|inner| inner.is::<StoreError>()) {
        match e.into_inner().map(|inner| inner.downcast::<StoreError>()) {
            Some(Ok(inner)) => return *inner,
            _ => io::ErrorKind::InvalidData.into(),
        }
    } else {
        e
    };
    StoreError::Io {
        digest: digest.clone(),
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n > 0 {
            if let Some(h) = self.hasher.as_mut() {
                h.update(&buf[..n]);
            }
            return Ok(n);
        }
        if let Some(h) = self.hasher.take() {
            let actual = Digest::from_sha256(&h.finalize().into());
            if actual != self.digest {
                let _ = fs::remove_file(&self.path);
                sync_dir(self.path.parent().unwrap_or(Path::new(".")));
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    StoreError::Corrupt {
                        digest: self.digest.clone(),
                        actual,
                    },
                ));
            }
            self.verified = true;
        }
        Ok(0)
    }
}
