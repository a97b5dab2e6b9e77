//! Verified execution: the one path from an image reference to a finished sandboxed command.
//!
//! ```text
//! ExecRequest ─ prepare ─> verify (the gate) ─> pull by digest ─> unpack ─> profile for the tier
//!             ─ launch ──> audit record (durable) ─> native sandbox run ─> ExecOutcome
//! ```
//!
//! Both `perry-sandbox run` and every capability invocation come through [`Executor`], so the
//! guarantees are made in one place: nothing runs unless the verifier produced a
//! [`perry_verifier::VerifiedImage`] for it (there is no other input to the puller), any error
//! before the command starts means nothing runs, every refusal and every start is on the audit
//! log, and the allow record is durable before the sandbox exists.
//!
//! The work is split in two so a service can keep its async workers free: [`Executor::prepare`]
//! (async: verification, registry I/O, unpacking) and [`Executor::launch`] (blocking: the
//! sandbox itself, run it on a blocking thread).
//!
//! Profiles are compiled once per (tier, grants) and reused: building a seccomp program costs
//! milliseconds, reusing one costs nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perry_audit::{Actor, AuditError, AuditSink, Correlation, Decision, Event};
use perry_policies::{Config, Digest, ImageRef, Tier};
use perry_profiles::{Grants, NetworkGrant, NetworkMode, Profile, ProfileError};
use perry_runtime::manifest::ImageConfig;
use perry_runtime::native::{
    self, BindMount, LeaseConfig, Limits, LiveOutput, ProfileStep, RunSpec,
};
use perry_runtime::pull::{ImageStore, PullError, PullProgress};
use perry_verifier::registry::Platform;
use perry_verifier::{ImageSource, Verification, Verifier, VerifyError};

use crate::error::ApiError;

/// Exit status when perry-sandbox refuses or fails before the command starts (like `docker run`).
pub const EXIT_REFUSED: i32 = 125;

/// What to run, where from, and what it is granted. Limits here only tighten the tier's.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// Where the image comes from (a registry reference, `oci:DIR[:tag]` or
    /// `oci-archive:FILE[:tag]`); verified before anything else.
    pub source: ImageSource,
    /// The name the signatures were made for (`registry/repository`): required for OCI
    /// layouts and archives, which have no name of their own; trust rules match it.
    pub name: Option<String>,
    /// A Sigstore bundle file to verify instead of the signatures found with the image.
    pub bundle: Option<PathBuf>,
    /// The platform to pick from a multi-platform image.
    pub platform: Platform,
    /// The policy tier to run under.
    pub tier: Tier,
    /// The command (argv\[0\] is looked up on the image's `PATH`).
    pub argv: Vec<String>,
    /// Variables set on top of the image's environment (the host's is never passed).
    pub env: Vec<(String, String)>,
    /// Host paths bound into the sandbox; missing targets are created as empty directories.
    pub mounts: Vec<BindMount>,
    /// Working directory inside the sandbox (default: the image's, else `/`).
    pub workdir: Option<PathBuf>,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Task limit.
    pub pids: Option<u32>,
    /// Bytes of stdout and of stderr kept.
    pub output_limit: Option<u64>,
    /// Ask for the tier's network grant (loopback in the sandbox's own namespace).
    pub network: bool,
    /// Bytes fed to stdin.
    pub stdin: Option<Vec<u8>>,
    /// Stream output here as it arrives instead of collecting it (the terminal of `run`).
    pub live: Option<LiveOutput>,
    /// Who asked, for the audit log.
    pub actor: Actor,
    /// Ties this request's audit records together.
    pub correlation: Correlation,
    /// The audit action: `run` for `perry-sandbox run`, `capability` for invocations.
    pub action: &'static str,
    /// The capability invoked, when there is one.
    pub capability: Option<String>,
}

impl ExecRequest {
    /// A request to run `argv` from registry image `image` under `tier`, as the current process.
    pub fn new(image: ImageRef, tier: Tier, argv: Vec<String>) -> Self {
        Self::from_source(ImageSource::Registry(image), tier, argv)
    }

    /// A request to run `argv` from `source` under `tier`, as the current process.
    pub fn from_source(source: ImageSource, tier: Tier, argv: Vec<String>) -> Self {
        Self {
            source,
            name: None,
            bundle: None,
            platform: Platform::default(),
            tier,
            argv,
            env: Vec::new(),
            mounts: Vec::new(),
            workdir: None,
            timeout: None,
            memory: None,
            pids: None,
            output_limit: None,
            network: false,
            stdin: None,
            live: None,
            actor: Actor::current(),
            correlation: Correlation::new(),
            action: "run",
            capability: None,
        }
    }
}

/// Why a request did not run (or did not finish starting). Nothing ran in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request itself is unusable (bad mount, bad working directory…).
    #[error("{0}")]
    InvalidRequest(String),
    /// The image was refused, or could not be verified.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Pulling or unpacking the verified image failed.
    #[error("pulling {image}: {source}")]
    Pull {
        /// The pinned reference.
        image: String,
        /// What failed.
        source: Box<PullError>,
    },
    /// The tier cannot grant what was asked (e.g. network under `untrusted`).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The isolation the tier requires is not available here (e.g. Landlock).
    #[error("{0}")]
    Isolation(String),
    /// The sandbox could not be set up, or the command could not be executed.
    #[error("{0}")]
    Start(native::RunError),
    /// The decision could not be recorded; nothing is done without a record.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
}

impl ExecError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_argument",
            Self::Verify(e) => match e {
                VerifyError::Registry(r) if r.is_not_found() => "not_found",
                VerifyError::Layout(l) => l.code(),
                VerifyError::NameRequired { .. }
                | VerifyError::BadName { .. }
                | VerifyError::BundleFile { .. } => "invalid_argument",
                VerifyError::Registry(_) => "registry_unavailable",
                VerifyError::TrustedRoot { .. } | VerifyError::KeyFile { .. } => "invalid_config",
                VerifyError::Cache { .. } => "internal",
                e if e.code() == "policy_denied" => "policy_denied",
                _ => "verification_failed",
            },
            Self::Pull { .. } => "pull_failed",
            Self::Profile(_) => "policy_denied",
            Self::Isolation(_) => "isolation_unavailable",
            Self::Start(e) if e.exit_status() == 125 => "sandbox_failed",
            Self::Start(_) => "cannot_execute",
            Self::Audit(_) => "audit_unavailable",
        }
    }

    /// The HTTP-like status.
    pub fn status(&self) -> u16 {
        match self.code() {
            "invalid_argument" | "invalid_image" => 400,
            "policy_denied" | "verification_failed" => 403,
            "not_found" => 404,
            "pull_failed" => 502,
            "registry_unavailable" | "isolation_unavailable" | "audit_unavailable" => 503,
            "invalid_config" => 500,
            _ => 500,
        }
    }

    /// The process exit status for `perry-sandbox run`: 126/127 when the command cannot be
    /// executed or found, 125 for everything else.
    pub fn exit_status(&self) -> i32 {
        match self {
            Self::Start(e) => e.exit_status(),
            _ => EXIT_REFUSED,
        }
    }

    /// True when the image or request was refused by policy (as opposed to a failure to decide).
    pub fn is_denial(&self) -> bool {
        match self {
            Self::Verify(e) => e.is_denial(),
            Self::Profile(_) => true,
            _ => false,
        }
    }
}

impl From<&ExecError> for ApiError {
    fn from(e: &ExecError) -> Self {
        ApiError::new(e.code(), e.status(), e.to_string())
    }
}

/// A request that passed every check and is ready to start: verified, pulled, unpacked and
/// profiled. [`Executor::launch`] records it and runs it.
pub struct Prepared {
    spec: RunSpec,
    step: Arc<ProfileStep>,
    /// The allow record written just before the sandbox starts.
    allow: Event,
    /// Facts for the outcome.
    meta: Meta,
}

#[derive(Clone, Debug)]
struct Meta {
    image: String,
    digest: Digest,
    tier: Tier,
    cache_hit: bool,
    blobs_fetched: usize,
    started: Instant,
    action: &'static str,
    capability: Option<String>,
    actor: Actor,
    correlation: Correlation,
}

impl Prepared {
    /// The platform manifest digest that will run.
    pub fn digest(&self) -> &Digest {
        &self.meta.digest
    }

    /// The spec the sandbox will be built from.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }
}

/// What a finished run produced, with the facts a caller or reviewer needs about it.
#[derive(Clone, Debug)]
pub struct ExecOutcome {
    /// Exit status, signal, output, resource use and denied syscalls.
    pub run: native::Outcome,
    /// The image source as asked for.
    pub image: String,
    /// The platform manifest digest that ran.
    pub digest: Digest,
    /// The tier it ran under.
    pub tier: Tier,
    /// Whether verification was answered from the cache.
    pub cache_hit: bool,
    /// Blobs fetched from the registry for this run (0: all were stored).
    pub blobs_fetched: usize,
    /// Sequence number of the allow record in the audit log.
    pub audit_seq: u64,
    /// Time from the request to the end of the run.
    pub duration: Duration,
}

impl ExecOutcome {
    /// The status a shell would see: the exit code, or 128 + the signal.
    pub fn shell_status(&self) -> i32 {
        match (self.run.exit_code, self.run.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => EXIT_REFUSED,
        }
    }
}

/// A tier profile compiled for one set of grants, ready for the native runner.
type StepKey = (Tier, String);
/// A profile and its prepared runner step.
type CompiledProfile = (Arc<Profile>, Arc<ProfileStep>);

/// Verifier, image store, audit sink and compiled profiles for one configuration. Build one per
/// process and share it (`Arc`): every method takes `&self`.
pub struct Executor {
    config: Config,
    verifier: Verifier,
    store: ImageStore,
    audit: Arc<dyn AuditSink>,
    steps: Mutex<HashMap<StepKey, CompiledProfile>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("state_dir", &self.config.sandbox.state_dir)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Loads the trusted root and keys, opens the image store under `[sandbox] state_dir`.
    /// Fails when either cannot be set up: nothing can be verified or run without them.
    pub fn new(config: Config, audit: Arc<dyn AuditSink>) -> Result<Self, ExecError> {
        let verifier = Verifier::new(&config)?;
        Self::with_verifier(config, verifier, audit)
    }

    /// Like [`Executor::new`] with a verifier built elsewhere (tests, benchmarks).
    pub fn with_verifier(
        config: Config,
        verifier: Verifier,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, ExecError> {
        let store = ImageStore::open_in(
            &config.sandbox.state_dir,
            perry_runtime::unpack::Limits::from_config(&config.sandbox),
        )
        .map_err(|source| ExecError::Pull {
            image: config.sandbox.state_dir.display().to_string(),
            source: Box::new(source),
        })?;
        Ok(Self {
            config,
            verifier,
            store,
            audit,
            steps: Mutex::new(HashMap::new()),
        })
    }

    /// The same executor, reporting image downloads to `progress` (progress bars).
    pub fn with_progress(mut self, progress: Arc<dyn PullProgress>) -> Self {
        self.store = self.store.with_progress(progress);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The verifier (and its cache).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The audit sink decisions go to.
    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// Verifies `image` and records the decision (allow, deny, or error) with `actor`.
    pub async fn verify(
        &self,
        image: &ImageRef,
        platform: &Platform,
        actor: Actor,
        correlation: &Correlation,
    ) -> Result<Verification, ExecError> {
        let result = self.verifier.verify(image, platform).await;
        let ev = Event::new(
            "verify",
            match &result {
                Ok(_) => Decision::Allow,
                Err(e) if e.is_denial() => Decision::Deny,
                Err(_) => Decision::Error,
            },
        )
        .actor(actor)
        .correlation(correlation)
        .image(image.to_string());
        let ev = match &result {
            Ok(v) => ev
                .digest(v.image.platform_digest().to_string())
                .reason(format!(
                    "signed by {} (issuer {})",
                    v.image.signer_identity(),
                    v.image.issuer()
                ))
                .detail("cache_hit", v.cache_hit),
            Err(e) => ev.reason(e.to_string()),
        };
        self.audit.record(ev)?;
        Ok(result?)
    }

    /// Verifies `image` and pulls and unpacks it, running nothing: the service's `--prewarm`,
    /// so the first invocation does not pay for either. Returns the pinned platform digest.
    pub async fn warm(
        &self,
        image: &ImageRef,
        platform: &Platform,
        actor: Actor,
    ) -> Result<Digest, ExecError> {
        let v = self
            .verify(image, platform, actor, &Correlation::new())
            .await?;
        let pulled = self
            .store
            .pull(self.verifier.registry(), &v.image)
            .await
            .map_err(|source| ExecError::Pull {
                image: v.image.pinned_reference(),
                source: Box::new(source),
            })?;
        Ok(pulled.manifest_digest)
    }

    /// Everything before the act: verify (the gate), pull by digest, unpack, build the tier's
    /// profile for the request's grants and the sandbox spec. A refusal or failure is recorded
    /// and returned; nothing has been started.
    pub async fn prepare(&self, req: ExecRequest) -> Result<Prepared, ExecError> {
        let started = Instant::now();
        let base = |decision: Decision| {
            let mut ev = Event::new(req.action, decision)
                .actor(req.actor.clone())
                .correlation(&req.correlation)
                .image(req.source.to_string())
                .tier(req.tier.to_string())
                .command(req.argv.iter());
            if let Some(c) = &req.capability {
                ev = ev.capability(c.clone());
            }
            ev
        };
        let refuse = |e: ExecError, digest: Option<&Digest>| -> ExecError {
            let decision = if e.is_denial() {
                Decision::Deny
            } else {
                Decision::Error
            };
            let mut ev = base(decision).reason(e.to_string());
            if let Some(d) = digest {
                ev = ev.digest(d.to_string());
            }
            match self.audit.record(ev) {
                Ok(_) => e,
                Err(a) => ExecError::Audit(a),
            }
        };

        if req.argv.is_empty() {
            return Err(refuse(
                ExecError::InvalidRequest("no command given".into()),
                None,
            ));
        }
        let verification = match self
            .verifier
            .verify_source(
                &req.source,
                req.name.as_deref(),
                &req.platform,
                req.bundle.as_deref(),
            )
            .await
        {
            Ok(v) => v,
            Err(e) => return Err(refuse(e.into(), None)),
        };
        let verified = &verification.image;
        let digest = verified.platform_digest().clone();
        tracing::debug!(cache_hit = verification.cache_hit, "verified");
        let pulled = match self.store.pull(self.verifier.registry(), verified).await {
            Ok(p) => p,
            Err(source) => {
                let e = ExecError::Pull {
                    image: verified.pinned_reference(),
                    source: Box::new(source),
                };
                return Err(refuse(e, Some(&digest)));
            }
        };
        tracing::debug!(fetched = pulled.fetched, "pulled");
        let (profile, step) = match self.profile(req.tier, &req.mounts, req.network) {
            Ok(p) => p,
            Err(e) => return Err(refuse(e, Some(&digest))),
        };
        let spec = match self.spec(&req, &pulled.rootfs.path, &pulled.config, &profile) {
            Ok(s) => s,
            Err(e) => return Err(refuse(e, Some(&digest))),
        };
        let allow = base(Decision::Allow)
            .digest(digest.to_string())
            .reason(format!(
                "signed by {} (issuer {})",
                verified.signer_identity(),
                verified.issuer()
            ))
            .detail("pinned", verified.pinned_reference())
            .detail("cache_hit", verification.cache_hit)
            .detail("blobs_fetched", pulled.fetched as u64)
            .detail("uid", u64::from(spec.uid));
        Ok(Prepared {
            spec,
            step,
            allow,
            meta: Meta {
                image: req.source.to_string(),
                digest,
                tier: req.tier,
                cache_hit: verification.cache_hit,
                blobs_fetched: pulled.fetched,
                started,
                action: req.action,
                capability: req.capability,
                actor: req.actor,
                correlation: req.correlation,
            },
        })
    }

    /// The act: records the allow decision durably, then runs the sandbox and waits for it
    /// (blocking; from async code call it on a blocking thread). A sandbox that could not be
    /// set up is recorded as an error.
    pub fn launch(&self, prepared: Prepared) -> Result<ExecOutcome, ExecError> {
        self.launch_with(prepared, || {})
    }

    /// [`launch`](Executor::launch), calling `allowed` once the allow record is durable and
    /// before the sandbox starts: where `perry-sandbox run` starts signing the checkpoint that
    /// covers that record, so that the signature overlaps the run instead of the exit.
    pub fn launch_with(
        &self,
        prepared: Prepared,
        allowed: impl FnOnce(),
    ) -> Result<ExecOutcome, ExecError> {
        let Prepared {
            spec,
            step,
            allow,
            meta,
        } = prepared;
        tracing::debug!("profile ready");
        let seq = self.audit.record(allow)?;
        tracing::debug!(seq, "allow recorded");
        allowed();
        let run = native::run(&spec, step.as_ref());
        tracing::debug!("sandbox gone");
        match run {
            Ok(run) => Ok(ExecOutcome {
                run,
                image: meta.image,
                digest: meta.digest,
                tier: meta.tier,
                cache_hit: meta.cache_hit,
                blobs_fetched: meta.blobs_fetched,
                audit_seq: seq,
                duration: meta.started.elapsed(),
            }),
            Err(e) => {
                let mut ev = Event::new(meta.action, Decision::Error)
                    .actor(meta.actor)
                    .correlation(&meta.correlation)
                    .image(meta.image.clone())
                    .digest(meta.digest.to_string())
                    .tier(meta.tier.to_string())
                    .reason(format!("did not start: {e}"));
                if let Some(c) = meta.capability {
                    ev = ev.capability(c);
                }
                self.audit.record(ev)?;
                Err(ExecError::Start(e))
            }
        }
    }

    /// The compiled profile for `tier` with these mounts and network request, built once.
    fn profile(
        &self,
        tier: Tier,
        mounts: &[BindMount],
        network: bool,
    ) -> Result<CompiledProfile, ExecError> {
        let grants = Grants {
            writable: mounts
                .iter()
                .filter(|m| !m.read_only)
                .map(|m| m.target.clone())
                .collect(),
            readable: mounts
                .iter()
                .filter(|m| m.read_only)
                .map(|m| m.target.clone())
                .collect(),
            network: network.then(NetworkGrant::default),
        };
        let key = (tier, format!("{grants:?}"));
        if let Some(hit) = self.lock_steps().get(&key) {
            return Ok(hit.clone());
        }
        let profile = Profile::for_tier(tier, self.config.tiers.get(&tier), &grants)?;
        let step = ProfileStep::new(&profile).map_err(|e| ExecError::Isolation(e.to_string()))?;
        let entry = (Arc::new(profile), Arc::new(step));
        self.lock_steps().insert(key, entry.clone());
        Ok(entry)
    }

    fn lock_steps(&self) -> std::sync::MutexGuard<'_, HashMap<StepKey, CompiledProfile>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sandbox spec: the image's config, the request's additions, the tier's limits
    /// tightened by the request's.
    fn spec(
        &self,
        req: &ExecRequest,
        rootfs: &std::path::Path,
        image: &ImageConfig,
        profile: &Profile,
    ) -> Result<RunSpec, ExecError> {
        for m in &req.mounts {
            perry_runtime::unpack::add_mount_point(rootfs, &m.target).map_err(|e| {
                ExecError::InvalidRequest(format!(
                    "mount target {}: cannot be created in the image: {e}",
                    m.target.display()
                ))
            })?;
        }
        let exec = image.config.clone().unwrap_or_default();
        let (uid, gid) = identity(image, profile.non_root);
        let mut limits = Limits::from_tier(&profile.spec.limits);
        if let Some(t) = req.timeout {
            limits.timeout = limits.timeout.min(t);
        }
        if let Some(m) = req.memory {
            limits.memory = limits.memory.min(m);
        }
        if let Some(p) = req.pids {
            limits.pids = limits.pids.min(p);
        }
        let mut env: Vec<(String, String)> = exec
            .env
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in &req.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let output = profile.spec.limits.output.as_u64();
        let output = req.output_limit.map_or(output, |o| o.min(output)) as usize;
        let mut spec = RunSpec::new(
            rootfs.to_path_buf(),
            req.argv.clone(),
            LeaseConfig {
                state_dir: self.config.sandbox.state_dir.clone(),
                range: self.config.sandbox.uid_range,
            },
        );
        spec.env = env;
        spec.cwd = match &req.workdir {
            Some(w) if w.is_absolute() => w.clone(),
            Some(w) => {
                return Err(ExecError::InvalidRequest(format!(
                    "working directory {} is not absolute",
                    w.display()
                )))
            }
            None => exec
                .working_dir
                .filter(|w| w.starts_with('/'))
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        spec.mounts = req.mounts.clone();
        spec.uid = uid;
        spec.gid = gid;
        spec.limits = limits;
        spec.tmpfs_size = profile.tmpfs_bytes;
        spec.loopback = profile.network == NetworkMode::Granted;
        spec.stdout_limit = output;
        spec.stderr_limit = output;
        spec.stdin = req.stdin.clone();
        spec.live = req.live.clone();
        Ok(spec)
    }
}

/// The image's `User` as numeric ids; names and root fall back to nobody (65534) when the tier
/// demands a non-root user.
pub fn identity(config: &ImageConfig, non_root: bool) -> (u32, u32) {
    let user = config
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let mut it = user.splitn(2, ':');
    let uid = it.next().and_then(|u| u.parse::<u32>().ok());
    let gid = it.next().and_then(|g| g.parse::<u32>().ok()).or(uid);
    match (uid, gid) {
        (Some(u), Some(g)) if !(non_root && (u == 0 || g == 0)) => (u, g),
        _ if non_root => (65534, 65534),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_user(user: Option<&str>) -> ImageConfig {
        let json = match user {
            Some(u) => format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"User":"{u}"}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            ),
            None => {
                r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                    .to_string()
            }
        };
        ImageConfig::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn non_root_tiers_never_run_as_root() {
        assert_eq!(identity(&config_with_user(Some("0")), true), (65534, 65534));
        assert_eq!(
            identity(&config_with_user(Some("0:0")), true),
            (65534, 65534)
        );
        assert_eq!(
            identity(&config_with_user(Some("1000:0")), true),
            (65534, 65534)
        );
        assert_eq!(
            identity(&config_with_user(Some("root")), true),
            (65534, 65534)
        );
        assert_eq!(identity(&config_with_user(None), true), (65534, 65534));
        assert_eq!(
            identity(&config_with_user(Some("1000")), true),
            (1000, 1000)
        );
        assert_eq!(
            identity(&config_with_user(Some("1000:50")), true),
            (1000, 50)
        );
        assert_eq!(identity(&config_with_user(None), false), (0, 0));
    }

    #[test]
    fn error_codes_and_statuses_are_stable() {
        let e = ExecError::InvalidRequest("x".into());
        assert_eq!(
            (e.code(), e.status(), e.exit_status()),
            ("invalid_argument", 400, 125)
        );
        let e = ExecError::Verify(VerifyError::NoTrustRule {
            image: "a/b".into(),
        });
        assert_eq!((e.code(), e.status()), ("policy_denied", 403));
        assert!(e.is_denial());
        let e = ExecError::Isolation("no landlock".into());
        assert_eq!((e.code(), e.status()), ("isolation_unavailable", 503));
        assert!(!e.is_denial());
    }
}
