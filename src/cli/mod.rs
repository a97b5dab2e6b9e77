//! Command-line interface: argument parsing and dispatch to one module per subcommand.

mod attach;
mod audit;
mod backends;
mod cap;
mod compose;
mod compose_display;
mod config_cmd;
mod context;
mod error;
mod install_prompt;
mod profiles;
mod progress;
mod run;
mod serve;
mod store;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

pub(crate) use context::Context;
pub(crate) use error::{CliError, CliResult};

/// perry-sandbox: run OCI images only after Sigstore verification, pinned by digest, under a
/// hardened profile for their policy tier, with every decision on a tamper-evident audit log.
#[derive(Parser, Debug)]
#[command(name = "perry-sandbox", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts.
#[derive(Args, Debug, Clone)]
pub(crate) struct GlobalArgs {
    /// Configuration file (default: $PERRY_CONFIG, ./perryconfig.toml,
    /// $XDG_CONFIG_HOME/perry-sandbox/perryconfig.toml, /etc/perry-sandbox/perryconfig.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Override `[sandbox] state_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Review the tamper-evident audit log: show, tail, verify, prove, export, checkpoint, key.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Container backends this platform probes (podman, nerdctl, docker, …): which is usable and why.
    Backends,
    /// Shell capabilities: list, describe, run (in-process or through a running service).
    #[command(subcommand)]
    Cap(cap::CapCommand),
    /// Compose projects: config, verify, up, down, ps, logs, exec, start, stop, restart — every
    /// image verified and pinned, every service confined by its tier, rollback to nothing.
    Compose(compose::ComposeArgs),
    /// Check and explain configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Verify an image's Sigstore signature against the trust policy and print what would be pinned.
    Verify(verify::VerifyArgs),
    /// Verify a Sigstore bundle for a file or digest (the sigstore-conformance client protocol).
    VerifyBundle(verify::VerifyBundleArgs),
    /// Seccomp, capability, Landlock and limit profiles per tier: export, show, diff.
    #[command(subcommand)]
    Profiles(profiles::ProfilesCommand),
    /// Verify, pull by digest, unpack and run a command in a hardened, read-only, offline sandbox.
    Run(run::RunArgs),
    /// Serve the local API (HTTP/1.1 + JSON on a Unix socket) that host programs call.
    Serve(serve::ServeArgs),
    /// The image store: list images and blobs, collect garbage.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Print shell completions.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

/// Parses the value of a command-line option, naming the option and the value on failure
/// (exit 125: nothing was started).
pub(crate) fn parse_opt<T>(flag: &str, value: &str) -> Result<T, CliError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| {
        CliError::invalid_argument(format!("{flag} {value:?}: {e}")).with_exit(error::EXIT_REFUSED)
    })
}

/// Like [`parse_opt`] for an option that may be absent.
pub(crate) fn parse_opt_maybe<T>(flag: &str, value: Option<&String>) -> Result<Option<T>, CliError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value.map(|v| parse_opt(flag, v)).transpose()
}

/// The async runtime a subcommand drives the library with: one thread (the CLI does one thing
/// at a time) plus tokio's blocking pool for sandbox runs.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Parses arguments, runs the subcommand and maps its outcome to an exit status.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    let json = cli.global.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            e.report(json);
            ExitCode::from(e.exit)
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let g = &cli.global;
    match cli.command {
        Command::Audit(cmd) => audit::run(g, cmd),
        Command::Backends => backends::run(g),
        Command::Cap(cmd) => cap::run(g, cmd),
        Command::Compose(args) => compose::run(g, args),
        Command::Config(cmd) => config_cmd::run(g, cmd),
        Command::Verify(args) => verify::run(g, args),
        Command::VerifyBundle(args) => verify::run_bundle(g, args),
        Command::Profiles(cmd) => profiles::run(g, cmd),
        Command::Run(args) => run::run(g, args),
        Command::Serve(args) => serve::run(g, args),
        Command::Store(cmd) => store::run(g, cmd),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "perry-sandbox",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
