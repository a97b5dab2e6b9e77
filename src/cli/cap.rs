//! `perry-sandbox cap list | describe NAME | run NAME [--workspace DIR] [--socket PATH] -- ARGS…`
//!
//! `describe` shows a reviewer everything a capability can do: the image it runs in (and why
//! that one), the argv template, every argument rule, the tier and its effective limits, mounts,
//! environment and network. `run` invokes it in-process, or through a running `perry-sandbox
//! serve` with `--socket`; either way it exits with the command's status (125 when nothing ran).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use perry_audit::Correlation;
use perry_policies::{HumanDuration, ShellCapability};
use perry_sandbox::capability::{
    image_for, Capabilities, CapabilityOutcome, CapabilityRequest, ImageChoice,
};
use perry_sandbox::error::ApiError;
use perry_sandbox::exec::{Executor, WarmUp};
use perry_sandbox::service::Client;

use super::error::{CliError, CliResult, EXIT_REFUSED};
use super::{Context, GlobalArgs};

/// `cap` subcommands.
#[derive(Subcommand, Debug)]
pub(super) enum CapCommand {
    /// List the configured capabilities.
    List,
    /// Everything a capability may do: image, argv template, argument rules, tier, mounts, limits.
    Describe {
        /// The capability name.
        name: String,
    },
    /// Invoke a capability (exit status: the command's; 125 when nothing ran).
    Run(CapRunArgs),
}

/// Arguments of `cap run`.
#[derive(Args, Debug)]
pub(super) struct CapRunArgs {
    /// The capability name.
    pub name: String,
    /// Host directory for the capability's `{workspace}` mounts.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Call a running `perry-sandbox serve` on this socket instead of running in-process.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Feed this file to the command's stdin.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// A wall-clock limit tighter than the capability's (e.g. 2s).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Arguments appended to the capability's command (after `--`), checked against its rules.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Runs a `cap` subcommand.
pub(super) fn run(g: &GlobalArgs, cmd: CapCommand) -> CliResult {
    match cmd {
        CapCommand::List => list(g),
        CapCommand::Describe { name } => {
            let ctx = Context::load(g)?;
            describe(&ctx, &name)
        }
        CapCommand::Run(args) => run_cap(g, args),
    }
}

fn list(g: &GlobalArgs) -> CliResult {
    let ctx = Context::load(g)?;
    let cfg = &ctx.config;
    if ctx.json {
        let items: Vec<_> = cfg
            .capabilities
            .iter()
            .map(|(name, cap)| {
                let (image, _) = image_for(cfg, name, cap);
                serde_json::json!({
                    "name": name,
                    "description": cap.description,
                    "image": image.to_string(),
                    "tier": cap.tier.to_string(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(ExitCode::SUCCESS);
    }
    if cfg.capabilities.is_empty() {
        println!("no capabilities in {}", ctx.source_label());
        return Ok(ExitCode::SUCCESS);
    }
    let width = cfg.capabilities.keys().map(String::len).max().unwrap_or(4);
    for (name, cap) in &cfg.capabilities {
        println!(
            "{name:<width$}  {:<9}  {}",
            cap.tier.to_string(),
            cap.description.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn choice_words(c: ImageChoice) -> &'static str {
    match c {
        ImageChoice::Capability => "the capability's own `image`",
        ImageChoice::CapabilityImages => "[shellCapabilityImages]",
        ImageChoice::ChainguardTool => "no image configured: the Chainguard image for the tool",
        ImageChoice::Fallback => "no image configured and no known tool image: the fallback",
    }
}

/// `cap describe NAME` (also `config explain --capability NAME`).
pub(super) fn describe(ctx: &Context, name: &str) -> CliResult {
    let cfg = &ctx.config;
    let Some(cap) = cfg.capabilities.get(name) else {
        let near =
            perry_policies::error::nearest(name, cfg.capabilities.keys().map(String::as_str));
        let hint = near
            .map(|n| format!(", did you mean `{n}`?"))
            .unwrap_or_default();
        return Err(CliError::not_found(format!(
            "no capability `{name}` in {}{hint}",
            ctx.source_label()
        )));
    };
    let (image, choice) = image_for(cfg, name, cap);
    let spec = cap.tier.effective_spec(cfg.tiers.get(&cap.tier));
    let trust_rules: Vec<String> = cfg
        .trust
        .rules_for(&image)
        .iter()
        .map(|r| {
            r.name.clone().unwrap_or_else(|| {
                let globs: Vec<String> = r.images.iter().map(|g| g.to_string()).collect();
                globs.join(", ")
            })
        })
        .collect();
    if ctx.json {
        let v = serde_json::json!({
            "capability": name,
            "definition": cap,
            "image": image.to_string(),
            "image_source": choice,
            "trust_rules": trust_rules,
            "tier": spec,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::internal(e.to_string()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("capability:  {name}");
    if let Some(d) = &cap.description {
        println!("description: {d}");
    }
    println!("image:       {image} ({})", choice_words(choice));
    if trust_rules.is_empty() {
        println!(
            "trust:       DENIED: no [[trust.policy]] matches `{}`",
            image.name()
        );
    } else {
        println!("trust:       must pass {}", trust_rules.join("; "));
    }
    println!("command:     {:?} + caller arguments", cap.command);
    print_rules(cap);
    println!(
        "tier:        {}{}",
        cap.tier,
        if cap.network {
            " with a network grant (loopback-only namespace)"
        } else {
            ", no network"
        }
    );
    for m in &cap.mounts {
        println!(
            "mount:       {} -> {} ({})",
            m.source,
            m.target,
            if m.read_only { "read-only" } else { "WRITABLE" }
        );
    }
    if let Some(w) = &cap.workdir {
        println!("workdir:     {w}");
    }
    for (k, v) in &cap.env.set {
        println!("env:         {k}={v}");
    }
    for k in &cap.env.pass {
        println!("env:         {k} (from the request)");
    }
    let l = &spec.limits;
    let opt =
        |o: Option<String>, tier: String| o.map_or(tier.clone(), |v| format!("{v} (tier {tier})"));
    println!(
        "limits:      timeout {}, memory {}, pids {}, output {} per stream, /tmp {}",
        opt(cap.timeout.map(|t| t.to_string()), l.timeout.to_string()),
        opt(cap.memory.map(|m| m.to_string()), l.memory.to_string()),
        opt(cap.pids.map(|p| p.to_string()), l.pids.to_string()),
        opt(
            cap.output_limit.map(|o| o.to_string()),
            l.output.to_string()
        ),
        l.tmpfs
    );
    println!(
        "root fs:     read-only{}; user: {}; no_new_privs, all capabilities dropped",
        if spec.landlock { ", Landlock" } else { "" },
        if spec.non_root {
            "non-root"
        } else {
            "as image"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn print_rules(cap: &ShellCapability) {
    let r = &cap.args;
    println!("args.max:    {}", r.max);
    if let Some(p) = &r.pattern {
        println!("args.pattern: every argument matches `{p}` (anchored)");
    }
    for (i, pos) in r.positions.iter().enumerate() {
        if let Some(p) = &pos.pattern {
            println!("args[{i}]:     matches `{p}` (anchored)");
        }
        if !pos.one_of.is_empty() {
            println!("args[{i}]:     one of {:?}", pos.one_of);
        }
    }
    if !r.deny.is_empty() {
        println!(
            "args.deny:   {:?} (also `--opt=…` and glued short flags)",
            r.deny
        );
    }
}

fn run_cap(g: &GlobalArgs, args: CapRunArgs) -> CliResult {
    let refused = |e: CliError| e.with_exit(EXIT_REFUSED);
    let timeout: Option<HumanDuration> =
        super::parse_opt_maybe("--timeout", args.timeout.as_ref())?;
    let stdin =
        match &args.stdin {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                refused(CliError::not_found(format!("--stdin {}: {e}", p.display())))
            })?),
            None => None,
        };
    let req = CapabilityRequest {
        args: args.args.clone(),
        workspace: args.workspace.clone(),
        stdin,
        timeout,
        env: Default::default(),
    };
    let rt = super::runtime()?;
    let json = g.json;
    let result: Result<CapabilityOutcome, ApiError> = match &args.socket {
        Some(socket) => rt.block_on(Client::new(socket).invoke(&args.name, &req)),
        None => {
            // Overlap the kernel's slow set-up work with verification and pulling.
            Executor::warm_up(WarmUp::OneRun);
            let ctx = Context::load(g).map_err(refused)?;
            let log = ctx.audit_log().map_err(refused)?;
            let executor = Executor::new(ctx.config.clone(), log.clone())
                .map_err(|e| super::run::exec_error(&e))?;
            let caps = Capabilities::new(Arc::new(executor));
            rt.block_on(caps.run_as(&args.name, &req, &ctx.audit_actor(), &Correlation::new()))
                .map_err(|e| ApiError::from(&e))
        }
    };
    let out = result.map_err(|e| CliError::from_api(&e))?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&out).map_err(|e| CliError::internal(e.to_string()))?
        );
    } else {
        let _ = std::io::stdout().write_all(out.stdout.as_bytes());
        let _ = std::io::stderr().write_all(out.stderr.as_bytes());
        let _ = std::io::stdout().flush();
        if out.truncated {
            eprintln!("perry-sandbox: output truncated at the capability's limit");
        }
        if out.timed_out {
            eprintln!("perry-sandbox: timed out; the whole process tree was killed");
        }
    }
    let status = match (out.exit_code, out.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => i32::from(EXIT_REFUSED),
    };
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}
