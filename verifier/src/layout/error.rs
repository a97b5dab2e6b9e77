//! What can be wrong with an OCI layout or archive, with the code each maps to.

use std::io::{self};
use std::path::{Path, PathBuf};

use crate::registry::Mismatch;
use crate::source::SourceError;

/// Why a layout or archive cannot be used. Every message names the layout, file or entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A file or directory the layout needs does not exist.
    #[error("{}: no such file or directory", path.display())]
    Missing {
        /// The missing path.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The directory or archive is not an OCI image layout (no or a wrong `oci-layout` file,
    /// no `index.json`, not a tar, compressed).
    #[error("{}: not an OCI image layout: {reason}", path.display())]
    NotALayout {
        /// The layout directory or archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `index.json` does not parse or holds an invalid value.
    #[error("{}: {field}: {reason}", path.display())]
    BadIndex {
        /// The `index.json` (inside an archive: `ARCHIVE:index.json`).
        path: PathBuf,
        /// The field path (`manifests[2].digest`) or `line L column C`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No `index.json` entry has this `org.opencontainers.image.ref.name`.
    #[error("{layout}: no image is tagged `{tag}` (org.opencontainers.image.ref.name in index.json; images: {available})")]
    TagNotFound {
        /// `oci:/path` or `oci-archive:/path`.
        layout: String,
        /// The tag asked for.
        tag: String,
        /// The image tags the layout has, comma-separated.
        available: String,
    },
    /// No tag was given and the layout holds several images.
    #[error("{layout}: holds several images, name one with {layout}:TAG (tags: {tags})")]
    Ambiguous {
        /// `oci:/path` or `oci-archive:/path`.
        layout: String,
        /// The image tags (or digests of untagged images), comma-separated.
        tags: String,
    },
    /// `index.json` lists no image at all.
    #[error("{layout}: index.json lists no image")]
    NoImage {
        /// `oci:/path` or `oci-archive:/path`.
        layout: String,
    },
    /// A blob named by digest is not in the layout.
    #[error("{blob}: blob not in the layout")]
    BlobMissing {
        /// Where it should be (`DIR/blobs/sha256/<hex>` or `ARCHIVE:blobs/sha256/<hex>`).
        blob: String,
    },
    /// A layout file is a symlink, device, FIFO, directory, or was swapped while opening.
    #[error("{}: not a regular file (symlinks and special files are refused in a layout)", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// A blob's bytes do not hash to its digest: the layout was altered.
    #[error("{blob}: content digest mismatch: {mismatch}")]
    DigestMismatch {
        /// Where the blob is.
        blob: String,
        /// The digests (boxed: keeps the error small).
        mismatch: Box<Mismatch>,
    },
    /// A blob's size differs from what `index.json` (or its file, while being read) says.
    #[error("{blob}: expected {expected} bytes, the blob has {actual}")]
    SizeMismatch {
        /// Where the blob is.
        blob: String,
        /// The descriptor's (or file's) size.
        expected: u64,
        /// The blob's size.
        actual: u64,
    },
    /// A blob or file is over the limit for its kind.
    #[error("{blob}: larger than the {limit}-byte limit")]
    TooLarge {
        /// Where it is.
        blob: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A manifest or index that does not parse, or is not what was expected.
    #[error("{what}: {reason}")]
    BadManifest {
        /// Which manifest (`oci:/path@sha256:…`).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A multi-platform index has no manifest for the requested platform.
    #[error("{what} has no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        /// The index.
        what: String,
        /// The platform asked for.
        platform: String,
        /// The platforms it offers.
        available: String,
    },
    /// An OCI archive entry that is not allowed; the whole archive is refused.
    #[error("{}: entry `{entry}` refused: {reason}", archive.display())]
    UnsafeEntry {
        /// The archive.
        archive: PathBuf,
        /// The entry's path as stored.
        entry: String,
        /// Why.
        reason: String,
    },
}

impl SourceError for LayoutError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::TagNotFound { .. } | Self::BlobMissing { .. })
    }
}

impl LayoutError {
    /// The stable machine code: `not_found` (missing layout, tag or blob), `invalid_argument`
    /// (no tag given for a layout with several images) or `invalid_image` (a malformed,
    /// altered or hostile layout or archive).
    pub fn code(&self) -> perry_policies::Code {
        use perry_policies::Code;
        match self {
            Self::Missing { .. }
            | Self::TagNotFound { .. }
            | Self::NoImage { .. }
            | Self::BlobMissing { .. } => Code::NotFound,
            Self::Ambiguous { .. } => Code::InvalidArgument,
            _ => Code::InvalidImage,
        }
    }

    pub(super) fn io(path: &Path, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            Self::Missing { path: path.into() }
        } else {
            Self::Io {
                path: path.into(),
                reason: e.to_string(),
            }
        }
    }
}
