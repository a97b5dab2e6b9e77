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
use perry_audit::{AuditSink, Decision};
use perry_verifier::registry::Platform;
use perry_verifier::{
    BlobInput, BlobPolicy, ImageSource, TrustRoot, TrustedKey, Verifier, VerifyError,
};

use super::error::{CliError, CliResult, EXIT_REFUSED};
use super::{Context, GlobalArgs};

/// Exit status when the image (or bundle) is refused.
pub const EXIT_DENIED: u8 = 3;

/// `verify IMAGE [--platform P] [--name REPO] [--bundle FILE]`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
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
pub struct SourceArgs {
    /// The repository the signatures were made for (`registry/repository`), which trust rules
    /// match: required for `oci:` and `oci-archive:` images, which have no name of their own.
    #[arg(long, value_name = "REPO")]
    pub name: Option<String>,
    /// Verify this Sigstore bundle file instead of the signatures stored with the image.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
}

/// Parses IMAGE as a registry reference, `oci:DIR[:tag]` or `oci-archive:FILE[:tag]`.
pub fn parse_source(image: &str) -> Result<ImageSource, CliError> {
    ImageSource::parse(image).map_err(|e| {
        CliError::invalid_argument(format!("IMAGE {image:?}: {e}")).with_exit(EXIT_REFUSED)
    })
}

/// The command-line flag that fixes `e`, as a suffix for its message.
pub fn flag_hint(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::NameRequired { .. } | VerifyError::BadName { .. } => " (--name REPO)",
        VerifyError::BundleFile { .. } => " (--bundle FILE)",
        _ => "",
    }
}

/// The name trust rules are matched against: `--name`, else the registry reference's.
fn rule_name(source: &ImageSource, name: Option<&str>) -> Option<String> {
    match (name, source) {
        (Some(n), _) => Some(n.to_string()),
        (None, ImageSource::Registry(r)) => Some(r.name()),
        _ => None,
    }
}

/// `verify-bundle` (the sigstore-conformance client protocol).
#[derive(Args, Debug)]
pub struct VerifyBundleArgs {
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

fn denied(e: &VerifyError) -> CliError {
    let code: &'static str = if e.code() == "policy_denied" {
        "policy_denied"
    } else {
        "verification_failed"
    };
    CliError {
        code: code.into(),
        status: 403,
        message: e.to_string(),
        exit: EXIT_DENIED,
    }
}

/// Maps a verifier error to the CLI's codes and exit statuses.
pub fn verify_error(e: &VerifyError) -> CliError {
    if e.is_denial() {
        return denied(e);
    }
    match e {
        VerifyError::TrustedRoot { .. } | VerifyError::KeyFile { .. } => {
            CliError::invalid_config(e.to_string()).with_exit(EXIT_REFUSED)
        }
        VerifyError::Registry(r) if r.is_not_found() => CliError::not_found(e.to_string()),
        VerifyError::NameRequired { .. }
        | VerifyError::BadName { .. }
        | VerifyError::BundleFile { .. } => {
            CliError::invalid_argument(format!("{e}{}", flag_hint(e))).with_exit(EXIT_REFUSED)
        }
        VerifyError::Layout(l) => match l.code() {
            "not_found" => CliError::not_found(e.to_string()),
            "invalid_argument" => CliError::invalid_argument(e.to_string()).with_exit(EXIT_REFUSED),
            _ => CliError {
                code: "invalid_image".into(),
                status: 400,
                message: e.to_string(),
                exit: EXIT_REFUSED,
            },
        },
        _ => CliError {
            code: "registry_unavailable".into(),
            status: 503,
            message: e.to_string(),
            exit: EXIT_REFUSED,
        },
    }
}

/// Runs `verify`.
pub fn run(g: &GlobalArgs, args: VerifyArgs) -> CliResult {
    // Exit 125 for everything that is not a verdict (bad input, bad config, registry down).
    let ctx = Context::load(g).map_err(|e| e.with_exit(EXIT_REFUSED))?;
    let image = parse_source(&args.image)?;
    let platform: Platform = super::parse_opt("--platform", &args.platform)?;
    // Open the audit log first: nothing is decided without a record.
    let log = ctx.audit_log()?;
    let verifier = match Verifier::new(&ctx.config) {
        Ok(v) => v,
        Err(e) => {
            let ev = ctx
                .audit_event("verify", Decision::Error)
                .image(image.to_string())
                .reason(e.to_string())
                .detail("code", e.code().to_string());
            log.record(ev).map_err(super::audit::audit_error)?;
            return Err(verify_error(&e));
        }
    };
    let rt = super::runtime()?;
    let outcome = rt.block_on(verifier.verify_source(
        &image,
        args.source.name.as_deref(),
        &platform,
        args.source.bundle.as_deref(),
    ));
    let name = rule_name(&image, args.source.name.as_deref()).unwrap_or_default();
    let rule_names: Vec<String> = ctx
        .config
        .trust
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.matches(&name))
        .map(|(i, r)| r.name.clone().unwrap_or_else(|| format!("policy[{i}]")))
        .collect();
    match outcome {
        Ok(v) => {
            let img = &v.image;
            let ev = ctx
                .audit_event("verify", Decision::Allow)
                .image(image.to_string())
                .digest(img.platform_digest().to_string())
                .rule(rule_names.join(","))
                .reason(format!(
                    "signed by {} (issuer {})",
                    img.signer_identity(),
                    img.issuer()
                ))
                .detail("index_digest", img.digest().to_string())
                .detail("signed_digest", img.signed_digest().to_string())
                .detail("layout", img.layout().to_string())
                .detail("log_index", img.log_index())
                .detail("integrated_time", img.integrated_time())
                .detail("cache_hit", v.cache_hit)
                .detail("trusted_root_sha256", verifier.trust_root().sha256_hex());
            log.record(ev).map_err(super::audit::audit_error)?;
            print_verified(&v, ctx.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let decision = if e.is_denial() {
                Decision::Deny
            } else {
                Decision::Error
            };
            let ev = ctx
                .audit_event("verify", decision)
                .image(image.to_string())
                .rule(rule_names.join(","))
                .reason(e.to_string())
                .detail("code", e.code().to_string());
            log.record(ev).map_err(super::audit::audit_error)?;
            Err(verify_error(&e))
        }
    }
}

fn print_verified(v: &perry_verifier::Verification, json: bool) {
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
pub fn run_bundle(g: &GlobalArgs, args: VerifyBundleArgs) -> CliResult {
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
    match perry_verifier::verify_blob(&root, &bundle, &input, &policy) {
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
        Err(e) => Err(denied(&e)),
    }
}
