//! [`VerifiedImage`]: the only door into the runtime.
//!
//! Invariant 1 of the design: the gate is a type. A `VerifiedImage` has private fields, no
//! public constructor, no `Default`, no `Deserialize`; only this crate makes one, and only after
//! a signature verified and the trust policy accepted its signer. Past the verifier an image is
//! named by digest only ([`VerifiedImage::pinned_reference`]), so a tag that moves later changes
//! nothing. `tests/trybuild.rs` proves other crates cannot forge one.

use std::fmt;

use perry_policies::{Digest, ImageRef};
use serde::Serialize;

use crate::discover::SignatureLayout;
use crate::source::Origin;

/// An image whose signature verified against the trusted root and whose signer the policy
/// trusts, pinned to the manifest to pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedImage {
    reference: ImageRef,
    digest: Digest,
    platform_digest: Digest,
    signed_digest: Digest,
    signer_identity: String,
    issuer: String,
    integrated_time: Option<i64>,
    log_index: Option<u64>,
    layout: SignatureLayout,
    origin: Origin,
}

/// The facts a verification established, in a form the cache can store. Crate-private so that
/// nothing outside this crate can turn data into a [`VerifiedImage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct Record {
    pub(crate) digest: String,
    pub(crate) platform_digest: String,
    pub(crate) signed_digest: String,
    pub(crate) signer_identity: String,
    pub(crate) issuer: String,
    pub(crate) integrated_time: Option<i64>,
    pub(crate) log_index: Option<u64>,
    pub(crate) layout: String,
    /// Where the bytes are read from (absent in entries written before layouts existed:
    /// the registry).
    #[serde(default)]
    pub(crate) origin: Origin,
}

pub(crate) fn layout_name(l: &SignatureLayout) -> &'static str {
    match l {
        SignatureLayout::Referrers => "referrers",
        SignatureLayout::ReferrersTag => "referrers-tag",
        SignatureLayout::LegacySig => "legacy-sig",
        SignatureLayout::Detached => "detached-bundle",
    }
}

fn layout_from(s: &str) -> Option<SignatureLayout> {
    Some(match s {
        "referrers" => SignatureLayout::Referrers,
        "referrers-tag" => SignatureLayout::ReferrersTag,
        "legacy-sig" => SignatureLayout::LegacySig,
        "detached-bundle" => SignatureLayout::Detached,
        _ => return None,
    })
}

impl VerifiedImage {
    pub(crate) fn from_record(reference: &ImageRef, r: &Record) -> Option<Self> {
        Some(Self {
            reference: reference.clone(),
            digest: Digest::parse(&r.digest).ok()?,
            platform_digest: Digest::parse(&r.platform_digest).ok()?,
            signed_digest: Digest::parse(&r.signed_digest).ok()?,
            signer_identity: r.signer_identity.clone(),
            issuer: r.issuer.clone(),
            integrated_time: r.integrated_time,
            log_index: r.log_index,
            layout: layout_from(&r.layout)?,
            origin: r.origin.clone(),
        })
    }

    pub(crate) fn record(&self) -> Record {
        Record {
            digest: self.digest.to_string(),
            platform_digest: self.platform_digest.to_string(),
            signed_digest: self.signed_digest.to_string(),
            signer_identity: self.signer_identity.clone(),
            issuer: self.issuer.clone(),
            integrated_time: self.integrated_time,
            log_index: self.log_index,
            layout: layout_name(&self.layout).to_string(),
            origin: self.origin.clone(),
        }
    }

    /// The reference as the user wrote it (normalised; may carry a tag, which is informational).
    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }

    /// The digest the reference resolved to: the index digest for a multi-platform image,
    /// else the manifest digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The digest of the platform manifest to pull (equals [`Self::digest`] for a
    /// single-platform image). This is what the runtime fetches, and nothing else.
    pub fn platform_digest(&self) -> &Digest {
        &self.platform_digest
    }

    /// The digest the accepted signature covers: [`Self::digest`] (signature on the index or
    /// single manifest) or [`Self::platform_digest`] (signature on the platform manifest).
    pub fn signed_digest(&self) -> &Digest {
        &self.signed_digest
    }

    /// True when the accepted signature was on the multi-platform index rather than on the
    /// platform manifest itself.
    pub fn signed_on_index(&self) -> bool {
        self.signed_digest == self.digest && self.digest != self.platform_digest
    }

    /// `registry/repository@sha256:<platform manifest>`: the only name the runtime uses.
    pub fn pinned_reference(&self) -> String {
        format!("{}@{}", self.reference.name(), self.platform_digest)
    }

    /// The signer: certificate subject (email or URI) or `key <path>`.
    pub fn signer_identity(&self) -> &str {
        &self.signer_identity
    }

    /// The OIDC issuer of the signing certificate (`static-key` for key signatures).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Rekor integrated time (seconds since the epoch), or the verified timestamp.
    pub fn integrated_time(&self) -> Option<i64> {
        self.integrated_time
    }

    /// Rekor log index of the signature's entry.
    pub fn log_index(&self) -> Option<u64> {
        self.log_index
    }

    /// Where the signature was found.
    pub fn layout(&self) -> &SignatureLayout {
        &self.layout
    }

    /// Where the image's bytes are read from: the registry of [`Self::reference`], or the OCI
    /// layout directory or archive it was verified from. The puller reads from here and
    /// nowhere else.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The same verified image, read from `origin` (pipeline only).
    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }
}

/// Builder used by the pipeline only.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_verified(
    reference: ImageRef,
    digest: Digest,
    platform_digest: Digest,
    signed_digest: Digest,
    signer_identity: String,
    issuer: String,
    integrated_time: Option<i64>,
    log_index: Option<u64>,
    layout: SignatureLayout,
) -> VerifiedImage {
    VerifiedImage {
        reference,
        digest,
        platform_digest,
        signed_digest,
        signer_identity,
        issuer,
        integrated_time,
        log_index,
        layout,
        origin: Origin::Registry,
    }
}

impl fmt::Display for VerifiedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} signed by {} (issuer {})",
            self.pinned_reference(),
            self.signer_identity,
            self.issuer
        )?;
        if self.origin != Origin::Registry {
            write!(f, " from {}", self.origin)?;
        }
        Ok(())
    }
}
