//! ImageStore::pull against the real test world: a busybox image on a loopback docker-registry,
//! signed by the sigstore-js mock stack and verified by `perry_verifier::Verifier` — the only way
//! to obtain the `VerifiedImage` that `pull` demands.

use std::sync::Arc;

use perry_policies::Config;
use perry_runtime::pull::ImageStore;
use perry_runtime::unpack::Limits;
use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};
use perry_verifier::registry::Platform;
use perry_verifier::Verifier;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let w = world();
    let p = w.reg.push_image(
        "pull/app",
        "v1",
        &TinyImage::busybox_marked("amd64", "pull"),
    );
    SigStack::shared().sign(&w.reg, "pull/app", &p.digest, &SignOptions::default());
    let image = perry_policies::ImageRef::parse(&format!("{}/pull/app:v1", w.reg.host())).unwrap();
    let v = w
        .verifier
        .verify(&image, &Platform::default())
        .await
        .unwrap()
        .image;
    let store = ImageStore::open_in(&w.dir.path().join("state"), Limits::default()).unwrap();
    let verifier = Arc::new(w.verifier);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, verifier, v) = (store.clone(), Arc::clone(&verifier), v.clone());
        tasks.push(tokio::spawn(async move {
            store.pull(verifier.registry(), &v).await
        }));
    }
    let mut fetched = 0;
    let mut paths = Vec::new();
    for t in tasks {
        let pulled = t.await.unwrap().unwrap();
        assert_eq!(pulled.manifest_digest.as_str(), p.digest);
        fetched += pulled.fetched;
        paths.push(pulled.rootfs.path);
    }
    // manifest + config + one layer, each fetched by exactly one of the six pulls.
    assert_eq!(fetched, 3, "concurrent pulls were not coalesced");
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert!(paths[0].join("etc/perry-marker").is_file());
    assert!(paths[0].join("proc").is_dir() && paths[0].join("dev").is_dir());
    // Pulling again fetches nothing: the store is by digest.
    let again = store.pull(verifier.registry(), &v).await.unwrap();
    assert_eq!(again.fetched, 0);
    assert!(!again.rootfs.fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_after_verification_changes_nothing_pulled() {
    let w = world();
    let p = w.reg.push_image(
        "pull/moved",
        "v1",
        &TinyImage::busybox_marked("amd64", "first"),
    );
    SigStack::shared().sign(&w.reg, "pull/moved", &p.digest, &SignOptions::default());
    let image =
        perry_policies::ImageRef::parse(&format!("{}/pull/moved:v1", w.reg.host())).unwrap();
    let v = w
        .verifier
        .verify(&image, &Platform::default())
        .await
        .unwrap()
        .image;
    let other = w.reg.push_image(
        "pull/moved",
        "other",
        &TinyImage::busybox_marked("amd64", "second"),
    );
    w.reg.move_tag("pull/moved", "v1", &other.digest);
    let store = ImageStore::open_in(&w.dir.path().join("state"), Limits::default()).unwrap();
    let pulled = store.pull(w.verifier.registry(), &v).await.unwrap();
    assert_eq!(pulled.manifest_digest.as_str(), p.digest);
    let marker = std::fs::read_to_string(pulled.rootfs.path.join("etc/perry-marker")).unwrap();
    assert_eq!(marker, "first\n", "the moved tag's image was pulled");
}
