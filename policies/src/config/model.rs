//! The sections of `perryconfig.toml` and their defaults (serde, `deny_unknown_fields`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::backends::BackendsConfig;
use crate::capability::ShellCapability;
use crate::error::KeyPath;
use crate::reference::ImageRef;
use crate::registry::RegistryConfig;
use crate::tier::{Tier, TierOverride};
use crate::trust::TrustPolicy;
use crate::units::{ByteSize, HumanDuration};

/// The parsed, validated configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[sandbox]`: where state lives and how sandboxes are made.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// `[trust]`: the trusted root and the trust rules.
    #[serde(default)]
    pub trust: TrustPolicy,
    /// `[registries."host:port"]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registries: BTreeMap<String, RegistryConfig>,
    /// `[tiers.<tier>]`: site tightening of the built-in tiers.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "tier_map"
    )]
    pub tiers: BTreeMap<Tier, TierOverride>,
    /// `[shellCapabilities.<name>]` (the name is fixed by the host programs).
    #[serde(
        default,
        rename = "shellCapabilities",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub capabilities: BTreeMap<String, ShellCapability>,
    /// `[shellCapabilityImages]`: capability name → image (verified like any other).
    #[serde(
        default,
        rename = "shellCapabilityImages",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub capability_images: BTreeMap<String, ImageRef>,
    /// `[service]`: the local API.
    #[serde(default)]
    pub service: ServiceConfig,
    /// `[audit]`: the tamper-evident log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[backends]`: the container backend for compose services and its per-host settings.
    #[serde(default, skip_serializing_if = "BackendsConfig::is_default")]
    pub backends: BackendsConfig,
}

/// `[sandbox]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Root of all state: verification cache, image store, root filesystems, leases.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The tier for `perry-sandbox run` and capabilities that name none; `hardened` or stricter.
    #[serde(default = "default_tier")]
    pub default_tier: Tier,
    /// Host uids (and gids) sandboxes are mapped to; never includes 0.
    #[serde(default)]
    pub uid_range: UidRange,
    /// Directories under which a request's `{workspace}` may lie. Empty: no workspace mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspace_roots: Vec<PathBuf>,
    /// Largest uncompressed size of one image layer.
    #[serde(default = "default_layer_size")]
    pub max_layer_size: ByteSize,
    /// Most entries (files, dirs, links) in one image layer.
    #[serde(default = "default_layer_entries")]
    pub max_layer_entries: u64,
}

/// A range of host ids: `{ start = 200000, count = 65536 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidRange {
    /// First host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

impl Default for UidRange {
    fn default() -> Self {
        Self {
            start: 200_000,
            count: 65_536,
        }
    }
}

/// `[service]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The Unix socket the API listens on.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Peer uids allowed to call the API (root is not implied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uids: Vec<u32>,
    /// Peer gids allowed to call the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_gids: Vec<u32>,
    /// The group that owns the socket (mode 0660), so that its members can connect at all;
    /// default: the service's own group. Peer credentials are still checked on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<u32>,
    /// Sandboxes run at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// Requests waiting beyond `max_concurrent`; more get 429.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    /// Largest request body.
    #[serde(default = "default_max_request")]
    pub max_request_size: ByteSize,
    /// Longest a request may take end to end.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Sandboxes started ahead per shape of run in use (image, tier, limits): a request binds
    /// its command to one and waits only for the command itself. Each serves one request and
    /// is never reused; an idle pool costs no CPU. 0 turns the pool off.
    #[serde(default = "default_pool")]
    pub pool: u32,
}

/// `[audit]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where `log.jsonl`, checkpoints and the signing key live; default `<state_dir>/audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Write a signed checkpoint after this many records.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// … or after this much time with unsigned records.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: HumanDuration,
    /// The checkpoint origin line (C2SP tlog-checkpoint), e.g. `perry.example.com/audit`.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Start a new log segment after this size.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
}

fn default_state_dir() -> PathBuf {
    "/var/lib/perry-sandbox".into()
}
fn default_tier() -> Tier {
    Tier::Hardened
}
fn default_layer_size() -> ByteSize {
    ByteSize::gib(4)
}
fn default_layer_entries() -> u64 {
    500_000
}
fn default_socket() -> PathBuf {
    "/run/perry-sandbox/api.sock".into()
}
fn default_max_concurrent() -> u32 {
    8
}
fn default_pool() -> u32 {
    2
}
/// Most sandboxes `[service] pool` may keep ahead per shape.
pub(super) const MAX_POOL: u32 = 16;
fn default_max_queue() -> u32 {
    64
}
fn default_max_request() -> ByteSize {
    ByteSize::mib(1)
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration::from_secs(120)
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_origin() -> String {
    "perry-sandbox.local/audit".into()
}
fn default_segment_size() -> ByteSize {
    ByteSize::mib(256)
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
            default_tier: default_tier(),
            uid_range: UidRange::default(),
            workspace_roots: Vec::new(),
            max_layer_size: default_layer_size(),
            max_layer_entries: default_layer_entries(),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            socket_group: None,
            max_concurrent: default_max_concurrent(),
            max_queue: default_max_queue(),
            max_request_size: default_max_request(),
            request_timeout: default_request_timeout(),
            pool: default_pool(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: None,
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval: default_checkpoint_interval(),
            origin: default_origin(),
            segment_size: default_segment_size(),
        }
    }
}

/// Deserialises `[tiers.*]` with string keys, so error paths keep the tier name
/// (`tiers.hardened.memory`) and unknown tiers get the usual "did you mean".
fn tier_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<Tier, TierOverride>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<Tier, TierOverride>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table of tier names")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let tier: Tier = key.parse().map_err(|_| {
                    serde::de::Error::unknown_variant(
                        &key,
                        &["default", "isolated", "hardened", "untrusted"],
                    )
                })?;
                out.insert(tier, map.next_value::<TierOverride>()?);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// A semantic problem found by [`Config::validate`], before it is located in the file.
pub(super) type Found = (KeyPath, String, Option<String>);

pub(super) const SHELLS: [&str; 8] = ["sh", "bash", "dash", "zsh", "ash", "ksh", "fish", "busybox"];
