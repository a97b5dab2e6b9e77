//! Pulling a verified image into the store and unpacking it: the only way bytes from a registry
//! become a root filesystem.
//!
//! [`ImageStore::pull`] takes a [`VerifiedImage`] — the verifier's proof, which nothing else can
//! construct — and fetches by the digest it pinned, never by tag. Every blob is hashed while it
//! streams from the registry (the registry client refuses bytes that do not hash to the digest
//! asked for) and hashed again while it is written to the store (temp file + fsync + rename; a
//! mismatch keeps nothing). Layers stream from the network straight into the store's temp file,
//! so an image larger than memory pulls fine. Concurrent pulls of one blob in this process are coalesced: one
//! fetches, the others wait for it and then find the blob present.
//!
//! An image verified from an OCI layout directory or archive ([`VerifiedImage::origin`]) is read
//! from that same layout and from nowhere else: its blobs are streamed from the file straight
//! into the store (never buffered whole in memory), hashed and size-checked on the way, so a
//! blob altered after verification is refused and nothing of it is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use perry_policies::{Digest, ImageRef};
use perry_verifier::layout::{LayoutBlob, LayoutError, OciLayout};
use perry_verifier::registry::{RegistryClient, RegistryError, MAX_MANIFEST_SIZE};
use perry_verifier::VerifiedImage;

use crate::manifest::{ImageConfig, ImageManifest, ManifestError, MAX_DOCUMENT_SIZE};
use crate::store::{Begin, BlobStore, StoreError};
use crate::unpack::{Limits, RootfsStore, UnpackError};

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
    /// The OCI layout or archive the image was verified from cannot be opened or read.
    #[error("reading {what}: {source}")]
    Layout {
        /// Which blob (or the layout itself).
        what: String,
        /// The layout error.
        source: LayoutError,
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

/// A pulled, unpacked image: the only thing [`crate::native::RunSpec`] accepts as a root
/// filesystem. Its fields are private and only [`ImageStore::pull`] (from a
/// [`VerifiedImage`]) makes one, so a path or a hand-made directory cannot reach the runner.
/// The rootfs it names is never changed after unpack: mount points the image lacks are made
/// inside the sandbox's own mount namespace.
#[derive(Clone, Debug)]
pub struct VerifiedRootfs {
    digest: Digest,
    config: ImageConfig,
    path: std::path::PathBuf,
    report: crate::unpack::UnpackReport,
    fresh: bool,
    fetched: usize,
}

impl VerifiedRootfs {
    /// The platform manifest digest the rootfs belongs to.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The parsed image config (entrypoint, env, user, working dir).
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// The read-only root filesystem directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// What the unpack did (all zero when the rootfs already existed).
    pub fn report(&self) -> &crate::unpack::UnpackReport {
        &self.report
    }

    /// False when an existing rootfs was reused.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Blobs fetched from the registry or layout by this pull (0: everything was already
    /// stored).
    pub fn fetched(&self) -> usize {
        self.fetched
    }

    /// The rootfs a spawner request names (see `native::spawner`): the service holds the
    /// `VerifiedRootfs` it came from and sends its digest and path; the spawner is inside the
    /// trust boundary (it takes requests only from the process that started it) and needs only
    /// the path, for the plan. Crate-private: no other code can mint one.
    pub(crate) fn received_by_spawner(digest: Digest, path: std::path::PathBuf) -> Self {
        let config = ImageConfig::parse(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#)
            .expect("a fixed minimal config parses");
        VerifiedRootfs {
            digest,
            config,
            path,
            report: crate::unpack::UnpackReport::default(),
            fresh: false,
            fetched: 0,
        }
    }

    /// Test support only (the `test-support` feature, enabled only by this crate's own
    /// dev-dependency): wraps a hand-made directory that no verifier has seen. Never part of a
    /// normal build.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn unverified_for_tests(path: impl Into<std::path::PathBuf>) -> Self {
        let config = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .expect("minimal config parses");
        VerifiedRootfs {
            digest: crate::store::digest_of(b"unverified test rootfs"),
            config,
            path: path.into(),
            report: crate::unpack::UnpackReport::default(),
            fresh: false,
            fetched: 0,
        }
    }
}

/// Observes a pull as it happens: the CLI draws progress bars from it on a terminal.
pub trait PullProgress: Send + Sync {
    /// A blob download starts; `size` as its descriptor announced it.
    fn start(&self, digest: &Digest, size: Option<u64>);
    /// `n` more bytes of `digest` arrived.
    fn advance(&self, digest: &Digest, n: u64);
    /// The blob is stored (`ok`) or its download failed.
    fn finish(&self, digest: &Digest, ok: bool);
}

/// A [`PullProgress`] held by the store (Debug for the store's derive).
#[derive(Clone)]
struct Observer(Arc<dyn PullProgress>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullProgress")
    }
}

/// The blob store and root filesystems of one state directory, plus in-process coalescing.
#[derive(Clone, Debug)]
pub struct ImageStore {
    blobs: BlobStore,
    rootfs: RootfsStore,
    limits: Limits,
    inflight: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
    progress: Option<Observer>,
}

impl ImageStore {
    /// Opens the stores under `state_dir`.
    pub fn open_in(state_dir: &std::path::Path, limits: Limits) -> Result<Self, PullError> {
        Ok(ImageStore {
            blobs: BlobStore::open_in(state_dir)?,
            rootfs: RootfsStore::open_in(state_dir)?,
            limits,
            inflight: Arc::default(),
            progress: None,
        })
    }

    /// The same store, reporting downloads to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn PullProgress>) -> Self {
        self.progress = Some(Observer(progress));
        self
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Pulls (what is missing of) `image` by its pinned platform digest and unpacks it.
    ///
    /// The bytes come from where the image was verified ([`VerifiedImage::origin`]): its
    /// registry through `registry`, or the OCI layout directory or archive (then `registry` is
    /// not used).
    pub async fn pull(
        &self,
        registry: &RegistryClient,
        image: &VerifiedImage,
    ) -> Result<VerifiedRootfs, PullError> {
        match OciLayout::open_origin(image.origin()) {
            None => {
                self.pull_from(&Source::Registry(registry, image.reference()), image)
                    .await
            }
            Some(opened) => {
                let layout = opened.map_err(|source| PullError::Layout {
                    what: image.origin().to_string(),
                    source,
                })?;
                self.pull_from(&Source::Layout(&layout), image).await
            }
        }
    }

    async fn pull_from(
        &self,
        src: &Source<'_>,
        image: &VerifiedImage,
    ) -> Result<VerifiedRootfs, PullError> {
        let manifest_digest = image.platform_digest().clone();
        let mut fetched = 0;
        fetched += self
            .ensure(&manifest_digest, || {
                src.fetch(self, &manifest_digest, MAX_MANIFEST_SIZE as u64, None, true)
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
            .ensure(&config_digest, || {
                src.fetch(
                    self,
                    &config_digest,
                    MAX_DOCUMENT_SIZE,
                    Some(manifest.config.size),
                    false,
                )
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
                .ensure(&layer.digest, || {
                    src.fetch(self, &layer.digest, limit, Some(layer.size), false)
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
        Ok(VerifiedRootfs {
            digest: manifest_digest,
            config,
            path: rootfs.path,
            report: rootfs.report,
            fresh: rootfs.fresh,
            fetched,
        })
    }

    /// Makes sure `digest` is stored: if not, the first caller fetches it while later callers
    /// for the same digest wait. Returns 1 when this call fetched. Whatever is fetched is
    /// hashed (and size-checked) while it is written to the store.
    async fn ensure<F, Fut>(&self, digest: &Digest, fetch: F) -> Result<usize, PullError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Fetched, PullError>>,
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
                Ok(Fetched::Bytes(bytes)) => self
                    .blobs
                    .ingest(&bytes[..], digest, Some(bytes.len() as u64))
                    .map(|_| 1)
                    .map_err(PullError::from),
                Ok(Fetched::Stream(blob, size)) => self
                    .blobs
                    .ingest(blob, digest, size)
                    .map(|_| 1)
                    .map_err(PullError::from),
                Ok(Fetched::Stored) => Ok(1),
                Err(e) => Err(e),
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

/// Where a pull reads from.
enum Source<'a> {
    /// The image's registry repository.
    Registry(&'a RegistryClient, &'a ImageRef),
    /// The OCI layout or archive the image was verified from.
    Layout(&'a OciLayout),
}

/// Fetched content, not yet trusted: the store hashes it while ingesting.
enum Fetched {
    /// Bytes from the registry (which hashed them too).
    Bytes(Vec<u8>),
    /// A blob streamed from a layout file, with the size the manifest announced (if any).
    Stream(LayoutBlob, Option<u64>),
    /// Streamed from the registry straight into the store (hashed and committed there).
    Stored,
}

impl Source<'_> {
    /// Fetches `digest` (at most `limit` bytes). `size`: the size a descriptor announced, which
    /// the store then enforces. `manifest`: fetch it as a manifest from a registry.
    async fn fetch(
        &self,
        store: &ImageStore,
        digest: &Digest,
        limit: u64,
        size: Option<u64>,
        manifest: bool,
    ) -> Result<Fetched, PullError> {
        match self {
            Self::Registry(client, repo) if manifest => client
                .fetch_manifest(repo, digest)
                .await
                .map(Fetched::Bytes)
                .map_err(|source| PullError::Registry {
                    what: digest.to_string(),
                    source,
                }),
            Self::Registry(client, repo) => {
                stream_to_store(store, client, repo, digest, limit, size).await
            }
            Self::Layout(layout) => {
                let blob = layout
                    .open_blob(digest, limit)
                    .map_err(|source| PullError::Layout {
                        what: format!("{} blob {digest}", layout.name()),
                        source,
                    })?;
                let size = Some(size.unwrap_or(blob.size()));
                Ok(Fetched::Stream(blob, size))
            }
        }
    }
}

/// Streams a registry blob into the store: each chunk goes to the store's temp file (hashed and
/// size-checked there) and to the progress observer; the commit verifies digest and size again
/// and renames into place. Any failure discards the temp file.
async fn stream_to_store(
    store: &ImageStore,
    client: &RegistryClient,
    repo: &ImageRef,
    digest: &Digest,
    limit: u64,
    size: Option<u64>,
) -> Result<Fetched, PullError> {
    let mut writer = match store.blobs.begin(digest, size)? {
        Begin::Present(_) => return Ok(Fetched::Stored),
        Begin::Write(w) => w,
    };
    let progress = store.progress.as_ref().map(|o| Arc::clone(&o.0));
    if let Some(p) = &progress {
        p.start(digest, size);
    }
    let mut store_error: Option<StoreError> = None;
    let streamed = client
        .stream_blob(repo, digest, limit, &mut |chunk| {
            writer.push(chunk).map_err(|e| {
                let msg = e.to_string();
                store_error = Some(e);
                msg
            })?;
            if let Some(p) = &progress {
                p.advance(digest, chunk.len() as u64);
            }
            Ok(())
        })
        .await;
    let result = match (streamed, store_error) {
        (_, Some(e)) => Err(PullError::Store(e)),
        (Err(source), None) => Err(PullError::Registry {
            what: digest.to_string(),
            source,
        }),
        (Ok(_), None) => writer.commit().map(|_| Fetched::Stored).map_err(Into::into),
    };
    if let Some(p) = &progress {
        p.finish(digest, result.is_ok());
    }
    result
}
