//! The registry client: two lazily built HTTP clients, resolution, manifests and blobs by digest.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};
use perry_policies::{is_loopback_host, Config, Digest, ImageRef, RegistryConfig};
use sha2::{Digest as _, Sha256};

use super::credentials::{docker_config_credentials, Credentials};
use super::error::{describe_reqwest, map_oci_error, RegistryError};
use super::manifest::{resolve_in, Resolved};
use super::platform::Platform;
use super::{sha256_digest, ACCEPTED, MAX_MANIFEST_SIZE};
use crate::source::{ContentSource, SourceError, TagOrDigest};

/// The registry client the verifier (and the runtime's image store) use.
///
/// It holds two HTTP clients, each built on first use: one for the loopback registries
/// configured `insecure` (plain HTTP), one for everything else (HTTPS with the system's roots).
/// Building the HTTPS client reads and parses every root certificate on the system — most of
/// the start-up cost of a `perry-sandbox run` — so a run that talks only to a loopback mirror,
/// or to no registry at all (a digest-pinned cache hit), never pays it.
pub struct RegistryClient {
    plain: OnceLock<Result<Client, String>>,
    tls: OnceLock<Result<Client, String>>,
    plain_hosts: Vec<String>,
    registries: BTreeMap<String, RegistryConfig>,
}

/// The only root the plain-HTTP client trusts: a self-signed certificate whose key was thrown
/// away. It exists so that building that client does not load the system's roots (the HTTP
/// library loads them unless told to trust a given set); should a loopback registry redirect
/// to HTTPS, the connection fails instead of trusting anything.
pub(super) const PLAIN_HTTP_PLACEHOLDER_ROOT: &[u8] =
    include_bytes!("../../data/plain-http-placeholder-root.pem");

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registries", &self.registries.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Hosts that are plain HTTP: loopback and marked insecure. A non-loopback host marked insecure
/// (which config validation already refuses) still gets HTTPS.
pub(super) fn plain_http_hosts(registries: &BTreeMap<String, RegistryConfig>) -> Vec<String> {
    registries
        .iter()
        .filter(|(host, r)| r.insecure && is_loopback_host(host))
        .map(|(host, _)| host.clone())
        .collect()
}

impl RegistryClient {
    /// A client for the registries `config` describes (anonymous HTTPS for any other host).
    pub fn new(config: &Config) -> Self {
        Self {
            plain: OnceLock::new(),
            tls: OnceLock::new(),
            plain_hosts: plain_http_hosts(&config.registries),
            registries: config.registries.clone(),
        }
    }

    /// The HTTP client for `host` (see the type's docs), built on first use. Fails (as a
    /// transport error naming `what` was to be fetched) when it cannot be built, e.g. the HTTPS
    /// client on a host without a system trust store; never falls back to another client.
    fn client(&self, host: &str, what: &str) -> Result<&Client, RegistryError> {
        let base = || ClientConfig {
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("perry-sandbox/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        // `Client::try_from`, not `Client::new`: on error the latter builds a default client
        // instead, which trusts whatever the system has (and panics when it has nothing).
        let built = if self.plain_hosts.iter().any(|h| h == host) {
            self.plain.get_or_init(|| {
                Client::try_from(ClientConfig {
                    protocol: ClientProtocol::Http,
                    tls_certs_only: vec![Certificate {
                        encoding: CertificateEncoding::Pem,
                        data: PLAIN_HTTP_PLACEHOLDER_ROOT.to_vec(),
                    }],
                    ..base()
                })
                .map_err(|e| describe_reqwest(&e))
            })
        } else {
            self.tls.get_or_init(|| {
                Client::try_from(ClientConfig {
                    protocol: ClientProtocol::Https,
                    ..base()
                })
                .map_err(|e| describe_reqwest(&e))
            })
        };
        built.as_ref().map_err(|e| RegistryError::Transport {
            host: host.to_string(),
            what: what.to_string(),
            reason: format!("cannot set up the HTTP client: {e}"),
        })
    }

    fn registry_config(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.get(host).or_else(|| {
            if host == "docker.io" {
                ["index.docker.io", "registry-1.docker.io"]
                    .iter()
                    .find_map(|h| self.registries.get(*h))
            } else {
                None
            }
        })
    }

    fn credentials(&self, host: &str) -> Result<Credentials, RegistryError> {
        let Some(cfg) = self.registry_config(host) else {
            return Ok(Credentials::Anonymous);
        };
        let err = |reason: String| RegistryError::Credentials {
            host: host.into(),
            reason,
        };
        if let Some(token) = &cfg.token {
            return Ok(Credentials::Bearer(token.clone()));
        }
        match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => {
                return Ok(Credentials::Basic {
                    username: u.clone(),
                    password: p.clone(),
                })
            }
            (Some(_), None) => return Err(err("`username` is set but `password` is not".into())),
            (None, Some(_)) => return Err(err("`password` is set but `username` is not".into())),
            (None, None) => {}
        }
        if let Some(path) = &cfg.docker_config {
            return docker_config_credentials(path, host).map_err(err);
        }
        Ok(Credentials::Anonymous)
    }

    fn reference(image: &ImageRef, tag_or_digest: TagOrDigest<'_>) -> Reference {
        match tag_or_digest {
            TagOrDigest::Tag(t) => Reference::with_tag(
                image.registry().to_string(),
                image.repository().to_string(),
                t.to_string(),
            ),
            TagOrDigest::Digest(d) => Reference::with_digest(
                image.registry().to_string(),
                image.repository().to_string(),
                d.to_string(),
            ),
        }
    }

    /// GET a manifest by tag or digest; returns the bytes and the digest computed from them.
    pub(crate) async fn get_manifest(
        &self,
        image: &ImageRef,
        at: TagOrDigest<'_>,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let host = image.registry();
        let what = match at {
            TagOrDigest::Tag(t) => format!("manifest {}/{}:{t}", host, image.repository()),
            TagOrDigest::Digest(d) => format!("manifest {}/{}@{d}", host, image.repository()),
        };
        let auth = self.credentials(host)?.to_auth();
        let reference = Self::reference(image, at);
        let (body, _) = self
            .client(host, &what)?
            .pull_manifest_raw(&reference, &auth, ACCEPTED)
            .await
            .map_err(|e| map_oci_error(e, host, &what))?;
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::TooLarge {
                host: host.into(),
                what,
                limit: MAX_MANIFEST_SIZE as u64,
            });
        }
        let actual = sha256_digest(&body);
        if let TagOrDigest::Digest(expected) = at {
            if &actual != expected {
                return Err(RegistryError::mismatch(
                    host,
                    &what,
                    expected.to_string(),
                    actual.to_string(),
                ));
            }
        }
        Ok((body.to_vec(), actual))
    }

    /// Fetches a manifest (or index) by digest, refusing bytes that do not hash to `digest`.
    pub async fn fetch_manifest(
        &self,
        repo: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        Ok(self
            .get_manifest(repo, TagOrDigest::Digest(digest))
            .await?
            .0)
    }

    /// Fetches the manifest a tag points at *now*, with the digest computed from its bytes.
    /// Used for signature tags (`sha256-<hex>`, `sha256-<hex>.sig`); images go through
    /// [`RegistryClient::resolve`].
    pub async fn fetch_tag(
        &self,
        repo: &ImageRef,
        tag: &str,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        self.get_manifest(repo, TagOrDigest::Tag(tag)).await
    }

    /// Fetches a blob by digest into memory, refusing more than `limit` bytes and content that
    /// does not hash to `digest`.
    pub async fn fetch_blob(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        self.stream_blob(repo, digest, limit, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Streams a blob by digest to `sink` chunk by chunk (so a large layer never sits in
    /// memory), refusing more than `limit` bytes. The content is hashed on the way: when the
    /// stream ends with bytes that do not hash to `digest`, the result is an error and the sink
    /// has seen bytes it must discard (the image store's writer does). A sink error stops the
    /// download. Returns the number of bytes streamed.
    pub async fn stream_blob(
        &self,
        repo: &ImageRef,
        digest: &Digest,
        limit: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), String> + Send),
    ) -> Result<u64, RegistryError> {
        let host = repo.registry();
        let what = format!("blob {}/{}@{digest}", host, repo.repository());
        let auth = self.credentials(host)?.to_auth();
        let reference = Self::reference(repo, TagOrDigest::Digest(digest));
        self.client(host, &what)?
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        let too_large = || RegistryError::TooLarge {
            host: host.into(),
            what: what.clone(),
            limit,
        };
        let mut stream = self
            .client(host, &what)?
            .pull_blob_stream(&reference, digest.as_str())
            .await
            .map_err(|e| map_oci_error(e, host, &what))?;
        if stream.content_length.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut streamed: u64 = 0;
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                // oci-client checks the digest at the end of the stream and reports a mismatch
                // as an I/O error wrapping its DigestError.
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
                {
                    Some(oci_client::errors::DigestError::VerificationError {
                        expected,
                        actual,
                    }) => RegistryError::mismatch(host, &what, expected.clone(), actual.clone()),
                    _ => RegistryError::Transport {
                        host: host.into(),
                        what: what.clone(),
                        reason: e.to_string(),
                    },
                }
            })?;
            if streamed + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            streamed += chunk.len() as u64;
            hasher.update(&chunk);
            sink(&chunk).map_err(|reason| RegistryError::Transport {
                host: host.into(),
                what: what.clone(),
                reason: format!("storing: {reason}"),
            })?;
        }
        let actual = Digest::from_sha256(&hasher.finalize().into());
        if &actual != digest {
            return Err(RegistryError::mismatch(
                host,
                &what,
                digest.to_string(),
                actual.to_string(),
            ));
        }
        Ok(streamed)
    }

    /// The referrers index of `digest` as JSON, from the OCI 1.1 referrers API (oci-client falls
    /// back to the `sha256-<hex>` tag schema when the registry answers 404). A registry without
    /// either yields an empty index.
    pub(crate) async fn referrers_index(
        &self,
        image: &ImageRef,
        digest: &Digest,
        artifact_type: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let host = image.registry();
        let what = format!("referrers of {}/{}@{digest}", host, image.repository());
        let auth = self.credentials(host)?.to_auth();
        let reference = Self::reference(image, TagOrDigest::Digest(digest));
        self.client(host, &what)?
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        match self
            .client(host, &what)?
            .pull_referrers(&reference, Some(artifact_type))
            .await
        {
            Ok(index) => serde_json::to_vec(&index).map_err(|e| RegistryError::BadManifest {
                host: host.into(),
                what,
                reason: e.to_string(),
            }),
            // The tag schema fallback found something that is not an index: no referrers there.
            Err(OciDistributionError::SpecViolationError(_)) => Err(RegistryError::NotFound {
                host: host.into(),
                what,
            }),
            Err(e) => Err(map_oci_error(e, host, &what)),
        }
    }

    /// Resolves `image` to the digest of the bytes the registry serves for it (computed here,
    /// compared with the reference's own digest when it has one). For a multi-arch index, picks
    /// the `platform` manifest and pins it by the digest the index names.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<Resolved, RegistryError> {
        let at = match (image.digest(), image.tag()) {
            (Some(d), _) => TagOrDigest::Digest(d),
            (None, Some(t)) => TagOrDigest::Tag(t),
            (None, None) => TagOrDigest::Tag(perry_policies::reference::DEFAULT_TAG),
        };
        resolve_in(&RegistrySource::new(self, image), image, at, platform).await
    }
}

impl SourceError for RegistryError {
    fn is_not_found(&self) -> bool {
        RegistryError::is_not_found(self)
    }
}

/// One repository of one registry, as a [`ContentSource`].
#[derive(Clone, Copy, Debug)]
pub struct RegistrySource<'a> {
    client: &'a RegistryClient,
    image: &'a ImageRef,
}

impl<'a> RegistrySource<'a> {
    /// The repository of `image` through `client`.
    pub fn new(client: &'a RegistryClient, image: &'a ImageRef) -> Self {
        Self { client, image }
    }
}

impl ContentSource for RegistrySource<'_> {
    type Error = RegistryError;

    fn location(&self) -> String {
        format!("{}/{}", self.image.registry(), self.image.repository())
    }

    fn has_referrers_api(&self) -> bool {
        true
    }

    async fn manifest(&self, at: TagOrDigest<'_>) -> Result<(Vec<u8>, Digest), RegistryError> {
        self.client.get_manifest(self.image, at).await
    }

    async fn blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, RegistryError> {
        self.client.fetch_blob(self.image, digest, limit).await
    }

    async fn referrers(
        &self,
        digest: &Digest,
        artifact_type: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        match self
            .client
            .referrers_index(self.image, digest, artifact_type)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn malformed(&self, what: String, reason: String) -> RegistryError {
        RegistryError::BadManifest {
            host: self.image.registry().into(),
            what,
            reason,
        }
    }

    fn no_platform(&self, what: String, platform: String, available: String) -> RegistryError {
        RegistryError::NoPlatform {
            what,
            platform,
            available,
        }
    }
}
