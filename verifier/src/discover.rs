//! Signature discovery: find every Sigstore signature attached to one image digest.
//!
//! Three places are searched, in this order, and every one is recorded in
//! [`Discovery::looked_in`] so a refusal can say where it looked:
//! 1. the OCI 1.1 referrers API (`GET /v2/<repo>/referrers/<digest>`), keeping artifacts of type
//!    `application/vnd.dev.sigstore.bundle.v0.3+json`;
//! 2. the referrers tag schema fallback: an OCI index at tag `sha256-<hex>` (registries without
//!    the API, such as CNCF distribution 2.8);
//! 3. the legacy cosign layout: an image manifest at tag `sha256-<hex>.sig` whose layers are
//!    simple-signing payloads carrying the signature, certificate, chain and Rekor bundle in
//!    annotations.
//!
//! The same search runs over a registry repository and over an OCI image layout (through
//! [`ContentSource`]); a layout has no referrers API, so only 2 and 3 apply there, with the
//! tags being `org.opencontainers.image.ref.name` annotations of its `index.json`.
//!
//! Discovery proves nothing: it only collects candidates. Every byte it returns was fetched by
//! digest and hashed (by the [`ContentSource`]), but whether a signature is valid, by whom, and
//! over which digest is the verifier's job.

use std::fmt;

use perry_policies::{Digest, ImageRef};
use serde::Deserialize;

use crate::registry::RegistrySource;
use crate::registry::{RegistryClient, RegistryError};
use crate::source::{ContentSource, SourceError, TagOrDigest};

/// The artifact type (and layer media type) of a Sigstore bundle attached as an OCI referrer.
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The layer media type of a legacy cosign simple-signing payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Legacy cosign annotation: base64 signature over the payload.
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// Legacy cosign annotation: PEM signing certificate.
pub const ANNOTATION_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// Legacy cosign annotation: PEM chain above the certificate.
pub const ANNOTATION_CHAIN: &str = "dev.sigstore.cosign/chain";
/// Legacy cosign annotation: Rekor bundle (`SignedEntryTimestamp` + `Payload`) JSON.
pub const ANNOTATION_BUNDLE: &str = "dev.sigstore.cosign/bundle";

/// The largest bundle or payload blob we download.
pub const MAX_SIGNATURE_BLOB: u64 = 2 * 1024 * 1024;
/// The most signature artifacts examined per layout (a hostile registry could list thousands).
pub const MAX_CANDIDATES: usize = 32;

/// Where a signature was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureLayout {
    /// Listed by the OCI 1.1 referrers API.
    Referrers,
    /// Listed in the referrers tag schema index (`sha256-<hex>`).
    ReferrersTag,
    /// A legacy cosign `sha256-<hex>.sig` manifest.
    LegacySig,
    /// A Sigstore bundle given explicitly (`--bundle FILE`), not found in the image source.
    Detached,
}

impl fmt::Display for SignatureLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Referrers => "referrers",
            Self::ReferrersTag => "referrers-tag",
            Self::LegacySig => "legacy-sig",
            Self::Detached => "detached-bundle",
        })
    }
}

/// One candidate signature, unverified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FoundSignature {
    /// A Sigstore bundle (JSON) attached as an OCI artifact.
    Bundle {
        /// Referrers API or referrers tag.
        layout: SignatureLayout,
        /// The digest the artifact says it is attached to (its manifest's `subject`; the digest
        /// asked about when it has none). A claim by whoever pushed it, not proof: the verifier
        /// must check what the signed statement names.
        signed_digest: Digest,
        /// The bundle as served (hashed against its descriptor).
        bundle_json: Vec<u8>,
    },
    /// A legacy cosign signature (one layer of a `.sig` manifest).
    Legacy {
        /// The digest the `.sig` tag names. A claim, not proof: the verifier must check the
        /// payload's `docker-manifest-digest`.
        signed_digest: Digest,
        /// The simple-signing payload bytes (what the signature is over).
        payload: Vec<u8>,
        /// `dev.cosignproject.cosign/signature`.
        signature_b64: String,
        /// `dev.sigstore.cosign/certificate`, PEM.
        certificate_pem: Option<String>,
        /// `dev.sigstore.cosign/chain`, PEM.
        chain_pem: Option<String>,
        /// `dev.sigstore.cosign/bundle`, the Rekor SET bundle JSON.
        rekor_bundle_json: Option<String>,
    },
}

impl FoundSignature {
    /// The layout the signature was found in.
    pub fn layout(&self) -> SignatureLayout {
        match self {
            Self::Bundle { layout, .. } => *layout,
            Self::Legacy { .. } => SignatureLayout::LegacySig,
        }
    }

    /// The digest the signature claims to be attached to.
    pub fn signed_digest(&self) -> &Digest {
        match self {
            Self::Bundle { signed_digest, .. } | Self::Legacy { signed_digest, .. } => {
                signed_digest
            }
        }
    }
}

/// Everything discovery found, and every place it looked (for "no signature found (looked in:
/// …)").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Candidates in search order: referrers, referrers tag, legacy.
    pub found: Vec<FoundSignature>,
    /// Human-readable descriptions of each place searched, with what was there.
    pub looked_in: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    subject: Option<Descriptor>,
}

fn is_bundle_type(t: Option<&str>) -> bool {
    t.is_some_and(|t| t.starts_with("application/vnd.dev.sigstore.bundle"))
}

/// Searches the three layouts for signatures attached to `digest` in `image`'s repository.
/// Registry failures other than "not found" are errors (fail closed); a missing tag or an
/// unsupported referrers API just means nothing is there.
pub async fn discover(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Discovery, RegistryError> {
    discover_in(&RegistrySource::new(client, image), digest).await
}

/// [`discover`] over any [`ContentSource`] (a registry repository or an OCI layout).
pub async fn discover_in<S: ContentSource>(
    src: &S,
    digest: &Digest,
) -> Result<Discovery, S::Error> {
    let mut out = Discovery::default();
    let repo = src.location();
    let tag = format!("sha256-{}", digest.hex());

    // 1 + 2. The referrers API (oci-client falls back to the tag schema itself on a 404) and the
    // tag index fetched directly, so each candidate can be labelled with where it came from.
    let api = if src.has_referrers_api() {
        Some(src.referrers(digest, BUNDLE_ARTIFACT_TYPE).await)
    } else {
        None
    };
    let tag_index = match src.manifest(TagOrDigest::Tag(&tag)).await {
        Ok((bytes, _)) => match serde_json::from_slice::<Index>(&bytes) {
            Ok(idx) => Some(idx),
            Err(e) => {
                out.looked_in.push(format!(
                    "referrers tag {repo}:{tag} (not an index, ignored: {e})"
                ));
                None
            }
        },
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let tag_digests: Vec<String> = tag_index
        .iter()
        .flat_map(|i| i.manifests.iter().map(|m| m.digest.clone()))
        .collect();
    let mut candidates: Vec<(SignatureLayout, Descriptor)> = Vec::new();
    match api {
        None => {}
        Some(Ok(Some(index))) => {
            let listed = parse_referrers(&index)
                .map_err(|e| src.malformed(format!("referrers of {repo}@{digest}"), e))?;
            let n = listed
                .iter()
                .filter(|d| !tag_digests.contains(&d.digest))
                .count();
            out.looked_in.push(format!(
                "referrers API {repo} for {digest} ({n} bundle artifact(s) beyond the referrers tag)"
            ));
            for d in listed {
                if !tag_digests.contains(&d.digest) {
                    candidates.push((SignatureLayout::Referrers, d));
                }
            }
        }
        Some(Ok(None)) => out.looked_in.push(format!(
            "referrers API {repo} for {digest} (not supported by the registry)"
        )),
        Some(Err(e)) => return Err(e),
    }
    match tag_index {
        Some(idx) => {
            let bundles: Vec<Descriptor> = idx
                .manifests
                .into_iter()
                .filter(|m| is_bundle_type(m.artifact_type.as_deref()))
                .collect();
            out.looked_in.push(format!(
                "referrers tag {repo}:{tag} ({} bundle artifact(s))",
                bundles.len()
            ));
            candidates.extend(
                bundles
                    .into_iter()
                    .map(|d| (SignatureLayout::ReferrersTag, d)),
            );
        }
        None if out.looked_in.iter().any(|l| l.contains(&tag)) => {}
        None => out
            .looked_in
            .push(format!("referrers tag {repo}:{tag} (no such tag)")),
    }
    for (layout, desc) in candidates.into_iter().take(MAX_CANDIDATES) {
        if let Some(found) = fetch_bundle(src, digest, layout, &desc).await? {
            out.found.push(found);
        }
    }

    // 3. Legacy cosign `.sig`.
    let sig_tag = format!("{tag}.sig");
    match src.manifest(TagOrDigest::Tag(&sig_tag)).await {
        Ok((bytes, _)) => match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => {
                let mut n = 0;
                for layer in m.layers.iter().take(MAX_CANDIDATES) {
                    if let Some(found) = fetch_legacy(src, digest, layer).await? {
                        out.found.push(found);
                        n += 1;
                    }
                }
                out.looked_in.push(format!(
                    "legacy signature tag {repo}:{sig_tag} ({n} signature(s))"
                ));
            }
            Err(e) => out.looked_in.push(format!(
                "legacy signature tag {repo}:{sig_tag} (not a manifest, ignored: {e})"
            )),
        },
        Err(e) if e.is_not_found() => out.looked_in.push(format!(
            "legacy signature tag {repo}:{sig_tag} (no such tag)"
        )),
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// The bundle artifacts listed in a referrers index.
fn parse_referrers(index: &[u8]) -> Result<Vec<Descriptor>, String> {
    let v: Index = serde_json::from_slice(index).map_err(|e| e.to_string())?;
    Ok(v.manifests
        .into_iter()
        .filter(|m| is_bundle_type(m.artifact_type.as_deref()))
        .collect())
}

/// Fetches the referrer manifest `desc` names, then its bundle layer.
async fn fetch_bundle<S: ContentSource>(
    src: &S,
    digest: &Digest,
    layout: SignatureLayout,
    desc: &Descriptor,
) -> Result<Option<FoundSignature>, S::Error> {
    let Ok(mdigest) = Digest::parse(&desc.digest) else {
        return Ok(None);
    };
    let (bytes, _) = src.manifest(TagOrDigest::Digest(&mdigest)).await?;
    if bytes.len() as u64 != desc.size {
        return Ok(None);
    }
    let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
        return Ok(None);
    };
    let artifact_type = m
        .artifact_type
        .as_deref()
        .or(m.config.as_ref().and_then(|c| c.media_type.as_deref()));
    if !is_bundle_type(artifact_type) && !is_bundle_type(desc.artifact_type.as_deref()) {
        return Ok(None);
    }
    let Some(layer) = m
        .layers
        .iter()
        .find(|l| is_bundle_type(l.media_type.as_deref()))
    else {
        return Ok(None);
    };
    let Ok(ldigest) = Digest::parse(&layer.digest) else {
        return Ok(None);
    };
    if layer.size > MAX_SIGNATURE_BLOB {
        return Ok(None);
    }
    let bundle_json = src.blob(&ldigest, MAX_SIGNATURE_BLOB).await?;
    let signed_digest = m
        .subject
        .as_ref()
        .and_then(|s| Digest::parse(&s.digest).ok())
        .unwrap_or_else(|| digest.clone());
    Ok(Some(FoundSignature::Bundle {
        layout,
        signed_digest,
        bundle_json,
    }))
}

/// Reads one legacy `.sig` layer: the payload blob plus the annotations.
async fn fetch_legacy<S: ContentSource>(
    src: &S,
    digest: &Digest,
    layer: &Descriptor,
) -> Result<Option<FoundSignature>, S::Error> {
    if layer.media_type.as_deref() != Some(SIMPLE_SIGNING_MEDIA_TYPE) {
        return Ok(None);
    }
    let Some(signature_b64) = layer.annotations.get(ANNOTATION_SIGNATURE) else {
        return Ok(None);
    };
    let Ok(pdigest) = Digest::parse(&layer.digest) else {
        return Ok(None);
    };
    if layer.size > MAX_SIGNATURE_BLOB {
        return Ok(None);
    }
    let payload = src.blob(&pdigest, MAX_SIGNATURE_BLOB).await?;
    let get = |k: &str| layer.annotations.get(k).cloned();
    Ok(Some(FoundSignature::Legacy {
        signed_digest: digest.clone(),
        payload,
        signature_b64: signature_b64.clone(),
        certificate_pem: get(ANNOTATION_CERTIFICATE),
        chain_pem: get(ANNOTATION_CHAIN),
        rekor_bundle_json: get(ANNOTATION_BUNDLE),
    }))
}
