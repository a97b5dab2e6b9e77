//! Trust-rule evaluation: is a verified signer one the policy trusts for this image?
//!
//! Semantics (from `perry_policies::trust`): every trust rule whose globs match the image must
//! be satisfied; inside one rule any one authority (keyless identity or static key) suffices;
//! no matching rule means deny. Different rules may be satisfied by different signatures.

use perry_policies::TrustRule;

use crate::error::VerifyError;
use crate::signature::{SignatureFacts, Signer};

/// True when `signer` satisfies one of `rule`'s authorities.
pub fn rule_accepts(rule: &TrustRule, signer: &Signer) -> bool {
    match signer {
        Signer::Keyless { subject, issuer } => {
            rule.keyless.iter().any(|a| a.accepts(issuer, subject))
        }
        Signer::Key { path } => rule.keys.iter().any(|k| k == path),
    }
}

/// What a rule accepts, in words, for error messages.
pub fn describe_rule(rule: &TrustRule, index: usize) -> String {
    let mut parts: Vec<String> = rule
        .keyless
        .iter()
        .map(|a| format!("{} (issuer {})", a.describe_subject(), a.issuer))
        .collect();
    parts.extend(rule.keys.iter().map(|k| format!("key {}", k.display())));
    let name = rule
        .name
        .clone()
        .unwrap_or_else(|| format!("policy[{index}]"));
    let what = match parts.len() {
        0 => "nothing (the rule lists no authority)".to_string(),
        1 => parts.remove(0),
        _ => format!("one of {}", parts.join(", ")),
    };
    format!("{what} [rule {name}]")
}

/// Chooses the signature that authorises the image, or says why none does.
///
/// Returns the index (into `verified`) of the signature to record: one that satisfies every
/// rule when there is one, else one that satisfies the first rule. Fails with
/// [`VerifyError::IdentityMismatch`] naming the first unsatisfied rule.
pub fn authorize(rules: &[&TrustRule], verified: &[SignatureFacts]) -> Result<usize, VerifyError> {
    if rules.is_empty() {
        // Callers deny before this; never allow on an empty rule set.
        return Err(VerifyError::NoTrustRule {
            image: "<unknown>".into(),
        });
    }
    for (i, rule) in rules.iter().enumerate() {
        if !verified.iter().any(|f| rule_accepts(rule, &f.signer)) {
            let first = verified.first().map(|f| &f.signer);
            return Err(VerifyError::IdentityMismatch {
                signer: first
                    .map(Signer::identity)
                    .unwrap_or_else(|| "nobody".into()),
                issuer: first.map(Signer::issuer).unwrap_or_else(|| "none".into()),
                required: describe_rule(rule, i),
            });
        }
    }
    let all = verified
        .iter()
        .position(|f| rules.iter().all(|r| rule_accepts(r, &f.signer)));
    Ok(all.unwrap_or_else(|| {
        verified
            .iter()
            .position(|f| rule_accepts(rules[0], &f.signer))
            .unwrap_or(0)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use perry_policies::{ImageGlob, KeylessAuthority, Pattern};

    fn rule(issuer: &str, subject: Option<&str>, re: Option<&str>) -> TrustRule {
        TrustRule {
            name: None,
            images: vec![ImageGlob::new("**").unwrap()],
            keyless: vec![KeylessAuthority {
                issuer: issuer.into(),
                subject: subject.map(str::to_string),
                subject_regex: re.map(|r| Pattern::new(r).unwrap()),
            }],
            keys: vec![],
            tier: None,
        }
    }

    fn facts(subject: &str, issuer: &str) -> SignatureFacts {
        SignatureFacts {
            signer: Signer::Keyless {
                subject: subject.into(),
                issuer: issuer.into(),
            },
            integrated_time: None,
            log_index: None,
        }
    }

    #[test]
    fn exact_subject_and_issuer_pass() {
        let r = rule("https://i", Some("me@x"), None);
        assert_eq!(authorize(&[&r], &[facts("me@x", "https://i")]).unwrap(), 0);
    }

    #[test]
    fn wrong_subject_is_an_identity_mismatch_in_words() {
        let r = rule("https://i", Some("me@x"), None);
        let e = authorize(&[&r], &[facts("evil@x", "https://i")]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with(
                "identity mismatch: signed by evil@x (issuer https://i), policy requires me@x"
            ),
            "{s}"
        );
    }

    #[test]
    fn wrong_issuer_is_refused_even_with_the_right_subject() {
        let r = rule("https://i", Some("me@x"), None);
        assert!(matches!(
            authorize(&[&r], &[facts("me@x", "https://evil")]),
            Err(VerifyError::IdentityMismatch { .. })
        ));
    }

    #[test]
    fn regex_subject_is_anchored() {
        let r = rule("https://i", None, Some("^https://github\\.com/org/.*$"));
        assert!(authorize(&[&r], &[facts("https://github.com/org/a", "https://i")]).is_ok());
        assert!(authorize(&[&r], &[facts("https://github.com/orgx/a", "https://i")]).is_err());
        assert!(authorize(
            &[&r],
            &[facts("https://evil/https://github.com/org/a", "https://i")]
        )
        .is_err());
    }

    #[test]
    fn every_matching_rule_must_pass() {
        let a = rule("https://i", Some("a@x"), None);
        let b = rule("https://i", Some("b@x"), None);
        assert!(authorize(&[&a, &b], &[facts("a@x", "https://i")]).is_err());
        // Two signatures, one per rule: both rules satisfied.
        assert!(authorize(
            &[&a, &b],
            &[facts("a@x", "https://i"), facts("b@x", "https://i")]
        )
        .is_ok());
    }

    #[test]
    fn no_rules_never_allows() {
        assert!(authorize(&[], &[facts("a@x", "https://i")]).is_err());
    }

    #[test]
    fn static_key_matches_by_configured_path() {
        let mut r = rule("https://i", Some("a@x"), None);
        r.keyless.clear();
        r.keys = vec!["/etc/k.pub".into()];
        let f = SignatureFacts {
            signer: Signer::Key {
                path: "/etc/k.pub".into(),
            },
            integrated_time: None,
            log_index: None,
        };
        assert!(authorize(&[&r], &[f]).is_ok());
        let g = SignatureFacts {
            signer: Signer::Key {
                path: "/etc/other.pub".into(),
            },
            integrated_time: None,
            log_index: None,
        };
        assert!(authorize(&[&r], &[g]).is_err());
    }
}
