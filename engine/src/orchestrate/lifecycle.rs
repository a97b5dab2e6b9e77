//! `ps`, `logs`, `exec`, `start`, `stop`, `restart`: the project as its labels describe it.
//! Start goes dependencies first, stop dependents first, like compose.

use std::time::Duration;

use perry_backends::{
    ContainerBackend, ContainerInfo, ContainerStatus, ExecOutput, ExecSpec, LogFollower,
    LogOptions, PortMapping,
};
use serde::Serialize;

use super::labels;
use super::orchestrator::{OrchestrateError, Orchestrator};
use super::project_state::{start_order, teardown_order};

/// One container being followed (attached `up`, `logs -f`).
pub struct Followed {
    /// Container name (`project-service-N`).
    pub container: String,
    /// Its service.
    pub service: String,
    /// Replica number (1-based), from its label.
    pub replica: u32,
    /// Backend id, to ask for its exit code once the follower ends.
    pub id: String,
    /// Its output, line by line.
    pub follower: LogFollower,
}

/// One container as `ps` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PsEntry {
    /// Container name.
    pub name: String,
    /// Its service.
    pub service: String,
    /// Backend state.
    pub state: ContainerStatus,
    /// Exit status, once exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Health as we last measured it (the backend runs no healthchecks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Its tier.
    pub tier: String,
    /// The pinned image it runs (`repo@sha256:…`).
    pub image: String,
    /// `container` or `sandboxed-kernel`.
    pub isolation: String,
}

impl<B: ContainerBackend> Orchestrator<'_, B> {
    /// Every container of the project (of `services`, when given), by service then replica.
    pub async fn ps(&self, services: &[String]) -> Result<Vec<PsEntry>, OrchestrateError> {
        let all = self.by_service().await?;
        let label = |c: &perry_backends::ContainerInfo, k: &str| {
            c.labels.get(k).cloned().unwrap_or_default()
        };
        Ok(self
            .select(&all, services)?
            .into_iter()
            .flat_map(|(service, containers)| {
                containers.iter().map(move |c| PsEntry {
                    name: c.name.clone(),
                    service: service.to_string(),
                    state: c.status,
                    exit_code: (c.status == ContainerStatus::Exited)
                        .then_some(c.exit_code)
                        .flatten(),
                    health: self.last_health(&c.name),
                    ports: c.ports.clone(),
                    tier: label(c, labels::TIER),
                    image: label(c, labels::IMAGE),
                    isolation: label(c, labels::ISOLATION),
                })
            })
            .collect())
    }

    /// Each container's logs (of `services`, when given), both streams, untruncated.
    pub async fn logs(
        &self,
        services: &[String],
        opts: LogOptions,
    ) -> Result<Vec<(String, ExecOutput)>, OrchestrateError> {
        let all = self.by_service().await?;
        let mut out = Vec::new();
        for (_, containers) in self.select(&all, services)? {
            for c in containers {
                let o = self
                    .backend
                    .logs(&c.id, opts)
                    .await
                    .map_err(OrchestrateError::backend(format!(
                        "reading the logs of {}",
                        c.name
                    )))?;
                out.push((c.name.clone(), o));
            }
        }
        Ok(out)
    }

    /// Follows every container of the project (of `services`, when given) from its last
    /// `tail` lines, all at once.
    pub async fn follow(
        &self,
        services: &[String],
        tail: Option<usize>,
    ) -> Result<Vec<Followed>, OrchestrateError> {
        let all = self.by_service().await?;
        let mut out = Vec::new();
        for (service, containers) in self.select(&all, services)? {
            for c in containers {
                let follower =
                    self.backend
                        .follow(&c.id, tail)
                        .await
                        .map_err(OrchestrateError::backend(format!(
                            "following the logs of {}",
                            c.name
                        )))?;
                out.push(Followed {
                    container: c.name.clone(),
                    service: service.to_string(),
                    replica: c
                        .labels
                        .get(labels::NUMBER)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                    id: c.id.clone(),
                    follower,
                });
            }
        }
        Ok(out)
    }

    /// A container's exit code once it has exited (after its follower ended).
    pub async fn exit_code(&self, id: &str) -> Result<i32, OrchestrateError> {
        self.backend
            .wait(id)
            .await
            .map_err(OrchestrateError::backend(format!("waiting for {id}")))
    }

    /// Runs `spec` in replica `index` (1-based) of `service`.
    pub async fn exec(
        &self,
        service: &str,
        index: u32,
        spec: &ExecSpec,
    ) -> Result<ExecOutput, OrchestrateError> {
        let all = self.by_service().await?;
        let wanted = [service.to_string()];
        let (_, containers) = self.select(&all, &wanted)?.remove(0);
        let c = containers
            .iter()
            .find(|c| c.labels.get(labels::NUMBER).map(String::as_str) == Some(&index.to_string()))
            .ok_or_else(|| {
                OrchestrateError::Resource(format!("service `{service}` has no replica {index}"))
            })?;
        if c.status != ContainerStatus::Running {
            return Err(OrchestrateError::Resource(format!(
                "container {} is not running; `compose start {service}` first",
                c.name
            )));
        }
        self.backend
            .exec(&c.id, spec)
            .await
            .map_err(OrchestrateError::backend(format!("exec in {}", c.name)))
    }

    /// Starts the stopped containers of `services` (all when empty), dependencies first.
    pub async fn start(&self, services: &[String]) -> Result<Vec<String>, OrchestrateError> {
        let all = self.by_service().await?;
        self.select(&all, services)?;
        let mut started = Vec::new();
        for level in start_order(&all) {
            for s in level
                .iter()
                .filter(|s| services.is_empty() || services.contains(s))
            {
                for c in all[s]
                    .iter()
                    .filter(|c| c.status != ContainerStatus::Running)
                {
                    self.backend
                        .start(&c.id)
                        .await
                        .map_err(OrchestrateError::backend(format!("starting {}", c.name)))?;
                    self.report(&c.name, Some(s), "started", None);
                    started.push(c.name.clone());
                }
            }
        }
        Ok(started)
    }

    /// Stops the running containers of `services` (all when empty), dependents first; each
    /// gets `timeout` before SIGKILL, or its own `stop_grace_period` when `None`.
    pub async fn stop(
        &self,
        services: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<String>, OrchestrateError> {
        let all = self.by_service().await?;
        self.select(&all, services)?;
        let mut stopped = Vec::new();
        for level in teardown_order(&all) {
            let running: Vec<(&String, &ContainerInfo)> = level
                .iter()
                .filter(|s| services.is_empty() || services.contains(s))
                .flat_map(|s| all[s].iter().map(move |c| (s, c)))
                .filter(|(_, c)| c.status == ContainerStatus::Running)
                .collect();
            let containers: Vec<ContainerInfo> =
                running.iter().map(|(_, c)| (*c).clone()).collect();
            self.backend.stop_many(&containers, timeout).await.map_err(
                OrchestrateError::backend(format!("stopping {}", level.join(", "))),
            )?;
            for (s, c) in running {
                self.report(&c.name, Some(s), "stopped", None);
                stopped.push(c.name.clone());
            }
        }
        Ok(stopped)
    }

    /// Stops then starts `services` (all when empty).
    pub async fn restart(
        &self,
        services: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<String>, OrchestrateError> {
        self.stop(services, timeout).await?;
        self.start(services).await
    }
}
