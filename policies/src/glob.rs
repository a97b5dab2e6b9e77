//! Image-name globs for trust policies: `*` matches within one path segment, `**` across them.
//!
//! Globs are matched against the normalised `registry/repository` name (no tag, no digest), so
//! `cgr.dev/chainguard/**` covers every Chainguard image and nothing on another registry. A glob
//! without wildcards matches exactly one repository.
//!
//! Globs are parsed into literal and wildcard tokens and matched directly (a set of reachable
//! positions per token, linear in the name for each token) rather than compiled to a regex:
//! every command loads the trust policy, and building a regex per glob cost a one-shot
//! `perry-sandbox run` about 0.3 ms of its start-up.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A compiled image glob.
#[derive(Clone)]
pub struct ImageGlob {
    source: String,
    tokens: Vec<Token>,
}

/// One piece of a glob.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// These bytes exactly.
    Literal(String),
    /// `*`: any run of bytes without `/`, possibly empty.
    Star,
    /// A `**` segment: one or more bytes of anything, `/` included.
    DoubleStar,
}

/// Why a glob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// Empty pattern.
    #[error("empty image glob")]
    Empty,
    /// `***` or a `**` glued to other characters, which has no clear meaning.
    #[error("image glob `{0}`: `**` must be a whole path segment (e.g. `cgr.dev/chainguard/**`)")]
    BadDoubleStar(String),
    /// The first segment is not a registry host, so the glob could never match a normalised name.
    #[error("image glob `{0}` must start with a registry host; images are matched by their full name, e.g. `docker.io/library/{0}`")]
    NoRegistry(String),
    /// Characters that never appear in image names.
    #[error("image glob `{0}` contains `{1}`, which never appears in an image name (tags and digests are not matched)")]
    BadChar(String, char),
}

impl ImageGlob {
    /// Compiles a glob; the pattern must name a registry host (or start with a wildcard).
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/:*[]".contains(*c)))
        {
            return Err(GlobError::BadChar(pattern.into(), c));
        }
        let first = pattern.split('/').next().unwrap_or_default();
        let host_like = first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.contains('*');
        if !host_like || !pattern.contains('/') && !pattern.contains("**") {
            return Err(GlobError::NoRegistry(pattern.into()));
        }
        let mut tokens = Vec::new();
        let mut literal = String::new();
        for (i, seg) in pattern.split('/').enumerate() {
            if i > 0 {
                literal.push('/');
            }
            if seg == "**" {
                flush(&mut literal, &mut tokens);
                tokens.push(Token::DoubleStar);
                continue;
            }
            if seg.contains("**") {
                return Err(GlobError::BadDoubleStar(pattern.into()));
            }
            for (j, lit) in seg.split('*').enumerate() {
                if j > 0 {
                    flush(&mut literal, &mut tokens);
                    tokens.push(Token::Star);
                }
                literal.push_str(lit);
            }
        }
        flush(&mut literal, &mut tokens);
        Ok(Self {
            source: pattern.into(),
            tokens,
        })
    }

    /// True when the normalised `registry/repository` name matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        // reach[p]: the tokens so far can match exactly name[..p].
        let mut reach = vec![false; name.len() + 1];
        reach[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; name.len() + 1];
            match token {
                Token::Literal(lit) => {
                    let lit = lit.as_bytes();
                    for p in 0..=name.len() {
                        if reach[p] && name[p..].starts_with(lit) {
                            next[p + lit.len()] = true;
                        }
                    }
                }
                Token::Star => {
                    for p in 0..=name.len() {
                        next[p] |= reach[p];
                        if next[p] && p < name.len() && name[p] != b'/' {
                            next[p + 1] = true;
                        }
                    }
                }
                Token::DoubleStar => {
                    let mut seen = false;
                    for p in 1..=name.len() {
                        seen |= reach[p - 1];
                        next[p] = seen;
                    }
                }
            }
            reach = next;
        }
        reach[name.len()]
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Ends the literal being collected, if any.
fn flush(literal: &mut String, tokens: &mut Vec<Token>) {
    if !literal.is_empty() {
        tokens.push(Token::Literal(std::mem::take(literal)));
    }
}

impl PartialEq for ImageGlob {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for ImageGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageGlob({:?})", self.source)
    }
}

impl fmt::Display for ImageGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for ImageGlob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for ImageGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImageGlob::new(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn star_stays_in_segment_double_star_crosses() {
        let g = ImageGlob::new("cgr.dev/chainguard/*").unwrap();
        assert!(g.matches("cgr.dev/chainguard/git"));
        assert!(!g.matches("cgr.dev/chainguard/a/b"));
        let g = ImageGlob::new("cgr.dev/chainguard/**").unwrap();
        assert!(g.matches("cgr.dev/chainguard/git"));
        assert!(g.matches("cgr.dev/chainguard/a/b"));
        assert!(!g.matches("cgr.dev/chainguard"));
        assert!(!g.matches("cgr.dev/chainguardx/git"));
        assert!(!g.matches("evil.dev/cgr.dev/chainguard/git"));
        let g = ImageGlob::new("127.0.0.1:*/demo/**").unwrap();
        assert!(g.matches("127.0.0.1:5000/demo/app"));
    }

    #[test]
    fn dots_are_literal() {
        let g = ImageGlob::new("cgr.dev/x").unwrap();
        assert!(!g.matches("cgrXdev/x"));
    }

    #[test]
    fn refuses_ambiguous_globs() {
        assert!(matches!(
            ImageGlob::new("busybox"),
            Err(GlobError::NoRegistry(_))
        ));
        assert!(matches!(
            ImageGlob::new("cgr.dev/a**"),
            Err(GlobError::BadDoubleStar(_))
        ));
        assert!(matches!(
            ImageGlob::new("cgr.dev/a:latest@x"),
            Err(GlobError::BadChar(_, '@'))
        ));
        assert!(ImageGlob::new("**").is_ok());
    }

    /// The regex these globs used to compile to: `*` is `[^/]*`, a `**` segment is `.+`.
    fn oracle(pattern: &str) -> regex::Regex {
        let mut re = String::from("^");
        for (i, seg) in pattern.split('/').enumerate() {
            if i > 0 {
                re.push('/');
            }
            if seg == "**" {
                re.push_str(".+");
                continue;
            }
            for (j, lit) in seg.split('*').enumerate() {
                if j > 0 {
                    re.push_str("[^/]*");
                }
                re.push_str(&regex::escape(lit));
            }
        }
        re.push('$');
        regex::Regex::new(&re).unwrap()
    }

    proptest! {
        #[test]
        fn matching_is_exactly_the_old_regex(
            segs in proptest::collection::vec("(\\*\\*|[ab.]{0,2}\\*?[ab:]{0,2}\\*?)", 1..5),
            name in "[ab./:]{0,12}",
        ) {
            let pattern = format!("r.io/{}", segs.join("/"));
            if let Ok(g) = ImageGlob::new(&pattern) {
                let name = format!("r.io/{name}");
                prop_assert_eq!(g.matches(&name), oracle(&pattern).is_match(&name), "{} vs {}", pattern, name);
            }
        }

        #[test]
        fn star_never_crosses_slash(a in "[a-z]{1,5}", b in "[a-z]{1,5}", c in "[a-z]{1,5}") {
            let two = format!("r.io/{a}/{b}");
            let three = format!("r.io/{a}/{b}/{c}");
            let g = ImageGlob::new(&format!("r.io/{a}/*")).unwrap();
            prop_assert!(g.matches(&two));
            prop_assert!(!g.matches(&three));
            let g2 = ImageGlob::new(&format!("r.io/{a}/**")).unwrap();
            prop_assert!(g2.matches(&three));
        }

        #[test]
        fn literal_matches_only_itself(a in "[a-z0-9.-]{1,8}", b in "[a-z0-9._-]{1,8}", other in "[a-z0-9./_-]{1,20}") {
            let name = format!("h.io/{a}/{b}");
            let g = ImageGlob::new(&name).unwrap();
            prop_assert!(g.matches(&name));
            prop_assert_eq!(g.matches(&other), other == name);
        }
    }
}
