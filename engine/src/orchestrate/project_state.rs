//! What the backend holds of a project, read from labels alone — so `down`, `ps`, `logs`,
//! `exec`, `start`, `stop` and `restart` work without the compose file — and the health we
//! last measured, kept under the state directory (the backend never ran the checks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use perry_backends::{ContainerBackend, ContainerInfo};

use super::labels;
use super::orchestrator::{OrchestrateError, Orchestrator};

/// One service's containers, replica 1 first.
pub(crate) type ByService = BTreeMap<String, Vec<ContainerInfo>>;

impl<B: ContainerBackend> Orchestrator<'_, B> {
    /// Every container of the project, by service.
    pub(crate) async fn by_service(&self) -> Result<ByService, OrchestrateError> {
        let mut out: ByService = BTreeMap::new();
        let ids = self.project_containers().await?;
        let infos = self
            .backend
            .inspect_many(&ids)
            .await
            .map_err(OrchestrateError::backend(
                "inspecting the project's containers",
            ))?;
        for info in infos {
            let service = info
                .labels
                .get(labels::SERVICE)
                .cloned()
                .unwrap_or_default();
            out.entry(service).or_default().push(info);
        }
        for list in out.values_mut() {
            list.sort_by_key(|i| {
                i.labels
                    .get(labels::NUMBER)
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(u32::MAX)
            });
        }
        Ok(out)
    }

    /// The services of `all` restricted to `wanted` (every one when empty); an unknown name is
    /// an error naming it.
    pub(crate) fn select<'s>(
        &self,
        all: &'s ByService,
        wanted: &[String],
    ) -> Result<Vec<(&'s str, &'s [ContainerInfo])>, OrchestrateError> {
        for w in wanted {
            if !all.contains_key(w) {
                return Err(OrchestrateError::Resource(format!(
                    "no such service: `{w}` (project {} has {})",
                    self.project,
                    if all.is_empty() {
                        "no containers".to_string()
                    } else {
                        all.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                )));
            }
        }
        Ok(all
            .iter()
            .filter(|(s, _)| wanted.is_empty() || wanted.contains(s))
            .map(|(s, c)| (s.as_str(), c.as_slice()))
            .collect())
    }

    /// Where the last measured health of `container` is kept.
    pub(crate) fn health_file(&self, container: &str) -> PathBuf {
        self.state_dir()
            .join("compose-health")
            .join(&self.project)
            .join(container)
    }

    /// Keeps `words` as the health of `container` (best effort: `ps` shows it, nothing
    /// depends on it).
    pub(crate) fn remember_health(&self, container: &str, words: &str) {
        let path = self.health_file(container);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = perry_audit::store::write_atomic(&path, words.as_bytes(), 0o600);
    }

    /// The last health measured for `container`, if any.
    pub(crate) fn last_health(&self, container: &str) -> Option<String> {
        std::fs::read_to_string(self.health_file(container)).ok()
    }
}

/// Services in teardown order from their `depends_on` labels: a service goes only once nothing
/// left depends on it. Whatever a damaged label makes unorderable goes last, together.
pub(crate) fn teardown_order(all: &ByService) -> Vec<Vec<String>> {
    let mut deps: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (service, containers) in all {
        let d = containers
            .first()
            .and_then(|c| c.labels.get(labels::DEPENDS_ON))
            .map(|l| labels::decode_depends_on(l))
            .unwrap_or_default();
        deps.insert(service.as_str(), d.into_iter().collect());
    }
    let mut left: BTreeSet<&str> = deps.keys().copied().collect();
    let mut levels = Vec::new();
    while !left.is_empty() {
        let level: Vec<String> = left
            .iter()
            .filter(|s| !left.iter().any(|o| deps[o].contains(**s)))
            .map(|s| s.to_string())
            .collect();
        if level.is_empty() {
            levels.push(left.iter().map(|s| s.to_string()).collect());
            break;
        }
        for s in &level {
            left.remove(s.as_str());
        }
        levels.push(level);
    }
    levels
}

/// The reverse of [`teardown_order`]: dependencies first.
pub(crate) fn start_order(all: &ByService) -> Vec<Vec<String>> {
    let mut l = teardown_order(all);
    l.reverse();
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use perry_backends::{ContainerStatus, Health, IsolationLevel};

    fn container(service: &str, depends_on: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{service}"),
            name: format!("p-{service}-1"),
            status: ContainerStatus::Running,
            exit_code: None,
            health: Health::None,
            image_id: String::new(),
            ips: BTreeMap::new(),
            aliases: BTreeMap::new(),
            ports: Vec::new(),
            labels: [
                (labels::SERVICE.to_string(), service.to_string()),
                (labels::DEPENDS_ON.to_string(), depends_on.to_string()),
            ]
            .into_iter()
            .collect(),
            isolation: IsolationLevel::Container,
            stop_signal: None,
            stop_timeout: None,
            pid: None,
        }
    }

    fn project(entries: &[(&str, &str)]) -> ByService {
        entries
            .iter()
            .map(|(s, d)| (s.to_string(), vec![container(s, d)]))
            .collect()
    }

    #[test]
    fn teardown_goes_dependents_first_and_start_the_reverse() {
        let p = project(&[
            ("proxy", "app:service_healthy:false"),
            ("app", "db:service_healthy:false,cache:service_started:true"),
            ("db", ""),
            ("cache", ""),
        ]);
        assert_eq!(
            teardown_order(&p),
            vec![
                vec!["proxy".to_string()],
                vec!["app".to_string()],
                vec!["cache".to_string(), "db".to_string()],
            ]
        );
        assert_eq!(start_order(&p)[0], vec!["cache", "db"]);
    }

    #[test]
    fn a_damaged_label_still_tears_everything_down() {
        // A cycle can only come from hand-edited labels; everything still goes, once.
        let p = project(&[("a", "b:x:false"), ("b", "a:x:false"), ("c", "")]);
        let all: Vec<String> = teardown_order(&p).into_iter().flatten().collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], "c");
    }
}
