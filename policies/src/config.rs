//! The whole `perryconfig.toml`: sections, defaults, loading and validation.
//!
//! Loading is two passes. Serde (with `deny_unknown_fields` everywhere) checks shape and types;
//! then [`Config::validate`] checks meaning (tiers only tighten, capabilities stay hardened,
//! plain HTTP only on loopback, …). Both passes report the key path, and the loader maps each
//! path back to a line and column in the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capability::{ShellCapability, WORKSPACE_PLACEHOLDER};
use crate::error::{nearest, ConfigError, KeyPath, PathSeg, Problem};
use crate::reference::ImageRef;
use crate::registry::{is_loopback_host, RegistryConfig};
use crate::tier::{NetworkPolicy, Tier, TierOverride};
use crate::trust::{TrustPolicy, TrustedRootSource};
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
type Found = (KeyPath, String, Option<String>);

const SHELLS: [&str; 8] = ["sh", "bash", "dash", "zsh", "ash", "ksh", "fish", "busybox"];

impl Config {
    /// Reads, parses and validates a configuration file. Relative paths inside it are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        let mut cfg = Self::from_bytes(&bytes, path)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        cfg.resolve_relative_paths(base);
        if cfg
            .registries
            .values()
            .any(RegistryConfig::has_inline_secret)
        {
            check_private(path)?;
        }
        Ok(cfg)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: origin.into(),
            problems,
        };
        let src = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                let (line, column) = line_col(
                    &String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
                    e.valid_up_to(),
                );
                return Err(invalid(vec![Problem {
                    line: Some(line),
                    column: Some(column),
                    path: KeyPath::default(),
                    message: "the file is not valid UTF-8 text".into(),
                    suggestion: None,
                }]));
            }
        };
        let cfg = parse(src).map_err(|p| invalid(vec![p]))?;
        let found = cfg.validate();
        if found.is_empty() {
            return Ok(cfg);
        }
        let doc = toml_edit::Document::parse(src).ok();
        let problems = found
            .into_iter()
            .map(|(path, message, suggestion)| {
                let (line, column) = doc
                    .as_ref()
                    .and_then(|d| locate(d.as_item(), &path.0))
                    .map(|off| line_col(src, off))
                    .unzip();
                Problem {
                    line,
                    column,
                    path,
                    message,
                    suggestion,
                }
            })
            .collect();
        Err(invalid(problems))
    }

    /// The audit directory: `[audit] dir`, else `<state_dir>/audit`.
    pub fn audit_dir(&self) -> PathBuf {
        self.audit
            .dir
            .clone()
            .unwrap_or_else(|| self.sandbox.state_dir.join("audit"))
    }

    /// The effective tier for a capability or run that asks for `requested` (or nothing).
    pub fn tier_or_default(&self, requested: Option<Tier>) -> Tier {
        requested.unwrap_or(self.sandbox.default_tier)
    }

    fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.sandbox.state_dir);
        self.sandbox.workspace_roots.iter_mut().for_each(fix);
        if let TrustedRootSource::Path(p) = &mut self.trust.trusted_root {
            fix(p);
        }
        for rule in &mut self.trust.rules {
            rule.keys.iter_mut().for_each(fix);
        }
        for reg in self.registries.values_mut() {
            if let Some(p) = &mut reg.docker_config {
                fix(p);
            }
        }
        fix(&mut self.service.socket);
        if let Some(d) = &mut self.audit.dir {
            fix(d);
        }
    }

    /// Checks what serde cannot: every rule that spans fields or compares with built-in tiers.
    /// Returns every problem found, each with its key path.
    pub fn validate(&self) -> Vec<Found> {
        let mut out: Vec<Found> = Vec::new();
        let mut err = |path: KeyPath, msg: String| out.push((path, msg, None));

        let sb = KeyPath::keys(&["sandbox"]);
        if self.sandbox.default_tier < Tier::Hardened {
            err(sb.key("default_tier"), format!(
                "`{}` is looser than `hardened`; capability runs are hardened unless configured stricter",
                self.sandbox.default_tier
            ));
        }
        let r = self.sandbox.uid_range;
        if r.start == 0 {
            err(sb.key("uid_range").key("start"), "0 maps sandboxes to host root, which disables RLIMIT_NPROC and much else; use an unprivileged range such as 200000".into());
        } else if r.count == 0 || r.start.checked_add(r.count).is_none() {
            err(
                sb.key("uid_range").key("count"),
                format!(
                    "range {}+{} is empty or past the largest uid",
                    r.start, r.count
                ),
            );
        }
        for (i, root) in self.sandbox.workspace_roots.iter().enumerate() {
            if !root.is_absolute() || root == Path::new("/") {
                err(
                    sb.key("workspace_roots").index(i),
                    format!(
                        "`{}` must be an absolute directory other than `/`",
                        root.display()
                    ),
                );
            }
        }

        let tp = KeyPath::keys(&["trust", "policy"]);
        for (i, rule) in self.trust.rules.iter().enumerate() {
            let p = tp.index(i);
            if rule.images.is_empty() {
                err(
                    p.key("images"),
                    "a trust policy must name at least one image glob".into(),
                );
            }
            if rule.keyless.is_empty() && rule.keys.is_empty() {
                err(p.clone(), "a trust policy needs at least one authority (`keyless` or `keys`); to deny images, leave them unmatched".into());
            }
            for (j, a) in rule.keyless.iter().enumerate() {
                let ap = p.key("keyless").index(j);
                if !(a.issuer.starts_with("https://") || a.issuer.starts_with("http://")) {
                    err(ap.key("issuer"), format!("`{}` is not an issuer URL (e.g. `https://token.actions.githubusercontent.com`)", a.issuer));
                }
                match (&a.subject, &a.subject_regex) {
                    (Some(_), Some(_)) => err(
                        ap.clone(),
                        "give `subject` or `subject_regex`, not both".into(),
                    ),
                    (None, None) => err(
                        ap.clone(),
                        "an identity needs `subject` (exact) or `subject_regex` (anchored regex)"
                            .into(),
                    ),
                    (None, Some(re))
                        if !(re.as_str().starts_with('^') && re.as_str().ends_with('$')) =>
                    {
                        err(
                            ap.key("subject_regex"),
                            format!(
                                "`{re}` must be anchored: write `^{}$`",
                                re.as_str().trim_start_matches('^').trim_end_matches('$')
                            ),
                        )
                    }
                    _ => {}
                }
            }
        }

        for (host, reg) in &self.registries {
            let p = KeyPath::keys(&["registries", host]);
            if ImageRef::parse(&format!("{host}/x"))
                .map(|r| r.registry() != host)
                .unwrap_or(true)
                || !host.contains(['.', ':']) && host != "localhost"
            {
                err(
                    p.clone(),
                    format!("`{host}` is not a registry host (expected `host` or `host:port`)"),
                );
            }
            if reg.insecure && !is_loopback_host(host) {
                err(p.key("insecure"), format!("plain HTTP is only allowed for loopback registries; `{host}` is not loopback"));
            }
            let methods = [
                reg.docker_config.is_some(),
                reg.username.is_some() || reg.password.is_some(),
                reg.token.is_some(),
            ];
            if methods.iter().filter(|m| **m).count() > 1 {
                err(
                    p.clone(),
                    "choose one of `docker_config`, `username`+`password` or `token`".into(),
                );
            }
            if reg.username.is_some() != reg.password.is_some() {
                err(p.clone(), "`username` and `password` go together".into());
            }
        }

        for (tier, ov) in &self.tiers {
            if let Err((field, why)) = ov.check_tightens(*tier) {
                err(KeyPath::keys(&["tiers", tier.name(), field]), why);
            }
        }

        for (name, cap) in &self.capabilities {
            self.validate_capability(name, cap, &mut err);
        }
        for name in self.capability_images.keys() {
            if !self.capabilities.contains_key(name) {
                let s = nearest(name, self.capabilities.keys().map(String::as_str));
                out.push((
                    KeyPath::keys(&["shellCapabilityImages", name]),
                    format!("no capability named `{name}` in [shellCapabilities]"),
                    s,
                ));
            }
        }

        let sv = KeyPath::keys(&["service"]);
        if self.service.max_concurrent == 0 {
            out.push((sv.key("max_concurrent"), "must be at least 1".into(), None));
        }
        if self.service.max_request_size.as_u64() < 1024 {
            out.push((
                sv.key("max_request_size"),
                "must be at least 1KiB".into(),
                None,
            ));
        }
        let au = KeyPath::keys(&["audit"]);
        if self.audit.checkpoint_every == 0 {
            out.push((
                au.key("checkpoint_every"),
                "must be at least 1".into(),
                None,
            ));
        }
        if self.audit.origin.is_empty()
            || self.audit.origin.contains(char::is_whitespace)
            || self.audit.origin.contains("://")
        {
            out.push((
                au.key("origin"),
                format!(
                    "`{}` must be a schema-less URL without spaces, e.g. `perry.example.com/audit`",
                    self.audit.origin
                ),
                None,
            ));
        }
        out
    }

    fn validate_capability(
        &self,
        name: &str,
        cap: &ShellCapability,
        err: &mut impl FnMut(KeyPath, String),
    ) {
        let p = KeyPath::keys(&["shellCapabilities", name]);
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            err(
                p.clone(),
                "capability names are 1-64 of [a-z0-9._-], starting with a letter or digit".into(),
            );
        }
        match cap.command.first() {
            None => err(
                p.key("command"),
                "must name a program to run, e.g. [\"git\", \"log\"]".into(),
            ),
            Some(prog) => {
                let base = prog.rsplit('/').next().unwrap_or(prog);
                if SHELLS.contains(&base) && cap.command.get(1).is_some_and(|a| a == "-c") {
                    err(p.key("command"), format!("`{base} -c` reintroduces a shell; capabilities run argv directly, list the program and its arguments instead"));
                }
                if prog.is_empty() {
                    err(
                        p.key("command").index(0),
                        "the program name is empty".into(),
                    );
                }
            }
        }
        if cap.tier < Tier::Hardened {
            err(
                p.key("tier"),
                format!(
                    "`{}` is looser than `hardened`; capabilities run at tier hardened or stricter",
                    cap.tier
                ),
            );
        }
        let spec = cap.tier.effective_spec(self.tiers.get(&cap.tier));
        if cap.network
            && !matches!(
                spec.network,
                NetworkPolicy::Allowed | NetworkPolicy::NoneUnlessGranted
            )
        {
            err(
                p.key("network"),
                format!("tier `{}` never allows network", cap.tier),
            );
        }
        let l = spec.limits;
        let over = |field: &str, got: String, max: String| {
            format!(
                "`{got}` exceeds tier `{}`'s {field} limit of {max}",
                cap.tier
            )
        };
        if let Some(t) = cap.timeout {
            if t > l.timeout {
                err(
                    p.key("timeout"),
                    over("timeout", t.to_string(), l.timeout.to_string()),
                );
            }
        }
        if let Some(m) = cap.memory {
            if m > l.memory {
                err(
                    p.key("memory"),
                    over("memory", m.to_string(), l.memory.to_string()),
                );
            }
        }
        if let Some(n) = cap.pids {
            if n == 0 || n > l.pids {
                err(
                    p.key("pids"),
                    over("pids", n.to_string(), l.pids.to_string()),
                );
            }
        }
        if let Some(o) = cap.output_limit {
            if o > l.output {
                err(
                    p.key("output_limit"),
                    over("output", o.to_string(), l.output.to_string()),
                );
            }
        }
        for (i, pos) in cap.args.positions.iter().enumerate() {
            let pp = p.key("args").key("positions").index(i);
            if pos.pattern.is_some() != pos.one_of.is_empty() {
                err(
                    pp.clone(),
                    "give exactly one of `pattern` or `one_of`".into(),
                );
            }
            if i >= cap.args.max {
                err(
                    pp,
                    format!(
                        "position {i} can never be used: args.max is {}",
                        cap.args.max
                    ),
                );
            }
        }
        for (i, m) in cap.mounts.iter().enumerate() {
            let mp = p.key("mounts").index(i);
            let src_ok = m.source == WORKSPACE_PLACEHOLDER
                || m.source
                    .strip_prefix(WORKSPACE_PLACEHOLDER)
                    .is_some_and(|r| r.starts_with('/') && !r.split('/').any(|c| c == ".."))
                || (m.source.starts_with('/')
                    && !m.source.contains(WORKSPACE_PLACEHOLDER)
                    && !m.source.split('/').any(|c| c == ".."));
            if !src_ok {
                err(
                    mp.key("source"),
                    format!(
                        "`{}` must be an absolute path or `{{workspace}}[/sub/dir]`, without `..`",
                        m.source
                    ),
                );
            }
            let t = &m.target;
            let bad_target = !t.starts_with('/')
                || t == "/"
                || t.split('/').any(|c| c == "..")
                || ["/proc", "/sys", "/dev"]
                    .iter()
                    .any(|s| t == s || t.starts_with(&format!("{s}/")));
            if bad_target {
                err(mp.key("target"), format!("`{t}` must be an absolute path inside the sandbox, not `/`, /proc, /sys or /dev"));
            }
        }
        let var_ok = |v: &str| {
            !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !v.as_bytes()[0].is_ascii_digit()
        };
        for (i, v) in cap.env.pass.iter().enumerate() {
            if !var_ok(v) {
                err(
                    p.key("env").key("pass").index(i),
                    format!("`{v}` is not a variable name"),
                );
            } else if v.starts_with("LD_") {
                err(p.key("env").key("pass").index(i), format!("`{v}` changes how programs are loaded and may not be passed from a request"));
            }
        }
        for k in cap.env.set.keys() {
            if !var_ok(k) {
                err(
                    p.key("env").key("set").key(k),
                    format!("`{k}` is not a variable name"),
                );
            }
        }
        if let Some(w) = &cap.workdir {
            if !w.starts_with('/') {
                err(p.key("workdir"), format!("`{w}` must be an absolute path"));
            }
        }
    }
}

/// Parses TOML into a [`Config`], returning a located problem for the first shape error.
fn parse(src: &str) -> Result<Config, Problem> {
    let de =
        toml::Deserializer::parse(src).map_err(|e| toml_problem(src, &e, KeyPath::default()))?;
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let path = KeyPath(
            e.path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                    serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                    serde_path_to_error::Segment::Enum { variant } => {
                        Some(PathSeg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect(),
        );
        toml_problem(src, e.inner(), path)
    })
}

fn toml_problem(src: &str, e: &toml::de::Error, path: KeyPath) -> Problem {
    let (line, column) = e.span().map(|s| line_col(src, s.start)).unzip();
    let message = e.message().trim().to_string();
    let suggestion = suggest_from_serde_message(&message);
    let path = match unknown_name(&message) {
        // serde reports an unknown field at its parent; name the key itself.
        Some(("field", key)) if path.0.last() != Some(&PathSeg::Key(key.to_string())) => {
            path.key(key)
        }
        _ => path,
    };
    let message = tidy_message(&message);
    Problem {
        line,
        column,
        path,
        message,
        suggestion,
    }
}

/// `unknown field `x`, expected …` → ("field", "x"); same for variants.
fn unknown_name(msg: &str) -> Option<(&'static str, &str)> {
    for kind in ["field", "variant"] {
        if let Some(rest) = msg.strip_prefix(&format!("unknown {kind} `")) {
            return rest.split('`').next().map(|n| (kind, n));
        }
    }
    None
}

fn expected_names(msg: &str) -> Vec<&str> {
    let Some((_, tail)) = msg.split_once(", expected ") else {
        return Vec::new();
    };
    tail.split('`').skip(1).step_by(2).collect()
}

fn suggest_from_serde_message(msg: &str) -> Option<String> {
    let (_, name) = unknown_name(msg)?;
    nearest(name, expected_names(msg))
}

fn tidy_message(msg: &str) -> String {
    match unknown_name(msg) {
        Some((kind, name)) => {
            let what = if kind == "field" { "key" } else { "value" };
            let valid = expected_names(msg);
            if valid.is_empty() {
                format!("unknown {what} `{name}`")
            } else {
                format!("unknown {what} `{name}` (valid: {})", valid.join(", "))
            }
        }
        None => msg.to_string(),
    }
}

/// The byte offset of the key (or value) at `path` in a parsed document.
fn locate(item: &toml_edit::Item, path: &[PathSeg]) -> Option<usize> {
    let here = item.span().map(|s| s.start);
    let Some((seg, rest)) = path.split_first() else {
        return here;
    };
    match seg {
        PathSeg::Key(k) => {
            let (key, next) = item.as_table_like()?.get_key_value(k)?;
            locate(next, rest).or_else(|| key.span().map(|s| s.start))
        }
        PathSeg::Index(i) => {
            if let Some(aot) = item.as_array_of_tables() {
                let t = aot.get(*i)?;
                return locate_in_table(t, rest).or_else(|| t.span().map(|s| s.start));
            }
            let v = item.as_array()?.get(*i)?;
            locate_value(v, rest).or(here)
        }
    }
}

fn locate_value(v: &toml_edit::Value, path: &[PathSeg]) -> Option<usize> {
    let here = v.span().map(|s| s.start);
    let Some((seg, rest)) = path.split_first() else {
        return here;
    };
    match (seg, v) {
        (PathSeg::Key(k), toml_edit::Value::InlineTable(t)) => {
            let (key, next) = t.get_key_value(k)?;
            let at_key = key.span().map(|s| s.start);
            match next.as_value() {
                Some(nv) => locate_value(nv, rest).or(at_key),
                None => at_key,
            }
        }
        (PathSeg::Index(i), toml_edit::Value::Array(a)) => {
            a.get(*i).and_then(|x| locate_value(x, rest)).or(here)
        }
        _ => here,
    }
}

fn locate_in_table(t: &toml_edit::Table, rest: &[PathSeg]) -> Option<usize> {
    let Some((PathSeg::Key(k), rest)) = rest.split_first() else {
        return t.span().map(|s| s.start);
    };
    let (key, item) = t.get_key_value(k)?;
    locate(item, rest).or_else(|| key.span().map(|s| s.start))
}

/// 1-based line and character column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..src.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// A file holding inline registry secrets must not be readable by group or others.
fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.into(),
        source,
    })?;
    if meta.mode() & 0o077 != 0 {
        return Err(ConfigError::Invalid {
            file: path.into(),
            problems: vec![Problem {
                line: None,
                column: None,
                path: KeyPath::keys(&["registries"]),
                message: format!(
                    "the file holds registry credentials but has mode {:o}; run `chmod 600 {}` (or use `docker_config`)",
                    meta.mode() & 0o777,
                    path.display()
                ),
                suggestion: None,
            }],
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_valid_and_denies_everything() {
        let c = Config::from_bytes(b"", Path::new("x.toml")).unwrap();
        assert!(c.trust.rules.is_empty());
        assert_eq!(c.sandbox.default_tier, Tier::Hardened);
        assert!(c
            .trust
            .rules_for(&ImageRef::parse("busybox").unwrap())
            .is_empty());
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\nbé c", 5), (2, 3));
        assert_eq!(line_col("a\nbé c", 6), (2, 4));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
