//! Registry access: resolve a reference to a digest we computed ourselves, fetch manifests and
//! blobs by digest, and never believe a registry about what its bytes hash to.
//!
//! Transport, token handshakes and retries come from `oci-client`; every byte that comes back is
//! hashed here and compared with the digest that was asked for (a `Docker-Content-Digest` header
//! is never trusted on its own). Plain HTTP is used only for loopback hosts that the
//! configuration marks `insecure`; everything else is HTTPS. Credentials come from the
//! `[registries."host"]` section (inline `username`/`password` or `token`, or a docker
//! `config.json` it points to), live in [`Secret`]s and are never logged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use perry_policies::{is_loopback_host, Config, Digest, ImageRef, RegistryConfig, Secret};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::source::{ContentSource, RegistrySource, TagOrDigest};

/// The largest manifest or index we accept (the limit CNCF distribution enforces on push).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type we ask for (schema 1 is refused: it cannot be pinned by content).
const ACCEPTED: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The SHA-256 digest of `bytes`, computed here; the only way this module names content.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    Digest::from_sha256(&Sha256::digest(bytes).into())
}

/// An OS/architecture[/variant] triple, used to pick one manifest out of a multi-arch index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … when the architecture has variants.
    pub variant: Option<String>,
}

impl Default for Platform {
    /// `linux/amd64`, what perry-sandbox runs on.
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Why a `--platform` value is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{0}`: expected os/architecture[/variant], e.g. linux/amd64")]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(PlatformError(s.into()));
        }
        Ok(Self {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl Platform {
    fn matches(&self, p: &IndexPlatform) -> bool {
        if p.os != self.os || p.architecture != self.architecture {
            return false;
        }
        match (&self.variant, &p.variant) {
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.architecture == "arm64" && want == "v8",
            (None, _) => true,
        }
    }
}

/// What [`RegistryClient::resolve`] found: the digest of the bytes it was served (computed here)
/// and, for a multi-arch index, the platform manifest it chose.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The reference as it was asked for (normalised, tag kept for messages).
    pub reference: ImageRef,
    /// SHA-256 of the top-level manifest or index bytes, computed here.
    pub digest: Digest,
    /// The top-level media type (`application/vnd.oci.image.index.v1+json`, …).
    pub media_type: String,
    /// When `digest` is an index: the digest of the platform manifest chosen from it (also
    /// computed here, and equal to the digest the index names).
    pub platform_digest: Option<Digest>,
    /// The platform image manifest's bytes (the top-level bytes when there is no index).
    pub manifest: Vec<u8>,
}

impl Resolved {
    /// The digest whose manifest describes the layers that will run: the platform manifest for
    /// an index, the top-level digest otherwise.
    pub fn image_manifest_digest(&self) -> &Digest {
        self.platform_digest.as_ref().unwrap_or(&self.digest)
    }
}

/// A registry interaction that failed. Every message names the registry host and what was being
/// fetched; none contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or the connection failed.
    #[error("registry {host}: cannot fetch {what}: {reason}")]
    Transport {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The underlying error.
        reason: String,
    },
    /// The registry says the thing does not exist.
    #[error("registry {host}: {what} not found")]
    NotFound {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
    },
    /// The registry refused our credentials (or wants some).
    #[error("registry {host}: not authorized to fetch {what}{hint}")]
    Unauthorized {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// A hint about configuring credentials, or empty.
        hint: String,
    },
    /// Any other refusal by the registry.
    #[error("registry {host}: fetching {what} failed: {reason}")]
    Refused {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The status and message the registry sent.
        reason: String,
    },
    /// The bytes served do not hash to the digest that was asked for (or that the registry
    /// announced): the registry is broken or hostile.
    #[error("registry {host}: {what}: content digest mismatch: {mismatch}")]
    DigestMismatch {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The digest expected and the one the bytes have (boxed: keeps this error, which
        /// callers wrap in their own, small).
        mismatch: Box<Mismatch>,
    },
    /// The content is larger than we accept.
    #[error("registry {host}: {what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The content is not a manifest (or index) we understand.
    #[error("registry {host}: {what}: {reason}")]
    BadManifest {
        /// `host[:port]`.
        host: String,
        /// What was being fetched.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A multi-arch index has no manifest for the requested platform.
    #[error("{what} has no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        /// The index, as `index host/repo@digest`.
        what: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the index offers, comma-separated.
        available: String,
    },
    /// Credentials for the host are configured but unusable.
    #[error("registry {host}: credentials: {reason}")]
    Credentials {
        /// `host[:port]`.
        host: String,
        /// What is wrong (never the secret itself).
        reason: String,
    },
}

/// The two digests of a [`RegistryError::DigestMismatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The digest asked for or announced.
    pub expected: String,
    /// What the bytes served hash to.
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {}, the bytes served hash to {}",
            self.expected, self.actual
        )
    }
}

impl RegistryError {
    fn mismatch(host: &str, what: &str, expected: String, actual: String) -> Self {
        Self::DigestMismatch {
            host: host.into(),
            what: what.into(),
            mismatch: Box::new(Mismatch { expected, actual }),
        }
    }

    /// True when the registry answered that the thing does not exist (used by discovery: a
    /// missing signature tag is "nothing here", not a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Credentials for one registry, resolved from configuration. `Debug` never shows secrets.
#[derive(Clone, Debug)]
enum Credentials {
    Anonymous,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

impl Credentials {
    /// The form oci-client wants. This copy lives only for one request; oci-client keeps its own
    /// for token refresh.
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.expose().to_string())
            }
            Self::Bearer(t) => RegistryAuth::Bearer(t.expose().to_string()),
        }
    }
}

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
const PLAIN_HTTP_PLACEHOLDER_ROOT: &[u8] =
    include_bytes!("../data/plain-http-placeholder-root.pem");

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registries", &self.registries.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Hosts that are plain HTTP: loopback and marked insecure. A non-loopback host marked insecure
/// (which config validation already refuses) still gets HTTPS.
fn plain_http_hosts(registries: &BTreeMap<String, RegistryConfig>) -> Vec<String> {
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

/// Resolution, shared by registries and OCI layouts: fetch the top-level manifest at `at` from
/// `src` (hashed by the source), and for a multi-platform index pick the `platform` manifest,
/// fetch it by the digest the index names, and check its size and kind (nested indexes are
/// refused). `reference` is recorded in the result.
pub(crate) async fn resolve_in<S: ContentSource>(
    src: &S,
    reference: &ImageRef,
    at: TagOrDigest<'_>,
    platform: &Platform,
) -> Result<Resolved, S::Error> {
    let (top, digest) = src.manifest(at).await?;
    let location = src.location();
    let what = format!("{location}@{digest}");
    let parsed =
        ParsedManifest::parse(&top).map_err(|reason| src.malformed(what.clone(), reason))?;
    match parsed {
        ParsedManifest::Image { media_type } => Ok(Resolved {
            reference: reference.clone(),
            digest,
            media_type,
            platform_digest: None,
            manifest: top,
        }),
        ParsedManifest::Index {
            media_type,
            manifests,
        } => {
            let chosen = manifests
                .iter()
                .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
                .ok_or_else(|| {
                    src.no_platform(
                        format!("index {what}"),
                        platform.to_string(),
                        manifests
                            .iter()
                            .filter_map(|m| m.platform.as_ref().map(IndexPlatform::describe))
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                })?;
            let pdigest = Digest::parse(&chosen.digest).map_err(|e| {
                src.malformed(
                    format!("index {what}"),
                    format!("entry for {platform}: {e}"),
                )
            })?;
            let (manifest, _) = src.manifest(TagOrDigest::Digest(&pdigest)).await?;
            let pwhat = format!("manifest {location}@{pdigest}");
            if chosen.size != manifest.len() as u64 {
                return Err(src.malformed(
                    pwhat,
                    format!(
                        "index says {} bytes, the source has {}",
                        chosen.size,
                        manifest.len()
                    ),
                ));
            }
            match ParsedManifest::parse(&manifest) {
                Ok(ParsedManifest::Image { .. }) => {}
                Ok(ParsedManifest::Index { .. }) => {
                    return Err(src.malformed(
                        pwhat,
                        "platform entry is itself an index (nested indexes are refused)".into(),
                    ))
                }
                Err(reason) => return Err(src.malformed(pwhat, reason)),
            }
            Ok(Resolved {
                reference: reference.clone(),
                digest,
                media_type,
                platform_digest: Some(pdigest),
                manifest,
            })
        }
    }
}

/// The parts of a manifest or index that resolution needs.
enum ParsedManifest {
    Image {
        media_type: String,
    },
    Index {
        media_type: String,
        manifests: Vec<IndexEntry>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
    config: Option<serde_json::Value>,
    layers: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    size: u64,
    platform: Option<IndexPlatform>,
}

#[derive(Deserialize)]
struct IndexPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl IndexPlatform {
    fn describe(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

impl ParsedManifest {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
        if raw.schema_version != Some(2) {
            return Err(format!(
                "unsupported schemaVersion {:?} (only 2)",
                raw.schema_version
            ));
        }
        let is_index = match raw.media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => return Err(format!("unsupported manifest media type `{other}`")),
            None => raw.manifests.is_some(),
        };
        if is_index {
            let manifests = raw
                .manifests
                .ok_or_else(|| "index without `manifests`".to_string())?;
            Ok(Self::Index {
                media_type: raw.media_type.unwrap_or_else(|| OCI_INDEX.into()),
                manifests,
            })
        } else {
            if raw.config.is_none() || raw.layers.is_none() {
                return Err("image manifest without `config` or `layers`".into());
            }
            Ok(Self::Image {
                media_type: raw.media_type.unwrap_or_else(|| OCI_MANIFEST.into()),
            })
        }
    }
}

fn map_oci_error(e: OciDistributionError, host: &str, what: &str) -> RegistryError {
    let host = host.to_string();
    let what = what.to_string();
    match e {
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => RegistryError::mismatch(&host, &what, expected, actual),
        OciDistributionError::ImageManifestNotFoundError(_) => {
            RegistryError::NotFound { host, what }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            });
            let unauthorized = envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            if not_found {
                RegistryError::NotFound { host, what }
            } else if unauthorized {
                RegistryError::Unauthorized {
                    hint: auth_hint(&host),
                    host,
                    what,
                }
            } else {
                let reason = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                RegistryError::Refused { host, what, reason }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            RegistryError::NotFound { host, what }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
            hint: auth_hint(&host),
            host,
            what,
        },
        OciDistributionError::ServerError { code, message, .. } => RegistryError::Refused {
            host,
            what,
            reason: format!("HTTP {code}: {}", truncate(&message, 200)),
        },
        OciDistributionError::RequestError(e) => RegistryError::Transport {
            host,
            what,
            reason: describe_reqwest(&e),
        },
        other => RegistryError::Refused {
            host,
            what,
            reason: truncate(&other.to_string(), 300),
        },
    }
}

fn auth_hint(host: &str) -> String {
    format!(" (configure credentials under [registries.\"{host}\"])")
}

fn describe_reqwest(e: &(dyn std::error::Error + 'static)) -> String {
    // Walk the source chain: reqwest's top-level message alone ("error sending request") hides
    // the useful part (connection refused, TLS failure, timeout).
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        src = s.source();
    }
    truncate(&parts.join(": "), 300)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// The `auths` section of a docker `config.json`.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, serde_json::Value>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<Secret>,
    username: Option<String>,
    password: Option<Secret>,
    registrytoken: Option<Secret>,
}

/// Reads credentials for `host` from a docker `config.json`. The file must not be readable by
/// group or others (it holds secrets). Errors never contain a secret.
fn docker_config_credentials(path: &Path, host: &str) -> Result<Credentials, String> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown}: holds secrets but has mode {mode:o}; chmod 600 it"
            ));
        }
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?);
    let cfg: DockerConfig = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{shown}: line {} column {}: not a docker config.json ({})",
            e.line(),
            e.column(),
            e.classify_str()
        )
    })?;
    let candidates: Vec<String> = if host == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
            format!("https://{host}/v1/"),
            format!("https://{host}/v2/"),
        ]
    };
    let Some((key, entry)) = candidates
        .iter()
        .find_map(|k| cfg.auths.get(k).map(|e| (k, e)))
    else {
        if cfg.cred_helpers.contains_key(host) || cfg.creds_store.is_some() {
            return Err(format!(
                "{shown}: credentials for {host} are in a credential helper, which perry-sandbox does not run; put them in [registries.\"{host}\"]"
            ));
        }
        return Ok(Credentials::Anonymous);
    };
    if let Some(token) = &entry.registrytoken {
        return Ok(Credentials::Bearer(token.clone()));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        });
    }
    if let Some(auth) = &entry.auth {
        use base64::Engine as _;
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(auth.expose().trim())
                .map_err(|_| format!("{shown}: auths.\"{key}\".auth is not base64"))?,
        );
        let text = std::str::from_utf8(&decoded)
            .map_err(|_| format!("{shown}: auths.\"{key}\".auth is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| format!("{shown}: auths.\"{key}\".auth is not `user:password`"))?;
        return Ok(Credentials::Basic {
            username: u.to_string(),
            password: Secret::new(p.to_string()),
        });
    }
    Ok(Credentials::Anonymous)
}

/// Classifies a serde_json error without echoing input (which may contain a secret).
trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected structure",
            serde_json::error::Category::Eof => "unexpected end of file",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_and_display() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(Platform::default().to_string(), "linux/amd64");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "Linux/amd64", ""] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_matching() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm8: Platform = "linux/arm64/v8".parse().unwrap();
        let ip = |os: &str, a: &str, v: Option<&str>| IndexPlatform {
            os: os.into(),
            architecture: a.into(),
            variant: v.map(Into::into),
        };
        assert!(amd.matches(&ip("linux", "amd64", None)));
        assert!(!amd.matches(&ip("linux", "arm64", None)));
        assert!(!amd.matches(&ip("windows", "amd64", None)));
        assert!(arm8.matches(&ip("linux", "arm64", None)));
        assert!(!arm8.matches(&ip("linux", "arm64", Some("v7"))));
    }

    #[test]
    fn manifest_sniffing() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            ParsedManifest::parse(idx),
            Ok(ParsedManifest::Index { .. })
        ));
        let img = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert!(matches!(
            ParsedManifest::parse(img),
            Ok(ParsedManifest::Image { .. })
        ));
        assert!(ParsedManifest::parse(br#"{"schemaVersion":1}"#).is_err());
        assert!(ParsedManifest::parse(b"\xff").is_err());
        assert!(ParsedManifest::parse(br#"{"schemaVersion":2,"mediaType":"text/html"}"#).is_err());
    }

    #[test]
    fn only_loopback_insecure_hosts_get_plain_http() {
        let mut regs = BTreeMap::new();
        regs.insert(
            "127.0.0.1:5000".to_string(),
            RegistryConfig {
                insecure: true,
                ..Default::default()
            },
        );
        regs.insert(
            "registry.example.com".to_string(),
            RegistryConfig {
                insecure: true,
                ..Default::default()
            },
        );
        regs.insert("localhost:6000".to_string(), RegistryConfig::default());
        assert_eq!(plain_http_hosts(&regs), vec!["127.0.0.1:5000".to_string()]);
    }

    #[test]
    fn docker_config_auth_forms() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut f = std::fs::File::create(&path).unwrap();
        // "alice:s3cret" base64
        write!(
            f,
            r#"{{"auths":{{"reg.example:5000":{{"auth":"YWxpY2U6czNjcmV0"}},"tok.example":{{"registrytoken":"abc"}}}}}}"#
        )
        .unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        match docker_config_credentials(&path, "reg.example:5000").unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "alice");
                assert_eq!(password.expose(), "s3cret");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            docker_config_credentials(&path, "tok.example").unwrap(),
            Credentials::Bearer(_)
        ));
        assert!(matches!(
            docker_config_credentials(&path, "other.example").unwrap(),
            Credentials::Anonymous
        ));
        // Readable by others: refused, and the message names the file but not the secret.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = docker_config_credentials(&path, "reg.example:5000").unwrap_err();
        assert!(e.contains("config.json") && e.contains("644"), "{e}");
        assert!(!e.contains("s3cret") && !e.contains("YWxp"), "{e}");
    }

    #[test]
    fn error_stays_small_enough_to_wrap() {
        // Callers (VerifyError, the runtime's PullError) embed it; clippy's result_large_err
        // fires at 128 bytes.
        assert!(std::mem::size_of::<RegistryError>() <= 80);
        let e = RegistryError::mismatch("h:1", "manifest x", "sha256:a".into(), "sha256:b".into());
        assert_eq!(
            e.to_string(),
            "registry h:1: manifest x: content digest mismatch: expected sha256:a, the bytes served hash to sha256:b"
        );
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
