//! `perry-sandbox serve [--socket PATH] [--prewarm]`: the local API (see `perry_sandbox::service`).
//!
//! Start-up order: load the configuration, open the audit log, sweep what a killed predecessor
//! left behind (stale sandbox cgroups, interrupted downloads and unpacks), build the executor
//! and start its sandbox spawner (`perry_runtime::native::Spawner`),
//! optionally verify and unpack every capability image (`--prewarm`), bind the socket (0660),
//! then serve until SIGTERM or SIGINT, draining calls in flight before exiting.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use perry_audit::{Action, AuditSink, Decision};
use perry_sandbox::capability::Capabilities;
use perry_sandbox::exec::Executor;
use perry_sandbox::service::{bind_socket, Server, ServerOptions};

use super::error::{CliError, CliResult};
use super::{Context, GlobalArgs};

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// Socket path (default: `[service] socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Verify and unpack every capability image before accepting calls.
    #[arg(long)]
    pub prewarm: bool,
}

/// Runs `serve`.
pub(super) fn run(g: &GlobalArgs, args: ServeArgs) -> CliResult {
    let ctx = Context::load(g)?;
    let log = ctx.audit_log()?;
    let executor =
        Executor::new(ctx.config.clone(), log.clone()).map_err(|e| super::run::exec_error(&e))?;
    for (name, image) in perry_sandbox::capability::resolved_at_every_call(&ctx.config) {
        tracing::warn!(
            capability = %name,
            %image,
            "named by tag with [trust] tag_ttl = \"0s\": every call asks the registry where the \
             tag points (pin it as repo@sha256:... or set a tag_ttl)"
        );
    }
    for p in executor.sweep_stale() {
        tracing::warn!(path = %p.display(), "removed state left by a killed run");
    }
    // Every sandbox of the service is cloned by the spawner, never forked from this process
    // (which holds the audit key, the cache's MAC key and registry credentials).
    let spawner = perry_runtime::native::Spawner::start()
        .map_err(|e| CliError::internal(format!("cannot start the sandbox spawner: {e}")))?;
    let executor = executor
        .with_spawner(spawner)
        .with_pool(ctx.config.service.pool)
        .map_err(|e| CliError::internal(format!("cannot start the warm pool: {e}")))?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| ctx.config.service.socket.clone());
    let server = Server::new(
        Capabilities::new(Arc::new(executor)),
        ServerOptions::from_config(&ctx.config.service),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        if args.prewarm {
            for (name, r) in server.prewarm().await {
                match r {
                    Ok(d) => eprintln!("perry-sandbox: prewarmed {name}: {d}"),
                    Err(e) => eprintln!("perry-sandbox: prewarm {name}: {}: {}", e.code, e.message),
                }
            }
        }
        let listener = bind_socket(&socket, ctx.config.service.socket_group)
            .await
            .map_err(|e| {
                CliError::internal(format!("cannot listen on {}: {e}", socket.display()))
            })?;
        log.record(
            ctx.audit_event(Action::Serve, Decision::Allow)
                .reason(format!("listening on {}", socket.display()))
                .detail("socket", socket.to_string_lossy().into_owned())
                .detail("state", "started"),
        )
        .map_err(super::audit::audit_error)?;
        eprintln!("perry-sandbox: listening on {}", socket.display());
        server
            .serve(listener, shutdown_signal())
            .await
            .map_err(|e| CliError::internal(format!("serving {}: {e}", socket.display())))?;
        let _ = std::fs::remove_file(&socket);
        log.record(
            ctx.audit_event(Action::Serve, Decision::Allow)
                .reason(format!("stopped: drained, {} removed", socket.display()))
                .detail("socket", socket.to_string_lossy().into_owned())
                .detail("state", "stopped"),
        )
        .map_err(super::audit::audit_error)?;
        eprintln!("perry-sandbox: drained; exiting");
        Ok::<_, CliError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
