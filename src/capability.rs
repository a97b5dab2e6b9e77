//! Shell capabilities: the named commands a host program's ShellBridge may invoke.
//!
//! A capability (`[shellCapabilities.<name>]` in `perryconfig.toml`) is an argv template, rules
//! for the arguments a caller may append, an image, a tier (`hardened` or stricter), mounts and
//! limits. An invocation is checked in this order, and the first failure ends it before any
//! image is touched or any sandbox exists:
//!
//! 1. the capability exists;
//! 2. the caller's arguments satisfy the rules (max count, pattern, per-position rules, denied
//!    values) — the violated rule is named in the error;
//! 3. the workspace (when the capability mounts `{workspace}`) is absolute, exists, and lies
//!    under one of `[sandbox] workspace_roots` after resolving symlinks;
//! 4. the image — the capability's own, else `[shellCapabilityImages]`, else the Chainguard
//!    image for the tool, else `cgr.dev/chainguard/alpine-base` — is verified (through the
//!    cache); a refusal creates nothing.
//!
//! Then [`crate::exec::Executor`] records the allow decision and runs the command in a new,
//! ephemeral, read-only sandbox that is removed on exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use perry_audit::{Action, Actor, Correlation, Decision, Event};
use perry_policies::capability::WORKSPACE_PLACEHOLDER;
use perry_policies::{Code, ImageRef, ShellCapability};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::exec::{
    BindMount, DeniedSyscall, ExecError, ExecOutcome, ExecRequest, Executor, Prepared,
};

/// Tools with a Chainguard image of the same name (`cgr.dev/chainguard/<tool>`), used when a
/// capability names no image and `[shellCapabilityImages]` has none for it.
pub const CHAINGUARD_TOOLS: &[&str] = &[
    "bash", "busybox", "cosign", "crane", "curl", "git", "go", "helm", "jq", "kubectl", "node",
    "python", "ruby", "wget", "yq",
];

/// The image for a command no other rule covers.
pub const FALLBACK_IMAGE: &str = "cgr.dev/chainguard/alpine-base:latest";

/// One invocation's input.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityRequest {
    /// Arguments appended to the capability's command, checked against its rules.
    #[serde(default)]
    pub args: Vec<String>,
    /// Host directory for `{workspace}` mounts.
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Bytes for the command's stdin (UTF-8 text in the API).
    #[serde(default)]
    pub stdin: Option<String>,
    /// A wall-clock limit tighter than the capability's (e.g. `"2s"`).
    #[serde(default)]
    pub timeout: Option<perry_policies::HumanDuration>,
    /// Values for the variables the capability's `env.pass` names; others are ignored.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl CapabilityRequest {
    /// A request with these arguments and nothing else.
    pub fn new(args: Vec<String>) -> Self {
        Self {
            args,
            ..Self::default()
        }
    }

    /// The same request with a workspace directory.
    pub fn workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workspace = Some(dir.into());
        self
    }
}

/// What one invocation produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityOutcome {
    /// The capability invoked.
    pub capability: String,
    /// Standard output (up to the output limit; lossy UTF-8).
    pub stdout: String,
    /// Standard error (up to the output limit; lossy UTF-8).
    pub stderr: String,
    /// The exit code, when the command exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when it was killed.
    pub signal: Option<i32>,
    /// True when stdout or stderr was cut at the output limit.
    pub truncated: bool,
    /// True when the wall-clock limit killed the process tree.
    pub timed_out: bool,
    /// True when the memory limit was hit.
    pub oom_killed: bool,
    /// Milliseconds from the request to the end of the run.
    pub duration_ms: u64,
    /// The platform manifest digest that ran.
    pub image_digest: String,
    /// The image as configured.
    pub image: String,
    /// Syscalls seccomp refused during the run.
    pub denied_syscalls: Vec<DeniedCall>,
    /// Sequence number of the allow record in the audit log.
    pub audit_seq: u64,
    /// Whether the image's verification was answered from the cache.
    pub cache_hit: bool,
    /// Whether the sandbox was started ahead of the request (the service's warm pool) rather
    /// than for it; either way it served this request alone.
    #[serde(default)]
    pub warm: bool,
}

/// One capability as `GET /v1/capabilities` and `cap list --json` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitySummary {
    /// The capability name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The image it runs in.
    pub image: String,
    /// Its policy tier.
    pub tier: String,
    /// The most arguments a caller may pass.
    pub max_args: usize,
}

/// A syscall seccomp refused, in the outcome's wire form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedCall {
    /// The syscall name.
    pub name: String,
    /// The errno returned.
    pub errno: u32,
    /// How often.
    pub count: u64,
}

impl From<&DeniedSyscall> for DeniedCall {
    fn from(d: &DeniedSyscall) -> Self {
        Self {
            name: d.name.clone(),
            errno: d.errno,
            count: d.count,
        }
    }
}

/// Why an invocation did not run. Nothing ran in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// No capability of that name is configured.
    #[error("no capability named `{name}`{} (configured: {known})", did_you_mean(.suggestion))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The configured name closest to it, if one is close.
        suggestion: Option<String>,
        /// The configured names.
        known: String,
    },
    /// The arguments broke a rule.
    #[error("capability `{name}`: {violation}")]
    Arguments {
        /// The capability.
        name: String,
        /// The rule broken, in words.
        violation: String,
    },
    /// The workspace is missing, relative, absent, or outside the allowed roots.
    #[error("capability `{name}`: workspace: {reason}")]
    Workspace {
        /// The capability.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Verification, pulling, profiling or sandbox setup refused or failed.
    #[error("capability `{name}`: {source}")]
    Exec {
        /// The capability.
        name: String,
        /// What failed.
        source: Box<ExecError>,
    },
    /// The run was lost (its blocking task panicked or was cancelled).
    #[error("capability `{name}`: the run was lost: {reason}")]
    Lost {
        /// The capability.
        name: String,
        /// What happened.
        reason: String,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(", did you mean `{s}`?"))
        .unwrap_or_default()
}

impl CapabilityError {
    /// The error's code in the one table.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound { .. } => Code::NotFound,
            Self::Arguments { .. } => Code::ArgumentDenied,
            Self::Workspace { .. } => Code::WorkspaceDenied,
            Self::Exec { source, .. } => source.code(),
            Self::Lost { .. } => Code::Internal,
        }
    }

    /// The HTTP-like status of [`CapabilityError::code`].
    pub fn status(&self) -> u16 {
        self.code().status()
    }
}

impl From<&CapabilityError> for ApiError {
    fn from(e: &CapabilityError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

/// Where a capability's image came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageChoice {
    /// The capability's own `image`.
    Capability,
    /// `[shellCapabilityImages]`.
    CapabilityImages,
    /// The Chainguard image named after the tool.
    ChainguardTool,
    /// [`FALLBACK_IMAGE`].
    Fallback,
}

/// The capabilities whose image is named by tag while `[trust] tag_ttl` is zero, with that
/// image: each call asks the registry where the tag points now (a round trip per call, and a
/// service that fails when the registry is down). `serve` warns about them at start.
pub fn resolved_at_every_call(config: &perry_policies::Config) -> Vec<(String, ImageRef)> {
    if !config.trust.tag_ttl.as_std().is_zero() {
        return Vec::new();
    }
    config
        .capabilities
        .iter()
        .map(|(name, cap)| (name.clone(), image_for(config, name, cap).0))
        .filter(|(_, image)| image.digest().is_none())
        .collect()
}

/// The image a capability runs in, and why that one.
pub fn image_for(
    config: &perry_policies::Config,
    name: &str,
    cap: &ShellCapability,
) -> (ImageRef, ImageChoice) {
    if let Some(i) = &cap.image {
        return (i.clone(), ImageChoice::Capability);
    }
    if let Some(i) = config.capability_images.get(name) {
        return (i.clone(), ImageChoice::CapabilityImages);
    }
    let tool = cap
        .command
        .first()
        .and_then(|c| Path::new(c).file_name())
        .and_then(|c| c.to_str())
        .map(|t| if t == "python3" { "python" } else { t });
    if let Some(t) = tool.filter(|t| CHAINGUARD_TOOLS.contains(t)) {
        if let Ok(r) = ImageRef::parse(&format!("cgr.dev/chainguard/{t}:latest")) {
            return (r, ImageChoice::ChainguardTool);
        }
    }
    let fallback = ImageRef::parse(FALLBACK_IMAGE).expect("FALLBACK_IMAGE is a valid reference");
    (fallback, ImageChoice::Fallback)
}

/// The configured capabilities, run through one shared [`Executor`].
#[derive(Clone, Debug)]
pub struct Capabilities {
    executor: Arc<Executor>,
}

impl Capabilities {
    /// Capabilities of the executor's configuration.
    pub fn new(executor: Arc<Executor>) -> Self {
        Self { executor }
    }

    /// The executor invocations run through.
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// Every configured capability, in name order.
    pub fn summaries(&self) -> Vec<CapabilitySummary> {
        let config = self.executor.config();
        config
            .capabilities
            .iter()
            .map(|(name, cap)| CapabilitySummary {
                name: name.clone(),
                description: cap.description.clone(),
                image: image_for(config, name, cap).0.to_string(),
                tier: cap.tier.to_string(),
                max_args: cap.args.max,
            })
            .collect()
    }

    /// The configured capability `name`.
    pub fn get(&self, name: &str) -> Result<&ShellCapability, CapabilityError> {
        let caps = &self.executor.config().capabilities;
        caps.get(name).ok_or_else(|| CapabilityError::NotFound {
            name: name.to_string(),
            suggestion: perry_policies::error::nearest(name, caps.keys().map(String::as_str)),
            known: if caps.is_empty() {
                "none".into()
            } else {
                caps.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })
    }

    /// Checks an invocation and turns it into an execution request: arguments, workspace and
    /// mounts, environment, limits. Records a denial for anything refused here.
    pub fn plan(
        &self,
        name: &str,
        req: &CapabilityRequest,
        actor: &Actor,
        correlation: &Correlation,
    ) -> Result<ExecRequest, CapabilityError> {
        let result = self.plan_unrecorded(name, req, actor, correlation);
        if let Err(e) = &result {
            let ev = Event::new(Action::Capability, Decision::Deny)
                .actor(actor.clone())
                .correlation(correlation)
                .capability(name.to_string())
                .command(req.args.iter())
                .reason(e.to_string());
            self.executor
                .audit()
                .record(ev)
                .map_err(|a| CapabilityError::Exec {
                    name: name.to_string(),
                    source: Box::new(ExecError::Audit(a)),
                })?;
        }
        result
    }

    fn plan_unrecorded(
        &self,
        name: &str,
        req: &CapabilityRequest,
        actor: &Actor,
        correlation: &Correlation,
    ) -> Result<ExecRequest, CapabilityError> {
        let cap = self.get(name)?;
        cap.check_args(&req.args)
            .map_err(|v| CapabilityError::Arguments {
                name: name.to_string(),
                violation: v.to_string(),
            })?;
        let config = self.executor.config();
        let mounts = self.mounts(name, cap, req.workspace.as_deref())?;
        let (image, _) = image_for(config, name, cap);
        let mut argv = cap.command.clone();
        argv.extend(req.args.iter().cloned());
        let mut env: Vec<(String, String)> = cap
            .env
            .set
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for k in &cap.env.pass {
            if let Some(v) = req.env.get(k) {
                env.push((k.clone(), v.clone()));
            }
        }
        let mut exec = ExecRequest::new(image, cap.tier, argv);
        exec.env = env;
        exec.mounts = mounts;
        exec.workdir = cap.workdir.as_ref().map(PathBuf::from);
        exec.timeout = match (cap.timeout, req.timeout) {
            (Some(a), Some(b)) => Some(a.as_std().min(b.as_std())),
            (a, b) => a.or(b).map(|d| d.as_std()),
        };
        exec.memory = cap.memory.map(|m| m.as_u64());
        exec.pids = cap.pids;
        exec.output_limit = cap.output_limit.map(|o| o.as_u64());
        exec.network = cap.network;
        exec.stdin = req.stdin.as_ref().map(|s| s.clone().into_bytes());
        exec.actor = actor.clone();
        exec.correlation = correlation.clone();
        exec.action = Action::Capability;
        exec.capability = Some(name.to_string());
        Ok(exec)
    }

    /// The capability's mounts with `{workspace}` resolved. The workspace must be absolute,
    /// exist, be a directory, and lie strictly below a configured workspace root once symlinks
    /// are resolved (the root itself holds everyone's workspaces); sub-paths must stay inside it.
    ///
    /// Every workspace mount is [pinned](BindMount::pinned): opened once, checked by the path the
    /// open file really has, and mounted as that open file. A symlink swapped into the path
    /// after the check cannot redirect the mount.
    fn mounts(
        &self,
        name: &str,
        cap: &ShellCapability,
        workspace: Option<&Path>,
    ) -> Result<Vec<BindMount>, CapabilityError> {
        let bad = |reason: String| CapabilityError::Workspace {
            name: name.to_string(),
            reason,
        };
        let wants = cap
            .mounts
            .iter()
            .any(|m| m.source.starts_with(WORKSPACE_PLACEHOLDER));
        let ws = match (wants, workspace) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(bad("this capability mounts no workspace; omit it".into()))
            }
            (true, None) => {
                return Err(bad(
                    "this capability mounts {workspace}; the request must name one".into(),
                ))
            }
            (true, Some(w)) => Some(self.check_workspace(w).map_err(bad)?),
        };
        let mut out = Vec::new();
        for m in &cap.mounts {
            let mount = match m.source.strip_prefix(WORKSPACE_PLACEHOLDER) {
                Some(rest) => {
                    let ws = ws.as_ref().expect("checked above");
                    let sub = rest.trim_start_matches('/');
                    if sub.is_empty() {
                        // The workspace itself: the directory already opened and checked.
                        out.push(BindMount {
                            target: PathBuf::from(&m.target),
                            read_only: m.read_only,
                            ..ws.clone()
                        });
                        continue;
                    }
                    let joined = ws.source.join(sub);
                    let mount = BindMount::pinned(&joined, &m.target, m.read_only)
                        .map_err(|e| bad(format!("{}: {e}", joined.display())))?;
                    if !mount.source.starts_with(&ws.source) {
                        return Err(bad(format!(
                            "{} resolves to {}, outside the workspace",
                            joined.display(),
                            mount.source.display()
                        )));
                    }
                    mount
                }
                None => {
                    let mut mount = BindMount::read_only(&m.source, &m.target);
                    mount.read_only = m.read_only;
                    mount
                }
            };
            out.push(mount);
        }
        Ok(out)
    }

    /// The workspace opened once ([`BindMount::pinned`]; its `source` is the real path of the
    /// directory opened, which is what is checked here), or why it is refused.
    fn check_workspace(&self, w: &Path) -> Result<BindMount, String> {
        if !w.is_absolute() {
            return Err(format!("{} is not an absolute path", w.display()));
        }
        let pinned =
            BindMount::pinned(w, "/", true).map_err(|e| format!("{}: {e}", w.display()))?;
        let real = &pinned.source;
        if !real.is_dir() {
            return Err(format!("{} is not a directory", w.display()));
        }
        let roots = &self.executor.config().sandbox.workspace_roots;
        // Strictly below a root: the root itself holds everyone's workspaces.
        let allowed = roots.iter().any(|r| {
            std::fs::canonicalize(r)
                .map(|r| real.starts_with(&r) && *real != r)
                .unwrap_or(false)
        });
        if !allowed {
            return Err(format!(
                "{} is not under an allowed workspace root ({})",
                real.display(),
                if roots.is_empty() {
                    "none configured: set [sandbox] workspace_roots".to_string()
                } else {
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
        Ok(pinned)
    }

    /// Checks, verifies, pulls and profiles an invocation: everything before the act.
    pub async fn prepare(
        &self,
        name: &str,
        req: &CapabilityRequest,
        actor: &Actor,
        correlation: &Correlation,
    ) -> Result<Prepared, CapabilityError> {
        let exec = self.plan(name, req, actor, correlation)?;
        self.executor
            .prepare(exec)
            .await
            .map_err(|source| CapabilityError::Exec {
                name: name.to_string(),
                source: Box::new(source),
            })
    }

    /// Runs a prepared invocation on a blocking thread and shapes its outcome.
    pub async fn launch(
        &self,
        name: &str,
        prepared: Prepared,
    ) -> Result<CapabilityOutcome, CapabilityError> {
        let executor = Arc::clone(&self.executor);
        let done = tokio::task::spawn_blocking(move || executor.launch(prepared))
            .await
            .map_err(|e| CapabilityError::Lost {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        let out = done.map_err(|source| CapabilityError::Exec {
            name: name.to_string(),
            source: Box::new(source),
        })?;
        Ok(outcome(name, &out))
    }

    /// Invokes capability `name` as the current process (see the module docs for the checks).
    pub async fn run_capability(
        &self,
        name: &str,
        req: CapabilityRequest,
    ) -> Result<CapabilityOutcome, CapabilityError> {
        self.run_as(name, &req, &Actor::current(), &Correlation::new())
            .await
    }

    /// Invokes capability `name` on behalf of `actor` (the API's peer).
    pub async fn run_as(
        &self,
        name: &str,
        req: &CapabilityRequest,
        actor: &Actor,
        correlation: &Correlation,
    ) -> Result<CapabilityOutcome, CapabilityError> {
        let prepared = self.prepare(name, req, actor, correlation).await?;
        self.launch(name, prepared).await
    }
}

/// Shapes an [`ExecOutcome`] for callers.
fn outcome(name: &str, out: &ExecOutcome) -> CapabilityOutcome {
    let r = &out.run;
    CapabilityOutcome {
        capability: name.to_string(),
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        exit_code: r.exit_code,
        signal: r.signal,
        truncated: r.stdout_truncated || r.stderr_truncated,
        timed_out: r.timed_out,
        oom_killed: r.oom_killed,
        duration_ms: out.duration.as_millis() as u64,
        image_digest: out.digest.to_string(),
        image: out.image.clone(),
        denied_syscalls: r.denied_syscalls.iter().map(DeniedCall::from).collect(),
        audit_seq: out.audit_seq,
        cache_hit: out.cache_hit,
        warm: out.warm,
    }
}

/// What a host program grants one container invocation.
#[derive(Clone, Debug, Default)]
pub struct ContainerGrants {
    /// The workspace directory for `{workspace}` mounts.
    pub workspace: Option<PathBuf>,
    /// Bytes for stdin.
    pub stdin: Option<String>,
    /// A wall-clock limit tighter than the capability's.
    pub timeout: Option<Duration>,
}

/// The output of a container invocation, as host programs receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLogs {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command's status (128 + signal when it was killed).
    pub exit_code: i32,
}

/// A failed container invocation: a stable code, an HTTP-like status and a message.
pub type ContainerError = ApiError;

/// The host-program contract: run capability `name` from `image` with the full command `cmd`.
///
/// `cmd` must begin with the capability's command template; what follows is checked as the
/// caller's arguments. `image` may be empty or name the configured image's repository (a host
/// program passing along its own copy of `shellCapabilityImages`); the configured reference is
/// what runs, verified like every image. Another repository is refused (`policy_denied`), so a
/// caller cannot move a capability into an image of its choosing.
pub async fn perry_container_run_capability(
    caps: &Capabilities,
    name: &str,
    image: &str,
    cmd: &[String],
    grants: ContainerGrants,
) -> Result<ContainerLogs, ContainerError> {
    let cap = caps.get(name).map_err(|e| ApiError::from(&e))?;
    let template = &cap.command;
    if cmd.len() < template.len() || cmd[..template.len()] != template[..] {
        return Err(ApiError::new(
            Code::ArgumentDenied,
            format!(
                "capability `{name}`: the command must start with {:?}, got {:?}",
                template, cmd
            ),
        ));
    }
    if !image.is_empty() {
        let (configured, _) = image_for(caps.executor().config(), name, cap);
        let asked = ImageRef::parse(image)
            .map_err(|e| ApiError::new(Code::InvalidArgument, format!("image {image:?}: {e}")))?;
        if asked.name() != configured.name() {
            return Err(ApiError::new(
                Code::PolicyDenied,
                format!(
                    "capability `{name}` runs in {}, not {}",
                    configured.name(),
                    asked.name()
                ),
            ));
        }
    }
    let req = CapabilityRequest {
        args: cmd[template.len()..].to_vec(),
        workspace: grants.workspace,
        stdin: grants.stdin,
        timeout: grants.timeout.map(perry_policies::HumanDuration::from_std),
        env: BTreeMap::new(),
    };
    let out = caps
        .run_capability(name, req)
        .await
        .map_err(|e| ApiError::from(&e))?;
    let exit_code = match (out.exit_code, out.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => i32::from(crate::exec::EXIT_REFUSED),
    };
    Ok(ContainerLogs {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> perry_policies::Config {
        perry_policies::Config::from_bytes(toml.as_bytes(), Path::new("perryconfig.toml"))
            .expect("test config")
    }

    const CAPS: &str = r#"
[shellCapabilities.by_tag]
command = ["echo"]
image = "registry.example/tools/echo:v1"

[shellCapabilities.pinned]
command = ["echo"]
image = "registry.example/tools/echo@sha256:0000000000000000000000000000000000000000000000000000000000000000"
"#;

    #[test]
    fn a_tag_with_no_ttl_is_resolved_at_every_call_and_a_digest_never() {
        let found = resolved_at_every_call(&config(CAPS));
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["by_tag"]);
        assert_eq!(found[0].1.to_string(), "registry.example/tools/echo:v1");
    }

    #[test]
    fn a_tag_ttl_reuses_resolutions_so_nothing_is_resolved_at_every_call() {
        let with_ttl = format!("[trust]\ntag_ttl = \"10m\"\n{CAPS}");
        assert!(resolved_at_every_call(&config(&with_ttl)).is_empty());
    }
}
