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
mod tests {
    //! Binding and cache behaviour of the pipeline, on real public-good bundles from the
    //! sigstore-conformance fixtures (the registry side is covered by the end-to-end tests).
    use super::*;
    use crate::cache::VerifyCache;
    use perry_policies::{ImageGlob, KeylessAuthority};
    use sha2::Sha256;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
    const GHA: &str = "https://token.actions.githubusercontent.com";

    fn fixture(p: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/conformance")
                .join(p),
        )
        .unwrap()
    }

    fn sha(bytes: &[u8]) -> Digest {
        Digest::from_sha256(&Sha256::digest(bytes).into())
    }

    fn config(subject: &str, issuer: &str) -> Config {
        let mut c = Config::default();
        c.trust.rules = vec![TrustRule {
            name: Some("t".into()),
            images: vec![ImageGlob::new("example.test/**").unwrap()],
            keyless: vec![KeylessAuthority {
                issuer: issuer.into(),
                subject: Some(subject.into()),
                subject_regex: None,
            }],
            keys: vec![],
        }];
        c
    }

    fn verifier_with(c: &Config, root: TrustRoot, cache: VerifyCache) -> Verifier {
        Verifier::with_parts(c, root, cache).unwrap()
    }

    /// A verifier whose trusted root is the one in a conformance fixture directory.
    fn verifier_under_root(c: &Config, fixture_dir: &str) -> Verifier {
        let root = TrustRoot::from_json_bytes(
            &fixture(&format!("{fixture_dir}/trusted_root.json")),
            "custom",
        )
        .unwrap();
        let cache = VerifyCache::in_memory(Duration::from_secs(1), Duration::from_secs(1));
        verifier_with(c, root, cache)
    }

    fn verifier(c: &Config) -> Verifier {
        let cache = VerifyCache::in_memory(Duration::from_secs(60), Duration::from_secs(10));
        verifier_with(c, TrustRoot::public_good().unwrap(), cache)
    }

    fn image() -> ImageRef {
        ImageRef::parse("example.test/app:v1").unwrap()
    }

    fn bundle_sig(json: Vec<u8>, attached: &Digest) -> FoundSignature {
        FoundSignature::Bundle {
            layout: SignatureLayout::ReferrersTag,
            signed_digest: attached.clone(),
            bundle_json: json,
        }
    }

    #[test]
    fn bundle_on_this_digest_verifies_and_names_its_signer() {
        let v = verifier(&config(BEACON, GHA));
        let a = sha(&fixture("a.txt"));
        let sig = bundle_sig(fixture("happy-path-v0.3/bundle.sigstore.json"), &a);
        let facts = v.check_one(&image(), &[&a], &sig, &[]).unwrap();
        assert_eq!(facts.signer.identity(), BEACON);
        assert_eq!(facts.signer.issuer(), GHA);
        assert!(facts.log_index.is_some());
    }

    #[test]
    fn signature_for_digest_a_attached_to_image_b_is_rejected() {
        let v = verifier(&config(BEACON, GHA));
        let a = sha(&fixture("a.txt"));
        let b = sha(b"another image manifest");
        // The attacker copies A's valid bundle into B's referrers: it says it is attached to B.
        let sig = bundle_sig(fixture("happy-path-v0.3/bundle.sigstore.json"), &b);
        let e = v.check_one(&image(), &[&b], &sig, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("signature is for {a}, not this image {b}")
        );
        // And a DSSE statement whose subject is A, attached to B.
        let art = fixture("intoto-with-custom-trust-root/artifact");
        let v = verifier_under_root(&config(BEACON, GHA), "intoto-with-custom-trust-root");
        let dsse = fixture("intoto-with-custom-trust-root/bundle.sigstore.json");
        let a = sha(&art);
        assert!(v
            .check_one(&image(), &[&a], &bundle_sig(dsse.clone(), &a), &[])
            .is_ok());
        let e = v
            .check_one(&image(), &[&b], &bundle_sig(dsse, &b), &[])
            .unwrap_err();
        assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn signature_attached_to_an_unrelated_digest_is_ignored() {
        let v = verifier(&config(BEACON, GHA));
        let a = sha(&fixture("a.txt"));
        let b = sha(b"the image being verified");
        let sig = bundle_sig(fixture("happy-path-v0.3/bundle.sigstore.json"), &a);
        let e = v.check_one(&image(), &[&b], &sig, &[]).unwrap_err();
        assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let v = verifier(&config(BEACON, GHA));
        let a = sha(&fixture("a.txt"));
        let mut b: serde_json::Value =
            serde_json::from_slice(&fixture("happy-path-v0.3/bundle.sigstore.json")).unwrap();
        use base64::Engine as _;
        let e = base64::engine::general_purpose::STANDARD;
        let mut sig = e
            .decode(b["messageSignature"]["signature"].as_str().unwrap())
            .unwrap();
        let n = sig.len();
        sig[n - 3] ^= 1;
        b["messageSignature"]["signature"] = e.encode(sig).into();
        let s = bundle_sig(serde_json::to_vec(&b).unwrap(), &a);
        let err = v.check_one(&image(), &[&a], &s, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::SignatureInvalid(_) | VerifyError::SetInvalid(_)
            ),
            "{err}"
        );
    }

    #[test]
    fn signature_from_an_untrusted_root_is_rejected() {
        // Public-good bundle, but the configured root is a private deployment's.
        let v = verifier_under_root(&config(BEACON, GHA), "intoto-with-custom-trust-root");
        let a = sha(&fixture("a.txt"));
        let sig = bundle_sig(fixture("happy-path-v0.3/bundle.sigstore.json"), &a);
        assert!(v.check_one(&image(), &[&a], &sig, &[]).is_err());
    }

    #[test]
    fn static_key_bundles_verify_only_with_a_configured_key() {
        let v = verifier_under_root(&config(BEACON, GHA), "managed-key-and-trusted-root");
        let a = sha(&fixture("a.txt"));
        let sig = bundle_sig(
            fixture("managed-key-and-trusted-root/bundle.sigstore.json"),
            &a,
        );
        let pem = String::from_utf8(fixture("managed-key-and-trusted-root/key.pub")).unwrap();
        let key = TrustedKey::from_pem(Path::new("/etc/perry/release.pub"), &pem).unwrap();
        let facts = v.check_one(&image(), &[&a], &sig, &[key]).unwrap();
        assert_eq!(facts.signer.identity(), "key /etc/perry/release.pub");
        // No key configured: refused, never accepted as "unsigned but fine".
        assert!(v.check_one(&image(), &[&a], &sig, &[]).is_err());
        // Another (freshly generated P-256) key: refused.
        let other =
            TrustedKey::from_pem(Path::new("/etc/perry/other.pub"), &fresh_p256_pem()).unwrap();
        assert!(v.check_one(&image(), &[&a], &sig, &[other]).is_err());
    }

    fn fresh_p256_pem() -> String {
        use base64::Engine as _;
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(kp.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    #[test]
    fn garbage_bundles_are_errors_not_panics() {
        let v = verifier(&config(BEACON, GHA));
        let a = sha(b"x");
        for junk in [
            &b""[..],
            b"{}",
            b"null",
            b"{\"mediaType\":1}",
            &[0xff, 0x00],
        ] {
            let sig = bundle_sig(junk.to_vec(), &a);
            assert!(v.check_one(&image(), &[&a], &sig, &[]).is_err());
        }
    }

    fn verified(subject: &str) -> VerifiedImage {
        let a = sha(b"manifest");
        new_verified(
            image(),
            a.clone(),
            a.clone(),
            a,
            subject.into(),
            GHA.into(),
            Some(1),
            Some(2),
            SignatureLayout::ReferrersTag,
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn concurrent_verifications_of_one_digest_coalesce() {
        let v = verifier(&config(BEACON, GHA));
        let calls = AtomicUsize::new(0);
        let key = [5u8; 32];
        let img = image();
        let results = rt().block_on(async {
            let one = || async {
                v.through_cache(&key, &img, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    Ok(verified(BEACON))
                })
                .await
            };
            futures_util::future::join_all((0..16).map(|_| one())).await
        });
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the decision ran more than once"
        );
        assert_eq!(
            results
                .iter()
                .filter(|r| !r.as_ref().unwrap().cache_hit)
                .count(),
            1
        );
        let first = results[0].as_ref().unwrap().image.clone();
        assert!(results.iter().all(|r| r.as_ref().unwrap().image == first));
    }

    #[test]
    fn tampered_cache_entry_is_reverified_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(BEACON, GHA);
        let mk = || {
            let cache = VerifyCache::on_disk(
                dir.path(),
                Duration::from_secs(3600),
                Duration::from_secs(60),
            )
            .unwrap();
            verifier_with(&c, TrustRoot::public_good().unwrap(), cache)
        };
        let key = [8u8; 32];
        let img = image();
        let calls = AtomicUsize::new(0);
        let deny = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<VerifiedImage, _>(VerifyError::NoSignature {
                looked_in: vec!["x".into()],
            })
        };
        let rt = rt();
        let v1 = mk();
        assert!(rt.block_on(v1.through_cache(&key, &img, deny)).is_err());
        // A fresh process trusts the disk entry (no new decision).
        let v2 = mk();
        assert!(rt.block_on(v2.through_cache(&key, &img, deny)).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // The attacker rewrites the refusal into an allow without the MAC key.
        let path = v2.cache().entry_path(&key).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (mac, body) = text.split_once('\n').unwrap();
        let rec = verified("attacker@evil").record();
        let mut forged: serde_json::Value = serde_json::from_str(body).unwrap();
        forged["outcome"] = "allowed".into();
        for (k, val) in serde_json::to_value(&rec).unwrap().as_object().unwrap() {
            forged[k] = val.clone();
        }
        std::fs::write(&path, format!("{mac}\n{forged}")).unwrap();
        let v3 = mk();
        let r = rt.block_on(v3.through_cache(&key, &img, deny));
        assert!(r.is_err(), "forged cache entry was trusted");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "tampered entry must be re-verified"
        );
        // Corrupt bytes likewise.
        std::fs::write(&path, b"\x00\x01garbage").unwrap();
        let v4 = mk();
        assert!(rt.block_on(v4.through_cache(&key, &img, deny)).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn failures_to_decide_are_not_cached() {
        let v = verifier(&config(BEACON, GHA));
        let key = [6u8; 32];
        let img = image();
        let calls = AtomicUsize::new(0);
        let fail = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<VerifiedImage, _>(VerifyError::Cache {
                path: "p".into(),
                reason: "r".into(),
            })
        };
        let rt = rt();
        let _ = rt.block_on(v.through_cache(&key, &img, fail));
        let _ = rt.block_on(v.through_cache(&key, &img, fail));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Verifying the same image repeatedly gives the same outcome, whether it came from the
        /// decision, the memory cache, or a disk entry read by a new process.
        #[test]
        fn same_image_same_outcome_cached_or_not(allow in proptest::bool::ANY, ops in proptest::collection::vec(0u8..3, 1..12)) {
            let dir = tempfile::tempdir().unwrap();
            let c = config(BEACON, GHA);
            let mk = || {
                let cache = VerifyCache::on_disk(dir.path(), Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
                verifier_with(&c, TrustRoot::public_good().unwrap(), cache)
            };
            let key = [4u8; 32];
            let img = image();
            let rt = rt();
            let mut v = mk();
            let decide = || {
                let out = if allow { Ok(verified(BEACON)) } else {
                    Err(VerifyError::IdentityMismatch { signer: "a".into(), issuer: "b".into(), required: "c".into() })
                };
                async move { out }
            };
            let show = |r: Result<Verification, VerifyError>| match r {
                Ok(v) => Ok(v.image),
                Err(e) => Err((e.to_string(), e.code().as_str().to_string(), e.is_denial())),
            };
            let first = show(rt.block_on(v.through_cache(&key, &img, decide)));
            for op in ops {
                match op {
                    0 => {}
                    1 => v.cache().clear_memory(),
                    _ => v = mk(),
                }
                let again = show(rt.block_on(v.through_cache(&key, &img, decide)));
                proptest::prop_assert_eq!(&again, &first);
            }
        }
    }
}
