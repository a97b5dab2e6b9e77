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

use crate::cache::{
    cache_key, pinned_key, rule_hash, rules_digest, CacheKey, Outcome, VerifyCache,
};
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
        let matching: Vec<usize> = (0..self.trust.rules.len())
            .filter(|&i| self.trust.rules[i].matches(&name))
            .collect();
        if matching.is_empty() {
            return Err(VerifyError::NoTrustRule { image: name });
        }
        let rules: Vec<&TrustRule> = matching.iter().map(|&i| &self.trust.rules[i]).collect();
        let rules_hash = rules_digest(matching.iter().map(|&i| &self.rule_hashes[i]));
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
            if let Some(hit) = self.cached(pk, image) {
                return hit;
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
        let result = self
            .through_cache(&key, image, || {
                self.decide(image, &resolved, &platform_digest, &rules)
            })
            .await;
        if let Some(pk) = &pinned {
            match &result {
                Ok(v) => self.cache.put(pk, Outcome::Allowed(v.image.record())),
                Err(e) if e.is_denial() => self.cache.put(
                    pk,
                    Outcome::Denied {
                        code: e.code().to_string(),
                        message: e.to_string(),
                    },
                ),
                Err(_) => {}
            }
        }
        result
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
        if let Some(hit) = self.cached(key, image) {
            return hit;
        }
        let _flight = self.cache.flight(key).await;
        if let Some(hit) = self.cached(key, image) {
            self.cache.land(key);
            return hit;
        }
        let decision = decide().await;
        match &decision {
            Ok(v) => self.cache.put(key, Outcome::Allowed(v.record())),
            Err(e) if e.is_denial() => self.cache.put(
                key,
                Outcome::Denied {
                    code: e.code().to_string(),
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

#[cfg(test)]
mod tests {
    //! Binding and cache behaviour of the pipeline, on real public-good bundles from the
    //! sigstore-conformance fixtures (the registry side is covered by the end-to-end tests).
    use super::*;
    use crate::cache::VerifyCache;
    use perry_policies::{ImageGlob, KeylessAuthority};
    use sha2::{Digest as _, Sha256};
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
                Err(e) => Err((e.to_string(), e.code().to_string(), e.is_denial())),
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
