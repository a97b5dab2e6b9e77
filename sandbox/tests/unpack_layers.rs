//! Whole-image unpacking through the store: compression kinds, whiteouts, diff_id checks,
//! atomic commit, read-only result, and "a failed unpack leaves nothing behind".

mod unpack_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use perry_policies::Digest;
use perry_runtime::manifest::{ImageConfig, ImageManifest, LayerMediaType};
use perry_runtime::store::{digest_of, BlobStore, StoreError};
use perry_runtime::unpack::{LayerSpec, Limits, RootfsStore, UnpackErrorKind};
use unpack_support::*;

struct Env {
    _t: tempfile::TempDir,
    state: std::path::PathBuf,
    blobs: BlobStore,
    rootfs: RootfsStore,
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    Env {
        blobs: BlobStore::open_in(&state).unwrap(),
        rootfs: RootfsStore::open_in(&state).unwrap(),
        state,
        _t: t,
    }
}

impl Env {
    /// Stores a layer (compressed as `mt`) and returns its spec.
    fn layer(&self, tar: &[u8], mt: LayerMediaType) -> LayerSpec {
        let blob = match mt {
            LayerMediaType::Tar => tar.to_vec(),
            LayerMediaType::TarGzip => gzip(tar),
            LayerMediaType::TarZstd => zstd(tar),
        };
        let d = digest_of(&blob);
        self.blobs
            .ingest(blob.as_slice(), &d, Some(blob.len() as u64))
            .unwrap();
        spec(tar, &blob, mt)
    }

    fn rootfs_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.rootfs.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn manifest_digest(tag: &str) -> Digest {
    digest_of(tag.as_bytes())
}

fn no_write_bits(root: &Path) {
    for p in std::iter::once(String::new()).chain(tree(root)) {
        let m = fs::symlink_metadata(root.join(&p)).unwrap();
        if !m.file_type().is_symlink() {
            assert_eq!(m.permissions().mode() & 0o222, 0, "`{p}` is writable");
        }
    }
}

#[test]
fn tar_gzip_and_zstd_layers_stack_into_a_read_only_rootfs() {
    let e = env();
    let l1 = e.layer(
        &Layer::new()
            .dir("bin")
            .file_mode("bin/sh", b"#!shell", 0o755)
            .dir("etc")
            .file("etc/os", b"v1")
            .tar(),
        LayerMediaType::TarGzip,
    );
    let l2 = e.layer(
        &Layer::new()
            .file("etc/os", b"v2")
            .symlink("bin/ls", "sh")
            .tar(),
        LayerMediaType::TarZstd,
    );
    let l3 = e.layer(
        &Layer::new().hardlink("bin/sh2", "bin/sh").tar(),
        LayerMediaType::Tar,
    );
    let m = manifest_digest("stack");
    let out = e
        .rootfs
        .unpack_layers(&e.blobs, &m, &[l1, l2, l3], &limits())
        .unwrap();
    assert!(out.fresh);
    assert_eq!(out.path, e.state.join("rootfs").join(m.hex()));
    assert_eq!(e.rootfs.get(&m), Some(out.path.clone()));
    let r = &out.path;
    assert_eq!(
        fs::read(r.join("etc/os")).unwrap(),
        b"v2",
        "upper layer wins"
    );
    assert_eq!(fs::read_link(r.join("bin/ls")).unwrap(), Path::new("sh"));
    assert_eq!(
        fs::metadata(r.join("bin/sh2")).unwrap().ino(),
        fs::metadata(r.join("bin/sh")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(r.join("bin/sh")).unwrap().permissions().mode() & 0o777,
        0o555
    );
    assert_eq!(out.report.files, 3);
    assert_eq!(out.report.hardlinks, 1);
    no_write_bits(r);
    assert_eq!(
        e.rootfs_entries(),
        vec![m.hex().to_string()],
        "no staging dir left"
    );

    // A second unpack of the same manifest reuses the committed tree.
    let again = e
        .rootfs
        .unpack_layers(&e.blobs, &m, &[], &limits())
        .unwrap();
    assert!(!again.fresh);
    assert_eq!(again.path, out.path);
}

#[test]
fn whiteouts_remove_lower_entries_only() {
    let e = env();
    let lower = e.layer(
        &Layer::new()
            .file("a", b"a")
            .file("b", b"b")
            .dir("d")
            .file("d/x", b"x")
            .dir("o")
            .file("o/lower", b"l")
            .tar(),
        LayerMediaType::Tar,
    );
    let upper = e.layer(
        &Layer::new()
            .file(".wh.a", b"")
            .file(".wh.d", b"")
            .file("o/upper-before", b"u") // same layer, before the opaque marker: kept
            .file("o/.wh..wh..opq", b"")
            .file("o/upper-after", b"u")
            .file("new", b"n")
            .file(".wh.new", b"") // whiteout in the same layer: does not hide `new`
            .file(".wh..wh.plnk", b"") // aufs bookkeeping: ignored
            .tar(),
        LayerMediaType::TarGzip,
    );
    let m = manifest_digest("whiteouts");
    let out = e
        .rootfs
        .unpack_layers(&e.blobs, &m, &[lower, upper], &limits())
        .unwrap();
    assert_eq!(
        tree(&out.path),
        // plus the runner's mount points, which unpacking adds when the image lacks them
        vec![
            "b",
            "dev",
            "new",
            "o",
            "o/upper-after",
            "o/upper-before",
            "proc",
            "tmp"
        ]
    );
    assert_eq!(out.report.whiteouts, 3);
}

#[test]
fn diff_id_mismatch_is_refused_and_leaves_nothing() {
    let e = env();
    let tar = Layer::new().file("f", b"content").tar();
    let mut l = e.layer(&tar, LayerMediaType::TarGzip);
    let wrong = digest_of(b"another tar");
    l.diff_id = wrong.clone();
    let m = manifest_digest("diffid");
    let err = e
        .rootfs
        .unpack_layers(&e.blobs, &m, std::slice::from_ref(&l), &limits())
        .unwrap_err();
    match &*err.kind {
        UnpackErrorKind::DiffIdMismatch { expected, actual } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &digest_of(&tar));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert_eq!(err.layer.as_ref(), Some(&l.digest));
    assert!(err.to_string().contains(l.digest.as_str()));
    assert!(e.rootfs.get(&m).is_none());
    assert!(
        e.rootfs_entries().is_empty(),
        "left behind: {:?}",
        e.rootfs_entries()
    );
}

#[test]
fn a_hostile_upper_layer_leaves_nothing_behind() {
    let e = env();
    let good = e.layer(
        &Layer::new().dir("etc").file("etc/a", b"a").tar(),
        LayerMediaType::TarGzip,
    );
    let bad = e.layer(
        &Layer::new().file("ok", b"").file("../escape", b"x").tar(),
        LayerMediaType::TarZstd,
    );
    let m = manifest_digest("hostile");
    let err = e
        .rootfs
        .unpack_layers(&e.blobs, &m, &[good, bad.clone()], &limits())
        .unwrap_err();
    assert!(matches!(*err.kind, UnpackErrorKind::Refused(_)), "{err}");
    assert_eq!(err.layer.as_ref(), Some(&bad.digest));
    assert_eq!(err.entry.as_deref(), Some("../escape"));
    assert!(
        e.rootfs_entries().is_empty(),
        "left behind: {:?}",
        e.rootfs_entries()
    );
    assert!(!e.state.join("escape").exists() && !e.state.join("rootfs/escape").exists());
}

#[test]
fn a_bomb_through_the_store_leaves_nothing_behind() {
    let e = env();
    let tar = Layer::new()
        .file("zeros", &vec![0u8; 8 * 1024 * 1024])
        .tar();
    let l = e.layer(&tar, LayerMediaType::TarZstd);
    let m = manifest_digest("bomb");
    let lim = Limits {
        max_layer_size: 1024 * 1024,
        max_layer_entries: 10,
    };
    let err = e
        .rootfs
        .unpack_layers(&e.blobs, &m, &[l], &lim)
        .unwrap_err();
    assert!(
        matches!(*err.kind, UnpackErrorKind::TooLarge { .. }),
        "{err}"
    );
    assert!(e.rootfs_entries().is_empty());
}

#[test]
fn missing_and_tampered_blobs_are_refused() {
    let e = env();
    let tar = Layer::new().file("f", b"x").tar();
    let mut missing = spec(&tar, b"not stored", LayerMediaType::Tar);
    missing.digest = digest_of(b"not stored");
    let m = manifest_digest("missing");
    let err = e
        .rootfs
        .unpack_layers(&e.blobs, &m, &[missing], &limits())
        .unwrap_err();
    assert!(
        matches!(*err.kind, UnpackErrorKind::Blob(StoreError::NotFound(_))),
        "{err}"
    );

    // Tamper with a stored gzip blob so that it still decompresses to the very same tar (the
    // gzip header's OS byte is not covered by any checksum): only the blob digest can tell, and
    // it does.
    let l = e.layer(&tar, LayerMediaType::TarGzip);
    let path = e.blobs.path(&l.digest);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[9] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = e
        .rootfs
        .unpack_layers(&e.blobs, &m, std::slice::from_ref(&l), &limits())
        .unwrap_err();
    match &*err.kind {
        UnpackErrorKind::Blob(StoreError::Corrupt { digest, actual }) => {
            assert_eq!(digest, &l.digest);
            assert_eq!(actual, &digest_of(&bytes));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        !path.exists(),
        "the corrupt blob is dropped so it is pulled again"
    );
    assert!(e.rootfs_entries().is_empty());
}

#[test]
fn unpack_image_checks_the_layer_count_against_diff_ids() {
    let e = env();
    let l = e.layer(&Layer::new().file("f", b"x").tar(), LayerMediaType::TarGzip);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":1}}]}}"#,
        digest_of(b"{}"),
        l.digest
    );
    let manifest = ImageManifest::parse(manifest.as_bytes()).unwrap();
    let good = ImageConfig::parse(
        format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            l.diff_id
        )
        .as_bytes(),
    )
    .unwrap();
    let short = ImageConfig::parse(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
    let m = manifest_digest("image");
    let err = e
        .rootfs
        .unpack_image(&e.blobs, &m, &manifest, &short, &limits())
        .unwrap_err();
    assert!(err.to_string().contains("diff_ids"), "{err}");
    assert!(e.rootfs_entries().is_empty());
    let out = e
        .rootfs
        .unpack_image(&e.blobs, &m, &manifest, &good, &limits())
        .unwrap();
    assert_eq!(fs::read(out.path.join("f")).unwrap(), b"x");
}

#[test]
fn remove_and_stale_staging_cleanup() {
    let e = env();
    let l = e.layer(
        &Layer::new().dir("d").file("d/f", b"x").tar(),
        LayerMediaType::Tar,
    );
    let m = manifest_digest("remove");
    e.rootfs
        .unpack_layers(&e.blobs, &m, &[l], &limits())
        .unwrap();
    // A staging dir from a dead process (pid far above pid_max) and one of our own.
    let dead = e
        .rootfs
        .dir()
        .join(format!(".staging-{}-4999999-0", "0".repeat(64)));
    let ours = e.rootfs.dir().join(format!(
        ".staging-{}-{}-0",
        "1".repeat(64),
        std::process::id()
    ));
    fs::create_dir_all(dead.join("x/y")).unwrap();
    fs::create_dir_all(&ours).unwrap();
    assert_eq!(e.rootfs.clean_stale_staging(), 1);
    assert!(!dead.exists());
    assert!(ours.exists());
    fs::remove_dir(&ours).unwrap();
    assert!(e.rootfs.remove(&m).unwrap());
    assert!(!e.rootfs.remove(&m).unwrap());
    assert!(e.rootfs_entries().is_empty());
}

#[test]
fn the_root_entry_sets_the_root_mode_without_setid() {
    let e = env();
    let l = e.layer(
        &Layer::new().dir_mode("./", 0o2755).file("f", b"").tar(),
        LayerMediaType::Tar,
    );
    let m = manifest_digest("rootentry");
    let out = e
        .rootfs
        .unpack_layers(&e.blobs, &m, &[l], &limits())
        .unwrap();
    assert_eq!(
        fs::metadata(&out.path).unwrap().permissions().mode() & 0o7777,
        0o555
    );
    assert_eq!(out.report.stripped_setid, 1);
}
