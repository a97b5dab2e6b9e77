//! `perry-backends`: the [`ContainerBackend`] trait and its drivers (podman, docker, nerdctl,
//! the docker-compatible desktops, lima), run-time detection, and tier hardening as flags.
//!
//! Why a crate of its own: compose services and workload graphs run on the user's container
//! runtime, not on our native runner, and the runtime must be held to the same promise —
//! nothing runs unless its image was verified and pinned, under its tier's confinement. So the
//! backend is policy-blind and gated by types: every entry point that creates a container takes
//! a [`ContainerSpec`] whose image is a [`PinnedImage`], made only from a
//! [`perry_verifier::VerifiedImage`]; the backend checks that the image it holds has the
//! verified manifest digest before creating anything, and applies the [`Hardening`] computed
//! from the tier profile. `untrusted` needs a sandboxed kernel (gVisor) and is refused without.
//!
//! ```no_run
//! # async fn demo(verified: &perry_verifier::VerifiedImage) -> Result<(), perry_backends::BackendError> {
//! use perry_backends::{hardening_for, ContainerBackend, ContainerSpec, DockerProtocol, PinnedImage};
//! use perry_profiles::{Grants, Profile};
//! let profile = Profile::for_tier(perry_policies::Tier::Hardened, None, &Grants::default())
//!     .expect("profile");
//! let hardening = hardening_for(&profile, std::path::Path::new("/var/lib/perry-sandbox"))?;
//! let podman = DockerProtocol::podman(Some("runc"));
//! let image = PinnedImage::from_verified(verified);
//! podman.pull(&image).await?; // by digest, then the digest is checked
//! let mut spec = ContainerSpec::new("demo-1", image, hardening);
//! spec.command = vec!["echo".into(), "hi".into()];
//! let out = podman.run(&spec).await?;
//! assert_eq!(out.exit_code, 0);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apple;
mod archive;
mod backend;
mod cli;
mod detect;
mod docker;
mod error;
mod fault;
mod hardening;
mod host_process;
mod image;
mod install;
mod logs;
mod parse;
mod runtime_exec;
mod spec;

pub use apple::{unenforceable, AppleContainerProtocol, ALWAYS_UNENFORCEABLE};
pub use archive::{provision_image, write_oci_archive, ArchiveInfo};
pub use backend::{Availability, ContainerBackend, Result};
pub use detect::{
    detect, detect_configured, detect_with, driver_for, driver_with, probe, probe_order,
    probe_with, DetectCache, DetectOptions, Detected, Mode, Probe, PROBE_TIMEOUT,
};
pub use docker::{Dialect, DockerProtocol, LimaProtocol, SandboxRuntime};
pub use error::BackendError;
pub use fault::{Fault, FaultyBackend};
pub use hardening::{hardening_for, write_seccomp, ContainerNetwork, Hardening, NON_ROOT_USER};
pub use image::{is_loopback_registry, PinnedImage};
pub use install::{install_advice, install_choices, recommended, InstallChoice};
pub use logs::{LogFollower, LogLine, LogStream};
pub use perry_policies::{BackendMode, BackendSettings, BackendsConfig};
pub use spec::{
    ContainerInfo, ContainerSpec, ContainerStatus, ExecOutput, ExecSpec, Health, IsolationLevel,
    LogOptions, Mount, NetworkAttachment, NetworkInfo, NetworkSpec, PortMapping, VolumeInfo,
    VolumeSpec,
};
