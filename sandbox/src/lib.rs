//! perry-runtime: where a verified image becomes something that can run.
//!
//! The verifier decides *whether* an image may run; this crate makes sure that what runs is
//! exactly what was verified, and that an image's contents cannot reach outside the sandbox
//! before anything has even started. It owns three steps of the data path:
//!
//! 1. [`store`]: the content-addressed blob store (`<state_dir>/blobs/sha256/<hex>`). Every byte
//!    is hashed while it streams in and again whenever it is read back, so a blob is only ever
//!    used under the digest the verifier pinned.
//! 2. [`manifest`]: strict parsing of the OCI/Docker image manifest and image config, which name
//!    the layer blobs, their compression and their uncompressed digests (`diff_ids`).
//! 3. [`unpack`]: turning layer tars — written by the party the sandbox defends against — into a
//!    read-only root filesystem at `<state_dir>/rootfs/<manifest-hex>`, refusing or neutralising
//!    every hostile entry (path traversal, symlink and hardlink escapes, device nodes, setuid
//!    bits, file capabilities, decompression bombs), and leaving nothing behind on failure.
//!
//! The native namespace runner ([`native`]) runs a command from the rootfs produced here, under
//! its tier's confinement ([`native::ProfileStep`]: rlimits, securebits, capabilities,
//! no_new_privs, Landlock, seccomp).
//!
//! # Example
//!
//! ```no_run
//! use perry_runtime::manifest::{ImageConfig, ImageManifest, MAX_DOCUMENT_SIZE};
//! use perry_runtime::store::BlobStore;
//! use perry_runtime::unpack::{Limits, RootfsStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = perry_policies::Config::default();
//! let state = &config.sandbox.state_dir;
//! let blobs = BlobStore::open_in(state)?;
//! // The puller fills the store, by digest only, from a VerifiedImage:
//! //   blobs.ingest(network_reader, &descriptor.digest, Some(descriptor.size))?;
//! let manifest_digest =
//!     perry_policies::Digest::parse(&format!("sha256:{}", "ab".repeat(32)))?;
//! let manifest = ImageManifest::parse(&blobs.read_verified(&manifest_digest, MAX_DOCUMENT_SIZE)?)?;
//! let image_config =
//!     ImageConfig::parse(&blobs.read_verified(&manifest.config.digest, MAX_DOCUMENT_SIZE)?)?;
//! let rootfs = RootfsStore::open_in(state)?.unpack_image(
//!     &blobs,
//!     &manifest_digest,
//!     &manifest,
//!     &image_config,
//!     &Limits::from_config(&config.sandbox),
//! )?;
//! println!("read-only rootfs at {}", rootfs.path.display());
//! # Ok(()) }
//! ```

pub mod inventory;
pub mod manifest;
pub mod native;
pub mod pull;
pub mod store;
pub mod unpack;
