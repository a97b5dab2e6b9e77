//! The verification pipeline: the API everything else calls to turn an image reference into a
//! [`VerifiedImage`] (or a refusal in words).
//!
//! Flow: matching trust rules (none = deny) → resolve the reference to a digest by hashing the
//! manifest bytes → cache lookup → discover signatures on the index and on the platform
//! manifest → verify each against the trusted root and bind it to this digest and repository →
//! authorise the signers against the rules → pin the platform manifest → cache the decision.
//!
//! [`Verifier::verify_source`] runs the same flow for images in OCI layouts and archives
//! (read through [`crate::layout::OciLayout`], which hashes everything like the registry client)
//! and for detached bundles; the result records its [`Origin`] so the puller reads the same
//! place.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use perry_policies::{Config, Digest, ImageRef, TrustPolicy, TrustRule};
use sigstore_verify::types::{Artifact, Sha256Hash};

use sha2::{Digest as _, Sha256};

use crate::cache::{
    cache_key, pinned_key, rule_hash, rules_digest, source_key, tag_key, CacheKey, Outcome,
    VerifyCache,
};
use crate::discover::{discover_in, FoundSignature, SignatureLayout, MAX_SIGNATURE_BLOB};
use crate::error::VerifyError;
use crate::image::{new_verified, VerifiedImage};
use crate::layout::OciLayout;
use crate::legacy::{check_payload, to_bundle_json, LegacyParts};
use crate::policy::authorize;
use crate::registry::RegistrySource;
use crate::registry::{resolve_in, Platform, RegistryClient, Resolved};
use crate::signature::{claimed_digests, parse_bundle, verify_bundle, SignatureFacts, TrustedKey};
use crate::source::{ContentSource, ImageSource, Origin, TagOrDigest};
use crate::trust_root::TrustRoot;

/// Verifies images against a configuration's trust policy. Build one per process and share it:
/// it holds the parsed trusted root, the loaded keys, the registry client and the cache.
pub struct Verifier {
    trust: TrustPolicy,
    /// [`rule_hash`] of each rule in `trust.rules`, computed once (cache keys need them on
    /// every call, including cache hits).
    rule_hashes: Vec<[u8; 32]>,
    root: TrustRoot,
    keys: BTreeMap<PathBuf, TrustedKey>,
    client: RegistryClient,
    cache: VerifyCache,
}

/// A successful verification.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The verified, pinned image: the only value the runtime accepts.
    pub image: VerifiedImage,
    /// True when the decision came from the cache.
    pub cache_hit: bool,
}

/// Subdirectory of the state dir holding cache entries.
pub const CACHE_DIR: &str = "verify-cache";

impl Verifier {
    /// Loads the trusted root and every configured public key, sets up the registry client and
    /// the cache under `<state_dir>/verify-cache/` (memory-only, with a warning, if that cannot
    /// be created). Fails if the root or a key cannot be read: nothing is verified without them.
    pub fn new(config: &Config) -> Result<Self, VerifyError> {
        let root = TrustRoot::load(&config.trust.trusted_root)?;
        let dir = config.sandbox.state_dir.join(CACHE_DIR);
        let (pos, neg) = (
            config.trust.cache_ttl.as_std(),
            config.trust.negative_cache_ttl.as_std(),
        );
        let cache = match VerifyCache::on_disk(&dir, pos, neg) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "verification cache kept in memory only: {e}");
                VerifyCache::in_memory(pos, neg)
            }
        };
        Self::with_parts(config, root, cache)
    }

    /// Like [`Verifier::new`] with an explicit root and cache (tests, benchmarks, embedding).
    pub fn with_parts(
        config: &Config,
        root: TrustRoot,
        cache: VerifyCache,
    ) -> Result<Self, VerifyError> {
        let mut keys = BTreeMap::new();
        for rule in &config.trust.rules {
            for path in &rule.keys {
                if !keys.contains_key(path) {
                    keys.insert(path.clone(), TrustedKey::load(path)?);
                }
            }
        }
        Ok(Self {
            rule_hashes: config.trust.rules.iter().map(rule_hash).collect(),
            trust: config.trust.clone(),
            root,
            keys,
            client: RegistryClient::new(config),
            cache,
        })
    }

    /// The trusted root in use.
    pub fn trust_root(&self) -> &TrustRoot {
        &self.root
    }

    /// The decision cache.
    pub fn cache(&self) -> &VerifyCache {
        &self.cache
    }

    /// The registry client (shared with the puller so credentials and settings agree).
    pub fn registry(&self) -> &RegistryClient {
        &self.client
    }

    /// Verifies `image` for `platform`: a [`Verification`] when a signature on the image (its
    /// index or its platform manifest) verifies and every matching trust rule accepts its
    /// signer; otherwise the reason.
    pub async fn verify(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<Verification, VerifyError> {
        let name = image.name();
        let (rules, rules_hash) = self.rules_for(&name)?;
        // A digest-pinned reference can be answered from the cache without asking the
        // registry: the decision was made after hashing exactly that content.
        let pinned = image.digest().map(|d| {
            pinned_key(
                d,
                &platform.to_string(),
                &name,
                self.root.sha256(),
                &rules_hash,
            )
        });
        if let Some(pk) = &pinned {
            if let Some(hit) = self.cached(pk, image, &Origin::Registry) {
                return hit;
            }
        }
        // With `[trust] tag_ttl`, a tag resolved (and its digest verified) within the TTL is
        // answered without the registry. Only allow decisions are kept under a tag.
        let tag_ttl = self.trust.tag_ttl.as_std();
        let tagged = (image.digest().is_none() && !tag_ttl.is_zero()).then(|| {
            tag_key(
                image
                    .tag()
                    .unwrap_or(perry_policies::reference::DEFAULT_TAG),
                &platform.to_string(),
                &name,
                self.root.sha256(),
                &rules_hash,
            )
        });
        if let Some(tk) = &tagged {
            if let Some(Ok(hit)) = self.cached(tk, image, &Origin::Registry) {
                tracing::debug!(digest = %hit.image.digest(), "tag resolved from the cache (tag_ttl)");
                return Ok(hit);
            }
        }
        let resolved = self.client.resolve(image, platform).await?;
        let platform_digest = resolved.image_manifest_digest().clone();
        let key = cache_key(
            &resolved.digest,
            &platform_digest,
            &name,
            self.root.sha256(),
            &rules_hash,
        );
        let src = RegistrySource::new(&self.client, image);
        let result = self
            .through_cache(&key, image, || {
                self.decide(
                    &src,
                    image,
                    &resolved,
                    &platform_digest,
                    &rules,
                    None,
                    &Origin::Registry,
                )
            })
            .await;
        if let Some(pk) = &pinned {
            match &result {
                Ok(v) => self.cache.put(pk, Outcome::Allowed(v.image.record())),
                Err(e) if e.is_denial() => self.cache.put(
                    pk,
                    Outcome::Denied {
                        code: e.code().as_str().to_string(),
                        message: e.to_string(),
                    },
                ),
                Err(_) => {}
            }
        }
        if let (Some(tk), Ok(v)) = (&tagged, &result) {
            self.cache
                .put_for(tk, Outcome::Allowed(v.image.record()), tag_ttl);
        }
        result
    }

    /// Verifies an image from any [`ImageSource`]: a registry reference, an OCI layout directory
    /// (`oci:DIR[:tag]`) or an OCI archive (`oci-archive:FILE[:tag]`), optionally against a
    /// detached Sigstore bundle instead of the signatures the source holds.
    ///
    /// * `name`: the image name (`registry/repository`, no tag or digest) the signatures were
    ///   made for. Trust rules are matched against it and legacy signatures must name it. A
    ///   layout has no name of its own, so it is required for layouts
    ///   ([`VerifyError::NameRequired`] otherwise); for a registry reference it may be omitted
    ///   and, if given, must equal the reference's name.
    /// * `platform`: which manifest to pick from a multi-platform index.
    /// * `bundle`: a Sigstore bundle file (JSON, as `cosign`/sigstore-js write them: a DSSE
    ///   in-toto statement whose subject is the manifest or index digest, or a message signature
    ///   over that digest). When given, it is the *only* signature considered; the ones in the
    ///   source are ignored.
    ///
    /// The resulting [`VerifiedImage`] is pinned by digest (for a layout: `name@<index or
    /// manifest digest>`) and its [`VerifiedImage::origin`] says where to pull from. Decisions
    /// are cached under keys bound to the origin and the bundle, so they never answer for
    /// another source. A registry reference without a bundle goes through exactly
    /// [`Verifier::verify`].
    pub async fn verify_source(
        &self,
        source: &ImageSource,
        name: Option<&str>,
        platform: &Platform,
        bundle: Option<&Path>,
    ) -> Result<Verification, VerifyError> {
        let detached = bundle.map(Detached::read).transpose()?;
        let (layout, tag, base) = match source {
            ImageSource::Registry(image) => {
                if let Some(n) = name {
                    if parse_name(n)?.name() != image.name() {
                        return Err(VerifyError::BadName {
                            name: n.into(),
                            reason: format!("the reference {image} names {}", image.name()),
                        });
                    }
                }
                let Some(d) = &detached else {
                    return self.verify(image, platform).await;
                };
                let (rules, rules_hash) = self.rules_for(&image.name())?;
                let resolved = self.client.resolve(image, platform).await?;
                let src = RegistrySource::new(&self.client, image);
                return self
                    .verify_resolved(
                        &src,
                        image,
                        &resolved,
                        &rules,
                        &rules_hash,
                        Origin::Registry,
                        Some(d),
                    )
                    .await;
            }
            ImageSource::OciLayout { dir, tag } => (Origin::OciLayout(dir.clone()), tag, name),
            ImageSource::OciArchive { file, tag } => (Origin::OciArchive(file.clone()), tag, name),
        };
        let name = base.ok_or_else(|| VerifyError::NameRequired {
            source_name: source.to_string(),
        })?;
        let base = parse_name(name)?;
        // Deny by default before touching the layout.
        let (rules, rules_hash) = self.rules_for(&base.name())?;
        let layout = match OciLayout::open_origin(&layout) {
            Some(opened) => opened?,
            None => {
                return Err(VerifyError::NameRequired {
                    source_name: source.to_string(),
                })
            }
        };
        let top = layout.image_entry(tag.as_deref())?.digest.clone();
        let image = base.pinned(top.clone());
        let resolved = resolve_in(&layout, &image, TagOrDigest::Digest(&top), platform).await?;
        self.verify_resolved(
            &layout,
            &image,
            &resolved,
            &rules,
            &rules_hash,
            layout.origin().clone(),
            detached.as_ref(),
        )
        .await
    }

    /// The trust rules matching `name` and their combined hash; none is a denial.
    fn rules_for(&self, name: &str) -> Result<(Vec<&TrustRule>, [u8; 32]), VerifyError> {
        let matching: Vec<usize> = (0..self.trust.rules.len())
            .filter(|&i| self.trust.rules[i].matches(name))
            .collect();
        if matching.is_empty() {
            return Err(VerifyError::NoTrustRule { image: name.into() });
        }
        let rules = matching.iter().map(|&i| &self.trust.rules[i]).collect();
        let hash = rules_digest(matching.iter().map(|&i| &self.rule_hashes[i]));
        Ok((rules, hash))
    }

    /// Cache + decision for a resolved image from `src` at `origin` (layouts, detached bundles).
    #[allow(clippy::too_many_arguments)]
    async fn verify_resolved<S>(
        &self,
        src: &S,
        image: &ImageRef,
        resolved: &Resolved,
        rules: &[&TrustRule],
        rules_hash: &[u8; 32],
        origin: Origin,
        detached: Option<&Detached>,
    ) -> Result<Verification, VerifyError>
    where
        S: ContentSource,
        VerifyError: From<S::Error>,
    {
        let platform_digest = resolved.image_manifest_digest().clone();
        let inner = cache_key(
            &resolved.digest,
            &platform_digest,
            &image.name(),
            self.root.sha256(),
            rules_hash,
        );
        let key = source_key(&inner, &origin, detached.map(|d| &d.sha256));
        self.through_cache_from(&key, image, &origin, || {
            self.decide(
                src,
                image,
                resolved,
                &platform_digest,
                rules,
                detached,
                &origin,
            )
        })
        .await
    }

    /// The cache and single-flight around one decision: a hit is served; otherwise the first
    /// caller for `key` runs `decide` while later ones wait and then read its result. Allow and
    /// deny decisions are stored; failures to decide (registry down…) are not.
    pub(crate) async fn through_cache<F, Fut>(
        &self,
        key: &CacheKey,
        image: &ImageRef,
        decide: F,
    ) -> Result<Verification, VerifyError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<VerifiedImage, VerifyError>>,
    {
        self.through_cache_from(key, image, &Origin::Registry, decide)
            .await
    }

    /// [`Verifier::through_cache`] for an image read from `origin`: a cached allow recorded for
    /// another origin is a miss (the key already separates them; this is the second lock).
    async fn through_cache_from<F, Fut>(
        &self,
        key: &CacheKey,
        image: &ImageRef,
        origin: &Origin,
        decide: F,
    ) -> Result<Verification, VerifyError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<VerifiedImage, VerifyError>>,
    {
        if let Some(hit) = self.cached(key, image, origin) {
            return hit;
        }
        let _flight = self.cache.flight(key).await;
        if let Some(hit) = self.cached(key, image, origin) {
            self.cache.land(key);
            return hit;
        }
        let decision = decide().await;
        match &decision {
            Ok(v) => self.cache.put(key, Outcome::Allowed(v.record())),
            Err(e) if e.is_denial() => self.cache.put(
                key,
                Outcome::Denied {
                    code: e.code().as_str().to_string(),
                    message: e.to_string(),
                },
            ),
            Err(_) => {} // could not decide: ask again next time
        }
        self.cache.land(key);
        decision.map(|image| Verification {
            image,
            cache_hit: false,
        })
    }

    fn cached(
        &self,
        key: &CacheKey,
        image: &ImageRef,
        origin: &Origin,
    ) -> Option<Result<Verification, VerifyError>> {
        match self.cache.get(key)? {
            Outcome::Allowed(record) => {
                if &record.origin != origin {
                    return None;
                }
                let v = VerifiedImage::from_record(image, &record)?;
                Some(Ok(Verification {
                    image: v,
                    cache_hit: true,
                }))
            }
            Outcome::Denied { code, message } => Some(Err(VerifyError::CachedDenial {
                message,
                code: perry_policies::Code::parse(&code)
                    .unwrap_or(perry_policies::Code::VerificationFailed),
            })),
        }
    }

    /// Discovers (or takes the detached) signatures for the resolved image in `src`, verifies
    /// them, authorises a signer and builds the [`VerifiedImage`] read from `origin`.
    #[allow(clippy::too_many_arguments)]
    async fn decide<S>(
        &self,
        src: &S,
        image: &ImageRef,
        resolved: &Resolved,
        platform_digest: &Digest,
        rules: &[&TrustRule],
        detached: Option<&Detached>,
        origin: &Origin,
    ) -> Result<VerifiedImage, VerifyError>
    where
        S: ContentSource,
        VerifyError: From<S::Error>,
    {
        let mut found = Vec::new();
        let mut looked_in = Vec::new();
        let mut targets = vec![&resolved.digest];
        if platform_digest != &resolved.digest {
            targets.push(platform_digest);
        }
        match detached {
            Some(d) => {
                found.push(d.signature(&targets));
                looked_in.push(format!("detached bundle {}", d.path));
            }
            None => {
                for d in &targets {
                    let disc = discover_in(src, d).await?;
                    found.extend(disc.found);
                    looked_in.extend(disc.looked_in);
                }
            }
        }
        if found.is_empty() {
            return Err(VerifyError::NoSignature { looked_in });
        }
        let keys: Vec<TrustedKey> = rules
            .iter()
            .flat_map(|r| r.keys.iter())
            .filter_map(|p| self.keys.get(p).cloned())
            .collect();
        let mut verified: Vec<(SignatureFacts, Digest, SignatureLayout)> = Vec::new();
        let mut failures = Vec::new();
        for sig in &found {
            match self.check_one(image, &targets, sig, &keys) {
                Ok(facts) => verified.push((facts, sig.signed_digest().clone(), sig.layout())),
                Err(e) => {
                    tracing::info!(layout = %sig.layout(), "signature rejected: {e}");
                    failures.push(e);
                }
            }
        }
        if verified.is_empty() {
            return Err(if failures.len() == 1 {
                failures.remove(0)
            } else {
                VerifyError::AllRejected(failures)
            });
        }
        let facts: Vec<SignatureFacts> = verified.iter().map(|v| v.0.clone()).collect();
        let chosen = authorize(rules, &facts)?;
        let (facts, signed_digest, layout) = verified.swap_remove(chosen);
        Ok(new_verified(
            image.clone(),
            resolved.digest.clone(),
            platform_digest.clone(),
            signed_digest,
            facts.signer.identity(),
            facts.signer.issuer(),
            facts.integrated_time,
            facts.log_index,
            layout,
        )
        .with_origin(origin.clone()))
    }

    /// Verifies one found signature: it must be attached to one of `targets` (the index or the
    /// platform manifest), must itself name that digest, and must verify against the root.
    fn check_one(
        &self,
        image: &ImageRef,
        targets: &[&Digest],
        sig: &FoundSignature,
        keys: &[TrustedKey],
    ) -> Result<SignatureFacts, VerifyError> {
        let attached = sig.signed_digest();
        if !targets.contains(&attached) {
            return Err(VerifyError::DigestMismatch {
                signed: attached.to_string(),
                image: targets[0].to_string(),
            });
        }
        match sig {
            FoundSignature::Bundle { bundle_json, .. } => {
                let bundle = parse_bundle(bundle_json)?;
                let claimed = claimed_digests(&bundle);
                if !claimed.is_empty() && !claimed.iter().any(|c| c == attached.as_str()) {
                    return Err(VerifyError::DigestMismatch {
                        signed: claimed[0].clone(),
                        image: attached.to_string(),
                    });
                }
                let hash = digest_bytes(attached)?;
                verify_bundle(&self.root, &bundle, Artifact::from(hash), keys)
            }
            FoundSignature::Legacy {
                payload,
                signature_b64,
                certificate_pem,
                rekor_bundle_json,
                ..
            } => {
                check_payload(payload, image, attached.as_str())?;
                let json = to_bundle_json(&LegacyParts {
                    payload,
                    signature_b64,
                    certificate_pem: certificate_pem.as_deref(),
                    rekor_bundle_json: rekor_bundle_json.as_deref(),
                })?;
                let bundle = parse_bundle(json.as_bytes())?;
                verify_bundle(&self.root, &bundle, Artifact::from_blob(payload), keys)
            }
        }
    }
}

/// A detached bundle file, read once (at most [`MAX_SIGNATURE_BLOB`] bytes).
struct Detached {
    path: String,
    json: Vec<u8>,
    sha256: [u8; 32],
}

impl Detached {
    fn read(path: &Path) -> Result<Self, VerifyError> {
        let shown = path.display().to_string();
        let err = |reason: String| VerifyError::BundleFile {
            path: shown.clone(),
            reason,
        };
        let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        if !f.metadata().map_err(|e| err(e.to_string()))?.is_file() {
            return Err(err("not a regular file".into()));
        }
        let mut json = Vec::new();
        f.take(MAX_SIGNATURE_BLOB + 1)
            .read_to_end(&mut json)
            .map_err(|e| err(e.to_string()))?;
        if json.len() as u64 > MAX_SIGNATURE_BLOB {
            return Err(err(format!(
                "larger than the {MAX_SIGNATURE_BLOB}-byte limit"
            )));
        }
        let sha256 = Sha256::digest(&json).into();
        Ok(Self {
            path: shown,
            json,
            sha256,
        })
    }

    /// The bundle as a candidate signature. It is taken to be attached to the target it claims
    /// (the index or the platform manifest); a bundle claiming neither is attached to the
    /// digest it claims, which [`Verifier::check_one`] then refuses as a digest mismatch.
    fn signature(&self, targets: &[&Digest]) -> FoundSignature {
        let claimed = parse_bundle(&self.json)
            .map(|b| claimed_digests(&b))
            .unwrap_or_default();
        let signed_digest = targets
            .iter()
            .find(|t| claimed.iter().any(|c| c == t.as_str()))
            .map(|t| (*t).clone())
            .or_else(|| claimed.first().and_then(|c| Digest::parse(c).ok()))
            .unwrap_or_else(|| targets[0].clone());
        FoundSignature::Bundle {
            layout: SignatureLayout::Detached,
            signed_digest,
            bundle_json: self.json.clone(),
        }
    }
}

/// Parses the image name given for a source: `registry/repository`, no tag, no digest.
fn parse_name(name: &str) -> Result<ImageRef, VerifyError> {
    let bad = |reason: String| VerifyError::BadName {
        name: name.into(),
        reason,
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        return Err(bad(
            "give the repository only (e.g. 127.0.0.1:5000/busybox), without tag or digest".into(),
        ));
    }
    ImageRef::parse(name).map_err(|e| bad(e.to_string()))
}

fn digest_bytes(d: &Digest) -> Result<Sha256Hash, VerifyError> {
    Sha256Hash::from_hex(d.hex()).map_err(|e| VerifyError::Malformed {
        what: format!("digest {d}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
