//! What every subcommand needs: the loaded configuration, where it came from, and output mode.

use std::path::PathBuf;

use perry_policies::{Config, ConfigSource};

use super::error::CliError;
use super::GlobalArgs;

/// The per-invocation context handed to subcommands.
pub struct Context {
    /// The configuration in force (built-in defaults when no file was found).
    pub config: Config,
    /// Where the configuration came from.
    pub source: ConfigSource,
    /// Print machine-readable JSON instead of text.
    pub json: bool,
}

impl Context {
    /// Discovers and loads the configuration, then applies global overrides (`--state-dir`).
    pub fn load(g: &GlobalArgs) -> Result<Self, CliError> {
        let (mut config, source) = perry_policies::load_discovered(g.config.as_deref())?;
        if let Some(dir) = &g.state_dir {
            config.sandbox.state_dir = absolute(dir);
        }
        if source == ConfigSource::Defaults {
            tracing::warn!(
                "no perryconfig.toml found; using built-in defaults, which deny every image"
            );
        }
        Ok(Self {
            config,
            source,
            json: g.json,
        })
    }

    /// A short description of the configuration source, for messages.
    pub fn source_label(&self) -> String {
        match &self.source {
            ConfigSource::File { path, how } => format!("{} (via {how})", path.display()),
            ConfigSource::Defaults => {
                "built-in defaults (no perryconfig.toml found; every image is denied)".into()
            }
        }
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
