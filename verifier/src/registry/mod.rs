//! Registry access: resolve a reference to a digest we computed ourselves, fetch manifests and
//! blobs by digest, and never believe a registry about what its bytes hash to.
//!
//! Transport, token handshakes and retries come from `oci-client`; every byte that comes back is
//! hashed here and compared with the digest that was asked for (a `Docker-Content-Digest` header
//! is never trusted on its own). Plain HTTP is used only for loopback hosts that the
//! configuration marks `insecure`; everything else is HTTPS. Credentials come from the
//! `[registries."host"]` section (inline `username`/`password` or `token`, or a docker
//! `config.json` it points to), live in [`Secret`]s and are never logged.

mod client;
mod credentials;
mod error;
mod manifest;
mod platform;
#[cfg(test)]
mod tests;

pub use client::{RegistryClient, RegistrySource};
pub use error::{Mismatch, RegistryError};
pub(crate) use manifest::resolve_in;
pub use manifest::Resolved;
pub use platform::{Platform, PlatformError};

use perry_policies::Digest;
use sha2::{Digest as _, Sha256};

/// The largest manifest or index we accept (the limit CNCF distribution enforces on push).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type we ask for (schema 1 is refused: it cannot be pinned by content).
const ACCEPTED: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The SHA-256 digest of `bytes`, computed here; the only way this module names content.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    Digest::from_sha256(&Sha256::digest(bytes).into())
}
