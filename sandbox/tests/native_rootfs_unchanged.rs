//! The verified rootfs is never changed after unpack (issue 13, item 3): a run whose bind mounts
//! target directories the image lacks — directly under `/`, nested several levels deep, and
//! below a directory the image has — sees its mounts and every image entry beside them, yet the
//! unpacked tree under the digest (every path, type, mode, owner, link count, size, mtime,
//! ctime, symlink target and file content) is exactly what unpack produced.

mod native_support;
mod unpack_support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use native_support::{hardened, text, TestRoot};
use perry_runtime::manifest::LayerMediaType;
use perry_runtime::native::{run, BindMount, FinalStep};
use perry_runtime::store::{digest_of, BlobStore};
use perry_runtime::unpack::RootfsStore;
use unpack_support::{limits, spec, Layer};

/// Every entry under `root` (the root itself included), by relative path: type, mode, owner,
/// link count, size, mtime and ctime (seconds and nanoseconds), and the content's digest for a
/// file or the target for a symlink. Access times are left out: reading changes them.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let path = root.join(rel);
        let m = std::fs::symlink_metadata(&path).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else if m.is_file() {
            digest_of(&std::fs::read(&path).unwrap()).to_string()
        } else {
            String::new()
        };
        out.insert(
            rel.to_path_buf(),
            format!(
                "mode={:o} uid={} gid={} nlink={} size={} mtime={}.{} ctime={}.{} {what}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
        );
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// A busybox image unpacked by the store (read-only, mount points added, as a pull makes it),
/// wrapped as the runner tests' root.
fn unpacked_busybox() -> TestRoot {
    let dir = tempfile::Builder::new()
        .prefix("perry-unchanged-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut layer = Layer::new();
    layer
        .dir("bin")
        .file_mode("bin/busybox", &busybox, 0o755)
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
        .dir("usr")
        .dir("usr/share")
        .dir_mode("usr/share/doc", 0o751)
        .file("usr/share/doc/README", b"from the image\n");
    for applet in ["sh", "cat", "ls", "mkdir", "touch", "stat", "tr"] {
        layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    let tar = layer.tar();
    let blobs = BlobStore::open_in(&state).unwrap();
    blobs
        .ingest(tar.as_slice(), &digest_of(&tar), Some(tar.len() as u64))
        .unwrap();
    let layer = spec(&tar, &tar, LayerMediaType::Tar);
    let unpacked = RootfsStore::open_in(&state)
        .unwrap()
        .unpack_layers(&blobs, &digest_of(b"unchanged"), &[layer], &limits())
        .expect("unpack");
    assert!(unpacked.fresh);
    TestRoot {
        dir,
        rootfs: unpacked.path,
        state,
    }
}

fn missing_mount_targets_leave_the_rootfs_as_unpacked(fs: &dyn FinalStep) {
    let r = unpacked_busybox();
    let before = snapshot(&r.rootfs);
    assert!(before.contains_key(Path::new("usr/share/doc/README")));
    for missing in ["work", "opt", "usr/share/doc/new"] {
        assert!(!before.contains_key(Path::new(missing)), "{missing}");
    }
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(host.path().join("f"), "mounted\n").unwrap();
    let mut s = r.sh(
        "cat /work/deep/f /opt/f /usr/share/doc/new/er/f /usr/share/doc/README; \
         ls / | tr '\\n' ' '; echo; stat -c %a /usr/share/doc; \
         mkdir /work/x 2>&1; touch /usr/share/doc/y 2>&1; touch /newfile 2>&1; true",
    );
    s.mounts = vec![
        BindMount::read_only(host.path(), "/work/deep"),
        BindMount::read_only(host.path(), "/opt"),
        BindMount::read_only(host.path(), "/usr/share/doc/new/er"),
    ];
    let o = run(&s, fs).expect("run");
    let out = text(&o.stdout);
    assert_eq!(o.exit_code, Some(0), "{out}{}", text(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..4],
        ["mounted", "mounted", "mounted", "from the image"],
        "{out}"
    );
    for entry in ["bin", "dev", "etc", "opt", "proc", "tmp", "usr", "work"] {
        assert!(lines[4].split(' ').any(|e| e == entry), "{entry}: {out}");
    }
    let unpacked_mode = std::fs::metadata(r.rootfs.join("usr/share/doc"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(unpacked_mode, 0o551, "unpack clears the write bits");
    assert_eq!(
        lines[5],
        format!("{unpacked_mode:o}"),
        "a merged directory keeps the image's mode"
    );
    // Nothing the workload does writes through to the provided mount points.
    assert_eq!(
        out.matches("Read-only file system").count(),
        3,
        "writable beside a provided mount point: {out}"
    );
    let after = snapshot(&r.rootfs);
    assert_eq!(before, after, "the rootfs changed under its digest");
}

#[test]
fn missing_mount_targets_leave_the_rootfs_as_unpacked_minimal() {
    missing_mount_targets_leave_the_rootfs_as_unpacked(&perry_runtime::native::MinimalFinalStep);
}

#[test]
fn missing_mount_targets_leave_the_rootfs_as_unpacked_hardened() {
    missing_mount_targets_leave_the_rootfs_as_unpacked(&hardened());
}
