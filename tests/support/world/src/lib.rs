//! `perry-testworld`: the real, loopback-only world perry-sandbox's end-to-end tests run in.
//!
//! * [`Registry`] — Debian's `docker-registry` (CNCF distribution 2.8, no referrers API) on a free
//!   127.0.0.1 port with temporary storage, stopped on drop (and when the test process dies).
//! * [`TinyImage`] / [`TinyIndex`] — images built in memory from `/bin/busybox` (Debian
//!   `busybox-static`): one gzip'ed layer holding busybox and its applet symlinks, an OCI config
//!   with `rootfs.diff_ids`, an OCI manifest; and two-platform indexes of them.
//! * [`SigStack`] — the sigstore-js mock stack (`tests/support/sigstack.js`: Fulcio + CT, Rekor,
//!   TSA over HTTP on 127.0.0.1) with its `trusted_root.json`; [`SigStack::sign`] signs an image
//!   digest and attaches the signature in the OCI referrers-tag layout (a DSSE in-toto bundle,
//!   attached by `@sigstore/oci`) or the legacy cosign `sha256-<hex>.sig` layout.
//! * [`ConfigBuilder`] — a `perryconfig.toml` trusting the stack for the registry's images.
//!
//! ```no_run
//! use perry_testworld::{Registry, SigStack, SignOptions, TinyImage, ConfigBuilder};
//! let reg = Registry::start();
//! let pushed = reg.push_image("demo/app", "v1", &TinyImage::busybox("amd64"));
//! let stack = SigStack::shared();
//! stack.sign(&reg, "demo/app", &pushed.digest, &SignOptions::default());
//! let dir = tempfile::tempdir().unwrap();
//! let config = ConfigBuilder::new(&reg, stack).write(dir.path());
//! // perry-sandbox verify --config <config> 127.0.0.1:PORT/demo/app:v1  -> exit 0
//! # let _ = config;
//! ```
//!
//! Everything here panics on failure with a message saying what failed: it is test support.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod host_image;
mod http;
mod image;
mod registry;
mod sigstack;

pub use config::ConfigBuilder;
pub use host_image::{host_architecture, shared_libraries, HostImage};
pub use image::{sha256_digest, ImageSpec, TinyImage, TinyIndex, BUSYBOX_APPLETS};
pub use registry::{Pushed, Registry};
pub use sigstack::{push_legacy_layer, simple_signing_payload, support_dir};
pub use sigstack::{Layout, SigStack, SignOptions, Signed, DEFAULT_IDENTITY, DEFAULT_ISSUER};
