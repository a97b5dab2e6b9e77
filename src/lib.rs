//! `perry-sandbox` as a library: verified execution, shell capabilities and the local API.
//!
//! The member crates each own one concern (policies, verification, profiles, runtime, audit).
//! This crate composes them into the three things users call:
//!
//! - [`exec`]: the one gated door (the `perry-engine` crate) — verify, pull by digest, unpack,
//!   pick the tier's profile, record the decision, run, record the outcome. `perry-sandbox
//!   run` and every capability invocation go through it.
//! - [`capability`]: `shellCapabilities` — named, argument-checked commands a host program's
//!   ShellBridge invokes ([`capability::run_capability`], and the host-program contract
//!   [`capability::perry_container_run_capability`]).
//! - [`service`]: `perry-sandbox serve`, HTTP/1.1 + JSON over a Unix socket with peer-credential
//!   checks, and the [`service::Client`] host programs use to call it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use perry_sandbox::capability::{CapabilityRequest, Capabilities};
//! use perry_sandbox::exec::Executor;
//!
//! let config = perry_policies::Config::load("perryconfig.toml".as_ref())?;
//! let audit = Arc::new(perry_audit::AuditLog::open(perry_audit::LogOptions::from_config(&config))?);
//! let executor = Arc::new(Executor::new(config, audit)?);
//! let caps = Capabilities::new(executor);
//! let out = caps
//!     .run_capability("git-log", CapabilityRequest::new(vec!["-n5".into()]).workspace("/home/me/repo"))
//!     .await?;
//! println!("{}", out.stdout);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capability;
pub mod error;
pub mod service;

/// Verification without running: blob bundles (`verify-bundle`, the sigstore conformance
/// protocol), trusted roots and keys, and the verifier's error (its `code()` is from the one
/// table).
pub mod verify {
    pub use perry_verifier::{
        verify_blob, BlobInput, BlobPolicy, TrustRoot, TrustedKey, VerifyError,
    };
}

/// Container backends (podman, docker-compatible CLIs, lima), found at run time.
pub mod backends {
    pub use perry_backends::{
        detect, detect_configured, detect_with, install_advice, install_choices, probe,
        probe_order, probe_with, recommended, BackendError, ContainerBackend, DetectOptions,
        Detected, InstallChoice, Mode, Probe,
    };
    pub use perry_policies::Code;
}

/// Compose projects: loading files as docker compose does, planning them through the one gated
/// door (every image verified and pinned, every service tiered), and orchestrating them on a
/// container backend with rollback to nothing.
pub mod compose {
    pub use perry_audit::Correlation;
    pub use perry_backends::{
        install_choices, BackendError, ContainerBackend, ExecSpec, InstallChoice, LogLine,
        LogOptions, LogStream,
    };
    pub use perry_compose::{
        find_compose_files, load, normalize_project_name, to_yaml, LoadError, LoadOptions, Project,
    };
    pub use perry_engine::orchestrate::{
        DownOptions, DownReport, Followed, OrchestrateError, Orchestrator, Progress, PsEntry,
        UpFailed, UpOptions, UpReport,
    };
    pub use perry_engine::plan::{Plan, PlanRefused};

    /// The backend compose drives (the docker-compatible CLI protocol: podman, docker, …).
    pub type Backend = perry_backends::DockerProtocol;

    /// The backend to use: `PERRY_CONTAINER_BACKEND`, else `[backends] backend`, else the
    /// first one detected (in `[backends] order` when set), built with its
    /// `[backends.<name>]` settings (runtime, extra flags such as this host's `--ulimit`).
    pub async fn backend_for(
        config: &perry_policies::Config,
    ) -> Result<Backend, perry_backends::BackendError> {
        Ok(perry_backends::detect_configured(&config.backends)
            .await?
            .backend)
    }

    /// Detects again, past the per-process cache (after installing a backend).
    pub async fn backend_redetect(
        config: &perry_policies::Config,
    ) -> Result<Backend, perry_backends::BackendError> {
        let opts = perry_backends::DetectOptions::from_config_and_env(&config.backends);
        Ok(perry_backends::detect_with(&opts).await?.backend)
    }
}

/// Tier profiles as reviewers read them (`profiles show|diff|export`).
pub mod profiles {
    pub use perry_profiles::{explain, export_oci, Grants, Profile, ProfileError};
}

/// The content-addressed image store as operators manage it (`store ls|gc`).
pub mod store {
    pub use perry_runtime::inventory::{self, GcOptions, Inventory, InventoryError};
    pub use perry_runtime::store::BlobStore;
    pub use perry_runtime::unpack::RootfsStore;
}

/// Verified execution: the one gated door every run goes through (re-exported from
/// `perry-engine`, so host programs and the CLI need only this crate).
pub mod exec {
    pub use perry_engine::*;
}
