//! `up`: networks and volumes first, then every service at once on its own path through the
//! dependency graph — created, then started as soon as its dependencies are started and their
//! conditions met (our healthchecks, our deadlines) — and on any failure everything this `up`
//! created is rolled back before the error is returned.
//!
//! Every resource is journalled before it is created and labelled with the run id; a second
//! `up` with nothing changed changes nothing (the config-hash label); a changed service is
//! recreated, with its `restart: true` dependents restarted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use perry_audit::{Action, Decision, Event};
use perry_backends::{
    hardening_for, BackendError, ContainerBackend, ContainerInfo, ContainerNetwork,
    ContainerStatus, ExecSpec, Hardening, IsolationLevel, NetworkSpec, PinnedImage, VolumeSpec,
};
use perry_profiles::{Grants, Profile};
use serde::Serialize;
use tokio::sync::{watch, OnceCell, Semaphore};
use tokio::time::Instant;

use super::container::{replica_plan, ProjectRun, ReplicaPlan};
use super::health::{wait_healthy, HealthVerdict, Probe};
use super::labels;
use super::orchestrator::{OrchestrateError, Orchestrator};
use super::rollback::{kind_name, RollbackReport};
use super::shape::{NetworkDecl, ProjectResources, VolumeDecl};
use crate::plan::{Condition, Isolation, Journal, NodeId, Plan, ResourceKind};

/// How `up` behaves.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// `--wait`: return only once every service is running (healthy, where it has a
    /// healthcheck); otherwise return once every service is started.
    pub wait: bool,
    /// The deadline of every wait of this `up` (dependency conditions and `--wait`), counted
    /// from the start of the `up`.
    pub wait_timeout: Duration,
    /// `--remove-orphans`: remove the project's containers whose service is gone from the file.
    pub remove_orphans: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        Self {
            wait: false,
            wait_timeout: Duration::from_secs(120),
            remove_orphans: false,
        }
    }
}

/// What `up` did to one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceUp {
    /// The service.
    pub service: String,
    /// Its containers.
    pub containers: Vec<String>,
    /// `created`, `recreated`, `restarted`, `started` or `unchanged`.
    pub state: &'static str,
    /// Its health as we measured it, when it was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// A finished `up`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpReport {
    /// The run id (the `io.perry-sandbox.run` label of what it created).
    pub run_id: String,
    /// Each service, in start order.
    pub services: Vec<ServiceUp>,
    /// Optional dependencies that failed, orphans left in place.
    pub warnings: Vec<String>,
}

/// A failed `up`: the root cause, and what the rollback did (`None` when it could not run; the
/// next `up` or `down` finishes it from the journal).
#[derive(Debug)]
pub struct UpFailed {
    /// The failure that stopped the `up`.
    pub cause: OrchestrateError,
    /// The rollback of everything this `up` created.
    pub rollback: Option<RollbackReport>,
}

impl std::fmt::Display for UpFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.cause)?;
        match &self.rollback {
            Some(r) if r.is_clean() => write!(
                f,
                "; rolled back: {} resource(s) removed, nothing left",
                r.removed.len()
            ),
            Some(r) => write!(
                f,
                "; rollback incomplete (left: {}; failed: {}) — `compose down` retries it",
                r.leftovers.join(", "),
                r.failures.join("; ")
            ),
            None => write!(f, "; not rolled back yet — `compose down` finishes it"),
        }
    }
}

impl std::error::Error for UpFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

impl UpFailed {
    /// The root cause's code.
    pub fn code(&self) -> perry_policies::Code {
        self.cause.code()
    }
}

impl From<OrchestrateError> for UpFailed {
    fn from(cause: OrchestrateError) -> Self {
        UpFailed {
            cause,
            rollback: None,
        }
    }
}

/// What the create phase left for one replica, for the start phase.
enum Prepared {
    /// Its container was there with this configuration (running or not).
    Existing {
        /// It was running.
        running: bool,
    },
    /// Created by this run.
    Created,
    /// Its old container (another configuration or image) removed, a new one created.
    Recreated,
}

/// A condition's outcome, shared by every dependent that waits on it: `Err((why, timed_out))`.
type Met = Result<(), (String, bool)>;

/// What one `up` knows while it runs.
struct Run<'p> {
    plan: &'p Plan,
    resources: &'p ProjectResources,
    run_id: String,
    deadline: Instant,
    journal: Mutex<Journal>,
    hardening: BTreeMap<NodeId, Hardening>,
    healthy: HashMap<NodeId, OnceCell<Met>>,
    completed: HashMap<NodeId, OnceCell<Met>>,
    /// Each service's start, told to its dependents the moment it happens: what `up` did to
    /// it (`created`, `restarted`, `unchanged`, …). A service that failed never tells; its
    /// own failure ends the `up`.
    started: HashMap<NodeId, watch::Sender<Option<&'static str>>>,
    /// Container creates run this many at a time, in plan order (the semaphore is fair):
    /// each is a CPU-bound backend process, and ten at once on two cores made the first
    /// level's create — the one the whole `up` waits on — as slow as the last.
    creates: Semaphore,
    warnings: Mutex<Vec<String>>,
    /// The project's containers of planned services, by name, listed once before any create
    /// (one listing instead of an inspect per replica).
    existing: Mutex<BTreeMap<String, ContainerInfo>>,
}

impl Run<'_> {
    fn intend(&self, kind: ResourceKind, name: &str) -> Result<(), OrchestrateError> {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        Ok(j.intend(kind, name)?)
    }

    fn warn(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }
}

impl<B: ContainerBackend> Orchestrator<'_, B> {
    /// Brings `plan` up with `resources`. Any failure — a backend error, a dependency that is
    /// not met, a deadline — rolls back everything this `up` created, then returns the cause.
    pub async fn up(
        &self,
        plan: &Plan,
        resources: &ProjectResources,
        opts: &UpOptions,
    ) -> Result<UpReport, UpFailed> {
        if let Some(r) = self.recover().await? {
            if !r.is_clean() {
                return Err(OrchestrateError::Resource(format!(
                    "an earlier up (run {}) could not be rolled back completely (left: {}); run `compose down`",
                    r.run_id,
                    r.leftovers.join(", ")
                ))
                .into());
            }
        }
        let hardening = self.harden(plan).await?;
        let run_id = self.correlation.as_str().to_string();
        let journal = Journal::begin(&self.state_dir(), &self.project, &run_id)
            .map_err(OrchestrateError::from)?;
        let run = Run {
            plan,
            resources,
            run_id: run_id.clone(),
            deadline: Instant::now() + opts.wait_timeout,
            journal: Mutex::new(journal),
            hardening,
            healthy: plan
                .graph
                .nodes()
                .map(|(id, ..)| (id, OnceCell::new()))
                .collect(),
            completed: plan
                .graph
                .nodes()
                .map(|(id, ..)| (id, OnceCell::new()))
                .collect(),
            started: plan
                .graph
                .nodes()
                .map(|(id, ..)| (id, watch::Sender::new(None)))
                .collect(),
            warnings: Mutex::new(Vec::new()),
            existing: Mutex::new(BTreeMap::new()),
            creates: Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            ),
        };
        let result = self.bring_up(&run, opts).await;
        let Run {
            journal, warnings, ..
        } = run;
        let journal = journal.into_inner().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(services) => {
                let report = UpReport {
                    run_id,
                    services,
                    warnings: warnings.into_inner().unwrap_or_else(|e| e.into_inner()),
                };
                self.record(
                    Self::event(Action::Up, Decision::Allow)
                        .reason(format!("{} service(s) up", report.services.len()))
                        .detail(
                            "services",
                            serde_json::to_value(&report.services).unwrap_or_default(),
                        ),
                )?;
                journal.finish().map_err(OrchestrateError::from)?;
                Ok(report)
            }
            Err(cause) => {
                self.report(&self.project, None, "rolling-back", Some(cause.to_string()));
                let rollback = self.roll_back(journal).await.ok();
                let failed = UpFailed { cause, rollback };
                self.record(
                    Self::event(Action::Up, Decision::Deny)
                        .reason(failed.to_string())
                        .detail("code", failed.code().as_str()),
                )?;
                Err(failed)
            }
        }
    }

    /// Each service's container flags, and the backend's isolation checked against every
    /// tier's — before anything exists.
    async fn harden(&self, plan: &Plan) -> Result<BTreeMap<NodeId, Hardening>, OrchestrateError> {
        let needs_sandbox: Vec<&str> = plan
            .graph
            .nodes()
            .filter(|(_, _, s)| s.isolation == Isolation::SandboxedKernel)
            .map(|(_, name, _)| name)
            .collect();
        if !needs_sandbox.is_empty() {
            let a = self.backend.availability().await;
            if a.isolation == IsolationLevel::Container {
                return Err(OrchestrateError::Isolation(format!(
                    "service(s) {} run at tier `untrusted`, which needs a sandboxed kernel (gVisor runsc); backend {} offers only containers on the host kernel",
                    needs_sandbox.join(", "),
                    self.backend.name()
                )));
            }
        }
        let config = self.executor.config();
        let mut out = BTreeMap::new();
        for (id, name, s) in plan.graph.nodes() {
            let confinement = |reason: String| OrchestrateError::Confinement {
                service: name.to_string(),
                reason,
            };
            let profile = Profile::for_tier(s.tier, config.tiers.get(&s.tier), &Grants::default())
                .map_err(|e| confinement(e.to_string()))?;
            let mut h = hardening_for(&profile, &self.state_dir())
                .map_err(|e| confinement(e.to_string()))?;
            // Tighten only: a limit past our own hard limit cannot be set by the runtime.
            if let Some(hard) = crate::host::nofile_hard_limit() {
                for (name, limit) in &mut h.ulimits {
                    if name == "nofile" {
                        *limit = (*limit).min(hard);
                    }
                }
            }
            out.insert(id, h);
        }
        Ok(out)
    }

    async fn bring_up(
        &self,
        run: &Run<'_>,
        opts: &UpOptions,
    ) -> Result<Vec<ServiceUp>, OrchestrateError> {
        // Images, networks, volumes and the project's containers depend on none of each
        // other: all at once, each a backend process of its own.
        futures_util::future::try_join4(
            self.pull_images(run),
            self.networks_up(run),
            self.volumes_up(run),
            self.orphans(run, opts.remove_orphans),
        )
        .await?;
        // Every service at once, each on its own path through the graph: created, then
        // started the moment its own dependencies are started and their conditions met —
        // not when a whole level is — then its health measured from its start on, when
        // anyone will wait for it. The first failure ends them all (and is the root cause:
        // a dependent of a failed service waits on, it does not fail in its place).
        let all: Vec<NodeId> = run.plan.levels.iter().flatten().copied().collect();
        let ups = futures_util::future::try_join_all(
            all.iter().map(|&id| self.service_up(run, id, opts.wait)),
        )
        .await?;
        let mut done: BTreeMap<NodeId, ServiceUp> = all.into_iter().zip(ups).collect();
        if opts.wait {
            let waited = futures_util::future::try_join_all(
                run.plan
                    .levels
                    .iter()
                    .flatten()
                    .map(|&id| self.wait_ready(run, id)),
            )
            .await?;
            for (id, health) in run.plan.levels.iter().flatten().zip(waited) {
                if let Some(s) = done.get_mut(id) {
                    s.health = health;
                }
            }
        }
        Ok(run
            .plan
            .levels
            .iter()
            .flatten()
            .filter_map(|id| done.remove(id))
            .collect())
    }

    /// Every planned image present in the backend (pulled by digest where it is not), the
    /// images at once.
    async fn pull_images(&self, run: &Run<'_>) -> Result<(), OrchestrateError> {
        let mut seen = BTreeSet::new();
        let mut images = Vec::new();
        for (_, name, s) in run.plan.graph.nodes() {
            let image = PinnedImage::from_verified(&s.verification.image);
            if seen.insert(image.reference().to_string()) {
                images.push((name, image));
            }
        }
        futures_util::future::try_join_all(images.into_iter().map(|(name, image)| async move {
            let what = format!("pulling {} for service {name}", image.reference());
            let held = self.backend.image_exists(&image).await;
            if !held.map_err(OrchestrateError::backend(what.clone()))? {
                self.report_as("image", image.reference(), Some(name), "pulling", None);
                self.backend
                    .pull(&image)
                    .await
                    .map_err(OrchestrateError::backend(what))?;
            }
            Ok::<(), OrchestrateError>(())
        }))
        .await
        .map(drop)
    }

    /// The project networks services join, created (journalled, labelled) or reused when they
    /// are this project's; a network any confined service joins is `internal`.
    async fn networks_up(&self, run: &Run<'_>) -> Result<(), OrchestrateError> {
        let mut wanted: BTreeMap<&str, bool> = BTreeMap::new();
        for (id, _, s) in run.plan.graph.nodes() {
            let h = &run.hardening[&id];
            if h.network == ContainerNetwork::None {
                continue;
            }
            for u in &s.shape.networks {
                let internal = wanted.entry(u.network.as_str()).or_default();
                *internal |= h.network == ContainerNetwork::InternalOnly;
            }
        }
        futures_util::future::try_join_all(
            wanted
                .into_iter()
                .map(|(key, forced_internal)| self.network_up(run, key, forced_internal)),
        )
        .await
        .map(drop)
    }

    /// One project network: checked when it exists, else created.
    async fn network_up(
        &self,
        run: &Run<'_>,
        key: &str,
        forced_internal: bool,
    ) -> Result<(), OrchestrateError> {
        let decl = run
            .resources
            .networks
            .get(key)
            .cloned()
            .unwrap_or(NetworkDecl {
                name: labels::resource_name(&self.project, key),
                ..Default::default()
            });
        let internal = decl.internal || forced_internal;
        let existing = self.backend.network_inspect(&decl.name).await;
        match existing {
            Ok(info) if decl.external => {
                if internal && !info.internal {
                    return Err(OrchestrateError::Resource(format!(
                        "networks.{key}: external network `{}` has a route out, and a confined service joins it; make it internal or drop the service from it",
                        decl.name
                    )));
                }
            }
            Ok(info) if info.labels.get(labels::PROJECT) == Some(&self.project) => {
                if internal && !info.internal {
                    return Err(OrchestrateError::Resource(format!(
                        "networks.{key}: `{}` exists with a route out but must now be internal; run `compose down` first",
                        decl.name
                    )));
                }
                self.report_as("network", &decl.name, None, "unchanged", None);
            }
            Ok(_) => {
                return Err(OrchestrateError::Resource(format!(
                    "networks.{key}: a network named `{}` already exists and is not this project's; declare it `external: true` or rename it",
                    decl.name
                )))
            }
            Err(BackendError::NotFound { .. }) if decl.external => {
                return Err(OrchestrateError::Resource(format!(
                    "networks.{key}: external network `{}` does not exist; create it first",
                    decl.name
                )))
            }
            Err(BackendError::NotFound { .. }) => {
                let spec = NetworkSpec {
                    name: decl.name.clone(),
                    internal,
                    labels: labels::resource_labels(
                        &self.project,
                        labels::NETWORK,
                        key,
                        &run.run_id,
                        &decl.labels,
                    ),
                };
                let event = Self::event(Action::Create, Decision::Allow)
                    .reason(format!("network {}", decl.name))
                    .detail("network", decl.name.as_str())
                    .detail("internal", internal);
                let create = self.backend.network_create(&spec);
                self.create_resource(run, ResourceKind::Network, &decl.name, event, create)
                    .await?;
            }
            Err(e) => {
                return Err(OrchestrateError::Backend {
                    what: format!("inspecting network {}", decl.name),
                    source: e,
                })
            }
        }
        Ok(())
    }

    /// A network or volume this run creates: journalled, on the record and reported before
    /// the backend is asked to create it, reported after.
    async fn create_resource(
        &self,
        run: &Run<'_>,
        kind: ResourceKind,
        name: &str,
        event: Event,
        create: impl std::future::Future<Output = Result<String, BackendError>>,
    ) -> Result<(), OrchestrateError> {
        let word = kind_name(kind);
        run.intend(kind, name)?;
        self.record(event)?;
        self.report_as(word, name, None, "creating", None);
        create
            .await
            .map_err(OrchestrateError::backend(format!("creating {word} {name}")))?;
        self.report_as(word, name, None, "created", None);
        Ok(())
    }

    /// The named volumes services mount, created (journalled, labelled) or reused.
    async fn volumes_up(&self, run: &Run<'_>) -> Result<(), OrchestrateError> {
        let wanted: BTreeSet<&str> = run
            .plan
            .graph
            .nodes()
            .flat_map(|(_, _, s)| s.shape.volumes.iter().map(|v| v.volume.as_str()))
            .collect();
        futures_util::future::try_join_all(wanted.into_iter().map(|key| self.volume_up(run, key)))
            .await
            .map(drop)
    }

    /// One named volume: checked when it exists, else created.
    async fn volume_up(&self, run: &Run<'_>, key: &str) -> Result<(), OrchestrateError> {
        let decl = run
            .resources
            .volumes
            .get(key)
            .cloned()
            .unwrap_or(VolumeDecl {
                name: labels::resource_name(&self.project, key),
                ..Default::default()
            });
        match self.backend.volume_inspect(&decl.name).await {
            Ok(_) if decl.external => {}
            Ok(info) if info.labels.get(labels::PROJECT) == Some(&self.project) => {
                self.report_as("volume", &decl.name, None, "unchanged", None);
            }
            Ok(_) => {
                return Err(OrchestrateError::Resource(format!(
                    "volumes.{key}: a volume named `{}` already exists and is not this project's; declare it `external: true` or rename it",
                    decl.name
                )))
            }
            Err(BackendError::NotFound { .. }) if decl.external => {
                return Err(OrchestrateError::Resource(format!(
                    "volumes.{key}: external volume `{}` does not exist; create it first",
                    decl.name
                )))
            }
            Err(BackendError::NotFound { .. }) => {
                let spec = VolumeSpec {
                    name: decl.name.clone(),
                    labels: labels::resource_labels(
                        &self.project,
                        labels::VOLUME,
                        key,
                        &run.run_id,
                        &decl.labels,
                    ),
                };
                let event = Self::event(Action::Create, Decision::Allow)
                    .reason(format!("volume {}", decl.name))
                    .detail("volume", decl.name.as_str());
                let create = self.backend.volume_create(&spec);
                self.create_resource(run, ResourceKind::Volume, &decl.name, event, create)
                    .await?;
            }
            Err(e) => {
                return Err(OrchestrateError::Backend {
                    what: format!("inspecting volume {}", decl.name),
                    source: e,
                })
            }
        }
        Ok(())
    }

    /// The project's containers whose service is no longer planned: removed with
    /// `--remove-orphans`, else a warning.
    async fn orphans(&self, run: &Run<'_>, remove: bool) -> Result<(), OrchestrateError> {
        for id in self.project_containers().await? {
            let info = self
                .backend
                .inspect(&id)
                .await
                .map_err(OrchestrateError::backend(format!(
                    "inspecting container {id}"
                )))?;
            let service = info
                .labels
                .get(labels::SERVICE)
                .cloned()
                .unwrap_or_default();
            if run.plan.graph.id(&service).is_some() {
                let mut existing = run.existing.lock().unwrap_or_else(|e| e.into_inner());
                existing.insert(info.name.clone(), info);
                continue;
            }
            if remove {
                self.record(
                    Self::event(Action::Down, Decision::Allow)
                        .reason(format!(
                            "orphan container {} (service `{service}` is gone)",
                            info.name
                        ))
                        .detail("container", info.name.as_str()),
                )?;
                self.backend
                    .remove(&id, true)
                    .await
                    .map_err(OrchestrateError::backend(format!(
                        "removing orphan {}",
                        info.name
                    )))?;
                self.report(&info.name, Some(&service), "removed", Some("orphan".into()));
            } else {
                run.warn(format!(
                    "container {} belongs to service `{service}`, which is not in the file (use --remove-orphans)",
                    info.name
                ));
            }
        }
        Ok(())
    }

    /// The create phase of one service: each replica's container created, or recreated when
    /// its configuration changed, or found as it is.
    async fn prepare_service(
        &self,
        run: &Run<'_>,
        id: NodeId,
    ) -> Result<Vec<(ReplicaPlan, Prepared)>, OrchestrateError> {
        let graph = &run.plan.graph;
        let name = graph.name(id);
        let planned = graph.node(id);
        let deps: Vec<(String, Condition, bool)> = graph
            .dependencies(id)
            .map(|e| (graph.name(e.dependency).to_string(), e.condition, e.restart))
            .collect();
        let mut out = Vec::new();
        for n in 1..=planned.shape.replicas {
            let at = ProjectRun {
                project: &self.project,
                run_id: &run.run_id,
                resources: run.resources,
            };
            let replica = replica_plan(at, name, planned, &deps, n, run.hardening[&id].clone());
            let prepared = self.prepare_replica(run, name, &replica).await?;
            out.push((replica, prepared));
        }
        Ok(out)
    }

    /// One service's whole `up`: created (or found), started once its dependencies are,
    /// told to its dependents, and its health measured from then on when a dependent waits
    /// for it or `wait` (`--wait`) will.
    async fn service_up(
        &self,
        run: &Run<'_>,
        id: NodeId,
        wait: bool,
    ) -> Result<ServiceUp, OrchestrateError> {
        let replicas = self.prepare_service(run, id).await?;
        let up = self.start_service(run, id, replicas).await?;
        run.started[&id].send_replace(Some(up.state));
        let graph = &run.plan.graph;
        let watched = graph.node(id).shape.healthcheck.is_some()
            && (wait
                || graph
                    .dependents(id)
                    .any(|e| e.condition == Condition::Healthy));
        if watched {
            // The verdict is kept for whoever waits on it; this `up` fails (or warns) there.
            let _ = self.healthy(run, id).await;
        }
        Ok(up)
    }

    /// What `up` did to service `id`, once it has started it; pending for ever when the
    /// service failed (its own failure ends the `up`).
    async fn started(&self, run: &Run<'_>, id: NodeId) -> &'static str {
        let mut seen = run.started[&id].subscribe();
        // An error would be the sender gone, which lives as long as the run.
        let state = seen.wait_for(Option::is_some).await.ok().and_then(|s| *s);
        match state {
            Some(state) => state,
            None => std::future::pending().await,
        }
    }

    /// The start phase of one service: its dependencies started and their conditions met,
    /// then each replica started, restarted or left running.
    async fn start_service(
        &self,
        run: &Run<'_>,
        id: NodeId,
        replicas: Vec<(ReplicaPlan, Prepared)>,
    ) -> Result<ServiceUp, OrchestrateError> {
        let graph = &run.plan.graph;
        let name = graph.name(id);
        let deps: Vec<_> = graph.dependencies(id).collect();
        // Every dependency and condition is awaited at once: a service that needs eight
        // healthy ones waits for the slowest, not for the sum; the first required one that
        // fails ends the wait. `restart: true` restarts it when this `up` (re)created or
        // restarted the dependency.
        let conditions = deps.iter().map(|e| async move {
            let dep = graph.name(e.dependency);
            let dep_state = self.started(run, e.dependency).await;
            let restart = e.restart && matches!(dep_state, "created" | "recreated" | "restarted");
            self.report(
                name,
                Some(name),
                "waiting",
                Some(format!("{dep}: {}", e.condition)),
            );
            let met = match e.condition {
                Condition::Started => Ok(()),
                Condition::Healthy => self.healthy(run, e.dependency).await,
                Condition::CompletedSuccessfully => self.completed(run, e.dependency).await,
            };
            match met {
                Ok(()) => Ok(restart),
                Err((why, timed_out)) if e.required => Err(OrchestrateError::Service {
                    service: dep.to_string(),
                    why: format!("{why} (`{name}` waits for {})", e.condition),
                    timed_out,
                }),
                Err((why, _)) => {
                    run.warn(format!(
                        "{name}: optional dependency `{dep}` {why}; starting anyway"
                    ));
                    Ok(restart)
                }
            }
        });
        let restart = futures_util::future::try_join_all(conditions)
            .await?
            .into_iter()
            .any(|r| r);
        let mut containers = Vec::new();
        let mut state = "unchanged";
        for (replica, prepared) in replicas {
            let s = self
                .start_replica(name, &replica, prepared, restart)
                .await?;
            if s != "unchanged" {
                state = s;
            }
            containers.push(replica.name);
        }
        Ok(ServiceUp {
            service: name.to_string(),
            containers,
            state,
            health: None,
        })
    }

    async fn prepare_replica(
        &self,
        run: &Run<'_>,
        service: &str,
        replica: &ReplicaPlan,
    ) -> Result<Prepared, OrchestrateError> {
        let name = replica.name.as_str();
        let known = run
            .existing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        // Not among the project's containers: create it. A container of that name outside the
        // project makes the create fail (name in use); the journalled name is then not this
        // run's, so the rollback leaves it alone.
        let Some(info) = known else {
            self.create(run, service, replica).await?;
            return Ok(Prepared::Created);
        };
        if info.labels.get(labels::PROJECT) != Some(&self.project) {
            return Err(OrchestrateError::Resource(format!(
                "services.{service}: a container named `{name}` exists and is not this project's"
            )));
        }
        if info.labels.get(labels::CONFIG_HASH) == Some(&replica.config_hash) {
            return Ok(Prepared::Existing {
                running: info.status == ContainerStatus::Running,
            });
        }
        // Changed: the old container goes (as compose does), the new one is this run's.
        self.record(
            Self::event(Action::Create, Decision::Allow)
                .reason(format!(
                    "recreating container {name}: its configuration or image changed"
                ))
                .detail("service", service)
                .detail("container", name),
        )?;
        self.backend
            .remove(name, true)
            .await
            .map_err(OrchestrateError::backend(format!(
                "removing changed container {name}"
            )))?;
        self.create(run, service, replica).await?;
        Ok(Prepared::Recreated)
    }

    async fn start_replica(
        &self,
        service: &str,
        replica: &ReplicaPlan,
        prepared: Prepared,
        restart: bool,
    ) -> Result<&'static str, OrchestrateError> {
        let b = self.backend;
        let name = replica.name.as_str();
        let what = |verb: &str| format!("{verb} container {name}");
        let state = match prepared {
            Prepared::Existing { running: true } if !restart => {
                self.report(name, Some(service), "unchanged", None);
                return Ok("unchanged");
            }
            Prepared::Existing { running: true } => {
                b.stop(
                    name,
                    replica.spec.stop_timeout.unwrap_or(Duration::from_secs(10)),
                )
                .await
                .map_err(OrchestrateError::backend(what("restarting")))?;
                "restarted"
            }
            Prepared::Existing { running: false } => "started",
            Prepared::Created => "created",
            Prepared::Recreated => "recreated",
        };
        b.start(name)
            .await
            .map_err(OrchestrateError::backend(what("starting")))?;
        self.report(name, Some(service), "started", None);
        Ok(state)
    }

    async fn create(
        &self,
        run: &Run<'_>,
        service: &str,
        replica: &ReplicaPlan,
    ) -> Result<(), OrchestrateError> {
        let name = replica.name.as_str();
        let spec = &replica.spec;
        run.intend(ResourceKind::Container, name)?;
        self.record(
            Self::event(Action::Create, Decision::Allow)
                .reason(format!("container {name} of service {service}"))
                .image(spec.image.reference())
                .digest(spec.image.digest())
                .tier(spec.hardening.tier.to_string())
                .detail("service", service)
                .detail("container", name)
                .detail("isolation", spec.hardening.isolation.name())
                .detail("config_hash", replica.config_hash.as_str()),
        )?;
        self.report(name, Some(service), "creating", None);
        let turn = run.creates.acquire().await;
        self.backend
            .create(spec)
            .await
            .map_err(OrchestrateError::backend(format!(
                "creating container {name}"
            )))?;
        drop(turn);
        self.report(name, Some(service), "created", None);
        Ok(())
    }

    /// `service_healthy` for `id`: measured once per `up`, shared by all who wait on it.
    async fn healthy(&self, run: &Run<'_>, id: NodeId) -> Met {
        run.healthy[&id]
            .get_or_init(|| self.measure_health(run, id))
            .await
            .clone()
    }

    async fn measure_health(&self, run: &Run<'_>, id: NodeId) -> Met {
        let name = run.plan.graph.name(id);
        let planned = run.plan.graph.node(id);
        let Some(spec) = planned.shape.healthcheck.clone() else {
            return self.health_verdict(name, name, &HealthVerdict::NoHealthcheck);
        };
        for n in 1..=planned.shape.replicas {
            let container = labels::container_name(
                &self.project,
                name,
                n,
                planned.shape.container_name.as_deref(),
            );
            self.report(
                &container,
                Some(name),
                "waiting",
                Some("healthcheck".into()),
            );
            let verdict = wait_healthy(&spec, run.deadline, |argv, _| {
                self.probe(container.clone(), argv)
            })
            .await;
            self.health_verdict(name, &container, &verdict)?;
        }
        Ok(())
    }

    async fn probe(&self, container: String, argv: Vec<String>) -> Probe {
        let exec = ExecSpec {
            cmd: argv,
            ..Default::default()
        };
        match self.backend.exec(&container, &exec).await {
            Ok(o) if o.exit_code == 125 || o.exit_code == 126 || o.exit_code == 127 => {
                match self.backend.inspect(&container).await {
                    Ok(i) if i.status != ContainerStatus::Running => Probe::Exited {
                        exit_code: i.exit_code,
                    },
                    _ => Probe::Ran {
                        exit_code: o.exit_code,
                        output: String::from_utf8_lossy(&[o.stdout, o.stderr].concat())
                            .into_owned(),
                    },
                }
            }
            Ok(o) => Probe::Ran {
                exit_code: o.exit_code,
                output: String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).into_owned(),
            },
            Err(e) => match self.backend.inspect(&container).await {
                Ok(i) if i.status != ContainerStatus::Running => Probe::Exited {
                    exit_code: i.exit_code,
                },
                _ => Probe::Failed(e.to_string()),
            },
        }
    }

    /// Records a health verdict (allow for healthy, deny otherwise) and turns it into [`Met`].
    fn health_verdict(&self, service: &str, container: &str, v: &HealthVerdict) -> Met {
        let (met, words): (Met, String) = match v {
            HealthVerdict::Healthy { probes } => {
                (Ok(()), format!("healthy after {probes} probe(s)"))
            }
            HealthVerdict::Unhealthy { probes, last } => {
                let w = format!("is unhealthy after {probes} probe(s): {last}");
                (Err((w.clone(), false)), w)
            }
            HealthVerdict::Exited { exit_code } => {
                let w = format!(
                    "exited (status {}) before it became healthy",
                    exit_code.map_or("unknown".into(), |c| c.to_string())
                );
                (Err((w.clone(), false)), w)
            }
            HealthVerdict::NoHealthcheck => {
                let w = "has no healthcheck, so `service_healthy` can never be met".to_string();
                (Err((w.clone(), false)), w)
            }
            HealthVerdict::DeadlineExceeded { probes, last } => {
                let w = format!(
                    "did not become healthy before the deadline ({probes} probe(s){})",
                    last.as_ref()
                        .map(|l| format!(", last: {l}"))
                        .unwrap_or_default()
                );
                (Err((w.clone(), true)), w)
            }
        };
        let decision = if met.is_ok() {
            Decision::Allow
        } else {
            Decision::Deny
        };
        if let Err(e) = self.record(
            Self::event(Action::Health, decision)
                .reason(format!("{container} {words}"))
                .detail("service", service)
                .detail("container", container),
        ) {
            return Err((format!("health verdict not recorded: {e}"), false));
        }
        self.remember_health(container, if met.is_ok() { "healthy" } else { "unhealthy" });
        self.report(
            container,
            Some(service),
            if met.is_ok() { "healthy" } else { "unhealthy" },
            Some(words),
        );
        met
    }

    /// `service_completed_successfully` for `id`: every replica exited 0 before the deadline.
    async fn completed(&self, run: &Run<'_>, id: NodeId) -> Met {
        run.completed[&id]
            .get_or_init(|| async {
                let name = run.plan.graph.name(id);
                let planned = run.plan.graph.node(id);
                for n in 1..=planned.shape.replicas {
                    let c = labels::container_name(
                        &self.project,
                        name,
                        n,
                        planned.shape.container_name.as_deref(),
                    );
                    match tokio::time::timeout_at(run.deadline, self.backend.wait(&c)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(code)) => return Err((format!("exited with status {code}"), false)),
                        Ok(Err(e)) => return Err((format!("could not be waited for: {e}"), false)),
                        Err(_) => {
                            return Err(("did not complete before the deadline".into(), true))
                        }
                    }
                }
                Ok(())
            })
            .await
            .clone()
    }

    /// `--wait` for one service: healthy where it has a healthcheck, else running (or, for a
    /// one-shot that something waits on to complete, exited 0).
    async fn wait_ready(
        &self,
        run: &Run<'_>,
        id: NodeId,
    ) -> Result<Option<String>, OrchestrateError> {
        let name = run.plan.graph.name(id);
        let planned = run.plan.graph.node(id);
        let fail = |(why, timed_out): (String, bool)| OrchestrateError::Service {
            service: name.to_string(),
            why,
            timed_out,
        };
        if planned.shape.healthcheck.is_some() {
            self.healthy(run, id).await.map_err(fail)?;
            return Ok(Some("healthy".into()));
        }
        let one_shot = run
            .plan
            .graph
            .dependents(id)
            .any(|e| e.condition == Condition::CompletedSuccessfully);
        if one_shot {
            self.completed(run, id).await.map_err(fail)?;
            return Ok(None);
        }
        for n in 1..=planned.shape.replicas {
            let c = labels::container_name(
                &self.project,
                name,
                n,
                planned.shape.container_name.as_deref(),
            );
            let info = self
                .backend
                .inspect(&c)
                .await
                .map_err(OrchestrateError::backend(format!(
                    "inspecting container {c}"
                )))?;
            if info.status != ContainerStatus::Running {
                return Err(fail((
                    format!(
                        "is not running (exited with status {})",
                        info.exit_code.map_or("unknown".into(), |c| c.to_string())
                    ),
                    false,
                )));
            }
        }
        Ok(None)
    }
}
