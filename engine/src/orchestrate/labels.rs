//! Names and labels, as compose writes them, plus ours.
//!
//! Compose's labels (`com.docker.compose.*`) make our containers look like compose's to every
//! tool that reads them; ours (`io.perry-sandbox.*`) carry what only we know: the run that
//! created a resource (so a rollback can prove, by listing, that nothing of it is left), the
//! tier and the isolation level. `down` works from labels alone, without the compose file.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::plan::Condition;

/// `com.docker.compose.project`: every resource of the project.
pub const PROJECT: &str = "com.docker.compose.project";
/// `com.docker.compose.service`.
pub const SERVICE: &str = "com.docker.compose.service";
/// `com.docker.compose.container-number` (1-based).
pub const NUMBER: &str = "com.docker.compose.container-number";
/// `com.docker.compose.config-hash`: a changed hash recreates the container.
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
/// `com.docker.compose.image`: the pinned digest the container runs.
pub const IMAGE: &str = "com.docker.compose.image";
/// `com.docker.compose.depends_on`: `svc:condition:restart` entries, comma-separated, so that
/// `down` can stop in reverse dependency order without the compose file.
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
/// `com.docker.compose.network`: a network's key in the project.
pub const NETWORK: &str = "com.docker.compose.network";
/// `com.docker.compose.volume`: a volume's key in the project.
pub const VOLUME: &str = "com.docker.compose.volume";
/// `io.perry-sandbox.run`: the `up` that created the resource.
pub const RUN: &str = "io.perry-sandbox.run";
/// `io.perry-sandbox.tier`: the service's tier.
pub const TIER: &str = "io.perry-sandbox.tier";
/// `io.perry-sandbox.isolation`: `container` or `sandboxed-kernel`.
pub const ISOLATION: &str = "io.perry-sandbox.isolation";

/// The container name of replica `n` (1-based): `container_name`, else `project-service-n`.
pub fn container_name(project: &str, service: &str, n: u32, explicit: Option<&str>) -> String {
    match explicit {
        Some(name) => name.to_string(),
        None => format!("{project}-{service}-{n}"),
    }
}

/// The default backend name of a project's network or volume: `project_key`.
pub fn resource_name(project: &str, key: &str) -> String {
    format!("{project}_{key}")
}

/// A stable hash of everything that makes a container what it is; a container whose label
/// differs is recreated.
pub fn config_hash(parts: &impl std::fmt::Debug) -> String {
    let digest = Sha256::digest(format!("{parts:?}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The `depends_on` label value.
pub fn encode_depends_on(deps: &[(String, Condition, bool)]) -> String {
    deps.iter()
        .map(|(s, c, restart)| format!("{s}:{}:{restart}", c.as_compose()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The services named by a `depends_on` label (unknown entries are skipped: the label is
/// only an ordering hint for `down`).
pub fn decode_depends_on(label: &str) -> Vec<String> {
    label
        .split(',')
        .filter_map(|e| e.split(':').next())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Our labels on a network or volume of `project` created by run `run_id`.
pub fn resource_labels(
    project: &str,
    kind_key: &str,
    key: &str,
    run_id: &str,
    own: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut l = own.clone();
    l.insert(PROJECT.into(), project.into());
    l.insert(kind_key.into(), key.into());
    l.insert(RUN.into(), run_id.into());
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_compose() {
        assert_eq!(container_name("shop", "web", 2, None), "shop-web-2");
        assert_eq!(container_name("shop", "web", 1, Some("edge")), "edge");
        assert_eq!(resource_name("shop", "backend"), "shop_backend");
    }

    #[test]
    fn depends_on_round_trips_service_names() {
        let l = encode_depends_on(&[
            ("db".into(), Condition::Healthy, false),
            ("cache".into(), Condition::Started, true),
        ]);
        assert_eq!(l, "db:service_healthy:false,cache:service_started:true");
        assert_eq!(decode_depends_on(&l), vec!["db", "cache"]);
        assert!(decode_depends_on("").is_empty());
    }

    #[test]
    fn config_hash_changes_with_any_part() {
        let a = config_hash(&("img@sha256:1", "hardened", vec!["a"]));
        assert_eq!(a, config_hash(&("img@sha256:1", "hardened", vec!["a"])));
        assert_ne!(a, config_hash(&("img@sha256:2", "hardened", vec!["a"])));
        assert_ne!(a, config_hash(&("img@sha256:1", "isolated", vec!["a"])));
        assert_eq!(a.len(), 32);
    }
}
