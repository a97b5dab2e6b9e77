//! From a planned service to the [`ContainerSpec`] of one of its replicas: the tier's
//! hardening, the project's networks and volumes by their backend names, and our labels.
//!
//! Pure once the hardening is computed, so what a service becomes is unit-tested without a
//! backend. The one place that decides a container's labels and config hash.

use std::collections::BTreeMap;

use perry_backends::{
    ContainerNetwork, ContainerSpec, Hardening, Mount, NetworkAttachment, PinnedImage, PortMapping,
};

use super::labels;
use super::shape::ProjectResources;
use crate::plan::PlannedService;

/// Everything about one replica that is decided before it is created.
#[derive(Clone, Debug)]
pub(crate) struct ReplicaPlan {
    /// Its container name.
    pub(crate) name: String,
    /// Its config hash (the `com.docker.compose.config-hash` label).
    pub(crate) config_hash: String,
    /// What the backend is given.
    pub(crate) spec: ContainerSpec,
}

/// The project-wide half of every replica's spec.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProjectRun<'a> {
    /// The project name.
    pub(crate) project: &'a str,
    /// The run creating the replicas.
    pub(crate) run_id: &'a str,
    /// The project's networks and volumes.
    pub(crate) resources: &'a ProjectResources,
}

/// The spec of replica `n` (1-based) of `service`, created by `at.run_id`.
///
/// The service's own labels cannot override ours. Networks a tier without network does not get
/// are dropped (the hardening says `--network none`); a tier limited to internal networks with
/// no network to join gets none at all, never the backend's default bridge.
pub(crate) fn replica_plan(
    at: ProjectRun<'_>,
    service: &str,
    planned: &PlannedService,
    depends_on: &[(String, crate::plan::Condition, bool)],
    n: u32,
    mut hardening: Hardening,
) -> ReplicaPlan {
    let (project, run_id, resources) = (at.project, at.run_id, at.resources);
    let shape = &planned.shape;
    let image = PinnedImage::from_verified(&planned.verification.image);
    let name = labels::container_name(project, service, n, shape.container_name.as_deref());
    if let Some(user) = &shape.user {
        hardening.user = Some(user.clone());
    }
    let networks: Vec<NetworkAttachment> = shape
        .networks
        .iter()
        .map(|u| NetworkAttachment {
            network: resources
                .networks
                .get(&u.network)
                .map(|d| d.name.clone())
                .unwrap_or_else(|| labels::resource_name(project, &u.network)),
            aliases: std::iter::once(service.to_string())
                .chain(u.aliases.iter().cloned())
                .collect(),
        })
        .collect();
    if networks.is_empty() && hardening.network == ContainerNetwork::InternalOnly {
        hardening.network = ContainerNetwork::None;
    }
    let mounts = shape
        .volumes
        .iter()
        .map(|v| Mount::Volume {
            name: resources
                .volumes
                .get(&v.volume)
                .map(|d| d.name.clone())
                .unwrap_or_else(|| labels::resource_name(project, &v.volume)),
            target: v.target.clone(),
            read_only: v.read_only,
        })
        .collect();
    let ports = shape
        .ports
        .iter()
        .map(|p| PortMapping {
            host_ip: p.host_ip.clone(),
            host_port: p.published,
            container_port: p.target,
            protocol: p.protocol.clone(),
        })
        .collect();
    let mut spec = ContainerSpec::new(name.clone(), image, hardening);
    spec.command = shape.command.clone();
    spec.entrypoint = shape.entrypoint.clone();
    spec.env = shape.environment.clone();
    spec.workdir = shape.working_dir.clone();
    if spec.hardening.network != ContainerNetwork::None {
        spec.networks = networks;
    }
    spec.mounts = mounts;
    spec.ports = ports;
    spec.stop_signal = shape.stop_signal.clone();
    spec.stop_timeout = Some(shape.stop_grace);
    // Everything that makes the container what it is, except the run that created it.
    let config_hash = labels::config_hash(&(
        spec.image.reference(),
        &spec.command,
        &spec.entrypoint,
        &spec.env,
        &spec.workdir,
        &spec.networks,
        &spec.mounts,
        &spec.ports,
        &spec.hardening,
        &shape.labels,
        &shape.healthcheck,
        (&spec.stop_signal, &spec.stop_timeout),
    ));
    let mut l: BTreeMap<String, String> = shape.labels.clone();
    l.retain(|k, _| !k.starts_with("com.docker.compose.") && !k.starts_with("io.perry-sandbox."));
    l.insert(labels::PROJECT.into(), project.into());
    l.insert(labels::SERVICE.into(), service.into());
    l.insert(labels::NUMBER.into(), n.to_string());
    l.insert(labels::CONFIG_HASH.into(), config_hash.clone());
    l.insert(labels::IMAGE.into(), spec.image.reference().to_string());
    l.insert(
        labels::DEPENDS_ON.into(),
        labels::encode_depends_on(depends_on),
    );
    l.insert(labels::RUN.into(), run_id.into());
    l.insert(labels::TIER.into(), planned.tier.to_string());
    l.insert(labels::ISOLATION.into(), planned.isolation.as_str().into());
    spec.labels = l;
    ReplicaPlan {
        name,
        config_hash,
        spec,
    }
}
