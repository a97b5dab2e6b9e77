//! Finding the configuration file, in a documented order.
//!
//! `--config FILE`, then `$PERRY_CONFIG`, `./perryconfig.toml`,
//! `$XDG_CONFIG_HOME/perry-sandbox/perryconfig.toml` (or `~/.config/…`), and
//! `/etc/perry-sandbox/perryconfig.toml`. A file named explicitly (flag or variable) must exist;
//! with no file anywhere, the built-in defaults apply, and they deny every image.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::ConfigError;

/// The file name looked for in each directory.
pub const FILE_NAME: &str = "perryconfig.toml";

/// Where the configuration in use came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file, and why it was chosen.
    File {
        /// The file.
        path: PathBuf,
        /// `--config`, `PERRY_CONFIG`, or `search`.
        how: &'static str,
    },
    /// No file was found; built-in defaults (deny every image) apply.
    Defaults,
}

/// The places searched when neither `--config` nor `PERRY_CONFIG` is given, in order.
pub fn search_path(cwd: &Path, xdg: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut v = vec![cwd.join(FILE_NAME)];
    match (xdg, home) {
        (Some(x), _) if x.is_absolute() => v.push(x.join("perry-sandbox").join(FILE_NAME)),
        (_, Some(h)) => v.push(h.join(".config/perry-sandbox").join(FILE_NAME)),
        _ => {}
    }
    v.push(PathBuf::from("/etc/perry-sandbox").join(FILE_NAME));
    v
}

/// Picks the configuration file (without reading it).
pub fn discover(explicit: Option<&Path>) -> ConfigSource {
    if let Some(p) = explicit {
        return ConfigSource::File {
            path: p.into(),
            how: "--config",
        };
    }
    if let Some(p) = std::env::var_os("PERRY_CONFIG").filter(|v| !v.is_empty()) {
        return ConfigSource::File {
            path: p.into(),
            how: "PERRY_CONFIG",
        };
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    search_path(&cwd, xdg.as_deref(), home.as_deref())
        .into_iter()
        .find(|p| p.is_file())
        .map_or(ConfigSource::Defaults, |path| ConfigSource::File {
            path,
            how: "search",
        })
}

/// Discovers and loads the configuration.
pub fn load_discovered(explicit: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
    let source = discover(explicit);
    let cfg = match &source {
        ConfigSource::File { path, .. } => Config::load(path)?,
        ConfigSource::Defaults => Config::default(),
    };
    Ok((cfg, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order() {
        let v = search_path(
            Path::new("/w"),
            Some(Path::new("/x")),
            Some(Path::new("/h")),
        );
        assert_eq!(
            v,
            [
                PathBuf::from("/w/perryconfig.toml"),
                "/x/perry-sandbox/perryconfig.toml".into(),
                "/etc/perry-sandbox/perryconfig.toml".into()
            ]
        );
        let v = search_path(Path::new("/w"), None, Some(Path::new("/h")));
        assert_eq!(
            v[1],
            PathBuf::from("/h/.config/perry-sandbox/perryconfig.toml")
        );
        // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
        let v = search_path(
            Path::new("/w"),
            Some(Path::new("rel")),
            Some(Path::new("/h")),
        );
        assert_eq!(
            v[1],
            PathBuf::from("/h/.config/perry-sandbox/perryconfig.toml")
        );
    }
}
