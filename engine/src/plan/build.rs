//! Building a plan: every service's tier checked, every image verified through the executor
//! (one verification cache for all of them), the dependency graph levelled — all before
//! anything is created, and all or nothing: one refused service refuses the whole plan.

use std::collections::BTreeMap;

use perry_audit::{Action, Actor, Correlation, Decision, Event};
use perry_policies::{Code, ImageRef, Tier};
use perry_verifier::registry::Platform;
use perry_verifier::Verification;

use super::graph::{Condition, Graph, NodeId, PlanError};
use super::service::{check_service, image_tier, service_tier, Refusal, ServiceAsk};
use crate::orchestrate::{ProjectResources, ServiceShape};
use crate::Executor;

/// How strongly a node's kernel is separated from the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// A container on the host kernel (namespaces, seccomp, no capabilities).
    Container,
    /// A sandboxed kernel (gVisor): required by `untrusted`.
    SandboxedKernel,
}

impl Isolation {
    /// What `tier` requires.
    pub fn required_by(tier: Tier) -> Self {
        if tier == Tier::Untrusted {
            Isolation::SandboxedKernel
        } else {
            Isolation::Container
        }
    }

    /// The name in plans, `inspect` output and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::SandboxedKernel => "sandboxed-kernel",
        }
    }
}

/// One dependency of a service, as its `depends_on` states it (long form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependsOn {
    /// The service depended on.
    pub service: String,
    /// What is waited for.
    pub condition: Condition,
    /// False: a failure is a warning.
    pub required: bool,
    /// Restart this service when that one is recreated.
    pub restart: bool,
}

/// A service to plan: what it asks for, how its containers are made, and what it waits on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceInput {
    /// The policy-relevant fields.
    pub ask: ServiceAsk,
    /// How its containers are made once the policy allows it.
    pub shape: ServiceShape,
    /// Its dependencies.
    pub depends_on: Vec<DependsOn>,
}

/// A service that passed the plan: verified, pinned, with its tier and isolation level.
#[derive(Clone, Debug)]
pub struct PlannedService {
    /// What it asked for.
    pub ask: ServiceAsk,
    /// How its containers are made.
    pub shape: ServiceShape,
    /// Its tier.
    pub tier: Tier,
    /// The isolation its tier requires.
    pub isolation: Isolation,
    /// The verified, digest-pinned image (the only thing a backend will be given).
    pub verification: Verification,
}

/// A plan: the graph of planned services and the order to start them in.
#[derive(Debug)]
pub struct Plan {
    /// Services and their conditioned dependencies.
    pub graph: Graph<PlannedService>,
    /// Kahn levels: each level's services may start together once earlier levels are up.
    pub levels: Vec<Vec<NodeId>>,
}

/// Why a plan was refused. Nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum PlanRefused {
    /// Services or fields the policy refuses (every one found).
    #[error("{}", .0.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<Refusal>),
    /// An image was refused or could not be verified.
    #[error("services.{service}.image: {source}")]
    Image {
        /// The service.
        service: String,
        /// Why.
        source: Box<crate::ExecError>,
    },
    /// The dependency graph is unusable (cycle, unknown service).
    #[error(transparent)]
    Graph(#[from] PlanError),
    /// The plan record could not be written; nothing is done without a record.
    #[error("audit log: {0}")]
    Audit(#[from] perry_audit::AuditError),
}

impl PlanRefused {
    /// The refusal's code in the one table.
    pub fn code(&self) -> Code {
        match self {
            PlanRefused::Policy(_) => Code::PolicyDenied,
            PlanRefused::Image { source, .. } => source.code(),
            PlanRefused::Graph(e) => e.code(),
            PlanRefused::Audit(_) => Code::AuditUnavailable,
        }
    }
}

impl Executor {
    /// Plans `services` of `project`: tiers and fields checked for every service, every image
    /// verified (each verification recorded, all under one correlation), the graph levelled; then
    /// one `plan` record with every service's digest, tier and isolation, or the refusal. All or
    /// nothing: the first refusal found does not stop the checks, and any refusal refuses all.
    pub async fn plan(
        &self,
        project: &str,
        services: Vec<ServiceInput>,
        platform: &Platform,
        actor: Actor,
        correlation: &Correlation,
    ) -> Result<Plan, PlanRefused> {
        let default_tier = self.config().sandbox.default_tier;
        let mut refusals = Vec::new();
        let mut tiers = Vec::new();
        for s in &services {
            let base = s
                .ask
                .image
                .as_deref()
                .map_or(default_tier, |i| image_tier(self.config(), i));
            match service_tier(&s.ask, base) {
                Ok(t) => {
                    refusals.extend(check_service(&s.ask, t));
                    refusals.extend(check_shape(&s.ask.name, &s.shape));
                    tiers.push(t);
                }
                Err(r) => {
                    refusals.push(r);
                    tiers.push(default_tier);
                }
            }
        }
        let record_refusal = |reason: String, code: Code| {
            self.record_plan_refusal(project, reason, code, &actor, correlation)
        };
        if !refusals.is_empty() {
            let e = PlanRefused::Policy(refusals);
            record_refusal(e.to_string(), e.code())?;
            return Err(e);
        }
        // The graph before the registry: a cycle is refused without a network round trip.
        let mut shape: Graph<()> = Graph::new();
        for s in &services {
            shape.add_node(s.ask.name.clone(), ())?;
        }
        for s in &services {
            for d in &s.depends_on {
                shape.add_edge(&s.ask.name, &d.service, d.condition, d.required, d.restart)?;
            }
        }
        if let Err(e) = shape.levels() {
            record_refusal(e.to_string(), e.code())?;
            return Err(e.into());
        }
        // Each image reference as written is resolved and verified once, all at once: every
        // service naming it runs the same digest even if the tag moves meanwhile, and a
        // project of ten services on three images costs three verifications, not ten in a row.
        let mut first_user: BTreeMap<Option<&str>, &ServiceAsk> = BTreeMap::new();
        for s in &services {
            first_user.entry(s.ask.image.as_deref()).or_insert(&s.ask);
        }
        let mut verified: BTreeMap<Option<&str>, Result<Verification, PlanRefused>> =
            futures_util::future::join_all(first_user.into_iter().map(|(written, ask)| {
                let actor = &actor;
                async move {
                    let v = self
                        .verify_service_image(ask, platform, actor, correlation)
                        .await;
                    (written, v)
                }
            }))
            .await
            .into_iter()
            .collect();
        // The refusal is the first service's (in file order) whose image failed.
        let failed = services
            .iter()
            .map(|s| s.ask.image.as_deref())
            .find(|written| verified.get(written).is_some_and(Result::is_err));
        if let Some(Err(e)) = failed.and_then(|written| verified.remove(&written)) {
            record_refusal(e.to_string(), e.code())?;
            return Err(e);
        }
        let verified: BTreeMap<Option<&str>, Verification> = verified
            .into_iter()
            .filter_map(|(written, v)| Some((written, v.ok()?)))
            .collect();
        let mut graph = Graph::new();
        let mut summary = Vec::new();
        for (s, tier) in services.iter().zip(tiers) {
            let verified = verified[&s.ask.image.as_deref()].clone();
            let isolation = Isolation::required_by(tier);
            summary.push(serde_json::json!({
                "service": s.ask.name,
                "image": s.ask.image,
                "pinned": verified.image.pinned_reference(),
                "signer": verified.image.signer_identity(),
                "tier": tier.to_string(),
                "isolation": isolation.as_str(),
            }));
            graph.add_node(
                s.ask.name.clone(),
                PlannedService {
                    ask: s.ask.clone(),
                    shape: s.shape.clone(),
                    tier,
                    isolation,
                    verification: verified,
                },
            )?;
        }
        for s in &services {
            for d in &s.depends_on {
                graph.add_edge(&s.ask.name, &d.service, d.condition, d.required, d.restart)?;
            }
        }
        let levels = graph.levels()?;
        self.audit().record(
            Event::new(Action::Plan, Decision::Allow)
                .actor(actor)
                .correlation(correlation)
                .reason(format!(
                    "{} service(s) verified and confined by tier, {} level(s)",
                    graph.len(),
                    levels.len()
                ))
                .detail("project", project)
                .detail("services", serde_json::Value::Array(summary)),
        )?;
        Ok(Plan { graph, levels })
    }

    /// Plans a loaded compose project: converted by [`super::from_compose`] (what cannot run as
    /// written is refused and recorded like any other plan refusal), then [`Executor::plan`].
    /// Returns the plan and the project's networks and volumes.
    pub async fn plan_compose(
        &self,
        project: &perry_compose::Project,
        platform: &Platform,
        actor: Actor,
        correlation: &Correlation,
    ) -> Result<(Plan, ProjectResources), PlanRefused> {
        let input = match super::from_compose(project) {
            Ok(i) => i,
            Err(refusals) => {
                let e = PlanRefused::Policy(refusals);
                self.record_plan_refusal(
                    &project.name,
                    e.to_string(),
                    e.code(),
                    &actor,
                    correlation,
                )?;
                return Err(e);
            }
        };
        let plan = self
            .plan(&project.name, input.services, platform, actor, correlation)
            .await?;
        Ok((plan, input.resources))
    }

    /// The `plan` deny record: nothing is refused without one.
    fn record_plan_refusal(
        &self,
        project: &str,
        reason: String,
        code: Code,
        actor: &Actor,
        correlation: &Correlation,
    ) -> Result<(), PlanRefused> {
        self.audit().record(
            Event::new(Action::Plan, Decision::Deny)
                .actor(actor.clone())
                .correlation(correlation)
                .reason(reason)
                .detail("project", project)
                .detail("code", code.as_str())
                .detail("status", u64::from(code.status())),
        )?;
        Ok(())
    }

    async fn verify_service_image(
        &self,
        ask: &ServiceAsk,
        platform: &Platform,
        actor: &Actor,
        correlation: &Correlation,
    ) -> Result<Verification, PlanRefused> {
        let refused = |source: crate::ExecError| PlanRefused::Image {
            service: ask.name.clone(),
            source: Box::new(source),
        };
        let written = ask.image.as_deref().unwrap_or_default();
        let image = ImageRef::parse(written).map_err(|e| {
            refused(crate::ExecError::InvalidRequest(format!(
                "`{written}`: {e}"
            )))
        })?;
        self.verify(&image, platform, actor.clone(), correlation)
            .await
            .map_err(refused)
    }
}

/// The refusals of a service's shape that no tier allows: a fixed `container_name` with more
/// than one replica (two containers cannot share a name).
fn check_shape(service: &str, shape: &ServiceShape) -> Vec<Refusal> {
    let mut out = Vec::new();
    if shape.container_name.is_some() && shape.replicas > 1 {
        out.push(Refusal {
            service: service.to_string(),
            field: "container_name".into(),
            reason: format!(
                "a fixed container name cannot be shared by {} replicas; remove `container_name` or scale to 1",
                shape.replicas
            ),
        });
    }
    out
}
