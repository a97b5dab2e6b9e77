//! `perry-policies`: the `perryconfig.toml` model.
//!
//! Everything perry-sandbox decides is decided by policy: which signers are trusted for which
//! images, what each tier allows, which named commands a host program may invoke and with what
//! arguments. This crate parses that policy, refuses anything unknown or loosening, and explains
//! each problem with its file, line, column and key path.
//!
//! ```
//! use perry_policies::{Config, ImageRef};
//! let cfg = Config::from_bytes(br#"
//! [[trust.policy]]
//! images = ["cgr.dev/chainguard/**"]
//! keyless = [{ issuer = "https://token.actions.githubusercontent.com",
//!              subject = "https://github.com/chainguard-images/images/.github/workflows/release.yaml@refs/heads/main" }]
//! "#, "inline.toml".as_ref()).unwrap();
//! let git = ImageRef::parse("cgr.dev/chainguard/git:latest").unwrap();
//! assert_eq!(cfg.trust.rules_for(&git).len(), 1);
//! // Deny by default: nothing matches busybox.
//! assert!(cfg.trust.rules_for(&ImageRef::parse("busybox").unwrap()).is_empty());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capability;
pub mod code;
pub mod config;
pub mod discover;
pub mod error;
pub mod glob;
pub mod pattern;
pub mod reference;
pub mod registry;
pub mod secret;
pub mod tier;
pub mod trust;
pub mod units;

pub use capability::{ArgRules, ArgViolation, EnvSpec, MountSpec, PositionRule, ShellCapability};
pub use code::{Code, EXIT_REFUSED};
pub use config::{
    AuditConfig, BackendMode, BackendSettings, BackendsConfig, Config, SandboxConfig,
    ServiceConfig, UidRange, BACKEND_NAMES, EXTRA_ARG_FLAGS,
};
pub use discover::{discover, load_discovered, ConfigSource};
pub use error::{ConfigError, KeyPath, Problem};
pub use glob::ImageGlob;
pub use pattern::Pattern;
pub use reference::{Digest, ImageRef, ReferenceError};
pub use registry::{is_loopback_host, RegistryConfig};
pub use secret::Secret;
pub use tier::{NetworkPolicy, Tier, TierLimits, TierOverride, TierSpec};
pub use trust::{KeylessAuthority, TrustPolicy, TrustRule, TrustedRootSource};
pub use units::{ByteSize, HumanDuration};
