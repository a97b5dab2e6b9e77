//! Multi-file (and `extends`) merge on canonical trees, with compose-go's per-field
//! rules, `!reset` / `!override`, and the unicity rules for lists.
//!
//! Rules (compose-go `override.Merge` + `EnforceUnicity`): mappings merge key by
//! key; scalars are replaced; sequences are appended and then de-duplicated by a
//! per-field key where the last occurrence wins at the position of the first
//! (`ports` by the whole tuple, `volumes` by target, `secrets`/`configs` by target,
//! ...). `command`, `entrypoint`, `healthcheck.test` and `ulimits.*` are replaced
//! whole; `logging` is replaced when the driver changes. A value tagged `!reset`
//! removes the key; one tagged `!override` replaces it without merging.

use crate::{Node, Value};

/// Merges `over` into `base` (both canonical) at dot path `path`.
pub(crate) fn merge(base: &mut Node, over: Node, path: &str) {
    match over.tag.as_deref() {
        Some("override") => {
            *base = strip_tags(over);
            return;
        }
        Some("reset") => {
            // Only reachable at the root; keys are handled in `merge_maps`.
            base.value = Value::Null;
            return;
        }
        _ => {}
    }
    if matches!(over.value, Value::Null) {
        return;
    }
    if replaces_whole(path) {
        *base = strip_tags(over);
        return;
    }
    if is_logging(path) {
        let bd = base.get("driver").and_then(Node::scalar_text);
        let od = over.get("driver").and_then(Node::scalar_text);
        if bd.is_some() && od.is_some() && bd != od {
            *base = strip_tags(over);
            return;
        }
    }
    if matches!(segs(path).as_slice(), ["networks", _, "ipam", "config"]) {
        merge_ipam_config(base, over);
        return;
    }
    if is_extra_hosts(path) {
        merge_hosts(base, over);
        return;
    }
    match (&mut base.value, over.value) {
        (Value::Map(_), Value::Map(o)) => merge_maps(base, o, path),
        (Value::Seq(b), Value::Seq(o)) => {
            b.extend(o.into_iter().map(strip_tags));
        }
        (_, v) => {
            *base = strip_tags(Node {
                value: v,
                tag: None,
                span: over.span,
            });
        }
    }
}

fn merge_maps(base: &mut Node, over: Vec<(String, crate::Span, Node)>, path: &str) {
    for (k, ks, v) in over {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if v.tag.as_deref() == Some("reset") {
            base.remove(&k);
            continue;
        }
        match base.get_mut(&k) {
            Some(b) => merge(b, v, &p),
            None => {
                if let Value::Map(entries) = &mut base.value {
                    entries.push((k, ks, strip_tags(v)));
                }
            }
        }
    }
}

fn segs(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

fn replaces_whole(path: &str) -> bool {
    matches!(
        segs(path).as_slice(),
        ["services", _, "command" | "entrypoint"]
            | ["services", _, "healthcheck", "test"]
            | ["services", _, "ulimits", _]
            | ["services", _, "build", "ulimits", _]
            | ["models", _, "runtime_flags"]
    )
}

fn is_logging(path: &str) -> bool {
    matches!(segs(path).as_slice(), ["services", _, "logging"])
}

fn is_extra_hosts(path: &str) -> bool {
    matches!(
        segs(path).as_slice(),
        ["services", _, "extra_hosts"] | ["services", _, "build", "extra_hosts"]
    )
}

fn merge_hosts(base: &mut Node, over: Node) {
    let Value::Map(o) = over.value else { return };
    if !matches!(base.value, Value::Map(_)) {
        base.value = Value::Map(Vec::new());
    }
    for (k, ks, v) in o {
        let Value::Seq(ips) = v.value else { continue };
        match base.get_mut(&k) {
            Some(Node {
                value: Value::Seq(existing),
                ..
            }) => {
                for ip in ips {
                    if !existing.iter().any(|e| e.value == ip.value) {
                        existing.push(ip);
                    }
                }
            }
            _ => base.insert(&k, Node::new(Value::Seq(ips), ks)),
        }
    }
}

/// `ipam.config` pools merge by `subnet`; new subnets are appended.
fn merge_ipam_config(base: &mut Node, over: Node) {
    let (Value::Seq(b), Value::Seq(o)) = (&mut base.value, over.value) else {
        return;
    };
    for pool in o {
        let subnet = pool.get("subnet").and_then(Node::scalar_text);
        match b
            .iter_mut()
            .find(|p| p.get("subnet").and_then(Node::scalar_text) == subnet)
        {
            Some(existing) => merge(existing, pool, "networks.*.ipam.config.*"),
            None => b.push(strip_tags(pool)),
        }
    }
}

/// Resolves tags left where there was nothing to merge with: `!reset` keys are
/// removed, `!override` values kept as they are.
pub(crate) fn strip_tags(mut n: Node) -> Node {
    n.tag = None;
    match n.value {
        Value::Map(entries) => {
            n.value = Value::Map(
                entries
                    .into_iter()
                    .filter(|(_, _, v)| v.tag.as_deref() != Some("reset"))
                    .map(|(k, s, v)| (k, s, strip_tags(v)))
                    .collect(),
            );
        }
        Value::Seq(items) => {
            n.value = Value::Seq(
                items
                    .into_iter()
                    .filter(|v| v.tag.as_deref() != Some("reset"))
                    .map(strip_tags)
                    .collect(),
            );
        }
        _ => {}
    }
    n
}

/// The unicity key of a list entry at `path`, or `None` when the list keeps duplicates.
fn unicity_key(path: &[&str], item: &Node) -> Option<String> {
    let text = |k: &str| item.get(k).and_then(Node::scalar_text).unwrap_or_default();
    match path {
        ["services", _, "ports"] => Some(format!(
            "{}:{}:{}/{}",
            text("host_ip"),
            text("published"),
            text("target"),
            text("protocol")
        )),
        ["services", _, "volumes"] => Some(text("target")),
        ["services", _, "devices"] => Some(text("target")),
        ["services", _, "secrets"] => Some(
            item.get("target")
                .and_then(Node::scalar_text)
                .unwrap_or_else(|| format!("/run/secrets/{}", text("source"))),
        ),
        ["services", _, "configs"] => Some(
            item.get("target")
                .and_then(Node::scalar_text)
                .unwrap_or_else(|| format!("/{}", text("source"))),
        ),
        ["services", _, "env_file"] => Some(text("path")),
        ["services", _, "expose"] => item.scalar_text(),
        ["services", _, "cap_add" | "cap_drop" | "dns" | "dns_opt" | "dns_search"]
        | ["services", _, "links" | "profiles" | "tmpfs"]
        | ["services", _, "build", "tags"]
        | ["services", _, "networks", _, "aliases" | "link_local_ips"] => item
            .scalar_text()
            .map(|s| s.split('=').next().unwrap_or_default().to_string()),
        _ => None,
    }
}

/// Applies the unicity rules to every list in a canonical document.
pub(crate) fn enforce_unicity(n: &mut Node, path: &mut Vec<String>) {
    match &mut n.value {
        Value::Map(entries) => {
            for (k, _, v) in entries.iter_mut() {
                path.push(k.clone());
                enforce_unicity(v, path);
                path.pop();
            }
        }
        Value::Seq(items) => {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            if items.first().is_some_and(|i| unicity_key(&p, i).is_some()) {
                let mut out: Vec<(String, Node)> = Vec::with_capacity(items.len());
                for it in std::mem::take(items) {
                    let key = unicity_key(&p, &it).unwrap_or_default();
                    if let Some(slot) = out.iter_mut().find(|(k, _)| *k == key) {
                        slot.1 = it;
                    } else {
                        out.push((key, it));
                    }
                }
                *items = out.into_iter().map(|(_, n)| n).collect();
            }
            for (i, it) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                enforce_unicity(it, path);
                path.pop();
            }
        }
        _ => {}
    }
}
