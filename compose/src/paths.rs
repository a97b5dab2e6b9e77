//! Relative path resolution on the canonical tree (compose-go `paths`).
//!
//! Resolved: `build.context` and local `build.additional_contexts`, `env_file[].path`,
//! `label_file[]`, `extends.file`, bind-mount sources (`~` expanded), and the `file`
//! of top-level secrets and configs (`~` expanded). Remote contexts (`https://`,
//! `git@`, `docker-image://`, ...) are left alone. `base` may itself be relative,
//! in which case results stay relative (how `extends` and `include` rebase paths
//! with path resolution off).

use std::path::Path;

use crate::load::clean;
use crate::{Node, Value};

pub(crate) fn is_remote(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

fn join(base: &Path, p: &str) -> String {
    if Path::new(p).is_absolute() {
        return p.to_string();
    }
    clean(&base.join(p)).display().to_string()
}

fn expand_home(p: &str, home: Option<&str>) -> String {
    match (p, home) {
        ("~", Some(h)) => h.to_string(),
        (p, Some(h)) if p.starts_with("~/") => format!("{h}{}", p.get(1..).unwrap_or_default()),
        (p, _) => p.to_string(),
    }
}

fn set_str(n: &mut Node, f: impl FnOnce(&str) -> String) {
    if let Value::String(s) = &n.value {
        let v = f(s);
        n.value = Value::String(v);
    }
}

/// Resolves the relative paths of one canonical service against `base`.
pub(crate) fn resolve_service(svc: &mut Node, base: &Path, home: Option<&str>) {
    map_service_paths(svc, &|s| join(base, s), home);
}

/// Rewrites absolute paths under `root` as relative ones (`.` for `root` itself):
/// included models are resolved absolutely, then shown relative when path
/// resolution is off.
pub(crate) fn relativize(dict: &mut Node, root: &Path) {
    let f = |s: &str| -> String {
        let p = Path::new(s);
        if !p.is_absolute() {
            return s.to_string();
        }
        match crate::load::relative_to(p, root) {
            Some(r) if !r.starts_with("..") => r.display().to_string(),
            _ => s.to_string(),
        }
    };
    if let Some(Value::Map(services)) = dict.get_mut("services").map(|n| &mut n.value) {
        for (_, _, svc) in services.iter_mut() {
            map_service_paths(svc, &f, None);
        }
    }
}

fn map_service_paths(svc: &mut Node, map: &dyn Fn(&str) -> String, home: Option<&str>) {
    if let Some(b) = svc.get_mut("build") {
        if let Some(c) = b.get_mut("context") {
            set_str(c, |s| if is_remote(s) { s.to_string() } else { map(s) });
        }
        if let Some(Value::Map(ac)) = b.get_mut("additional_contexts").map(|n| &mut n.value) {
            for (_, _, v) in ac.iter_mut() {
                set_str(v, |s| {
                    if is_remote(s) || s.contains(':') {
                        s.to_string()
                    } else {
                        map(s)
                    }
                });
            }
        }
    }
    if let Some(Value::Seq(items)) = svc.get_mut("env_file").map(|n| &mut n.value) {
        for it in items.iter_mut() {
            if let Some(p) = it.get_mut("path") {
                set_str(p, |s| map(s));
            }
        }
    }
    if let Some(Value::Seq(items)) = svc.get_mut("label_file").map(|n| &mut n.value) {
        for it in items.iter_mut() {
            set_str(it, |s| map(s));
        }
    }
    if let Some(f) = svc.get_mut("extends").and_then(|e| e.get_mut("file")) {
        set_str(f, |s| map(s));
    }
    if let Some(Value::Seq(items)) = svc.get_mut("volumes").map(|n| &mut n.value) {
        for it in items.iter_mut() {
            if it.get("type").and_then(Node::as_str) != Some("bind") {
                continue;
            }
            if let Some(src) = it.get_mut("source") {
                set_str(src, |s| {
                    let s = expand_home(s, home);
                    if s.starts_with('~') {
                        s
                    } else {
                        map(&s)
                    }
                });
            }
        }
    }
}

/// Resolves every relative path of a canonical document against `base`.
pub(crate) fn resolve_paths(dict: &mut Node, base: &Path, home: Option<&str>) {
    if let Some(Value::Map(services)) = dict.get_mut("services").map(|n| &mut n.value) {
        for (_, _, svc) in services.iter_mut() {
            resolve_service(svc, base, home);
        }
    }
    for top in ["secrets", "configs"] {
        if let Some(Value::Map(items)) = dict.get_mut(top).map(|n| &mut n.value) {
            for (_, _, it) in items.iter_mut() {
                if let Some(f) = it.get_mut("file") {
                    set_str(f, |s| join(base, &expand_home(s, home)));
                }
            }
        }
    }
}
