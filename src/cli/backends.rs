//! `perry-sandbox backends [--json]`: every container backend this platform would probe, in
//! probe order, with whether it is usable, why (not), its version, the detection mode and the
//! strongest isolation it offers — and which one compose would use.

use std::process::ExitCode;

use perry_sandbox::backends::{install_advice, probe_with, Code, DetectOptions};

use super::error::{CliError, CliResult};
use super::GlobalArgs;

/// Runs `backends`: the environment over the configuration's `[backends]` (when a
/// configuration is found; without one, the platform's defaults).
pub(super) fn run(g: &GlobalArgs) -> CliResult {
    let (config, _) = perry_policies::load_discovered(g.config.as_deref())?;
    let opts = DetectOptions::from_config_and_env(&config.backends);
    let mode = opts
        .mode()
        .map_err(|e| CliError::new(Code::InvalidConfig, e.to_string()))?;
    let os = std::env::consts::OS;
    let rt = super::runtime()?;
    let names = rt.block_on(opts.names_to_probe(os, mode));
    let probes: Vec<_> = names
        .iter()
        .map(|n| rt.block_on(probe_with(n, mode, os, &config.backends.settings(n))))
        .collect();
    let chosen = probes.iter().find(|p| p.available).map(|p| p.name.clone());
    let missing = || {
        let advice = install_advice(os, &config.backends);
        let code = if opts.backend().is_some() {
            Code::BackendUnavailable
        } else {
            Code::NoBackendFound
        };
        CliError::new(
            code,
            format!(
                "no container backend found (probed {}); {advice}",
                names.join(", ")
            ),
        )
    };
    if g.json {
        // One document either way: the probes, and the error when none is usable.
        let mut v = serde_json::json!({
            "ok": chosen.is_some(),
            "os": os,
            "override": opts.backend(),
            "selected": chosen,
            "probes": probes,
        });
        if chosen.is_none() {
            v["error"] = serde_json::to_value(missing()).unwrap_or_default();
            println!("{v}");
            return Ok(ExitCode::from(missing().exit));
        }
        println!("{v}");
    } else {
        println!(
            "{:<18} {:<10} {:<13} {:<17} {:<28} REASON",
            "BACKEND", "AVAILABLE", "MODE", "ISOLATION", "VERSION"
        );
        for p in &probes {
            let mark = if Some(&p.name) == chosen.as_ref() {
                " (selected)"
            } else {
                ""
            };
            println!(
                "{:<18} {:<10} {:<13} {:<17} {:<28} {}{mark}",
                p.name,
                if p.available { "yes" } else { "no" },
                as_str(p.mode),
                as_str(p.isolation),
                p.version.as_deref().unwrap_or("-"),
                p.reason
            );
        }
    }
    match chosen {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => Err(missing()),
    }
}

/// How `value` is spelled in the JSON (`local-first`, `sandboxed-kernel`).
fn as_str(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
