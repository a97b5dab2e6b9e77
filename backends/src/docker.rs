//! [`DockerProtocol`]: podman, docker, nerdctl and the docker-compatible desktops (orbstack,
//! colima, rancher-desktop), and lima (`limactl shell <instance> nerdctl …`), all through argv.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::Result;
use crate::cli::{self, failure, Output};
use crate::hardening::ContainerNetwork;
use crate::host_process::{signal_named, stop_held, Held, HostProcess};
use crate::runtime_exec::RuntimeExec;
use crate::{
    parse, Availability, BackendError, ContainerBackend, ContainerInfo, ContainerSpec,
    ContainerStatus, ExecOutput, ExecSpec, Health, IsolationLevel, LogFollower, LogOptions, Mount,
    NetworkInfo, NetworkSpec, PinnedImage, VolumeInfo, VolumeSpec,
};
use rustix::process::Signal;

/// Which CLI dialect a docker-compatible backend speaks (flags differ in a few places).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// podman: `--tls-verify`, global `--runtime`.
    Podman,
    /// docker and the desktops built on it.
    Docker,
    /// nerdctl (containerd): `--insecure-registry`.
    Nerdctl,
}

/// A sandboxed-kernel runtime (gVisor `runsc`) and the global flags that select it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxRuntime {
    /// The runtime binary; it must exist for `untrusted` containers to be created.
    pub path: PathBuf,
    /// Flags placed before the subcommand (podman: `--runtime <path> --runtime-flag …`).
    pub global_args: Vec<String>,
}

impl SandboxRuntime {
    /// gVisor through podman: `--runtime /usr/bin/runsc --runtime-flag network=none
    /// --runtime-flag oci-seccomp` (without `oci-seccomp` runsc silently ignores seccomp).
    pub fn gvisor_podman(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        SandboxRuntime {
            global_args: vec![
                "--runtime".into(),
                path.display().to_string(),
                "--runtime-flag".into(),
                "network=none".into(),
                "--runtime-flag".into(),
                "oci-seccomp".into(),
            ],
            path,
        }
    }
}

/// A docker-compatible CLI backend. Per-host settings (runtime, extra flags) are configuration.
#[derive(Clone, Debug)]
pub struct DockerProtocol {
    name: String,
    dialect: Dialect,
    /// argv prefix: `["podman"]`, `["limactl", "shell", "default", "nerdctl"]`.
    program: Vec<String>,
    /// Global flags before every subcommand (podman `--runtime runc`).
    global_args: Vec<String>,
    /// Flags added to every `create`/`run` (host quirks such as `--ulimit nproc=1024:1024`).
    extra_args: Vec<String>,
    sandbox: Option<SandboxRuntime>,
    timeout: Duration,
    /// Verified digest -> the backend's image id, as last checked by [`Self::verified_image_id`].
    /// Only `create`/`run` read it: they pass the id, which names the image's content (the
    /// config digest), so a stale entry can only make `create` fail, never run other bytes.
    /// Shared by clones (they drive the same backend); `remove_image` forgets the digest.
    verified_ids: Arc<Mutex<HashMap<String, String>>>,
    /// Networks this backend itself saw to be internal (its own `network inspect`, or its own
    /// `network create --internal`), and when. `check_networks` trusts an entry for
    /// [`INTERNAL_SEEN_FOR`]: the ten containers of an `up` that join one network cost one
    /// inspect, not ten at once (200 ms of an `up` on two cores). Replacing the network with
    /// one that has a route out takes root on the backend, and a fresh inspect leaves the same
    /// race open between it and the `create`; `network_remove` forgets the name.
    internal_networks: Arc<Mutex<HashMap<String, Instant>>>,
    /// Containers (by name and by id) as created here or as `inspect` said: their full id,
    /// for [`RuntimeExec`], and whether they run under the sandboxed kernel. podman takes
    /// `--runtime-flag`s per invocation, not from the container, so `start` and `exec` of a
    /// gVisor container need the sandbox's flags again (without `network=none` runsc refuses
    /// to start it). A name whose container was replaced since only sends an exec to podman
    /// (the old id is gone from runc), never into another container.
    known: Arc<Mutex<HashMap<String, Known>>>,
}

/// What this driver saw of one container.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    sandboxed: bool,
}

/// How long a network seen internal is taken as internal without asking again.
const INTERNAL_SEEN_FOR: Duration = Duration::from_secs(30);

/// `LimaProtocol { instance }`: nerdctl inside a lima VM.
pub struct LimaProtocol;

impl LimaProtocol {
    /// `limactl shell <instance> nerdctl …`.
    pub fn driver(instance: &str) -> DockerProtocol {
        LimaProtocol::driver_with("limactl", instance)
    }

    /// `<limactl> shell <instance> nerdctl …` with limactl at `limactl`.
    pub fn driver_with(limactl: &str, instance: &str) -> DockerProtocol {
        let mut d = DockerProtocol::new("lima", Dialect::Nerdctl, limactl);
        d.program = vec![
            limactl.into(),
            "shell".into(),
            instance.into(),
            "nerdctl".into(),
        ];
        d
    }
}

impl DockerProtocol {
    /// A backend `name` driven by `program` in `dialect`; 60 s per call.
    pub fn new(name: &str, dialect: Dialect, program: &str) -> Self {
        DockerProtocol {
            name: name.into(),
            dialect,
            program: vec![program.into()],
            global_args: Vec::new(),
            extra_args: Vec::new(),
            sandbox: None,
            timeout: Duration::from_secs(60),
            verified_ids: Arc::default(),
            internal_networks: Arc::default(),
            known: Arc::default(),
        }
    }

    /// podman with `runtime` (`[backends.podman] runtime = "runc"`) and gVisor at
    /// `/usr/bin/runsc` for untrusted containers.
    pub fn podman(runtime: Option<&str>) -> Self {
        let mut d = DockerProtocol::new("podman", Dialect::Podman, "podman");
        if let Some(r) = runtime {
            d.global_args = vec!["--runtime".into(), r.into()];
        }
        d.sandbox = Some(SandboxRuntime::gvisor_podman("/usr/bin/runsc"));
        d
    }

    /// Runs `program` (a path or a name on `PATH`) instead of the default CLI.
    pub fn with_program(mut self, program: &str) -> Self {
        self.program[0] = program.into();
        self
    }

    /// Adds flags to every `create`/`run` (`[backends.<name>] extra_args`).
    pub fn with_extra_args(mut self, args: Vec<String>) -> Self {
        self.extra_args = args;
        self
    }

    /// Sets (or clears) the sandboxed-kernel runtime.
    pub fn with_sandbox(mut self, sandbox: Option<SandboxRuntime>) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The CLI this driver runs (`podman`, the docker CLI a desktop serves, `limactl`).
    pub(crate) fn program(&self) -> &str {
        &self.program[0]
    }

    /// The sandboxed-kernel runtime `untrusted` containers get, if any.
    pub(crate) fn sandbox(&self) -> Option<&SandboxRuntime> {
        self.sandbox.as_ref()
    }

    /// lima's instance (`limactl shell <instance> nerdctl`), for a lima driver.
    pub(crate) fn lima_instance(&self) -> Option<&str> {
        match self.program.as_slice() {
            [_, shell, instance, _] if shell == "shell" => Some(instance),
            _ => None,
        }
    }

    /// The full argv for `args` with the normal global flags.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        self.argv_with(&self.global_args, args)
    }

    fn argv_with(&self, global: &[String], args: &[&str]) -> Vec<String> {
        let mut v = self.program.clone();
        v.extend(global.iter().cloned());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Runs `args`; a non-zero exit is an error naming `kind`/`name` when it is missing.
    async fn ok(&self, kind: &'static str, name: &str, args: &[&str]) -> Result<Output> {
        let argv = self.argv(args);
        let o = cli::run(&argv, self.timeout).await?;
        if o.code == 0 {
            Ok(o)
        } else {
            Err(failure(&argv, kind, name, &o))
        }
    }

    async fn ids(&self, args: &[&str]) -> Result<Vec<String>> {
        let o = self.ok("object", "", args).await?;
        Ok(o.stdout_str()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The sandboxed-kernel gate: refused before anything is created.
    fn globals_for(&self, spec: &ContainerSpec) -> Result<Vec<String>> {
        if spec.hardening.isolation != IsolationLevel::SandboxedKernel {
            return Ok(self.global_args.clone());
        }
        match &self.sandbox {
            Some(s) if s.path.is_file() => Ok(s.global_args.clone()),
            Some(s) => Err(BackendError::PolicyViolation(format!(
                "tier {} requires a sandboxed-kernel runtime (gVisor runsc): {} is missing; \
                 install it with `apt-get install -y runsc` (https://gvisor.dev/docs/user_guide/install/)",
                spec.hardening.tier.name(),
                s.path.display()
            ))),
            None => Err(BackendError::PolicyViolation(format!(
                "tier {} requires a sandboxed-kernel runtime (gVisor runsc) and backend {} has none \
                 configured; install runsc (`apt-get install -y runsc`) and use podman",
                spec.hardening.tier.name(),
                self.name
            ))),
        }
    }

    /// The image id of `image` if the backend holds it with the verified digest; a held image
    /// with another digest is refused.
    async fn verified_image_id(&self, image: &PinnedImage, lookup: &str) -> Result<String> {
        let o = self
            .ok("image", image.reference(), &["image", "inspect", lookup])
            .await?;
        let v = parse::first_object("image inspect", &o.stdout)?;
        let digests = parse::image_digests(&v);
        if !digests.iter().any(|d| d == image.digest()) {
            return Err(BackendError::DigestMismatch {
                expected: image.digest().into(),
                actual: digests.join(", "),
            });
        }
        let id = parse::image_id(&v);
        if id.is_empty() {
            return Err(BackendError::BadOutput {
                program: self.program[0].clone(),
                verb: "image inspect".into(),
                detail: "no image Id".into(),
            });
        }
        self.id_cache()
            .insert(image.digest().to_string(), id.clone());
        Ok(id)
    }

    /// The global flags for a call on an existing container: the sandbox's for one under the
    /// sandboxed kernel, asked of `inspect` once when this backend did not create it.
    async fn globals_of(&self, id: &str) -> Result<Vec<String>> {
        let Some(sandbox) = &self.sandbox else {
            return Ok(self.global_args.clone());
        };
        let sandboxed = match self.known(id) {
            Some(k) => k.sandboxed,
            // `inspect` remembers it.
            None => self.inspect(id).await?.isolation == IsolationLevel::SandboxedKernel,
        };
        Ok(if sandboxed {
            sandbox.global_args.clone()
        } else {
            self.global_args.clone()
        })
    }

    /// What this driver saw of the container named or with id `key`.
    fn known(&self, key: &str) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Records the container `id` (also known as `name`).
    fn remember(&self, name: &str, id: &str, sandboxed: bool) {
        let mut m = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let k = Known {
            id: id.to_string(),
            sandboxed,
        };
        for key in [name, id].into_iter().filter(|k| !k.is_empty()) {
            m.insert(key.to_string(), k.clone());
        }
    }

    /// Records what `inspect` said of a container.
    fn saw(&self, info: &ContainerInfo) {
        let sandboxed = info.isolation == IsolationLevel::SandboxedKernel;
        self.remember(&info.name, &info.id, sandboxed);
    }

    /// `exec` through runc itself when that is exactly `podman exec` (see [`RuntimeExec`]):
    /// `None` when it is not, or runc could not.
    async fn exec_direct(&self, id: &str, spec: &ExecSpec) -> Result<Option<ExecOutput>> {
        let plain = spec.env.is_empty() && spec.workdir.is_none() && spec.user.is_none();
        if !plain || self.dialect != Dialect::Podman {
            return Ok(None);
        }
        let Some(runtime) = RuntimeExec::for_podman(&self.global_args) else {
            return Ok(None);
        };
        let Some(known) = self.known(id).filter(|k| !k.sandboxed) else {
            return Ok(None);
        };
        Ok(runtime
            .exec(&known.id, &spec.cmd, self.timeout)
            .await?
            .map(out))
    }

    /// The seen-internal networks; a poisoned lock only means another call panicked mid-insert.
    fn internal_seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.internal_networks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what the backend just said of `network`.
    fn saw_network(&self, network: &str, internal: bool) {
        let mut seen = self.internal_seen();
        if internal {
            seen.insert(network.to_string(), Instant::now());
        } else {
            seen.remove(network);
        }
    }

    /// The verified-id cache; a poisoned lock only means another call panicked mid-insert.
    fn id_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.verified_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The image id `create` passes: the one this backend already checked against the verified
    /// digest (provisioning always checks first), else checked now.
    async fn create_image_id(&self, image: &PinnedImage) -> Result<String> {
        let known = self.id_cache().get(image.digest()).cloned();
        match known {
            Some(id) => Ok(id),
            None => self.verified_image_id(image, image.reference()).await,
        }
    }

    fn create_args(&self, spec: &ContainerSpec, image_id: &str, run: bool) -> Result<Vec<String>> {
        let h = &spec.hardening;
        let mut a: Vec<String> = vec![if run { "run" } else { "create" }.into()];
        if run {
            a.push("--rm".into());
        }
        a.extend(["--name".into(), spec.name.clone()]);
        a.extend(merge_host_args(&self.extra_args, &h.flags()));
        for (k, v) in &spec.labels {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        for (k, v) in &spec.env {
            a.extend(["--env".into(), format!("{k}={v}")]);
        }
        if let Some(w) = &spec.workdir {
            a.extend(["--workdir".into(), w.clone()]);
        }
        if let Some(sig) = &spec.stop_signal {
            a.extend(["--stop-signal".into(), sig.clone()]);
        }
        if let Some(t) = spec.stop_timeout {
            let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
            a.extend(["--stop-timeout".into(), secs.to_string()]);
        }
        if h.network == ContainerNetwork::InternalOnly && spec.networks.is_empty() {
            // No project network: loopback only, never the backend's default bridge.
            a.extend(["--network".into(), "none".into()]);
        }
        if h.network != ContainerNetwork::None {
            for (i, n) in spec.networks.iter().enumerate() {
                let mut net = n.network.clone();
                if self.dialect == Dialect::Podman && !n.aliases.is_empty() {
                    net = format!("{}:alias={}", n.network, n.aliases.join(",alias="));
                }
                a.extend(["--network".into(), net]);
                if self.dialect != Dialect::Podman && i == 0 {
                    for al in &n.aliases {
                        a.extend(["--network-alias".into(), al.clone()]);
                    }
                }
            }
        }
        for m in &spec.mounts {
            let (src, target, ro) = match m {
                Mount::Volume {
                    name,
                    target,
                    read_only,
                } => (name.clone(), target, *read_only),
                Mount::Bind {
                    source,
                    target,
                    read_only,
                } => (source.display().to_string(), target, *read_only),
            };
            a.extend([
                "--volume".into(),
                format!("{src}:{target}{}", if ro { ":ro" } else { "" }),
            ]);
        }
        for p in &spec.ports {
            let host = if p.host_ip.is_empty() {
                String::new()
            } else {
                format!("{}:", p.host_ip)
            };
            a.extend([
                "--publish".into(),
                format!("{host}{}:{}/{}", p.host_port, p.container_port, p.protocol),
            ]);
        }
        if let Some(ep) = &spec.entrypoint {
            let json = serde_json::to_string(ep)
                .map_err(|e| BackendError::InvalidConfig(e.to_string()))?;
            a.extend(["--entrypoint".into(), json]);
        }
        a.push(image_id.into());
        a.extend(spec.command.iter().cloned());
        Ok(a)
    }

    /// A tier that allows only internal networks gets only internal networks: each one the
    /// spec joins is inspected and one with a route out is refused before anything is created.
    async fn check_networks(&self, spec: &ContainerSpec) -> Result<()> {
        if spec.hardening.network != ContainerNetwork::InternalOnly {
            return Ok(());
        }
        for n in &spec.networks {
            let recent = self
                .internal_seen()
                .get(&n.network)
                .is_some_and(|at| at.elapsed() < INTERNAL_SEEN_FOR);
            if !recent && !self.network_inspect(&n.network).await?.internal {
                return Err(BackendError::PolicyDenied(format!(
                    "tier {} allows only internal networks (no route out), and network {} is \
                     not internal; create it with `internal: true`",
                    spec.hardening.tier.name(),
                    n.network
                )));
            }
        }
        Ok(())
    }

    async fn prepare(&self, spec: &ContainerSpec, run: bool) -> Result<Vec<String>> {
        let globals = self.globals_for(spec)?;
        self.check_networks(spec).await?;
        let image_id = self.create_image_id(&spec.image).await?;
        let args = self.create_args(spec, &image_id, run)?;
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(self.argv_with(&globals, &refs))
    }
}

/// `(name, soft, hard)` of a `--ulimit` value `name=soft[:hard]`.
fn ulimit(v: &str) -> Option<(&str, u64, u64)> {
    let (name, limits) = v.split_once('=')?;
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    Some((name, soft.parse().ok()?, hard.parse().ok()?))
}

/// The host's extra flags merged with the tier's: a `--ulimit` both give is the lower of the
/// two (a host whose hard limit is below the tier's, such as `nofile=1024:1024` here, can
/// only tighten it; the tier's value can never be raised by configuration); every other
/// host flag comes first, unchanged, and the tier's flags after it.
fn merge_host_args(extra: &[String], tier: &[String]) -> Vec<String> {
    let pairs = |v: &[String]| -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < v.len() {
            if v[i] == "--ulimit" && i + 1 < v.len() {
                out.push((i, v[i + 1].clone()));
                i += 2;
            } else {
                if let Some(x) = v[i].strip_prefix("--ulimit=") {
                    out.push((i, x.to_string()));
                }
                i += 1;
            }
        }
        out
    };
    let host: Vec<(usize, String)> = pairs(extra);
    let mut used = std::collections::BTreeSet::new();
    let mut merged_tier = tier.to_vec();
    for (i, v) in pairs(tier) {
        let Some((name, soft, hard)) = ulimit(&v) else {
            continue;
        };
        for (j, hv) in &host {
            if let Some((_, hs, hh)) = ulimit(hv).filter(|(hn, _, _)| *hn == name) {
                used.insert(*j);
                let (s, h) = (soft.min(hs), hard.min(hh));
                let idx = if tier[i] == "--ulimit" { i + 1 } else { i };
                merged_tier[idx] = if tier[i] == "--ulimit" {
                    format!("{name}={s}:{h}")
                } else {
                    format!("--ulimit={name}={s}:{h}")
                };
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < extra.len() {
        if used.contains(&i) {
            i += if extra[i] == "--ulimit" { 2 } else { 1 };
            continue;
        }
        out.push(extra[i].clone());
        i += 1;
    }
    out.extend(merged_tier);
    out
}

fn out(o: Output) -> ExecOutput {
    ExecOutput {
        exit_code: o.code,
        stdout: o.stdout,
        stderr: o.stderr,
    }
}

impl ContainerBackend for DockerProtocol {
    fn name(&self) -> &str {
        &self.name
    }

    async fn version(&self) -> Result<String> {
        let argv = self.argv(&["--version"]);
        let o = cli::run(&argv, Duration::from_secs(2)).await?;
        if o.code != 0 {
            return Err(failure(&argv, "backend", &self.name, &o));
        }
        Ok(o.stdout_str())
    }

    async fn availability(&self) -> Availability {
        crate::detect::probe_driver(self).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let argv = self.prepare(spec, false).await?;
        let o = cli::run(&argv, self.timeout).await?;
        if o.code != 0 {
            return Err(failure(&argv, "image", spec.image.reference(), &o));
        }
        let id = o
            .stdout_str()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let sandboxed = spec.hardening.isolation == IsolationLevel::SandboxedKernel;
        self.remember(&spec.name, &id, sandboxed);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        let globals = self.globals_of(id).await?;
        let argv = self.argv_with(&globals, &["start", id]);
        let o = cli::run(&argv, self.timeout).await?;
        if o.code != 0 {
            return Err(failure(&argv, "container", id, &o));
        }
        Ok(())
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<ExecOutput> {
        let argv = self.prepare(spec, true).await?;
        let o = cli::run(&argv, self.timeout).await?;
        // 125: the CLI itself failed (name conflict, bad flag); 126/127 are the command's.
        if o.code == 125 {
            return Err(failure(&argv, "image", spec.image.reference(), &o));
        }
        Ok(out(o))
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let t = timeout.as_secs().to_string();
        self.ok("container", id, &["stop", "--time", &t, id])
            .await
            .map(drop)
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.ok("container", id, &["kill", "--signal", signal, id])
            .await
            .map(drop)
    }

    async fn remove(&self, id: &str, force: bool) -> Result<()> {
        let mut a = vec!["rm"];
        if force {
            a.push("--force");
        }
        a.push(id);
        match self.ok("container", id, &a).await {
            Ok(_) => Ok(()),
            // Forced removal of what is already gone succeeds on every backend (podman does
            // so itself, docker says "No such container"): rollback may retry it.
            Err(BackendError::NotFound {
                kind: "container", ..
            }) if force => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn wait(&self, id: &str) -> Result<i32> {
        let argv = self.argv(&["wait", id]);
        let o = cli::run(&argv, Duration::from_secs(24 * 3600)).await?;
        if o.code != 0 {
            return Err(failure(&argv, "container", id, &o));
        }
        let s = o.stdout_str();
        s.lines()
            .last()
            .unwrap_or_default()
            .trim()
            .parse()
            .map_err(|_| BackendError::BadOutput {
                program: self.program[0].clone(),
                verb: "wait".into(),
                detail: format!("not an exit code: {s:?}"),
            })
    }

    async fn stop_many(
        &self,
        containers: &[ContainerInfo],
        timeout: Option<Duration>,
    ) -> Result<()> {
        // A running container whose init this host can hold is signalled and watched here
        // (see host_process: the backend would report its exit only after its cleanup);
        // the rest — in a VM, paused, a signal we cannot name — are the backend's to stop.
        let mut held = Vec::new();
        let mut held_info = Vec::new();
        let mut rest = Vec::new();
        for c in containers {
            let signal = c
                .stop_signal
                .as_deref()
                .map_or(Some(Signal::TERM), signal_named);
            // Under a sandboxed kernel (gVisor) the host pid is the sandbox, not the
            // workload's init: only the runtime knows how to stop it gracefully.
            let direct =
                c.status == ContainerStatus::Running && c.isolation == IsolationLevel::Container;
            let process = match (direct, c.pid, signal) {
                (true, Some(pid), Some(signal)) => {
                    HostProcess::open(pid, &c.id).map(|p| (p, signal))
                }
                _ => None,
            };
            match process {
                Some((p, signal)) => {
                    held.push(Held {
                        name: c.name.as_str(),
                        process: p,
                        signal,
                        timeout: crate::backend::stop_timeout(c, timeout),
                    });
                    held_info.push(c);
                }
                None if matches!(c.status, ContainerStatus::Created | ContainerStatus::Exited) => {}
                None => rest.push(c.clone()),
            }
        }
        let (direct, by_backend) = futures_util::future::join(
            stop_held(&self.program[0], &held, self.timeout),
            crate::backend::stop_each(self, &rest, timeout),
        )
        .await;
        by_backend?;
        let refused: Vec<ContainerInfo> =
            direct?.into_iter().map(|i| held_info[i].clone()).collect();
        crate::backend::stop_each(self, &refused, timeout).await
    }
    async fn remove_many(&self, ids: &[String]) -> Result<()> {
        if self.dialect != Dialect::Podman || ids.is_empty() {
            return crate::backend::remove_each(self, ids).await;
        }
        // One call for all: podman removes them in parallel itself; `--ignore` makes one
        // already gone no error, `--time 0` kills at once one started again meanwhile.
        let mut a = vec!["rm", "--force", "--ignore", "--time", "0"];
        a.extend(ids.iter().map(String::as_str));
        self.ok("container", &ids[0], &a).await.map(drop)
    }
    async fn inspect_many(&self, ids: &[String]) -> Result<Vec<ContainerInfo>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut a = vec!["container", "inspect"];
        a.extend(ids.iter().map(String::as_str));
        match self.ok("container", &ids[0], &a).await {
            Ok(o) => Ok(parse::objects("container inspect", &o.stdout)?
                .iter()
                .map(|v| parse::container(v, Health::None))
                .inspect(|c| self.saw(c))
                .collect()),
            // One was removed meanwhile: ask one by one and leave it out.
            Err(BackendError::NotFound { .. }) => crate::backend::inspect_each(self, ids).await,
            Err(e) => Err(e),
        }
    }
    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        let o = self
            .ok("container", id, &["container", "inspect", id])
            .await?;
        let v = parse::first_object("container inspect", &o.stdout)?;
        let info = parse::container(&v, Health::None);
        self.saw(&info);
        Ok(info)
    }

    async fn list(&self, key: &str, value: &str) -> Result<Vec<String>> {
        let f = format!("label={key}={value}");
        self.ids(&["ps", "--all", "--quiet", "--no-trunc", "--filter", &f])
            .await
    }

    async fn logs(&self, id: &str, opts: LogOptions) -> Result<ExecOutput> {
        let tail = opts.tail.map(|t| t.to_string());
        let mut a = vec!["logs"];
        if let Some(t) = &tail {
            a.extend(["--tail", t]);
        }
        a.push(id);
        if opts.follow {
            // Follow until the container exits. What a follower reads can lose the end of a
            // line still being written (podman 4's k8s-file reader, under load), so the
            // result is read again once the container has exited and its log is final.
            let mut f = a.clone();
            f.insert(1, "--follow");
            let argv = self.argv(&f);
            let o = cli::run(&argv, Duration::from_secs(24 * 3600)).await?;
            if o.code != 0 {
                return Err(failure(&argv, "container", id, &o));
            }
        }
        let argv = self.argv(&a);
        let o = cli::run(&argv, self.timeout).await?;
        if o.code != 0 {
            return Err(failure(&argv, "container", id, &o));
        }
        Ok(ExecOutput {
            exit_code: 0,
            stdout: o.stdout,
            stderr: o.stderr,
        })
    }

    async fn follow(&self, id: &str, tail: Option<usize>) -> Result<LogFollower> {
        let tail = tail.map(|t| t.to_string());
        let mut a = vec!["logs", "--follow"];
        if let Some(t) = &tail {
            a.extend(["--tail", t]);
        }
        a.push(id);
        LogFollower::spawn(&self.argv(&a))
    }

    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecOutput> {
        if let Some(o) = self.exec_direct(id, spec).await? {
            return Ok(o);
        }
        let mut a: Vec<String> = vec!["exec".into()];
        for (k, v) in &spec.env {
            a.extend(["--env".into(), format!("{k}={v}")]);
        }
        if let Some(w) = &spec.workdir {
            a.extend(["--workdir".into(), w.clone()]);
        }
        if let Some(u) = &spec.user {
            a.extend(["--user".into(), u.clone()]);
        }
        a.push(id.into());
        a.extend(spec.cmd.iter().cloned());
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let globals = self.globals_of(id).await?;
        let argv = self.argv_with(&globals, &refs);
        let o = cli::run(&argv, self.timeout).await?;
        // 125: the CLI failed; podman 4 answers 255 when the container is not running. Any
        // other status is the command's own.
        if o.code == 125 || o.code != 0 && o.stderr_str().contains("container state improper") {
            return Err(failure(&argv, "container", id, &o));
        }
        Ok(out(o))
    }

    async fn pull(&self, image: &PinnedImage) -> Result<String> {
        let mut a = vec!["pull"];
        if image.registry_is_loopback() {
            // Plain HTTP is allowed for loopback registries only (the test world); the digest
            // check below still holds the bytes to the verified manifest.
            match self.dialect {
                Dialect::Podman => a.push("--tls-verify=false"),
                Dialect::Nerdctl => a.push("--insecure-registry"),
                Dialect::Docker => {}
            }
        }
        a.push(image.reference());
        self.ok("image", image.reference(), &a).await?;
        self.verified_image_id(image, image.reference()).await
    }

    async fn image_exists(&self, image: &PinnedImage) -> Result<bool> {
        Ok(self.image_id(image).await?.is_some())
    }

    async fn image_id(&self, image: &PinnedImage) -> Result<Option<String>> {
        match self.verified_image_id(image, image.reference()).await {
            Ok(id) => Ok(Some(id)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn load(&self, image: &PinnedImage, archive: &Path) -> Result<String> {
        let p = archive.display().to_string();
        let o = self.ok("image", &p, &["load", "--input", &p]).await?;
        // "Loaded image: <name>" / "Loaded image(s): <a>, <b>": every image the archive held
        // must be the verified one (an archive swapped under our name is refused here, even
        // when the backend loaded it under a tag or bare id).
        let text = o.stdout_str();
        let loaded: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("Loaded image"))
            .filter_map(|l| l.split_once(": ").map(|(_, n)| n.trim().to_string()))
            .flat_map(|n| {
                n.split(',')
                    .map(|x| x.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|n| !n.is_empty())
            .collect();
        if loaded.is_empty() {
            return Err(BackendError::BadOutput {
                program: self.program[0].clone(),
                verb: "load".into(),
                detail: format!("no loaded image named in {text:?}"),
            });
        }
        for name in &loaded {
            self.verified_image_id(image, name).await?;
        }
        // And the name `create` looks up must now resolve to the verified digest.
        self.verified_image_id(image, image.reference()).await
    }

    async fn remove_image(&self, image: &PinnedImage) -> Result<()> {
        self.id_cache().remove(image.digest());
        let r = self
            .ok(
                "image",
                image.reference(),
                &["rmi", "--force", image.reference()],
            )
            .await;
        match r {
            Ok(_) | Err(BackendError::NotFound { kind: "image", .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn network_create(&self, spec: &NetworkSpec) -> Result<String> {
        let mut a: Vec<String> = vec!["network".into(), "create".into()];
        if spec.internal {
            a.push("--internal".into());
        }
        for (k, v) in &spec.labels {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        a.push(spec.name.clone());
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let id = self.ok("network", &spec.name, &refs).await?.stdout_str();
        self.saw_network(&spec.name, spec.internal);
        Ok(id)
    }

    async fn network_connect(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()> {
        let mut a: Vec<&str> = vec!["network", "connect"];
        for al in aliases {
            a.extend(["--alias", al]);
        }
        a.extend([network, container]);
        match self.ok("network", network, &a).await {
            Ok(_) => Ok(()),
            Err(BackendError::NotFound {
                kind: "container",
                stderr,
                ..
            }) => Err(BackendError::NotFound {
                kind: "container",
                name: container.into(),
                stderr,
            }),
            Err(e) => Err(e),
        }
    }

    async fn network_inspect(&self, name: &str) -> Result<NetworkInfo> {
        let o = self
            .ok("network", name, &["network", "inspect", name])
            .await?;
        let info = parse::network(&parse::first_object("network inspect", &o.stdout)?);
        self.saw_network(name, info.internal);
        Ok(info)
    }

    async fn network_list(&self, key: &str, value: &str) -> Result<Vec<String>> {
        let f = format!("label={key}={value}");
        self.ids(&["network", "ls", "--quiet", "--filter", &f])
            .await
    }

    async fn network_remove(&self, name: &str) -> Result<()> {
        self.saw_network(name, false);
        self.ok("network", name, &["network", "rm", name])
            .await
            .map(drop)
    }

    async fn volume_create(&self, spec: &VolumeSpec) -> Result<String> {
        let mut a: Vec<String> = vec!["volume".into(), "create".into()];
        for (k, v) in &spec.labels {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        a.push(spec.name.clone());
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Ok(self.ok("volume", &spec.name, &refs).await?.stdout_str())
    }

    async fn volume_inspect(&self, name: &str) -> Result<VolumeInfo> {
        let o = self
            .ok("volume", name, &["volume", "inspect", name])
            .await?;
        Ok(parse::volume(&parse::first_object(
            "volume inspect",
            &o.stdout,
        )?))
    }

    async fn volume_list(&self, key: &str, value: &str) -> Result<Vec<String>> {
        let f = format!("label={key}={value}");
        self.ids(&["volume", "ls", "--quiet", "--filter", &f]).await
    }

    async fn volume_remove(&self, name: &str) -> Result<()> {
        self.ok("volume", name, &["volume", "rm", name])
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::merge_host_args;
    use crate::{driver_with, BackendSettings};

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_ulimits_only_tighten_the_tiers() {
        let tier = v(&[
            "--cap-drop",
            "ALL",
            "--ulimit",
            "nofile=65536:65536",
            "--ulimit",
            "core=0:0",
        ]);
        let host = v(&[
            "--ulimit",
            "nproc=1024:1024",
            "--ulimit=nofile=1024:1024",
            "--ulimit",
            "core=5:5",
        ]);
        assert_eq!(
            merge_host_args(&host, &tier),
            v(&[
                "--ulimit",
                "nproc=1024:1024",
                "--cap-drop",
                "ALL",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "core=0:0",
            ])
        );
        // Nothing in common: host flags first, the tier's after (the last one wins).
        assert_eq!(
            merge_host_args(&v(&["--log-driver", "k8s-file"]), &tier),
            [v(&["--log-driver", "k8s-file"]), tier.clone()].concat()
        );
    }

    #[test]
    fn backend_settings_become_the_drivers_argv() {
        let host = v(&["--ulimit", "nproc=1024:1024", "--log-driver", "k8s-file"]);
        let podman = driver_with(
            "podman",
            &BackendSettings {
                program: Some("/opt/podman/bin/podman".into()),
                runtime: Some("runc".into()),
                extra_args: host.clone(),
                sandbox_runtime: Some("/opt/gvisor/runsc".into()),
                ..BackendSettings::default()
            },
        )
        .unwrap();
        // podman takes the runtime as a global flag, before every subcommand.
        assert_eq!(
            podman.argv(&["ps"]),
            v(&["/opt/podman/bin/podman", "--runtime", "runc", "ps"])
        );
        assert_eq!(podman.extra_args, host);
        assert_eq!(
            podman.sandbox.as_ref().unwrap().global_args,
            v(&[
                "--runtime",
                "/opt/gvisor/runsc",
                "--runtime-flag",
                "network=none",
                "--runtime-flag",
                "oci-seccomp"
            ])
        );
        // docker and nerdctl take it per container, ahead of the host's flags.
        let docker = driver_with(
            "docker",
            &BackendSettings {
                runtime: Some("runsc".into()),
                extra_args: host.clone(),
                ..BackendSettings::default()
            },
        )
        .unwrap();
        assert_eq!(docker.argv(&["ps"]), v(&["docker", "ps"]));
        assert_eq!(
            docker.extra_args,
            [v(&["--runtime", "runsc"]), host].concat()
        );
        assert!(docker.sandbox.is_none());
        // lima: nerdctl inside the configured instance.
        let lima = driver_with(
            "lima",
            &BackendSettings {
                program: Some("/opt/lima/bin/limactl".into()),
                instance: Some("builder".into()),
                ..BackendSettings::default()
            },
        )
        .unwrap();
        assert_eq!(
            lima.argv(&["ps", "--all"]),
            v(&[
                "/opt/lima/bin/limactl",
                "shell",
                "builder",
                "nerdctl",
                "ps",
                "--all"
            ])
        );
        assert_eq!(lima.lima_instance(), Some("builder"));
        let default = driver_with("lima", &BackendSettings::default()).unwrap();
        assert_eq!(
            default.argv(&["ps"]),
            v(&["limactl", "shell", "default", "nerdctl", "ps"])
        );
    }
}
