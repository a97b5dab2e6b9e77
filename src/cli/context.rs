//! What every subcommand needs: the loaded configuration, where it came from, output mode, and
//! the audit log its security decisions go to.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use perry_audit::{Action, Actor, AuditLog, Decision, Event, LogOptions};
use perry_policies::{Config, ConfigSource};

use super::error::CliError;
use super::GlobalArgs;

/// The per-invocation context handed to subcommands.
pub(crate) struct Context {
    /// The configuration in force (built-in defaults when no file was found).
    pub config: Config,
    /// Where the configuration came from.
    pub source: ConfigSource,
    /// Print machine-readable JSON instead of text.
    pub json: bool,
    /// The audit log, opened on first use by [`Context::audit_log`] and held until the context
    /// is dropped (which writes the final checkpoint when this is the last handle).
    audit: Mutex<Option<Arc<AuditLog>>>,
}

impl Context {
    /// Discovers and loads the configuration, then applies global overrides (`--state-dir`).
    pub(crate) fn load(g: &GlobalArgs) -> Result<Self, CliError> {
        let (config, source) = perry_policies::load_discovered(g.config.as_deref())?;
        if source == ConfigSource::Defaults {
            tracing::warn!(
                "no perryconfig.toml found; using built-in defaults, which deny every image"
            );
        }
        Ok(Self::from_parts(g, config, source))
    }

    /// A context for a configuration already loaded (e.g. `config check FILE`), with the
    /// global overrides applied.
    pub(crate) fn from_parts(g: &GlobalArgs, mut config: Config, source: ConfigSource) -> Self {
        if let Some(dir) = &g.state_dir {
            config.sandbox.state_dir = absolute(dir);
        }
        Self {
            config,
            source,
            json: g.json,
            audit: Mutex::new(None),
        }
    }

    /// The audit log of this configuration (`[audit]`), opened once per process and shared:
    /// verify, run, cap and config commands record their decisions through it, with
    /// [`Context::audit_event`] to name the actor. `record()` returns only once the record is
    /// durable, so call it before acting on an allow decision.
    ///
    /// The first call for this context also stages a `config_load` event (which file, its
    /// SHA-256, how it was found), so every decision in the log follows the configuration that
    /// made it; it becomes durable with the first decision record, in the same `fdatasync`
    /// ([`AuditLog::stage`]), or when the log closes. An error here must stop the command:
    /// nothing is decided without a record.
    ///
    /// ```ignore
    /// let log = ctx.audit_log()?;
    /// log.record(ctx.audit_event(Action::Verify, Decision::Allow).image(&image).correlation(&id))
    ///     .map_err(super::audit::audit_error)?;
    /// ```
    pub(crate) fn audit_log(&self) -> Result<Arc<AuditLog>, CliError> {
        let mut slot = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = &*slot {
            return Ok(Arc::clone(log));
        }
        let log = shared_log(LogOptions::from_config(&self.config))?;
        log.stage(self.config_load_event());
        *slot = Some(Arc::clone(&log));
        Ok(log)
    }

    /// The audit log without a `config_load` record, for reviewer commands (`audit
    /// checkpoint`) that decide nothing.
    pub(crate) fn audit_log_for_review(&self) -> Result<Arc<AuditLog>, CliError> {
        shared_log(LogOptions::from_config(&self.config))
    }

    /// The `config_load` event: which configuration is in force. The file is re-read for its
    /// digest; a file that cannot be read any more is recorded as such rather than hidden.
    fn config_load_event(&self) -> Event {
        let cfg = &self.config;
        let mut ev = self
            .audit_event(Action::ConfigLoad, Decision::Allow)
            .tier(cfg.sandbox.default_tier.to_string())
            .detail("trust_rules", cfg.trust.rules.len())
            .detail("capabilities", cfg.capabilities.len())
            .detail("audit_dir", cfg.audit_dir().to_string_lossy().into_owned());
        match &self.source {
            ConfigSource::File { path, how } => {
                let path = absolute(path);
                ev = ev
                    .reason(format!(
                        "configuration loaded from {} (via {how})",
                        path.display()
                    ))
                    .detail("path", path.to_string_lossy().into_owned())
                    .detail("via", *how);
                ev = match std::fs::read(&path) {
                    Ok(bytes) => ev.detail("sha256", perry_audit::sha256_hex(&bytes)),
                    Err(e) => ev.detail("sha256_error", e.to_string()),
                };
            }
            ConfigSource::Defaults => {
                ev = ev
                    .reason("no perryconfig.toml found; built-in defaults deny every image")
                    .detail("path", serde_json::Value::Null);
            }
        }
        ev
    }

    /// Who is acting, for audit records made by this process: real uid, gid, pid, executable,
    /// `via: cli`.
    pub(crate) fn audit_actor(&self) -> Actor {
        Actor::current()
    }

    /// A new audit event for `action` with `decision`, carrying [`Context::audit_actor`]; add
    /// subject, reason, policy and correlation with the builder methods before recording it.
    pub(crate) fn audit_event(&self, action: Action, decision: Decision) -> Event {
        Event::new(action, decision).actor(self.audit_actor())
    }

    /// A short description of the configuration source, for messages.
    pub(crate) fn source_label(&self) -> String {
        match &self.source {
            ConfigSource::File { path, how } => format!("{} (via {how})", path.display()),
            ConfigSource::Defaults => {
                "built-in defaults (no perryconfig.toml found; every image is denied)".into()
            }
        }
    }
}

/// One writer per audit directory per process: a second `Context` (or a second call) in the same
/// process gets the same `AuditLog` while any handle to it is alive. Held weakly here so the
/// last `Context` dropping it still writes the closing checkpoint.
fn shared_log(opts: LogOptions) -> Result<Arc<AuditLog>, CliError> {
    static OPEN: Mutex<Vec<(PathBuf, Weak<AuditLog>)>> = Mutex::new(Vec::new());
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    if let Some(log) = open
        .iter()
        .find(|(d, _)| *d == opts.dir)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(log);
    }
    let dir = opts.dir.clone();
    let log = AuditLog::open(opts)
        .map(Arc::new)
        .map_err(super::audit::audit_error)?;
    open.push((dir, Arc::downgrade(&log)));
    Ok(log)
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
