//! The platform of a multi-platform image (`os/arch[/variant]`).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// An OS/architecture[/variant] triple, used to pick one manifest out of a multi-arch index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … when the architecture has variants.
    pub variant: Option<String>,
}

impl Default for Platform {
    /// `linux/amd64`, what perry-sandbox runs on.
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Why a `--platform` value is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{0}`: expected os/architecture[/variant], e.g. linux/amd64")]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(PlatformError(s.into()));
        }
        Ok(Self {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl Platform {
    pub(super) fn matches(&self, p: &IndexPlatform) -> bool {
        if p.os != self.os || p.architecture != self.architecture {
            return false;
        }
        match (&self.variant, &p.variant) {
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.architecture == "arm64" && want == "v8",
            (None, _) => true,
        }
    }
}

/// The `platform` of an index entry, as the index states it.
#[derive(Deserialize)]
pub(super) struct IndexPlatform {
    pub(super) os: String,
    pub(super) architecture: String,
    pub(super) variant: Option<String>,
}

impl IndexPlatform {
    pub(super) fn describe(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}
