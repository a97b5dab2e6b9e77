//! OCI image references with docker's normalisation rules.
//!
//! `busybox` means `docker.io/library/busybox:latest`; `ghcr.io/a/b@sha256:…` pins by digest. The
//! type lives here rather than in the verifier because configuration must validate every image it
//! names at load time (`shellCapabilityImages`, capability images) and match trust globs against
//! the normalised name; `perry-verifier` re-exports it.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<hex>`; other algorithms are refused (we only pin by SHA-256).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ReferenceError::BadDigest(s.into(), "must start with `sha256:`"))?;
        if hex.len() != 64 {
            return Err(ReferenceError::BadDigest(
                s.into(),
                "needs exactly 64 hex digits",
            ));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ReferenceError::BadDigest(s.into(), "must be lowercase hex"));
        }
        Ok(Self(s.to_string()))
    }

    /// The digest of `bytes`, computed with the given SHA-256 output (callers hash; this crate
    /// carries no hashing dependency).
    pub fn from_sha256(hash: &[u8; 32]) -> Self {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in hash {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed, normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Nothing to parse.
    #[error("empty image reference")]
    Empty,
    /// The digest part is malformed.
    #[error("invalid digest `{0}`: {1}")]
    BadDigest(String, &'static str),
    /// The tag part is malformed.
    #[error(
        "invalid tag `{0}`: tags are 1-128 of [A-Za-z0-9_.-] and may not start with `.` or `-`"
    )]
    BadTag(String),
    /// A path component of the repository is malformed.
    #[error("invalid repository component `{component}` in `{input}`: components are lowercase letters and digits, separated by `.`, `_`, `__` or `-`")]
    BadComponent {
        /// The whole input.
        input: String,
        /// The offending component.
        component: String,
    },
    /// The registry host is malformed.
    #[error("invalid registry `{0}`: expected a host name, optionally with `:port`")]
    BadRegistry(String),
    /// Longer than docker allows.
    #[error("image name `{0}` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_digit() || ch.is_ascii_lowercase() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i].is_ascii_lowercase()) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (r, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !t.starts_with('.')
        && !t.starts_with('-')
}

impl ImageRef {
    /// Parses and normalises a reference the way `docker pull` does.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(&t[1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::BadTag(t.into()));
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_registry(first) {
                    return Err(ReferenceError::BadRegistry(first.into()));
                }
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        for component in path.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::BadComponent {
                    input: input.into(),
                    component: component.into(),
                });
            }
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong(input.into()));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one (a digest-only reference has none).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`: what trust globs are matched against.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest`, with no tag: the only form used past the verifier.
    pub fn pinned(&self, digest: Digest) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The same repository at another tag (used to look up `sha256-<hex>` signature tags).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::BadTag(tag.into()));
        }
        Ok(Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.into()),
            digest: None,
        })
    }

    /// True when the registry host is a loopback address or `localhost`.
    pub fn is_loopback_registry(&self) -> bool {
        crate::registry::is_loopback_host(&self.registry)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImageRef::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            (
                "index.docker.io/library/alpine",
                "docker.io/library/alpine:latest",
            ),
            (
                "cgr.dev/chainguard/git:latest",
                "cgr.dev/chainguard/git:latest",
            ),
            ("localhost/app", "localhost/app:latest"),
            ("127.0.0.1:5000/demo/app:v1", "127.0.0.1:5000/demo/app:v1"),
            ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/r@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().as_str(), d);
        let r = ImageRef::parse(&format!("ghcr.io/o/r:v2@{d}")).unwrap();
        assert_eq!(r.tag(), Some("v2"));
    }

    #[test]
    fn rejects_bad_references_with_reasons() {
        let bad = [
            ("", "empty"),
            ("Busybox", "invalid repository component `Busybox`"),
            ("a//b", "invalid repository component ``"),
            ("busybox:", "invalid tag"),
            ("busybox:-x", "invalid tag"),
            ("busybox@sha256:abc", "exactly 64 hex"),
            ("busybox@md5:abc", "must start with `sha256:`"),
            ("exa_mple.com/a", "invalid registry"),
            ("host:99x/a", "invalid registry"),
        ];
        for (input, want) in bad {
            let e = ImageRef::parse(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn pinned_drops_tag() {
        let r = ImageRef::parse("cgr.dev/chainguard/git:latest").unwrap();
        let d = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert_eq!(
            r.pinned(d).to_string(),
            format!("cgr.dev/chainguard/git@sha256:{}", "0".repeat(64))
        );
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}"
    }

    proptest! {
        #[test]
        fn parse_display_is_identity_on_normalised(
            host in "[a-z]{1,8}\\.[a-z]{2,4}(:[0-9]{2,5})?",
            comps in proptest::collection::vec(component(), 1..4),
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let mut s = format!("{host}/{}", comps.join("/"));
            let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            if let Some(d) = &digest { s.push_str("@sha256:"); s.push_str(d); }
            let r = ImageRef::parse(&s).unwrap();
            prop_assert_eq!(r.to_string(), s.clone());
            prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn never_panics_on_reference_alphabet(s in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,80}") {
            if let Ok(r) = ImageRef::parse(&s) {
                prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
            }
        }
    }
}
