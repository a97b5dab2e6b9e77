//! `perry-sandbox run [--tier T] [--timeout D] [--memory M] [--mount SRC:DST[:rw]] [--env K=V]
//! [--json] IMAGE -- CMD…`: verify (the gate) → pull by digest → unpack → run in the native
//! sandbox under the tier's profile.
//!
//! Exit status: the command's own (128 + signal when it was killed); 125 when perry-sandbox
//! refuses or fails before the command starts (verification denied, pull/unpack refused, setup
//! failed); 126 cannot execute; 127 not found. Every refusal and every run is recorded in the
//! audit log, the run *before* the command starts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use perry_audit::{AuditSink, Decision, Event};
use perry_policies::{ByteSize, HumanDuration, ImageRef, Tier};
use perry_profiles::{Grants, NetworkMode, Profile};
use perry_runtime::manifest::ImageConfig;
use perry_runtime::native::{self, BindMount, LeaseConfig, Limits, ProfileStep, RunSpec};
use perry_runtime::pull::ImageStore;
use perry_verifier::registry::Platform;
use perry_verifier::Verifier;

use super::error::{CliError, CliResult, EXIT_REFUSED};
use super::{Context, GlobalArgs};

/// Arguments of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Policy tier (default: `[sandbox] default_tier`, normally `hardened`).
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// Wall-clock limit (e.g. 10s); only tightens the tier's.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Memory limit (e.g. 256MiB); only tightens the tier's.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Bind a host path: SRC:DST, read-only unless `:rw` is appended (DST must exist in the image).
    #[arg(long = "mount", value_name = "SRC:DST[:rw]")]
    pub mounts: Vec<String>,
    /// Set an environment variable in the sandbox (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Platform to pick from a multi-platform image.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// The image reference (tag or digest).
    pub image: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn refused(e: CliError) -> CliError {
    e.with_exit(EXIT_REFUSED)
}

/// Parses `--mount SRC:DST[:rw]`.
fn parse_mount(s: &str) -> Result<BindMount, CliError> {
    let bad = |why: &str| refused(CliError::invalid_argument(format!("--mount {s:?}: {why}")));
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, rw) = match parts.as_slice() {
        [src, dst] => (src, dst, false),
        [src, dst, "rw"] => (src, dst, true),
        [src, dst, "ro"] => (src, dst, false),
        _ => return Err(bad("expected SRC:DST or SRC:DST:rw")),
    };
    if !dst.starts_with('/') {
        return Err(bad("DST must be an absolute path inside the sandbox"));
    }
    let source = std::fs::canonicalize(src).map_err(|e| bad(&format!("SRC: {e}")))?;
    Ok(BindMount {
        source,
        target: PathBuf::from(dst),
        read_only: !rw,
    })
}

/// The image's `User` as numeric ids; names and root fall back to nobody when the tier demands
/// a non-root user.
fn identity(config: &ImageConfig, non_root: bool) -> (u32, u32) {
    let user = config
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let mut it = user.splitn(2, ':');
    let uid = it.next().and_then(|u| u.parse::<u32>().ok());
    let gid = it.next().and_then(|g| g.parse::<u32>().ok()).or(uid);
    match (uid, gid) {
        (Some(u), Some(g)) if !(non_root && (u == 0 || g == 0)) => (u, g),
        _ if non_root => (65534, 65534),
        _ => (0, 0),
    }
}

/// Runs `perry-sandbox run`.
pub fn run(g: &GlobalArgs, args: RunArgs) -> CliResult {
    let ctx = Context::load(g).map_err(refused)?;
    let image = ImageRef::parse(&args.image).map_err(|e| {
        refused(CliError::invalid_argument(format!(
            "IMAGE {:?}: {e}",
            args.image
        )))
    })?;
    let tier: Tier = match &args.tier {
        Some(t) => t
            .parse()
            .map_err(|e| refused(CliError::invalid_argument(format!("--tier {t:?}: {e}"))))?,
        None => ctx.config.sandbox.default_tier,
    };
    let platform: Platform = args.platform.parse().map_err(|e| {
        refused(CliError::invalid_argument(format!(
            "--platform {:?}: {e}",
            args.platform
        )))
    })?;
    let timeout =
        match &args.timeout {
            Some(t) => Some(t.parse::<HumanDuration>().map_err(|e| {
                refused(CliError::invalid_argument(format!("--timeout {t:?}: {e}")))
            })?),
            None => None,
        };
    let memory = match &args.memory {
        Some(m) => Some(
            m.parse::<ByteSize>()
                .map_err(|e| refused(CliError::invalid_argument(format!("--memory {m:?}: {e}"))))?,
        ),
        None => None,
    };
    let mounts = args
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extra_env = Vec::new();
    for kv in &args.env {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            refused(CliError::invalid_argument(format!(
                "--env {kv:?}: expected K=V"
            )))
        })?;
        if k.is_empty() {
            return Err(refused(CliError::invalid_argument(format!(
                "--env {kv:?}: empty name"
            ))));
        }
        extra_env.push((k.to_string(), v.to_string()));
    }

    // Nothing is decided without a record.
    let log = ctx.audit_log().map_err(refused)?;
    let record = |ev: Event| {
        log.record(ev)
            .map_err(|e| refused(super::audit::audit_error(e)))
    };
    let deny = |decision: Decision, reason: String, digest: Option<String>| {
        let mut ev = ctx
            .audit_event("run", decision)
            .image(image.to_string())
            .tier(tier.to_string())
            .command(args.command.iter())
            .reason(reason);
        if let Some(d) = digest {
            ev = ev.digest(d);
        }
        record(ev)
    };

    let verifier = Verifier::new(&ctx.config).map_err(|e| {
        let _ = deny(Decision::Error, e.to_string(), None);
        refused(super::verify::verify_error(&e))
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            refused(CliError::internal(format!(
                "cannot start the async runtime: {e}"
            )))
        })?;
    let verification = match rt.block_on(verifier.verify(&image, &platform)) {
        Ok(v) => v,
        Err(e) => {
            let decision = if e.is_denial() {
                Decision::Deny
            } else {
                Decision::Error
            };
            deny(decision, e.to_string(), None)?;
            return Err(refused(super::verify::verify_error(&e)));
        }
    };
    let verified = &verification.image;
    let digest = verified.platform_digest().to_string();

    let fail = |reason: String, e: CliError| -> CliError {
        match deny(Decision::Error, reason, Some(digest.clone())) {
            Ok(_) => refused(e),
            Err(audit) => audit,
        }
    };
    let state = ctx.config.sandbox.state_dir.clone();
    let store = ImageStore::open_in(
        &state,
        perry_runtime::unpack::Limits::from_config(&ctx.config.sandbox),
    )
    .map_err(|e| fail(e.to_string(), CliError::internal(e.to_string())))?;
    let pulled = rt
        .block_on(store.pull(verifier.registry(), verified))
        .map_err(|e| {
            fail(
                e.to_string(),
                CliError {
                    code: "pull_failed",
                    status: 502,
                    message: e.to_string(),
                    exit: EXIT_REFUSED,
                },
            )
        })?;

    let grants = Grants {
        writable: mounts
            .iter()
            .filter(|m| !m.read_only)
            .map(|m| m.target.clone())
            .collect(),
        readable: mounts
            .iter()
            .filter(|m| m.read_only)
            .map(|m| m.target.clone())
            .collect(),
        network: None,
    };
    let profile = Profile::for_tier(tier, ctx.config.tiers.get(&tier), &grants).map_err(|e| {
        fail(
            e.to_string(),
            CliError {
                code: "policy_denied",
                status: 403,
                message: e.to_string(),
                exit: EXIT_REFUSED,
            },
        )
    })?;
    let step = ProfileStep::new(&profile).map_err(|e| {
        fail(
            e.to_string(),
            CliError {
                code: "isolation_unavailable",
                status: 503,
                message: e.to_string(),
                exit: EXIT_REFUSED,
            },
        )
    })?;

    let exec = pulled.config.config.clone().unwrap_or_default();
    let (uid, gid) = identity(&pulled.config, profile.non_root);
    let mut limits = Limits::from_tier(&profile.spec.limits);
    if let Some(t) = timeout {
        limits.timeout = limits.timeout.min(t.as_std());
    }
    if let Some(m) = memory {
        limits.memory = limits.memory.min(m.as_u64());
    }
    let mut env: Vec<(String, String)> = exec
        .env
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in extra_env {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    let mut spec = RunSpec::new(
        pulled.rootfs.path.clone(),
        args.command.clone(),
        LeaseConfig {
            state_dir: state.clone(),
            range: ctx.config.sandbox.uid_range,
        },
    );
    spec.env = env;
    spec.cwd = exec
        .working_dir
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    spec.mounts = mounts;
    spec.uid = uid;
    spec.gid = gid;
    spec.limits = limits;
    spec.tmpfs_size = profile.tmpfs_bytes;
    spec.loopback = profile.network == NetworkMode::Granted;

    // Audit before act: the allow decision is durable before the command starts.
    record(
        ctx.audit_event("run", Decision::Allow)
            .image(image.to_string())
            .digest(digest.clone())
            .tier(tier.to_string())
            .command(args.command.iter())
            .reason(format!(
                "signed by {} (issuer {})",
                verified.signer_identity(),
                verified.issuer()
            ))
            .detail("pinned", verified.pinned_reference())
            .detail("cache_hit", verification.cache_hit)
            .detail("blobs_fetched", pulled.fetched as u64)
            .detail("uid", u64::from(uid)),
    )?;

    let outcome = match native::run(&spec, &step) {
        Ok(o) => o,
        Err(e) => {
            let code = e.exit_status();
            let ev = ctx
                .audit_event("run", Decision::Error)
                .image(image.to_string())
                .digest(digest.clone())
                .tier(tier.to_string())
                .reason(format!("did not start: {e}"));
            record(ev)?;
            return Err(CliError {
                code: if code == 125 {
                    "sandbox_failed"
                } else {
                    "cannot_execute"
                },
                status: 500,
                message: e.to_string(),
                exit: code as u8,
            });
        }
    };
    let status = match (outcome.exit_code, outcome.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 125,
    };
    if ctx.json {
        let v = serde_json::json!({
            "ok": true,
            "image": image.to_string(),
            "digest": digest,
            "tier": tier.to_string(),
            "exit_code": outcome.exit_code,
            "signal": outcome.signal,
            "stdout": String::from_utf8_lossy(&outcome.stdout),
            "stderr": String::from_utf8_lossy(&outcome.stderr),
            "stdout_truncated": outcome.stdout_truncated,
            "stderr_truncated": outcome.stderr_truncated,
            "timed_out": outcome.timed_out,
            "oom_killed": outcome.oom_killed,
            "denied_syscalls": outcome.denied_syscalls,
            "max_rss": outcome.max_rss,
            "cpu_time_ms": outcome.cpu_time.as_millis() as u64,
            "wall_time_ms": outcome.wall_time.as_millis() as u64,
        });
        println!("{v}");
    } else {
        let _ = std::io::stdout().write_all(&outcome.stdout);
        let _ = std::io::stderr().write_all(&outcome.stderr);
        let _ = std::io::stdout().flush();
        for (what, t) in [
            ("stdout", outcome.stdout_truncated),
            ("stderr", outcome.stderr_truncated),
        ] {
            if t {
                eprintln!("perry-sandbox: {what} truncated");
            }
        }
        if outcome.timed_out {
            eprintln!("perry-sandbox: timed out; the whole process tree was killed");
        }
        if outcome.oom_killed {
            eprintln!("perry-sandbox: the memory limit was hit (OOM kill)");
        }
        for d in &outcome.denied_syscalls {
            tracing::info!(
                syscall = %d.name,
                errno = d.errno,
                count = d.count,
                "seccomp denied"
            );
        }
    }
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}
