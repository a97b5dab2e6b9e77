//! The [`Executor`]: the one path from an image reference to a finished sandboxed command.
//!
//! ```text
//! ExecRequest ─ prepare ─> verify (the gate) ─> pull by digest ─> unpack ─> profile for the tier
//!             ─ launch ──> allow record (durable) ─> native sandbox run ─> outcome record
//! ```
//!
//! The work is split in two so a service can keep its async workers free: [`Executor::prepare`]
//! (async: verification, registry I/O, unpacking) and [`Executor::launch`] (blocking: the
//! sandbox itself, run it on a blocking thread).
//!
//! Profiles are compiled once per (tier, grants) and reused: building a seccomp program costs
//! milliseconds, reusing one costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use perry_audit::{Action, Actor, AuditSink, Correlation, Decision, Event};
use perry_policies::{Code, Config, Digest, ImageRef, Tier};
use perry_profiles::{Grants, NetworkGrant, Profile};
use perry_runtime::native::{self, BindMount, ProfileStep, RunSpec, Spawner, StepRecipe, WarmPool};
use perry_runtime::pull::{ImageStore, PullProgress};
use perry_verifier::registry::Platform;
use perry_verifier::{ImageSource, Verification, Verifier};

use crate::outcome::outcome_event;
use crate::{ExecError, ExecOutcome, ExecRequest, VerifyRequest, WarmUp};

/// A request that passed every check and is ready to start: verified, pulled, unpacked and
/// profiled. [`Executor::launch`] records it and runs it.
pub struct Prepared {
    spec: RunSpec,
    step: Arc<ProfileStep>,
    /// What `step` was built from, for a spawner to build the same.
    recipe: Arc<StepRecipe>,
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
    action: Action,
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

/// A tier profile compiled for one set of grants, ready for the native runner.
type StepKey = (Tier, String);
/// A profile, its prepared runner step and the inputs both were built from.
type CompiledProfile = (Arc<Profile>, Arc<ProfileStep>, Arc<StepRecipe>);

/// Verifier, image store, audit sink and compiled profiles for one configuration. Build one per
/// process and share it (`Arc`): every method takes `&self`.
pub struct Executor {
    config: Config,
    verifier: Verifier,
    store: ImageStore,
    audit: Arc<dyn AuditSink>,
    steps: Mutex<HashMap<StepKey, CompiledProfile>>,
    /// Clones the sandboxes when set (`serve`): see [`Executor::with_spawner`].
    spawner: Option<Arc<Spawner>>,
    /// Sandboxes started ahead through that spawner: see [`Executor::with_pool`].
    pool: Option<WarmPool>,
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
    ///
    /// A failure is recorded (action `setup`, decision `error`) before it is returned: no
    /// command that needed this executor ran, and the log says why.
    pub fn new(config: Config, audit: Arc<dyn AuditSink>) -> Result<Self, ExecError> {
        let built = Verifier::new(&config)
            .map_err(ExecError::from)
            .and_then(|verifier| Self::with_verifier(config, verifier, Arc::clone(&audit)));
        match built {
            Ok(x) => Ok(x),
            Err(e) => {
                let ev = with_code(
                    Event::new(Action::Setup, Decision::Error)
                        .actor(Actor::current())
                        .reason(format!("the executor could not be set up: {e}")),
                    e.code(),
                );
                audit.record(ev)?;
                Err(e)
            }
        }
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
            spawner: None,
            pool: None,
        })
    }

    /// The same executor, having `spawner` clone every sandbox instead of this process: a
    /// long-running service whose memory holds keys and credentials uses one, so that no
    /// sandbox starts as a copy of that memory (see [`Spawner`]).
    pub fn with_spawner(mut self, spawner: Spawner) -> Self {
        self.spawner = Some(Arc::new(spawner));
        self
    }

    /// The same executor keeping `per_shape` sandboxes started ahead, through its spawner, for
    /// each shape of run in use (see [`WarmPool`]); 0, or no spawner, leaves the pool off.
    pub fn with_pool(mut self, per_shape: u32) -> std::io::Result<Self> {
        if let (Some(spawner), true) = (&self.spawner, per_shape > 0) {
            self.pool = Some(WarmPool::new(Arc::clone(spawner), per_shape as usize)?);
        }
        Ok(self)
    }

    /// The spawner's process id, when this executor has one running.
    pub fn spawner_pid(&self) -> Option<u32> {
        self.spawner.as_ref().and_then(|s| s.pid())
    }

    /// The same executor, reporting image downloads to `progress` (progress bars).
    pub fn with_progress(mut self, progress: Arc<dyn PullProgress>) -> Self {
        self.store = self.store.with_progress(progress);
        self
    }

    /// Starts, in the background, the kernel work the next sandbox start(s) would otherwise
    /// wait for (see [`WarmUp`]); call it before building the executor and verifying, which it
    /// overlaps. Best effort.
    pub fn warm_up(what: WarmUp) {
        crate::host::warm_up(what)
    }

    /// Removes what a killed predecessor left under this configuration's state directory
    /// (stale sandbox cgroups, interrupted downloads and unpacks); returns what was removed.
    /// `serve` calls it on start.
    pub fn sweep_stale(&self) -> Vec<std::path::PathBuf> {
        crate::host::sweep_stale(&self.config.sandbox.state_dir)
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

    /// Verifies registry image `image` and records the decision (allow, deny, or error) with
    /// `actor`: [`Executor::verify_source`] for a registry reference.
    pub async fn verify(
        &self,
        image: &ImageRef,
        platform: &Platform,
        actor: Actor,
        correlation: &Correlation,
    ) -> Result<Verification, ExecError> {
        let source = ImageSource::Registry(image.clone());
        self.verify_source(&VerifyRequest {
            source: &source,
            name: None,
            bundle: None,
            platform,
            actor: &actor,
            correlation,
        })
        .await
    }

    /// Verifies an image from any source and records the decision (allow, deny, or error).
    /// Every door that verifies without running (`perry-sandbox verify`, `POST /v1/verify`,
    /// `--prewarm`, compose plans) comes through here, so a `verify` record has one shape:
    /// the trust rules that matched, the signer, the digests, the trusted root, the code.
    pub async fn verify_source(&self, req: &VerifyRequest<'_>) -> Result<Verification, ExecError> {
        let result = self
            .verifier
            .verify_source(req.source, req.name, req.platform, req.bundle)
            .await;
        let name = match (req.name, req.source) {
            (Some(n), _) => n.to_string(),
            (None, ImageSource::Registry(r)) => r.name(),
            _ => String::new(),
        };
        let rules: Vec<String> = self
            .config
            .trust
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(&name))
            .map(|(i, r)| r.name.clone().unwrap_or_else(|| format!("policy[{i}]")))
            .collect();
        let ev = Event::new(
            Action::Verify,
            match &result {
                Ok(_) => Decision::Allow,
                Err(e) if e.is_denial() => Decision::Deny,
                Err(_) => Decision::Error,
            },
        )
        .actor(req.actor.clone())
        .correlation(req.correlation)
        .image(req.source.to_string())
        .rule(rules.join(","));
        let ev = match &result {
            Ok(v) => {
                let img = &v.image;
                ev.digest(img.platform_digest().to_string())
                    .reason(format!(
                        "signed by {} (issuer {})",
                        img.signer_identity(),
                        img.issuer()
                    ))
                    .detail("index_digest", img.digest().to_string())
                    .detail("signed_digest", img.signed_digest().to_string())
                    .detail("layout", img.layout().to_string())
                    .detail("log_index", img.log_index())
                    .detail("integrated_time", img.integrated_time())
                    .detail("cache_hit", v.cache_hit)
                    .detail(
                        "trusted_root_sha256",
                        self.verifier.trust_root().sha256_hex(),
                    )
            }
            Err(e) => with_code(ev.reason(e.to_string()), e.code()),
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
        Ok(pulled.digest().clone())
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
            let mut ev = with_code(base(decision).reason(e.to_string()), e.code());
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
        tracing::debug!(fetched = pulled.fetched(), "pulled");
        let (profile, step, recipe) = match self.profile(req.tier, &req.mounts, req.network) {
            Ok(p) => p,
            Err(e) => return Err(refuse(e, Some(&digest))),
        };
        let spec = match crate::spec::build(&self.config, &req, &pulled, &profile) {
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
            .detail("blobs_fetched", pulled.fetched() as u64)
            .detail("uid", u64::from(spec.uid));
        Ok(Prepared {
            spec,
            step,
            recipe,
            allow,
            meta: Meta {
                image: req.source.to_string(),
                digest,
                tier: req.tier,
                cache_hit: verification.cache_hit,
                blobs_fetched: pulled.fetched(),
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
            recipe,
            allow,
            meta,
        } = prepared;
        tracing::debug!("profile ready");
        let seq = self.audit.record(allow)?;
        tracing::debug!(seq, "allow recorded");
        allowed();
        // The outcome record, written as soon as the command's processes are gone; a cold run
        // writes it while init's exit and the cgroups' removal still run (`native::run_then`).
        let record_outcome = |run: &native::Outcome, warm: bool| {
            tracing::debug!("sandbox gone");
            let mut ev = outcome_event(run, seq, &meta.correlation)
                .detail("sandbox", if warm { "warm" } else { "cold" })
                .actor(meta.actor.clone())
                .image(meta.image.clone())
                .digest(meta.digest.to_string())
                .tier(meta.tier.to_string());
            if let Some(c) = &meta.capability {
                ev = ev.capability(c.clone());
            }
            // The run is over: a log that cannot take its outcome any more is reported, but
            // does not undo what already happened (the allow record stands).
            match self.audit.record(ev) {
                Ok(s) => {
                    tracing::debug!(seq = s, "outcome recorded");
                    Some(s)
                }
                Err(e) => {
                    tracing::warn!("audit log: the outcome of record {seq} was not written: {e}");
                    None
                }
            }
        };
        let run = match (&self.pool, &self.spawner) {
            (Some(pool), _) => pool.run(&spec, &step, &recipe).map(|p| {
                let recorded = record_outcome(&p.outcome, p.warm);
                (p.outcome, p.warm, recorded)
            }),
            (None, via) => native::run_then(
                &spec,
                step.as_ref(),
                via.as_deref().map(|s| (s, recipe.as_ref())),
                |o| record_outcome(o, false),
            )
            .map(|(o, recorded)| (o, false, recorded)),
        };
        match run {
            Ok((run, warm, outcome_seq)) => Ok(ExecOutcome {
                run,
                image: meta.image,
                digest: meta.digest,
                tier: meta.tier,
                cache_hit: meta.cache_hit,
                blobs_fetched: meta.blobs_fetched,
                audit_seq: seq,
                outcome_seq,
                duration: meta.started.elapsed(),
                warm,
            }),
            Err(e) => {
                let ev = Event::new(meta.action, Decision::Error)
                    .actor(meta.actor)
                    .correlation(&meta.correlation)
                    .image(meta.image.clone())
                    .digest(meta.digest.to_string())
                    .tier(meta.tier.to_string())
                    .reason(format!("did not start: {e}"));
                let e = ExecError::Start(e);
                let mut ev = with_code(ev, e.code());
                if let Some(c) = meta.capability {
                    ev = ev.capability(c);
                }
                self.audit.record(ev)?;
                Err(e)
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
        let recipe = StepRecipe {
            tier,
            overrides: self.config.tiers.get(&tier).cloned(),
            grants,
        };
        let entry = (Arc::new(profile), Arc::new(step), Arc::new(recipe));
        self.lock_steps().insert(key, entry.clone());
        Ok(entry)
    }

    fn lock_steps(&self) -> std::sync::MutexGuard<'_, HashMap<StepKey, CompiledProfile>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `ev` with its failure's code and status from the one table, so the audit record, the CLI's
/// `--json` and the API answer name the same code for the same failure.
fn with_code(ev: Event, code: Code) -> Event {
    ev.detail("code", code.as_str())
        .detail("status", u64::from(code.status()))
}
