//! The [`Orchestrator`]: one project on one backend, with the executor's audit log and state
//! directory. `up`, `down`, rollback and the lifecycle commands are its methods, one operation
//! per file.

use std::path::PathBuf;

use perry_audit::{Action, Actor, Correlation, Decision, Event};
use perry_backends::{BackendError, ContainerBackend};
use perry_policies::Code;
use serde::Serialize;

use super::labels;
use crate::plan::JournalError;
use crate::Executor;

/// What an orchestration step is doing, for a progress display or `--json` events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The resource: a container, network or volume name, or the project.
    pub resource: String,
    /// The service it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// What happened: `creating`, `started`, `waiting`, `healthy`, `unchanged`, `removed`,
    /// `failed`, `rolling-back`, …
    pub status: &'static str,
    /// More, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `container`, `network`, `volume` or `image`.
    pub kind: &'static str,
}

/// Why an orchestration command failed. Whatever `up` created is rolled back before this is
/// returned (see [`super::UpFailed`]).
#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    /// A backend call failed.
    #[error("{what}: {source}")]
    Backend {
        /// What was being done (`creating container shop-web-1`).
        what: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A service did not reach what a dependent (or `--wait`) needs.
    #[error("service `{service}` {why}")]
    Service {
        /// The failing service.
        service: String,
        /// What happened (`is unhealthy: exit 1: …`, `exited with 3`).
        why: String,
        /// Whether a deadline was what ended the wait.
        timed_out: bool,
    },
    /// A project network, volume or container name cannot be used as declared.
    #[error("{0}")]
    Resource(String),
    /// A service's tier needs an isolation level the backend cannot give (`untrusted` without
    /// a sandboxed kernel). Found before anything is created.
    #[error("{0}")]
    Isolation(String),
    /// A service's tier profile or its container flags cannot be built.
    #[error("services.{service}: confinement: {reason}")]
    Confinement {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// `up` was interrupted (Ctrl-C, SIGTERM).
    #[error("interrupted")]
    Interrupted,
    /// The rollback journal cannot be written: nothing is created without it.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The audit log refused a record: nothing is done without one.
    #[error("audit log: {0}")]
    Audit(#[from] perry_audit::AuditError),
}

impl OrchestrateError {
    /// The failure's code in the one table.
    pub fn code(&self) -> Code {
        match self {
            OrchestrateError::Backend { source, .. } => source.code(),
            // A service that failed or timed out fails the `up` with exit 1, like a command.
            OrchestrateError::Service { .. } => Code::ServiceFailed,
            OrchestrateError::Resource(_) => Code::InvalidConfig,
            OrchestrateError::Isolation(_) => Code::IsolationUnavailable,
            OrchestrateError::Confinement { .. } => Code::Internal,
            OrchestrateError::Interrupted => Code::ServiceFailed,
            OrchestrateError::Journal(_) => Code::Internal,
            OrchestrateError::Audit(_) => Code::AuditUnavailable,
        }
    }

    pub(crate) fn backend(what: impl Into<String>) -> impl FnOnce(BackendError) -> Self {
        let what = what.into();
        move |source| OrchestrateError::Backend { what, source }
    }
}

/// One compose project (or workload graph) on one backend.
pub struct Orchestrator<'a, B> {
    pub(crate) executor: &'a Executor,
    pub(crate) backend: &'a B,
    pub(crate) project: String,
    pub(crate) actor: Actor,
    pub(crate) correlation: Correlation,
    progress: Box<dyn Fn(&Progress) + Send + Sync + 'a>,
}

impl<'a, B: ContainerBackend> Orchestrator<'a, B> {
    /// An orchestrator for `project` (a valid compose project name) on `backend`, recording
    /// through `executor`'s audit log as `actor`, all under `correlation`.
    pub fn new(
        executor: &'a Executor,
        backend: &'a B,
        project: &str,
        actor: Actor,
        correlation: Correlation,
    ) -> Self {
        Self {
            executor,
            backend,
            project: project.to_string(),
            actor,
            correlation,
            progress: Box::new(|_| {}),
        }
    }

    /// Reports each step to `f` (a progress display, `--json` events).
    pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'a) -> Self {
        self.progress = Box::new(f);
        self
    }

    /// The project name.
    pub fn project(&self) -> &str {
        &self.project
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.executor.config().sandbox.state_dir.clone()
    }

    pub(crate) fn report(
        &self,
        resource: &str,
        service: Option<&str>,
        status: &'static str,
        detail: Option<String>,
    ) {
        self.report_as("container", resource, service, status, detail);
    }

    /// [`Self::report`] for a resource that is not (necessarily) a container.
    pub(crate) fn report_as(
        &self,
        kind: &'static str,
        resource: &str,
        service: Option<&str>,
        status: &'static str,
        detail: Option<String>,
    ) {
        (self.progress)(&Progress {
            resource: resource.to_string(),
            service: service.map(str::to_string),
            status,
            detail,
            kind,
        });
    }

    /// Writes `ev` with the project, actor and correlation; nothing proceeds without it.
    pub(crate) fn record(&self, ev: Event) -> Result<(), OrchestrateError> {
        self.executor.audit().record(
            ev.actor(self.actor.clone())
                .correlation(&self.correlation)
                .detail("project", self.project.as_str()),
        )?;
        Ok(())
    }

    /// An event of `action` with `decision` (shorthand).
    pub(crate) fn event(action: Action, decision: Decision) -> Event {
        Event::new(action, decision)
    }

    /// Ids of every container of the project.
    pub(crate) async fn project_containers(&self) -> Result<Vec<String>, OrchestrateError> {
        self.backend
            .list(labels::PROJECT, &self.project)
            .await
            .map_err(OrchestrateError::backend(
                "listing the project's containers",
            ))
    }
}
