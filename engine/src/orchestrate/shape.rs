//! The runnable half of a service: how its containers are made once the policy has judged it
//! (the [`ServiceAsk`](crate::plan::ServiceAsk) half), and the project's networks and volumes.
//!
//! These are engine types, not compose types: the compose adapter fills them from a compose
//! `Project`, and a workload-graph node will fill the same, so orchestration knows nothing of
//! either file format.

use std::collections::BTreeMap;
use std::time::Duration;

use super::health::HealthSpec;

/// A project network a service joins, with its DNS aliases there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetworkUse {
    /// The network's key in the project (`frontend`), not its backend name.
    pub network: String,
    /// Extra DNS names on that network (the service name is always one).
    pub aliases: Vec<String>,
}

/// A mount of a project's named volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VolumeUse {
    /// The volume's key in the project (`pgdata`).
    pub volume: String,
    /// The path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A published port (`host_ip:published:target/protocol`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublishedPort {
    /// Host address; empty means all.
    pub host_ip: String,
    /// Host port.
    pub published: u16,
    /// Container port.
    pub target: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// How a service's containers are created and watched.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceShape {
    /// Command; empty keeps the image's.
    pub command: Vec<String>,
    /// Entrypoint override.
    pub entrypoint: Option<Vec<String>>,
    /// Environment, resolved.
    pub environment: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// `user`, when written (the tier's non-root user otherwise).
    pub user: Option<String>,
    /// The service's own labels (ours are added on top and cannot be overridden).
    pub labels: BTreeMap<String, String>,
    /// Project networks joined (ignored where the tier gives no network).
    pub networks: Vec<NetworkUse>,
    /// Named volumes mounted.
    pub volumes: Vec<VolumeUse>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// Our healthcheck, if the service has one.
    pub healthcheck: Option<HealthSpec>,
    /// `container_name` (only with one replica).
    pub container_name: Option<String>,
    /// How many containers (`scale`, `deploy.replicas`).
    pub replicas: u32,
    /// Time between the stop signal and SIGKILL on stop (`stop_grace_period`).
    pub stop_grace: Duration,
    /// The signal that asks it to stop (`stop_signal`; the image's when `None`).
    pub stop_signal: Option<String>,
}

impl Default for ServiceShape {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            entrypoint: None,
            environment: BTreeMap::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            networks: Vec::new(),
            volumes: Vec::new(),
            ports: Vec::new(),
            healthcheck: None,
            container_name: None,
            replicas: 1,
            stop_grace: Duration::from_secs(10),
            stop_signal: None,
        }
    }
}

/// A network the project declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkDecl {
    /// Its name at the backend (compose: `<project>_<key>` unless `name:` is set).
    pub name: String,
    /// `internal: true` (no route out). Forced for any network an `isolated` service joins.
    pub internal: bool,
    /// `external: true`: must exist already; never created, never removed.
    pub external: bool,
    /// Its own labels.
    pub labels: BTreeMap<String, String>,
}

/// A named volume the project declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeDecl {
    /// Its name at the backend (compose: `<project>_<key>` unless `name:` is set).
    pub name: String,
    /// `external: true`: must exist already; never created, never removed.
    pub external: bool,
    /// Its own labels.
    pub labels: BTreeMap<String, String>,
}

/// The project-level resources services refer to by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectResources {
    /// Networks by key.
    pub networks: BTreeMap<String, NetworkDecl>,
    /// Named volumes by key.
    pub volumes: BTreeMap<String, VolumeDecl>,
}
