//! Short syntax to long syntax on the tree (compose-go's `transform.Canonical`).
//!
//! After this pass every field has the one shape the typed model reads, so a merge
//! of a short-form base with a long-form override is a merge of like with like:
//! `ports: ["8080:80"]` becomes `[{target: 80, published: "8080", ...}]`,
//! `environment: [A=1]` becomes `{A: "1"}`, `depends_on: [db]` becomes
//! `{db: {condition: service_started, required: true}}`, and so on.

use crate::node::shown;
use crate::{Node, ParseError, Span, Value};

/// A canonicalisation error before the file name is known.
pub(crate) struct At {
    pub(crate) span: Span,
    pub(crate) path: String,
    pub(crate) message: String,
}

impl At {
    pub(crate) fn into_parse_error(self, file: &str) -> ParseError {
        ParseError {
            file: file.to_string(),
            line: self.span.line,
            column: self.span.column,
            path: self.path,
            message: self.message,
        }
    }
}

type R<T> = Result<T, At>;

fn at(n: &Node, path: &str, message: impl Into<String>) -> At {
    At {
        span: n.span,
        path: path.to_string(),
        message: message.into(),
    }
}

fn map(entries: Vec<(String, Node)>, span: Span) -> Node {
    Node::new(
        Value::Map(entries.into_iter().map(|(k, n)| (k, span, n)).collect()),
        span,
    )
}

fn null(span: Span) -> Node {
    Node::new(Value::Null, span)
}

fn boolean(b: bool, span: Span) -> Node {
    Node::new(Value::Bool(b), span)
}

fn entries_mut(n: &mut Node) -> Option<&mut Vec<(String, Span, Node)>> {
    match &mut n.value {
        Value::Map(e) => Some(e),
        _ => None,
    }
}

/// Canonicalises a whole compose document in place.
pub(crate) fn canonical(doc: &mut Node) -> R<()> {
    if let Some(services) = doc.get_mut("services").and_then(entries_mut) {
        for (name, _, svc) in services.iter_mut() {
            let path = format!("services.{name}");
            service(svc, &path)?;
        }
    }
    for top in ["networks", "volumes", "secrets", "configs"] {
        if let Some(items) = doc.get_mut(top).and_then(entries_mut) {
            for (name, _, item) in items.iter_mut() {
                let path = format!("{top}.{name}");
                let tag = item.tag.take();
                if tag.as_deref() != Some("reset") {
                    resource(item, &path)?;
                }
                item.tag = tag;
            }
        }
    }
    if let Some(inc) = doc.get_mut("include") {
        if let Value::Seq(items) = &mut inc.value {
            for (i, item) in items.iter_mut().enumerate() {
                let path = format!("include.{i}");
                if let Value::String(_) = item.value {
                    let span = item.span;
                    let p = std::mem::replace(item, null(span));
                    *item = map(
                        vec![("path".into(), Node::new(Value::Seq(vec![p]), span))],
                        span,
                    );
                } else if let Some(p) = item.get_mut("path") {
                    string_or_list(p);
                    if let Some(e) = item.get_mut("env_file") {
                        string_or_list(e);
                    }
                } else if !matches!(item.value, Value::Map(_)) {
                    return Err(at(item, &path, "must be a string or a mapping"));
                }
            }
        }
    }
    Ok(())
}

/// `external: {name: x}` becomes `name: x` + `external: true`.
fn resource(item: &mut Node, path: &str) -> R<()> {
    if matches!(item.value, Value::Null) {
        let span = item.span;
        *item = map(Vec::new(), span);
        return Ok(());
    }
    for key in ["labels", "driver_opts"] {
        if let Some(l) = item.get_mut(key) {
            key_values(l, &format!("{path}.{key}"), '=', true)?;
        }
    }
    if let Some(ipam) = item.get_mut("ipam") {
        if let Some(o) = ipam.get_mut("options") {
            key_values(o, &format!("{path}.ipam.options"), '=', true)?;
        }
    }
    let Some(ext) = item.get("external") else {
        return Ok(());
    };
    if let Value::Map(_) = ext.value {
        let span = ext.span;
        let extname = ext.get("name").cloned();
        item.insert("external", boolean(true, span));
        if let Some(extname) = extname {
            match item.get("name") {
                Some(n) if n.scalar_text() != extname.scalar_text() => {
                    return Err(at(
                        n,
                        &format!("{path}.name"),
                        "name and external.name conflict; only use name",
                    ));
                }
                Some(_) => {}
                None => item.insert("name", extname),
            }
        }
    }
    Ok(())
}

fn string_or_list(n: &mut Node) {
    if let Value::String(_) | Value::Int(_) | Value::Float(_) = n.value {
        let span = n.span;
        let v = std::mem::replace(n, null(span));
        *n = Node::new(Value::Seq(vec![v]), span);
    }
}

/// `[A=1, B]` or `{A: 1, B: null}` into a mapping of strings (or null).
fn key_values(n: &mut Node, path: &str, sep: char, allow_bare: bool) -> R<()> {
    key_values_opt(n, path, sep, allow_bare, true)
}

/// Like [`key_values`] with `null` (and a bare `KEY`) kept as null, for
/// `environment` and `build.args` where it means "take it from the environment".
fn key_values_nullable(n: &mut Node, path: &str) -> R<()> {
    key_values_opt(n, path, '=', true, false)
}

fn key_values_opt(
    n: &mut Node,
    path: &str,
    sep: char,
    allow_bare: bool,
    null_is_empty: bool,
) -> R<()> {
    let span = n.span;
    let fix = |v: &mut Node| {
        scalar_to_string(v);
        if null_is_empty && matches!(v.value, Value::Null) {
            v.value = Value::String(String::new());
        }
    };
    match &mut n.value {
        Value::Map(entries) => {
            for (_, _, v) in entries.iter_mut() {
                fix(v);
            }
            Ok(())
        }
        Value::Seq(items) => {
            let mut out: Vec<(String, Span, Node)> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(s) = item.scalar_text() else {
                    return Err(at(item, &format!("{path}.{i}"), "must be a string"));
                };
                let (k, mut v) = match s.split_once(sep) {
                    Some((k, v)) => (k.to_string(), Node::string(v, item.span)),
                    None if allow_bare => (s.clone(), null(item.span)),
                    None => {
                        return Err(at(
                            item,
                            &format!("{path}.{i}"),
                            format!(
                                "invalid value {}, expected key{sep}value",
                                shown(&s, item.span, true)
                            ),
                        ))
                    }
                };
                fix(&mut v);
                if let Some(e) = out.iter_mut().find(|(ek, _, _)| *ek == k) {
                    e.2 = v;
                } else {
                    out.push((k, item.span, v));
                }
            }
            *n = Node::new(Value::Map(out), span);
            Ok(())
        }
        Value::Null => {
            *n = Node::new(Value::Map(Vec::new()), span);
            Ok(())
        }
        _ => Err(at(n, path, "must be a mapping or a list of key=value")),
    }
}

fn scalar_to_string(v: &mut Node) {
    if let Value::Int(_) | Value::Float(_) | Value::Bool(_) = v.value {
        if let Some(s) = v.scalar_text() {
            v.value = Value::String(s);
        }
    }
}

/// Splits a shell-form command like compose-go (go-shellwords rules: quotes,
/// backslash escapes, no expansion).
pub(crate) fn shell_split(s: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => cur.push(n),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => cur.push(n),
                            Some('\n') => {}
                            Some(n) => {
                                cur.push('\\');
                                cur.push(n)
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(n) => cur.push(n),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn command(n: &mut Node, path: &str) -> R<()> {
    let span = n.span;
    match &n.value {
        Value::String(s) => {
            let words = shell_split(s)
                .map_err(|e| at(n, path, format!("{e} in {}", shown(s, span, true))))?;
            *n = Node::new(
                Value::Seq(words.into_iter().map(|w| Node::string(w, span)).collect()),
                span,
            );
            Ok(())
        }
        Value::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                if it.scalar_text().is_none() {
                    return Err(at(it, &format!("{path}.{i}"), "must be a string"));
                }
            }
            Ok(())
        }
        Value::Null => Ok(()),
        _ => Err(at(n, path, "must be a string or a list of strings")),
    }
}

fn service(svc: &mut Node, path: &str) -> R<()> {
    if matches!(svc.value, Value::Null) {
        let span = svc.span;
        *svc = map(Vec::new(), span);
    }
    if !matches!(svc.value, Value::Map(_)) {
        return Err(at(svc, path, "a service must be a mapping"));
    }
    let Some(entries) = entries_mut(svc) else {
        return Ok(());
    };
    for (key, _, v) in entries.iter_mut() {
        let p = format!("{path}.{key}");
        let p = p.as_str();
        let tag = v.tag.take();
        // a `!reset` value only removes what it replaces: its content is never read
        if tag.as_deref() != Some("reset") {
            service_key(key, v, p)?;
        }
        v.tag = tag;
    }
    Ok(())
}

fn service_key(key: &str, v: &mut Node, p: &str) -> R<()> {
    {
        match key {
            "command" | "entrypoint" => command(v, p)?,
            "environment" => key_values_nullable(v, p)?,
            "labels" | "annotations" | "sysctls" | "storage_opt" => key_values(v, p, '=', true)?,
            "extra_hosts" => extra_hosts(v, p)?,
            "build" => build(v, p)?,
            "depends_on" => depends_on(v, p)?,
            "env_file" => env_file(v, p)?,
            "label_file" | "dns" | "dns_search" | "dns_opt" | "tmpfs" | "cap_add" | "cap_drop"
            | "security_opt" | "expose" | "profiles" | "volumes_from" => {
                string_or_list(v);
                if let Value::Seq(items) = &mut v.value {
                    items.iter_mut().for_each(scalar_to_string);
                }
            }
            "extends" => {
                if let Value::String(_) = v.value {
                    let span = v.span;
                    let s = std::mem::replace(v, null(span));
                    *v = map(vec![("service".into(), s)], span);
                }
            }
            "networks" => {
                slice_to_map(v, p)?;
                if let Value::Map(nets) = &mut v.value {
                    for (n, _, att) in nets.iter_mut() {
                        if let Some(o) = att.get_mut("driver_opts") {
                            key_values(o, &format!("{p}.{n}.driver_opts"), '=', true)?;
                        }
                        if let Some(a) = att.get_mut("aliases") {
                            string_or_list(a);
                        }
                    }
                }
            }
            "models" => slice_to_map(v, p)?,
            "volumes" => each(v, p, volume)?,
            "devices" => each(v, p, device)?,
            "secrets" | "configs" => each(v, p, file_mount)?,
            "ports" => ports(v, p)?,
            "ulimits" => {}
            "healthcheck" => healthcheck(v, p)?,
            "logging" => {
                if let Some(o) = v.get_mut("options") {
                    key_values_nullable(o, &format!("{p}.options"))?;
                }
            }
            "deploy" => {
                if let Some(l) = v.get_mut("labels") {
                    key_values(l, &format!("{p}.labels"), '=', true)?;
                }
            }
            "post_start" | "pre_stop" | "pre_start" => {
                if let Value::Seq(items) = &mut v.value {
                    for (i, h) in items.iter_mut().enumerate() {
                        let hp = format!("{p}.{i}");
                        if let Some(c) = h.get_mut("command") {
                            command(c, &format!("{hp}.command"))?;
                        }
                        if let Some(e) = h.get_mut("environment") {
                            key_values_nullable(e, &format!("{hp}.environment"))?;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn each(v: &mut Node, path: &str, f: fn(&mut Node, &str) -> R<()>) -> R<()> {
    match &mut v.value {
        Value::Seq(items) => {
            for (i, it) in items.iter_mut().enumerate() {
                f(it, &format!("{path}.{i}"))?;
            }
            Ok(())
        }
        Value::Null => Ok(()),
        _ => Err(at(v, path, "must be a list")),
    }
}

fn slice_to_map(v: &mut Node, path: &str) -> R<()> {
    let span = v.span;
    if let Value::Seq(items) = &v.value {
        let mut out = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let Some(s) = it.scalar_text() else {
                return Err(at(it, &format!("{path}.{i}"), "must be a string"));
            };
            out.push((s, it.span, null(it.span)));
        }
        *v = Node::new(Value::Map(out), span);
    }
    Ok(())
}

fn extra_hosts(v: &mut Node, path: &str) -> R<()> {
    // Canonical: host -> [addresses]. `host:ip`, `host=ip` and IPv6 `host:::1`.
    let span = v.span;
    let mut out: Vec<(String, Span, Node)> = Vec::new();
    let mut add = |k: String, ip: Node, ks: Span| {
        if let Some(e) = out.iter_mut().find(|(ek, _, _)| *ek == k) {
            if let Value::Seq(list) = &mut e.2.value {
                list.push(ip);
            }
        } else {
            out.push((k, ks, Node::new(Value::Seq(vec![ip]), ks)));
        }
    };
    match &v.value {
        Value::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                let Some(s) = it.as_str() else {
                    return Err(at(it, &format!("{path}.{i}"), "must be a string"));
                };
                let (h, ip) = match s.split_once('=') {
                    Some(x) => x,
                    None => s.split_once(':').ok_or_else(|| {
                        at(
                            it,
                            &format!("{path}.{i}"),
                            format!(
                                "invalid extra host {}, expected host=ip",
                                shown(s, it.span, true)
                            ),
                        )
                    })?,
                };
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                add(h.to_string(), Node::string(ip, it.span), it.span);
            }
        }
        Value::Map(entries) => {
            for (k, ks, val) in entries {
                match &val.value {
                    Value::Seq(ips) => {
                        for ip in ips {
                            add(
                                k.clone(),
                                Node::string(ip.scalar_text().unwrap_or_default(), ip.span),
                                *ks,
                            );
                        }
                    }
                    _ => add(
                        k.clone(),
                        Node::string(val.scalar_text().unwrap_or_default(), val.span),
                        *ks,
                    ),
                }
            }
        }
        Value::Null => {}
        _ => return Err(at(v, path, "must be a list or a mapping")),
    }
    *v = Node::new(Value::Map(out), span);
    Ok(())
}

fn build(v: &mut Node, path: &str) -> R<()> {
    let span = v.span;
    if let Value::String(_) = v.value {
        let s = std::mem::replace(v, null(span));
        *v = map(vec![("context".into(), s)], span);
    }
    if !matches!(v.value, Value::Map(_)) {
        return Err(at(v, path, "must be a string or a mapping"));
    }
    if v.get("context").is_none() {
        v.insert("context", Node::string(".", span));
    }
    for key in ["args", "labels", "additional_contexts"] {
        if let Some(a) = v.get_mut(key) {
            if key == "args" {
                key_values_nullable(a, &format!("{path}.{key}"))?;
            } else {
                key_values(a, &format!("{path}.{key}"), '=', key == "labels")?;
            }
        }
    }
    if let Some(h) = v.get_mut("extra_hosts") {
        extra_hosts(h, &format!("{path}.extra_hosts"))?;
    }
    if let Some(s) = v.get_mut("secrets") {
        each(s, &format!("{path}.secrets"), file_mount)?;
    }
    if let Some(s) = v.get_mut("ssh") {
        if let Value::Map(entries) = &s.value {
            let list = entries
                .iter()
                .map(|(k, ks, val)| match val.scalar_text() {
                    Some(p) => Node::string(format!("{k}={p}"), *ks),
                    None => Node::string(k.clone(), *ks),
                })
                .collect();
            s.value = Value::Seq(list);
        } else {
            string_or_list(s);
        }
    }
    for key in ["provenance", "sbom"] {
        if let Some(p) = v.get_mut(key) {
            scalar_to_string(p);
        }
    }
    for key in [
        "cache_from",
        "cache_to",
        "tags",
        "platforms",
        "entitlements",
    ] {
        if let Some(p) = v.get_mut(key) {
            string_or_list(p);
        }
    }
    Ok(())
}

fn depends_on(v: &mut Node, path: &str) -> R<()> {
    let span = v.span;
    match &mut v.value {
        Value::Seq(items) => {
            let mut out = Vec::new();
            for (i, it) in items.iter().enumerate() {
                let Some(s) = it.scalar_text() else {
                    return Err(at(it, &format!("{path}.{i}"), "must be a service name"));
                };
                let s_span = it.span;
                out.push((
                    s,
                    s_span,
                    map(
                        vec![
                            ("condition".into(), Node::string("service_started", s_span)),
                            ("required".into(), boolean(true, s_span)),
                        ],
                        s_span,
                    ),
                ));
            }
            *v = Node::new(Value::Map(out), span);
        }
        Value::Map(entries) => {
            for (k, _, d) in entries.iter_mut() {
                if matches!(d.value, Value::Null) {
                    d.value = Value::Map(Vec::new());
                }
                if !matches!(d.value, Value::Map(_)) {
                    return Err(at(d, &format!("{path}.{k}"), "must be a mapping"));
                }
                let ds = d.span;
                if d.get("condition").is_none() {
                    d.insert("condition", Node::string("service_started", ds));
                }
                if d.get("required").is_none() {
                    d.insert("required", boolean(true, ds));
                }
            }
        }
        Value::Null => {}
        _ => return Err(at(v, path, "must be a list or a mapping")),
    }
    Ok(())
}

fn env_file(v: &mut Node, path: &str) -> R<()> {
    string_or_list(v);
    match &mut v.value {
        Value::Seq(items) => {
            for (i, it) in items.iter_mut().enumerate() {
                let s = it.span;
                match &it.value {
                    Value::String(_) => {
                        let p = std::mem::replace(it, null(s));
                        *it = map(
                            vec![("path".into(), p), ("required".into(), boolean(true, s))],
                            s,
                        );
                    }
                    Value::Map(_) => {
                        if it.get("required").is_none() {
                            it.insert("required", boolean(true, s));
                        }
                    }
                    _ => {
                        return Err(at(
                            it,
                            &format!("{path}.{i}"),
                            "must be a path or a mapping",
                        ))
                    }
                }
            }
            Ok(())
        }
        Value::Null => Ok(()),
        _ => Err(at(v, path, "must be a path or a list")),
    }
}

fn file_mount(v: &mut Node, _path: &str) -> R<()> {
    if let Value::String(_) = v.value {
        let span = v.span;
        let s = std::mem::replace(v, null(span));
        *v = map(vec![("source".into(), s)], span);
    }
    Ok(())
}

fn device(v: &mut Node, path: &str) -> R<()> {
    let Value::String(s) = &v.value else {
        return Ok(());
    };
    let span = v.span;
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, perm) = match parts.as_slice() {
        [a] => (*a, *a, "rwm"),
        [a, b] => (*a, *b, "rwm"),
        [a, b, c] => (*a, *b, *c),
        _ => {
            return Err(at(
                v,
                path,
                format!(
                    "confusing device mapping, please use long syntax: {}",
                    shown(s, span, false)
                ),
            ))
        }
    };
    let dst = if dst.is_empty() { src } else { dst };
    *v = map(
        vec![
            ("source".into(), Node::string(src, span)),
            ("target".into(), Node::string(dst, span)),
            ("permissions".into(), Node::string(perm, span)),
        ],
        span,
    );
    Ok(())
}

fn healthcheck(v: &mut Node, path: &str) -> R<()> {
    if let Some(t) = v.get_mut("test") {
        if let Value::String(s) = &t.value {
            let span = t.span;
            let s = s.clone();
            t.value = Value::Seq(vec![Node::string("CMD-SHELL", span), Node::string(s, span)]);
        } else if !matches!(t.value, Value::Seq(_)) {
            return Err(at(t, &format!("{path}.test"), "must be a string or a list"));
        }
    }
    Ok(())
}

fn is_file_path(s: &str) -> bool {
    if s.starts_with(['.', '/', '~']) || s.starts_with("\\\\") {
        return true;
    }
    let mut c = s.chars();
    matches!((c.next(), c.next()), (Some(l), Some(':')) if l.is_ascii_alphabetic())
}

/// Parses the short volume syntax `[source:]target[:options]`.
pub(crate) fn parse_volume(spec: &str, span: Span) -> Result<Node, String> {
    let shown_spec = shown(spec, span, false);
    if spec.is_empty() {
        return Err("invalid empty volume spec".into());
    }
    let mut fields: Vec<String> = Vec::new();
    let mut buf = String::new();
    let mut depth = 0usize;
    let chars: Vec<char> = spec.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '$' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
        } else if c == '}' && depth > 0 {
            depth -= 1;
        } else if c == ':'
            && depth == 0
            && !(buf.chars().count() == 1 && buf.chars().all(|b| b.is_ascii_alphabetic()))
        {
            if buf.is_empty() {
                return Err(format!(
                    "invalid spec: {shown_spec}: empty section between colons"
                ));
            }
            fields.push(std::mem::take(&mut buf));
            continue;
        }
        buf.push(c);
    }
    if buf.is_empty() {
        return Err(format!(
            "invalid spec: {shown_spec}: empty section between colons"
        ));
    }
    fields.push(buf);
    let (source, target, opts) = match fields.as_slice() {
        [t] => (None, t.clone(), None),
        [s, t] => (Some(s.clone()), t.clone(), None),
        [s, t, o] => (Some(s.clone()), t.clone(), Some(o.clone())),
        _ => return Err(format!("invalid spec: {shown_spec}: too many colons")),
    };
    let bind = source.as_deref().is_some_and(is_file_path);
    let mut out: Vec<(String, Node)> = vec![(
        "type".into(),
        Node::string(if bind { "bind" } else { "volume" }, span),
    )];
    if let Some(s) = source {
        out.push(("source".into(), Node::string(s, span)));
    }
    out.push(("target".into(), Node::string(clean_path(&target), span)));
    let mut bind_opts: Vec<(String, Node)> = Vec::new();
    let mut vol_opts: Vec<(String, Node)> = Vec::new();
    for o in opts.iter().flat_map(|o| o.split(',')) {
        match o {
            "ro" => out.push(("read_only".into(), boolean(true, span))),
            "rw" => {}
            "nocopy" => vol_opts.push(("nocopy".into(), boolean(true, span))),
            "z" | "Z" => bind_opts.push(("selinux".into(), Node::string(o, span))),
            "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave" => {
                bind_opts.push(("propagation".into(), Node::string(o, span)))
            }
            "cached" | "delegated" | "consistent" => {
                out.push(("consistency".into(), Node::string(o, span)))
            }
            _ => {}
        }
    }
    if bind {
        out.push(("bind".into(), map(bind_opts, span)));
    } else {
        out.push(("volume".into(), map(vol_opts, span)));
    }
    Ok(map(out, span))
}

/// `path.Clean` for container paths.
pub(crate) fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return String::new();
    }
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn volume(v: &mut Node, path: &str) -> R<()> {
    match &v.value {
        Value::String(s) => {
            *v = parse_volume(s, v.span).map_err(|e| at(v, path, e))?;
            Ok(())
        }
        Value::Map(_) => Ok(()),
        _ => Err(at(v, path, "must be a string or a mapping")),
    }
}

fn port_range(s: &str, span: Span) -> Result<(u32, u32), String> {
    let bad = || format!("invalid port {}", shown(s, span, true));
    match s.split_once('-') {
        Some((a, b)) => {
            let a: u32 = a.parse().map_err(|_| bad())?;
            let b: u32 = b.parse().map_err(|_| bad())?;
            if a > b || b > 65535 {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let a: u32 = s.parse().map_err(|_| bad())?;
            if a > 65535 {
                return Err(bad());
            }
            Ok((a, a))
        }
    }
}

/// Parses the short port syntax `[[ip:]published:]target[/protocol]` into long entries.
pub(crate) fn parse_port(spec: &str, span: Span) -> Result<Vec<Node>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    // host ip: bracketed IPv6 or everything before the last two colon-separated fields
    let (ip, pub_target): (Option<String>, &str) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| format!("invalid port {}", shown(spec, span, true)))?;
        (
            Some(ip.to_string()),
            after.strip_prefix(':').unwrap_or(after),
        )
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() > 3 {
            let n = parts.len();
            let ip = parts.get(..n - 2).unwrap_or_default().join(":");
            let off = ip.len() + 1;
            (Some(ip), rest.get(off..).unwrap_or_default())
        } else if parts.len() == 3 {
            let ip = parts.first().copied().unwrap_or_default();
            (
                Some(ip.to_string()),
                rest.get(ip.len() + 1..).unwrap_or_default(),
            )
        } else {
            (None, rest)
        }
    };
    let (published, target) = match pub_target.rsplit_once(':') {
        Some((p, t)) => (Some(p), t),
        None => (None, pub_target),
    };
    let (t0, t1) = port_range(target, span)?;
    let published = published.filter(|p| !p.is_empty());
    let pub_range = published.map(|p| port_range(p, span)).transpose()?;
    let mut out = Vec::new();
    for (i, t) in (t0..=t1).enumerate() {
        let mut e: Vec<(String, Node)> = vec![("mode".into(), Node::string("ingress", span))];
        if let Some(ip) = ip.as_ref().filter(|ip| !ip.is_empty()) {
            e.push(("host_ip".into(), Node::string(ip.clone(), span)));
        }
        e.push(("target".into(), Node::new(Value::Int(i64::from(t)), span)));
        if let (Some(p), Some((p0, p1))) = (published, pub_range) {
            let published = if t0 == t1 {
                p.to_string()
            } else if p1 - p0 == t1 - t0 {
                (p0 + i as u32).to_string()
            } else {
                return Err(format!(
                    "invalid port {}: published and target ranges differ in size",
                    shown(spec, span, true)
                ));
            };
            e.push(("published".into(), Node::string(published, span)));
        }
        e.push(("protocol".into(), Node::string(proto.clone(), span)));
        out.push(map(e, span));
    }
    Ok(out)
}

fn ports(v: &mut Node, path: &str) -> R<()> {
    let span = v.span;
    let Value::Seq(items) = &mut v.value else {
        if matches!(v.value, Value::Null) {
            return Ok(());
        }
        return Err(at(v, path, "must be a list"));
    };
    let mut out = Vec::new();
    for (i, it) in items.iter_mut().enumerate() {
        match &it.value {
            Value::Int(_) | Value::String(_) => {
                let s = it.scalar_text().unwrap_or_default();
                out.extend(parse_port(&s, it.span).map_err(|e| at(it, &format!("{path}.{i}"), e))?);
            }
            Value::Map(_) => {
                let mut m = it.clone();
                let ms = m.span;
                if m.get("protocol").is_none() {
                    m.insert("protocol", Node::string("tcp", ms));
                }
                if m.get("mode").is_none() {
                    m.insert("mode", Node::string("ingress", ms));
                }
                if let Some(p) = m.get_mut("published") {
                    scalar_to_string(p);
                }
                out.push(m);
            }
            _ => {
                return Err(at(
                    it,
                    &format!("{path}.{i}"),
                    "must be a string or a mapping",
                ))
            }
        }
    }
    *v = Node::new(Value::Seq(out), span);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split(r#"bundle exec "a b" 'c d' e\ f"#).unwrap(),
            ["bundle", "exec", "a b", "c d", "e f"]
        );
        assert!(shell_split("'open").is_err());
    }

    #[test]
    fn clean() {
        assert_eq!(clean_path("/a/b/../c/"), "/a/c");
        assert_eq!(clean_path("./x"), "x");
    }
}
