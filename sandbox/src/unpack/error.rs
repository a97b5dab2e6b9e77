//! Why an unpack was refused or failed: the error kinds and their context (layer, entry).

use std::io;

use perry_policies::Digest;

use crate::manifest::ManifestError;
use crate::store::StoreError;

/// Why an unpack was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackErrorKind {
    /// A hostile or unsupported entry.
    #[error("refused: {0}")]
    Refused(String),
    /// The layer's uncompressed digest is not the config's diff_id.
    #[error(
        "uncompressed content hashes to {actual}, but the image config's diff_id is {expected}"
    )]
    DiffIdMismatch {
        /// From the config.
        expected: Digest,
        /// Of the bytes.
        actual: Digest,
    },
    /// More uncompressed bytes than `max_layer_size`.
    #[error("layer is larger than the {limit}-byte limit when uncompressed (decompression bomb?)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// More entries than `max_layer_entries`.
    #[error("layer has more than the {limit}-entry limit")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The tar or compressed stream is corrupt.
    #[error("malformed layer: {0}")]
    Malformed(io::Error),
    /// The blob store refused (missing blob, corrupt blob).
    #[error(transparent)]
    Blob(#[from] StoreError),
    /// The manifest/config pair is inconsistent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// An unpack failure, naming the layer and entry involved.
#[derive(Debug)]
pub struct UnpackError {
    /// The layer being unpacked, if any.
    pub layer: Option<Digest>,
    /// The entry path (lossy UTF-8), if the failure concerns one.
    pub entry: Option<String>,
    /// What went wrong (boxed: it is large and errors travel through every `?`).
    pub kind: Box<UnpackErrorKind>,
}

impl std::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(layer) = &self.layer {
            write!(f, "layer {layer}: ")?;
        }
        if let Some(entry) = &self.entry {
            write!(f, "entry `{entry}`: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for UnpackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source()
    }
}

impl UnpackError {
    pub(super) fn new(layer: Option<&Digest>, entry: Option<&[u8]>, kind: UnpackErrorKind) -> Self {
        Self {
            layer: layer.cloned(),
            entry: entry.map(|e| String::from_utf8_lossy(e).into_owned()),
            kind: Box::new(kind),
        }
    }
}

pub(super) fn io_kind(what: &'static str, source: impl Into<io::Error>) -> UnpackErrorKind {
    UnpackErrorKind::Io {
        what,
        source: source.into(),
    }
}

pub(super) fn refused(msg: impl Into<String>) -> UnpackErrorKind {
    UnpackErrorKind::Refused(msg.into())
}
