//! OCI image layouts (`oci:DIR[:tag]`) and OCI archives (`oci-archive:FILE[:tag]`) as image
//! sources, for air-gapped hosts.
//!
//! A layout is a directory with an `oci-layout` file (`{"imageLayoutVersion":"1.0.0"}`), an
//! `index.json` (an OCI image index whose entries carry `org.opencontainers.image.ref.name`
//! annotations, the layout's "tags"), and content-addressed blobs at `blobs/sha256/<hex>`.
//! [`OciLayout`] reads one the way [`crate::registry::RegistryClient`] reads a registry: every
//! manifest and blob is read by digest, hashed, and refused when it does not hash to that digest
//! or exceeds the registry client's limits. It implements [`ContentSource`], so resolution
//! (platform selection in an index) and signature discovery (the `sha256-<hex>` referrers-tag
//! index and the legacy cosign `sha256-<hex>.sig` manifest, both as `ref.name`s in `index.json`)
//! are the very code registry images go through.
//!
//! Only regular files are read from a layout directory: a symlinked or special `oci-layout`,
//! `index.json` or blob is refused (checked with `lstat` before opening and `fstat` after, so a
//! swap in between is detected).
//!
//! # OCI archives: read in place, never extracted
//!
//! An OCI archive is read directly from the tar: [`OciLayout::open_archive`] walks the tar
//! headers once (seeking over contents), refuses the whole archive if any entry is not one of
//! the regular files `oci-layout`, `index.json`, `blobs/sha256/<64 hex>` (or the directories
//! `.`, `blobs`, `blobs/sha256`) — so `..` paths, absolute paths, symlinks, hard links,
//! devices, FIFOs, sparse files, duplicates and unknown names all fail — and records where each
//! blob's bytes lie in the file. Blobs are then read (and hashed) straight from those offsets.
//! This was chosen over extracting to a temporary directory because it writes nothing: there is
//! no extraction path for a hostile entry name to escape through, no disk space used twice,
//! and nothing to clean up — not on an error, not after `kill -9`. Only uncompressed tars are
//! accepted (that is what `oci-archive` is); a compressed one gets a clear error.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use perry_policies::Digest;
use sha2::{Digest as _, Sha256};

use crate::registry::{Mismatch, MAX_MANIFEST_SIZE};
use crate::source::{ContentSource, Origin, TagOrDigest};

/// The `index.json` annotation naming an entry (the layout's "tag").
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The only `imageLayoutVersion` accepted.
pub const IMAGE_LAYOUT_VERSION: &str = "1.0.0";
/// The most entries an OCI archive may have.
pub const MAX_ARCHIVE_ENTRIES: usize = 16_384;
/// The most entries `index.json` may list.
pub const MAX_INDEX_ENTRIES: usize = 4_096;
/// The largest `oci-layout` file accepted.
const MAX_OCI_LAYOUT_FILE: u64 = 4096;

mod error;
mod index;
#[cfg(test)]
mod tests;

pub use error::LayoutError;
use index::{
    check_layout_file, is_sha256_hex, open_regular, parse_index, read_limited, read_small_file,
};
pub use index::{is_signature_ref, LayoutEntry};

#[derive(Clone, Copy, Debug)]
struct Span {
    offset: u64,
    size: u64,
}

#[derive(Debug)]
enum Store {
    Dir(PathBuf),
    Archive {
        file: PathBuf,
        blobs: HashMap<String, Span>,
    },
}

/// An opened OCI image layout directory or OCI archive.
#[derive(Debug)]
pub struct OciLayout {
    origin: Origin,
    name: String,
    store: Store,
    entries: Vec<LayoutEntry>,
}

/// A blob opened for streaming (from a directory the reader stops one byte past the recorded
/// size, so a blob that grew is still detected by the consumer's size check). Whoever reads it
/// must hash it.
pub struct LayoutBlob {
    reader: io::Take<File>,
    size: u64,
}

impl std::fmt::Debug for LayoutBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayoutBlob")
            .field("size", &self.size)
            .finish()
    }
}

impl LayoutBlob {
    /// The blob's size as found in the layout.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for LayoutBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl OciLayout {
    /// Opens the source an [`Origin`] names (`None` for [`Origin::Registry`]).
    pub fn open_origin(origin: &Origin) -> Option<Result<Self, LayoutError>> {
        match origin {
            Origin::Registry => None,
            Origin::OciLayout(p) => Some(Self::open_dir(p)),
            Origin::OciArchive(p) => Some(Self::open_archive(p)),
        }
    }

    /// Opens a layout directory: checks `oci-layout` (version 1.0.0) and parses `index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self, LayoutError> {
        let dir = fs::canonicalize(dir).map_err(|e| LayoutError::io(dir, e))?;
        if !dir.is_dir() {
            return Err(LayoutError::NotALayout {
                path: dir,
                reason: "not a directory (an OCI archive is named oci-archive:FILE)".into(),
            });
        }
        let layout_file = dir.join("oci-layout");
        let bytes = match read_small_file(&layout_file, MAX_OCI_LAYOUT_FILE) {
            Err(LayoutError::Missing { .. }) => {
                return Err(LayoutError::NotALayout {
                    path: dir,
                    reason: "no `oci-layout` file".into(),
                })
            }
            other => other?,
        };
        check_layout_file(&bytes, &dir)?;
        let index_path = dir.join("index.json");
        let index = read_small_file(&index_path, MAX_MANIFEST_SIZE as u64)?;
        let entries = parse_index(&index, &index_path)?;
        Ok(Self {
            name: format!("oci:{}", dir.display()),
            origin: Origin::OciLayout(dir.clone()),
            store: Store::Dir(dir),
            entries,
        })
    }

    /// Opens an OCI archive (an uncompressed tar of a layout) in place, refusing it if any entry
    /// is not an allowed regular file or directory (see the module documentation).
    pub fn open_archive(file: &Path) -> Result<Self, LayoutError> {
        let file = fs::canonicalize(file).map_err(|e| LayoutError::io(file, e))?;
        let (mut f, _) = open_regular(&file)?;
        let not_layout = |reason: String| LayoutError::NotALayout {
            path: file.clone(),
            reason,
        };
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(|e| LayoutError::io(&file, e))?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] || n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            return Err(not_layout(
                "the archive is compressed; an OCI archive is a plain tar (decompress it first)"
                    .into(),
            ));
        }
        f.seek(SeekFrom::Start(0))
            .map_err(|e| LayoutError::io(&file, e))?;
        let unsafe_entry = |entry: &str, reason: &str| LayoutError::UnsafeEntry {
            archive: file.clone(),
            entry: entry.into(),
            reason: reason.into(),
        };
        let mut archive = tar::Archive::new(f);
        let entries = archive
            .entries_with_seek()
            .map_err(|e| not_layout(format!("not a tar archive: {e}")))?;
        let mut seen = HashSet::new();
        let mut blobs = HashMap::new();
        let (mut layout_file, mut index) = (None, None);
        for (n, entry) in entries.enumerate() {
            if n >= MAX_ARCHIVE_ENTRIES {
                return Err(not_layout(format!(
                    "more than {MAX_ARCHIVE_ENTRIES} entries"
                )));
            }
            let mut entry = entry.map_err(|e| not_layout(format!("not a tar archive: {e}")))?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let Ok(name) = std::str::from_utf8(&raw) else {
                return Err(unsafe_entry(&shown, "the name is not UTF-8"));
            };
            let kind = entry.header().entry_type();
            let clean = clean_entry_name(name, kind.is_dir())
                .map_err(|reason| unsafe_entry(&shown, reason))?;
            if !seen.insert(clean.to_string()) {
                return Err(unsafe_entry(&shown, "duplicate entry"));
            }
            match kind {
                tar::EntryType::Directory => {
                    if !matches!(clean, "" | "blobs" | "blobs/sha256") {
                        return Err(unsafe_entry(
                            &shown,
                            "unexpected directory (an OCI archive holds only oci-layout, index.json and blobs/sha256/)",
                        ));
                    }
                }
                tar::EntryType::Regular => {
                    let size = entry.size();
                    match clean {
                        "oci-layout" | "index.json" => {
                            let limit = if clean == "index.json" {
                                MAX_MANIFEST_SIZE as u64
                            } else {
                                MAX_OCI_LAYOUT_FILE
                            };
                            let bytes = read_limited(&mut entry, limit)
                                .map_err(|e| not_layout(format!("reading {clean}: {e}")))?
                                .ok_or_else(|| LayoutError::TooLarge {
                                    blob: format!("{}:{clean}", file.display()),
                                    limit,
                                })?;
                            if clean == "index.json" {
                                index = Some(bytes);
                            } else {
                                layout_file = Some(bytes);
                            }
                        }
                        _ => match clean.strip_prefix("blobs/sha256/") {
                            Some(hex) if is_sha256_hex(hex) => {
                                let span = Span {
                                    offset: entry.raw_file_position(),
                                    size,
                                };
                                blobs.insert(hex.to_string(), span);
                            }
                            _ => {
                                return Err(unsafe_entry(
                                    &shown,
                                    "unexpected file (an OCI archive holds only oci-layout, index.json and blobs/sha256/<64 lowercase hex>)",
                                ))
                            }
                        },
                    }
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    return Err(unsafe_entry(&shown, "links are refused"))
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    return Err(unsafe_entry(&shown, "device nodes and FIFOs are refused"))
                }
                other => {
                    return Err(unsafe_entry(
                        &shown,
                        &format!("tar entry type {other:?} is refused"),
                    ))
                }
            }
        }
        let layout_file = layout_file.ok_or_else(|| not_layout("no `oci-layout` entry".into()))?;
        check_layout_file(&layout_file, &file)?;
        let index = index.ok_or_else(|| not_layout("no `index.json` entry".into()))?;
        let index_path = PathBuf::from(format!("{}:index.json", file.display()));
        let entries = parse_index(&index, &index_path)?;
        Ok(Self {
            name: format!("oci-archive:{}", file.display()),
            origin: Origin::OciArchive(file.clone()),
            store: Store::Archive { file, blobs },
            entries,
        })
    }

    /// Where the layout is: [`Origin::OciLayout`] or [`Origin::OciArchive`] with its canonical
    /// path.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// `oci:/path` or `oci-archive:/path`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entries of `index.json`, in order.
    pub fn entries(&self) -> &[LayoutEntry] {
        &self.entries
    }

    /// The `ref.name`s of the image entries (signature tags excluded).
    pub fn tags(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.is_image())
            .filter_map(|e| e.ref_name.as_deref())
            .collect()
    }

    /// The image entry `tag` names (exact `org.opencontainers.image.ref.name` match), or, with
    /// no tag, the layout's only image entry. Errors list the tags there are.
    pub fn image_entry(&self, tag: Option<&str>) -> Result<&LayoutEntry, LayoutError> {
        let images: Vec<&LayoutEntry> = self.entries.iter().filter(|e| e.is_image()).collect();
        let list = |v: &[&LayoutEntry]| {
            let s = v.iter().map(|e| e.label()).collect::<Vec<_>>().join(", ");
            if s.is_empty() {
                "none".to_string()
            } else {
                s
            }
        };
        match tag {
            Some(t) => {
                let e = self.by_ref_name(t).map_err(|e| match e {
                    LayoutError::TagNotFound { layout, tag, .. } => LayoutError::TagNotFound {
                        layout,
                        tag,
                        available: list(&images),
                    },
                    other => other,
                })?;
                if !e.is_image() {
                    return Err(LayoutError::BadManifest {
                        what: format!("{}:{t}", self.name),
                        reason: "names a signature artifact, not an image".into(),
                    });
                }
                Ok(e)
            }
            None => match images.as_slice() {
                [] => Err(LayoutError::NoImage {
                    layout: self.name.clone(),
                }),
                [one] => Ok(one),
                many => Err(LayoutError::Ambiguous {
                    layout: self.name.clone(),
                    tags: list(many),
                }),
            },
        }
    }

    /// The single entry whose `ref.name` is `name`.
    fn by_ref_name(&self, name: &str) -> Result<&LayoutEntry, LayoutError> {
        let mut it = self
            .entries
            .iter()
            .filter(|e| e.ref_name.as_deref() == Some(name));
        let first = it.next().ok_or_else(|| LayoutError::TagNotFound {
            layout: self.name.clone(),
            tag: name.into(),
            available: String::new(),
        })?;
        if it.next().is_some() {
            return Err(LayoutError::BadIndex {
                path: self.index_path(),
                field: format!("manifests[].annotations.\"{REF_NAME_ANNOTATION}\""),
                reason: format!("{name:?} names more than one entry"),
            });
        }
        Ok(first)
    }

    fn index_path(&self) -> PathBuf {
        match &self.store {
            Store::Dir(d) => d.join("index.json"),
            Store::Archive { file, .. } => PathBuf::from(format!("{}:index.json", file.display())),
        }
    }

    fn blob_where(&self, digest: &Digest) -> String {
        match &self.store {
            Store::Dir(d) => d
                .join("blobs/sha256")
                .join(digest.hex())
                .display()
                .to_string(),
            Store::Archive { file, .. } => {
                format!("{}:blobs/sha256/{}", file.display(), digest.hex())
            }
        }
    }

    /// Opens the blob `digest` for streaming, refusing blobs over `limit` bytes. The bytes are
    /// *not* verified by this call: the consumer must hash them (the runtime's blob store does,
    /// while storing). Use [`OciLayout::read_blob`] for verified bytes in memory.
    pub fn open_blob(&self, digest: &Digest, limit: u64) -> Result<LayoutBlob, LayoutError> {
        let blob = || self.blob_where(digest);
        let (file, size) = match &self.store {
            Store::Dir(d) => {
                let path = d.join("blobs/sha256").join(digest.hex());
                match open_regular(&path) {
                    Err(LayoutError::Missing { .. }) => {
                        return Err(LayoutError::BlobMissing { blob: blob() })
                    }
                    other => other?,
                }
            }
            Store::Archive { file, blobs } => {
                let span = blobs
                    .get(digest.hex())
                    .ok_or_else(|| LayoutError::BlobMissing { blob: blob() })?;
                let mut f = File::open(file).map_err(|e| LayoutError::io(file, e))?;
                f.seek(SeekFrom::Start(span.offset))
                    .map_err(|e| LayoutError::io(file, e))?;
                (f, span.size)
            }
        };
        if size > limit {
            return Err(LayoutError::TooLarge {
                blob: blob(),
                limit,
            });
        }
        // A file in a directory may have grown since it was measured: read one byte past the
        // size so the consumer sees it. An archive member ends where its header says (the next
        // bytes are tar padding), so exactly `size` bytes are read there.
        let take = match self.store {
            Store::Dir(_) => size.saturating_add(1),
            Store::Archive { .. } => size,
        };
        Ok(LayoutBlob {
            reader: file.take(take),
            size,
        })
    }

    /// Reads the blob `digest` into memory, hashing it: refused when over `limit` bytes or when
    /// it does not hash to `digest`.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, LayoutError> {
        let mut r = self.open_blob(digest, limit)?;
        let size = r.size;
        let mut out = Vec::with_capacity(size.min(1 << 20) as usize);
        (&mut r)
            .take(size.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| LayoutError::Io {
                path: self.blob_where(digest).into(),
                reason: e.to_string(),
            })?;
        if out.len() as u64 != size {
            return Err(LayoutError::SizeMismatch {
                blob: self.blob_where(digest),
                expected: size,
                actual: out.len() as u64,
            });
        }
        let actual = Digest::from_sha256(&Sha256::digest(&out).into());
        if &actual != digest {
            return Err(LayoutError::DigestMismatch {
                blob: self.blob_where(digest),
                mismatch: Box::new(Mismatch {
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                }),
            });
        }
        Ok(out)
    }

    /// A manifest by digest: hashed, at most [`MAX_MANIFEST_SIZE`], and, when `index.json` lists
    /// the digest, exactly the size it says.
    fn manifest_by_digest(&self, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
        let bytes = self.read_blob(digest, MAX_MANIFEST_SIZE as u64)?;
        if let Some(e) = self.entries.iter().find(|e| &e.digest == digest) {
            if e.size != bytes.len() as u64 {
                return Err(LayoutError::SizeMismatch {
                    blob: self.blob_where(digest),
                    expected: e.size,
                    actual: bytes.len() as u64,
                });
            }
        }
        Ok(bytes)
    }
}

/// Normalises an archive entry name: strips leading `./` and (for directories) a trailing `/`;
/// refuses absolute paths, `..`, and empty or `.` components anywhere else.
fn clean_entry_name(name: &str, is_dir: bool) -> Result<&str, &'static str> {
    if name.starts_with('/') {
        return Err("absolute paths are refused");
    }
    let mut s = name;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    if is_dir {
        s = s.strip_suffix('/').unwrap_or(s);
        if s == "." {
            s = "";
        }
    }
    if s.is_empty() {
        return if is_dir { Ok(s) } else { Err("empty name") };
    }
    for c in s.split('/') {
        match c {
            ".." => return Err("path traversal (`..`) is refused"),
            "" | "." => return Err("empty or `.` path components are refused"),
            _ => {}
        }
    }
    Ok(s)
}

impl ContentSource for OciLayout {
    type Error = LayoutError;

    fn location(&self) -> String {
        self.name.clone()
    }

    fn has_referrers_api(&self) -> bool {
        false
    }

    async fn manifest(&self, at: TagOrDigest<'_>) -> Result<(Vec<u8>, Digest), LayoutError> {
        let digest = match at {
            TagOrDigest::Tag(t) => self.by_ref_name(t)?.digest.clone(),
            TagOrDigest::Digest(d) => d.clone(),
        };
        let bytes = self.manifest_by_digest(&digest)?;
        Ok((bytes, digest))
    }

    async fn blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, LayoutError> {
        self.read_blob(digest, limit)
    }

    async fn referrers(
        &self,
        _digest: &Digest,
        _artifact_type: &str,
    ) -> Result<Option<Vec<u8>>, LayoutError> {
        Ok(None)
    }

    fn malformed(&self, what: String, reason: String) -> LayoutError {
        LayoutError::BadManifest { what, reason }
    }

    fn no_platform(&self, what: String, platform: String, available: String) -> LayoutError {
        LayoutError::NoPlatform {
            what,
            platform,
            available,
        }
    }
}
