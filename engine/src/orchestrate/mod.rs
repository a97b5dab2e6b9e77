//! Orchestration: bringing a [`Plan`](crate::plan::Plan) up and down on a container backend.
//!
//! Conditions and healthchecks are ours, not the backend's: podman without systemd never runs
//! healthchecks, and podman-compose on older podman silently skips `service_healthy`. Every
//! wait has a deadline.

mod health;

pub use health::{wait_healthy, HealthSpec, HealthTest, HealthVerdict, Probe};
