//! Air-gapped image sources, all real: busybox images in OCI layouts and OCI archives, signed by
//! the sigstore-js stack on loopback (signatures pushed to docker-registry by `@sigstore/oci` or
//! in the legacy cosign layout, then exported into the layout; or detached bundles), verified by
//! `Verifier::verify_source` against the stack's trusted root. The registry is stopped before a
//! layout is verified wherever that matters: nothing is fetched from the network.

mod layout_support;

use std::path::{Path, PathBuf};

use layout_support::{archive_with_extra, raw_header, LayoutBuilder, OCI_MANIFEST};
use perry_policies::{Config, ImageRef};
use perry_testworld::{
    ConfigBuilder, Layout, Registry, SigStack, SignOptions, TinyImage, TinyIndex, DEFAULT_IDENTITY,
};
use perry_verifier::discover::SignatureLayout;
use perry_verifier::layout::LayoutError;
use perry_verifier::registry::Platform;
use perry_verifier::{ImageSource, Origin, Verification, Verifier, VerifyError};

struct World {
    reg: Registry,
    dir: tempfile::TempDir,
    verifier: Verifier,
}

fn world() -> World {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigBuilder::new(&reg, SigStack::shared()).write(dir.path());
    let verifier = Verifier::new(&Config::load(&cfg).unwrap()).unwrap();
    World { reg, dir, verifier }
}

impl World {
    fn name(&self, repo: &str) -> String {
        format!("{}/{repo}", self.reg.host())
    }

    fn repo(&self, repo: &str) -> ImageRef {
        ImageRef::parse(&self.name(repo)).unwrap()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Pushes `img` to `repo:v1`, signs it there with `opts`, and writes a layout at `dir`
    /// holding the image under `v1` plus the exported signatures.
    async fn signed_layout(
        &self,
        repo: &str,
        img: &TinyImage,
        opts: SignOptions,
        dir: &str,
    ) -> (LayoutBuilder, String) {
        let p = self.reg.push_image(repo, "v1", img);
        SigStack::shared().sign(&self.reg, repo, &p.digest, &opts);
        let mut l = LayoutBuilder::new(&self.path(dir));
        l.image(img, Some("v1"));
        let n = l
            .export_signatures(self.verifier.registry(), &self.repo(repo), &p.digest, None)
            .await;
        assert_eq!(n, 1, "the signature was not exported");
        (l, p.digest)
    }
}

fn oci(dir: &Path, tag: Option<&str>) -> ImageSource {
    let s = match tag {
        Some(t) => format!("oci:{}:{t}", dir.display()),
        None => format!("oci:{}", dir.display()),
    };
    ImageSource::parse(&s).unwrap()
}

fn archive(file: &Path, tag: Option<&str>) -> ImageSource {
    let s = match tag {
        Some(t) => format!("oci-archive:{}:{t}", file.display()),
        None => format!("oci-archive:{}", file.display()),
    };
    ImageSource::parse(&s).unwrap()
}

async fn verify(
    v: &Verifier,
    src: &ImageSource,
    name: &str,
    bundle: Option<&Path>,
) -> Result<Verification, VerifyError> {
    v.verify_source(src, Some(name), &Platform::default(), bundle)
        .await
}

async fn refused(
    v: &Verifier,
    src: &ImageSource,
    name: &str,
    bundle: Option<&Path>,
) -> VerifyError {
    match verify(v, src, name, bundle).await {
        Ok(ok) => panic!("{src} verified but must be refused: {}", ok.image),
        Err(e) => e,
    }
}

#[tokio::test]
async fn signed_layout_verifies_and_its_decision_never_answers_for_the_registry() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-ok");
    let (l, digest) = w
        .signed_layout("lay/ok", &img, SignOptions::default(), "layout")
        .await;
    let name = w.name("lay/ok");
    let canon = std::fs::canonicalize(&l.dir).unwrap();

    let ok = verify(&w.verifier, &oci(&l.dir, Some("v1")), &name, None)
        .await
        .unwrap();
    assert!(!ok.cache_hit);
    let vi = &ok.image;
    assert_eq!(vi.platform_digest().as_str(), digest);
    assert_eq!(vi.digest().as_str(), digest);
    assert_eq!(*vi.origin(), Origin::OciLayout(canon.clone()));
    assert_eq!(*vi.layout(), SignatureLayout::ReferrersTag);
    assert_eq!(vi.signer_identity(), DEFAULT_IDENTITY);
    assert_eq!(vi.pinned_reference(), format!("{name}@{digest}"));
    // No tag: the layout's only image.
    let untagged = verify(&w.verifier, &oci(&l.dir, None), &name, None)
        .await
        .unwrap();
    assert_eq!(untagged.image.platform_digest().as_str(), digest);
    assert!(untagged.cache_hit);

    // The same digest from the registry: decided on its own (not served by the layout's
    // decision), and recorded as a registry image.
    let reg = w
        .verifier
        .verify(
            &w.repo("lay/ok").with_tag("v1").unwrap(),
            &Platform::default(),
        )
        .await
        .unwrap();
    assert!(
        !reg.cache_hit,
        "a layout decision answered for a registry image"
    );
    assert_eq!(*reg.image.origin(), Origin::Registry);
    // ... and the layout's decision is still its own, after a new process reads the disk cache.
    w.verifier.cache().clear_memory();
    let again = verify(&w.verifier, &oci(&l.dir, Some("v1")), &name, None)
        .await
        .unwrap();
    assert!(again.cache_hit);
    assert_eq!(*again.image.origin(), Origin::OciLayout(canon));
    let reg_again = w
        .verifier
        .verify(
            &w.repo("lay/ok").with_tag("v1").unwrap(),
            &Platform::default(),
        )
        .await
        .unwrap();
    assert!(reg_again.cache_hit);
    assert_eq!(*reg_again.image.origin(), Origin::Registry);
}

#[tokio::test]
async fn layout_is_verified_with_the_registry_gone() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-offline");
    let (l, digest) = w
        .signed_layout("lay/offline", &img, SignOptions::default(), "layout")
        .await;
    let name = w.name("lay/offline");
    let World { reg, dir, verifier } = w;
    drop(reg); // air gap
    let ok = verify(&verifier, &oci(&l.dir, Some("v1")), &name, None)
        .await
        .unwrap();
    assert_eq!(ok.image.platform_digest().as_str(), digest);
    // And as an OCI archive.
    let tar = dir.path().join("img.tar");
    l.to_archive(&tar);
    let ok = verify(&verifier, &archive(&tar, Some("v1")), &name, None)
        .await
        .unwrap();
    assert!(
        !ok.cache_hit,
        "an archive decision must not reuse the directory's"
    );
    assert_eq!(
        *ok.image.origin(),
        Origin::OciArchive(std::fs::canonicalize(&tar).unwrap())
    );
    assert_eq!(ok.image.platform_digest().as_str(), digest);
}

#[tokio::test]
async fn legacy_sig_in_a_layout_verifies_and_must_name_the_given_repository() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-legacy");
    let opts = SignOptions {
        layout: Layout::LegacySig,
        ..Default::default()
    };
    let (l, digest) = w.signed_layout("lay/legacy", &img, opts, "layout").await;
    let ok = verify(
        &w.verifier,
        &oci(&l.dir, Some("v1")),
        &w.name("lay/legacy"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(*ok.image.layout(), SignatureLayout::LegacySig);
    assert_eq!(ok.image.platform_digest().as_str(), digest);
    // The same layout claimed to be another repository (which the trust rule also covers):
    // the payload's docker-reference says otherwise.
    let e = refused(
        &w.verifier,
        &oci(&l.dir, Some("v1")),
        &w.name("lay/other"),
        None,
    )
    .await;
    assert!(e.to_string().contains("names repository"), "{e}");
}

#[tokio::test]
async fn unsigned_layout_is_refused_and_says_where_it_looked() {
    let w = world();
    let mut l = LayoutBuilder::new(&w.path("layout"));
    let d = l.image(
        &TinyImage::busybox_marked("amd64", "lay-unsigned"),
        Some("v1"),
    );
    let e = refused(
        &w.verifier,
        &oci(&l.dir, Some("v1")),
        &w.name("lay/unsigned"),
        None,
    )
    .await;
    match &e {
        VerifyError::NoSignature { looked_in } => {
            let hex = d.trim_start_matches("sha256:");
            let all = looked_in.join("\n");
            assert!(
                all.contains(&format!(
                    "oci:{}",
                    std::fs::canonicalize(&l.dir).unwrap().display()
                )),
                "{all}"
            );
            assert!(
                all.contains(&format!("sha256-{hex} (no such tag)")),
                "{all}"
            );
            assert!(
                all.contains(&format!("sha256-{hex}.sig (no such tag)")),
                "{all}"
            );
            assert!(!all.contains("referrers API"), "{all}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.code().as_str(), "verification_failed");
}

#[tokio::test]
async fn signatures_of_another_digest_are_refused() {
    let w = world();
    // A: signed. B: not. The attacker copies A's signature index into B's layout as B's.
    let a = TinyImage::busybox_marked("amd64", "lay-a");
    let b = TinyImage::busybox_marked("amd64", "lay-b");
    let pa = w.reg.push_image("lay/ab", "a", &a);
    SigStack::shared().sign(&w.reg, "lay/ab", &pa.digest, &SignOptions::default());
    let mut l = LayoutBuilder::new(&w.path("relabelled"));
    let db = l.image(&b, Some("v1"));
    l.image_blobs(&a);
    l.export_signatures(
        w.verifier.registry(),
        &w.repo("lay/ab"),
        &pa.digest,
        Some(&db),
    )
    .await;
    let e = refused(
        &w.verifier,
        &oci(&l.dir, Some("v1")),
        &w.name("lay/ab"),
        None,
    )
    .await;
    assert!(
        matches!(&e, VerifyError::DigestMismatch { signed, image } if signed == &pa.digest && image == &db),
        "{e}"
    );

    // A statement about A, attached (by the signer) to B.
    let pb = w.reg.push_image("lay/ab", "b", &b);
    let opts = SignOptions {
        subject_digest: Some(pa.digest.clone()),
        ..Default::default()
    };
    SigStack::shared().sign(&w.reg, "lay/ab", &pb.digest, &opts);
    let mut l = LayoutBuilder::new(&w.path("wrong-subject"));
    l.image(&b, Some("v1"));
    l.export_signatures(w.verifier.registry(), &w.repo("lay/ab"), &pb.digest, None)
        .await;
    let e = refused(
        &w.verifier,
        &oci(&l.dir, Some("v1")),
        &w.name("lay/ab"),
        None,
    )
    .await;
    assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
}

#[tokio::test]
async fn a_tag_pointing_at_an_unsigned_manifest_is_refused() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-tags");
    let (mut l, _) = w
        .signed_layout("lay/tags", &img, SignOptions::default(), "layout")
        .await;
    let other = TinyImage::busybox_marked("amd64", "lay-tags-unsigned");
    let d2 = l.image(&other, Some("v2"));
    let name = w.name("lay/tags");
    assert!(verify(&w.verifier, &oci(&l.dir, Some("v1")), &name, None)
        .await
        .is_ok());
    let e = refused(&w.verifier, &oci(&l.dir, Some("v2")), &name, None).await;
    assert!(matches!(e, VerifyError::NoSignature { .. }), "{e}");
    // Retarget the signed tag at the unsigned manifest.
    for e in &mut l.entries {
        if e["annotations"]["org.opencontainers.image.ref.name"] == "v1" {
            e["digest"] = d2.clone().into();
            e["size"] = other.manifest.len().into();
        }
    }
    l.write_index();
    let e = refused(&w.verifier, &oci(&l.dir, Some("v1")), &name, None).await;
    // (Served from the negative cache: the same content was refused as v2 just before.)
    assert!(e.to_string().starts_with("no signature found"), "{e}");
    // Two images and no tag: an error listing the tags, nothing chosen.
    let e = refused(&w.verifier, &oci(&l.dir, None), &name, None).await;
    let s = e.to_string();
    assert!(
        s.contains("several images") && s.contains("v1") && s.contains("v2"),
        "{s}"
    );
    // An unknown tag lists the tags there are (signature tags are not images).
    let e = refused(&w.verifier, &oci(&l.dir, Some("v9")), &name, None).await;
    let s = e.to_string();
    assert!(
        s.contains("`v9`") && s.contains("v1, v2") && !s.contains("sha256-"),
        "{s}"
    );
    assert_eq!(e.code().as_str(), "not_found");
}

#[tokio::test]
async fn a_name_is_required_and_must_be_a_plain_repository() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-name");
    let (l, _) = w
        .signed_layout("lay/name", &img, SignOptions::default(), "layout")
        .await;
    let src = oci(&l.dir, Some("v1"));
    let e = w
        .verifier
        .verify_source(&src, None, &Platform::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, VerifyError::NameRequired { .. }), "{e}");
    let s = e.to_string();
    assert!(
        s.contains(&src.to_string()) && s.contains("name its signatures were made for"),
        "{s}"
    );
    assert_eq!(e.code().as_str(), "invalid_argument");
    assert!(!e.is_denial());
    for bad in [
        format!("{}:v1", w.name("lay/name")),
        format!(
            "{}@{}",
            w.name("lay/name"),
            "sha256:".to_string() + &"0".repeat(64)
        ),
    ] {
        let e = refused(&w.verifier, &src, &bad, None).await;
        assert!(matches!(e, VerifyError::BadName { .. }), "{bad}: {e}");
    }
    // A name no trust rule covers: denied by default.
    let e = refused(&w.verifier, &src, "example.invalid/lay/name", None).await;
    assert!(matches!(e, VerifyError::NoTrustRule { .. }), "{e}");
    // Registry references: the name, if given, must agree.
    let r = ImageSource::parse(&format!("{}:v1", w.name("lay/name"))).unwrap();
    assert!(w
        .verifier
        .verify_source(&r, None, &Platform::default(), None)
        .await
        .is_ok());
    let e = refused(&w.verifier, &r, &w.name("lay/other"), None).await;
    assert!(matches!(e, VerifyError::BadName { .. }), "{e}");
}

#[tokio::test]
async fn altered_or_hostile_layout_files_are_refused() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-tamper");
    let (l, digest) = w
        .signed_layout("lay/tamper", &img, SignOptions::default(), "layout")
        .await;
    let name = w.name("lay/tamper");
    let src = oci(&l.dir, Some("v1"));
    // The manifest blob altered after signing (same size): its digest no longer matches.
    let path = l.blob_path(&digest);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let i = bad.iter().position(|b| *b == b'2').unwrap(); // schemaVersion 2 -> 3
    bad[i] = b'3';
    std::fs::write(&path, &bad).unwrap();
    let e = refused(&w.verifier, &src, &name, None).await;
    assert!(
        matches!(e, VerifyError::Layout(LayoutError::DigestMismatch { .. })),
        "{e}"
    );
    assert!(
        e.to_string().contains(digest.trim_start_matches("sha256:")),
        "{e}"
    );
    // A symlink in place of the blob (even one pointing at the right bytes).
    let real = w.path("manifest.json");
    std::fs::write(&real, &good).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let e = refused(&w.verifier, &src, &name, None).await;
    assert!(
        matches!(e, VerifyError::Layout(LayoutError::NotRegularFile { .. })),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &good).unwrap();
    assert!(verify(&w.verifier, &src, &name, None).await.is_ok());
    // Not a layout: wrong version, missing oci-layout.
    std::fs::write(
        l.dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let e = refused(&w.verifier, &oci(&l.dir, Some("v1")), &name, None).await;
    assert!(e.to_string().contains("imageLayoutVersion"), "{e}");
    std::fs::remove_file(l.dir.join("oci-layout")).unwrap();
    let e = refused(&w.verifier, &oci(&l.dir, Some("v1")), &name, None).await;
    assert!(e.to_string().contains("no `oci-layout` file"), "{e}");
    // A broken index.json names where.
    std::fs::write(
        l.dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        l.dir.join("index.json"),
        br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:xyz","size":1}]}"#,
    )
    .unwrap();
    let e = refused(&w.verifier, &oci(&l.dir, Some("v1")), &name, None).await;
    let s = e.to_string();
    assert!(
        s.contains("index.json") && s.contains("manifests[0].digest"),
        "{s}"
    );
}

#[tokio::test]
async fn multi_platform_index_in_a_layout_selects_the_platform() {
    let w = world();
    let idx = TinyIndex::two_platform("lay-multi");
    let p = w.reg.push_index("lay/multi", "v1", &idx);
    SigStack::shared().sign(&w.reg, "lay/multi", &p.digest, &SignOptions::default());
    let mut l = LayoutBuilder::new(&w.path("layout"));
    l.index(&idx, Some("v1"));
    l.export_signatures(w.verifier.registry(), &w.repo("lay/multi"), &p.digest, None)
        .await;
    let arm: Platform = "linux/arm64".parse().unwrap();
    let ok = w
        .verifier
        .verify_source(
            &oci(&l.dir, Some("v1")),
            Some(&w.name("lay/multi")),
            &arm,
            None,
        )
        .await
        .unwrap();
    assert_eq!(ok.image.digest().as_str(), p.digest);
    assert_eq!(
        ok.image.platform_digest().as_str(),
        idx.image("arm64").digest()
    );
    assert!(ok.image.signed_on_index());
    let s390: Platform = "linux/s390x".parse().unwrap();
    let e = w
        .verifier
        .verify_source(
            &oci(&l.dir, Some("v1")),
            Some(&w.name("lay/multi")),
            &s390,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, VerifyError::Layout(LayoutError::NoPlatform { .. })),
        "{e}"
    );
}

#[tokio::test]
async fn detached_bundle_verifies_an_unsigned_layout_and_a_wrong_one_is_refused() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-detached");
    let mut l = LayoutBuilder::new(&w.path("layout"));
    let d = l.image(&img, Some("v1"));
    let name = w.name("lay/detached");
    let stack = SigStack::shared();
    let good = w.path("good.sigstore.json");
    let bundle = stack.sign_detached(&name, &d, &SignOptions::default());
    std::fs::write(&good, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let src = oci(&l.dir, Some("v1"));

    let ok = verify(&w.verifier, &src, &name, Some(&good)).await.unwrap();
    assert_eq!(*ok.image.layout(), SignatureLayout::Detached);
    assert_eq!(ok.image.platform_digest().as_str(), d);
    assert_eq!(ok.image.signer_identity(), DEFAULT_IDENTITY);
    // Without the bundle the layout is unsigned: the bundle's decision does not carry over.
    let e = refused(&w.verifier, &src, &name, None).await;
    assert!(matches!(e, VerifyError::NoSignature { .. }), "{e}");

    // A valid bundle for another image's digest.
    let other = TinyImage::busybox_marked("amd64", "lay-detached-other").digest();
    let wrong = w.path("wrong.sigstore.json");
    let b = stack.sign_detached(&name, &other, &SignOptions::default());
    std::fs::write(&wrong, serde_json::to_vec(&b).unwrap()).unwrap();
    let e = refused(&w.verifier, &src, &name, Some(&wrong)).await;
    assert!(
        matches!(&e, VerifyError::DigestMismatch { signed, .. } if signed == &other),
        "{e}"
    );
    // A bundle for this digest by a signer the policy does not trust.
    let mallory = w.path("mallory.sigstore.json");
    let opts = SignOptions {
        identity: Some(
            "https://github.com/mallory/x/.github/workflows/r.yml@refs/heads/main".into(),
        ),
        ..Default::default()
    };
    std::fs::write(
        &mallory,
        serde_json::to_vec(&stack.sign_detached(&name, &d, &opts)).unwrap(),
    )
    .unwrap();
    let e = refused(&w.verifier, &src, &name, Some(&mallory)).await;
    assert!(matches!(e, VerifyError::IdentityMismatch { .. }), "{e}");
    // A tampered bundle (statement changed after signing).
    let tampered = w.path("tampered.sigstore.json");
    let opts = SignOptions {
        tamper: true,
        ..Default::default()
    };
    std::fs::write(
        &tampered,
        serde_json::to_vec(&stack.sign_detached(&name, &d, &opts)).unwrap(),
    )
    .unwrap();
    assert!(refused(&w.verifier, &src, &name, Some(&tampered))
        .await
        .is_denial());
    // Garbage and missing files.
    let junk = w.path("junk.json");
    std::fs::write(&junk, b"{not json").unwrap();
    let e = refused(&w.verifier, &src, &name, Some(&junk)).await;
    assert!(matches!(e, VerifyError::Malformed { .. }), "{e}");
    let e = refused(&w.verifier, &src, &name, Some(&w.path("nope.json"))).await;
    assert!(matches!(e, VerifyError::BundleFile { .. }), "{e}");

    // Detached bundles work for registry images too (pushed unsigned).
    let p = w.reg.push_image("lay/detached", "v1", &img);
    assert_eq!(p.digest, d);
    let r = ImageSource::parse(&format!("{name}:v1")).unwrap();
    let ok = verify(&w.verifier, &r, &name, Some(&good)).await.unwrap();
    assert_eq!(*ok.image.origin(), Origin::Registry);
    assert_eq!(*ok.image.layout(), SignatureLayout::Detached);
    assert!(refused(&w.verifier, &r, &name, Some(&wrong))
        .await
        .is_denial());
    assert!(matches!(
        refused(&w.verifier, &r, &name, None).await,
        VerifyError::NoSignature { .. }
    ));
}

#[tokio::test]
async fn hostile_archives_are_refused_whole() {
    let w = world();
    let img = TinyImage::busybox_marked("amd64", "lay-archive");
    let (l, _) = w
        .signed_layout("lay/archive", &img, SignOptions::default(), "layout")
        .await;
    let name = w.name("lay/archive");
    let good = w.path("good.tar");
    l.to_archive(&good);
    assert!(
        verify(&w.verifier, &archive(&good, Some("v1")), &name, None)
            .await
            .is_ok()
    );

    let cases: Vec<HostileCase> = vec![
        (
            "dotdot",
            raw_header("../evil", tar::EntryType::Regular, 4),
            b"evil",
            None,
            "path traversal",
        ),
        (
            "dotdot-deep",
            raw_header("blobs/../../evil", tar::EntryType::Regular, 4),
            b"evil",
            None,
            "path traversal",
        ),
        (
            "absolute",
            raw_header("/etc/evil", tar::EntryType::Regular, 4),
            b"evil",
            None,
            "absolute",
        ),
        (
            "symlink",
            raw_header("blobs/sha256/link", tar::EntryType::Symlink, 0),
            b"",
            Some("/etc/passwd"),
            "links are refused",
        ),
        (
            "hardlink",
            raw_header("index2.json", tar::EntryType::Link, 0),
            b"",
            Some("index.json"),
            "links are refused",
        ),
        (
            "device",
            raw_header("blobs/sha256/dev", tar::EntryType::Char, 0),
            b"",
            None,
            "device",
        ),
        (
            "fifo",
            raw_header("fifo", tar::EntryType::Fifo, 0),
            b"",
            None,
            "FIFO",
        ),
        (
            "unknown",
            raw_header("README", tar::EntryType::Regular, 2),
            b"hi",
            None,
            "unexpected file",
        ),
        (
            "uppercase-hex",
            raw_header(
                &format!("blobs/sha256/{}", "A".repeat(64)),
                tar::EntryType::Regular,
                2,
            ),
            b"hi",
            None,
            "unexpected file",
        ),
    ];
    for (label, h, data, link, why) in cases {
        let file = w.path(&format!("{label}.tar"));
        archive_with_extra(&l, &file, h, data, link);
        let e = refused(&w.verifier, &archive(&file, Some("v1")), &name, None).await;
        assert!(
            matches!(e, VerifyError::Layout(LayoutError::UnsafeEntry { .. })),
            "{label}: {e}"
        );
        assert!(e.to_string().contains(why), "{label}: {e}");
    }
    // A duplicate blob entry (a second copy could differ from what was indexed first).
    let dup = w.path("dup.tar");
    let index_bytes = std::fs::read(l.dir.join("index.json")).unwrap();
    archive_with_extra(
        &l,
        &dup,
        raw_header(
            "index.json",
            tar::EntryType::Regular,
            index_bytes.len() as u64,
        ),
        &index_bytes,
        None,
    );
    let e = refused(&w.verifier, &archive(&dup, Some("v1")), &name, None).await;
    assert!(e.to_string().contains("duplicate"), "{e}");
    // Compressed archives get a clear error.
    let gz = w.path("img.tar.gz");
    std::fs::write(&gz, flate2_free_gzip(&std::fs::read(&good).unwrap())).unwrap();
    let e = refused(&w.verifier, &archive(&gz, Some("v1")), &name, None).await;
    assert!(e.to_string().contains("compressed"), "{e}");
    // A directory named as an archive and vice versa.
    let e = refused(&w.verifier, &archive(&l.dir, Some("v1")), &name, None).await;
    assert!(
        matches!(e, VerifyError::Layout(LayoutError::NotRegularFile { .. })),
        "{e}"
    );
    let e = refused(&w.verifier, &oci(&good, Some("v1")), &name, None).await;
    assert!(e.to_string().contains("not a directory"), "{e}");
    // Missing.
    let e = refused(
        &w.verifier,
        &archive(&w.path("nope.tar"), None),
        &name,
        None,
    )
    .await;
    assert_eq!(e.code().as_str(), "not_found", "{e}");
    // Nothing was extracted anywhere: the state dir holds only the cache.
    let state: Vec<_> = std::fs::read_dir(w.path("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(state, vec!["verify-cache".to_string()], "{state:?}");
}

/// (label, hostile entry header, its data, link target, what the refusal must say)
type HostileCase<'a> = (&'a str, tar::Header, &'a [u8], Option<&'a str>, &'a str);

/// A gzip member header in front of the bytes is all the sniffing needs (no gzip dependency).
fn flate2_free_gzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(bytes);
    out
}

#[test]
fn an_image_manifest_entry_is_required_to_be_listed_with_its_size() {
    // Pure layout reading (no world): a size in index.json that disagrees with the blob.
    let dir = tempfile::tempdir().unwrap();
    let mut l = LayoutBuilder::new(dir.path());
    let img = TinyImage::busybox_marked("amd64", "lay-size");
    let d = l.image_blobs(&img);
    l.entry(OCI_MANIFEST, &d, img.manifest.len() + 1, Some("v1"));
    let layout = perry_verifier::OciLayout::open_dir(dir.path()).unwrap();
    assert_eq!(layout.tags(), vec!["v1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt
        .block_on(perry_verifier::source::ContentSource::manifest(
            &layout,
            perry_verifier::source::TagOrDigest::Tag("v1"),
        ))
        .unwrap_err();
    assert!(matches!(e, LayoutError::SizeMismatch { .. }), "{e}");
}
