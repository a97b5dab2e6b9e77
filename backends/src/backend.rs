//! The [`ContainerBackend`] trait: what the engine needs from podman, docker and friends.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::{
    BackendError, ContainerInfo, ContainerSpec, ExecOutput, ExecSpec, IsolationLevel, LogFollower,
    LogOptions, NetworkInfo, NetworkSpec, PinnedImage, VolumeInfo, VolumeSpec,
};

/// Whether a backend can be used, and why not.
#[derive(Clone, Debug, Serialize)]
pub struct Availability {
    /// Usable now.
    pub available: bool,
    /// Why not (or what answered).
    pub reason: String,
    /// The CLI's version line, when it answered.
    pub version: Option<String>,
    /// The strongest isolation level it can give.
    pub isolation: IsolationLevel,
}

/// Result type of every backend call.
pub type Result<T> = std::result::Result<T, BackendError>;

/// A container runtime driven through its CLI. Policy-blind: every entry point that creates a
/// container takes a [`ContainerSpec`], whose image is a [`PinnedImage`] and whose confinement
/// was computed from the tier by [`crate::Hardening::for_profile`].
pub trait ContainerBackend: Send + Sync {
    /// The backend's name (`podman`, `docker`, `lima`, ...).
    fn name(&self) -> &str;
    /// The CLI's version string.
    fn version(&self) -> impl Future<Output = Result<String>> + Send;
    /// Whether it answers (CLI present and, where it applies, daemon alive).
    fn availability(&self) -> impl Future<Output = Availability> + Send;

    /// Creates a container; the image must be present and match its verified digest.
    fn create(&self, spec: &ContainerSpec) -> impl Future<Output = Result<String>> + Send;
    /// Starts a created container.
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Creates, starts and waits for a container, returning its exit code and output; the
    /// container is removed afterwards.
    fn run(&self, spec: &ContainerSpec) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Stops a container (SIGTERM, then SIGKILL after `timeout`).
    fn stop(&self, id: &str, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Sends `signal` (e.g. `KILL`, `TERM`) to a container.
    fn kill(&self, id: &str, signal: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes a container (`force`: even when running, and a container already gone is not
    /// an error).
    fn remove(&self, id: &str, force: bool) -> impl Future<Output = Result<()>> + Send;
    /// Stops these containers together and returns once every one has exited: each is sent
    /// its stop signal, and any still running after `timeout` (each its own stop timeout,
    /// else 10 s, when `None`) is killed. One already stopped
    /// or gone is not an error. `down` calls it once per level of the dependency order, so
    /// the time between a level's exit and the next level's signal is what the backend takes
    /// to notice an exit (podman's `stop` polls for it every 100 ms; its driver does better).
    fn stop_many(
        &self,
        containers: &[ContainerInfo],
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send {
        stop_each(self, containers, timeout)
    }
    /// Removes these containers, forced: in one call where the backend can; one already gone
    /// is not an error.
    fn remove_many(&self, ids: &[String]) -> impl Future<Output = Result<()>> + Send {
        remove_each(self, ids)
    }
    /// Waits for a container to exit and returns its exit code.
    fn wait(&self, id: &str) -> impl Future<Output = Result<i32>> + Send;
    /// State, exit code, IPs per network, ports, labels, isolation level.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<ContainerInfo>> + Send;
    /// [`inspect`](Self::inspect) of many containers, in one call where the backend can;
    /// those removed meanwhile are left out.
    fn inspect_many(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send {
        inspect_each(self, ids)
    }
    /// Ids of all containers (running or not) carrying `key=value`.
    fn list(&self, key: &str, value: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// A container's stdout and stderr, kept apart and untruncated.
    fn logs(&self, id: &str, opts: LogOptions) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Follows a container's output from the last `tail` lines (all when `None`) until it
    /// exits: lines from both streams as they are written.
    fn follow(
        &self,
        id: &str,
        tail: Option<usize>,
    ) -> impl Future<Output = Result<LogFollower>> + Send;
    /// Runs a command in a running container.
    fn exec(&self, id: &str, spec: &ExecSpec) -> impl Future<Output = Result<ExecOutput>> + Send;

    /// Pulls an image by digest from the registry it was verified at, then checks the digest.
    fn pull(&self, image: &PinnedImage) -> impl Future<Output = Result<String>> + Send;
    /// Whether the backend holds the image with the verified digest.
    fn image_exists(&self, image: &PinnedImage) -> impl Future<Output = Result<bool>> + Send;
    /// The backend's image id for `image` when it holds it with the verified digest, `None`
    /// when it does not hold it; an image under that name with another digest is refused
    /// (`verification_failed`).
    fn image_id(&self, image: &PinnedImage) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Loads an OCI archive written from our store, then checks the loaded image's digest.
    fn load(
        &self,
        image: &PinnedImage,
        archive: &Path,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Removes an image (one already gone is not an error).
    fn remove_image(&self, image: &PinnedImage) -> impl Future<Output = Result<()>> + Send;

    /// Creates a network.
    fn network_create(&self, spec: &NetworkSpec) -> impl Future<Output = Result<String>> + Send;
    /// Connects a container to a network with DNS aliases.
    fn network_connect(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Inspects a network.
    fn network_inspect(&self, name: &str) -> impl Future<Output = Result<NetworkInfo>> + Send;
    /// Networks carrying `key=value`.
    fn network_list(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Removes a network.
    fn network_remove(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Creates a volume.
    fn volume_create(&self, spec: &VolumeSpec) -> impl Future<Output = Result<String>> + Send;
    /// Inspects a volume.
    fn volume_inspect(&self, name: &str) -> impl Future<Output = Result<VolumeInfo>> + Send;
    /// Volumes carrying `key=value`.
    fn volume_list(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Removes a volume.
    fn volume_remove(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
}

/// [`ContainerBackend::stop_many`] one container at a time, all at once: what a backend
/// without a faster way does.
pub(crate) async fn stop_each<B: ContainerBackend + ?Sized>(
    b: &B,
    containers: &[ContainerInfo],
    timeout: Option<Duration>,
) -> Result<()> {
    let stops = containers.iter().map(|c| async move {
        match b.stop(&c.id, stop_timeout(c, timeout)).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    });
    futures_util::future::try_join_all(stops).await.map(drop)
}

/// How long a stop of `c` waits before SIGKILL: the caller's `timeout` (`-t`), else the one
/// it was created with (compose `stop_grace_period`), else compose's default of 10 s.
pub(crate) fn stop_timeout(c: &ContainerInfo, timeout: Option<Duration>) -> Duration {
    timeout
        .or(c.stop_timeout)
        .unwrap_or(Duration::from_secs(10))
}

/// [`ContainerBackend::remove_many`] as one forced removal per container, all at once.
pub(crate) async fn remove_each<B: ContainerBackend + ?Sized>(b: &B, ids: &[String]) -> Result<()> {
    let removals = ids.iter().map(|id| b.remove(id, true));
    futures_util::future::try_join_all(removals).await.map(drop)
}

/// [`ContainerBackend::inspect`] of each id in turn, leaving out those already gone.
pub(crate) async fn inspect_each<B: ContainerBackend + ?Sized>(
    b: &B,
    ids: &[String],
) -> Result<Vec<ContainerInfo>> {
    let mut out = Vec::new();
    for id in ids {
        match b.inspect(id).await {
            Ok(i) => out.push(i),
            Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
