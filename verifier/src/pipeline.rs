//! The verification pipeline: the API everything else calls to turn an image reference into a
//! [`VerifiedImage`] (or a refusal in words).
//!
//! Flow: matching trust rules (none = deny) → resolve the reference to a digest by hashing the
//! manifest bytes → cache lookup → discover signatures on the index and on the platform
//! manifest → verify each against the trusted root and bind it to this digest and repository →
//! authorise the signers against the rules → pin the platform manifest → cache the decision.

use std::collections::BTreeMap;
use std::path::PathBuf;

use perry_policies::{Config, Digest, ImageRef, TrustPolicy, TrustRule};
use sigstore_verify::types::{Artifact, Sha256Hash};

use crate::cache::{cache_key, Outcome, VerifyCache};
use crate::discover::{discover, FoundSignature, SignatureLayout};
use crate::error::VerifyError;
use crate::image::{new_verified, VerifiedImage};
use crate::legacy::{check_payload, to_bundle_json, LegacyParts};
use crate::policy::authorize;
use crate::registry::{Platform, RegistryClient, Resolved};
use crate::signature::{claimed_digests, parse_bundle, verify_bundle, SignatureFacts, TrustedKey};
use crate::trust_root::TrustRoot;

/// Verifies images against a configuration's trust policy. Build one per process and share it:
/// it holds the parsed trusted root, the loaded keys, the registry client and the cache.
pub struct Verifier {
    trust: TrustPolicy,
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
        let rules = self.trust.rules_for(image);
        if rules.is_empty() {
            return Err(VerifyError::NoTrustRule {
                image: image.name(),
            });
        }
        let resolved = self.client.resolve(image, platform).await?;
        let platform_digest = resolved.image_manifest_digest().clone();
        let key = cache_key(
            &resolved.digest,
            &platform_digest,
            &image.name(),
            self.root.sha256(),
            &rules,
        );
        if let Some(hit) = self.cached(&key, image) {
            return hit;
        }
        let _flight = self.cache.flight(&key).await;
        if let Some(hit) = self.cached(&key, image) {
            self.cache.land(&key);
            return hit;
        }
        let decision = self
            .decide(image, &resolved, &platform_digest, &rules)
            .await;
        match &decision {
            Ok(v) => self.cache.put(&key, Outcome::Allowed(v.record())),
            Err(e) if e.is_denial() => self.cache.put(
                &key,
                Outcome::Denied {
                    code: e.code().to_string(),
                    message: e.to_string(),
                },
            ),
            Err(_) => {} // could not decide (registry down…): ask again next time
        }
        self.cache.land(&key);
        decision.map(|image| Verification {
            image,
            cache_hit: false,
        })
    }

    fn cached(
        &self,
        key: &crate::cache::CacheKey,
        image: &ImageRef,
    ) -> Option<Result<Verification, VerifyError>> {
        match self.cache.get(key)? {
            Outcome::Allowed(record) => {
                let v = VerifiedImage::from_record(image, &record)?;
                Some(Ok(Verification {
                    image: v,
                    cache_hit: true,
                }))
            }
            Outcome::Denied { code, message } => {
                Some(Err(VerifyError::CachedDenial { message, code }))
            }
        }
    }

    async fn decide(
        &self,
        image: &ImageRef,
        resolved: &Resolved,
        platform_digest: &Digest,
        rules: &[&TrustRule],
    ) -> Result<VerifiedImage, VerifyError> {
        let mut found = Vec::new();
        let mut looked_in = Vec::new();
        let mut targets = vec![&resolved.digest];
        if platform_digest != &resolved.digest {
            targets.push(platform_digest);
        }
        for d in &targets {
            let disc = discover(&self.client, image, d).await?;
            found.extend(disc.found);
            looked_in.extend(disc.looked_in);
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
        ))
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

fn digest_bytes(d: &Digest) -> Result<Sha256Hash, VerifyError> {
    Sha256Hash::from_hex(d.hex()).map_err(|e| VerifyError::Malformed {
        what: format!("digest {d}"),
        reason: e.to_string(),
    })
}
