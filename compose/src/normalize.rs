//! Normalisation (implicit defaults), profiles, and the consistency checks.

use std::collections::BTreeMap;

use crate::model::{Project, VolumeKind};
use crate::node::shown;
use crate::{LoadError, Node, ParseError, Span, Value, REDACTED};

fn map_node(span: Span) -> Node {
    Node::new(Value::Map(Vec::new()), span)
}

fn dep(restart: bool, span: Span) -> Node {
    Node::new(
        Value::Map(vec![
            (
                "condition".into(),
                span,
                Node::string("service_started", span),
            ),
            (
                "restart".into(),
                span,
                Node::new(Value::Bool(restart), span),
            ),
            ("required".into(), span, Node::new(Value::Bool(true), span)),
        ]),
        span,
    )
}

/// compose-go `Normalize`: implicit `default` network, resource names, build
/// defaults, and dependencies implied by `links`, `volumes_from` and `service:`.
pub(crate) fn normalize_tree(dict: &mut Node, project: &str) {
    let mut uses_default = false;
    if let Some(Value::Map(services)) = dict.get_mut("services").map(|n| &mut n.value) {
        for (_, _, svc) in services.iter_mut() {
            let span = svc.span;
            if svc.get("pull_policy").and_then(Node::as_str) == Some("if_not_present") {
                svc.insert("pull_policy", Node::string("missing", span));
            }
            if let Some(b) = svc.get_mut("build") {
                if b.get("dockerfile").is_none() && b.get("dockerfile_inline").is_none() {
                    b.insert("dockerfile", Node::string("Dockerfile", span));
                }
            }
            // (service, restart, where it is implied: errors point there)
            let mut implied: Vec<(String, bool, Span)> = Vec::new();
            if let Some(Value::Seq(links)) = svc.get("links").map(|n| &n.value) {
                for l in links {
                    if let Some(s) = l.scalar_text() {
                        let name = s.split(':').next().unwrap_or_default().to_string();
                        implied.push((name, true, l.span));
                    }
                }
            }
            for ns in ["network_mode", "ipc", "pid", "uts", "cgroup"] {
                if let Some(n) = svc.get(ns) {
                    if let Some(r) = n.as_str().and_then(|s| s.strip_prefix("service:")) {
                        implied.push((r.to_string(), true, n.span));
                    }
                }
            }
            if let Some(Value::Seq(vf)) = svc.get("volumes_from").map(|n| &n.value) {
                for v in vf {
                    if let Some(s) = v.scalar_text() {
                        if !s.starts_with("container:") {
                            let name = s.split(':').next().unwrap_or_default().to_string();
                            implied.push((name, false, v.span));
                        }
                    }
                }
            }
            if !implied.is_empty() {
                if svc.get("depends_on").is_none() {
                    svc.insert("depends_on", map_node(span));
                }
                if let Some(d) = svc.get_mut("depends_on") {
                    for (name, restart, at) in implied {
                        if d.get(&name).is_none() {
                            d.insert(&name, dep(restart, at));
                        }
                    }
                }
            }
            if svc.get("provider").is_some() || svc.get("network_mode").is_some() {
                continue;
            }
            let empty = match svc.get("networks").map(|n| &n.value) {
                None | Some(Value::Null) => true,
                Some(Value::Map(m)) => m.is_empty(),
                _ => false,
            };
            if empty {
                svc.insert(
                    "networks",
                    Node::new(
                        Value::Map(vec![("default".into(), span, Node::new(Value::Null, span))]),
                        span,
                    ),
                );
                uses_default = true;
            } else if svc.get("networks").and_then(|n| n.get("default")).is_some() {
                uses_default = true;
            }
        }
    }
    if uses_default {
        if dict.get("networks").is_none() {
            dict.insert("networks", map_node(Span::default()));
        }
        if let Some(n) = dict.get_mut("networks") {
            if n.get("default").is_none() {
                n.insert("default", map_node(Span::default()));
            }
        }
    }
    for top in ["networks", "volumes", "configs", "secrets"] {
        if let Some(Value::Map(items)) = dict.get_mut(top).map(|n| &mut n.value) {
            for (key, _, item) in items.iter_mut() {
                if matches!(item.value, Value::Null) {
                    item.value = Value::Map(Vec::new());
                }
                if item.get("name").is_none() {
                    let external = matches!(
                        item.get("external").map(|e| &e.value),
                        Some(Value::Bool(true))
                    ) || item.get("external").and_then(Node::as_str) == Some("true");
                    let name = if external {
                        key.clone()
                    } else {
                        format!("{project}_{key}")
                    };
                    let span = item.span;
                    item.insert("name", Node::string(name, span));
                }
            }
        }
    }
}

/// Keeps the services enabled by `profiles` (`*` enables all; services without
/// profiles are always enabled).
/// Returns the disabled services with their profiles.
pub(crate) fn apply_profiles(
    project: &mut Project,
    profiles: &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut disabled = BTreeMap::new();
    if profiles.iter().any(|p| p == "*") {
        return disabled;
    }
    project.services.retain(|name, s| {
        let on = s.profiles.is_empty() || s.profiles.iter().any(|p| profiles.contains(p));
        if !on {
            disabled.insert(name.clone(), s.profiles.clone());
        }
        on
    });
    disabled
}

/// The span of the deepest node found along `path` (keys' own spans for map keys).
fn span_at(dict: &Node, path: &[&str]) -> Span {
    let mut cur = dict;
    let mut span = dict.span;
    for seg in path {
        match &cur.value {
            Value::Map(e) => match e.iter().find(|(k, _, _)| k == seg) {
                Some((_, ks, n)) => {
                    span = *ks;
                    cur = n;
                }
                None => break,
            },
            Value::Seq(items) => match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(n) => {
                    span = n.span;
                    cur = n;
                }
                None => break,
            },
            _ => break,
        }
    }
    span
}

/// A span marked [`Span::interpolated`] when the key or the value at `path`
/// (both when found) came from interpolation.
fn taint_at(dict: &Node, path: &[&str]) -> Span {
    let mut cur = dict;
    let mut tainted = false;
    for seg in path {
        let next = match &cur.value {
            Value::Map(e) => e.iter().find(|(k, _, _)| k == seg).map(|(_, ks, n)| {
                tainted = ks.interpolated;
                n
            }),
            Value::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(n) => {
                tainted |= n.span.interpolated;
                cur = n;
            }
            None => break,
        }
    }
    Span {
        interpolated: tainted,
        ..Span::default()
    }
}

/// `path` joined with dots, a key that came from interpolation (a short
/// `depends_on` entry, a network list item) shown as [`REDACTED`].
fn path_at(dict: &Node, path: &[&str]) -> String {
    let mut cur = Some(dict);
    let mut out: Vec<String> = Vec::with_capacity(path.len());
    for seg in path {
        let found = match cur.map(|c| &c.value) {
            Some(Value::Map(e)) => e
                .iter()
                .find(|(k, _, _)| k == seg)
                .map(|(_, ks, n)| (*ks, n)),
            Some(Value::Seq(items)) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(|n| (Span::default(), n)),
            _ => None,
        };
        out.push(match found {
            Some((ks, _)) => shown(seg, ks, false),
            None => (*seg).to_string(),
        });
        cur = found.map(|(_, n)| n);
    }
    out.join(".")
}

/// Cross-reference checks: undefined services, networks, volumes, secrets and
/// configs; `depends_on` cycles; `container_name` with more than one replica.
pub(crate) fn check(
    project: &Project,
    disabled: &BTreeMap<String, Vec<String>>,
    dict: &Node,
    locate: &dyn Fn(Span, &str, String) -> ParseError,
) -> Result<(), LoadError> {
    let fail = |path: &[&str], msg: String| -> LoadError {
        LoadError::Consistency(locate(span_at(dict, path), &path_at(dict, path), msg))
    };
    // `value` (found at `path`) as a message may show it: never an interpolated one
    let show = |value: &str, path: &[&str]| shown(value, taint_at(dict, path), true);
    let bare = |value: &str, path: &[&str]| shown(value, taint_at(dict, path), false);
    let services = &project.services;
    for (name, s) in services {
        if s.image.is_none() && s.build.is_none() && s.provider.is_none() {
            return Err(fail(
                &["services", name],
                format!("service {name:?} has neither an image nor a build context specified"),
            ));
        }
        if s.network_mode.is_some() && !s.networks.is_empty() {
            return Err(fail(
                &["services", name, "network_mode"],
                format!("service {name} declares mutually exclusive `network_mode` and `networks`"),
            ));
        }
        if let (Some(scale), Some(replicas)) = (s.scale, s.deploy.as_ref().and_then(|d| d.replicas))
        {
            if scale != replicas {
                return Err(fail(
                    &["services", name, "scale"],
                    format!("services.{name}: can't set distinct values on 'scale' and 'deploy.replicas'"),
                ));
            }
        }
        let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, v) in s.volumes.iter().enumerate() {
            if let Some(first) = targets.insert(v.target.as_str(), i) {
                return Err(fail(
                    &["services", name, "volumes", &i.to_string()],
                    format!(
                        "services.{name}.volumes.{i}: target {} already mounted as services.{name}.volumes.{first}",
                        bare(&v.target, &["services", name, "volumes", &i.to_string(), "target"])
                    ),
                ));
            }
        }
        for (d, spec) in &s.depends_on {
            if let (false, Some(profiles)) = (services.contains_key(d), disabled.get(d)) {
                if spec.required {
                    return Err(fail(
                        &["services", name, "depends_on", d],
                        format!(
                            "service {name:?} depends on service {}, which is disabled (enable one of its profiles: {})",
                            show(d, &["services", name, "depends_on", d]),
                            profiles.join(", ")
                        ),
                    ));
                }
                continue;
            }
            if !services.contains_key(d) {
                return Err(fail(
                    &["services", name, "depends_on", d],
                    format!(
                        "service {name:?} depends on undefined service {}{}",
                        show(d, &["services", name, "depends_on", d]),
                        crate::load::suggest(d, services)
                    ),
                ));
            }
        }
        for (ns, v) in [
            ("network_mode", &s.network_mode),
            ("ipc", &s.ipc),
            ("pid", &s.pid),
        ] {
            if let Some(r) = v.as_deref().and_then(|v| v.strip_prefix("service:")) {
                if !services.contains_key(r) {
                    return Err(fail(
                        &["services", name, ns],
                        match taint_at(dict, &["services", name, ns]).interpolated {
                            true => format!("service {REDACTED} not found for {ns}"),
                            false => format!("service {r:?} not found for {ns} 'service:{r}'"),
                        },
                    ));
                }
            }
        }
        for (i, v) in s.volumes_from.iter().enumerate() {
            let target = v.split(':').next().unwrap_or_default();
            if !v.starts_with("container:") && !services.contains_key(target) {
                return Err(fail(
                    &["services", name, "volumes_from", &i.to_string()],
                    format!(
                        "service {name:?} depends on undefined service {}",
                        show(target, &["services", name, "volumes_from", &i.to_string()])
                    ),
                ));
            }
        }
        for net in s.networks.keys() {
            if !project.networks.contains_key(net) {
                return Err(fail(
                    &["services", name, "networks", net],
                    format!(
                        "service {name:?} refers to undefined network {}",
                        bare(net, &["services", name, "networks", net])
                    ),
                ));
            }
        }
        for (i, v) in s.volumes.iter().enumerate() {
            if v.kind != VolumeKind::Volume {
                continue;
            }
            if let Some(src) = v.source.as_deref().filter(|s| !s.is_empty()) {
                if !project.volumes.contains_key(src) {
                    return Err(fail(
                        &["services", name, "volumes", &i.to_string()],
                        format!(
                            "service {name:?} refers to undefined volume {}",
                            bare(
                                src,
                                &["services", name, "volumes", &i.to_string(), "source"]
                            )
                        ),
                    ));
                }
            }
        }
        for (i, r) in s.secrets.iter().enumerate() {
            if !project.secrets.contains_key(&r.source) {
                return Err(fail(
                    &["services", name, "secrets", &i.to_string()],
                    format!(
                        "service {name:?} refers to undefined secret {}",
                        bare(
                            &r.source,
                            &["services", name, "secrets", &i.to_string(), "source"]
                        )
                    ),
                ));
            }
        }
        for (i, r) in s.configs.iter().enumerate() {
            if !project.configs.contains_key(&r.source) {
                return Err(fail(
                    &["services", name, "configs", &i.to_string()],
                    format!(
                        "service {name:?} refers to undefined config {}",
                        bare(
                            &r.source,
                            &["services", name, "configs", &i.to_string(), "source"]
                        )
                    ),
                ));
            }
        }
        if s.container_name.is_some() && s.replicas() > 1 {
            return Err(fail(
                &["services", name, "container_name"],
                format!(
                    "services.{name}: can't set container_name and scale > 1 ({}) as container name must be unique",
                    s.replicas()
                ),
            ));
        }
    }
    for (name, sec) in &project.secrets {
        if !sec.external && sec.file.is_none() && sec.environment.is_none() {
            return Err(fail(
                &["secrets", name],
                format!("secret {name:?} must declare either `file` or `environment`"),
            ));
        }
    }
    if let Some(cycle) = find_cycle(project) {
        // located at the first service's `depends_on` entry naming the next one
        let (first, next) = match cycle.as_slice() {
            [a, b, ..] => (a.as_str(), b.as_str()),
            _ => ("", ""),
        };
        let path = ["services", first, "depends_on", next];
        let message = format!("dependency cycle detected: {}", cycle.join(" -> "));
        return Err(LoadError::DependencyCycle {
            at: locate(span_at(dict, &path), &path_at(dict, &path), message),
            services: cycle,
        });
    }
    Ok(())
}

/// A `depends_on` cycle, as the services along it with the first repeated last.
pub(crate) fn find_cycle(project: &Project) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let graph: BTreeMap<&str, Vec<&str>> = project
        .services
        .iter()
        .map(|(n, s)| {
            (
                n.as_str(),
                s.depends_on
                    .keys()
                    .map(String::as_str)
                    .filter(|d| project.services.contains_key(*d))
                    .collect(),
            )
        })
        .collect();
    let mut marks: BTreeMap<&str, Mark> = graph.keys().map(|k| (*k, Mark::New)).collect();
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(n, Mark::Active);
        stack.push(n);
        for d in graph.get(n).into_iter().flatten() {
            match marks.get(d).copied().unwrap_or(Mark::Done) {
                Mark::Active => {
                    let start = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut c: Vec<String> = stack
                        .get(start..)
                        .unwrap_or_default()
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    c.push(d.to_string());
                    return Some(c);
                }
                Mark::New => {
                    if let Some(c) = visit(d, graph, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let keys: Vec<&str> = graph.keys().copied().collect();
    for k in keys {
        if marks.get(k) == Some(&Mark::New) {
            if let Some(c) = visit(k, &graph, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}
