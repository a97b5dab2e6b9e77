//! Property tests: whatever a layer contains — arbitrary bytes, mutated tars, or arbitrary
//! sequences of entries built from a small alphabet of names and link targets designed to find
//! escapes — unpacking never panics and never creates, modifies or links anything outside the
//! target directory.

mod unpack_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use perry_runtime::manifest::LayerMediaType;
use perry_runtime::store::digest_of;
use perry_runtime::unpack::{unpack_layer_into, LayerSpec, Limits};
use proptest::prelude::*;
use unpack_support::*;

const HOST_PROBES: &[&str] = &["/a", "/b", "/victim"];

struct World {
    _t: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
    host_before: Vec<bool>,
}

impl World {
    fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"original").unwrap();
        fs::set_permissions(outside.join("victim"), fs::Permissions::from_mode(0o600)).unwrap();
        let host_before = HOST_PROBES.iter().map(|p| Path::new(p).exists()).collect();
        Self {
            _t: t,
            base,
            root,
            outside,
            host_before,
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let victim = self.outside.join("victim");
        prop_assert_eq!(fs::read(&victim).unwrap(), b"original".to_vec());
        let m = fs::metadata(&victim).unwrap();
        prop_assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        prop_assert_eq!(m.nlink(), 1);
        prop_assert_eq!(tree(&self.outside), vec!["victim".to_string()]);
        let top: Vec<String> = tree(&self.base)
            .into_iter()
            .filter(|p| !p.contains('/'))
            .collect();
        prop_assert_eq!(top, vec!["outside".to_string(), "root".to_string()]);
        let host_now: Vec<bool> = HOST_PROBES.iter().map(|p| Path::new(p).exists()).collect();
        prop_assert_eq!(&host_now, &self.host_before);
        // Nothing dangerous inside either: no setuid/setgid, no device or FIFO.
        for p in tree_paths(&self.root) {
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            prop_assert!(
                ft.is_file() || ft.is_dir() || ft.is_symlink(),
                "special file {:?}",
                p
            );
            if !ft.is_symlink() {
                prop_assert_eq!(m.permissions().mode() & 0o6000, 0, "setid bit on {:?}", p);
            }
        }
        Ok(())
    }
}

fn limits() -> Limits {
    Limits {
        max_layer_size: 1024 * 1024,
        max_layer_entries: 1000,
    }
}

fn media(i: u8) -> LayerMediaType {
    [
        LayerMediaType::Tar,
        LayerMediaType::TarGzip,
        LayerMediaType::TarZstd,
    ][i as usize % 3]
}

// Small on purpose, so that the sequences that matter (a symlink, then a write through it) come
// up often: most names reuse `a`, `b` and `victim` (the host file's name).
const NAMES: &[&str] = &[
    "a",
    "b",
    "a/victim",
    "b/victim",
    "a/b",
    "victim",
    "a/b/victim",
    ".wh.a",
    "a/.wh.victim",
    "a/.wh..wh..opq",
    "../a",
    "/a",
    "a/../b",
    "./a",
];

// `@` is replaced by the absolute path of the outside dir.
const TARGETS: &[&str] = &[
    "@",
    "@/victim",
    "/",
    "..",
    "../..",
    "a",
    "b",
    "../outside",
    "../outside/victim",
    "/a",
];

#[derive(Clone, Debug)]
enum Kind {
    File(u16),
    Dir(u16),
    Symlink(usize),
    Hardlink(usize),
    Fifo,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => (prop_oneof![Just(0o644u16), Just(0o4755), Just(0o2777)]).prop_map(Kind::File),
        1 => (prop_oneof![Just(0o755u16), Just(0o2775), Just(0o777)]).prop_map(Kind::Dir),
        3 => (0..TARGETS.len()).prop_map(Kind::Symlink),
        2 => (0..TARGETS.len() + NAMES.len()).prop_map(Kind::Hardlink),
        1 => Just(Kind::Fifo),
    ]
}

fn build(entries: &[(usize, Kind)], outside: &str) -> Vec<u8> {
    let mut l = Layer::new();
    for (n, k) in entries {
        let name = NAMES[*n];
        let target = |i: usize| TARGETS[i].replace('@', outside);
        match k {
            Kind::File(mode) => l.file_mode(name, b"pwned", *mode as u32),
            Kind::Dir(mode) => l.dir_mode(name, *mode as u32),
            Kind::Symlink(t) => l.symlink(name, &target(*t)),
            Kind::Hardlink(t) if *t < TARGETS.len() => l.hardlink(name, &target(*t)),
            Kind::Hardlink(t) => l.hardlink(name, NAMES[*t - TARGETS.len()]),
            Kind::Fifo => l.special(name, tar::EntryType::Fifo),
        };
    }
    l.tar()
}

/// Recomputes the checksum of every block that parses as a ustar/GNU header, so mutations reach
/// the entry logic instead of stopping at the checksum check.
fn fix_checksums(tar: &mut [u8]) {
    for block in tar.chunks_exact_mut(512) {
        if &block[257..262] == b"ustar" {
            let mut h = tar::Header::new_old();
            h.as_mut_bytes().copy_from_slice(block);
            h.set_cksum();
            block.copy_from_slice(h.as_bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes as a layer of any media type: an error or a harmless tree, never a panic
    /// and never a write outside the root.
    #[test]
    fn arbitrary_bytes_never_escape(bytes in proptest::collection::vec(any::<u8>(), 0..4096), mt in 0u8..3) {
        let w = World::new();
        let spec = LayerSpec { digest: digest_of(&bytes), media_type: media(mt), diff_id: digest_of(&bytes) };
        let _ = unpack_layer_into(&w.root, bytes.as_slice(), &spec, &limits());
        w.check()?;
    }

    /// A valid hostile tar with random byte mutations in its headers (checksums fixed up).
    #[test]
    fn mutated_tars_never_escape(
        entries in proptest::collection::vec((0..NAMES.len(), kind()), 1..8),
        muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
    ) {
        let w = World::new();
        let mut tar = build(&entries, w.outside.to_str().unwrap());
        let len = tar.len();
        for (pos, byte) in muts {
            tar[pos % len] = byte;
        }
        fix_checksums(&mut tar);
        let _ = unpack_tar(&w.root, &tar);
        w.check()?;
    }

    /// Arbitrary entry sequences from the escape alphabet, split over two layers with any
    /// compression: never an escape.
    #[test]
    fn entry_sequences_never_escape(
        entries in proptest::collection::vec((0..NAMES.len(), kind()), 1..14),
        split in 0usize..14,
        mt in 0u8..3,
    ) {
        let w = World::new();
        let outside = w.outside.to_str().unwrap().to_string();
        let split = split.min(entries.len());
        for part in [&entries[..split], &entries[split..]] {
            let tar = build(part, &outside);
            let blob = match media(mt) {
                LayerMediaType::Tar => tar.clone(),
                LayerMediaType::TarGzip => gzip(&tar),
                LayerMediaType::TarZstd => zstd(&tar),
            };
            let _ = unpack_layer_into(&w.root, blob.as_slice(), &spec(&tar, &blob, media(mt)), &limits());
            w.check()?;
        }
    }
}
