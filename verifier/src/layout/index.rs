//! `oci-layout` and `index.json`: reading them within limits and naming their entries.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use perry_policies::Digest;
use serde::Deserialize;

use super::error::LayoutError;
use super::{IMAGE_LAYOUT_VERSION, MAX_INDEX_ENTRIES, REF_NAME_ANNOTATION};
use crate::registry::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

/// One entry of `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutEntry {
    /// The descriptor's `mediaType`, if given.
    pub media_type: Option<String>,
    /// The descriptor's digest.
    pub digest: Digest,
    /// The descriptor's size.
    pub size: u64,
    /// `org.opencontainers.image.ref.name`, if annotated.
    pub ref_name: Option<String>,
    /// The descriptor's `artifactType`, if given.
    pub artifact_type: Option<String>,
}

impl LayoutEntry {
    /// True for an image (manifest or index) entry; false for signature tags
    /// (`sha256-<hex>`, `sha256-<hex>.sig`, …) and Sigstore bundle artifacts.
    pub fn is_image(&self) -> bool {
        let kind_ok = match self.media_type.as_deref() {
            None => true,
            Some(t) => [
                OCI_MANIFEST,
                OCI_INDEX,
                DOCKER_MANIFEST,
                DOCKER_MANIFEST_LIST,
            ]
            .contains(&t),
        };
        kind_ok
            && !self.ref_name.as_deref().is_some_and(is_signature_ref)
            && !self
                .artifact_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/vnd.dev.sigstore.bundle"))
    }

    pub(super) fn label(&self) -> String {
        self.ref_name
            .clone()
            .unwrap_or_else(|| format!("(untagged) {}", self.digest))
    }
}

/// `sha256-<64 hex>` optionally followed by a `.suffix` (`.sig`, `.att`, `.sbom`): a name
/// signature tooling gives to artifacts about a digest, never an image.
pub fn is_signature_ref(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("sha256-") else {
        return false;
    };
    let (hex, suffix) = rest.split_at(rest.len().min(64));
    hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (suffix.is_empty() || suffix.starts_with('.'))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawLayoutFile {
    image_layout_version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawIndex {
    schema_version: u32,
    media_type: Option<String>,
    manifests: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Checks the `oci-layout` file's contents.
pub(super) fn check_layout_file(bytes: &[u8], path: &Path) -> Result<(), LayoutError> {
    let bad = |reason: String| LayoutError::NotALayout {
        path: path.into(),
        reason,
    };
    let v: RawLayoutFile =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("oci-layout: {e}")))?;
    if v.image_layout_version != IMAGE_LAYOUT_VERSION {
        return Err(bad(format!(
            "oci-layout: imageLayoutVersion is {:?}, only {IMAGE_LAYOUT_VERSION:?} is supported",
            v.image_layout_version
        )));
    }
    Ok(())
}

/// Parses `index.json`, naming the field at fault.
pub(super) fn parse_index(bytes: &[u8], path: &Path) -> Result<Vec<LayoutEntry>, LayoutError> {
    let bad = |field: String, reason: String| LayoutError::BadIndex {
        path: path.into(),
        field,
        reason,
    };
    let raw: RawIndex = serde_json::from_slice(bytes).map_err(|e| {
        bad(
            format!("line {} column {}", e.line(), e.column()),
            e.to_string(),
        )
    })?;
    if raw.schema_version != 2 {
        return Err(bad(
            "schemaVersion".into(),
            format!("is {}, only 2 is supported", raw.schema_version),
        ));
    }
    if let Some(t) = &raw.media_type {
        if t != OCI_INDEX {
            return Err(bad(
                "mediaType".into(),
                format!("is {t:?}, not {OCI_INDEX:?}"),
            ));
        }
    }
    if raw.manifests.len() > MAX_INDEX_ENTRIES {
        return Err(bad(
            "manifests".into(),
            format!(
                "{} entries, more than {MAX_INDEX_ENTRIES}",
                raw.manifests.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(raw.manifests.len());
    for (i, d) in raw.manifests.into_iter().enumerate() {
        let digest = Digest::parse(&d.digest)
            .map_err(|e| bad(format!("manifests[{i}].digest"), e.to_string()))?;
        out.push(LayoutEntry {
            media_type: d.media_type,
            digest,
            size: d.size,
            ref_name: d.annotations.get(REF_NAME_ANNOTATION).cloned(),
            artifact_type: d.artifact_type,
        });
    }
    Ok(out)
}

/// Opens `path` for reading only if it is a regular file, refusing symlinks and special files
/// (`lstat` before, `fstat` after: the same inode). Returns the file and its size.
pub(super) fn open_regular(path: &Path) -> Result<(File, u64), LayoutError> {
    let before = fs::symlink_metadata(path).map_err(|e| LayoutError::io(path, e))?;
    if !before.file_type().is_file() {
        return Err(LayoutError::NotRegularFile { path: path.into() });
    }
    let f = File::open(path).map_err(|e| LayoutError::io(path, e))?;
    let after = f.metadata().map_err(|e| LayoutError::io(path, e))?;
    if !after.file_type().is_file() || after.ino() != before.ino() || after.dev() != before.dev() {
        return Err(LayoutError::NotRegularFile { path: path.into() });
    }
    Ok((f, after.len()))
}

/// Reads at most `limit` bytes of `r`; `Err(())` if there are more.
pub(super) fn read_limited(r: impl Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

pub(super) fn read_small_file(path: &Path, limit: u64) -> Result<Vec<u8>, LayoutError> {
    let (f, _) = open_regular(path)?;
    read_limited(f, limit)
        .map_err(|e| LayoutError::io(path, e))?
        .ok_or_else(|| LayoutError::TooLarge {
            blob: path.display().to_string(),
            limit,
        })
}

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
