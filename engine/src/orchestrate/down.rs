//! `down`: the project's containers stopped and removed in reverse dependency order, then its
//! networks, then (with `-v`) its named volumes — all found by label, so it works without the
//! compose file; an unfinished `up` is rolled back first. Every removal is on the record before
//! it happens, and a listing by label afterwards says what, if anything, is left.

use std::time::Duration;

use perry_audit::{Action, Decision};
use perry_backends::{BackendError, ContainerBackend, ContainerInfo};
use serde::Serialize;

use super::labels;
use super::orchestrator::{OrchestrateError, Orchestrator};
use super::project_state::{teardown_order, ByService};
use super::rollback::RollbackReport;

/// How `down` behaves.
#[derive(Clone, Debug, Default)]
pub struct DownOptions {
    /// `-v`: remove the project's named volumes too (never external ones: they carry no
    /// project label).
    pub volumes: bool,
    /// `-t`: time between the stop signal and SIGKILL for every container; `None` gives
    /// each the `stop_grace_period` it was created with.
    pub timeout: Option<Duration>,
}

/// What `down` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DownReport {
    /// The rollback of an unfinished `up` done first, if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<RollbackReport>,
    /// Removed, in order (`container shop-web-1`, `network shop_default`).
    pub removed: Vec<String>,
    /// What a listing by the project label still found.
    pub leftovers: Vec<String>,
}

impl<B: ContainerBackend> Orchestrator<'_, B> {
    /// Takes the project down.
    pub async fn down(&self, opts: &DownOptions) -> Result<DownReport, OrchestrateError> {
        let mut report = DownReport {
            recovered: self.recover().await?,
            ..Default::default()
        };
        let all = self.by_service().await?;
        // The networks and volumes are listed while the containers go: labels do not change.
        let volume_list = async {
            if opts.volumes {
                self.backend
                    .volume_list(labels::PROJECT, &self.project)
                    .await
            } else {
                Ok(Vec::new())
            }
        };
        let (containers, (networks, volumes)) = futures_util::future::join(
            self.remove_containers(&all, opts.timeout),
            futures_util::future::join(
                self.backend.network_list(labels::PROJECT, &self.project),
                volume_list,
            ),
        )
        .await;
        report.removed.extend(containers?);
        let networks =
            networks.map_err(OrchestrateError::backend("listing the project's networks"))?;
        let volumes =
            volumes.map_err(OrchestrateError::backend("listing the project's volumes"))?;
        // Networks and volumes depend on nothing but the containers, now gone: all at once.
        let network_removals = networks.iter().map(|n| async move {
            self.remove_labelled("network", n, self.backend.network_remove(n))
                .await
                .map(|()| format!("network {n}"))
        });
        let volume_removals = volumes.iter().map(|v| async move {
            self.remove_labelled("volume", v, self.backend.volume_remove(v))
                .await
                .map(|()| format!("volume {v}"))
        });
        let (n, v) = futures_util::future::join(
            futures_util::future::try_join_all(network_removals),
            futures_util::future::try_join_all(volume_removals),
        )
        .await;
        report.removed.extend(n?);
        report.removed.extend(v?);
        report.leftovers = self
            .labelled(labels::PROJECT, &self.project, opts.volumes)
            .await?;
        let _ =
            std::fs::remove_dir_all(self.state_dir().join("compose-health").join(&self.project));
        Ok(report)
    }

    /// The project's containers stopped, dependents first (one level at a time, a level's
    /// containers together), then removed in one call: removal waits for nothing but the
    /// stops. Returns `container NAME` for each.
    async fn remove_containers(
        &self,
        all: &ByService,
        timeout: Option<Duration>,
    ) -> Result<Vec<String>, OrchestrateError> {
        let mut gone = Vec::new();
        for level in teardown_order(all) {
            let containers: Vec<ContainerInfo> =
                level.iter().flat_map(|s| all[s].iter().cloned()).collect();
            for c in &containers {
                let service = c.labels.get(labels::SERVICE);
                self.record(
                    Self::event(Action::Down, Decision::Allow)
                        .reason(format!("removing container {}", c.name))
                        .detail("container", c.name.as_str())
                        .detail("service", service.cloned().unwrap_or_default()),
                )?;
                self.report(&c.name, service.map(String::as_str), "stopping", None);
            }
            self.backend.stop_many(&containers, timeout).await.map_err(
                OrchestrateError::backend(format!("stopping {}", level.join(", "))),
            )?;
            gone.extend(containers.into_iter().map(|c| (c.id, c.name)));
        }
        let ids: Vec<String> = gone.iter().map(|(id, _)| id.clone()).collect();
        self.backend
            .remove_many(&ids)
            .await
            .map_err(OrchestrateError::backend(
                "removing the project's containers",
            ))?;
        Ok(gone
            .into_iter()
            .map(|(_, name)| {
                self.report(&name, None, "removed", None);
                format!("container {name}")
            })
            .collect())
    }

    async fn remove_labelled(
        &self,
        kind: &'static str,
        name: &str,
        removal: impl std::future::Future<Output = Result<(), BackendError>>,
    ) -> Result<(), OrchestrateError> {
        self.record(
            Self::event(Action::Down, Decision::Allow)
                .reason(format!("removing {kind} {name}"))
                .detail(kind, name),
        )?;
        match removal.await {
            Ok(()) | Err(BackendError::NotFound { .. }) => {
                self.report_as(kind, name, None, "removed", None);
                Ok(())
            }
            Err(e) => Err(OrchestrateError::Backend {
                what: format!("removing {kind} {name}"),
                source: e,
            }),
        }
    }

    /// Every container, network and (with `volumes`) volume labelled `key=value`, as
    /// `kind name` — what a rollback (by run) or a `down` (by project) proves is gone.
    pub(crate) async fn labelled(
        &self,
        key: &str,
        value: &str,
        volumes: bool,
    ) -> Result<Vec<String>, OrchestrateError> {
        let b = self.backend;
        let listing =
            || OrchestrateError::backend(format!("listing what is labelled {key}={value}"));
        // The three listings at once: each is a backend process of its own.
        let volume_list = async {
            if volumes {
                b.volume_list(key, value).await
            } else {
                Ok(Vec::new())
            }
        };
        let (containers, networks, vols) = futures_util::future::join3(
            b.list(key, value),
            b.network_list(key, value),
            volume_list,
        )
        .await;
        let mut left: Vec<String> = Vec::new();
        for (kind, names) in [
            ("container", containers.map_err(listing())?),
            ("network", networks.map_err(listing())?),
            ("volume", vols.map_err(listing())?),
        ] {
            left.extend(names.into_iter().map(|n| format!("{kind} {n}")));
        }
        Ok(left)
    }
}
