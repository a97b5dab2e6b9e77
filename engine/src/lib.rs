//! `perry-engine`: the one gated door.
//!
//! Everything perry-sandbox starts — a `perry-sandbox run`, a shell capability invocation, and
//! (next) a compose service or a workload-graph node — comes through the [`Executor`], so the
//! guarantees are made in one place:
//!
//! - nothing runs unless the verifier produced a `VerifiedImage` for it (the puller takes
//!   nothing else, and the runner takes only the `VerifiedRootfs` the puller mints);
//! - any error before the command starts means nothing runs, and it is recorded;
//! - the allow record is durable before the sandbox exists, and an `outcome` record follows
//!   every run, correlated with it;
//! - every failure carries one [`Code`] from the single table, whichever door it came through.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use perry_engine::{ExecRequest, Executor};
//! use perry_policies::{Config, ImageRef, Tier};
//!
//! let config = Config::load("perryconfig.toml".as_ref())?;
//! let audit = Arc::new(perry_audit::AuditLog::open(perry_audit::LogOptions::from_config(&config))?);
//! let executor = Executor::new(config, audit)?;
//! let image = ImageRef::parse("cgr.dev/chainguard/busybox:latest")?;
//! let prepared = executor.prepare(ExecRequest::new(image, Tier::Hardened, vec!["echo".into(), "hi".into()])).await?;
//! let outcome = executor.launch(prepared)?; // blocking: the sandbox runs here
//! assert_eq!(outcome.shell_status(), 0);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod executor;
mod host;
pub mod orchestrate;
mod outcome;
pub mod plan;
mod request;
mod spec;

pub use error::ExecError;
pub use executor::{Executor, Prepared};
pub use host::WarmUp;
pub use outcome::ExecOutcome;
pub use request::{ExecRequest, VerifyRequest};
pub use spec::identity;

pub use perry_policies::{Code, EXIT_REFUSED};
pub use perry_runtime::native::{BindMount, DeniedSyscall, LiveOutput, Outcome, Stream};
pub use perry_runtime::pull::PullProgress;
pub use perry_verifier::registry::Platform;
pub use perry_verifier::{ImageSource, Verification};
