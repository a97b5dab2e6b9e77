//! [`ContainerSpec`] and the data types the backend trait speaks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::{Hardening, PinnedImage};

/// How strongly a container is isolated from the host kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationLevel {
    /// Namespaces + seccomp on the host kernel (runc, crun).
    Container,
    /// A user-space kernel (gVisor `runsc`).
    SandboxedKernel,
    /// A micro-VM (planned).
    Microvm,
}

impl IsolationLevel {
    /// `container`, `sandboxed-kernel` or `microvm`.
    pub fn name(self) -> &'static str {
        match self {
            IsolationLevel::Container => "container",
            IsolationLevel::SandboxedKernel => "sandboxed-kernel",
            IsolationLevel::Microvm => "microvm",
        }
    }
}

/// A mount into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// A named volume (an explicit grant; stays writable unless `read_only`).
    Volume {
        /// Volume name.
        name: String,
        /// Path inside the container.
        target: String,
        /// Mount read-only.
        read_only: bool,
    },
    /// A host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path inside the container.
        target: String,
        /// Mount read-only.
        read_only: bool,
    },
}

/// One network a container joins at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAttachment {
    /// Network name.
    pub network: String,
    /// DNS aliases on that network.
    pub aliases: Vec<String>,
}

/// A published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    /// Host address (empty: all).
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Everything needed to create one container. The image is a [`PinnedImage`] — there is no
/// string field for it — and the confinement is a [`Hardening`] computed from the tier profile.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// Container name (unique on the backend).
    pub name: String,
    /// The verified, digest-pinned image.
    pub image: PinnedImage,
    /// Command (overrides the image's); empty keeps the image's.
    pub command: Vec<String>,
    /// Entrypoint override.
    pub entrypoint: Option<Vec<String>>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Networks to join (ignored when the hardening says `network none`).
    pub networks: Vec<NetworkAttachment>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// The tier's confinement, as flags.
    pub hardening: Hardening,
    /// The signal that asks it to stop (compose `stop_signal`; the image's when `None`).
    pub stop_signal: Option<String>,
    /// How long a stop waits before SIGKILL (compose `stop_grace_period`; the backend's
    /// default, 10 s, when `None`). Rounded up to whole seconds, as the CLIs take it.
    pub stop_timeout: Option<Duration>,
}

impl ContainerSpec {
    /// A spec with no command, env, labels, networks, mounts or ports.
    pub fn new(name: impl Into<String>, image: PinnedImage, hardening: Hardening) -> Self {
        ContainerSpec {
            name: name.into(),
            image,
            command: Vec::new(),
            entrypoint: None,
            env: BTreeMap::new(),
            workdir: None,
            labels: BTreeMap::new(),
            networks: Vec::new(),
            mounts: Vec::new(),
            ports: Vec::new(),
            hardening,
            stop_signal: None,
            stop_timeout: None,
        }
    }
}

/// A container's state as the backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Exited (see the exit code).
    Exited,
    /// Anything else the backend says.
    Unknown,
}

/// Health as *we* track it (podman without systemd never runs healthchecks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// No healthcheck tracked.
    None,
    /// Not yet known.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// What `inspect` reports about a container.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerInfo {
    /// Backend id.
    pub id: String,
    /// Name.
    pub name: String,
    /// State.
    pub status: ContainerStatus,
    /// Exit code (meaningful once exited).
    pub exit_code: Option<i32>,
    /// Health as we track it (the backend's own value, if any, is ignored).
    pub health: Health,
    /// Image id the container was created from.
    pub image_id: String,
    /// IP address per network.
    pub ips: BTreeMap<String, String>,
    /// DNS aliases per network (as the backend reports them; podman adds the short id).
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The isolation level it runs under.
    pub isolation: IsolationLevel,
    /// The signal that asks it to stop (the image's `STOPSIGNAL` or `--stop-signal`, as the
    /// backend reports it: a name or a number), when the backend says.
    pub stop_signal: Option<String>,
    /// How long a stop waits before SIGKILL, as created (`Config.StopTimeout`).
    pub stop_timeout: Option<Duration>,
    /// The host pid of its init while it runs, as the backend reports it (a pid in the
    /// backend's VM for the desktops and lima: never trusted without a check).
    pub pid: Option<u32>,
}

/// The result of `exec` (and of `run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i32,
    /// Standard output, untruncated.
    pub stdout: Vec<u8>,
    /// Standard error, untruncated.
    pub stderr: Vec<u8>,
}

/// A command to execute in a running container.
#[derive(Clone, Debug, Default)]
pub struct ExecSpec {
    /// argv.
    pub cmd: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// `uid[:gid]` or user name.
    pub user: Option<String>,
}

/// Options for `logs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Wait for the container to exit, then return everything it wrote.
    pub follow: bool,
}

/// A network to create.
#[derive(Clone, Debug, Default)]
pub struct NetworkSpec {
    /// Name.
    pub name: String,
    /// No route out (`--internal`).
    pub internal: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// What `network inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkInfo {
    /// Name.
    pub name: String,
    /// Backend id.
    pub id: String,
    /// Internal (no route out).
    pub internal: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A volume to create.
#[derive(Clone, Debug, Default)]
pub struct VolumeSpec {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// What `volume inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Host mount point, if the backend says.
    pub mountpoint: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}
