//! The compose adapter: a loaded compose [`Project`] into what the planner and the orchestrator
//! take ([`ServiceInput`]s and [`ProjectResources`]). Orchestration knows nothing of the file
//! format; a workload-graph loader will fill the same types.
//!
//! What we cannot run as written is refused here, with the service and field named, rather
//! than dropped: a silently ignored field is a guarantee the user thinks they have.

use std::time::Duration;

use perry_compose::{Project, Service};
use perry_policies::Tier;

use super::build::{DependsOn, ServiceInput};
use super::graph::Condition;
use super::service::{Refusal, ServiceAsk};
use crate::orchestrate::{
    labels, HealthSpec, HealthTest, NetworkDecl, NetworkUse, ProjectResources, PublishedPort,
    ServiceShape, VolumeDecl, VolumeUse,
};

/// A compose project in the planner's terms.
#[derive(Clone, Debug, Default)]
pub struct ComposeInput {
    /// One input per service, in name order.
    pub services: Vec<ServiceInput>,
    /// The project's networks and volumes by key.
    pub resources: ProjectResources,
}

/// Converts `project`, or every field it cannot honour (all of them, not only the first).
pub fn from_compose(project: &Project) -> Result<ComposeInput, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let mut services = Vec::new();
    for (name, s) in &project.services {
        let mut refuse = |field: &str, reason: String| {
            refusals.push(Refusal {
                service: name.clone(),
                field: field.to_string(),
                reason,
            })
        };
        let ask = ask_of(name, s, &mut refuse);
        let shape = shape_of(s, &mut refuse);
        let depends_on = s
            .depends_on
            .iter()
            .map(|(dep, d)| DependsOn {
                service: dep.clone(),
                condition: match d.condition {
                    perry_compose::Condition::ServiceStarted => Condition::Started,
                    perry_compose::Condition::ServiceHealthy => Condition::Healthy,
                    perry_compose::Condition::ServiceCompletedSuccessfully => {
                        Condition::CompletedSuccessfully
                    }
                },
                required: d.required,
                restart: d.restart,
            })
            .collect();
        services.push(ServiceInput {
            ask,
            shape,
            depends_on,
        });
    }
    let resources = ProjectResources {
        networks: project
            .networks
            .iter()
            .map(|(key, n)| {
                let decl = NetworkDecl {
                    name: n
                        .name
                        .clone()
                        .unwrap_or_else(|| labels::resource_name(&project.name, key)),
                    internal: n.internal,
                    external: n.external,
                    labels: n.labels.clone(),
                };
                (key.clone(), decl)
            })
            .collect(),
        volumes: project
            .volumes
            .iter()
            .map(|(key, v)| {
                let decl = VolumeDecl {
                    name: v
                        .name
                        .clone()
                        .unwrap_or_else(|| labels::resource_name(&project.name, key)),
                    external: v.external,
                    labels: v.labels.clone(),
                };
                (key.clone(), decl)
            })
            .collect(),
    };
    if refusals.is_empty() {
        Ok(ComposeInput {
            services,
            resources,
        })
    } else {
        Err(refusals)
    }
}

fn ask_of(name: &str, s: &Service, refuse: &mut impl FnMut(&str, String)) -> ServiceAsk {
    let tier = match s.extensions.get("x-perry-tier") {
        None => None,
        Some(serde_json::Value::String(t)) => match t.parse::<Tier>() {
            Ok(t) => Some(t),
            Err(e) => {
                refuse("x-perry-tier", e.to_string());
                None
            }
        },
        Some(other) => {
            refuse(
                "x-perry-tier",
                format!(
                    "must be a tier name (default, isolated, hardened, untrusted), not {other}"
                ),
            );
            None
        }
    };
    ServiceAsk {
        name: name.to_string(),
        image: s.image.clone(),
        build: s.build.is_some(),
        tier,
        privileged: s.privileged,
        cap_add: s.cap_add.clone(),
        network_mode: s.network_mode.clone(),
        pid: s.pid.clone(),
        ipc: s.ipc.clone(),
        uts: s.uts.clone(),
        userns_mode: s.userns_mode.clone(),
        // `read_only: false` is the compose default and cannot be told from an absent field;
        // the tier's read-only root applies either way.
        read_only: s.read_only.then_some(true),
        security_opt: s.security_opt.clone(),
        devices: s.devices.iter().map(|d| d.source.clone()).collect(),
    }
}

fn shape_of(s: &Service, refuse: &mut impl FnMut(&str, String)) -> ServiceShape {
    let mut shape = ServiceShape {
        command: s.command.clone().unwrap_or_default(),
        entrypoint: s.entrypoint.clone(),
        environment: s
            .environment
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect(),
        working_dir: s.working_dir.clone(),
        user: s.user.clone(),
        labels: s.labels.clone(),
        container_name: s.container_name.clone(),
        replicas: u32::try_from(s.replicas()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    if let Some(g) = s.stop_grace_period {
        shape.stop_grace = g;
    }
    shape.stop_signal = s.stop_signal.clone();
    shape.networks = s
        .networks
        .iter()
        .map(|(key, n)| NetworkUse {
            network: key.clone(),
            aliases: n.as_ref().map(|n| n.aliases.clone()).unwrap_or_default(),
        })
        .collect();
    for (i, v) in s.volumes.iter().enumerate() {
        match (v.kind, &v.source) {
            (perry_compose::VolumeKind::Volume, Some(source)) => shape.volumes.push(VolumeUse {
                volume: source.clone(),
                target: v.target.clone(),
                read_only: v.read_only,
            }),
            (kind, _) => refuse(
                &format!("volumes[{i}]"),
                format!(
                    "only named volumes are mounted (this is a {kind:?} mount of `{}`); host paths stay outside the sandbox — declare a named volume",
                    v.target
                ),
            ),
        }
    }
    for (i, p) in s.ports.iter().enumerate() {
        let Some(published) = &p.published else {
            continue; // exposed only: reachable on project networks, nothing published
        };
        match (published.parse::<u16>(), u16::try_from(p.target)) {
            (Ok(published), Ok(target)) => shape.ports.push(PublishedPort {
                host_ip: p.host_ip.clone().unwrap_or_default(),
                published,
                target,
                protocol: p.protocol.clone().unwrap_or_else(|| "tcp".into()),
            }),
            _ => refuse(
                &format!("ports[{i}]"),
                format!(
                    "`{published}:{}` is not a single host port and container port",
                    p.target
                ),
            ),
        }
    }
    if let Some(h) = &s.healthcheck {
        if !h.disable {
            let test = match &h.test {
                perry_compose::HealthTest::None | perry_compose::HealthTest::Inherit => None,
                perry_compose::HealthTest::Cmd(argv) => Some(HealthTest::Cmd(argv.clone())),
                perry_compose::HealthTest::CmdShell(c) => Some(HealthTest::Shell(c.clone())),
            };
            if matches!(h.test, perry_compose::HealthTest::Inherit) {
                refuse(
                    "healthcheck.test",
                    "the image's own healthcheck is not run (it is unverified metadata); write `test`".into(),
                );
            }
            if let Some(test) = test {
                let mut spec = HealthSpec::new(test);
                let set = |d: Option<Duration>, slot: &mut Duration| {
                    if let Some(d) = d {
                        *slot = d;
                    }
                };
                set(h.interval, &mut spec.interval);
                set(h.timeout, &mut spec.timeout);
                set(h.start_period, &mut spec.start_period);
                set(h.start_interval, &mut spec.start_interval);
                if let Some(r) = h.retries {
                    spec.retries = u32::try_from(r).unwrap_or(u32::MAX);
                }
                shape.healthcheck = Some(spec);
            }
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_of(yaml: &str) -> ServiceShape {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, yaml).unwrap();
        let project = perry_compose::load(&perry_compose::LoadOptions {
            files: vec![file],
            project_name: Some("p".into()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let input = from_compose(&project).unwrap_or_else(|r| panic!("{r:?}"));
        input.services.into_iter().next().unwrap().shape
    }

    #[test]
    fn stop_signal_and_grace_period_reach_the_shape_and_default_to_the_image_and_10s() {
        let s = service_of(
            "services:\n  db:\n    image: r.example/db@sha256:0000000000000000000000000000000000000000000000000000000000000000\n    stop_signal: SIGINT\n    stop_grace_period: 1m30s\n",
        );
        assert_eq!(s.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(s.stop_grace, Duration::from_secs(90));
        let s = service_of(
            "services:\n  db:\n    image: r.example/db@sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
        );
        assert_eq!(s.stop_signal, None);
        assert_eq!(s.stop_grace, Duration::from_secs(10));
    }
}
