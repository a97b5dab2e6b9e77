//! `perry-sandbox store ls` and `store gc` against a real store directory filled through the
//! runtime's own BlobStore: what is listed, what is kept, what is removed, and bad arguments.

use std::path::Path;
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use perry_policies::Digest;
use perry_runtime::store::{digest_of, BlobStore};
use perry_runtime::unpack::RootfsStore;

struct Store {
    dir: tempfile::TempDir,
    manifest: Digest,
    layer: Digest,
    stray: Digest,
}

fn put(blobs: &BlobStore, bytes: &[u8]) -> Digest {
    let d = digest_of(bytes);
    blobs.ingest(bytes, &d, Some(bytes.len() as u64)).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(blobs.path(&d))
        .unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    d
}

fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let blobs = BlobStore::open_in(&state).unwrap();
    let layer = put(&blobs, b"layer bytes");
    let config = put(&blobs, br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#);
    let manifest = put(
        &blobs,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":42}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":11}}]}}"#
        )
        .as_bytes(),
    );
    let stray = put(&blobs, b"from an image nobody runs any more");
    std::fs::write(
        dir.path().join("perryconfig.toml"),
        format!("[sandbox]\nstate_dir = {:?}\n", state.to_str().unwrap()),
    )
    .unwrap();
    Store {
        dir,
        manifest,
        layer,
        stray,
    }
}

fn cli(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("perry-sandbox")
        .unwrap()
        .current_dir(dir)
        .env_remove("PERRY_CONFIG")
        .arg("--config")
        .arg(dir.join("perryconfig.toml"))
        .args(args)
        .assert()
}

fn json(a: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&a.get_output().stdout).unwrap()
}

#[test]
fn ls_lists_images_and_blob_kinds() {
    let s = store();
    let a = cli(s.dir.path(), &["--json", "store", "ls"]).success();
    let v = json(&a);
    let images = v["store"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{v}");
    assert_eq!(images[0]["digest"], s.manifest.to_string());
    assert_eq!(images[0]["unpacked"], false);
    let kind = |d: &Digest| {
        v["store"]["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["digest"] == d.to_string())
            .map(|b| b["kind"].clone())
            .unwrap()
    };
    assert_eq!(kind(&s.layer), "layer");
    assert_eq!(kind(&s.stray), "unreferenced");
    let text = cli(s.dir.path(), &["store", "ls"]).success();
    let out = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    assert!(
        out.contains(&s.manifest.to_string()) && out.contains("4 blobs"),
        "{out}"
    );
}

#[test]
fn gc_removes_only_what_no_kept_image_reaches() {
    let s = store();
    let state = s.dir.path().join("state");
    let rootfs = RootfsStore::open_in(&state).unwrap();
    std::fs::create_dir(rootfs.path(&s.manifest)).unwrap();
    // Dry run: reported, nothing removed.
    let v = json(&cli(s.dir.path(), &["--json", "store", "gc", "--dry-run"]).success());
    assert_eq!(
        v["gc"]["removed_blobs"],
        serde_json::json!([s.stray.to_string()])
    );
    let blobs = BlobStore::open_in(&state).unwrap();
    assert!(blobs.contains(&s.stray));
    // Real run: the unpacked image's blobs stay.
    let v = json(&cli(s.dir.path(), &["--json", "store", "gc"]).success());
    assert_eq!(
        v["gc"]["removed_blobs"],
        serde_json::json!([s.stray.to_string()])
    );
    assert!(!blobs.contains(&s.stray));
    assert!(blobs.contains(&s.manifest) && blobs.contains(&s.layer));
    // --all without --keep: everything goes, rootfs included.
    let v = json(&cli(s.dir.path(), &["--json", "store", "gc", "--all"]).success());
    assert_eq!(
        v["gc"]["removed_rootfs"],
        serde_json::json!([s.manifest.to_string()])
    );
    assert!(!blobs.contains(&s.manifest) && !blobs.contains(&s.layer));
    assert!(rootfs.get(&s.manifest).is_none());
}

#[test]
fn gc_respects_keep_and_grace() {
    let s = store();
    let state = s.dir.path().join("state");
    let blobs = BlobStore::open_in(&state).unwrap();
    let young = digest_of(b"pulled a second ago");
    blobs
        .ingest(&b"pulled a second ago"[..], &young, None)
        .unwrap();
    let keep = s.manifest.to_string();
    cli(s.dir.path(), &["store", "gc", "--all", "--keep", &keep]).success();
    assert!(blobs.contains(&s.manifest) && blobs.contains(&s.layer));
    assert!(
        blobs.contains(&young),
        "a blob inside the grace period was removed"
    );
    assert!(!blobs.contains(&s.stray));
    cli(s.dir.path(), &["store", "gc", "--all", "--grace", "0s"]).success();
    assert!(!blobs.contains(&young));
}

#[test]
fn bad_arguments_are_named() {
    let s = store();
    let a = cli(s.dir.path(), &["store", "gc", "--keep", "latest"]).code(2);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("--keep") && err.contains("latest"), "{err}");
    let a = cli(s.dir.path(), &["store", "gc", "--grace", "soon"]).code(2);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("--grace"), "{err}");
}
