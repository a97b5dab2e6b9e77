//! Loading: read, parse with serde, map each problem's key path back to a line and column,
//! resolve relative paths, refuse readable files that hold secrets.

use std::path::{Path, PathBuf};

use super::model::Config;
use crate::error::{nearest, ConfigError, KeyPath, PathSeg, Problem};
use crate::registry::RegistryConfig;
use crate::tier::Tier;
use crate::trust::TrustedRootSource;

impl Config {
    /// Reads, parses and validates a configuration file. Relative paths inside it are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        let mut cfg = Self::from_bytes(&bytes, path)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        cfg.resolve_relative_paths(base);
        if cfg
            .registries
            .values()
            .any(RegistryConfig::has_inline_secret)
        {
            check_private(path)?;
        }
        Ok(cfg)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: origin.into(),
            problems,
        };
        let src = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                let (line, column) = line_col(
                    &String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
                    e.valid_up_to(),
                );
                return Err(invalid(vec![Problem {
                    line: Some(line),
                    column: Some(column),
                    path: KeyPath::default(),
                    message: "the file is not valid UTF-8 text".into(),
                    suggestion: None,
                }]));
            }
        };
        let cfg = parse(src).map_err(|p| invalid(vec![p]))?;
        let found = cfg.validate();
        if found.is_empty() {
            return Ok(cfg);
        }
        let doc = toml_edit::Document::parse(src).ok();
        let problems = found
            .into_iter()
            .map(|(path, message, suggestion)| {
                let (line, column) = doc
                    .as_ref()
                    .and_then(|d| locate(d.as_item(), &path.0))
                    .map(|off| line_col(src, off))
                    .unzip();
                Problem {
                    line,
                    column,
                    path,
                    message,
                    suggestion,
                }
            })
            .collect();
        Err(invalid(problems))
    }

    /// The audit directory: `[audit] dir`, else `<state_dir>/audit`.
    pub fn audit_dir(&self) -> PathBuf {
        self.audit
            .dir
            .clone()
            .unwrap_or_else(|| self.sandbox.state_dir.join("audit"))
    }

    /// The effective tier for a capability or run that asks for `requested` (or nothing).
    pub fn tier_or_default(&self, requested: Option<Tier>) -> Tier {
        requested.unwrap_or(self.sandbox.default_tier)
    }

    fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.sandbox.state_dir);
        self.sandbox.workspace_roots.iter_mut().for_each(fix);
        if let TrustedRootSource::Path(p) = &mut self.trust.trusted_root {
            fix(p);
        }
        for rule in &mut self.trust.rules {
            rule.keys.iter_mut().for_each(fix);
        }
        for reg in self.registries.values_mut() {
            if let Some(p) = &mut reg.docker_config {
                fix(p);
            }
        }
        fix(&mut self.service.socket);
        if let Some(d) = &mut self.audit.dir {
            fix(d);
        }
    }
}

/// Parses TOML into a [`Config`], returning a located problem for the first shape error.
fn parse(src: &str) -> Result<Config, Problem> {
    let de =
        toml::Deserializer::parse(src).map_err(|e| toml_problem(src, &e, KeyPath::default()))?;
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let path = KeyPath(
            e.path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                    serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                    serde_path_to_error::Segment::Enum { variant } => {
                        Some(PathSeg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect(),
        );
        toml_problem(src, e.inner(), path)
    })
}

fn toml_problem(src: &str, e: &toml::de::Error, path: KeyPath) -> Problem {
    let (line, column) = e.span().map(|s| line_col(src, s.start)).unzip();
    let message = e.message().trim().to_string();
    let suggestion = suggest_from_serde_message(&message);
    let path = match unknown_name(&message) {
        // serde reports an unknown field at its parent; name the key itself.
        Some(("field", key)) if path.0.last() != Some(&PathSeg::Key(key.to_string())) => {
            path.key(key)
        }
        _ => path,
    };
    let message = tidy_message(&message);
    Problem {
        line,
        column,
        path,
        message,
        suggestion,
    }
}

/// `unknown field `x`, expected …` → ("field", "x"); same for variants.
fn unknown_name(msg: &str) -> Option<(&'static str, &str)> {
    for kind in ["field", "variant"] {
        if let Some(rest) = msg.strip_prefix(&format!("unknown {kind} `")) {
            return rest.split('`').next().map(|n| (kind, n));
        }
    }
    None
}

fn expected_names(msg: &str) -> Vec<&str> {
    let Some((_, tail)) = msg.split_once(", expected ") else {
        return Vec::new();
    };
    tail.split('`').skip(1).step_by(2).collect()
}

fn suggest_from_serde_message(msg: &str) -> Option<String> {
    let (_, name) = unknown_name(msg)?;
    nearest(name, expected_names(msg))
}

fn tidy_message(msg: &str) -> String {
    match unknown_name(msg) {
        Some((kind, name)) => {
            let what = if kind == "field" { "key" } else { "value" };
            let valid = expected_names(msg);
            if valid.is_empty() {
                format!("unknown {what} `{name}`")
            } else {
                format!("unknown {what} `{name}` (valid: {})", valid.join(", "))
            }
        }
        None => msg.to_string(),
    }
}

/// The byte offset of the key (or value) at `path` in a parsed document.
fn locate(item: &toml_edit::Item, path: &[PathSeg]) -> Option<usize> {
    let here = item.span().map(|s| s.start);
    let Some((seg, rest)) = path.split_first() else {
        return here;
    };
    match seg {
        PathSeg::Key(k) => {
            let (key, next) = item.as_table_like()?.get_key_value(k)?;
            locate(next, rest).or_else(|| key.span().map(|s| s.start))
        }
        PathSeg::Index(i) => {
            if let Some(aot) = item.as_array_of_tables() {
                let t = aot.get(*i)?;
                return locate_in_table(t, rest).or_else(|| t.span().map(|s| s.start));
            }
            let v = item.as_array()?.get(*i)?;
            locate_value(v, rest).or(here)
        }
    }
}

fn locate_value(v: &toml_edit::Value, path: &[PathSeg]) -> Option<usize> {
    let here = v.span().map(|s| s.start);
    let Some((seg, rest)) = path.split_first() else {
        return here;
    };
    match (seg, v) {
        (PathSeg::Key(k), toml_edit::Value::InlineTable(t)) => {
            let (key, next) = t.get_key_value(k)?;
            let at_key = key.span().map(|s| s.start);
            match next.as_value() {
                Some(nv) => locate_value(nv, rest).or(at_key),
                None => at_key,
            }
        }
        (PathSeg::Index(i), toml_edit::Value::Array(a)) => {
            a.get(*i).and_then(|x| locate_value(x, rest)).or(here)
        }
        _ => here,
    }
}

fn locate_in_table(t: &toml_edit::Table, rest: &[PathSeg]) -> Option<usize> {
    let Some((PathSeg::Key(k), rest)) = rest.split_first() else {
        return t.span().map(|s| s.start);
    };
    let (key, item) = t.get_key_value(k)?;
    locate(item, rest).or_else(|| key.span().map(|s| s.start))
}

/// 1-based line and character column of a byte offset.
pub(super) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..src.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// A file holding inline registry secrets must not be readable by group or others.
fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.into(),
        source,
    })?;
    if meta.mode() & 0o077 != 0 {
        return Err(ConfigError::Invalid {
            file: path.into(),
            problems: vec![Problem {
                line: None,
                column: None,
                path: KeyPath::keys(&["registries"]),
                message: format!(
                    "the file holds registry credentials but has mode {:o}; run `chmod 600 {}` (or use `docker_config`)",
                    meta.mode() & 0o777,
                    path.display()
                ),
                suggestion: None,
            }],
        });
    }
    Ok(())
}
