//! `perry-verifier`: the gate in front of everything perry-sandbox runs.
//!
//! Nothing runs unless the image it comes from was verified and pinned by digest. This crate
//! does that: it resolves a reference to a digest (hashing the manifest bytes itself), finds
//! the image's Sigstore signatures (OCI referrers, the referrers tag, legacy cosign `.sig`),
//! verifies them offline against a trusted root with `sigstore-verify` (no TUF, no network at
//! verify time), checks that they name *this* digest and repository, matches the signer against
//! the trust rules of `perryconfig.toml` (deny by default), and returns a [`VerifiedImage`] —
//! a type nothing outside this crate can construct, and the only one the runtime accepts.
//! Decisions are cached by digest (memory + HMAC-protected disk entries).
//!
//! Air-gapped images come from OCI layout directories (`oci:DIR[:tag]`) and OCI archives
//! (`oci-archive:FILE[:tag]`) through [`Verifier::verify_source`], with the signatures stored in
//! the layout or a detached bundle file; they are verified exactly like registry images, under
//! the image name the caller says the signatures were made for ([`layout`], [`source`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use perry_policies::{Config, ImageRef};
//! use perry_verifier::{registry::Platform, Verifier};
//!
//! let config = Config::load("perryconfig.toml".as_ref())?;
//! let verifier = Verifier::new(&config)?;
//! let image = ImageRef::parse("cgr.dev/chainguard/git:latest")?;
//! match verifier.verify(&image, &Platform::default()).await {
//!     Ok(v) => println!("run {} (signed by {})", v.image.pinned_reference(), v.image.signer_identity()),
//!     Err(e) => eprintln!("refused: {e}"), // e.g. "identity mismatch: signed by …"
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod discover;
pub mod registry;

pub mod blob;
pub mod cache;
pub mod error;
pub mod image;
pub mod layout;
pub mod legacy;
pub mod pipeline;
pub mod policy;
pub mod signature;
pub mod source;
pub mod trust_root;

pub use blob::{verify_blob, BlobInput, BlobPolicy};
pub use cache::VerifyCache;
pub use error::VerifyError;
pub use image::VerifiedImage;
pub use layout::{LayoutError, OciLayout};
pub use pipeline::{Verification, Verifier};
pub use signature::{SignatureFacts, Signer, TrustedKey};
pub use source::{ImageSource, Origin};
pub use trust_root::TrustRoot;
