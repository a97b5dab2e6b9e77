//! Pulling a verified image into the store and unpacking it: the only way bytes from a registry
//! become a root filesystem.
//!
//! [`ImageStore::pull`] takes a [`VerifiedImage`] — the verifier's proof, which nothing else can
//! construct — and fetches by the digest it pinned, never by tag. Every blob is hashed while it
//! streams from the registry (the registry client refuses bytes that do not hash to the digest
//! asked for) and hashed again while it is written to the store (temp file + fsync + rename; a
//! mismatch keeps nothing). Concurrent pulls of one blob in this process are coalesced: one
//! fetches, the others wait for it and then find the blob present.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use perry_policies::Digest;
use perry_verifier::registry::{RegistryClient, RegistryError};
use perry_verifier::VerifiedImage;

use crate::manifest::{ImageConfig, ImageManifest, ManifestError, MAX_DOCUMENT_SIZE};
use crate::store::{BlobStore, StoreError};
use crate::unpack::{Limits, RootfsStore, UnpackError, Unpacked};

/// Why a pull failed. Nothing runs; nothing partial is kept.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry refused, failed, or served bytes that do not hash.
    #[error("fetching {what}: {source}")]
    Registry {
        /// Which blob.
        what: String,
        /// The registry error.
        source: RegistryError,
    },
    /// Writing to or reading from the store failed (including a digest mismatch).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manifest or config does not parse.
    #[error("{what}: {source}")]
    Manifest {
        /// Which document.
        what: String,
        /// The parse error.
        source: ManifestError,
    },
    /// Unpacking refused or failed.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

/// A pulled, unpacked image.
#[derive(Debug)]
pub struct Pulled {
    /// The platform manifest digest the rootfs belongs to.
    pub manifest_digest: Digest,
    /// The parsed image config (entrypoint, env, user, working dir).
    pub config: ImageConfig,
    /// The read-only root filesystem.
    pub rootfs: Unpacked,
    /// Blobs fetched from the registry by this pull (0: everything was already stored).
    pub fetched: usize,
}

/// The blob store and root filesystems of one state directory, plus in-process coalescing.
#[derive(Clone, Debug)]
pub struct ImageStore {
    blobs: BlobStore,
    rootfs: RootfsStore,
    limits: Limits,
    inflight: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
}

impl ImageStore {
    /// Opens the stores under `state_dir`.
    pub fn open_in(state_dir: &std::path::Path, limits: Limits) -> Result<Self, PullError> {
        Ok(ImageStore {
            blobs: BlobStore::open_in(state_dir)?,
            rootfs: RootfsStore::open_in(state_dir)?,
            limits,
            inflight: Arc::default(),
        })
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Pulls (what is missing of) `image` by its pinned platform digest and unpacks it.
    pub async fn pull(
        &self,
        registry: &RegistryClient,
        image: &VerifiedImage,
    ) -> Result<Pulled, PullError> {
        let repo = image.reference();
        let manifest_digest = image.platform_digest().clone();
        let mut fetched = 0;
        fetched += self
            .ensure(&manifest_digest, || async {
                registry.fetch_manifest(repo, &manifest_digest).await
            })
            .await?;
        let bytes = self
            .blobs
            .read_verified(&manifest_digest, MAX_DOCUMENT_SIZE)?;
        let manifest = ImageManifest::parse(&bytes).map_err(|source| PullError::Manifest {
            what: format!("manifest {manifest_digest}"),
            source,
        })?;
        let config_digest = manifest.config.digest.clone();
        fetched += self
            .ensure(&config_digest, || async {
                registry
                    .fetch_blob(repo, &config_digest, MAX_DOCUMENT_SIZE)
                    .await
            })
            .await?;
        let config_bytes = self
            .blobs
            .read_verified(&config_digest, MAX_DOCUMENT_SIZE)?;
        let config = ImageConfig::parse(&config_bytes).map_err(|source| PullError::Manifest {
            what: format!("config {config_digest}"),
            source,
        })?;
        for layer in &manifest.layers {
            let limit = layer.size.min(self.limits.max_layer_size);
            fetched += self
                .ensure(&layer.digest, || async {
                    registry.fetch_blob(repo, &layer.digest, limit).await
                })
                .await?;
        }
        let rootfs = self.rootfs.unpack_image(
            &self.blobs,
            &manifest_digest,
            &manifest,
            &config,
            &self.limits,
        )?;
        Ok(Pulled {
            manifest_digest,
            config,
            rootfs,
            fetched,
        })
    }

    /// Makes sure `digest` is stored: if not, the first caller fetches it while later callers
    /// for the same digest wait. Returns 1 when this call fetched.
    async fn ensure<F, Fut>(&self, digest: &Digest, fetch: F) -> Result<usize, PullError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, RegistryError>>,
    {
        if self.blobs.contains(digest) {
            return Ok(0);
        }
        let lock = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(digest.clone()).or_default())
        };
        let guard = lock.lock().await;
        let result = if self.blobs.contains(digest) {
            Ok(0)
        } else {
            match fetch().await {
                Ok(bytes) => self
                    .blobs
                    .ingest(&bytes[..], digest, Some(bytes.len() as u64))
                    .map(|_| 1)
                    .map_err(PullError::from),
                Err(source) => Err(PullError::Registry {
                    what: digest.to_string(),
                    source,
                }),
            }
        };
        drop(guard);
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&lock) == 2 {
            map.remove(digest);
        }
        result
    }
}
