//! `extends`: same file, other file, chained, with `!reset` / `!override`.
//!
//! The extended service is resolved first (recursively, cycles refused), its
//! relative paths are rebased from its own file's directory onto the extending
//! file's, then the extending service is merged over it with the multi-file rules.
//! Services the base refers to (`depends_on`, `volumes_from`) are not imported.

use std::path::{Path, PathBuf};

use crate::load::{clean, relative_to, Env, LoaderCtx};
use crate::merge::{merge, strip_tags};
use crate::node::shown;
use crate::paths::resolve_service;
use crate::{LoadError, Node, Value};

type Stack = Vec<(PathBuf, String)>;

/// Resolves every `extends` in `tree` (one canonical file read from `file`;
/// its relative paths are relative to `base`).
pub(crate) fn apply_extends(
    l: &mut LoaderCtx<'_>,
    tree: &mut Node,
    file: &Path,
    base: &Path,
    env: &Env,
) -> Result<(), LoadError> {
    let Some(services) = tree.get("services").cloned() else {
        return Ok(());
    };
    let Value::Map(entries) = &services.value else {
        return Ok(());
    };
    let ctx_dir = l.abs(base);
    let mut resolved = Vec::new();
    for (name, _, svc) in entries {
        if svc.get("extends").is_none() {
            continue;
        }
        let mut stack = Stack::new();
        let r = resolve(l, &services, name, file, &ctx_dir, env, &mut stack)?;
        resolved.push((name.clone(), r));
    }
    if let Some(s) = tree.get_mut("services") {
        for (name, r) in resolved {
            s.insert(&name, r);
        }
    }
    Ok(())
}

fn absolute_dir(p: &Path) -> PathBuf {
    if p.is_absolute() {
        clean(p)
    } else {
        clean(&std::env::current_dir().unwrap_or_default().join(p))
    }
}

/// The service `name` of `services` (from `file`, paths relative to `dir`) with
/// its `extends` chain applied; its relative paths stay relative to `dir`.
fn resolve(
    l: &mut LoaderCtx<'_>,
    services: &Node,
    name: &str,
    file: &Path,
    dir: &Path,
    env: &Env,
    stack: &mut Stack,
) -> Result<Node, LoadError> {
    let path = format!("services.{name}");
    let Some(svc) = services.get(name) else {
        return Err(l.error_at(
            services.span,
            "services",
            format!(
                "cannot extend service {name:?} in {}: service not found",
                file.display()
            ),
        ));
    };
    let mut svc = svc.clone();
    let Some(ext) = svc.remove("extends") else {
        return Ok(svc);
    };
    let key = (file.to_path_buf(), name.to_string());
    if stack.contains(&key) {
        let mut chain: Vec<String> = stack.iter().map(|(_, s)| s.clone()).collect();
        chain.push(name.to_string());
        return Err(l.error_at(
            ext.span,
            &format!("{path}.extends"),
            format!("circular reference with extends: {}", chain.join(" -> ")),
        ));
    }
    stack.push(key);
    let target_span = ext.get("service").map(|n| n.span).unwrap_or_default();
    let file_span = ext.get("file").map(|n| n.span).unwrap_or_default();
    let Some(target) = ext.get("service").and_then(Node::scalar_text) else {
        return Err(l.error_at(
            ext.span,
            &format!("{path}.extends"),
            format!("extends.{name}.service is required"),
        ));
    };
    let mut base_svc = match ext.get("file").and_then(Node::scalar_text) {
        None => {
            if services.get(&target).is_none() {
                return Err(l.error_at(
                    ext.span,
                    &format!("{path}.extends.service"),
                    format!(
                        "service {name:?} extends undefined service {}{}",
                        shown(&target, target_span, true),
                        suggest_in(&target, services)
                    ),
                ));
            }
            resolve(l, services, &target, file, dir, env, stack)?
        }
        Some(f) => {
            let file_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            let other = absolute_dir(&file_dir.join(&f));
            let tree = l.read_prepared(&other, env)?;
            let Some(other_services) = tree.get("services").cloned() else {
                return Err(l.error_at(
                    ext.span,
                    &format!("{path}.extends.file"),
                    format!(
                        "{} has no services",
                        shown(&other.display().to_string(), file_span, false)
                    ),
                ));
            };
            if other_services.get(&target).is_none() {
                return Err(l.error_at(
                    ext.span,
                    &format!("{path}.extends.service"),
                    format!(
                        "cannot extend service {} from {}: service not found{}",
                        shown(&target, target_span, true),
                        shown(&other.display().to_string(), file_span, false),
                        suggest_in(&target, &other_services)
                    ),
                ));
            }
            let other_dir = other.parent().map(Path::to_path_buf).unwrap_or_default();
            let mut b = resolve(l, &other_services, &target, &other, &other_dir, env, stack)?;
            // Rebase the other file's relative paths onto our directory.
            let prefix = relative_to(&other_dir, dir).unwrap_or(other_dir.clone());
            resolve_service(&mut b, &prefix, None);
            b
        }
    };
    stack.pop();
    base_svc = strip_tags(base_svc);
    merge(&mut base_svc, svc, &path);
    Ok(base_svc)
}

fn suggest_in(name: &str, services: &Node) -> String {
    let keys: Vec<&str> = match &services.value {
        Value::Map(e) => e.iter().map(|(k, _, _)| k.as_str()).collect(),
        _ => Vec::new(),
    };
    match crate::node_de::did_you_mean(name, keys.into_iter()) {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}
