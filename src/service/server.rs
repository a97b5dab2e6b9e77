//! The HTTP side of the service: socket setup, peer checks, routing, admission, drain.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use perry_audit::{Action, Actor, Correlation, Decision, Event};
use perry_policies::{Code, ImageRef, ServiceConfig};
use serde::Deserialize;
use tokio::net::{UnixListener, UnixStream};

use super::gate::{Gate, Refused};
use super::metrics::Metrics;
use crate::capability::{Capabilities, CapabilityRequest};
use crate::error::ApiError;
use crate::exec::{Executor, Platform, WarmUp};

/// The service's limits and access list (from `[service]`).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Peer uids allowed to call the API.
    pub allowed_uids: Vec<u32>,
    /// Peer gids (primary group) allowed to call the API.
    pub allowed_gids: Vec<u32>,
    /// Invocations running at once.
    pub max_concurrent: usize,
    /// Invocations waiting for a slot; more are answered 429.
    pub max_queue: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_request_size: usize,
    /// End-to-end budget of one request (504 beyond; the sandbox is bounded by what is left).
    pub request_timeout: Duration,
}

impl ServerOptions {
    /// The options `[service]` configures.
    pub fn from_config(c: &ServiceConfig) -> Self {
        Self {
            allowed_uids: c.allowed_uids.clone(),
            allowed_gids: c.allowed_gids.clone(),
            max_concurrent: c.max_concurrent as usize,
            max_queue: c.max_queue as usize,
            max_request_size: c.max_request_size.as_u64() as usize,
            request_timeout: c.request_timeout.as_std(),
        }
    }
}

/// The peer of a connection, from `SO_PEERCRED`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer {
    uid: Option<u32>,
    gid: Option<u32>,
    pid: Option<i32>,
}

impl Connected<axum::serve::IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        Self::of(stream.io())
    }
}

impl Peer {
    fn of(stream: &UnixStream) -> Self {
        match stream.peer_cred() {
            Ok(c) => Peer {
                uid: Some(c.uid()),
                gid: Some(c.gid()),
                pid: c.pid(),
            },
            // No credentials: nobody is allowed.
            Err(_) => Peer {
                uid: None,
                gid: None,
                pid: None,
            },
        }
    }

    fn actor(&self) -> Actor {
        let pid = self.pid.unwrap_or(0);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        Actor::api_peer(
            self.uid.unwrap_or(u32::MAX),
            self.gid.unwrap_or(u32::MAX),
            pid.max(0) as u32,
            exe,
        )
    }
}

struct Shared {
    caps: Capabilities,
    opts: ServerOptions,
    gate: Gate,
    metrics: Metrics,
}

/// The API server: build it, optionally [`Server::prewarm`], then [`Server::serve`].
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// A server for these capabilities.
    pub fn new(caps: Capabilities, opts: ServerOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                gate: Gate::new(opts.max_concurrent, opts.max_queue),
                caps,
                opts,
                metrics: Metrics::default(),
            }),
        }
    }

    /// The routes, with the peer check in front of all of them.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/health", get(health))
            .route("/v1/capabilities", get(list))
            .route("/v1/capabilities/{name}/invoke", post(invoke))
            .route("/v1/verify", post(verify))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(
                Arc::clone(&self.shared),
                check_peer,
            ))
            .with_state(Arc::clone(&self.shared))
    }

    /// Verifies and unpacks every capability's image so the first call does not pay for it.
    /// Returns each capability with what happened to its image.
    pub async fn prewarm(&self) -> Vec<(String, Result<String, ApiError>)> {
        let caps = &self.shared.caps;
        let config = caps.executor().config();
        let mut out = Vec::new();
        for (name, cap) in &config.capabilities {
            let (image, _) = crate::capability::image_for(config, name, cap);
            let r = caps
                .executor()
                .warm(&image, &Platform::default(), Actor::current())
                .await
                .map(|d| d.to_string())
                .map_err(|e| ApiError::from(&e));
            out.push((name.clone(), r));
        }
        out
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting and waits for the
    /// requests in flight to finish (graceful drain).
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        // One empty network namespace ready per call that may run at once, made between calls
        // instead of inside each sandbox start.
        Executor::warm_up(WarmUp::Service {
            max_concurrent: self.shared.opts.max_concurrent,
        });
        let app = self.router().into_make_service_with_connect_info::<Peer>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Binds the API socket at `path` with mode 0660, owned by group `group` when given (so that
/// its members can connect). A stale socket file (nobody listening) is replaced; a live one, or
/// any other kind of file, is an error.
pub async fn bind_socket(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another service is listening", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, serde_json::json!({ "ok": false, "error": e }))
}

async fn check_peer(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = peer.uid.is_some_and(|u| s.opts.allowed_uids.contains(&u))
        || peer.gid.is_some_and(|g| s.opts.allowed_gids.contains(&g));
    if allowed {
        return next.run(req).await;
    }
    let who = match (peer.uid, peer.gid) {
        (Some(u), Some(g)) => format!("uid {u} gid {g}"),
        _ => "a peer without credentials".to_string(),
    };
    let e = ApiError::new(
        Code::Forbidden,
        format!("{who} is not in [service] allowed_uids / allowed_gids"),
    );
    s.metrics.denial("forbidden");
    let ev = Event::new(Action::ApiAccess, Decision::Deny)
        .actor(peer.actor())
        .reason(format!(
            "{} {}: {}",
            req.method(),
            req.uri().path(),
            e.message
        ));
    if let Err(a) = s.caps.executor().audit().record(ev) {
        tracing::error!("audit log: {a}");
    }
    error_response(&e)
}

async fn not_found(req: Request) -> Response {
    error_response(&ApiError::new(
        Code::NotFound,
        format!("no endpoint {} {}", req.method(), req.uri().path()),
    ))
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "ok": true,
            "version": env!("CARGO_PKG_VERSION"),
            "in_flight": s.gate.in_flight(s.opts.max_concurrent),
            "queued": s.gate.queued(),
            "capabilities": s.caps.executor().config().capabilities.len(),
        }),
    )
}

async fn list(State(s): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({ "ok": true, "capabilities": s.caps.summaries() }),
    )
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let text = s
        .metrics
        .render(s.gate.in_flight(s.opts.max_concurrent), s.gate.queued());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// Reads a JSON body of at most `max_request_size` bytes into `T`: 413 when larger, 400 with
/// the line and column when it does not parse.
async fn read_json<T: for<'de> Deserialize<'de>>(s: &Shared, body: Body) -> Result<T, ApiError> {
    let limit = s.opts.max_request_size;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            Code::PayloadTooLarge,
            format!("request body larger than {limit} bytes ([service] max_request_size)"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("request body: {e}")))
}

async fn invoke(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let refuse = |e: ApiError| {
        s.metrics.invocation(&name, &e.code);
        s.metrics.denial(&e.code);
        error_response(&e)
    };
    let mut req: CapabilityRequest = match read_json(&s, body).await {
        Ok(r) => r,
        Err(e) => return refuse(e),
    };
    // An idle service's first sandbox pays the kernel's slow first cgroup migration: start it
    // now, overlapping verification (a no-op when runs are frequent).
    Executor::warm_up(WarmUp::Request);
    let budget = s.opts.request_timeout;
    let slot = match s.gate.admit(budget).await {
        Ok(slot) => slot,
        Err(Refused::QueueFull) => {
            return refuse(ApiError::new(Code::TooManyRequests, format!(
                    "{} invocations running and {} waiting ([service] max_concurrent, max_queue); retry later",
                    s.opts.max_concurrent, s.opts.max_queue
                ),
            ))
        }
        Err(Refused::TimedOut) => return refuse(timeout_error(budget)),
    };
    // The sandbox gets what is left of the request's budget.
    let left = budget.saturating_sub(started.elapsed());
    let asked = req.timeout.map(|t| t.as_std()).unwrap_or(left);
    req.timeout = Some(perry_policies::HumanDuration::from_std(asked.min(left)));
    let actor = peer.actor();
    let correlation = Correlation::new();
    let caps = &s.caps;
    let prepared =
        match tokio::time::timeout(left, caps.prepare(&name, &req, &actor, &correlation)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return refuse(ApiError::from(&e)),
            Err(_) => return refuse(timeout_error(budget)),
        };
    let result = caps.launch(&name, prepared).await;
    drop(slot);
    match result {
        Ok(out) => {
            s.metrics.verify_cache(out.cache_hit);
            s.metrics.sandbox(out.warm);
            s.metrics.run_latency(started.elapsed());
            let label = match (out.exit_code, out.signal, out.timed_out) {
                (_, _, true) => "timeout".to_string(),
                (Some(0), _, _) => "exit_0".to_string(),
                (Some(_), _, _) => "exit_nonzero".to_string(),
                _ => "signal".to_string(),
            };
            s.metrics.invocation(&name, &label);
            let mut v = serde_json::to_value(&out).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("ok".into(), true.into());
            }
            json_response(StatusCode::OK, v)
        }
        Err(e) => refuse(ApiError::from(&e)),
    }
}

fn timeout_error(budget: Duration) -> ApiError {
    ApiError::new(
        Code::Timeout,
        format!(
            "the request did not finish within {} ([service] request_timeout)",
            perry_policies::HumanDuration::from_std(budget)
        ),
    )
}

/// The body of `POST /v1/verify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    image: String,
    #[serde(default)]
    platform: Option<String>,
}

async fn verify(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Body,
) -> Response {
    let refuse = |e: ApiError| {
        s.metrics.denial(&e.code);
        error_response(&e)
    };
    let body: VerifyBody = match read_json(&s, body).await {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let image = match ImageRef::parse(&body.image) {
        Ok(i) => i,
        Err(e) => {
            return refuse(ApiError::new(
                Code::InvalidRequest,
                format!("image {:?}: {e}", body.image),
            ))
        }
    };
    let platform: Platform = match body.platform.as_deref().unwrap_or("linux/amd64").parse() {
        Ok(p) => p,
        Err(e) => {
            return refuse(ApiError::new(
                Code::InvalidRequest,
                format!("platform: {e}"),
            ))
        }
    };
    let correlation = Correlation::new();
    let fut = s
        .caps
        .executor()
        .verify(&image, &platform, peer.actor(), &correlation);
    match tokio::time::timeout(s.opts.request_timeout, fut).await {
        Ok(Ok(v)) => {
            s.metrics.verify_cache(v.cache_hit);
            let i = &v.image;
            json_response(
                StatusCode::OK,
                serde_json::json!({
                    "ok": true,
                    "image": image.to_string(),
                    "digest": i.digest().to_string(),
                    "platform_digest": i.platform_digest().to_string(),
                    "pinned": i.pinned_reference(),
                    "signer": i.signer_identity(),
                    "issuer": i.issuer(),
                    "cache_hit": v.cache_hit,
                }),
            )
        }
        Ok(Err(e)) => refuse(ApiError::from(&e)),
        Err(_) => refuse(timeout_error(s.opts.request_timeout)),
    }
}
