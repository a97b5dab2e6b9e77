//! `perry-sandbox compose …`: compose files run with every image verified and pinned before a
//! backend sees it, every service confined by its tier, our own healthchecks and deadlines, and
//! a failed `up` rolled back to nothing. Flags are docker compose's.
//!
//! `config` and `verify` create nothing; `up` plans first (all or nothing), then acts; `down`,
//! `ps`, `logs`, `exec`, `start`, `stop` and `restart` work from labels, without the file, once
//! the project name is known (`-p`, `COMPOSE_PROJECT_NAME`, the file's `name`, the directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use perry_sandbox::compose::{
    self as compose, DownOptions, ExecSpec, LoadOptions, LogOptions, Orchestrator, Project,
    UpOptions,
};
use perry_sandbox::exec::{Code, Executor, Platform};

use super::attach;
use super::compose_display::progress;
use super::context::Context;
use super::error::{CliError, CliResult};
use super::install_prompt;
use super::GlobalArgs;

/// Options shared by every compose subcommand (docker compose's names).
#[derive(Args, Debug, Clone)]
pub(crate) struct ComposeArgs {
    /// Compose file (repeatable; later files override earlier ones).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Project name.
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    pub project_name: Option<String>,
    /// Enable a profile (repeatable).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// An env file for interpolation (repeatable; default `.env` in the project directory).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// The project directory (default: the first file's directory).
    #[arg(long = "project-directory", value_name = "DIR")]
    pub project_directory: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ComposeCommand,
}

/// The compose subcommands.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum ComposeCommand {
    /// Print the canonical model, like `docker compose config`.
    Config(ConfigArgs),
    /// Plan without creating anything: each service's pinned digest, signer, tier, isolation.
    Verify,
    /// Verify, plan, then create and start the project; roll back everything on failure.
    Up(UpArgs),
    /// Stop and remove the project's containers and networks (from labels).
    Down(DownArgs),
    /// The project's containers: state, health as we measured it, ports, tier, digest.
    Ps {
        /// Only these services.
        services: Vec<String>,
    },
    /// Containers' output.
    Logs(LogsArgs),
    /// Run a command in a running service container.
    Exec(ExecArgs),
    /// Start stopped containers (dependencies first).
    Start {
        /// Only these services.
        services: Vec<String>,
    },
    /// Stop running containers (dependents first).
    Stop(StopArgs),
    /// Stop, then start.
    Restart(StopArgs),
}

/// `compose config`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConfigArgs {
    /// `yaml` or `json`.
    #[arg(long, default_value = "yaml")]
    pub format: String,
    /// Print only the service names.
    #[arg(long)]
    pub services: bool,
    /// Do not interpolate variables.
    #[arg(long)]
    pub no_interpolate: bool,
    /// Print the merged model before normalisation.
    #[arg(long)]
    pub no_normalize: bool,
    /// Skip the cross-reference checks.
    #[arg(long)]
    pub no_consistency: bool,
    /// Keep relative paths as written.
    #[arg(long)]
    pub no_path_resolution: bool,
    /// Replace each image by the digest it verifies to (`repo@sha256:…`).
    #[arg(long)]
    pub resolve_image_digests: bool,
}

/// `compose up`.
#[derive(Args, Debug, Clone)]
pub(crate) struct UpArgs {
    /// Detached: return once every service is started.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Return only once every service is running, and healthy where it has a healthcheck.
    #[arg(long)]
    pub wait: bool,
    /// Deadline of every wait, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub wait_timeout: u64,
    /// Remove containers of services no longer in the file.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Attached: stop every container when the first one exits, and exit with its code.
    #[arg(long, conflicts_with_all = ["detach", "wait"])]
    pub abort_on_container_exit: bool,
    /// Attached: exit with this service's exit code (implies --abort-on-container-exit).
    #[arg(long, value_name = "SERVICE", conflicts_with_all = ["detach", "wait"])]
    pub exit_code_from: Option<String>,
    /// Attached: no colours in the log prefixes.
    #[arg(long)]
    pub no_color: bool,
}

/// `compose down`.
#[derive(Args, Debug, Clone)]
pub(crate) struct DownArgs {
    /// Remove the project's named volumes too. (`-v` is perry-sandbox's global verbosity flag,
    /// so only the long form: a `down -v` keeps the volumes, the safe direction.)
    #[arg(long)]
    pub volumes: bool,
    /// Seconds between the stop signal and SIGKILL (default: each service's
    /// `stop_grace_period`, else 10).
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// Accepted for compatibility: `down` removes every container of the project.
    #[arg(long)]
    pub remove_orphans: bool,
}

/// `compose logs`.
#[derive(Args, Debug, Clone)]
pub(crate) struct LogsArgs {
    /// Follow (until the containers exit).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines of each container.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// No colours in the prefixes.
    #[arg(long)]
    pub no_color: bool,
    /// Only these services.
    pub services: Vec<String>,
}

/// `compose exec`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ExecArgs {
    /// Set an environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Which replica (1-based).
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The service.
    pub service: String,
    /// The command.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// `compose stop` / `restart`.
#[derive(Args, Debug, Clone)]
pub(crate) struct StopArgs {
    /// Seconds between the stop signal and SIGKILL (default: each service's
    /// `stop_grace_period`, else 10).
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// Only these services.
    pub services: Vec<String>,
}

/// Runs `perry-sandbox compose …`.
pub(super) fn run(g: &GlobalArgs, args: ComposeArgs) -> CliResult {
    match &args.command {
        ComposeCommand::Config(c) => config(g, &args, c),
        ComposeCommand::Verify => verify(g, &args),
        ComposeCommand::Up(u) => up(g, &args, u),
        _ => from_labels(g, &args),
    }
}

fn load_options(args: &ComposeArgs, c: Option<&ConfigArgs>) -> LoadOptions {
    LoadOptions {
        files: args.files.clone(),
        project_name: args.project_name.clone(),
        project_directory: args.project_directory.clone(),
        env_files: args.env_files.clone(),
        profiles: args.profiles.clone(),
        environment: std::env::vars().collect(),
        interpolate: !c.is_some_and(|c| c.no_interpolate),
        validate: true,
        normalize: !c.is_some_and(|c| c.no_normalize),
        consistency: !c.is_some_and(|c| c.no_consistency),
        resolve_paths: !c.is_some_and(|c| c.no_path_resolution),
    }
}

/// Loads the project; a bad file exits 2 with `file:line:col: key: message`.
fn load(args: &ComposeArgs, c: Option<&ConfigArgs>) -> Result<Project, CliError> {
    compose::load(&load_options(args, c))
        .map_err(|e| CliError::new(Code::InvalidConfig, e.to_string()).with_exit(2))
}

fn config(g: &GlobalArgs, args: &ComposeArgs, c: &ConfigArgs) -> CliResult {
    let mut project = load(args, Some(c))?;
    if c.resolve_image_digests {
        let plan = plan_only(g, &project)?;
        for (_, name, s) in plan.graph.nodes() {
            if let Some(svc) = project.services.get_mut(name) {
                svc.image = Some(s.verification.image.pinned_reference());
            }
        }
    }
    if c.services {
        for name in project.services.keys() {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = match c.format.as_str() {
        // compose-go's JSON: no `x-*` below the top level, `services` always present
        "json" => perry_compose::to_json(&project).map_err(CliError::internal)?,
        "yaml" => compose::to_yaml(&project).map_err(CliError::internal)?,
        other => {
            return Err(CliError::invalid_argument(format!(
                "--format {other:?}: expected yaml or json"
            ))
            .with_exit(2))
        }
    };
    println!("{}", text.trim_end());
    Ok(ExitCode::SUCCESS)
}

fn executor(ctx: &Context) -> Result<Executor, CliError> {
    let log = ctx.audit_log()?;
    Executor::new(ctx.config.clone(), log).map_err(|e| super::run::exec_error(&e))
}

fn plan_error(e: &compose::PlanRefused) -> CliError {
    CliError::new(e.code(), e.to_string())
}

/// The plan of `project` (every image verified, every tier decided, on the record), for the
/// commands that create nothing.
fn plan_only(g: &GlobalArgs, project: &Project) -> Result<compose::Plan, CliError> {
    let ctx = Context::load(g)?;
    let x = executor(&ctx)?;
    let (plan, _) = super::runtime()?
        .block_on(x.plan_compose(
            project,
            &Platform::default(),
            ctx.audit_actor(),
            &compose::Correlation::new(),
        ))
        .map_err(|e| plan_error(&e))?;
    Ok(plan)
}

fn verify(g: &GlobalArgs, args: &ComposeArgs) -> CliResult {
    let project = load(args, None)?;
    let plan = plan_only(g, &project)?;
    let rows: Vec<serde_json::Value> = plan
        .levels
        .iter()
        .flatten()
        .map(|&id| {
            let s = plan.graph.node(id);
            serde_json::json!({
                "service": plan.graph.name(id),
                "image": s.ask.image,
                "pinned": s.verification.image.pinned_reference(),
                "signer": s.verification.image.signer_identity(),
                "tier": s.tier.to_string(),
                "isolation": s.isolation.as_str(),
            })
        })
        .collect();
    if g.json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "project": project.name, "services": rows})
        );
    } else {
        println!(
            "project {}: every image verified, nothing created",
            project.name
        );
        for r in &rows {
            println!(
                "  {:<16} {:<10} {:<17} {}\n  {:<16} signed by {}",
                r["service"].as_str().unwrap_or_default(),
                r["tier"].as_str().unwrap_or_default(),
                r["isolation"].as_str().unwrap_or_default(),
                r["pinned"].as_str().unwrap_or_default(),
                "",
                r["signer"].as_str().unwrap_or("-"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The backend compose runs on: `PERRY_CONTAINER_BACKEND`, `[backends]`, or the first one
/// detected. When none is found and a person is at the terminal, offer to install one
/// (`install_prompt`), then detect again.
fn backend(ctx: &Context, rt: &tokio::runtime::Runtime) -> Result<compose::Backend, CliError> {
    let fail = |e: compose::BackendError| CliError::new(e.code(), e.to_string());
    let err = match rt.block_on(compose::backend_for(&ctx.config)) {
        Ok(b) => return Ok(b),
        Err(e @ compose::BackendError::NoneFound { .. }) if install_prompt::allowed() => e,
        Err(e) => return Err(fail(e)),
    };
    let choices = compose::install_choices(std::env::consts::OS, &ctx.config.backends);
    let io_fail = |e: std::io::Error| CliError::new(err.code(), format!("{err} (prompt: {e})"));
    match install_prompt::ask(&err.to_string(), &choices).map_err(io_fail)? {
        install_prompt::Decision::Declined => Err(fail(err)),
        install_prompt::Decision::Install(i) => {
            install_prompt::install(&choices[i])
                .map_err(|why| CliError::new(err.code(), format!("{err}; {why}")))?;
            rt.block_on(compose::backend_redetect(&ctx.config))
                .map_err(fail)
        }
    }
}

/// Attached `up`: follow every container like compose until they all exit, the first exits
/// (`--abort-on-container-exit`, `--exit-code-from`) or Ctrl-C; then stop the project's
/// containers (they stay, like compose's) and exit with compose's code.
fn attached<B: compose::ContainerBackend>(
    g: &GlobalArgs,
    u: &UpArgs,
    rt: &tokio::runtime::Runtime,
    orch: &Orchestrator<'_, B>,
    report: &compose::UpReport,
) -> CliResult {
    let fail = |e: compose::OrchestrateError| CliError::new(e.code(), e.to_string());
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let followed = rt.block_on(orch.follow(&[], None)).map_err(fail)?;
    if !g.json {
        let names: Vec<&str> = followed.iter().map(|f| f.container.as_str()).collect();
        println!("Attaching to {}", names.join(", "));
    }
    let opts = attach::AttachOptions {
        abort_on_exit: u.abort_on_container_exit || u.exit_code_from.is_some(),
        color: attach::AttachOptions::color_allowed(u.no_color),
        json: g.json,
        split_streams: false,
    };
    let ended = rt
        .block_on(attach::attach(orch, followed, &opts))
        .map_err(fail)?;
    let stop = |why: &str| -> Result<(), CliError> {
        eprintln!("{why}");
        rt.block_on(orch.stop(&[], None)).map(|_| ()).map_err(fail)
    };
    // The code of --exit-code-from's service (its first replica), once it has stopped.
    let code_of = |service: &str| -> Result<i32, CliError> {
        let ps = rt.block_on(orch.ps(&[service.to_string()])).map_err(fail)?;
        Ok(ps.iter().find_map(|p| p.exit_code).unwrap_or(0))
    };
    let code = match ended {
        attach::Ended::Interrupted => {
            stop("Gracefully stopping...")?;
            130
        }
        attach::Ended::Exited { service, code, .. } => {
            stop("Aborting on container exit...")?;
            match &u.exit_code_from {
                Some(s) if *s != service => code_of(s)?,
                _ => code,
            }
        }
        attach::Ended::AllExited => match &u.exit_code_from {
            Some(s) => code_of(s)?,
            None => 0,
        },
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn up(g: &GlobalArgs, args: &ComposeArgs, u: &UpArgs) -> CliResult {
    let project = load(args, None)?;
    let ctx = Context::load(g)?;
    let x = executor(&ctx)?;
    let rt = super::runtime()?;
    let correlation = compose::Correlation::new();
    let (plan, resources) = rt
        .block_on(x.plan_compose(
            &project,
            &Platform::default(),
            ctx.audit_actor(),
            &correlation,
        ))
        .map_err(|e| plan_error(&e))?;
    let backend = backend(&ctx, &rt)?;
    let orch = Orchestrator::new(&x, &backend, &project.name, ctx.audit_actor(), correlation)
        .on_progress(progress(g.json));
    let opts = UpOptions {
        wait: u.wait,
        wait_timeout: Duration::from_secs(u.wait_timeout),
        remove_orphans: u.remove_orphans,
    };
    if let Some(svc) = &u.exit_code_from {
        if !project.services.contains_key(svc) {
            return Err(CliError::invalid_argument(format!(
                "--exit-code-from {svc}: no such service in the project"
            ))
            .with_exit(2));
        }
    }
    let outcome = rt.block_on(async {
        tokio::select! {
            r = orch.up(&plan, &resources, &opts) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match outcome {
        Some(Ok(report)) if !u.detach && !u.wait => attached(g, u, &rt, &orch, &report),
        Some(Ok(report)) => {
            if g.json {
                println!("{}", serde_json::json!({"ok": true, "up": report}));
            } else {
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
                for s in &report.services {
                    println!(
                        "{:<16} {:<10} {}{}",
                        s.service,
                        s.state,
                        s.containers.join(","),
                        s.health
                            .as_deref()
                            .map(|h| format!(" ({h})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(failed)) => Err(CliError::new(failed.code(), failed.to_string())),
        None => {
            // Interrupted: the `up` future is dropped; its journal says what to undo.
            let rollback = rt.block_on(orch.recover());
            let how = match rollback {
                Ok(Some(r)) if r.is_clean() => {
                    format!(
                        "rolled back: {} resource(s) removed, nothing left",
                        r.removed.len()
                    )
                }
                Ok(_) => "rollback incomplete; `compose down` finishes it".to_string(),
                Err(e) => format!("rollback failed ({e}); `compose down` finishes it"),
            };
            Err(CliError::new(Code::ServiceFailed, format!("interrupted; {how}")).with_exit(130))
        }
    }
}

/// The project name for the label-driven commands: `-p`, `COMPOSE_PROJECT_NAME`, else the
/// file's.
fn project_name(args: &ComposeArgs) -> Result<String, CliError> {
    if let Some(p) = &args.project_name {
        return Ok(compose::normalize_project_name(p));
    }
    if let Ok(p) = std::env::var("COMPOSE_PROJECT_NAME") {
        if !p.is_empty() {
            return Ok(compose::normalize_project_name(&p));
        }
    }
    Ok(load(args, None)?.name)
}

fn from_labels(g: &GlobalArgs, args: &ComposeArgs) -> CliResult {
    let name = project_name(args)?;
    let ctx = Context::load(g)?;
    let x = executor(&ctx)?;
    let rt = super::runtime()?;
    let backend = backend(&ctx, &rt)?;
    let orch = Orchestrator::new(
        &x,
        &backend,
        &name,
        ctx.audit_actor(),
        compose::Correlation::new(),
    )
    .on_progress(progress(g.json));
    let fail = |e: compose::OrchestrateError| CliError::new(e.code(), e.to_string());
    match &args.command {
        ComposeCommand::Down(d) => {
            let report = rt
                .block_on(orch.down(&DownOptions {
                    volumes: d.volumes,
                    timeout: d.timeout.map(Duration::from_secs),
                }))
                .map_err(fail)?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": report.leftovers.is_empty(), "down": report})
                );
            }
            if !report.leftovers.is_empty() {
                return Err(CliError::new(
                    Code::BackendError,
                    format!("left behind: {}", report.leftovers.join(", ")),
                ));
            }
        }
        ComposeCommand::Ps { services } => {
            let rows = rt.block_on(orch.ps(services)).map_err(fail)?;
            if g.json {
                println!("{}", serde_json::json!({"ok": true, "containers": rows}));
            } else {
                println!(
                    "{:<28} {:<12} {:<10} {:<10} {:<10} IMAGE",
                    "NAME", "SERVICE", "STATE", "HEALTH", "TIER"
                );
                for r in rows {
                    println!(
                        "{:<28} {:<12} {:<10} {:<10} {:<10} {}",
                        r.name,
                        r.service,
                        serde_json::to_value(r.state)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        r.health.as_deref().unwrap_or("-"),
                        r.tier,
                        r.image
                    );
                }
            }
        }
        ComposeCommand::Logs(l) if l.follow => {
            let followed = rt
                .block_on(orch.follow(&l.services, l.tail))
                .map_err(fail)?;
            let opts = attach::AttachOptions {
                abort_on_exit: false,
                color: attach::AttachOptions::color_allowed(l.no_color),
                json: g.json,
                split_streams: true,
            };
            let ended = rt
                .block_on(attach::attach(&orch, followed, &opts))
                .map_err(fail)?;
            if let attach::Ended::Interrupted = ended {
                return Ok(ExitCode::from(130));
            }
        }
        ComposeCommand::Logs(l) => {
            let opts = LogOptions {
                tail: l.tail,
                follow: l.follow,
            };
            for (container, out) in rt.block_on(orch.logs(&l.services, opts)).map_err(fail)? {
                for (stream, bytes) in [(false, &out.stdout), (true, &out.stderr)] {
                    for line in String::from_utf8_lossy(bytes).lines() {
                        if stream {
                            eprintln!("{container} | {line}");
                        } else {
                            println!("{container} | {line}");
                        }
                    }
                }
            }
        }
        ComposeCommand::Exec(e) => {
            let mut env = BTreeMap::new();
            for kv in &e.env {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    CliError::invalid_argument(format!("-e {kv:?}: expected K=V")).with_exit(2)
                })?;
                env.insert(k.to_string(), v.to_string());
            }
            let spec = ExecSpec {
                cmd: e.command.clone(),
                env,
                workdir: e.workdir.clone(),
                user: e.user.clone(),
            };
            let out = rt
                .block_on(orch.exec(&e.service, e.index, &spec))
                .map_err(fail)?;
            let _ = std::io::stdout().write_all(&out.stdout);
            let _ = std::io::stderr().write_all(&out.stderr);
            return Ok(ExitCode::from(u8::try_from(out.exit_code).unwrap_or(1)));
        }
        ComposeCommand::Start { services } => {
            rt.block_on(orch.start(services)).map_err(fail)?;
        }
        ComposeCommand::Stop(s) => {
            rt.block_on(orch.stop(&s.services, s.timeout.map(Duration::from_secs)))
                .map_err(fail)?;
        }
        ComposeCommand::Restart(s) => {
            rt.block_on(orch.restart(&s.services, s.timeout.map(Duration::from_secs)))
                .map_err(fail)?;
        }
        ComposeCommand::Config(_) | ComposeCommand::Verify | ComposeCommand::Up(_) => {
            return Err(CliError::internal(
                "compose: a file command reached the label commands",
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
