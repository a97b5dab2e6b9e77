//! The warm pool: sandboxes started ahead of the requests that will use them, so that a
//! request only binds its command and waits for it.
//!
//! # What exists before a request
//!
//! Per shape of run in use (rootfs digest, tier recipe, identity, limits, hostname, `/tmp`
//! size, loopback: everything but the command), up to `per_shape` sandboxes wait: init cloned by
//! the spawner into fresh user, mount, pid, ipc, uts and network namespaces, id-mapped, in its
//! own new cgroups, its filesystem built (read-only rootfs, `/proc`, `/dev`, an empty `/tmp`) and
//! pivoted into; its workload process started and already confined as it will run — own
//! session, rlimits, the workload's uid and gid, and the tier's final step applied (capabilities
//! dropped, no_new_privs, Landlock, seccomp with its listener handed to the service) — blocked
//! reading its bind socket. Nothing of any request is in it: the spec it was started from is the
//! shape alone (placeholder command, empty environment, no stdin).
//!
//! # What a request brings
//!
//! Its command, environment and working directory, written to the bind socket as one bounded
//! frame that the confined workload lays out without allocating (see `LateSlot`), then changes
//! to that directory and `execve`s the command; its stdin and deadline, handled by supervision
//! as in a cold run; its read-only bind mounts (workspaces), moved into the waiting sandbox's
//! mount namespace just before the frame is written (see `late_mounts`: the shape holds their
//! targets, so the mount points exist). Requests with a writable mount run cold, because a write
//! grant is a Landlock rule on the mounted directory itself.
//!
//! # Why this is no weaker than a cold run
//!
//! A pooled sandbox serves exactly one request and is never reused: after its run it is torn
//! down like any other (every process that ran request code gone before the answer, init itself
//! in `_exit`; init reaped and its empty cgroups removed by the refill thread just after, as are
//! a cold run's), and the refill thread starts a new one. Two
//! requests never share a namespace, a tmpfs, a cgroup, a pipe or a process. The setup steps are the same functions in
//! the same order as a cold run; only the point where the command is learnt moves — after the
//! confinement instead of before it, so the request's bytes only ever reach a process that is
//! already confined. The frame comes from the service, over a pipe only the service holds, and
//! is checked against the slot's bounds before use. An idle pool costs no CPU: its workloads
//! block in `read`, the refill thread on a condition variable.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::late_mounts::{bind_into, bindable_late};
use super::plan::late_frame;
use super::runner::{finish_leaving, start, Leftovers, Started};
use super::spawner::{Spawner, StepRecipe};
use super::{sys, BindMount, Outcome, ProfileStep, RunError, RunSpec};

/// Most shapes kept warm at once; the least recently used one is dropped for a new one.
const MAX_SHAPES: usize = 8;
/// How long a request with mounts waits for the warm sandbox it took to be fully built (it
/// usually is: it was started ahead) before running cold instead.
const PARKED_WITHIN: Duration = Duration::from_secs(2);
/// Consecutive failures to start a shape's sandbox after which the refill thread leaves that
/// shape alone until a request for it comes again.
const MAX_FAILURES: u32 = 3;

/// Sandboxes started ahead for a service (see the module docs). Dropping the pool stops its
/// refill thread and kills the sandboxes still waiting.
pub struct WarmPool {
    shared: Arc<Shared>,
    refill: Option<JoinHandle<()>>,
}

struct Shared {
    spawner: Arc<Spawner>,
    per_shape: usize,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    shapes: HashMap<String, Shape>,
    /// Finished warm runs' cgroups and leases, removed by the refill thread after the answer.
    leftovers: Vec<Leftovers>,
    stop: bool,
}

struct Shape {
    /// The first request's spec with its command, environment and stdin taken out.
    template: RunSpec,
    step: Arc<ProfileStep>,
    recipe: StepRecipe,
    ready: Vec<Started>,
    last_used: Instant,
    failures: u32,
}

/// How a pooled run went: its outcome and whether it ran in a sandbox started ahead.
#[derive(Debug)]
pub struct PooledOutcome {
    /// The run's outcome.
    pub outcome: Outcome,
    /// True when a warm sandbox took the request; false when it ran cold.
    pub warm: bool,
}

impl WarmPool {
    /// A pool keeping up to `per_shape` sandboxes of each shape in use, cloned by `spawner`.
    pub fn new(spawner: Arc<Spawner>, per_shape: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            spawner,
            per_shape,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let refill = std::thread::Builder::new()
            .name("perry-pool".into())
            .spawn(move || s.refill_loop())?;
        Ok(WarmPool {
            shared,
            refill: Some(refill),
        })
    }

    /// The spawner this pool (and every cold run beside it) clones with.
    pub fn spawner(&self) -> &Spawner {
        &self.shared.spawner
    }

    /// How many sandboxes of `spec`'s shape wait ready now (for benchmarks and diagnostics).
    pub fn ready(&self, spec: &RunSpec, recipe: &StepRecipe) -> usize {
        let Ok(key) = shape_key(spec, recipe) else {
            return 0;
        };
        self.shared
            .lock()
            .shapes
            .get(&key)
            .map_or(0, |s| s.ready.len())
    }

    /// Runs `spec` in a warm sandbox of its shape when one is ready, else cold through the
    /// spawner; either way the shape is (re)filled in the background. `step` must be what
    /// `recipe` builds. Blocks like [`run`](super::run).
    pub fn run(
        &self,
        spec: &RunSpec,
        step: &Arc<ProfileStep>,
        recipe: &StepRecipe,
    ) -> Result<PooledOutcome, RunError> {
        // A cold run's cgroups are removed off its path too, like a warm one's.
        let cold = || {
            let started = start(
                spec,
                step.as_ref(),
                Some((&self.shared.spawner, recipe)),
                false,
            )?;
            let (outcome, leftovers) = finish_leaving(spec, step.as_ref(), started)?;
            self.leave(leftovers);
            Ok(PooledOutcome {
                outcome,
                warm: false,
            })
        };
        if !bindable_late(&spec.mounts) {
            return cold();
        }
        let Ok(frame) = late_frame(spec) else {
            return cold();
        };
        let Ok(key) = shape_key(spec, recipe) else {
            return cold();
        };
        let warm = self.take(key, spec, step, recipe);
        let Some(mut started) = warm else {
            return cold();
        };
        if let Err(e) = move_mounts_in(&started, &spec.mounts) {
            // The cold run reports the same source's trouble the way every run does.
            tracing::debug!("warm pool: binding the request's mounts failed: {e}");
            drop(started);
            return cold();
        }
        let bound = started
            .bind_w
            .take()
            .map(|w| std::fs::File::from(w).write_all(&frame));
        if !matches!(bound, Some(Ok(()))) {
            // Its init died waiting: dropping it reaps it and removes its cgroups.
            drop(started);
            return cold();
        }
        started.at = Instant::now();
        let (outcome, leftovers) = finish_leaving(spec, step.as_ref(), started)?;
        self.leave(leftovers);
        Ok(PooledOutcome {
            outcome,
            warm: true,
        })
    }

    /// Hands a finished run's leftovers to the refill thread, which removes them after the
    /// answer.
    fn leave(&self, leftovers: Leftovers) {
        self.shared.lock().leftovers.push(leftovers);
        self.shared.wake.notify_one();
    }

    /// A live warm sandbox of `key`'s shape, if one is ready; registers the shape and wakes the
    /// refill thread either way.
    fn take(
        &self,
        key: String,
        spec: &RunSpec,
        step: &Arc<ProfileStep>,
        recipe: &StepRecipe,
    ) -> Option<Started> {
        let mut st = self.shared.lock();
        if !st.shapes.contains_key(&key) && st.shapes.len() >= MAX_SHAPES {
            let oldest = st
                .shapes
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                st.shapes.remove(&k);
            }
        }
        let shape = st.shapes.entry(key).or_insert_with(|| Shape {
            template: template_of(spec),
            step: Arc::clone(step),
            recipe: recipe.clone(),
            ready: Vec::new(),
            last_used: Instant::now(),
            failures: 0,
        });
        shape.last_used = Instant::now();
        shape.failures = 0;
        // Sandboxes whose init died waiting (a spawner that died takes its inits with it) go
        // now, outside the lock: each drop reaps its init and removes its cgroups.
        let (live, dead): (Vec<Started>, Vec<Started>) =
            shape.ready.drain(..).partition(Started::alive);
        shape.ready = live;
        let got = shape.ready.pop();
        drop(st);
        self.shared.wake.notify_one();
        drop(dead);
        got
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.refill.take() {
            let _ = t.join();
        }
        // The waiting sandboxes: each drop kills init and removes its cgroups.
        let mut st = self.shared.lock();
        st.shapes.clear();
        st.leftovers.clear();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts sandboxes for shapes below `per_shape`, one at a time, until told to stop.
    fn refill_loop(&self) {
        let mut st = self.lock();
        loop {
            if st.stop {
                return;
            }
            if !st.leftovers.is_empty() {
                let done = std::mem::take(&mut st.leftovers);
                drop(st);
                drop(done); // removes their cgroups
                st = self.lock();
                continue;
            }
            let wanted = st
                .shapes
                .iter()
                .find(|(_, s)| s.ready.len() < self.per_shape && s.failures < MAX_FAILURES)
                .map(|(k, s)| {
                    (
                        k.clone(),
                        s.template.clone(),
                        Arc::clone(&s.step),
                        s.recipe.clone(),
                    )
                });
            let Some((key, template, step, recipe)) = wanted else {
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            drop(st);
            let started = start(
                &template,
                step.as_ref(),
                Some((&self.spawner, &recipe)),
                true,
            );
            st = self.lock();
            match (started, st.shapes.get_mut(&key)) {
                (Ok(s), Some(shape)) => {
                    shape.ready.push(s);
                    shape.failures = 0;
                }
                (Err(e), Some(shape)) => {
                    shape.failures += 1;
                    tracing::warn!("warm pool: starting a sandbox ahead failed: {e}");
                }
                // The shape was dropped meanwhile: so is the sandbox.
                (_, None) => {}
            }
        }
    }
}

/// Moves `mounts` (read-only, see [`bindable_late`]) into the warm sandbox `started`, once it is
/// fully built: one taken just after it was started may still be building its filesystem, when
/// its mount namespace still shows the host's tree.
fn move_mounts_in(started: &Started, mounts: &[BindMount]) -> Result<(), RunError> {
    if mounts.is_empty() {
        return Ok(());
    }
    let not_ready = |why: &str| sys("binding mounts into a warm sandbox")(io::Error::other(why));
    if !started.parked(PARKED_WITHIN) {
        return Err(not_ready("it did not come to wait for its command"));
    }
    let init = started
        .init_pidfd()
        .ok_or_else(|| not_ready("its init has no pidfd"))?;
    bind_into(init, mounts)
}

/// What a warm sandbox must share with the request it takes: everything init's setup depends
/// on, i.e. the spec without its command, environment, stdin, output limits, deadline and
/// mount sources (the targets are part of it: their mount points are provided ahead).
fn shape_key(spec: &RunSpec, recipe: &StepRecipe) -> serde_json::Result<String> {
    let l = &spec.limits;
    serde_json::to_string(&(
        spec.rootfs().digest().to_string(),
        spec.rootfs().path(),
        &spec.hostname,
        spec.tmpfs_size,
        (spec.uid, spec.gid),
        (l.memory, l.pids, l.cpus, l.nofile),
        spec.loopback,
        spec.mounts
            .iter()
            .map(|m| (&m.target, m.read_only))
            .collect::<Vec<_>>(),
        recipe,
        (
            &spec.leases.state_dir,
            spec.leases.range.start,
            spec.leases.range.count,
        ),
    ))
}

/// The spec a shape's sandboxes are started from: nothing of the request that registered it.
fn template_of(spec: &RunSpec) -> RunSpec {
    let mut t = spec.clone();
    t.argv = vec!["/pooled-placeholder".into()];
    t.env = Vec::new();
    t.cwd = "/".into();
    t.stdin = None;
    t.live = None;
    t.mounts = spec
        .mounts
        .iter()
        .map(|m| BindMount {
            source: PathBuf::new(),
            target: m.target.clone(),
            read_only: m.read_only,
            pinned: None,
        })
        .collect();
    t
}
