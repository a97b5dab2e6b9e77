//! What a caller asks the [`Executor`](crate::Executor) to run.

use std::path::PathBuf;
use std::time::Duration;

use perry_audit::{Action, Actor, Correlation};
use perry_policies::{ImageRef, Tier};
use perry_runtime::native::{BindMount, LiveOutput};
use perry_verifier::registry::Platform;
use perry_verifier::ImageSource;

/// What to run, where from, and what it is granted. Limits here only tighten the tier's.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// Where the image comes from (a registry reference, `oci:DIR[:tag]` or
    /// `oci-archive:FILE[:tag]`); verified before anything else.
    pub source: ImageSource,
    /// The name the signatures were made for (`registry/repository`): required for OCI
    /// layouts and archives, which have no name of their own; trust rules match it.
    pub name: Option<String>,
    /// A Sigstore bundle file to verify instead of the signatures found with the image.
    pub bundle: Option<PathBuf>,
    /// The platform to pick from a multi-platform image.
    pub platform: Platform,
    /// The policy tier to run under.
    pub tier: Tier,
    /// The command (argv\[0\] is looked up on the image's `PATH`).
    pub argv: Vec<String>,
    /// Variables set on top of the image's environment (the host's is never passed).
    pub env: Vec<(String, String)>,
    /// Host paths bound into the sandbox (a target the image lacks is provided inside the
    /// sandbox, never created in the shared image).
    pub mounts: Vec<BindMount>,
    /// Working directory inside the sandbox (default: the image's, else `/`).
    pub workdir: Option<PathBuf>,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Task limit.
    pub pids: Option<u32>,
    /// Bytes of stdout and of stderr kept.
    pub output_limit: Option<u64>,
    /// Ask for the tier's network grant (loopback in the sandbox's own namespace).
    pub network: bool,
    /// Bytes fed to stdin.
    pub stdin: Option<Vec<u8>>,
    /// Stream output here as it arrives instead of collecting it (the terminal of `run`).
    pub live: Option<LiveOutput>,
    /// Who asked, for the audit log.
    pub actor: Actor,
    /// Ties this request's audit records together.
    pub correlation: Correlation,
    /// The audit action: [`Action::Run`] for `perry-sandbox run`, [`Action::Capability`] for
    /// invocations.
    pub action: Action,
    /// The capability invoked, when there is one.
    pub capability: Option<String>,
}

impl ExecRequest {
    /// A request to run `argv` from registry image `image` under `tier`, as the current process.
    pub fn new(image: ImageRef, tier: Tier, argv: Vec<String>) -> Self {
        Self::from_source(ImageSource::Registry(image), tier, argv)
    }

    /// A request to run `argv` from `source` under `tier`, as the current process.
    pub fn from_source(source: ImageSource, tier: Tier, argv: Vec<String>) -> Self {
        Self {
            source,
            name: None,
            bundle: None,
            platform: Platform::default(),
            tier,
            argv,
            env: Vec::new(),
            mounts: Vec::new(),
            workdir: None,
            timeout: None,
            memory: None,
            pids: None,
            output_limit: None,
            network: false,
            stdin: None,
            live: None,
            actor: Actor::current(),
            correlation: Correlation::new(),
            action: Action::Run,
            capability: None,
        }
    }
}

/// What to verify without running it, and for whom: [`Executor::verify_source`](crate::Executor::verify_source).
#[derive(Clone, Copy, Debug)]
pub struct VerifyRequest<'a> {
    /// Where the image comes from.
    pub source: &'a ImageSource,
    /// The name the signatures were made for (required for OCI layouts and archives).
    pub name: Option<&'a str>,
    /// A Sigstore bundle file to verify instead of the signatures found with the image.
    pub bundle: Option<&'a std::path::Path>,
    /// The platform to pick from a multi-platform image.
    pub platform: &'a Platform,
    /// Who asked, for the audit log.
    pub actor: &'a Actor,
    /// Ties the record to the caller's other records.
    pub correlation: &'a Correlation,
}
