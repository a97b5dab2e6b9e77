//! ImageStore::pull for images verified from OCI layouts and archives: the bytes come from the
//! layout the image was verified from (the registry is stopped first), every blob is hashed on
//! its way into the store, and a blob altered after verification is refused with nothing kept.

#[path = "../../verifier/tests/layout_support/mod.rs"]
mod layout_support;

use std::path::Path;

use layout_support::LayoutBuilder;
use perry_policies::{Config, ImageRef};
use perry_runtime::pull::{ImageStore, PullError};
use perry_runtime::store::StoreError;
use perry_runtime::unpack::Limits;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};
use perry_verifier::registry::Platform;
use perry_verifier::{ImageSource, LayoutError, Origin, VerifiedImage, Verifier};

struct Fixture {
    dir: tempfile::TempDir,
    verifier: Verifier,
    layout: LayoutBuilder,
    image: TinyImage,
    name: String,
}

/// A signed busybox layout in a temp dir, and a verifier trusting the loopback stack. The
/// registry used to sign is gone when this returns.
async fn fixture(marker: &str) -> Fixture {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigBuilder::new(&reg, SigStack::shared()).write(dir.path());
    let verifier = Verifier::new(&Config::load(&cfg).unwrap()).unwrap();
    let repo = format!("pull/{marker}");
    let image = TinyImage::busybox_marked("amd64", marker);
    let p = reg.push_image(&repo, "v1", &image);
    SigStack::shared().sign(&reg, &repo, &p.digest, &SignOptions::default());
    let mut layout = LayoutBuilder::new(&dir.path().join("layout"));
    layout.image(&image, Some("v1"));
    let name = format!("{}/{repo}", reg.host());
    let n = layout
        .export_signatures(
            verifier.registry(),
            &ImageRef::parse(&name).unwrap(),
            &p.digest,
            None,
        )
        .await;
    assert_eq!(n, 1);
    drop(reg); // air gap: from here on nothing can come from the registry
    Fixture {
        dir,
        verifier,
        layout,
        image,
        name,
    }
}

impl Fixture {
    async fn verify(&self, src: &str) -> VerifiedImage {
        self.verifier
            .verify_source(
                &ImageSource::parse(src).unwrap(),
                Some(&self.name),
                &Platform::default(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .image
    }

    fn store(&self) -> ImageStore {
        ImageStore::open_in(&self.dir.path().join("state"), Limits::default()).unwrap()
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_layout_pulls_into_a_rootfs_without_the_registry() {
    let f = fixture("layout-ok").await;
    let v = f
        .verify(&format!("oci:{}:v1", f.layout.dir.display()))
        .await;
    assert!(matches!(v.origin(), Origin::OciLayout(_)));
    let store = f.store();
    let pulled = store.pull(f.verifier.registry(), &v).await.unwrap();
    assert_eq!(pulled.digest().as_str(), f.image.digest());
    assert_eq!(
        pulled.fetched(),
        3,
        "manifest, config and layer come from the layout"
    );
    let marker = std::fs::read_to_string(pulled.path().join("etc/perry-marker")).unwrap();
    assert_eq!(marker, "layout-ok\n");
    assert!(pulled.path().join("bin/busybox").is_file());
    for d in [
        f.image.digest(),
        f.image.digest_of_config(),
        f.image.digest_of_layer(),
    ] {
        let d = perry_policies::Digest::parse(&d).unwrap();
        assert!(store.blobs().contains(&d), "{d} not stored");
    }
    let again = store.pull(f.verifier.registry(), &v).await.unwrap();
    assert_eq!(again.fetched(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_archive_pulls_into_a_rootfs() {
    let f = fixture("archive-ok").await;
    let tar = f.dir.path().join("img.tar");
    f.layout.to_archive(&tar);
    // The directory is gone: the archive is the only copy.
    std::fs::remove_dir_all(&f.layout.dir).unwrap();
    let v = f.verify(&format!("oci-archive:{}:v1", tar.display())).await;
    assert!(matches!(v.origin(), Origin::OciArchive(_)));
    let pulled = f.store().pull(f.verifier.registry(), &v).await.unwrap();
    assert_eq!(pulled.fetched(), 3);
    let marker = std::fs::read_to_string(pulled.path().join("etc/perry-marker")).unwrap();
    assert_eq!(marker, "archive-ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_altered_after_verification_is_refused_and_nothing_is_kept() {
    let f = fixture("layout-tampered").await;
    let v = f
        .verify(&format!("oci:{}:v1", f.layout.dir.display()))
        .await;
    // After verification (which does not read layers), flip one byte of the layer: same size.
    let layer = f.layout.blob_path(&f.image.digest_of_layer());
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, &bytes).unwrap();
    let store = f.store();
    let e = store.pull(f.verifier.registry(), &v).await.unwrap_err();
    let layer_digest = perry_policies::Digest::parse(&f.image.digest_of_layer()).unwrap();
    match &e {
        PullError::Store(StoreError::DigestMismatch { expected, .. }) => {
            assert_eq!(expected, &layer_digest)
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(
        !store.blobs().contains(&layer_digest),
        "the altered layer was stored"
    );
    assert!(
        temp_files(store.blobs().dir()).is_empty(),
        "a temp file was left behind"
    );
    let rootfs = f.dir.path().join("state/rootfs");
    let unpacked: Vec<_> = std::fs::read_dir(&rootfs)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !unpacked
            .iter()
            .any(|n| n.to_string_lossy().contains(v.platform_digest().hex())),
        "a rootfs was created: {unpacked:?}"
    );
    // A grown layer (appended bytes) is refused too, before a byte is copied: it is larger
    // than the size the verified manifest gives it.
    bytes[mid] ^= 0xff;
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&layer, &bytes).unwrap();
    let e = store.pull(f.verifier.registry(), &v).await.unwrap_err();
    assert!(
        matches!(
            e,
            PullError::Layout {
                source: LayoutError::TooLarge { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(!store.blobs().contains(&layer_digest));
    // Restored: the same VerifiedImage now pulls.
    bytes.truncate(bytes.len() - b"trailing".len());
    std::fs::write(&layer, &bytes).unwrap();
    assert!(store.pull(f.verifier.registry(), &v).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_removed_after_verification_fails_the_pull_cleanly() {
    let f = fixture("layout-gone").await;
    let v = f
        .verify(&format!("oci:{}:v1", f.layout.dir.display()))
        .await;
    std::fs::remove_dir_all(&f.layout.dir).unwrap();
    let e = f.store().pull(f.verifier.registry(), &v).await.unwrap_err();
    assert!(matches!(e, PullError::Layout { .. }), "{e}");
    assert!(e.to_string().contains("oci:"), "{e}");
}
