//! OCI image manifests and image configs: the two small JSON documents that say which layer blobs
//! make up an image and what each layer's *uncompressed* digest (`diff_id`) must be.
//!
//! Parsing is strict where it matters for safety (schema version, digests, known layer media
//! types, as many `diff_ids` as layers) and lenient elsewhere (unknown fields are ignored, as the
//! OCI spec requires of consumers). Errors name the JSON field path, line and column.

use std::fmt;

use perry_policies::Digest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Largest manifest or config we read into memory (registries commonly cap manifests at 4 MiB).
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image index (multi-platform) media type: not a manifest; resolve the platform first.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list media type: not a manifest; resolve the platform first.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer blob is compressed, from its media type. Exists so the unpacker picks the
/// decompressor from the (verified) manifest, never by sniffing the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerMediaType {
    /// An uncompressed tar.
    Tar,
    /// gzip-compressed tar.
    TarGzip,
    /// zstd-compressed tar.
    TarZstd,
}

impl LayerMediaType {
    /// Maps an OCI or Docker v2 layer media type; `None` for anything else (including
    /// non-distributable "foreign" layers, which we cannot fetch by digest from the registry).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Self::Tar,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Self::TarGzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Self::TarZstd,
            _ => return None,
        })
    }

    /// The OCI media type string for this kind of layer.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::Tar => "application/vnd.oci.image.layer.v1.tar",
            Self::TarGzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::TarZstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

impl fmt::Display for LayerMediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.oci_media_type())
    }
}

/// Why a manifest or config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON, or a field has the wrong type or an invalid digest.
    #[error("{doc}: at `{path}` (line {line}, column {column}): {message}")]
    Json {
        /// "image manifest" or "image config".
        doc: &'static str,
        /// The JSON field path (`layers[2].digest`).
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong.
        message: String,
    },
    /// `schemaVersion` is not 2.
    #[error("image manifest: `schemaVersion` is {0}, only 2 is supported")]
    SchemaVersion(u32),
    /// The document is an index / manifest list, not a single-platform manifest.
    #[error(
        "image manifest: `{0}` is an index of manifests; resolve the platform's manifest first"
    )]
    IsIndex(String),
    /// The manifest's `mediaType` is not an image manifest.
    #[error("image manifest: `mediaType` `{0}` is not an OCI or Docker v2 image manifest")]
    MediaType(String),
    /// A layer's media type is not one we can unpack.
    #[error("image manifest: `layers[{index}].mediaType` `{media_type}` is not a supported layer type (tar, tar+gzip, tar+zstd)")]
    LayerMediaType {
        /// Which layer.
        index: usize,
        /// Its media type.
        media_type: String,
    },
    /// The config's `rootfs.type` is not `layers`.
    #[error("image config: `rootfs.type` is `{0}`, expected `layers`")]
    RootfsType(String),
    /// The config lists a different number of diff_ids than the manifest has layers.
    #[error(
        "image config lists {diff_ids} `rootfs.diff_ids` but the manifest has {layers} layers"
    )]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// The config blob is not the one the manifest names.
    #[error(
        "image config digest {actual} does not match the manifest's `config.digest` {expected}"
    )]
    ConfigDigest {
        /// From the manifest.
        expected: Digest,
        /// Of the bytes given.
        actual: Digest,
    },
}

fn parse_json<T: DeserializeOwned>(doc: &'static str, bytes: &[u8]) -> Result<T, ManifestError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ManifestError::Json {
            doc,
            path,
            line: inner.line(),
            column: inner.column(),
            message: inner.to_string(),
        }
    })
}

fn de_digest<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
    let s = String::deserialize(d)?;
    Digest::parse(&s).map_err(serde::de::Error::custom)
}

fn de_digests<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Digest>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| Digest::parse(s).map_err(serde::de::Error::custom))
        .collect()
}

/// An OCI content descriptor: which blob, how big, what kind.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced blob.
    pub media_type: String,
    /// Its digest (`sha256:` only).
    #[serde(deserialize_with = "de_digest")]
    pub digest: Digest,
    /// Its size in bytes; the store refuses a blob of any other size.
    pub size: u64,
}

/// A single-platform image manifest (OCI or Docker schema 2). Exists so the puller knows which
/// blobs to fetch and the unpacker knows their order and compression.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type, when it states one.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, base first.
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
}

impl ImageManifest {
    /// Parses and validates manifest bytes (already verified against the manifest digest).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let probe: Probe = parse_json("image manifest", bytes)?;
        if let Some(mt) = &probe.media_type {
            if mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST {
                return Err(ManifestError::IsIndex(mt.clone()));
            }
            if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
                return Err(ManifestError::MediaType(mt.clone()));
            }
        } else if probe.manifests.is_some() {
            return Err(ManifestError::IsIndex("(no mediaType)".into()));
        }
        let m: ImageManifest = parse_json("image manifest", bytes)?;
        if m.schema_version != 2 {
            return Err(ManifestError::SchemaVersion(m.schema_version));
        }
        for (index, layer) in m.layers.iter().enumerate() {
            if LayerMediaType::from_media_type(&layer.media_type).is_none() {
                return Err(ManifestError::LayerMediaType {
                    index,
                    media_type: layer.media_type.clone(),
                });
            }
        }
        Ok(m)
    }

    /// The layers' compression kinds, in order (validated by [`parse`](Self::parse)).
    pub fn layer_media_types(&self) -> Vec<LayerMediaType> {
        self.layers
            .iter()
            .filter_map(|l| LayerMediaType::from_media_type(&l.media_type))
            .collect()
    }
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// SHA-256 of each layer's uncompressed tar, base first.
    #[serde(deserialize_with = "de_digests")]
    pub diff_ids: Vec<Digest>,
}

/// The execution defaults of an image (`config` in the image config), for the runner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    /// `User` (`uid`, `uid:gid`, or a name).
    #[serde(default)]
    pub user: Option<String>,
    /// `Env` (`KEY=value`).
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// An image config: the layers' diff_ids (what the unpacker checks) and execution defaults.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture (`amd64`).
    #[serde(default)]
    pub architecture: Option<String>,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: Option<String>,
    /// Execution defaults.
    #[serde(default)]
    pub config: Option<ExecConfig>,
    /// The layer chain.
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// Parses and validates config bytes (already verified against `config.digest`).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let c: ImageConfig = parse_json("image config", bytes)?;
        if c.rootfs.kind != "layers" {
            return Err(ManifestError::RootfsType(c.rootfs.kind.clone()));
        }
        Ok(c)
    }
}
