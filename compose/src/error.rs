//! Errors raised while turning bytes into a [`crate::Node`] tree.

use std::fmt;

/// A located error: `file:line:col: path: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// The file the error is in.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// Dot path to the offending key (may be empty).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.line) {
            (true, 0) => {}
            (true, _) => write!(f, "{}:{}: ", self.line, self.column)?,
            (false, 0) => write!(f, "{}: ", self.file)?,
            (false, _) => write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a compose project could not be loaded.
///
/// Every variant that has a location displays as `file:line:col: path.to.key: message`.
/// Values of environment variables never appear in messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{file}: {message}")]
    Io {
        /// The file.
        file: String,
        /// What failed.
        message: String,
    },
    /// No compose file was given and none was found.
    #[error("no configuration file provided: not found (looked for {} in {} and its parents)", crate::files::DEFAULT_FILES.join(", "), .0.display())]
    NotFound(std::path::PathBuf),
    /// The YAML or TOML is malformed (or over a budget).
    #[error("{0}")]
    Syntax(ParseError),
    /// A variable could not be substituted.
    #[error("{0}")]
    Interpolation(ParseError),
    /// A `.env` / `env_file` file is malformed.
    #[error("{file}:{line}: {message}")]
    Dotenv {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A key or value is not valid compose (unknown key, wrong type, bad syntax).
    #[error("{0}")]
    Invalid(ParseError),
    /// `extends` or `include` went wrong (missing service, cycle).
    #[error("{0}")]
    Extends(ParseError),
    /// A cross-reference is broken (undefined service, network, volume, secret, config).
    #[error("{0}")]
    Consistency(ParseError),
    /// `depends_on` forms a cycle:
    /// `file:line:col: services.a.depends_on.b: dependency cycle detected: a -> b -> a`.
    #[error("{at}")]
    DependencyCycle {
        /// The services in the cycle, in order, the first repeated last.
        services: Vec<String>,
        /// Where: the first service's `depends_on` entry naming the next one.
        at: ParseError,
    },
}

impl LoadError {
    /// The located detail, when there is one.
    pub fn location(&self) -> Option<&ParseError> {
        match self {
            LoadError::Syntax(e)
            | LoadError::Interpolation(e)
            | LoadError::Invalid(e)
            | LoadError::Extends(e)
            | LoadError::Consistency(e)
            | LoadError::DependencyCycle { at: e, .. } => Some(e),
            _ => None,
        }
    }
}
