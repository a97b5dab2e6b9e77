//! Trusted roots: the Sigstore trust material every signature must chain to.
//!
//! A trusted root is loaded once, from the snapshot built into the binary (`public-good`) or
//! from a `trusted_root.json` named in the configuration. Nothing is fetched: there is no TUF
//! and no network access at verify time. The SHA-256 of the root's bytes is part of every cache
//! key, so changing the root invalidates every cached decision.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use perry_policies::TrustedRootSource;
use sha2::{Digest as _, Sha256};
use sigstore_trust_root::TrustedRoot;

use crate::error::VerifyError;

/// The public-good production trusted root, as shipped with this project (`verifier/data/`).
pub const PUBLIC_GOOD_TRUSTED_ROOT: &str =
    include_str!("../data/public-good-production.trusted_root.json");

/// A parsed trusted root with a ready-to-use Sigstore verifier and the hash of its bytes.
///
/// Cheap to clone (shared); build it once per process, not per verification.
#[derive(Clone)]
pub struct TrustRoot {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: sigstore_verify::Verifier,
    sha256: [u8; 32],
    label: String,
}

impl std::fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoot")
            .field("label", &self.inner.label)
            .field("sha256", &self.sha256_hex())
            .finish()
    }
}

impl TrustRoot {
    /// Loads the root a configuration names.
    pub fn load(source: &TrustedRootSource) -> Result<Self, VerifyError> {
        match source {
            TrustedRootSource::PublicGood => Self::public_good(),
            TrustedRootSource::Path(p) => Self::from_file(p),
        }
    }

    /// The built-in public-good production snapshot.
    pub fn public_good() -> Result<Self, VerifyError> {
        Self::from_json_bytes(PUBLIC_GOOD_TRUSTED_ROOT.as_bytes(), "public-good")
    }

    /// A `trusted_root.json` file.
    pub fn from_file(path: &Path) -> Result<Self, VerifyError> {
        let bytes = std::fs::read(path).map_err(|e| VerifyError::TrustedRoot {
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_json_bytes(&bytes, &path.display().to_string())
    }

    /// Parses trusted-root JSON; `label` names it in errors (a path or `public-good`).
    pub fn from_json_bytes(bytes: &[u8], label: &str) -> Result<Self, VerifyError> {
        let bad = |reason: String| VerifyError::TrustedRoot {
            source_name: label.to_string(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        let root = TrustedRoot::from_json(text).map_err(|e| bad(e.to_string()))?;
        let verifier = sigstore_verify::Verifier::new(&root).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                verifier,
                sha256: Sha256::digest(bytes).into(),
                label: label.to_string(),
            }),
        })
    }

    /// The Sigstore verifier prepared from this root.
    pub fn verifier(&self) -> &sigstore_verify::Verifier {
        &self.inner.verifier
    }

    /// SHA-256 of the root's exact bytes (part of every cache key).
    pub fn sha256(&self) -> &[u8; 32] {
        &self.inner.sha256
    }

    /// The SHA-256 in lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.inner.sha256)
    }

    /// Where the root came from: `public-good` or its path.
    pub fn label(&self) -> &str {
        &self.inner.label
    }
}

/// Where a configured root lives, for messages (`public-good` or the path).
pub fn describe(source: &TrustedRootSource) -> String {
    match source {
        TrustedRootSource::PublicGood => "public-good".into(),
        TrustedRootSource::Path(p) => PathBuf::from(p).display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_root_loads_and_hashes_its_bytes() {
        let r = TrustRoot::public_good().unwrap();
        let want: [u8; 32] = Sha256::digest(PUBLIC_GOOD_TRUSTED_ROOT.as_bytes()).into();
        assert_eq!(r.sha256(), &want);
        assert_eq!(r.label(), "public-good");
    }

    #[test]
    fn garbage_root_is_an_error_naming_the_source() {
        let e = TrustRoot::from_json_bytes(b"{not json", "/etc/x/root.json").unwrap_err();
        assert!(e.to_string().contains("/etc/x/root.json"), "{e}");
        let e = TrustRoot::from_file(Path::new("/nonexistent/trusted_root.json")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/trusted_root.json"),
            "{e}"
        );
    }
}
