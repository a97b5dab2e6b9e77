//! Hostile layer entries, one attack per test. Each builds the hostile layer in the test and
//! asserts both that the host file the attack aims at is untouched and that the entry was refused
//! or neutralised (and how).

mod unpack_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use perry_runtime::manifest::LayerMediaType;
use perry_runtime::unpack::{unpack_layer_into, Limits, UnpackError, UnpackErrorKind};
use unpack_support::*;

/// A test world: `<tmp>/root` is the unpack target, `<tmp>/outside/victim` a host file that
/// attacks aim at.
struct World {
    _t: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
    victim: PathBuf,
}

impl World {
    fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        let victim = outside.join("victim");
        fs::write(&victim, b"original").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            _t: t,
            base,
            root,
            outside,
            victim,
        }
    }

    fn outside_abs(&self) -> String {
        self.outside.to_str().unwrap().to_string()
    }

    /// The host side is exactly as set up: victim content, mode, link count; nothing new next
    /// to it or next to the root.
    fn assert_host_untouched(&self) {
        assert_eq!(
            fs::read(&self.victim).unwrap(),
            b"original",
            "victim content changed"
        );
        let m = fs::metadata(&self.victim).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o600,
            "victim mode changed"
        );
        assert_eq!(m.nlink(), 1, "victim gained a hardlink");
        assert_eq!(
            tree(&self.outside),
            vec!["victim".to_string()],
            "files appeared outside"
        );
        let mut top = tree(&self.base)
            .into_iter()
            .filter(|p| !p.contains('/'))
            .collect::<Vec<_>>();
        top.sort();
        assert_eq!(
            top,
            vec!["outside".to_string(), "root".to_string()],
            "files appeared next to the root"
        );
    }

    fn unpack(&self, tar: &[u8]) -> Result<perry_runtime::unpack::UnpackReport, UnpackError> {
        unpack_tar(&self.root, tar)
    }
}

fn assert_refused(err: &UnpackError, entry: &str, why: &str) {
    assert!(
        matches!(*err.kind, UnpackErrorKind::Refused(_)),
        "not refused: {err}"
    );
    assert_eq!(err.entry.as_deref(), Some(entry), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(why), "message `{msg}` lacks `{why}`");
    assert!(
        msg.contains("layer sha256:"),
        "message names no layer: {msg}"
    );
    assert!(msg.contains(entry), "message names no entry: {msg}");
}

#[test]
fn dotdot_paths_are_refused() {
    for name in [
        "../outside/victim",
        "a/../../outside/victim",
        "./../outside/victim",
        "a/b/../../../x",
    ] {
        let w = World::new();
        let tar = Layer::new().file("ok", b"fine").file(name, b"pwned").tar();
        let err = w.unpack(&tar).unwrap_err();
        assert_refused(&err, name, "`..`");
        w.assert_host_untouched();
    }
}

#[test]
fn absolute_paths_are_refused() {
    let w = World::new();
    let name = w.victim.to_str().unwrap().to_string();
    let tar = Layer::new().file(&name, b"pwned").tar();
    let err = w.unpack(&tar).unwrap_err();
    assert_refused(&err, &name, "absolute path");
    w.assert_host_untouched();
    assert!(tree(&w.root).is_empty());
}

#[test]
fn absolute_symlinked_parent_resolves_inside_the_root() {
    // `a -> /etc`, then `a/<probe>`: the write lands in <root>/etc, never in the host's /etc.
    let w = World::new();
    let probe = format!("perry-unpack-probe-{}", std::process::id());
    let tar = Layer::new()
        .dir("etc")
        .symlink("a", "/etc")
        .file(&format!("a/{probe}"), b"inside")
        .tar();
    w.unpack(&tar).unwrap();
    assert!(
        !Path::new("/etc").join(&probe).exists(),
        "wrote into the host's /etc"
    );
    assert_eq!(
        fs::read(w.root.join("etc").join(&probe)).unwrap(),
        b"inside"
    );
    w.assert_host_untouched();
}

#[test]
fn absolute_symlinked_parent_to_a_host_dir_is_refused() {
    // `a -> <abs path of the outside dir>`: inside the root that path does not exist, so the
    // write is refused rather than following the link onto the host.
    let w = World::new();
    let tar = Layer::new()
        .symlink("a", &w.outside_abs())
        .file("a/victim", b"pwned")
        .tar();
    let err = w.unpack(&tar).unwrap_err();
    assert_refused(&err, "a/victim", "does not exist inside the root");
    w.assert_host_untouched();
}

#[test]
fn relative_symlinked_parent_climbing_out_is_clamped_at_the_root() {
    // `a -> ../../..` then `a/outside/victim`: `..` stops at the root, as it will inside the
    // sandbox, so the file is created at <root>/outside/victim.
    let w = World::new();
    let tar = Layer::new()
        .symlink("a", "../../..")
        .file("a/outside/victim", b"clamped")
        .file("a/escaped", b"clamped")
        .tar();
    w.unpack(&tar).unwrap();
    assert_eq!(fs::read(w.root.join("outside/victim")).unwrap(), b"clamped");
    assert_eq!(fs::read(w.root.join("escaped")).unwrap(), b"clamped");
    w.assert_host_untouched();
}

#[test]
fn hardlinks_to_targets_outside_the_root_are_refused() {
    let w = World::new();
    let abs = w.victim.to_str().unwrap().to_string();
    for (target, why) in [
        ("../outside/victim", "`..`"),
        (abs.as_str(), "absolute path"),
    ] {
        let tar = Layer::new().hardlink("h", target).tar();
        let err = w.unpack(&tar).unwrap_err();
        assert_refused(&err, "h", why);
        assert!(err.to_string().contains("hardlink target"), "{err}");
        w.assert_host_untouched();
        assert!(fs::symlink_metadata(w.root.join("h")).is_err());
    }
}

#[test]
fn hardlinks_through_symlinked_parents_are_refused() {
    // `a -> /…/outside`, then a hardlink to `a/victim`: resolved inside the root, where no such
    // file exists.
    let w = World::new();
    let tar = Layer::new()
        .symlink("a", &w.outside_abs())
        .hardlink("h", "a/victim")
        .tar();
    let err = w.unpack(&tar).unwrap_err();
    assert_refused(&err, "h", "hardlink target");
    w.assert_host_untouched();
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_not_its_target() {
    let w = World::new();
    let tar = Layer::new()
        .symlink("l", w.victim.to_str().unwrap())
        .hardlink("h", "l")
        .tar();
    let report = w.unpack(&tar).unwrap();
    assert_eq!(report.hardlinks, 1);
    let m = fs::symlink_metadata(w.root.join("h")).unwrap();
    assert!(m.file_type().is_symlink(), "h must be the symlink itself");
    assert_eq!(m.nlink(), 2);
    w.assert_host_untouched();
}

#[test]
fn symlink_then_file_replaces_the_symlink() {
    let w = World::new();
    let rel = "../outside/victim".to_string();
    for target in [w.victim.to_str().unwrap().to_string(), rel] {
        let tar = Layer::new()
            .symlink("x", &target)
            .file_mode("x", b"pwned", 0o666)
            .tar();
        w.unpack(&tar).unwrap();
        let m = fs::symlink_metadata(w.root.join("x")).unwrap();
        assert!(m.file_type().is_file(), "x must now be a plain file");
        assert_eq!(fs::read(w.root.join("x")).unwrap(), b"pwned");
        w.assert_host_untouched();
    }
}

#[test]
fn symlink_then_chmod_never_touches_the_target() {
    // A second entry for the same name with a permissive mode (dir or file, setuid too) must
    // not chmod/chown the symlink's target.
    let w = World::new();
    let v = w.victim.to_str().unwrap().to_string();
    let tar = Layer::new()
        .symlink("d", &v)
        .dir_mode("d", 0o777)
        .symlink("f", &v)
        .file_mode("f", b"", 0o4777)
        .tar();
    let report = w.unpack(&tar).unwrap();
    assert!(fs::symlink_metadata(w.root.join("d")).unwrap().is_dir());
    let f = fs::symlink_metadata(w.root.join("f")).unwrap();
    assert!(f.is_file());
    assert_eq!(
        f.permissions().mode() & 0o7777,
        0o777,
        "setuid stripped on the new file"
    );
    assert_eq!(report.stripped_setid, 1);
    w.assert_host_untouched();
}

#[test]
fn file_over_a_hardlink_does_not_write_through_it() {
    let w = World::new();
    let tar = Layer::new()
        .file("f", b"first")
        .hardlink("h", "f")
        .file("h", b"second")
        .tar();
    w.unpack(&tar).unwrap();
    assert_eq!(fs::read(w.root.join("f")).unwrap(), b"first");
    assert_eq!(fs::read(w.root.join("h")).unwrap(), b"second");
    assert_eq!(fs::metadata(w.root.join("f")).unwrap().nlink(), 1);
}

#[test]
fn directory_entry_replaces_a_symlinked_dir_before_children_land() {
    let w = World::new();
    let tar = Layer::new()
        .symlink("d", &w.outside_abs())
        .dir("d")
        .file("d/victim", b"inside")
        .tar();
    w.unpack(&tar).unwrap();
    assert_eq!(fs::read(w.root.join("d/victim")).unwrap(), b"inside");
    assert!(fs::symlink_metadata(w.root.join("d")).unwrap().is_dir());
    w.assert_host_untouched();
}

#[test]
fn symlink_loops_and_file_parents_are_refused() {
    let w = World::new();
    let tar = Layer::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"x")
        .tar();
    let err = w.unpack(&tar).unwrap_err();
    assert_refused(&err, "a/x", "loop");
    let w = World::new();
    let tar = Layer::new().file("f", b"x").file("f/x", b"x").tar();
    let err = w.unpack(&tar).unwrap_err();
    assert_refused(&err, "f/x", "not a directory");
    w.assert_host_untouched();
}

#[test]
fn device_nodes_and_fifos_are_dropped() {
    let w = World::new();
    let tar = Layer::new()
        .dir("dev")
        .special("dev/sda", tar::EntryType::Block)
        .special("dev/mem", tar::EntryType::Char)
        .special("fifo", tar::EntryType::Fifo)
        .file("ok", b"ok")
        .tar();
    let report = w.unpack(&tar).unwrap();
    assert_eq!(report.dropped_special, 3);
    assert_eq!(tree(&w.root), vec!["dev", "ok"]);
}

#[test]
fn setuid_and_setgid_bits_are_stripped() {
    let w = World::new();
    let tar = Layer::new()
        .file_mode("suid", b"#!", 0o4755)
        .file_mode("sgid", b"#!", 0o2755)
        .dir_mode("sgid-dir", 0o2775)
        .dir_mode("sticky", 0o1777)
        .tar();
    let report = w.unpack(&tar).unwrap();
    let mode = |p: &str| {
        fs::symlink_metadata(w.root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o755);
    assert_eq!(mode("sgid-dir"), 0o775);
    assert_eq!(mode("sticky"), 0o1777, "sticky bit kept");
    assert_eq!(report.stripped_setid, 3);
}

#[test]
fn xattrs_including_security_capability_are_dropped() {
    let w = World::new();
    // A file capability granting cap_net_raw+ep (VFS_CAP_REVISION_2 layout).
    let cap: &[u8] = &[
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let tar = Layer::new()
        .file_with_xattrs(
            "ping",
            b"\x7fELF",
            &[("security.capability", cap), ("user.note", b"hi")],
        )
        .tar();
    let report = w.unpack(&tar).unwrap();
    assert_eq!(fs::read(w.root.join("ping")).unwrap(), b"\x7fELF");
    assert_eq!(report.dropped_xattrs, 2);
    let mut buf = [0u8; 64];
    for name in ["security.capability", "user.note"] {
        let e = rustix::fs::lgetxattr(w.root.join("ping"), name, &mut buf).unwrap_err();
        assert_eq!(e, rustix::io::Errno::NODATA, "{name} must not be set");
    }
}

#[test]
fn decompression_bombs_are_stopped_at_the_size_limit() {
    // 32 MiB of zeros compresses to a few KiB; the limit is 1 MiB.
    let zeros = vec![0u8; 32 * 1024 * 1024];
    let tar = Layer::new().file("bomb", &zeros).tar();
    let lim = Limits {
        max_layer_size: 1024 * 1024,
        max_layer_entries: 100,
    };
    for (blob, mt) in [
        (gzip(&tar), LayerMediaType::TarGzip),
        (zstd(&tar), LayerMediaType::TarZstd),
        (tar.clone(), LayerMediaType::Tar),
    ] {
        assert!(blob.len() < 1024 * 1024 || mt == LayerMediaType::Tar);
        let w = World::new();
        let err =
            unpack_layer_into(&w.root, blob.as_slice(), &spec(&tar, &blob, mt), &lim).unwrap_err();
        assert!(
            matches!(*err.kind, UnpackErrorKind::TooLarge { limit } if limit == 1024 * 1024),
            "{mt}: {err}"
        );
        let written = fs::metadata(w.root.join("bomb"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            written <= 1024 * 1024,
            "{mt}: wrote {written} bytes past the limit"
        );
        w.assert_host_untouched();
    }
}

#[test]
fn entry_floods_are_stopped_at_the_entry_limit() {
    let mut l = Layer::new();
    for i in 0..200 {
        l.file(&format!("f{i}"), b"");
    }
    let tar = l.tar();
    let w = World::new();
    let lim = Limits {
        max_layer_size: 1 << 30,
        max_layer_entries: 100,
    };
    let err = unpack_layer_into(
        &w.root,
        tar.as_slice(),
        &spec(&tar, &tar, LayerMediaType::Tar),
        &lim,
    )
    .unwrap_err();
    assert!(
        matches!(*err.kind, UnpackErrorKind::TooManyEntries { limit: 100 }),
        "{err}"
    );
    assert!(tree(&w.root).len() <= 100, "stopped at the limit");
}

#[test]
fn whiteouts_cannot_reach_outside_the_root() {
    let w = World::new();
    // `..` in a whiteout is refused like any path.
    let tar = Layer::new().file("../outside/.wh.victim", b"").tar();
    assert_refused(
        &w.unpack(&tar).unwrap_err(),
        "../outside/.wh.victim",
        "`..`",
    );
    // Through an absolute symlink: resolved inside the root, where there is nothing to delete.
    let tar = Layer::new()
        .symlink("a", &w.outside_abs())
        .file("a/.wh.victim", b"")
        .tar();
    w.unpack(&tar).unwrap();
    w.assert_host_untouched();
    // An opaque marker under a symlink to the host dir does not empty the host dir.
    let tar = Layer::new()
        .symlink("b", &w.outside_abs())
        .file("b/.wh..wh..opq", b"")
        .tar();
    let _ = w.unpack(&tar);
    w.assert_host_untouched();
}

#[test]
fn invalid_ids_are_refused() {
    let w = World::new();
    let tar = Layer::new().file_owned("f", b"", u32::MAX as u64, 0).tar();
    assert_refused(&w.unpack(&tar).unwrap_err(), "f", "invalid uid");
}

#[test]
fn empty_numeric_fields_read_as_zero_and_garbage_is_refused() {
    let w = World::new();
    let tar = Layer::new()
        .file_raw("empty", b"x", |h| {
            h.uid = [0; 8];
            h.gid = [b' '; 8];
        })
        .tar();
    w.unpack(&tar).unwrap();
    let m = fs::metadata(w.root.join("empty")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
    let tar = Layer::new()
        .file_raw("garbage", b"x", |h| h.mode = *b"0zz0644\0")
        .tar();
    assert_refused(&w.unpack(&tar).unwrap_err(), "garbage", "unreadable mode");
    assert!(fs::symlink_metadata(w.root.join("garbage")).is_err());
}

#[test]
fn ownership_from_the_headers_is_kept() {
    let w = World::new();
    let tar = Layer::new().file_owned("f", b"x", 1234, 5678).tar();
    w.unpack(&tar).unwrap();
    let m = fs::metadata(w.root.join("f")).unwrap();
    if rustix::process::geteuid().is_root() {
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }
}
