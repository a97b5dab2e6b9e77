//! `perry-sandbox config check|explain`: let operators see what their configuration means
//! before it decides anything.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use perry_policies::{Config, ConfigSource, ImageRef};

use super::{CliError, CliResult, Context, GlobalArgs};

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub(super) enum ConfigCommand {
    /// Validate a configuration file; exit 0 when valid, 2 when not. With --json, print the
    /// normalised configuration (secrets redacted). Checking the configuration in force (no
    /// FILE) records a `config_load` event in its audit log.
    Check {
        /// A candidate file to validate only (default: the configuration in force).
        file: Option<PathBuf>,
    },
    /// Explain which trust policies and tier apply to an image or a capability, and why.
    Explain {
        /// An image reference, e.g. cgr.dev/chainguard/git:latest.
        #[arg(conflicts_with = "capability", required_unless_present = "capability")]
        image: Option<String>,
        /// A capability name from [shellCapabilities].
        #[arg(long)]
        capability: Option<String>,
    },
}

/// Runs a `config` subcommand.
pub(super) fn run(g: &GlobalArgs, cmd: ConfigCommand) -> CliResult {
    match cmd {
        ConfigCommand::Check { file } => check(g, file),
        ConfigCommand::Explain { image, capability } => {
            let ctx = Context::load(g)?;
            match (image, capability) {
                (_, Some(name)) => explain_capability(&ctx, &name),
                (Some(image), None) => explain_image(&ctx, &image),
                (None, None) => Err(CliError::invalid_argument(
                    "give an IMAGE or --capability NAME",
                )),
            }
        }
    }
}

fn check(g: &GlobalArgs, file: Option<PathBuf>) -> CliResult {
    let (ctx, label, in_force) = match file {
        // A candidate file named on the command line is only validated: it is not the
        // configuration in force, so loading it decides nothing and is not recorded.
        Some(path) => {
            let cfg = Config::load(&path)?;
            let source = ConfigSource::File {
                path: path.clone(),
                how: "argument",
            };
            let ctx = Context::from_parts(g, cfg, source);
            (ctx, path.display().to_string(), false)
        }
        None => {
            let ctx = Context::load(g)?;
            let label = ctx.source_label();
            (ctx, label, true)
        }
    };
    // The configuration in force was loaded: record it (`config_load`, with the file's SHA-256).
    // `config check` only reads, so an audit directory it cannot write is reported, not fatal;
    // commands that decide fail closed instead (Context::audit_log).
    if in_force {
        if let Err(e) = ctx
            .audit_log()
            .and_then(|log| log.flush().map_err(super::audit::audit_error))
        {
            eprintln!(
                "perry-sandbox: warning: configuration load not recorded in the audit log: {}",
                e.message
            );
        }
    }
    let cfg = &ctx.config;
    if g.json {
        let v = serde_json::json!({ "ok": true, "config": cfg });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::internal(e.to_string()))?
        );
    } else {
        println!(
            "ok: {label}: {} trust polic{}, {} capabilit{}, {} registr{}, default tier {}",
            cfg.trust.rules.len(),
            if cfg.trust.rules.len() == 1 {
                "y"
            } else {
                "ies"
            },
            cfg.capabilities.len(),
            if cfg.capabilities.len() == 1 {
                "y"
            } else {
                "ies"
            },
            cfg.registries.len(),
            if cfg.registries.len() == 1 {
                "y"
            } else {
                "ies"
            },
            cfg.sandbox.default_tier
        );
        if cfg.trust.rules.is_empty() {
            println!("note: no [[trust.policy]] entries, so every image is denied");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rule_name(cfg: &Config, rule: &perry_policies::TrustRule) -> String {
    rule.name.clone().unwrap_or_else(|| {
        let i = cfg
            .trust
            .rules
            .iter()
            .position(|r| std::ptr::eq(r, rule))
            .unwrap_or(0);
        format!("policy[{i}]")
    })
}

fn explain_image(ctx: &Context, image: &str) -> CliResult {
    let r = ImageRef::parse(image)
        .map_err(|e| CliError::invalid_argument(format!("image `{image}`: {e}")))?;
    let cfg = &ctx.config;
    let rules = cfg.trust.rules_for(&r);
    let tier = cfg.sandbox.default_tier;
    let spec = tier.effective_spec(cfg.tiers.get(&tier));
    if ctx.json {
        let v = serde_json::json!({
            "image": r.to_string(),
            "name": r.name(),
            "config": ctx.source_label(),
            "decision": if rules.is_empty() { "deny" } else { "verify" },
            "policies": rules.iter().map(|rule| serde_json::json!({"name": rule_name(cfg, rule), "rule": rule})).collect::<Vec<_>>(),
            "tier": spec,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::internal(e.to_string()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("image:   {r}");
    println!(
        "matched: as `{}` (tags and digests are not part of the match)",
        r.name()
    );
    println!("config:  {}", ctx.source_label());
    if rules.is_empty() {
        println!("verdict: DENIED: no [[trust.policy]] glob matches `{}`; nothing runs unless a policy trusts a signer for it", r.name());
        return Ok(ExitCode::SUCCESS);
    }
    println!("verdict: must be verified against {} polic{} (all must pass; within one, any authority suffices):", rules.len(), if rules.len() == 1 { "y" } else { "ies" });
    for rule in &rules {
        let globs: Vec<_> = rule
            .images
            .iter()
            .filter(|g| g.matches(&r.name()))
            .map(|g| g.as_str())
            .collect();
        println!(
            "  - {} (matched by {})",
            rule_name(cfg, rule),
            globs.join(", ")
        );
        for a in &rule.keyless {
            println!(
                "      keyless: issuer {} subject {}",
                a.issuer,
                a.describe_subject()
            );
        }
        for k in &rule.keys {
            println!("      key:     {}", k.display());
        }
    }
    println!("tier:    {tier} (sandbox.default_tier) for `perry-sandbox run` unless --tier asks for stricter");
    print_tier(&spec);
    Ok(ExitCode::SUCCESS)
}

fn print_tier(spec: &perry_policies::TierSpec) {
    let l = &spec.limits;
    println!(
        "         root {}, network {:?}, {}, landlock {}; memory {}, pids {}, cpus {}, timeout {}, /tmp {}",
        if spec.read_only_root { "read-only" } else { "as asked" },
        spec.network,
        if spec.non_root { "non-root" } else { "user as image" },
        if spec.require_landlock { "required" } else if spec.landlock { "on" } else { "off" },
        l.memory,
        l.pids,
        l.cpus,
        l.timeout,
        l.tmpfs
    );
}

/// The same view as `cap describe NAME`: one place explains what a capability may do.
fn explain_capability(ctx: &Context, name: &str) -> CliResult {
    super::cap::describe(ctx, name)
}
