//! Configuration errors that say where and what: file, line, column, key path, and a suggestion.

use std::fmt;
use std::path::PathBuf;

/// One step in a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    /// A table key.
    Key(String),
    /// An index into an array (of tables).
    Index(usize),
}

/// A key path such as `shellCapabilities.git-log.tier` or `trust.policy[0].images[1]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<PathSeg>);

impl KeyPath {
    /// A path from plain keys.
    pub fn keys(keys: &[&str]) -> Self {
        Self(keys.iter().map(|k| PathSeg::Key((*k).into())).collect())
    }

    /// This path with one more key.
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(PathSeg::Key(k.into()));
        Self(v)
    }

    /// This path with one more index.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(PathSeg::Index(i));
        Self(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))?;
                    }
                }
                PathSeg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One thing wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when the problem could be located.
    pub line: Option<usize>,
    /// 1-based column (in characters), when located.
    pub column: Option<usize>,
    /// The key path the problem is about (may be empty for syntax errors).
    pub path: KeyPath,
    /// What is wrong.
    pub message: String,
    /// The nearest valid key or value, for typos.
    pub suggestion: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "{l}:{c}: ")?;
        }
        if !self.path.0.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, ", did you mean `{s}`?")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read configuration: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; every problem found is listed.
    #[error("{}", render(file, problems))]
    Invalid {
        /// The file (`<inline>` for strings).
        file: PathBuf,
        /// What is wrong, in file order where possible.
        problems: Vec<Problem>,
    },
}

fn render(file: &std::path::Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{p}", file.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The problems, when the file was read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Io { .. } => &[],
        }
    }
}

/// The closest candidate to `word` by edit distance, if close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_quote_when_needed() {
        let p = KeyPath::keys(&["registries", "127.0.0.1:5000"]).key("insecure");
        assert_eq!(p.to_string(), "registries.\"127.0.0.1:5000\".insecure");
        let p = KeyPath::keys(&["trust", "policy"])
            .index(0)
            .key("images")
            .index(2);
        assert_eq!(p.to_string(), "trust.policy[0].images[2]");
    }

    #[test]
    fn nearest_finds_typos_only() {
        let keys = ["state_dir", "default_tier", "uid_range"];
        assert_eq!(nearest("state_dirr", keys).as_deref(), Some("state_dir"));
        assert_eq!(
            nearest("defualt_tier", keys).as_deref(),
            Some("default_tier")
        );
        assert_eq!(nearest("banana", keys), None);
    }
}
