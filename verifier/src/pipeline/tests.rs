//! Unit tests of the verification pipeline.

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
        tier: None,
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
    let other = TrustedKey::from_pem(Path::new("/etc/perry/other.pub"), &fresh_p256_pem()).unwrap();
    assert!(v.check_one(&image(), &[&a], &sig, &[other]).is_err());
}

fn fresh_p256_pem() -> String {
    use base64::Engine as _;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let kp =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
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
