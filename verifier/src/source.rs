//! Where an image comes from, and the one interface resolution and signature discovery read it
//! through.
//!
//! An image is either in a registry (`127.0.0.1:5000/busybox:v1`) or on local disk, air-gapped:
//! an OCI image layout directory (`oci:DIR[:tag]`) or an OCI archive, a tar of such a directory
//! (`oci-archive:FILE[:tag]`). [`ImageSource`] is the parsed form of what a user wrote.
//!
//! Resolution (`RegistryClient::resolve`) and signature discovery
//! ([`crate::discover`]) are written once, against [`ContentSource`]: a registry repository
//! ([`RegistrySource`]) and an OCI layout ([`crate::layout::OciLayout`]) both implement it. Every
//! implementation hashes what it returns and refuses bytes that do not match the digest asked
//! for, so the shared code never sees unverified content.
//!
//! [`Origin`] is recorded in every [`crate::VerifiedImage`] so the puller reads the bytes from the
//! place they were verified from, and so cached decisions for one origin never answer for
//! another.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use perry_policies::{Digest, ImageRef, ReferenceError};
use serde::{Deserialize, Serialize};

/// Transport prefix of an OCI image layout directory source.
pub const OCI_LAYOUT_PREFIX: &str = "oci:";
/// Transport prefix of an OCI archive (tar of a layout) source.
pub const OCI_ARCHIVE_PREFIX: &str = "oci-archive:";

/// An image source as a user names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// An image in a registry.
    Registry(ImageRef),
    /// An OCI image layout directory (`oci:DIR[:tag]`).
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select; `None`: the layout's only image.
        tag: Option<String>,
    },
    /// An OCI archive, an uncompressed tar of a layout (`oci-archive:FILE[:tag]`).
    OciArchive {
        /// The tar file.
        file: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select; `None`: the archive's only image.
        tag: Option<String>,
    },
}

/// Why an image source string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceParseError {
    /// `oci:` or `oci-archive:` with nothing after it.
    #[error("image source `{input}`: no path after `{prefix}`")]
    EmptyPath {
        /// The whole input.
        input: String,
        /// `oci:` or `oci-archive:`.
        prefix: &'static str,
    },
    /// A `:tag` suffix that is empty or contains whitespace or control characters.
    #[error("image source `{input}`: invalid tag `{tag}` (must be non-empty, at most 256 printable characters, no whitespace)")]
    BadTag {
        /// The whole input.
        input: String,
        /// The tag part.
        tag: String,
    },
    /// A registry reference that does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

fn valid_layout_tag(t: &str) -> bool {
    !t.is_empty() && t.len() <= 256 && t.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

impl ImageSource {
    /// Parses `oci:DIR[:tag]`, `oci-archive:FILE[:tag]`, or a registry reference.
    ///
    /// As in skopeo, the path ends at the first `:` after the prefix (paths containing `:` cannot
    /// be named this way); everything after it is the tag, matched exactly against the
    /// `org.opencontainers.image.ref.name` annotations of the layout's `index.json` (so it may
    /// itself contain `:`, e.g. `oci:dir:127.0.0.1:5000/busybox:v1`). The transport prefixes take
    /// precedence over a Docker Hub image literally named `oci` or `oci-archive`.
    pub fn parse(input: &str) -> Result<Self, SourceParseError> {
        for (prefix, archive) in [(OCI_ARCHIVE_PREFIX, true), (OCI_LAYOUT_PREFIX, false)] {
            let Some(rest) = input.strip_prefix(prefix) else {
                continue;
            };
            let (path, tag) = match rest.split_once(':') {
                Some((p, t)) => (p, Some(t)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(SourceParseError::EmptyPath {
                    input: input.into(),
                    prefix,
                });
            }
            if let Some(t) = tag {
                if !valid_layout_tag(t) {
                    return Err(SourceParseError::BadTag {
                        input: input.into(),
                        tag: t.into(),
                    });
                }
            }
            let path = PathBuf::from(path);
            let tag = tag.map(str::to_string);
            return Ok(if archive {
                Self::OciArchive { file: path, tag }
            } else {
                Self::OciLayout { dir: path, tag }
            });
        }
        Ok(Self::Registry(ImageRef::parse(input)?))
    }

    /// True for `oci:` and `oci-archive:` sources (which need a caller-supplied image name).
    pub fn is_local(&self) -> bool {
        !matches!(self, Self::Registry(_))
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, path, tag) = match self {
            Self::Registry(r) => return write!(f, "{r}"),
            Self::OciLayout { dir, tag } => (OCI_LAYOUT_PREFIX, dir, tag),
            Self::OciArchive { file, tag } => (OCI_ARCHIVE_PREFIX, file, tag),
        };
        write!(f, "{prefix}{}", path.display())?;
        if let Some(t) = tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

/// Where a verified image's bytes are read from. Paths are canonical (absolute, no symlinks)
/// as of verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "kebab-case")]
pub enum Origin {
    /// The registry named by the image reference.
    #[default]
    Registry,
    /// An OCI image layout directory.
    OciLayout(PathBuf),
    /// An OCI archive file.
    OciArchive(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registry => f.write_str("registry"),
            Self::OciLayout(p) => write!(f, "{OCI_LAYOUT_PREFIX}{}", p.display()),
            Self::OciArchive(p) => write!(f, "{OCI_ARCHIVE_PREFIX}{}", p.display()),
        }
    }
}

/// A manifest asked for by tag (signature tags, `sha256-<hex>`) or by digest.
#[derive(Clone, Copy, Debug)]
pub enum TagOrDigest<'a> {
    /// A tag (registry) or `org.opencontainers.image.ref.name` (layout).
    Tag(&'a str),
    /// A content digest.
    Digest(&'a Digest),
}

/// What every content-source error can say: whether the thing asked for is absent (a missing
/// signature tag is "nothing there", not a failure).
pub trait SourceError: std::error::Error {
    /// True when the manifest, tag or blob does not exist in the source.
    fn is_not_found(&self) -> bool;
}

/// A place manifests and blobs are read from by digest (and signature manifests by tag).
///
/// Implementations must hash every byte they return and refuse content that does not hash to
/// the digest asked for, and refuse manifests over `MAX_MANIFEST_SIZE` (4 MiB) and
/// blobs over the given limit.
pub trait ContentSource: Sync {
    /// The source's error type.
    type Error: SourceError + Send;

    /// How the source is named in messages: `host/repository` or `oci:/path`.
    fn location(&self) -> String;

    /// True when the source may serve the OCI 1.1 referrers API (registries).
    fn has_referrers_api(&self) -> bool;

    /// A manifest or index by tag or digest, with the digest computed from its bytes.
    fn manifest(
        &self,
        at: TagOrDigest<'_>,
    ) -> impl Future<Output = Result<(Vec<u8>, Digest), Self::Error>> + Send;

    /// A blob by digest, hashed, at most `limit` bytes.
    fn blob(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;

    /// The referrers index (JSON) of `digest` from the referrers API, or `None` when the source
    /// has none.
    fn referrers(
        &self,
        digest: &Digest,
        artifact_type: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Self::Error>> + Send;

    /// An error for a manifest that does not parse or is not what was expected.
    fn malformed(&self, what: String, reason: String) -> Self::Error;

    /// An error for an index with no manifest for the requested platform.
    fn no_platform(&self, what: String, platform: String, available: String) -> Self::Error;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports_paths_and_tags() {
        assert_eq!(
            ImageSource::parse("oci:/tmp/lay").unwrap(),
            ImageSource::OciLayout {
                dir: "/tmp/lay".into(),
                tag: None
            }
        );
        assert_eq!(
            ImageSource::parse("oci:rel/dir:v1").unwrap(),
            ImageSource::OciLayout {
                dir: "rel/dir".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageSource::parse("oci-archive:/x/img.tar:127.0.0.1:5000/busybox:v1").unwrap(),
            ImageSource::OciArchive {
                file: "/x/img.tar".into(),
                tag: Some("127.0.0.1:5000/busybox:v1".into())
            }
        );
        assert!(matches!(
            ImageSource::parse("127.0.0.1:5000/busybox:v1").unwrap(),
            ImageSource::Registry(_)
        ));
        for bad in [
            "oci:",
            "oci::v1",
            "oci-archive:",
            "oci:/x:",
            "oci:/x:a b",
            "oci:/x:\u{7}",
        ] {
            assert!(ImageSource::parse(bad).is_err(), "{bad}");
        }
        for s in [
            "oci:/tmp/lay:v1",
            "oci-archive:/a.tar",
            "docker.io/library/busybox:latest",
        ] {
            assert_eq!(ImageSource::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn origin_round_trips_through_json() {
        for o in [
            Origin::Registry,
            Origin::OciLayout("/a/b".into()),
            Origin::OciArchive("/c.tar".into()),
        ] {
            let j = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Origin>(&j).unwrap(), o, "{j}");
        }
    }
}
