//! [`FaultyBackend`]: wraps a backend and fails the Nth call or hangs past a timeout, for the
//! engine's rollback and deadline tests.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::backend::Result;
use crate::{
    Availability, BackendError, ContainerBackend, ContainerInfo, ContainerSpec, ExecOutput,
    ExecSpec, LogFollower, LogOptions, NetworkInfo, NetworkSpec, PinnedImage, VolumeInfo,
    VolumeSpec,
};

/// What to do on the chosen call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Return [`BackendError::Injected`].
    Fail,
    /// Sleep this long before delegating (longer than the caller's deadline).
    Hang(Duration),
}

/// A backend that injects `fault` into its `nth` call (1-based, counting every trait call
/// except `name`); all other calls go to `inner`.
pub struct FaultyBackend<B> {
    inner: B,
    nth: usize,
    fault: Fault,
    calls: AtomicUsize,
}

impl<B: ContainerBackend> FaultyBackend<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, nth: usize, fault: Fault) -> Self {
        FaultyBackend {
            inner,
            nth,
            fault,
            calls: AtomicUsize::new(0),
        }
    }

    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn gate(&self, what: &str) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n != self.nth {
            return Ok(());
        }
        match self.fault {
            Fault::Fail => Err(BackendError::Injected(format!("call {n} ({what})"))),
            Fault::Hang(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

macro_rules! delegate {
    ($self:ident, $what:literal, $call:expr) => {{
        $self.gate($what).await?;
        $call.await
    }};
}

impl<B: ContainerBackend> ContainerBackend for FaultyBackend<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn version(&self) -> Result<String> {
        delegate!(self, "version", self.inner.version())
    }
    async fn availability(&self) -> Availability {
        match self.gate("availability").await {
            Ok(()) => self.inner.availability().await,
            Err(e) => Availability {
                available: false,
                reason: e.to_string(),
                version: None,
                isolation: crate::IsolationLevel::Container,
            },
        }
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        delegate!(self, "create", self.inner.create(spec))
    }
    async fn start(&self, id: &str) -> Result<()> {
        delegate!(self, "start", self.inner.start(id))
    }
    async fn run(&self, spec: &ContainerSpec) -> Result<ExecOutput> {
        delegate!(self, "run", self.inner.run(spec))
    }
    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        delegate!(self, "stop", self.inner.stop(id, timeout))
    }
    async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        delegate!(self, "kill", self.inner.kill(id, signal))
    }
    async fn remove(&self, id: &str, force: bool) -> Result<()> {
        delegate!(self, "remove", self.inner.remove(id, force))
    }
    async fn wait(&self, id: &str) -> Result<i32> {
        delegate!(self, "wait", self.inner.wait(id))
    }
    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        delegate!(self, "inspect", self.inner.inspect(id))
    }
    async fn list(&self, key: &str, value: &str) -> Result<Vec<String>> {
        delegate!(self, "list", self.inner.list(key, value))
    }
    async fn logs(&self, id: &str, opts: LogOptions) -> Result<ExecOutput> {
        delegate!(self, "logs", self.inner.logs(id, opts))
    }
    async fn follow(&self, id: &str, tail: Option<usize>) -> Result<LogFollower> {
        delegate!(self, "follow", self.inner.follow(id, tail))
    }
    async fn stop_many(
        &self,
        containers: &[ContainerInfo],
        timeout: Option<Duration>,
    ) -> Result<()> {
        delegate!(self, "stop_many", self.inner.stop_many(containers, timeout))
    }
    async fn remove_many(&self, ids: &[String]) -> Result<()> {
        delegate!(self, "remove_many", self.inner.remove_many(ids))
    }
    async fn inspect_many(&self, ids: &[String]) -> Result<Vec<ContainerInfo>> {
        delegate!(self, "inspect_many", self.inner.inspect_many(ids))
    }
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecOutput> {
        delegate!(self, "exec", self.inner.exec(id, spec))
    }
    async fn pull(&self, image: &PinnedImage) -> Result<String> {
        delegate!(self, "pull", self.inner.pull(image))
    }
    async fn image_exists(&self, image: &PinnedImage) -> Result<bool> {
        delegate!(self, "image_exists", self.inner.image_exists(image))
    }
    async fn image_id(&self, image: &PinnedImage) -> Result<Option<String>> {
        delegate!(self, "image_id", self.inner.image_id(image))
    }
    async fn load(&self, image: &PinnedImage, archive: &Path) -> Result<String> {
        delegate!(self, "load", self.inner.load(image, archive))
    }
    async fn remove_image(&self, image: &PinnedImage) -> Result<()> {
        delegate!(self, "remove_image", self.inner.remove_image(image))
    }
    async fn network_create(&self, spec: &NetworkSpec) -> Result<String> {
        delegate!(self, "network_create", self.inner.network_create(spec))
    }
    async fn network_connect(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()> {
        delegate!(
            self,
            "network_connect",
            self.inner.network_connect(network, container, aliases)
        )
    }
    async fn network_inspect(&self, name: &str) -> Result<NetworkInfo> {
        delegate!(self, "network_inspect", self.inner.network_inspect(name))
    }
    async fn network_list(&self, key: &str, value: &str) -> Result<Vec<String>> {
        delegate!(self, "network_list", self.inner.network_list(key, value))
    }
    async fn network_remove(&self, name: &str) -> Result<()> {
        delegate!(self, "network_remove", self.inner.network_remove(name))
    }
    async fn volume_create(&self, spec: &VolumeSpec) -> Result<String> {
        delegate!(self, "volume_create", self.inner.volume_create(spec))
    }
    async fn volume_inspect(&self, name: &str) -> Result<VolumeInfo> {
        delegate!(self, "volume_inspect", self.inner.volume_inspect(name))
    }
    async fn volume_list(&self, key: &str, value: &str) -> Result<Vec<String>> {
        delegate!(self, "volume_list", self.inner.volume_list(key, value))
    }
    async fn volume_remove(&self, name: &str) -> Result<()> {
        delegate!(self, "volume_remove", self.inner.volume_remove(name))
    }
}
