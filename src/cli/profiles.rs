//! `perry-sandbox profiles export|show|diff`: what a policy tier means to the kernel, for other
//! runtimes (OCI seccomp JSON for podman/docker) and for people (grouped, explained, compared).
//!
//! These show the built-in tiers: the same profiles `profiles/generated/*.json` commits.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use perry_policies::Tier;
use perry_sandbox::profiles::{explain, Grants, Profile, ProfileError};

use super::{CliError, CliResult, GlobalArgs};

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(super) enum Format {
    /// OCI runtime-spec / docker seccomp JSON (`podman --security-opt seccomp=FILE`).
    Oci,
}

/// `profiles` subcommands.
#[derive(Subcommand, Debug)]
pub(super) enum ProfilesCommand {
    /// Print a tier's seccomp profile for another runtime. With podman/runc, run hardened and
    /// untrusted with `--security-opt no-new-privileges` (part of those tiers): runc then installs
    /// the filter after its own setuid/setgroups, which those tiers do not allow.
    Export {
        /// The tier: default, isolated, hardened or untrusted.
        #[arg(long, value_parser = parse_tier)]
        tier: Tier,
        /// Output format.
        #[arg(long, value_enum, default_value = "oci")]
        format: Format,
    },
    /// Explain a tier: system calls by group, privileges, Landlock, limits.
    Show {
        /// The tier.
        #[arg(value_parser = parse_tier)]
        tier: Tier,
    },
    /// Show what tier A permits that tier B does not.
    Diff {
        /// The (usually looser) tier.
        #[arg(value_parser = parse_tier)]
        a: Tier,
        /// The tier compared against.
        #[arg(value_parser = parse_tier)]
        b: Tier,
    },
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    s.parse::<Tier>().map_err(|e| e.to_string())
}

fn profile(tier: Tier) -> Result<Profile, CliError> {
    Profile::for_tier(tier, None, &Grants::default()).map_err(profile_error)
}

fn profile_error(e: ProfileError) -> CliError {
    CliError::internal(format!("building the profile: {e}"))
}

/// Runs a `profiles` subcommand.
pub(super) fn run(g: &GlobalArgs, cmd: ProfilesCommand) -> CliResult {
    match cmd {
        ProfilesCommand::Export { tier, format } => {
            let Format::Oci = format;
            print!(
                "{}",
                perry_sandbox::profiles::export_oci(tier).map_err(profile_error)?
            );
        }
        ProfilesCommand::Show { tier } => {
            let p = profile(tier)?;
            if g.json {
                let v = serde_json::json!({"ok": true, "show": explain::show_view(&p)});
                println!("{v}");
            } else {
                print!("{}", explain::show_text(&p));
            }
        }
        ProfilesCommand::Diff { a, b } => {
            let d = explain::diff(&profile(a)?, &profile(b)?);
            if g.json {
                println!("{}", serde_json::json!({"ok": true, "diff": d}));
            } else {
                print!("{}", explain::diff_text(&d));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
