//! Helpers shared by the unpack tests: build layer tars (including hostile ones) in memory.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use perry_policies::Digest;
use perry_runtime::manifest::LayerMediaType;
use perry_runtime::store::digest_of;
use perry_runtime::unpack::{unpack_layer_into, LayerSpec, Limits, UnpackError, UnpackReport};

/// Builds a tar stream entry by entry. Uses raw headers so hostile names (`..`, absolute paths)
/// that `tar::Builder`'s path helpers refuse can still be written.
pub(crate) struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// Writes `name` into the header's name field verbatim (no checks), via a GNU long-name record
/// when it does not fit.
fn raw_name(b: &mut tar::Builder<Vec<u8>>, h: &mut tar::Header, name: &[u8]) {
    if name.len() < 100 {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name);
    } else {
        let mut l = header(tar::EntryType::GNULongName, 0o644, name.len() as u64 + 1);
        l.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        l.set_cksum();
        let mut data = name.to_vec();
        data.push(0);
        b.append(&l, data.as_slice()).unwrap();
    }
}

fn raw_link(h: &mut tar::Header, target: &[u8]) {
    let gnu = h.as_gnu_mut().unwrap();
    gnu.linkname = [0; 100];
    gnu.linkname[..target.len()].copy_from_slice(target);
}

impl Layer {
    pub(crate) fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn push(&mut self, mut h: tar::Header, name: &str, data: &[u8]) -> &mut Self {
        raw_name(&mut self.b, &mut h, name.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }

    pub(crate) fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        let h = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.push(h, name, data)
    }

    pub(crate) fn file_owned(&mut self, name: &str, data: &[u8], uid: u64, gid: u64) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.push(h, name, data)
    }

    /// A regular file whose header is edited by `edit` (raw field bytes) before the checksum.
    pub(crate) fn file_raw(
        &mut self,
        name: &str,
        data: &[u8],
        edit: impl FnOnce(&mut tar::GnuHeader),
    ) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        edit(h.as_gnu_mut().unwrap());
        self.push(h, name, data)
    }

    pub(crate) fn dir(&mut self, name: &str) -> &mut Self {
        self.dir_mode(name, 0o755)
    }

    pub(crate) fn dir_mode(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = header(tar::EntryType::Directory, mode, 0);
        self.push(h, name, &[])
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        raw_link(&mut h, target.as_bytes());
        self.push(h, name, &[])
    }

    pub(crate) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        raw_link(&mut h, target.as_bytes());
        self.push(h, name, &[])
    }

    pub(crate) fn special(&mut self, name: &str, kind: tar::EntryType) -> &mut Self {
        let h = header(kind, 0o666, 0);
        self.push(h, name, &[])
    }

    /// A regular file carrying PAX xattr records.
    pub(crate) fn file_with_xattrs(
        &mut self,
        name: &str,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let recs: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(name, data)
    }

    pub(crate) fn tar(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

/// A spec whose diff_id matches `tar` (so only the entry checks can refuse it).
pub(crate) fn spec(tar: &[u8], blob: &[u8], media_type: LayerMediaType) -> LayerSpec {
    LayerSpec {
        digest: digest_of(blob),
        media_type,
        diff_id: digest_of(tar),
    }
}

pub(crate) fn limits() -> Limits {
    Limits {
        max_layer_size: 64 * 1024 * 1024,
        max_layer_entries: 100_000,
    }
}

/// Unpacks an uncompressed tar into `root` with a matching diff_id.
pub(crate) fn unpack_tar(root: &Path, tar: &[u8]) -> Result<UnpackReport, UnpackError> {
    unpack_layer_into(root, tar, &spec(tar, tar, LayerMediaType::Tar), &limits())
}

pub(crate) fn d(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

/// Every path under `dir` (relative, sorted), not following symlinks.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every path under `dir` (absolute, unsorted, non-UTF-8 names intact), not following symlinks.
pub(crate) fn tree_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
