//! Resolution shared by registries and OCI layouts: top-level manifest, platform choice, checks.

use perry_policies::{Digest, ImageRef};
use serde::Deserialize;

use super::platform::{IndexPlatform, Platform};
use super::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::source::{ContentSource, TagOrDigest};

/// What [`RegistryClient::resolve`](super::RegistryClient::resolve) found: the digest of the bytes it was served (computed here)
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
pub(super) enum ParsedManifest {
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
pub(super) struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
    config: Option<serde_json::Value>,
    layers: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IndexEntry {
    digest: String,
    size: u64,
    platform: Option<IndexPlatform>,
}

impl ParsedManifest {
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, String> {
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
