//! The typed compose model: what `load` returns and `compose config` prints.
//!
//! Keys serialize with compose-spec names so `serde_json::to_string(&project)` is
//! the canonical `docker compose config --format json` shape (maps sorted, empty
//! fields left out, durations as Go strings such as `1m30s`). The model is read
//! from the canonical (long-form) tree the loader builds, so each field has one
//! shape here; short syntaxes are expanded before typing.

use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::units::{opt_duration, ByteSize, FileMode};

/// `x-*` extension keys of an object, kept verbatim.
pub type Extensions = BTreeMap<String, serde_json::Value>;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A loaded compose project.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Project {
    /// The project name (normalised: lowercase `[a-z0-9_-]`).
    pub name: String,
    /// Services by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, Service>,
    /// Top-level networks by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
    /// Top-level volumes by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
    /// Top-level secrets by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Secret>,
    /// Top-level configs by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, Config>,
    /// Top-level models (kept as written).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, serde_json::Value>,
    /// Top-level `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// One service, with every compose-spec field.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    /// `annotations`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `attach`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<bool>,
    /// `blkio_config` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio_config: Option<serde_json::Value>,
    /// `build`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// `cap_add`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// `cap_drop`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `cgroup` (`host` or `private`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// `cgroup_parent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// `command` (a shell-form string is split with shell-words rules); `None` keeps the image's.
    #[serde(skip_serializing_if = "crate::emit::unset_in_yaml")]
    pub command: Option<Vec<String>>,
    /// `configs` (long form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<ServiceConfigRef>,
    /// `container_name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `cpu_count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<i64>,
    /// `cpu_percent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// `cpu_period`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<i64>,
    /// `cpu_quota`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    /// `cpu_rt_period` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_rt_period: Option<serde_json::Value>,
    /// `cpu_rt_runtime` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_rt_runtime: Option<serde_json::Value>,
    /// `cpu_shares`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    /// `cpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// `cpuset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// `credential_spec` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_spec: Option<serde_json::Value>,
    /// `depends_on` (long form).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, DependsOn>,
    /// `deploy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    /// `develop` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub develop: Option<serde_json::Value>,
    /// `device_cgroup_rules`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// `devices` (long form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// `dns`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// `dns_opt`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    /// `dns_search`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `domainname`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// `entrypoint` (like `command`).
    #[serde(skip_serializing_if = "crate::emit::unset_in_yaml")]
    pub entrypoint: Option<Vec<String>>,
    /// `env_file` (long form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<EnvFile>,
    /// `environment`; `None` is a variable named without a value and not found in the environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
    /// `expose`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// `extends`, before it is resolved (the loader resolves and removes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<Extends>,
    /// `external_links`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_links: Vec<String>,
    /// `extra_hosts`: host name to addresses, printed as `host=addr`.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "ser_hosts"
    )]
    pub extra_hosts: BTreeMap<String, Vec<String>>,
    /// `gpus` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<serde_json::Value>,
    /// `group_add`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// `healthcheck`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// `hostname`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `init`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// `ipc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// `isolation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// `label_file` paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub label_file: Vec<String>,
    /// `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `links`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// `logging`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// `mac_address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `mem_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<ByteSize>,
    /// `mem_reservation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_reservation: Option<ByteSize>,
    /// `mem_swappiness`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_swappiness: Option<i64>,
    /// `memswap_limit` (`-1` is unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<serde_json::Value>,
    /// `models` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<serde_json::Value>,
    /// `network_mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// `networks`: name to attachment options (`None` when attached without options).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    /// `oom_kill_disable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill_disable: Option<bool>,
    /// `oom_score_adj`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    /// `pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// `pids_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// `platform`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `ports` (long form; a range is one entry per port).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// `post_start` hooks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_start: Vec<ServiceHook>,
    /// `pre_start` hooks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_start: Vec<ServiceHook>,
    /// `pre_stop` hooks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_stop: Vec<ServiceHook>,
    /// `privileged`.
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// `profiles`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// `provider` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<serde_json::Value>,
    /// `pull_policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
    /// `pull_refresh_after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_refresh_after: Option<String>,
    /// `read_only`.
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `restart`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// `runtime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// `scale` (see also `deploy.replicas`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<u64>,
    /// `secrets` (long form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ServiceConfigRef>,
    /// `security_opt`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// `shm_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// `stdin_open`.
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    /// `stop_grace_period`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "opt_duration",
        default
    )]
    pub stop_grace_period: Option<Duration>,
    /// `stop_signal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `storage_opt`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_opt: BTreeMap<String, String>,
    /// `sysctls`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `tmpfs` mount points.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// `tty`.
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    /// `ulimits`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// `use_api_socket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_api_socket: Option<bool>,
    /// `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `userns_mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    /// `uts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    /// `volumes` (long form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ServiceVolume>,
    /// `volumes_from`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    /// `working_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `x-*` keys of the service.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

impl Service {
    /// The number of containers: `scale`, else `deploy.replicas`, else 1.
    pub fn replicas(&self) -> u64 {
        self.scale
            .or_else(|| self.deploy.as_ref().and_then(|d| d.replicas))
            .unwrap_or(1)
    }
}

fn ser_hosts<S: Serializer>(h: &BTreeMap<String, Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
    let list: Vec<String> = h
        .iter()
        .flat_map(|(k, ips)| ips.iter().map(move |ip| format!("{k}={ip}")))
        .collect();
    list.serialize(s)
}

/// `build` (long form).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Build {
    /// `context`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `dockerfile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// `dockerfile_inline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    /// `entitlements`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    /// `args`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, Option<String>>,
    /// `ssh`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<String>,
    /// `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `cache_from`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    /// `cache_to`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<String>,
    /// `no_cache`.
    #[serde(skip_serializing_if = "is_false")]
    pub no_cache: bool,
    /// `additional_contexts`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_contexts: BTreeMap<String, String>,
    /// `network`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `provenance` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<serde_json::Value>,
    /// `sbom` (kept as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<serde_json::Value>,
    /// `pull`.
    #[serde(skip_serializing_if = "is_false")]
    pub pull: bool,
    /// `target`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `shm_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// `extra_hosts`.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "ser_hosts"
    )]
    pub extra_hosts: BTreeMap<String, Vec<String>>,
    /// `isolation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// `privileged`.
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// `secrets` (long form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ServiceConfigRef>,
    /// `tags`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `ulimits`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// `platforms`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// A service's `configs`/`secrets` entry (long form).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfigRef {
    /// `source`: the top-level secret/config.
    pub source: String,
    /// `target`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `uid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `gid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// `mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// How a dependency must be before the dependent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// `service_started` (the default).
    #[default]
    ServiceStarted,
    /// `service_healthy`.
    ServiceHealthy,
    /// `service_completed_successfully`.
    ServiceCompletedSuccessfully,
}

/// A `depends_on` entry (long form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DependsOn {
    /// `condition`.
    pub condition: Condition,
    /// `required` (default true).
    pub required: bool,
    /// `restart`.
    #[serde(skip_serializing_if = "is_false")]
    pub restart: bool,
}

impl Default for DependsOn {
    fn default() -> Self {
        DependsOn {
            condition: Condition::ServiceStarted,
            required: true,
            restart: false,
        }
    }
}

/// `deploy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Deploy {
    /// `mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `replicas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `update_config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    /// `rollback_config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// `resources`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// `restart_policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// `placement`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// `endpoint_mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<String>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// `deploy.update_config` / `deploy.rollback_config`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateConfig {
    /// `parallelism`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
    /// `delay`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub delay: Option<Duration>,
    /// `failure_action`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<String>,
    /// `monitor`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub monitor: Option<Duration>,
    /// `max_failure_ratio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    /// `order`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// `deploy.resources`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// `limits`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resource>,
    /// `reservations`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resource>,
}

/// One of `deploy.resources.limits` / `reservations`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource {
    /// `cpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// `memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// `pids`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// `devices` (kept as written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<serde_json::Value>,
    /// `generic_resources` (kept as written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<serde_json::Value>,
}

/// `deploy.restart_policy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// `condition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// `delay`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub delay: Option<Duration>,
    /// `max_attempts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    /// `window`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub window: Option<Duration>,
}

/// `deploy.placement`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Placement {
    /// `constraints`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// `preferences`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// `max_replicas_per_node`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
}

/// One `deploy.placement.preferences` entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementPreference {
    /// `spread`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
}

/// A `devices` entry (long form).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Device {
    /// Host path.
    pub source: String,
    /// Container path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Cgroup permissions (`rwm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

/// An `env_file` entry (long form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvFile {
    /// `path`.
    pub path: String,
    /// `required` (default true; printed only when false).
    #[serde(skip_serializing_if = "is_true")]
    pub required: bool,
    /// `format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl Default for EnvFile {
    fn default() -> Self {
        EnvFile {
            path: String::new(),
            required: true,
            format: None,
        }
    }
}

/// `extends` (long form).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Extends {
    /// The service to extend.
    pub service: String,
    /// The file it is in (same file when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The command of a healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HealthTest {
    /// No `test` given: the image's healthcheck applies.
    #[default]
    Inherit,
    /// `["NONE"]`: healthcheck disabled.
    None,
    /// `["CMD", argv...]`.
    Cmd(Vec<String>),
    /// `["CMD-SHELL", "command"]` or a plain string.
    CmdShell(String),
}

impl HealthTest {
    fn is_inherit(&self) -> bool {
        matches!(self, HealthTest::Inherit)
    }
}

impl Serialize for HealthTest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<&str> = match self {
            HealthTest::Inherit => Vec::new(),
            HealthTest::None => vec!["NONE"],
            HealthTest::Cmd(a) => std::iter::once("CMD")
                .chain(a.iter().map(String::as_str))
                .collect(),
            HealthTest::CmdShell(c) => vec!["CMD-SHELL", c],
        };
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for HealthTest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v: Vec<String> = Vec::deserialize(d)?;
        let mut it = v.into_iter();
        match it.next().as_deref() {
            None => Ok(HealthTest::Inherit),
            Some("NONE") => Ok(HealthTest::None),
            Some("CMD") => Ok(HealthTest::Cmd(it.collect())),
            Some("CMD-SHELL") => Ok(HealthTest::CmdShell(it.collect::<Vec<_>>().join(" "))),
            Some(other) => Err(D::Error::custom(format!(
                "healthcheck test must start with \"CMD\", \"CMD-SHELL\" or \"NONE\", not {other:?}"
            ))),
        }
    }
}

/// `healthcheck`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    /// `test`.
    #[serde(skip_serializing_if = "HealthTest::is_inherit")]
    pub test: HealthTest,
    /// `interval`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub interval: Option<Duration>,
    /// `timeout`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// `retries`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// `start_period`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub start_period: Option<Duration>,
    /// `start_interval`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub start_interval: Option<Duration>,
    /// `disable`.
    #[serde(skip_serializing_if = "is_false")]
    pub disable: bool,
}

/// `logging`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Logging {
    /// `driver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `options`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, Option<String>>,
}

/// A service's attachment to one network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceNetwork {
    /// `aliases`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// `interface_name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// `ipv4_address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// `ipv6_address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    /// `link_local_ips`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    /// `mac_address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `driver_opts`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// `priority`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// `gw_priority`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw_priority: Option<i64>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// A `ports` entry (long form).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServicePort {
    /// `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `mode` (`ingress` or `host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `host_ip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Container port.
    pub target: u32,
    /// Host port or range, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// `protocol` (`tcp`, `udp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `app_protocol`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// The kind of a service volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    /// A host path.
    Bind,
    /// A named or anonymous volume.
    #[default]
    Volume,
    /// A tmpfs.
    Tmpfs,
    /// A Windows named pipe.
    Npipe,
    /// A cluster volume.
    Cluster,
    /// An image mounted as a volume.
    Image,
}

/// A `volumes` entry of a service (long form).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceVolume {
    /// `type`.
    #[serde(rename = "type")]
    pub kind: VolumeKind,
    /// `source` (host path or volume name; absent for anonymous volumes and tmpfs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `target`.
    pub target: String,
    /// `read_only`.
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `consistency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// `bind` options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<VolumeBind>,
    /// `volume` options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeVolume>,
    /// `tmpfs` options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<VolumeTmpfs>,
    /// `image` options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<VolumeImage>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// `volumes[].bind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeBind {
    /// `propagation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// `create_host_path` (default true, as for the short syntax; printed only when false).
    #[serde(skip_serializing_if = "is_true")]
    pub create_host_path: bool,
    /// `recursive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursive: Option<String>,
    /// `selinux` (`z` or `Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
}

impl Default for VolumeBind {
    fn default() -> Self {
        VolumeBind {
            propagation: None,
            create_host_path: true,
            recursive: None,
            selinux: None,
        }
    }
}

/// `volumes[].volume`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeVolume {
    /// `nocopy`.
    #[serde(skip_serializing_if = "is_false")]
    pub nocopy: bool,
    /// `subpath`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// `volumes[].tmpfs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeTmpfs {
    /// `size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    /// `mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

/// `volumes[].image`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeImage {
    /// `subpath`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// A `ulimits` entry: one value for soft and hard, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ulimit {
    /// Soft and hard limit the same.
    Single(i64),
    /// Separate soft and hard limits (either may be left out in an override).
    Pair {
        /// `soft`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        soft: Option<i64>,
        /// `hard`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hard: Option<i64>,
    },
}

/// A `post_start` / `pre_stop` hook.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceHook {
    /// `command`.
    pub command: Vec<String>,
    /// `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `privileged`.
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// `working_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `environment`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
}

/// A top-level network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// `name` (the engine's name; defaults to `project_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `driver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `driver_opts`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// `ipam`.
    #[serde(skip_serializing_if = "crate::emit::empty_ipam_in_yaml")]
    pub ipam: Ipam,
    /// `external`.
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    /// `internal`.
    #[serde(skip_serializing_if = "is_false")]
    pub internal: bool,
    /// `enable_ipv4`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_ipv4: Option<bool>,
    /// `enable_ipv6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_ipv6: Option<bool>,
    /// `attachable`.
    #[serde(skip_serializing_if = "is_false")]
    pub attachable: bool,
    /// `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// `networks.*.ipam`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Ipam {
    /// `driver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `config` pools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
    /// `options`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// One `ipam.config` pool.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IpamPool {
    /// `subnet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// `gateway`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `ip_range`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// `aux_addresses`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// A top-level volume.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Volume {
    /// `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `driver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `driver_opts`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// `external`.
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    /// `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// A top-level secret or config.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FileObject {
    /// `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `environment`: the variable holding the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `content` (configs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `external`.
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    /// `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `driver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `driver_opts`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// `template_driver`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_driver: Option<String>,
    /// `x-*` keys.
    #[serde(flatten, skip_deserializing)]
    pub extensions: Extensions,
}

/// A top-level secret.
pub type Secret = FileObject;
/// A top-level config.
pub type Config = FileObject;

/// A top-level `include` entry (long form); resolved by the loader, not kept.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Include {
    /// The file(s): the first is the main file, later ones override it.
    pub(crate) path: Vec<String>,
    /// The included project's directory (default: the main file's directory).
    pub(crate) project_directory: Option<String>,
    /// Dotenv files for the included project's interpolation.
    pub(crate) env_file: Vec<String>,
}
