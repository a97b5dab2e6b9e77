//! `perry-sandbox verify IMAGE` and `perry-sandbox verify-bundle …`.
//!
//! `verify` answers, offline except for the registry, whether an image was signed by someone
//! the policy trusts, and prints what the runtime would pin. Every decision (allow or deny) is
//! recorded in the audit log before the answer is printed. Exit 0: verified; 3: denied (reason
//! in words); 125: could not decide.
//!
//! `verify-bundle` speaks the sigstore-conformance client protocol
//! (`verify-bundle --bundle F (--certificate-identity I --certificate-oidc-issuer U | --key K)
//! [--trusted-root T] FILE_OR_sha256:DIGEST`), so that suite can drive the binary; it also lets
//! users check blobs with the same verifier images go through.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use perry_audit::Correlation;
use perry_sandbox::exec::{
    ExecError, Executor, ImageSource, Platform, Verification, VerifyRequest,
};
use perry_sandbox::verify::{BlobInput, BlobPolicy, TrustRoot, TrustedKey, VerifyError};

use super::error::{CliError, CliResult, EXIT_REFUSED};
use super::{Context, GlobalArgs};

/// Exit status when the image (or bundle) is refused.
pub(super) const EXIT_DENIED: u8 = 3;

/// `verify IMAGE [--platform P] [--name REPO] [--bundle FILE]`.
#[derive(Args, Debug)]
pub(super) struct VerifyArgs {
    /// The image: a registry reference (`name[:tag][@sha256:…]`), an OCI layout directory
    /// (`oci:DIR[:tag]`) or an OCI archive (`oci-archive:FILE[:tag]`).
    pub image: String,
    /// The platform to pin from a multi-platform index (`os/arch[/variant]`).
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Options for images that do not come from a registry (air-gapped use).
#[derive(Args, Debug, Clone, Default)]
pub(super) struct SourceArgs {
    /// The repository the signatures were made for (`registry/repository`), which trust rules
    /// match: required for `oci:` and `oci-archive:` images, which have no name of their own.
    #[arg(long, value_name = "REPO")]
    pub name: Option<String>,
    /// Verify this Sigstore bundle file instead of the signatures stored with the image.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
}

/// Parses IMAGE as a registry reference, `oci:DIR[:tag]` or `oci-archive:FILE[:tag]`.
pub(super) fn parse_source(image: &str) -> Result<ImageSource, CliError> {
    ImageSource::parse(image).map_err(|e| {
        CliError::invalid_argument(format!("IMAGE {image:?}: {e}")).with_exit(EXIT_REFUSED)
    })
}

/// The command-line flag that fixes `e`, as a suffix for its message.
pub(super) fn flag_hint(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::NameRequired { .. } | VerifyError::BadName { .. } => " (--name REPO)",
        VerifyError::BundleFile { .. } => " (--bundle FILE)",
        _ => "",
    }
}

/// `verify-bundle` (the sigstore-conformance client protocol).
#[derive(Args, Debug)]
pub(super) struct VerifyBundleArgs {
    /// The Sigstore bundle (`*.sigstore.json`).
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// The exact certificate identity (SAN) the signer must have.
    #[arg(
        long,
        value_name = "IDENTITY",
        requires = "certificate_oidc_issuer",
        conflicts_with = "key"
    )]
    pub certificate_identity: Option<String>,
    /// The OIDC issuer the signer's certificate must name.
    #[arg(long, value_name = "URL", requires = "certificate_identity")]
    pub certificate_oidc_issuer: Option<String>,
    /// A PEM public key, for bundles signed with a managed key.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "certificate_identity"
    )]
    pub key: Option<PathBuf>,
    /// A trusted_root.json (default: the built-in public-good root).
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// The signed file, or `sha256:<hex>` of it.
    #[arg(value_name = "FILE_OR_DIGEST")]
    pub input: String,
}

/// Maps a verifier error to the CLI: its code from the one table; exit 3 for a denial, 125
/// when perry-sandbox could not decide.
pub(super) fn verify_error(e: &VerifyError) -> CliError {
    let err = CliError::new(e.code(), format!("{e}{}", flag_hint(e)));
    if e.is_denial() {
        err.with_exit(EXIT_DENIED)
    } else {
        err.with_exit(EXIT_REFUSED)
    }
}

/// Runs `verify`.
pub(super) fn run(g: &GlobalArgs, args: VerifyArgs) -> CliResult {
    // Exit 125 for everything that is not a verdict (bad input, bad config, registry down).
    let ctx = Context::load(g).map_err(|e| e.with_exit(EXIT_REFUSED))?;
    let image = parse_source(&args.image)?;
    let platform: Platform = super::parse_opt("--platform", &args.platform)?;
    // Open the audit log first: nothing is decided without a record. The executor records
    // its own set-up failure and the verdict, in the same shape as every other door's.
    let log = ctx.audit_log()?;
    let executor = Executor::new(ctx.config.clone(), log).map_err(|e| verify_exec_error(&e))?;
    let rt = super::runtime()?;
    let actor = ctx.audit_actor();
    let outcome = rt.block_on(executor.verify_source(&VerifyRequest {
        source: &image,
        name: args.source.name.as_deref(),
        bundle: args.source.bundle.as_deref(),
        platform: &platform,
        actor: &actor,
        correlation: &Correlation::new(),
    }));
    match outcome {
        Ok(v) => {
            print_verified(&v, ctx.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(verify_exec_error(&e)),
    }
}

/// A failure of `verify` as the CLI reports it: a verifier's verdict exits 3 (denied) or 125;
/// the executor's own failures (audit log, image store) exit 125.
fn verify_exec_error(e: &ExecError) -> CliError {
    match e {
        ExecError::Verify(v) => verify_error(v),
        other => CliError::new(other.code(), other.to_string()).with_exit(EXIT_REFUSED),
    }
}

fn print_verified(v: &Verification, json: bool) {
    let i = &v.image;
    if json {
        let out = serde_json::json!({
            "ok": true,
            "image": i.reference().to_string(),
            "pinned": i.pinned_reference(),
            "digest": i.digest().to_string(),
            "platform_digest": i.platform_digest().to_string(),
            "signed_digest": i.signed_digest().to_string(),
            "signer_identity": i.signer_identity(),
            "issuer": i.issuer(),
            "integrated_time": i.integrated_time(),
            "log_index": i.log_index(),
            "layout": i.layout().to_string(),
            "cache": if v.cache_hit { "hit" } else { "miss" },
        });
        println!("{out}");
    } else {
        println!("verified:        {}", i.reference());
        println!("pinned:          {}", i.pinned_reference());
        if i.digest() != i.platform_digest() {
            println!("index digest:    {}", i.digest());
        }
        println!(
            "signed digest:   {}{}",
            i.signed_digest(),
            if i.signed_on_index() { " (index)" } else { "" }
        );
        println!("signer identity: {}", i.signer_identity());
        println!("issuer:          {}", i.issuer());
        println!(
            "integrated time: {}",
            i.integrated_time()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into())
        );
        println!(
            "log index:       {}",
            i.log_index()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into())
        );
        println!("layout:          {}", i.layout());
        println!(
            "cache:           {}",
            if v.cache_hit { "hit" } else { "miss" }
        );
    }
}

/// Runs `verify-bundle`. Exit 0 when the bundle verifies, 3 when it does not, 125 when the
/// inputs cannot be read.
pub(super) fn run_bundle(g: &GlobalArgs, args: VerifyBundleArgs) -> CliResult {
    let root = match &args.trusted_root {
        Some(p) => TrustRoot::from_file(p),
        None => TrustRoot::public_good(),
    }
    .map_err(|e| CliError::invalid_argument(e.to_string()).with_exit(EXIT_REFUSED))?;
    let bundle = std::fs::read(&args.bundle)
        .map_err(|e| CliError::not_found(format!("--bundle {}: {e}", args.bundle.display())))?;
    let policy = match (
        &args.key,
        &args.certificate_identity,
        &args.certificate_oidc_issuer,
    ) {
        (Some(k), _, _) => BlobPolicy::Key(
            TrustedKey::load(k)
                .map_err(|e| CliError::invalid_argument(e.to_string()).with_exit(EXIT_REFUSED))?,
        ),
        (None, Some(i), Some(u)) => BlobPolicy::Identity {
            identity: i.clone(),
            issuer: u.clone(),
        },
        _ => {
            return Err(CliError::invalid_argument(
                "give --certificate-identity with --certificate-oidc-issuer, or --key",
            ))
        }
    };
    let input = BlobInput::from_arg(&args.input)
        .map_err(|e| CliError::invalid_argument(e.to_string()).with_exit(EXIT_REFUSED))?;
    match perry_sandbox::verify::verify_blob(&root, &bundle, &input, &policy) {
        Ok(facts) => {
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "signer_identity": facts.signer.identity(),
                        "issuer": facts.signer.issuer(), "integrated_time": facts.integrated_time,
                        "log_index": facts.log_index})
                );
            } else {
                println!(
                    "OK: {} signed by {} (issuer {})",
                    args.input,
                    facts.signer.identity(),
                    facts.signer.issuer()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(verify_error(&e)),
    }
}
