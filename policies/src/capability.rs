//! `[shellCapabilities.<name>]`: named commands a host program may invoke, and their argument rules.
//!
//! A capability is an argv template (never a shell line) plus rules for the arguments a caller
//! may append. The rules are checked before anything else happens, and the first violated rule
//! is reported in words so the caller knows what to change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pattern::Pattern;
use crate::reference::ImageRef;
use crate::tier::Tier;
use crate::units::{ByteSize, HumanDuration};

/// The placeholder in a mount source that is replaced by the request's workspace directory.
pub const WORKSPACE_PLACEHOLDER: &str = "{workspace}";

fn default_tier() -> Tier {
    Tier::Hardened
}

fn is_hardened(t: &Tier) -> bool {
    *t == Tier::Hardened
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One named capability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellCapability {
    /// What the capability is for, shown by `cap list` and `cap describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The argv the caller's arguments are appended to; executed directly, no shell.
    pub command: Vec<String>,
    /// Rules for the caller's arguments.
    #[serde(default)]
    pub args: ArgRules,
    /// The image to run in; else `shellCapabilityImages`, else a default (see `perry-sandbox cap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// The policy tier; `hardened` or stricter.
    #[serde(default = "default_tier", skip_serializing_if = "is_hardened")]
    pub tier: Tier,
    /// Bind mounts; read-only unless `read_only = false`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    /// Environment passed through from the request or set here.
    #[serde(default, skip_serializing_if = "EnvSpec::is_empty")]
    pub env: EnvSpec,
    /// Working directory inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Wall-clock limit for one invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Task (process + thread) limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Bytes of stdout and of stderr returned; the rest is dropped and flagged as truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<ByteSize>,
    /// Ask for network access; only tiers that allow a grant accept this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
}

/// Rules for the arguments a caller appends to a capability's command.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgRules {
    /// The most arguments a caller may pass (default 0: none).
    #[serde(default)]
    pub max: usize,
    /// A pattern every argument must match (anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    /// Per-position rules; position 0 is the first caller argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<PositionRule>,
    /// Values that are always refused. `--opt` also refuses `--opt=…`; a short flag `-c` also
    /// refuses `-cVALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// The rule for one argument position: a pattern or a fixed list of values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionRule {
    /// The argument must match this pattern (anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    /// The argument must be one of these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_of: Vec<String>,
}

/// A bind mount into the sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// An absolute host path, or `{workspace}` / `{workspace}/sub/dir`.
    pub source: String,
    /// Absolute path inside the sandbox.
    pub target: String,
    /// Read-only unless explicitly `false` (a write grant).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub read_only: bool,
}

/// Environment for the sandboxed command; everything else is cleared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// Variable names copied from the request, when present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass: Vec<String>,
    /// Variables set to fixed values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
}

impl EnvSpec {
    fn is_empty(&self) -> bool {
        self.pass.is_empty() && self.set.is_empty()
    }
}

/// The first argument rule a request broke, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgViolation(pub String);

fn denied_by(arg: &str, deny: &str) -> bool {
    if arg == deny {
        return true;
    }
    if deny.starts_with("--") {
        return arg
            .strip_prefix(deny)
            .is_some_and(|rest| rest.starts_with('='));
    }
    // A short flag like `-c` also takes its value glued on: `-ccore.pager=x`.
    let short = deny.len() == 2 && deny.starts_with('-') && deny != "--";
    short && arg.starts_with(deny)
}

impl ShellCapability {
    /// Checks caller arguments against the rules; returns the first violated rule in words.
    pub fn check_args(&self, args: &[String]) -> Result<(), ArgViolation> {
        let r = &self.args;
        if args.len() > r.max {
            return Err(ArgViolation(format!(
                "{} argument{} given, but this capability accepts at most {} (rule: args.max = {})",
                args.len(),
                if args.len() == 1 { "" } else { "s" },
                r.max,
                r.max
            )));
        }
        for (i, arg) in args.iter().enumerate() {
            let n = i + 1;
            if arg.contains('\0') {
                return Err(ArgViolation(format!("argument {n} contains a NUL byte")));
            }
            if let Some(d) = r.deny.iter().find(|d| denied_by(arg, d)) {
                return Err(ArgViolation(format!(
                    "argument {n} `{arg}` is denied (rule: args.deny contains `{d}`)"
                )));
            }
            if let Some(pos) = r.positions.get(i) {
                if let Some(p) = &pos.pattern {
                    if !p.is_match(arg) {
                        return Err(ArgViolation(format!(
                            "argument {n} `{arg}` does not match args.positions[{i}].pattern `{p}`"
                        )));
                    }
                }
                if !pos.one_of.is_empty() && !pos.one_of.iter().any(|v| v == arg) {
                    return Err(ArgViolation(format!(
                        "argument {n} `{arg}` is not one of args.positions[{i}].one_of: {}",
                        pos.one_of
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            if let Some(p) = &r.pattern {
                if !p.is_match(arg) {
                    return Err(ArgViolation(format!(
                        "argument {n} `{arg}` does not match args.pattern `{p}`"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(rules: ArgRules) -> ShellCapability {
        ShellCapability {
            description: None,
            command: vec!["git".into(), "log".into()],
            args: rules,
            image: None,
            tier: Tier::Hardened,
            mounts: vec![],
            env: EnvSpec::default(),
            workdir: None,
            timeout: None,
            memory: None,
            pids: None,
            output_limit: None,
            network: false,
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn max_count_is_enforced() {
        let c = cap(ArgRules {
            max: 1,
            ..Default::default()
        });
        assert!(c.check_args(&args(&["-n5"])).is_ok());
        let e = c.check_args(&args(&["a", "b"])).unwrap_err().to_string();
        assert_eq!(
            e,
            "2 arguments given, but this capability accepts at most 1 (rule: args.max = 1)"
        );
        let none = cap(ArgRules::default());
        assert!(none.check_args(&args(&["x"])).is_err());
    }

    #[test]
    fn denied_values_cover_attached_forms() {
        let c = cap(ArgRules {
            max: 3,
            deny: vec!["-c".into(), "--upload-pack".into()],
            ..Default::default()
        });
        for bad in [
            "-c",
            "-ccore.pager=sh",
            "--upload-pack",
            "--upload-pack=evil",
        ] {
            let e = c.check_args(&args(&[bad])).unwrap_err().to_string();
            assert!(
                e.contains("is denied (rule: args.deny contains"),
                "{bad}: {e}"
            );
        }
        assert!(c.check_args(&args(&["--upload-packs", "-n3"])).is_ok());
    }

    #[test]
    fn pattern_and_positions() {
        let c = cap(ArgRules {
            max: 2,
            pattern: Some(Pattern::new("[-a-z0-9.]+").unwrap()),
            positions: vec![PositionRule {
                one_of: vec!["-n".into(), "-l".into()],
                pattern: None,
            }],
            ..Default::default()
        });
        assert!(c.check_args(&args(&["-n", "3"])).is_ok());
        let e = c.check_args(&args(&["-x", "3"])).unwrap_err().to_string();
        assert_eq!(
            e,
            "argument 1 `-x` is not one of args.positions[0].one_of: `-n`, `-l`"
        );
        let e = c
            .check_args(&args(&["-n", "3;rm"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "argument 2 `3;rm` does not match args.pattern `[-a-z0-9.]+`"
        );
    }

    #[test]
    fn nul_bytes_refused() {
        let c = cap(ArgRules {
            max: 1,
            ..Default::default()
        });
        assert!(c.check_args(&["a\0b".to_string()]).is_err());
    }
}
