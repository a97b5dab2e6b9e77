//! Rollback: undoing, in reverse creation order, everything one `up` created — and proving it,
//! by listing the backend by the run's label, before the journal is let go.
//!
//! Only what carries this run's `io.perry-sandbox.run` label is removed: a name in the journal
//! whose resource has another run id (or none) existed before this `up` — its create failed on
//! the name — and is left alone. External networks and volumes are never journalled.

use perry_audit::{Action, Decision};
use perry_backends::{BackendError, ContainerBackend};
use serde::Serialize;

use super::labels;
use super::orchestrator::{OrchestrateError, Orchestrator};
use crate::plan::{Journal, Resource, ResourceKind};

/// What a rollback did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    /// The run rolled back.
    pub run_id: String,
    /// Removed, in the order removed (`container shop-web-1`).
    pub removed: Vec<String>,
    /// Journalled names left alone because they were not this run's.
    pub kept: Vec<String>,
    /// Removals that failed, with why.
    pub failures: Vec<String>,
    /// What a listing by the run's label still found afterwards; empty means zero orphans.
    pub leftovers: Vec<String>,
}

impl RollbackReport {
    /// True when the listing found nothing of the run left.
    pub fn is_clean(&self) -> bool {
        self.leftovers.is_empty() && self.failures.is_empty()
    }
}

impl<B: ContainerBackend> Orchestrator<'_, B> {
    /// Finishes the rollback of an `up` of this project that did not finish (killed, crashed),
    /// if its journal is still there. Run first by `up` and `down`.
    pub async fn recover(&self) -> Result<Option<RollbackReport>, OrchestrateError> {
        let Some(journal) = Journal::pending(&self.state_dir(), &self.project)? else {
            return Ok(None);
        };
        self.report(
            &self.project,
            None,
            "recovering",
            Some(format!(
                "an earlier up (run {}) did not finish; rolling it back",
                journal.run_id()
            )),
        );
        self.roll_back(journal).await.map(Some)
    }

    /// Removes, newest first, everything `journal` names that this run created; then lists by
    /// the run's label. The journal is removed only when nothing is left, so a rollback that
    /// could not finish is finished by the next command.
    pub(crate) async fn roll_back(
        &self,
        journal: Journal,
    ) -> Result<RollbackReport, OrchestrateError> {
        let run_id = journal.run_id().to_string();
        let mut report = RollbackReport {
            run_id: run_id.clone(),
            ..Default::default()
        };
        for r in journal.rollback_order() {
            let what = format!("{} {}", kind_name(r.kind), r.name);
            match self.remove_if_ours(r, &run_id).await {
                Ok(Removal::Removed) => {
                    self.record(
                        Self::event(Action::Rollback, Decision::Allow)
                            .reason(format!("removed {what}, created by run {run_id}"))
                            .detail("resource", what.as_str()),
                    )?;
                    self.report_as(kind_name(r.kind), &r.name, None, "removed", None);
                    report.removed.push(what);
                }
                Ok(Removal::Absent) => {}
                Ok(Removal::NotOurs) => report.kept.push(what),
                Err(e) => {
                    self.record(
                        Self::event(Action::Rollback, Decision::Deny)
                            .reason(format!("could not remove {what}: {e}"))
                            .detail("resource", what.as_str()),
                    )?;
                    report.failures.push(format!("{what}: {e}"));
                }
            }
        }
        report.leftovers = self.labelled(labels::RUN, &run_id, true).await?;
        if report.leftovers.is_empty() {
            journal.finish()?;
        }
        Ok(report)
    }

    async fn remove_if_ours(&self, r: &Resource, run_id: &str) -> Result<Removal, BackendError> {
        let b = self.backend;
        let owner = match r.kind {
            ResourceKind::Container => b.inspect(&r.name).await.map(|i| i.labels),
            ResourceKind::Network => b.network_inspect(&r.name).await.map(|i| i.labels),
            ResourceKind::Volume => b.volume_inspect(&r.name).await.map(|i| i.labels),
        };
        let owner = match owner {
            Ok(l) => l.get(labels::RUN).cloned(),
            Err(BackendError::NotFound { .. }) => return Ok(Removal::Absent),
            Err(e) => return Err(e),
        };
        if owner.as_deref() != Some(run_id) {
            return Ok(Removal::NotOurs);
        }
        let removed = match r.kind {
            ResourceKind::Container => b.remove(&r.name, true).await,
            ResourceKind::Network => b.network_remove(&r.name).await,
            ResourceKind::Volume => b.volume_remove(&r.name).await,
        };
        match removed {
            Ok(()) | Err(BackendError::NotFound { .. }) => Ok(Removal::Removed),
            Err(e) => Err(e),
        }
    }
}

enum Removal {
    Removed,
    Absent,
    NotOurs,
}

/// The word for a resource kind in records and progress lines.
pub(super) fn kind_name(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::Container => "container",
        ResourceKind::Network => "network",
        ResourceKind::Volume => "volume",
    }
}
