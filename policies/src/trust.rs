//! `[trust]`: which signers are trusted for which images.
//!
//! The rule is deny by default: an image that no `[[trust.policy]]` glob matches is refused.
//! When several policies match, every one of them must be satisfied; inside one policy, any one
//! of its authorities (a keyless identity or a static key) suffices.

use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::glob::ImageGlob;
use crate::pattern::Pattern;
use crate::reference::ImageRef;
use crate::units::HumanDuration;

/// Where the Sigstore trusted root comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TrustedRootSource {
    /// The public-good production snapshot built into the binary.
    #[default]
    PublicGood,
    /// A `trusted_root.json` file (private Sigstore deployments, tests).
    Path(PathBuf),
}

impl Serialize for TrustedRootSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::PublicGood => s.serialize_str("public-good"),
            Self::Path(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TrustedRootSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "public-good" => Ok(Self::PublicGood),
            "" => Err(de::Error::custom(
                "expected `public-good` or a path to a trusted_root.json",
            )),
            _ => Ok(Self::Path(PathBuf::from(s))),
        }
    }
}

fn default_cache_ttl() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}

fn default_negative_ttl() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// The `[trust]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    /// `public-good` or a path to a `trusted_root.json`.
    #[serde(default)]
    pub trusted_root: TrustedRootSource,
    /// How long a successful verification is reused for one digest.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: HumanDuration,
    /// How long a refusal is reused (short, so a fix to the signature is seen soon).
    #[serde(default = "default_negative_ttl")]
    pub negative_cache_ttl: HumanDuration,
    /// How long a tag's resolution to a verified digest is reused without asking the registry.
    /// `0s` (the default): every run resolves the tag again, so a moved tag is seen at once.
    /// Longer values trade that for runs that need no registry round trip; what runs is still
    /// only ever a digest that was verified.
    #[serde(default)]
    pub tag_ttl: HumanDuration,
    /// The trust rules; none means every image is denied.
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TrustRule>,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            trusted_root: TrustedRootSource::PublicGood,
            cache_ttl: default_cache_ttl(),
            negative_cache_ttl: default_negative_ttl(),
            tag_ttl: HumanDuration::default(),
            rules: Vec::new(),
        }
    }
}

impl TrustPolicy {
    /// Every rule whose image globs match `image` (all of them must be satisfied). Empty means
    /// the image is denied.
    pub fn rules_for(&self, image: &ImageRef) -> Vec<&TrustRule> {
        let name = image.name();
        self.rules.iter().filter(|r| r.matches(&name)).collect()
    }
}

/// One `[[trust.policy]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    /// A name for audit records and `config explain`; defaults to `policy[<index>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image-name globs this rule governs.
    pub images: Vec<ImageGlob>,
    /// Keyless (Fulcio certificate) identities, any one of which suffices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyless: Vec<KeylessAuthority>,
    /// PEM public-key files for key-based signatures, any one of which suffices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<PathBuf>,
    /// The tier compose services and workload nodes running these images start from (instead
    /// of `[sandbox] default_tier`): the site's decision for images it trusts more or less
    /// than the rest. A service may only tighten it (`x-perry-tier`). Where several rules
    /// match an image, the strictest tier applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<crate::Tier>,
}

impl TrustRule {
    /// True when one of the rule's globs matches the normalised `registry/repository` name.
    pub fn matches(&self, name: &str) -> bool {
        self.images.iter().any(|g| g.matches(name))
    }

    /// A stable text form of the rule, for cache keys: equal rules give equal bytes, and any
    /// change to a rule changes them.
    pub fn canonical(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// A keyless signer identity: the OIDC issuer and the certificate subject (SAN).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeylessAuthority {
    /// The OIDC issuer URL, compared exactly.
    pub issuer: String,
    /// The exact certificate subject (email or URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A regex the whole subject must match; must be written anchored (`^…$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_regex: Option<Pattern>,
}

impl KeylessAuthority {
    /// True when a certificate with this issuer and subject satisfies the authority.
    pub fn accepts(&self, issuer: &str, subject: &str) -> bool {
        issuer == self.issuer
            && match (&self.subject, &self.subject_regex) {
                (Some(s), _) => s == subject,
                (None, Some(re)) => re.is_match(subject),
                (None, None) => false,
            }
    }

    /// The expected subject in words, for error messages.
    pub fn describe_subject(&self) -> String {
        match (&self.subject, &self.subject_regex) {
            (Some(s), _) => s.clone(),
            (None, Some(re)) => format!("/{re}/"),
            (None, None) => "<none>".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(globs: &[&str]) -> TrustRule {
        TrustRule {
            name: None,
            images: globs.iter().map(|g| ImageGlob::new(g).unwrap()).collect(),
            keyless: vec![KeylessAuthority {
                issuer: "https://issuer".into(),
                subject: Some("me@example.com".into()),
                subject_regex: None,
            }],
            keys: vec![],
            tier: None,
        }
    }

    #[test]
    fn no_match_means_no_rules() {
        let p = TrustPolicy {
            rules: vec![rule(&["cgr.dev/chainguard/**"])],
            ..Default::default()
        };
        assert!(p.rules_for(&ImageRef::parse("busybox").unwrap()).is_empty());
        assert_eq!(
            p.rules_for(&ImageRef::parse("cgr.dev/chainguard/git:latest").unwrap())
                .len(),
            1
        );
    }

    #[test]
    fn every_matching_rule_is_returned() {
        let p = TrustPolicy {
            rules: vec![
                rule(&["cgr.dev/**"]),
                rule(&["cgr.dev/chainguard/*"]),
                rule(&["ghcr.io/**"]),
            ],
            ..Default::default()
        };
        assert_eq!(
            p.rules_for(&ImageRef::parse("cgr.dev/chainguard/git").unwrap())
                .len(),
            2
        );
    }

    #[test]
    fn authority_checks_issuer_and_subject() {
        let a = KeylessAuthority {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: None,
            subject_regex: Some(Pattern::new("^https://github\\.com/org/.*$").unwrap()),
        };
        assert!(a.accepts(
            "https://token.actions.githubusercontent.com",
            "https://github.com/org/x"
        ));
        assert!(!a.accepts("https://evil", "https://github.com/org/x"));
        assert!(!a.accepts(
            "https://token.actions.githubusercontent.com",
            "https://github.com/orgx/x"
        ));
    }
}
