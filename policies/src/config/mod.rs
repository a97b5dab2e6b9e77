//! The whole `perryconfig.toml`: sections, defaults, loading and validation.
//!
//! Loading is two passes. Serde (with `deny_unknown_fields` everywhere) checks shape and types;
//! then [`Config::validate`] checks meaning (tiers only tighten, capabilities stay hardened,
//! plain HTTP only on loopback, …). Both passes report the key path, and the loader maps each
//! path back to a line and column in the file.

mod backends;
mod load;
mod model;
#[cfg(test)]
mod tests;
mod validate;

pub use backends::{BackendMode, BackendSettings, BackendsConfig, BACKEND_NAMES, EXTRA_ARG_FLAGS};
pub use model::{AuditConfig, Config, SandboxConfig, ServiceConfig, UidRange};
