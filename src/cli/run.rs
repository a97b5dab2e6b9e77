//! `perry-sandbox run [--tier T] [--timeout D] [--memory M] [--mount SRC:DST[:rw]] [--env K=V]
//! [--json] IMAGE -- CMD…`: verify (the gate) → pull by digest → unpack → run in the native
//! sandbox under the tier's profile. Output is printed as it happens (the tier's output limit
//! still applies: the rest is dropped and reported); `--json` collects it into one document.
//!
//! Exit status: the command's own (128 + signal when it was killed); 125 when perry-sandbox
//! refuses or fails before the command starts (verification denied, pull/unpack refused, setup
//! failed); 126 cannot execute; 127 not found. Every refusal and every run is recorded in the
//! audit log, the run *before* the command starts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use perry_policies::{ByteSize, HumanDuration, Tier};
use perry_sandbox::exec::{
    BindMount, ExecError, ExecRequest, Executor, LiveOutput, Platform, Stream, WarmUp,
};

use super::error::{CliError, CliResult, EXIT_REFUSED};
use super::{Context, GlobalArgs};

/// Arguments of `run`.
#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// Policy tier (default: `[sandbox] default_tier`, normally `hardened`).
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// Wall-clock limit (e.g. 10s); only tightens the tier's.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Memory limit (e.g. 256MiB); only tightens the tier's.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Bind a host path: SRC:DST, read-only unless `:rw` is appended (DST is created in the
    /// image as an empty directory when missing).
    #[arg(long = "mount", value_name = "SRC:DST[:rw]")]
    pub mounts: Vec<String>,
    /// Set an environment variable in the sandbox (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Platform to pick from a multi-platform image.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    #[command(flatten)]
    pub source: super::verify::SourceArgs,
    /// The image: a registry reference (tag or digest), `oci:DIR[:tag]` or
    /// `oci-archive:FILE[:tag]`.
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
    // Pinned: the directory opened now is what gets mounted.
    BindMount::pinned(std::path::Path::new(src), PathBuf::from(dst), !rw)
        .map_err(|e| bad(&format!("SRC: {e}")))
}

/// Runs `perry-sandbox run`.
pub(super) fn run(g: &GlobalArgs, args: RunArgs) -> CliResult {
    let ctx = Context::load(g).map_err(refused)?;
    let image = super::verify::parse_source(&args.image)?;
    let tier: Tier = match &args.tier {
        Some(t) => super::parse_opt("--tier", t)?,
        None => ctx.config.sandbox.default_tier,
    };
    let platform: Platform = super::parse_opt("--platform", &args.platform)?;
    let timeout: Option<HumanDuration> =
        super::parse_opt_maybe("--timeout", args.timeout.as_ref())?;
    let memory: Option<ByteSize> = super::parse_opt_maybe("--memory", args.memory.as_ref())?;
    let mounts = args
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = Vec::new();
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
        env.push((k.to_string(), v.to_string()));
    }

    // Nothing is decided without a record: the executor records every refusal and the allow
    // decision (durably, before the command starts) in this log.
    tracing::debug!("arguments checked");
    // Overlap the kernel's slow set-up work with verification and pulling.
    Executor::warm_up(WarmUp::OneRun);
    let log = ctx.audit_log().map_err(refused)?;
    tracing::debug!("audit log open");
    let rt = super::runtime()?;
    let executor = match Executor::new(ctx.config.clone(), log.clone()) {
        Ok(x) => match super::progress::Bars::for_terminal(ctx.json) {
            Some(bars) => x.with_progress(bars),
            None => x,
        },
        Err(e) => return Err(exec_error(&e)),
    };
    tracing::debug!("executor ready");
    let mut req = ExecRequest::from_source(image.clone(), tier, args.command.clone());
    req.name = args.source.name.clone();
    req.bundle = args.source.bundle.clone();
    req.platform = platform;
    req.env = env;
    req.mounts = mounts;
    req.timeout = timeout.map(|t| t.as_std());
    req.memory = memory.map(|m| m.as_u64());
    req.actor = ctx.audit_actor();
    if !ctx.json {
        // Print output as it happens, like `docker run`; the tier's output limit still applies.
        req.live = Some(LiveOutput(Arc::new(|stream, bytes| {
            let _ = match stream {
                Stream::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(bytes).and_then(|_| out.flush())
                }
                Stream::Stderr => std::io::stderr().lock().write_all(bytes),
            };
        })));
    }
    let prepared = rt
        .block_on(executor.prepare(req))
        .map_err(|e| exec_error(&e))?;
    // Sign the checkpoint covering the allow record while the sandbox runs, so that the
    // decision is signed as early as it can be; the log's drop at exit signs the outcome record.
    let mut _checkpoint = None;
    let out = executor
        .launch_with(prepared, || {
            _checkpoint = Some(EarlyCheckpoint::start(&log))
        })
        .map_err(|e| exec_error(&e))?;
    let outcome = &out.run;
    let status = out.shell_status();
    if ctx.json {
        let v = serde_json::json!({
            "ok": true,
            "image": image.to_string(),
            "digest": out.digest.to_string(),
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
            "audit_seq": out.audit_seq,
        });
        println!("{v}");
    } else {
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
    // The end of the timeline, in order: the early checkpoint's thread, then the log's close
    // (the final checkpoint, signing the outcome record), which the exit has to wait for.
    drop(_checkpoint);
    tracing::debug!("early checkpoint joined");
    drop((executor, rt, ctx));
    if let Some(log) = Arc::into_inner(log) {
        if let Err(e) = log.close() {
            tracing::warn!("audit log: the final checkpoint was not written: {e}");
        }
        tracing::debug!("audit log closed");
    }
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

/// An execution error as the CLI reports it: its code and status, exit 125 (126/127 when the
/// command cannot be executed or found).
pub(super) fn exec_error(e: &ExecError) -> CliError {
    let mut message = e.to_string();
    if let ExecError::Verify(v) = e {
        message.push_str(super::verify::flag_hint(v));
    }
    CliError::new(e.code(), message).with_exit(e.exit_status() as u8)
}

/// A checkpoint being signed and written on a background thread; dropping it waits for the
/// thread, so the process never exits in the middle of the write.
struct EarlyCheckpoint(Option<std::thread::JoinHandle<()>>);

impl EarlyCheckpoint {
    fn start(log: &Arc<perry_audit::AuditLog>) -> Self {
        let log = Arc::clone(log);
        let handle = std::thread::Builder::new()
            .name("audit-checkpoint-early".into())
            .spawn(move || {
                // Best effort: on failure the log's final checkpoint at exit still covers it.
                if let Err(e) = log.checkpoint() {
                    tracing::warn!("early audit checkpoint: {e}");
                }
            });
        Self(handle.ok())
    }
}

impl Drop for EarlyCheckpoint {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}
