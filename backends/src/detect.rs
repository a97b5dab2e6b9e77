//! Run-time detection: probe the platform's backends in priority order, each with a 2 s
//! timeout and a liveness check; `PERRY_CONTAINER_BACKEND` skips probing.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cli;
use crate::{
    Availability, BackendError, ContainerBackend, Dialect, DockerProtocol, IsolationLevel,
    LimaProtocol,
};

/// Every probe has this long.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Prefer local backends or a remote daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Local backends first (the default).
    LocalFirst,
    /// A remote daemon first (DOCKER_HOST, CONTAINER_HOST, a podman remote connection).
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
        "macos" => &[
            "apple-container",
            "orbstack",
            "colima",
            "rancher-desktop",
            "lima",
            "podman",
            "nerdctl",
            "docker",
        ],
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

/// Detection inputs (the environment, or `[backends]` configuration).
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

/// The driver for a backend name, or `backend_unavailable` naming it.
pub fn driver_for(name: &str) -> Result<DockerProtocol, BackendError> {
    Ok(match name {
        "podman" => DockerProtocol::podman(Some("runc")),
        "docker" => DockerProtocol::new("docker", Dialect::Docker, "docker"),
        "nerdctl" => DockerProtocol::new("nerdctl", Dialect::Nerdctl, "nerdctl"),
        "orbstack" | "colima" | "rancher-desktop" => {
            DockerProtocol::new(name, Dialect::Docker, "docker")
        }
        "lima" => LimaProtocol::driver("default"),
        "apple-container" => {
            return Err(BackendError::Unavailable(
                "apple-container: the AppleContainerProtocol driver is not implemented yet".into(),
            ))
        }
        other => {
            return Err(BackendError::Unavailable(format!(
                "unknown backend {other:?}; known: apple-container, orbstack, colima, \
                 rancher-desktop, lima, podman, nerdctl, docker"
            )))
        }
    })
}

async fn answer(argv: &[&str]) -> Result<String, String> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    match cli::run(&argv, PROBE_TIMEOUT).await {
        Ok(o) if o.code == 0 => Ok(o.stdout_str()),
        Ok(o) => Err(format!(
            "`{}` exited {}: {}",
            argv.join(" "),
            o.code,
            o.stderr_str().lines().next().unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn home(p: &str) -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(p)
}

/// Probes one backend by name: `--version`, then its liveness check.
pub async fn probe(name: &str, mode: Mode, os: &str) -> Probe {
    let mut p = Probe {
        name: name.into(),
        available: false,
        reason: String::new(),
        version: None,
        mode,
        isolation: IsolationLevel::Container,
    };
    let program = match name {
        "apple-container" => "container",
        "orbstack" => "orb",
        "rancher-desktop" => "rdctl",
        "lima" => "limactl",
        n => n,
    };
    match answer(&[program, "--version"]).await {
        Ok(v) => p.version = Some(v.lines().next().unwrap_or_default().to_string()),
        Err(e) => {
            p.reason = e;
            return p;
        }
    }
    let live: Result<String, String> = match name {
        "docker" => answer(&["docker", "version", "--format", "{{.Server.Version}}"])
            .await
            .map(|v| format!("daemon {v} answers"))
            .map_err(|e| format!("docker daemon does not answer: {e}")),
        "nerdctl" => answer(&["nerdctl", "version"])
            .await
            .map(|_| "containerd answers".into()),
        "colima" => answer(&["colima", "status"])
            .await
            .map(|_| "colima running".into()),
        "apple-container" => answer(&["container", "system", "status"])
            .await
            .map(|_| "running".into()),
        "lima" => match answer(&["limactl", "list", "--json"]).await {
            Ok(out) if out.contains("\"Running\"") => Ok("a lima instance is running".into()),
            Ok(_) => Err("no running lima instance (`limactl start`)".into()),
            Err(e) => Err(e),
        },
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
            match answer(&["podman", "machine", "list", "--format", "json"]).await {
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
    match live {
        Ok(r) => {
            p.available = true;
            p.reason = r;
            if name == "podman" && std::path::Path::new("/usr/bin/runsc").is_file() {
                p.isolation = IsolationLevel::SandboxedKernel;
            }
        }
        Err(e) => p.reason = e,
    }
    p
}

/// The availability of a driver (used by [`ContainerBackend::availability`]).
pub(crate) async fn probe_driver(d: &DockerProtocol) -> Availability {
    let os = std::env::consts::OS;
    let p = probe(d.name(), Mode::LocalFirst, os).await;
    Availability {
        available: p.available,
        reason: p.reason,
        version: p.version,
        isolation: p.isolation,
    }
}

/// Probes the platform's backends (or the one named) and picks the first available.
pub async fn detect_with(opts: &DetectOptions) -> Result<Detected, BackendError> {
    let mode = match &opts.mode {
        Some(m) => Mode::parse(m)?,
        None => Mode::LocalFirst,
    };
    let os = opts
        .os
        .clone()
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    if let Some(name) = &opts.backend {
        let backend = driver_for(name)?;
        let p = probe(name, mode, &os).await;
        if !p.available {
            return Err(BackendError::Unavailable(format!(
                "PERRY_CONTAINER_BACKEND={name}: {}",
                p.reason
            )));
        }
        return Ok(Detected {
            backend,
            probes: vec![p],
        });
    }
    let mut order: Vec<&str> = probe_order(&os).to_vec();
    if mode == Mode::ServerFirst {
        let mut remote = Vec::new();
        if opts.container_host {
            remote.push("podman");
        }
        if opts.docker_host {
            remote.push("docker");
        }
        order.retain(|n| !remote.contains(n));
        remote.extend(order);
        order = remote;
    }
    let mut probes = Vec::new();
    for name in order {
        let p = probe(name, mode, &os).await;
        let ok = p.available;
        probes.push(p);
        if ok {
            if let Ok(backend) = driver_for(name) {
                return Ok(Detected { backend, probes });
            }
        }
    }
    let listed: Vec<String> = probes
        .iter()
        .map(|p| format!("{}: {}", p.name, p.reason))
        .collect();
    Err(BackendError::Unavailable(format!(
        "no container backend found (probed {}); install one, e.g. `apt-get install -y podman runc`",
        listed.join("; ")
    )))
}

static DETECTED: OnceCell<Result<Detected, String>> = OnceCell::const_new();

/// [`detect_with`] on the process environment, cached for the life of the process.
pub async fn detect() -> Result<Detected, BackendError> {
    let r = DETECTED
        .get_or_init(|| async {
            detect_with(&DetectOptions::from_env())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    r.clone().map_err(BackendError::Unavailable)
}
