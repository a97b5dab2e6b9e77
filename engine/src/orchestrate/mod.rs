//! Orchestration: bringing a [`Plan`](crate::plan::Plan) up and down on a container backend.
//!
//! Conditions and healthchecks are ours, not the backend's: podman without systemd never runs
//! healthchecks, and podman-compose on older podman silently skips `service_healthy`. Every
//! wait has a deadline. Every resource is journalled before it is created and labelled with the
//! run that created it, so a failed `up` — or a killed one, at the next command — is rolled back
//! until a listing by label finds nothing of it.
//!
//! The [`Orchestrator`] holds one project on one backend; each operation is its own file.

mod container;
mod down;
mod health;
pub mod labels;
mod lifecycle;
mod orchestrator;
mod project_state;
mod rollback;
mod shape;
mod up;

pub use down::{DownOptions, DownReport};
pub use health::{wait_healthy, HealthSpec, HealthTest, HealthVerdict, Probe};
pub use lifecycle::{Followed, PsEntry};
pub use orchestrator::{OrchestrateError, Orchestrator, Progress};
pub use rollback::RollbackReport;
pub use shape::{
    NetworkDecl, NetworkUse, ProjectResources, PublishedPort, ServiceShape, VolumeDecl, VolumeUse,
};
pub use up::{ServiceUp, UpFailed, UpOptions, UpReport};
