//! End to end, all real and on loopback: images built from busybox-static and pushed to
//! docker-registry, signed by sigstore-js through the mock Fulcio/Rekor/TSA, verified by
//! `Verifier` against the stack's trusted_root.json. Each attack is refused with its own reason.

mod registry_fake;

use std::path::PathBuf;

use perry_policies::{Config, Digest, ImageRef};
use perry_testworld::{
    ConfigBuilder, Layout, Registry, SigStack, SignOptions, TinyImage, TinyIndex, DEFAULT_IDENTITY,
    DEFAULT_ISSUER,
};
use perry_verifier::discover::SignatureLayout;
use perry_verifier::registry::{Platform, RegistryError};
use perry_verifier::{Verifier, VerifyError};

struct World {
    reg: Registry,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        Self {
            reg: Registry::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self, b: ConfigBuilder) -> PathBuf {
        b.write(self.dir.path())
    }

    fn verifier(&self) -> Verifier {
        self.verifier_with(ConfigBuilder::new(&self.reg, SigStack::shared()))
    }

    fn verifier_with(&self, b: ConfigBuilder) -> Verifier {
        let cfg = Config::load(&self.config(b)).unwrap_or_else(|e| panic!("{e}"));
        Verifier::new(&cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    fn image(&self, r: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{r}", self.reg.host())).unwrap()
    }

    fn sign(&self, repo: &str, digest: &str, opts: SignOptions) {
        SigStack::shared().sign(&self.reg, repo, digest, &opts);
    }

    /// Pushes a tiny image marked with its repository name at tag `v1` and signs it.
    fn push_signed(&self, repo: &str, opts: SignOptions) {
        let p = self
            .reg
            .push_image(repo, "v1", &TinyImage::busybox_marked("amd64", repo));
        self.sign(repo, &p.digest, opts);
    }
}

fn legacy() -> SignOptions {
    SignOptions {
        layout: Layout::LegacySig,
        ..Default::default()
    }
}

fn amd64() -> Platform {
    Platform::default()
}

async fn refused(v: &Verifier, image: &ImageRef) -> VerifyError {
    match v.verify(image, &amd64()).await {
        Ok(ok) => panic!("{image} verified but must be refused: {:?}", ok.image),
        Err(e) => e,
    }
}

#[tokio::test]
async fn signed_single_platform_image_verifies_in_the_referrers_tag_layout() {
    let w = World::new();
    let p = w
        .reg
        .push_image("demo/app", "v1", &TinyImage::busybox_marked("amd64", "rt"));
    w.sign("demo/app", &p.digest, SignOptions::default());
    let v = w.verifier();
    let image = w.image("demo/app:v1");

    let ok = v.verify(&image, &amd64()).await.unwrap();
    assert!(!ok.cache_hit);
    let vi = &ok.image;
    assert_eq!(vi.digest().as_str(), p.digest);
    assert_eq!(vi.platform_digest().as_str(), p.digest);
    assert_eq!(vi.signer_identity(), DEFAULT_IDENTITY);
    assert_eq!(vi.issuer(), DEFAULT_ISSUER);
    assert_eq!(*vi.layout(), SignatureLayout::ReferrersTag);
    assert!(vi.integrated_time().is_some());
    assert_eq!(
        vi.pinned_reference(),
        format!("{}/demo/app@{}", w.reg.host(), p.digest)
    );

    let again = v.verify(&image, &amd64()).await.unwrap();
    assert!(
        again.cache_hit,
        "second verification is served from the cache"
    );
    assert_eq!(again.image.digest(), vi.digest());
}

#[tokio::test]
async fn signed_single_platform_image_verifies_in_the_legacy_layout() {
    let w = World::new();
    let p = w.reg.push_image(
        "demo/legacy",
        "v1",
        &TinyImage::busybox_marked("amd64", "lg"),
    );
    w.sign("demo/legacy", &p.digest, legacy());
    let ok = w
        .verifier()
        .verify(&w.image("demo/legacy:v1"), &amd64())
        .await
        .unwrap();
    assert_eq!(ok.image.digest().as_str(), p.digest);
    assert_eq!(*ok.image.layout(), SignatureLayout::LegacySig);
    assert_eq!(ok.image.signer_identity(), DEFAULT_IDENTITY);
    assert_eq!(ok.image.issuer(), DEFAULT_ISSUER);
    assert!(ok.image.log_index().is_some());
    assert!(ok.image.integrated_time().is_some());
}

#[tokio::test]
async fn two_platform_index_signed_on_the_index_verifies_and_pins_the_platform() {
    let w = World::new();
    let p = w
        .reg
        .push_index("demo/multi", "v1", &TinyIndex::two_platform("ix"));
    w.sign("demo/multi", &p.digest, SignOptions::default());
    let v = w.verifier();
    let image = w.image("demo/multi:v1");

    let ok = v.verify(&image, &amd64()).await.unwrap();
    assert_eq!(ok.image.digest().as_str(), p.digest);
    assert_eq!(ok.image.platform_digest().as_str(), p.platform("amd64"));
    assert_eq!(ok.image.signed_digest().as_str(), p.digest);
    assert!(ok.image.signed_on_index());

    let arm = v
        .verify(&image, &"linux/arm64".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(arm.image.platform_digest().as_str(), p.platform("arm64"));
}

#[tokio::test]
async fn two_platform_index_signed_on_a_platform_manifest_verifies_that_platform_only() {
    let w = World::new();
    let p = w
        .reg
        .push_index("demo/multi", "v1", &TinyIndex::two_platform("pm"));
    w.sign("demo/multi", p.platform("amd64"), legacy());
    let v = w.verifier();
    let image = w.image("demo/multi:v1");

    let ok = v.verify(&image, &amd64()).await.unwrap();
    assert_eq!(ok.image.digest().as_str(), p.digest);
    assert_eq!(ok.image.platform_digest().as_str(), p.platform("amd64"));
    assert_eq!(ok.image.signed_digest().as_str(), p.platform("amd64"));
    assert!(!ok.image.signed_on_index());
    assert_eq!(*ok.image.layout(), SignatureLayout::LegacySig);

    // arm64 has no signature of its own, and the index is unsigned.
    let e = v
        .verify(&image, &"linux/arm64".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, VerifyError::NoSignature { .. }), "{e}");
}

#[tokio::test]
async fn unsigned_image_is_refused_saying_where_it_looked() {
    let w = World::new();
    let p = w.reg.push_image(
        "demo/unsigned",
        "v1",
        &TinyImage::busybox_marked("amd64", "u"),
    );
    let e = refused(&w.verifier(), &w.image("demo/unsigned:v1")).await;
    assert!(matches!(e, VerifyError::NoSignature { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("no signature found (looked in: "), "{msg}");
    let hex = p.digest.trim_start_matches("sha256:");
    assert!(msg.contains("referrers API"), "{msg}");
    assert!(msg.contains(&format!("sha256-{hex} ")), "{msg}");
    assert!(msg.contains(&format!("sha256-{hex}.sig")), "{msg}");
    assert!(e.is_denial());
    assert_eq!(e.code().as_str(), "verification_failed");
}

#[tokio::test]
async fn wrong_subject_is_refused_as_identity_mismatch() {
    let w = World::new();
    let evil = "https://github.com/mallory/fork/.github/workflows/release.yml@refs/heads/main";
    for (repo, layout) in [
        ("demo/ws", Layout::ReferrersTag),
        ("demo/wsl", Layout::LegacySig),
    ] {
        w.push_signed(
            repo,
            SignOptions {
                layout,
                identity: Some(evil.into()),
                ..Default::default()
            },
        );
        let e = refused(&w.verifier(), &w.image(&format!("{repo}:v1"))).await;
        assert!(
            matches!(e, VerifyError::IdentityMismatch { .. }),
            "{layout:?}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("signed by {evil}")), "{msg}");
        assert!(msg.contains(DEFAULT_IDENTITY), "{msg}");
        assert_eq!(e.code().as_str(), "policy_denied");
    }
}

#[tokio::test]
async fn wrong_issuer_is_refused_as_identity_mismatch() {
    let w = World::new();
    let evil_issuer = "https://accounts.evil.example";
    for (repo, layout) in [
        ("demo/wi", Layout::ReferrersTag),
        ("demo/wil", Layout::LegacySig),
    ] {
        w.push_signed(
            repo,
            SignOptions {
                layout,
                issuer: Some(evil_issuer.into()),
                ..Default::default()
            },
        );
        let e = refused(&w.verifier(), &w.image(&format!("{repo}:v1"))).await;
        assert!(
            matches!(e, VerifyError::IdentityMismatch { .. }),
            "{layout:?}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("(issuer {evil_issuer})")), "{msg}");
        assert!(msg.contains(DEFAULT_ISSUER), "{msg}");
    }
}

#[tokio::test]
async fn signature_from_an_untrusted_root_is_refused() {
    let w = World::new();
    let other = SigStack::start(); // same identity and issuer, different Fulcio/Rekor/TSA keys
    for (repo, layout) in [
        ("demo/ur", Layout::ReferrersTag),
        ("demo/url", Layout::LegacySig),
    ] {
        let p = w
            .reg
            .push_image(repo, "v1", &TinyImage::busybox_marked("amd64", repo));
        other.sign(
            &w.reg,
            repo,
            &p.digest,
            &SignOptions {
                layout,
                ..Default::default()
            },
        );
        let e = refused(&w.verifier(), &w.image(&format!("{repo}:v1"))).await;
        assert!(
            matches!(
                e,
                VerifyError::SignatureInvalid(_) | VerifyError::SetInvalid(_)
            ),
            "{layout:?}: {e:?}"
        );
        assert_eq!(e.code().as_str(), "verification_failed");
        // The same signature verifies against its own root: the refusal is about trust.
        let ok = w
            .verifier_with(
                ConfigBuilder::new(&w.reg, SigStack::shared()).trusted_root(&other.trusted_root()),
            )
            .verify(&w.image(&format!("{repo}:v1")), &amd64())
            .await;
        assert!(ok.is_ok(), "{layout:?}: {:?}", ok.err());
    }
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let w = World::new();
    for (repo, layout) in [
        ("demo/tp", Layout::ReferrersTag),
        ("demo/tpl", Layout::LegacySig),
    ] {
        w.push_signed(
            repo,
            SignOptions {
                layout,
                tamper: true,
                ..Default::default()
            },
        );
        let e = refused(&w.verifier(), &w.image(&format!("{repo}:v1"))).await;
        assert!(
            matches!(
                e,
                VerifyError::SignatureInvalid(_) | VerifyError::SetInvalid(_)
            ),
            "{layout:?}: {e:?}"
        );
        assert_eq!(e.code().as_str(), "verification_failed");
    }
}

#[tokio::test]
async fn signature_for_digest_a_attached_to_image_b_is_refused() {
    let w = World::new();
    for (repo, layout) in [
        ("demo/ab", Layout::ReferrersTag),
        ("demo/abl", Layout::LegacySig),
    ] {
        let a = w.reg.push_image(
            repo,
            "a",
            &TinyImage::busybox_marked("amd64", &format!("{repo}A")),
        );
        let b = w.reg.push_image(
            repo,
            "b",
            &TinyImage::busybox_marked("amd64", &format!("{repo}B")),
        );
        // A genuine signature over A, by the trusted identity, attached to B.
        w.sign(
            repo,
            &b.digest,
            SignOptions {
                layout,
                subject_digest: Some(a.digest.clone()),
                ..Default::default()
            },
        );
        let e = refused(&w.verifier(), &w.image(&format!("{repo}:b"))).await;
        assert!(
            matches!(e, VerifyError::DigestMismatch { .. }),
            "{layout:?}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&a.digest) && msg.contains(&b.digest), "{msg}");
    }
}

#[tokio::test]
async fn legacy_signature_naming_another_repository_is_refused() {
    let w = World::new();
    let p = w.reg.push_image(
        "demo/repo",
        "v1",
        &TinyImage::busybox_marked("amd64", "repo"),
    );
    let elsewhere = format!("{}/other/app", w.reg.host());
    w.sign(
        "demo/repo",
        &p.digest,
        SignOptions {
            layout: Layout::LegacySig,
            docker_reference: Some(elsewhere.clone()),
            ..Default::default()
        },
    );
    let e = refused(&w.verifier(), &w.image("demo/repo:v1")).await;
    assert!(matches!(e, VerifyError::RepositoryMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(&elsewhere));
}

#[tokio::test]
async fn one_good_signature_among_bad_ones_suffices() {
    let w = World::new();
    let p = w.reg.push_image(
        "demo/mixed",
        "v1",
        &TinyImage::busybox_marked("amd64", "mx"),
    );
    w.sign(
        "demo/mixed",
        &p.digest,
        SignOptions {
            identity: Some(
                "https://github.com/mallory/x/.github/workflows/a.yml@refs/heads/main".into(),
            ),
            ..Default::default()
        },
    );
    w.sign(
        "demo/mixed",
        &p.digest,
        SignOptions {
            tamper: true,
            ..Default::default()
        },
    );
    w.sign("demo/mixed", &p.digest, legacy());
    let ok = w
        .verifier()
        .verify(&w.image("demo/mixed:v1"), &amd64())
        .await
        .unwrap();
    assert_eq!(*ok.image.layout(), SignatureLayout::LegacySig);
}

#[tokio::test]
async fn images_no_rule_matches_are_denied_before_any_registry_access() {
    let w = World::new();
    let p = w
        .reg
        .push_image("demo/app", "v1", &TinyImage::busybox_marked("amd64", "nr"));
    w.sign("demo/app", &p.digest, SignOptions::default());
    let v = w.verifier_with(
        ConfigBuilder::new(&w.reg, SigStack::shared())
            .images(&[&format!("{}/trusted/**", w.reg.host())]),
    );
    let e = refused(&v, &w.image("demo/app:v1")).await;
    assert!(matches!(e, VerifyError::NoTrustRule { .. }), "{e:?}");
    assert_eq!(e.code().as_str(), "policy_denied");
}

#[tokio::test]
async fn tag_moved_after_verification_changes_nothing_pinned() {
    let w = World::new();
    let good = w.reg.push_image(
        "demo/moving",
        "v1",
        &TinyImage::busybox_marked("amd64", "good"),
    );
    w.sign("demo/moving", &good.digest, SignOptions::default());
    let v = w.verifier();
    let image = w.image("demo/moving:v1");
    let verified = v.verify(&image, &amd64()).await.unwrap().image;

    // The attacker moves the tag to an unsigned image.
    let evil = w.reg.push_image(
        "demo/moving",
        "evil",
        &TinyImage::busybox_marked("amd64", "evil"),
    );
    w.reg.move_tag("demo/moving", "v1", &evil.digest);

    // What was verified stays pinned to the good digest, and fetching by the pin gets the good
    // bytes (the runtime pulls by digest only).
    assert_eq!(verified.digest().as_str(), good.digest);
    let pinned = ImageRef::parse(&verified.pinned_reference()).unwrap();
    assert_eq!(pinned.tag(), None);
    let bytes = v
        .registry()
        .fetch_manifest(&pinned, verified.platform_digest())
        .await
        .unwrap();
    assert_eq!(
        perry_testworld::sha256_digest(&bytes),
        good.digest,
        "the pin still fetches the verified manifest"
    );
    // Verifying the tag again sees the new, unsigned digest and refuses it.
    let e = refused(&v, &image).await;
    assert!(matches!(e, VerifyError::NoSignature { .. }), "{e:?}");
    // Verifying by the pinned digest still succeeds.
    let again = v.verify(&pinned, &amd64()).await.unwrap();
    assert_eq!(again.image.digest().as_str(), good.digest);
}

#[tokio::test]
async fn registry_serving_manifest_bytes_that_do_not_hash_is_refused() {
    use registry_fake::{FakeRegistry, Request, Response};
    // A registry whose tag resolves to a signed image's digest (header), but which then serves
    // other bytes for that digest.
    let w = World::new();
    let good = w
        .reg
        .push_image("demo/app", "v1", &TinyImage::busybox_marked("amd64", "h"));
    w.sign("demo/app", &good.digest, SignOptions::default());
    let evil = TinyImage::busybox_marked("amd64", "h-evil").manifest;
    let gd = good.digest.clone();
    let fake = FakeRegistry::start(move |r: &Request| {
        if r.path == "/v2/" {
            Response::new(200, "{}")
        } else if r.path.starts_with("/v2/demo/app/manifests/") {
            Response::new(200, evil.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", &gd)
        } else {
            Response::not_found()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigBuilder::new(&w.reg, SigStack::shared())
        .images(&[&format!("{}/**", fake.host())])
        .extra(&format!(
            "[registries.\"{}\"]\ninsecure = true\n",
            fake.host()
        ))
        .write(dir.path());
    let v = Verifier::new(&Config::load(&cfg).unwrap()).unwrap();
    for r in [
        format!("{}/demo/app:v1", fake.host()),
        format!("{}/demo/app@{}", fake.host(), good.digest),
    ] {
        let image = ImageRef::parse(&r).unwrap();
        let e = v.verify(&image, &amd64()).await.unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Registry(RegistryError::DigestMismatch { .. })
            ),
            "{r}: {e:?}"
        );
        assert!(e.to_string().contains(&fake.host()), "{e}");
    }
    let _ = Digest::parse(&good.digest).unwrap();
}

#[tokio::test]
async fn with_a_tag_ttl_a_verified_tag_needs_no_registry_until_it_expires() {
    let w = World::new();
    let good = w.reg.push_image(
        "demo/ttl",
        "v1",
        &TinyImage::busybox_marked("amd64", "good"),
    );
    w.sign("demo/ttl", &good.digest, SignOptions::default());
    let with_ttl = || ConfigBuilder::new(&w.reg, SigStack::shared()).tag_ttl("1h");
    let v = w.verifier_with(with_ttl());
    let image = w.image("demo/ttl:v1");
    let first = v.verify(&image, &amd64()).await.unwrap();
    assert!(!first.cache_hit);
    assert_eq!(first.image.digest().as_str(), good.digest);

    // The tag moves to an unsigned image. Within the TTL the tag still means the digest that
    // was verified — in this process and in the next one (the disk cache) ...
    let evil = w.reg.push_image(
        "demo/ttl",
        "evil",
        &TinyImage::busybox_marked("amd64", "evil"),
    );
    w.reg.move_tag("demo/ttl", "v1", &evil.digest);
    for v in [&v, &w.verifier_with(with_ttl())] {
        let again = v.verify(&image, &amd64()).await.unwrap();
        assert!(again.cache_hit);
        assert_eq!(again.image.digest().as_str(), good.digest);
        assert_eq!(
            again.image.pinned_reference(),
            first.image.pinned_reference()
        );
    }
    // ... while the unsigned image itself is refused under its own tag, TTL or not.
    let e = refused(&v, &w.image("demo/ttl:evil")).await;
    assert!(matches!(e, VerifyError::NoSignature { .. }), "{e:?}");
    // With the default (no tag TTL) the same state resolves the tag again and refuses the move
    // (from the refusal of the unsigned digest just cached).
    let e = refused(&w.verifier(), &image).await;
    assert_eq!(e.code().as_str(), "verification_failed", "{e:?}");
    assert!(e.to_string().contains(&evil.digest), "{e}");

    // The hit needs no registry at all: with the registry gone it is still answered.
    let offline = w.verifier_with(with_ttl());
    let World { reg, dir: _dir } = w;
    drop(reg);
    let hit = offline.verify(&image, &amd64()).await.unwrap();
    assert_eq!(hit.image.digest().as_str(), good.digest);
    // A tag never verified is not invented: it needs the (gone) registry and fails.
    let other = ImageRef::parse(&format!("{}:v2", image.name())).unwrap();
    assert!(offline.verify(&other, &amd64()).await.is_err());
}
