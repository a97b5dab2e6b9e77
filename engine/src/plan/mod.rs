//! Plans: what will be started, in which order, under which conditions — decided completely
//! before anything is created.
//!
//! A plan is a [`Graph`] of named nodes (compose services today, workload-graph nodes next)
//! joined by edges that carry a [`Condition`]. [`Graph::levels`] orders it with Kahn's
//! algorithm: every node of a level depends only on nodes of earlier levels, so a level's nodes
//! can start in parallel. A cycle is refused with the nodes that form it
//! ([`Code::DependencyCycle`](perry_policies::Code::DependencyCycle), 422).

mod build;
mod from_compose;
mod graph;
mod journal;
mod service;

pub use build::{DependsOn, Isolation, Plan, PlanRefused, PlannedService, ServiceInput};
pub use from_compose::{from_compose, ComposeInput};
pub use graph::{Condition, Edge, Graph, NodeId, PlanError};
pub use journal::{Journal, JournalError, Resource, ResourceKind};
pub use service::{check_service, image_tier, service_tier, Refusal, ServiceAsk};
