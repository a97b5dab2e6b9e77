//! Run-time detection: probe the platform's backends in priority order, each with a 2 s
//! timeout and a liveness check; `PERRY_CONTAINER_BACKEND` skips probing. Per-host settings
//! (`[backends.podman] runtime`, extra args, the CLI's path, a preferred order) come from the
//! `[backends]` section of `perryconfig.toml`, not from constants here.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use perry_policies::{BackendMode, BackendSettings, BackendsConfig};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cli;
use crate::{
    Availability, BackendError, ContainerBackend, Dialect, DockerProtocol, IsolationLevel,
    LimaProtocol, SandboxRuntime,
};

/// Every probe has this long.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Prefer local backends or a remote daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Local backends first (the default).
    LocalFirst,
    /// A remote daemon first (DOCKER_HOST, CONTAINER_HOST, podman's default remote
    /// connection).
    ServerFirst,
}

impl Mode {
    /// Parses `local-first` / `server-first`; anything else is `invalid_config` listing both.
    pub fn parse(s: &str) -> Result<Mode, BackendError> {
        match s {
            "local-first" => Ok(Mode::LocalFirst),
            "server-first" => Ok(Mode::ServerFirst),
            other => Err(BackendError::InvalidConfig(format!(
                "PERRY_CONTAINER_MODE={other:?} is not a mode; valid values: local-first, server-first"
            ))),
        }
    }
}

/// The backends probed on `os` (`std::env::consts::OS`), highest priority first.
pub fn probe_order(os: &str) -> &'static [&'static str] {
    match os {
        "macos" => &perry_policies::BACKEND_NAMES,
        _ => &["podman", "nerdctl", "docker"],
    }
}

/// What one probe found.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// Backend name.
    pub name: String,
    /// Usable now.
    pub available: bool,
    /// Why (not).
    pub reason: String,
    /// Version line.
    pub version: Option<String>,
    /// The mode detection ran in.
    pub mode: Mode,
    /// The strongest isolation it offers.
    pub isolation: IsolationLevel,
}

impl From<BackendMode> for Mode {
    fn from(m: BackendMode) -> Mode {
        match m {
            BackendMode::LocalFirst => Mode::LocalFirst,
            BackendMode::ServerFirst => Mode::ServerFirst,
        }
    }
}

/// Detection inputs: the environment, over the `[backends]` configuration.
#[derive(Clone, Debug, Default)]
pub struct DetectOptions {
    /// `PERRY_CONTAINER_BACKEND`: use this one, no probing.
    pub backend: Option<String>,
    /// `PERRY_CONTAINER_MODE`.
    pub mode: Option<String>,
    /// The platform (`std::env::consts::OS` when None).
    pub os: Option<String>,
    /// `DOCKER_HOST` / `CONTAINER_HOST` are set (server-first prefers those backends).
    pub docker_host: bool,
    /// `CONTAINER_HOST` is set.
    pub container_host: bool,
    /// podman's default connection is a remote one (`podman system connection list`); set by
    /// [`DetectOptions::names_to_probe`] in server-first mode.
    pub podman_connection: bool,
    /// `[backends]`: the backend and mode when the environment names none, the probe
    /// order, and each backend's settings.
    pub config: BackendsConfig,
}

impl DetectOptions {
    /// From the process environment.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        DetectOptions {
            backend: var("PERRY_CONTAINER_BACKEND"),
            mode: var("PERRY_CONTAINER_MODE"),
            os: None,
            docker_host: var("DOCKER_HOST").is_some(),
            container_host: var("CONTAINER_HOST").is_some(),
            podman_connection: false,
            config: BackendsConfig::default(),
        }
    }

    /// From the process environment over `config` (`[backends]`): the environment wins for
    /// the backend and the mode.
    pub fn from_config_and_env(config: &BackendsConfig) -> Self {
        DetectOptions {
            config: config.clone(),
            ..DetectOptions::from_env()
        }
    }

    /// The backends to probe, in order, on `os`: the one named (environment, then
    /// configuration), else `[backends] order` or the platform's order, with the remote
    /// daemons the environment points at first in server-first mode.
    pub fn probe_names(&self, os: &str, mode: Mode) -> Vec<String> {
        if let Some(name) = self.backend() {
            return vec![name];
        }
        let mut order: Vec<String> = match &self.config.order {
            Some(o) => o.clone(),
            None => probe_order(os).iter().map(|s| s.to_string()).collect(),
        };
        if mode == Mode::ServerFirst {
            let mut remote = Vec::new();
            if self.container_host || self.podman_connection {
                remote.push("podman".to_string());
            }
            if self.docker_host {
                remote.push("docker".to_string());
            }
            order.retain(|n| !remote.contains(n));
            remote.extend(order);
            order = remote;
        }
        order
    }

    /// [`DetectOptions::probe_names`], after asking podman (within one [`PROBE_TIMEOUT`])
    /// whether it has a default remote connection when the mode is server-first.
    pub async fn names_to_probe(&self, os: &str, mode: Mode) -> Vec<String> {
        let mut o = self.clone();
        if mode == Mode::ServerFirst && !o.podman_connection && self.backend().is_none() {
            let podman = self.config.settings("podman").program;
            let podman = podman.map_or_else(|| "podman".into(), |p| p.display().to_string());
            o.podman_connection = podman_default_connection(&podman).await;
        }
        o.probe_names(os, mode)
    }

    /// The backend named by the environment, else by the configuration.
    pub fn backend(&self) -> Option<String> {
        self.backend.clone().or_else(|| self.config.backend.clone())
    }

    /// The mode from the environment (an unknown one is `invalid_config`), else the
    /// configuration, else local-first.
    pub fn mode(&self) -> Result<Mode, BackendError> {
        match &self.mode {
            Some(m) => Mode::parse(m),
            None => Ok(self.config.mode.map(Mode::from).unwrap_or(Mode::LocalFirst)),
        }
    }
}

/// The outcome of detection: the chosen driver and every probe that ran.
#[derive(Clone, Debug)]
pub struct Detected {
    /// The chosen backend.
    pub backend: DockerProtocol,
    /// Every probe, in the order run.
    pub probes: Vec<Probe>,
}

/// The driver for a backend name with default settings, or `backend_unavailable` naming it.
pub fn driver_for(name: &str) -> Result<DockerProtocol, BackendError> {
    driver_with(name, &BackendSettings::default())
}

/// Whether `program` is an executable on `PATH` (or a path that exists).
fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The driver for backend `name` with its `[backends.<name>]` settings: the CLI's path, the
/// OCI runtime (podman without one configured uses `runc` when it is on `PATH`: crun fails
/// on hybrid cgroup hosts), the extra create flags, gVisor's path, lima's instance.
pub fn driver_with(name: &str, s: &BackendSettings) -> Result<DockerProtocol, BackendError> {
    let program = |default: &str| {
        s.program
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| default.to_string())
    };
    let d = match name {
        "podman" => {
            let runtime = match &s.runtime {
                Some(r) => Some(r.clone()),
                None => on_path("runc").then(|| "runc".to_string()),
            };
            let sandbox = s.sandbox_runtime.clone().unwrap_or_else(default_sandbox);
            DockerProtocol::podman(runtime.as_deref())
                .with_program(&program("podman"))
                .with_sandbox(Some(SandboxRuntime::gvisor_podman(sandbox)))
        }
        "docker" => DockerProtocol::new("docker", Dialect::Docker, &program("docker")),
        "nerdctl" => DockerProtocol::new("nerdctl", Dialect::Nerdctl, &program("nerdctl")),
        "orbstack" | "colima" | "rancher-desktop" => {
            DockerProtocol::new(name, Dialect::Docker, &program("docker"))
        }
        "lima" => LimaProtocol::driver_with(
            &program("limactl"),
            s.instance.as_deref().unwrap_or("default"),
        ),
        "apple-container" => {
            return Err(BackendError::Unavailable(format!(
                "apple-container: its CLI cannot apply {} (see AppleContainerProtocol); \
                 perry-sandbox does not run a tier weaker than it promises",
                crate::apple::ALWAYS_UNENFORCEABLE.join(" or ")
            )));
        }
        other => {
            return Err(BackendError::Unavailable(format!(
                "unknown backend {other:?}; known: {}",
                perry_policies::BACKEND_NAMES.join(", ")
            )))
        }
    };
    let d = match (&s.runtime, name) {
        // podman takes the runtime as a global flag (above); the others per container.
        (Some(r), n) if n != "podman" => {
            let mut extra = vec!["--runtime".to_string(), r.clone()];
            extra.extend(s.extra_args.iter().cloned());
            d.with_extra_args(extra)
        }
        _ => d.with_extra_args(s.extra_args.clone()),
    };
    Ok(d)
}

/// Whether `podman system connection list --format json` names a default connection (a
/// remote podman service); a podman that is missing or does not answer has none.
async fn podman_default_connection(podman: &str) -> bool {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let argv = [podman, "system", "connection", "list", "--format", "json"];
    answer(&argv, deadline)
        .await
        .ok()
        .and_then(|out| serde_json::from_str::<Vec<serde_json::Value>>(&out).ok())
        .is_some_and(|list| list.iter().any(|c| c["Default"] == true))
}

/// Runs `argv` with what is left of the probe's `deadline`; its stdout, or why not.
async fn answer(argv: &[&str], deadline: Instant) -> Result<String, String> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let left = deadline.saturating_duration_since(Instant::now());
    match cli::run(&argv, left).await {
        Ok(o) if o.code == 0 => Ok(o.stdout_str()),
        Ok(o) => Err(format!(
            "`{}` exited {}: {}",
            argv.join(" "),
            o.code,
            o.stderr_str().lines().next().unwrap_or_default()
        )),
        Err(BackendError::Timeout { .. }) => Err(format!(
            "`{}` did not answer within the probe's {} s",
            argv.join(" "),
            PROBE_TIMEOUT.as_secs()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn home(p: &str) -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(p)
}

/// The docker-compatible desktops: probed by their own CLI, driven through the docker CLI
/// they serve.
fn desktop_cli(name: &str) -> Option<&'static str> {
    match name {
        "orbstack" => Some("orb"),
        "colima" => Some("colima"),
        "rancher-desktop" => Some("rdctl"),
        _ => None,
    }
}

/// What one probe asks: the backend's own CLI, the docker CLI a desktop's driver runs, the
/// sandboxed-kernel runtime the driver would use, and lima's instance.
struct Target {
    cli: String,
    docker_cli: Option<String>,
    sandbox: Option<PathBuf>,
    instance: String,
}

/// The gVisor runtime podman uses when `[backends.podman] sandbox_runtime` is unset.
fn default_sandbox() -> PathBuf {
    PathBuf::from("/usr/bin/runsc")
}

/// Probes one backend by name with default settings: `--version`, then its liveness check.
pub async fn probe(name: &str, mode: Mode, os: &str) -> Probe {
    probe_with(name, mode, os, &BackendSettings::default()).await
}

/// Probes one backend with its `[backends.<name>]` settings: the CLI at `program` (for the
/// desktops, the docker CLI they serve), podman's `sandbox_runtime`, lima's `instance`.
pub async fn probe_with(name: &str, mode: Mode, os: &str, s: &BackendSettings) -> Probe {
    let configured = s.program.as_ref().map(|x| x.display().to_string());
    let default_cli = match name {
        "apple-container" => "container",
        "lima" => "limactl",
        n => n,
    };
    let target = match desktop_cli(name) {
        Some(own) => Target {
            cli: own.into(),
            docker_cli: Some(configured.unwrap_or_else(|| "docker".into())),
            sandbox: None,
            instance: String::new(),
        },
        None => Target {
            cli: configured.unwrap_or_else(|| default_cli.into()),
            docker_cli: None,
            sandbox: (name == "podman")
                .then(|| s.sandbox_runtime.clone().unwrap_or_else(default_sandbox)),
            instance: s.instance.clone().unwrap_or_else(|| "default".into()),
        },
    };
    probe_target(name, mode, os, &target).await
}

/// Probes `t` within one [`PROBE_TIMEOUT`] for all its calls: `--version`, then the
/// backend's liveness check.
async fn probe_target(name: &str, mode: Mode, os: &str, t: &Target) -> Probe {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut p = Probe {
        name: name.into(),
        available: false,
        reason: String::new(),
        version: None,
        mode,
        isolation: IsolationLevel::Container,
    };
    let program = t.cli.as_str();
    match answer(&[program, "--version"], deadline).await {
        Ok(v) => p.version = Some(v.lines().next().unwrap_or_default().to_string()),
        Err(e) => {
            p.reason = e;
            return p;
        }
    }
    let live: Result<String, String> = match name {
        "docker" => answer(
            &[program, "version", "--format", "{{.Server.Version}}"],
            deadline,
        )
        .await
        .map(|v| format!("daemon {v} answers"))
        .map_err(|e| format!("docker daemon does not answer: {e}")),
        "nerdctl" => answer(&[program, "version"], deadline)
            .await
            .map(|_| "containerd answers".into()),
        "colima" => answer(&[program, "status"], deadline)
            .await
            .map(|_| "colima running".into()),
        "apple-container" => match answer(&[program, "system", "status"], deadline).await {
            // Live, but no tier can be applied through it (crate::apple): not usable.
            Ok(_) => Err(format!(
                "running, but its CLI cannot apply {}, so no tier can run on it",
                crate::apple::ALWAYS_UNENFORCEABLE.join(" or ")
            )),
            Err(e) => Err(e),
        },
        "lima" => answer(&[program, "list", "--json"], deadline)
            .await
            .and_then(|out| lima_running(&out, &t.instance)),
        "orbstack" | "rancher-desktop" => {
            let sock = if name == "orbstack" {
                home(".orbstack/run/docker.sock")
            } else {
                home(".rd/docker.sock")
            };
            if sock.exists() {
                Ok(format!("socket {} exists", sock.display()))
            } else {
                Err(format!("socket {} missing (not running)", sock.display()))
            }
        }
        "podman" if os == "macos" => {
            match answer(&[program, "machine", "list", "--format", "json"], deadline).await {
                Ok(out)
                    if out.contains("\"Running\": true") || out.contains("\"Running\":true") =>
                {
                    Ok("a podman machine is running".into())
                }
                Ok(_) => Err("no running podman machine (`podman machine start`)".into()),
                Err(e) => Err(e),
            }
        }
        _ => Ok("CLI answers".into()),
    };
    // A desktop is driven through its docker CLI: that one must answer too.
    let live = match (live, &t.docker_cli) {
        (Ok(r), Some(docker)) => answer(&[docker, "--version"], deadline)
            .await
            .map(|_| format!("{r}; {docker} answers"))
            .map_err(|e| format!("{r}, but the docker CLI it serves does not answer: {e}")),
        (live, _) => live,
    };
    match live {
        Ok(r) => {
            p.available = true;
            p.reason = r;
            if t.sandbox.as_deref().is_some_and(Path::is_file) {
                p.isolation = IsolationLevel::SandboxedKernel;
            }
        }
        Err(e) => p.reason = e,
    }
    p
}

/// Whether `limactl list --json` (one JSON object per line) shows `instance` running.
fn lima_running(out: &str, instance: &str) -> Result<String, String> {
    let status = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["name"] == instance)
        .map(|v| v["status"].as_str().unwrap_or_default().to_string());
    match status.as_deref() {
        Some("Running") => Ok(format!("lima instance {instance} is running")),
        Some(other) => Err(format!(
            "lima instance {instance} is {other} (`limactl start {instance}`)"
        )),
        None => Err(format!(
            "no lima instance {instance} (`limactl start {instance}`)"
        )),
    }
}

/// The availability of a driver (used by [`ContainerBackend::availability`]): the probe of
/// what it runs — its CLI, its sandboxed-kernel runtime, lima's instance.
pub(crate) async fn probe_driver(d: &DockerProtocol) -> Availability {
    let cli = d.program().to_string();
    let target = match desktop_cli(d.name()) {
        Some(own) => Target {
            cli: own.into(),
            docker_cli: Some(cli),
            sandbox: None,
            instance: String::new(),
        },
        None => Target {
            cli,
            docker_cli: None,
            sandbox: d.sandbox().map(|s| s.path.clone()),
            instance: d.lima_instance().unwrap_or("default").into(),
        },
    };
    let p = probe_target(d.name(), Mode::LocalFirst, std::env::consts::OS, &target).await;
    Availability {
        available: p.available,
        reason: p.reason,
        version: p.version,
        isolation: p.isolation,
    }
}

/// Probes the platform's backends (or the configured order, or the one named) and picks the
/// first available, built with its `[backends.<name>]` settings.
pub async fn detect_with(opts: &DetectOptions) -> Result<Detected, BackendError> {
    let mode = opts.mode()?;
    let os = opts
        .os
        .clone()
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let settings = |n: &str| opts.config.settings(n);
    if let Some(name) = opts.backend() {
        let from = if opts.backend.is_some() {
            "PERRY_CONTAINER_BACKEND"
        } else {
            "[backends] backend"
        };
        let backend = driver_with(&name, &settings(&name))
            .map_err(|e| BackendError::Unavailable(format!("{from}={name}: {e}")))?;
        let p = probe_with(&name, mode, &os, &settings(&name)).await;
        if !p.available {
            return Err(BackendError::Unavailable(format!(
                "{from}={name}: {}",
                p.reason
            )));
        }
        return Ok(Detected {
            backend,
            probes: vec![p],
        });
    }
    let order = opts.names_to_probe(&os, mode).await;
    let mut probes = Vec::new();
    for name in &order {
        let p = probe_with(name, mode, &os, &settings(name)).await;
        let ok = p.available;
        probes.push(p);
        if ok {
            if let Ok(backend) = driver_with(name, &settings(name)) {
                return Ok(Detected { backend, probes });
            }
        }
    }
    let listed: Vec<String> = probes
        .iter()
        .map(|p| format!("{}: {}", p.name, p.reason))
        .collect();
    Err(BackendError::NoneFound {
        probed: listed.join("; "),
        advice: crate::install::install_advice(&os, &opts.config),
    })
}

/// A once-per-process detection result: the first call probes, every later one (whatever
/// its options) gets the same answer, an error with its own code (`invalid_config` stays
/// `invalid_config`).
pub struct DetectCache {
    cell: OnceCell<Result<Detected, BackendError>>,
}

impl DetectCache {
    /// An empty cache.
    pub const fn new() -> Self {
        DetectCache {
            cell: OnceCell::const_new(),
        }
    }

    /// [`detect_with`] the first time, the cached answer after.
    pub async fn get(&self, opts: &DetectOptions) -> Result<Detected, BackendError> {
        self.cell.get_or_init(|| detect_with(opts)).await.clone()
    }
}

impl Default for DetectCache {
    fn default() -> Self {
        DetectCache::new()
    }
}

static DETECTED: DetectCache = DetectCache::new();

/// [`detect_with`] on the process environment, cached for the life of the process.
pub async fn detect() -> Result<Detected, BackendError> {
    DETECTED.get(&DetectOptions::from_env()).await
}

/// [`detect_with`] on the environment over `[backends]`, cached for the life of the process
/// (shared with [`detect`]: the first call's inputs decide).
pub async fn detect_configured(config: &BackendsConfig) -> Result<Detected, BackendError> {
    DETECTED
        .get(&DetectOptions::from_config_and_env(config))
        .await
}
