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
    let (img, v) = signed_and_verified(&w, "pull/app", "pull").await;
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
        assert_eq!(pulled.digest().as_str(), img.digest());
        fetched += pulled.fetched();
        paths.push(pulled.path().to_path_buf());
    }
    // manifest + config + one layer, each fetched by exactly one of the six pulls.
    assert_eq!(fetched, 3, "concurrent pulls were not coalesced");
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert!(paths[0].join("etc/perry-marker").is_file());
    assert!(paths[0].join("proc").is_dir() && paths[0].join("dev").is_dir());
    // Pulling again fetches nothing: the store is by digest.
    let again = store.pull(verifier.registry(), &v).await.unwrap();
    assert_eq!(again.fetched(), 0);
    assert!(!again.fresh());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_after_verification_changes_nothing_pulled() {
    let w = world();
    let (img, v) = signed_and_verified(&w, "pull/moved", "first").await;
    let other = w.reg.push_image(
        "pull/moved",
        "other",
        &TinyImage::busybox_marked("amd64", "second"),
    );
    w.reg.move_tag("pull/moved", "v1", &other.digest);
    let store = ImageStore::open_in(&w.dir.path().join("state"), Limits::default()).unwrap();
    let pulled = store.pull(w.verifier.registry(), &v).await.unwrap();
    assert_eq!(pulled.digest().as_str(), img.digest());
    let marker = std::fs::read_to_string(pulled.path().join("etc/perry-marker")).unwrap();
    assert_eq!(marker, "first\n", "the moved tag's image was pulled");
}

/// Pushes a busybox image marked `marker` to `repo:v1`, signs it and verifies it.
async fn signed_and_verified(
    w: &World,
    repo: &str,
    marker: &str,
) -> (TinyImage, perry_verifier::VerifiedImage) {
    let img = TinyImage::busybox_marked("amd64", marker);
    let p = w.reg.push_image(repo, "v1", &img);
    SigStack::shared().sign(&w.reg, repo, &p.digest, &SignOptions::default());
    let image = perry_policies::ImageRef::parse(&format!("{}/{repo}:v1", w.reg.host())).unwrap();
    let v = w
        .verifier
        .verify(&image, &Platform::default())
        .await
        .unwrap()
        .image;
    (img, v)
}

/// Records what a pull reports, per blob.
#[derive(Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<(String, String, u64)>>,
}

impl perry_runtime::pull::PullProgress for Recorder {
    fn start(&self, d: &perry_policies::Digest, size: Option<u64>) {
        let ev = ("start".into(), d.to_string(), size.unwrap_or(0));
        self.events.lock().unwrap().push(ev);
    }
    fn advance(&self, d: &perry_policies::Digest, n: u64) {
        let ev = ("bytes".into(), d.to_string(), n);
        self.events.lock().unwrap().push(ev);
    }
    fn finish(&self, d: &perry_policies::Digest, ok: bool) {
        let ev = ("finish".into(), d.to_string(), u64::from(ok));
        self.events.lock().unwrap().push(ev);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_stream_into_the_store_and_report_progress() {
    let w = world();
    let (img, v) = signed_and_verified(&w, "pull/progress", "progress").await;
    let rec = Arc::new(Recorder::default());
    let store = ImageStore::open_in(&w.dir.path().join("state"), Limits::default())
        .unwrap()
        .with_progress(rec.clone());
    let pulled = store.pull(w.verifier.registry(), &v).await.unwrap();
    assert!(pulled.path().join("bin/busybox").is_file());
    let layer = img.digest_of_layer();
    let events = rec.events.lock().unwrap().clone();
    let of = |kind: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|(k, d, _)| k == kind && *d == layer)
            .map(|(_, _, n)| *n)
            .collect()
    };
    let stored = std::fs::metadata(
        w.dir
            .path()
            .join("state/blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();
    assert_eq!(of("start"), vec![stored], "{events:?}");
    assert_eq!(of("bytes").iter().sum::<u64>(), stored, "{events:?}");
    assert_eq!(of("finish"), vec![1], "{events:?}");
    // Nothing temporary is left in the store.
    let temps = std::fs::read_dir(w.dir.path().join("state/blobs/sha256"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count();
    assert_eq!(temps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_altered_in_the_registry_after_verification_keeps_nothing() {
    let w = world();
    let (img, v) = signed_and_verified(&w, "pull/altered", "altered").await;
    // The registry's storage is changed under the verified digest: same size, other bytes.
    let layer = img.digest_of_layer();
    let data = w.reg.blob_data_path(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let store = ImageStore::open_in(&w.dir.path().join("state"), Limits::default()).unwrap();
    let e = store.pull(w.verifier.registry(), &v).await.unwrap_err();
    assert!(e.to_string().contains("digest"), "{e}");
    let blobs = w.dir.path().join("state/blobs/sha256");
    let names: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let hex = layer.trim_start_matches("sha256:");
    assert!(!names.iter().any(|n| n.contains(hex)), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "{names:?}");
    let rootfs = w.dir.path().join("state/rootfs");
    assert_eq!(
        std::fs::read_dir(&rootfs).map(|d| d.count()).unwrap_or(0),
        0
    );
}
