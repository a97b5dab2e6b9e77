//! Validation of a compose tree against the compose-spec JSON Schema.
//!
//! Why our own validator: it walks the spanned [`Node`] tree directly, so every error
//! names the file, line and column of the offending value (a JSON validator only
//! knows a JSON pointer), and it needs no network, no meta-schema and no format
//! plug-ins. The schema is the compose-spec one (draft-07), shipped in the crate
//! (`schema/compose-spec.json`, [`COMPOSE_SPEC_SCHEMA`]).
//!
//! Supported keywords: `type`, `properties`, `patternProperties`,
//! `additionalProperties`, `required`, `items`, `uniqueItems`, `minItems`,
//! `maxItems`, `oneOf`, `anyOf`, `allOf`, `not`, `enum`, `const`, `minimum`,
//! `maximum`, `minLength`, `maxLength`, `pattern` and local `$ref`s; annotations
//! (`description`, `deprecated`, `default`, `title`, `format`) are ignored, as a
//! draft-07 validator does by default.
//!
//! Like compose-go (which validates after interpolation, where every typed field
//! also accepts a string so that `${VAR}` passes), one error is reported: the most
//! specific one, i.e. the deepest in the document (an unknown key counts one deeper
//! than its mapping), and compose-go's wording is kept (`services.web.image must be
//! a string`, `additional properties 'prots' not allowed`), followed by a
//! did-you-mean for unknown keys. `!reset` nodes are not validated (compose-go
//! removes them before validating).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value as Json;

use crate::node_de::did_you_mean;
use crate::{Node, Span, Value};

/// The compose-spec JSON Schema (draft-07) the loader validates every file against.
pub const COMPOSE_SPEC_SCHEMA: &str = include_str!("../schema/compose-spec.json");

/// One schema violation, located at the offending node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Where the offending value (or unknown key) starts.
    pub span: Span,
    /// Dot path to the offending value or key (`services.web.prots`).
    pub path: String,
    /// compose-go's message, starting with the path of the value it is about
    /// (`services.web.image must be a string`).
    pub message: String,
}

struct Compiled {
    root: Json,
    regexes: HashMap<String, Regex>,
}

fn compiled() -> Option<&'static Compiled> {
    static SCHEMA: OnceLock<Option<Compiled>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let root: Json = serde_json::from_str(COMPOSE_SPEC_SCHEMA).ok()?;
            let mut regexes = HashMap::new();
            collect_patterns(&root, &mut regexes);
            Some(Compiled { root, regexes })
        })
        .as_ref()
}

fn collect_patterns(s: &Json, out: &mut HashMap<String, Regex>) {
    match s {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("pattern", Json::String(p)) => {
                        if let Ok(r) = Regex::new(p) {
                            out.insert(p.clone(), r);
                        }
                    }
                    ("patternProperties", Json::Object(pp)) => {
                        for (p, sub) in pp {
                            if let Ok(r) = Regex::new(p) {
                                out.insert(p.clone(), r);
                            }
                            collect_patterns(sub, out);
                        }
                    }
                    ("properties" | "definitions", Json::Object(props)) => {
                        props.values().for_each(|v| collect_patterns(v, out));
                    }
                    _ => collect_patterns(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

/// A path segment: a mapping key or a sequence index.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn join(path: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        if !s.is_empty() {
            s.push('.');
        }
        match seg {
            Seg::Key(k) => s.push_str(k),
            Seg::Index(i) => s.push_str(&i.to_string()),
        }
    }
    s
}

/// A violation found while walking, with compose-go's specificity.
struct Found {
    specificity: usize,
    error: SchemaError,
}

/// Validates `doc` (one compose file, interpolated or not) against the compose-spec
/// schema; the most specific violation is returned.
pub fn validate_schema(doc: &Node) -> Result<(), SchemaError> {
    let Some(c) = compiled() else {
        return Ok(());
    };
    let mut found = Vec::new();
    let mut path = Vec::new();
    Walker { c }.check(doc, &c.root, &mut path, &mut found, 0);
    match most_specific(found) {
        None => Ok(()),
        Some(f) => Err(f.error),
    }
}

fn most_specific(found: Vec<Found>) -> Option<Found> {
    let mut best: Option<Found> = None;
    for f in found {
        if best.as_ref().is_none_or(|b| f.specificity > b.specificity) {
            best = Some(f);
        }
    }
    best
}

/// `$ref` chains deeper than this are refused (the compose schema needs two).
const MAX_REF_DEPTH: usize = 64;

struct Walker<'c> {
    c: &'c Compiled,
}

fn has_type(v: &Value, want: &str) -> bool {
    match (want, v) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("string", Value::String(_))
        | ("array", Value::Seq(_))
        | ("object", Value::Map(_))
        | ("integer" | "number", Value::Int(_))
        | ("number", Value::Float(_)) => true,
        ("integer", Value::Float(f)) => f.fract() == 0.0,
        _ => false,
    }
}

/// compose-go's `humanReadableType`: `mapping` for object, sorted, `a, b or c`.
fn human_types(want: &[&str]) -> String {
    let mut names: Vec<&str> = want
        .iter()
        .map(|w| if *w == "object" { "mapping" } else { w })
        .collect();
    if names.len() == 1 {
        return names.concat();
    }
    names.sort_unstable();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// JSON equality of a node and a schema value (`enum`, `const`).
fn equals_json(n: &Node, j: &Json) -> bool {
    match (&n.value, j) {
        (Value::Null, Json::Null) => true,
        (Value::Bool(a), Json::Bool(b)) => a == b,
        (Value::String(a), Json::String(b)) => a == b,
        (Value::Int(_) | Value::Float(_), Json::Number(b)) => as_f64(&n.value) == b.as_f64(),
        (Value::Seq(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equals_json(x, y))
        }
        (Value::Map(a), Json::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, _, v)| b.get(k).is_some_and(|bv| equals_json(v, bv)))
        }
        _ => false,
    }
}

/// JSON equality of two nodes (`uniqueItems`): spans, tags and key order ignored.
fn equals_node(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equals_node(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, _, v)| {
                    y.iter()
                        .find(|(k2, _, _)| k2 == k)
                        .is_some_and(|(_, _, v2)| equals_node(v, v2))
                })
        }
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            as_f64(&a.value) == as_f64(&b.value)
        }
        (x, y) => x == y,
    }
}

fn quote_json(j: &Json) -> String {
    match j {
        Json::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

impl<'c> Walker<'c> {
    fn regex(&self, p: &str) -> Option<&'c Regex> {
        self.c.regexes.get(p)
    }

    fn push(
        &self,
        found: &mut Vec<Found>,
        node: &Node,
        path: &[Seg<'_>],
        extra: usize,
        what: String,
    ) {
        let p = join(path);
        let message = if p.is_empty() {
            what
        } else {
            format!("{p} {what}")
        };
        found.push(Found {
            specificity: path.len() + extra,
            error: SchemaError {
                span: node.span,
                path: p,
                message,
            },
        });
    }

    fn check<'n>(
        &self,
        node: &'n Node,
        schema: &'c Json,
        path: &mut Vec<Seg<'n>>,
        found: &mut Vec<Found>,
        refs: usize,
    ) {
        if node.tag.as_deref() == Some("reset") {
            return;
        }
        let s = match schema {
            Json::Bool(true) => return,
            Json::Bool(false) => {
                self.push(found, node, path, 0, "not allowed".into());
                return;
            }
            Json::Object(s) => s,
            _ => return,
        };
        if let Some(Json::String(r)) = s.get("$ref") {
            if refs >= MAX_REF_DEPTH {
                return;
            }
            let target = r
                .strip_prefix('#')
                .and_then(|p| self.c.root.pointer(p))
                .unwrap_or(&Json::Bool(true));
            // draft-07: keywords beside `$ref` are ignored
            self.check(node, target, path, found, refs + 1);
            return;
        }
        if let Some(t) = s.get("type") {
            let want: Vec<&str> = match t {
                Json::String(one) => vec![one.as_str()],
                Json::Array(many) => many.iter().filter_map(Json::as_str).collect(),
                _ => Vec::new(),
            };
            if !want.is_empty() && !want.iter().any(|w| has_type(&node.value, w)) {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("must be a {}", human_types(&want)),
                );
                return;
            }
        }
        if let Some(Json::Array(values)) = s.get("enum") {
            if !values.iter().any(|v| equals_json(node, v)) {
                let list: Vec<String> = values.iter().map(quote_json).collect();
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("value must be one of {}", list.join(", ")),
                );
            }
        }
        if let Some(v) = s.get("const") {
            if !equals_json(node, v) {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("value must be {}", quote_json(v)),
                );
            }
        }
        self.check_number(node, s, path, found);
        self.check_string(node, s, path, found);
        match &node.value {
            Value::Map(entries) => self.check_map(node, entries, s, path, found, refs),
            Value::Seq(items) => self.check_seq(node, items, s, path, found, refs),
            _ => {}
        }
        if let Some(Json::Array(all)) = s.get("allOf") {
            for sub in all {
                self.check(node, sub, path, found, refs);
            }
        }
        if let Some(Json::Array(any)) = s.get("anyOf") {
            let mut errs = Vec::new();
            let mut ok = false;
            for sub in any {
                let mut e = Vec::new();
                self.check(node, sub, path, &mut e, refs);
                if e.is_empty() {
                    ok = true;
                    break;
                }
                errs.extend(e);
            }
            if !ok {
                found.extend(most_specific(errs));
            }
        }
        if let Some(Json::Array(one)) = s.get("oneOf") {
            let mut errs = Vec::new();
            let mut passed = 0usize;
            for sub in one {
                let mut e = Vec::new();
                self.check(node, sub, path, &mut e, refs);
                if e.is_empty() {
                    passed += 1;
                } else {
                    errs.extend(e);
                }
            }
            match passed {
                0 => found.extend(most_specific(errs)),
                1 => {}
                _ => self.push(
                    found,
                    node,
                    path,
                    0,
                    "must be valid against exactly one of the allowed forms".into(),
                ),
            }
        }
        if let Some(not) = s.get("not") {
            let mut e = Vec::new();
            self.check(node, not, path, &mut e, refs);
            if e.is_empty() {
                self.push(found, node, path, 0, "is not allowed here".into());
            }
        }
    }

    fn check_number(
        &self,
        node: &Node,
        s: &serde_json::Map<String, Json>,
        path: &[Seg<'_>],
        found: &mut Vec<Found>,
    ) {
        let Some(x) = as_f64(&node.value) else {
            return;
        };
        if let Some(min) = s.get("minimum").and_then(Json::as_f64) {
            if x < min {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("must be greater than or equal to {}", fmt_num(min)),
                );
            }
        }
        if let Some(max) = s.get("maximum").and_then(Json::as_f64) {
            if x > max {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("must be less than or equal to {}", fmt_num(max)),
                );
            }
        }
    }

    fn check_string(
        &self,
        node: &Node,
        s: &serde_json::Map<String, Json>,
        path: &[Seg<'_>],
        found: &mut Vec<Found>,
    ) {
        let Value::String(text) = &node.value else {
            return;
        };
        let len = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Json::as_u64) {
            if len < min {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("length must be >= {min}, but got {len}"),
                );
            }
        }
        if let Some(max) = s.get("maxLength").and_then(Json::as_u64) {
            if len > max {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("length must be <= {max}, but got {len}"),
                );
            }
        }
        if let Some(Json::String(p)) = s.get("pattern") {
            if self.regex(p).is_some_and(|r| !r.is_match(text)) {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    match node.span.interpolated {
                        true => format!("{} does not match pattern '{p}'", crate::REDACTED),
                        false => format!("'{text}' does not match pattern '{p}'"),
                    },
                );
            }
        }
    }

    fn check_map<'n>(
        &self,
        node: &'n Node,
        entries: &'n [(String, Span, Node)],
        s: &'c serde_json::Map<String, Json>,
        path: &mut Vec<Seg<'n>>,
        found: &mut Vec<Found>,
        refs: usize,
    ) {
        let props = s.get("properties").and_then(Json::as_object);
        let patterns = s.get("patternProperties").and_then(Json::as_object);
        let additional = s.get("additionalProperties");
        if let Some(Json::Array(req)) = s.get("required") {
            let missing: Vec<String> = req
                .iter()
                .filter_map(Json::as_str)
                .filter(|r| !entries.iter().any(|(k, _, _)| k == r))
                .map(|r| format!("'{r}'"))
                .collect();
            match missing.len() {
                0 => {}
                1 => self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("missing property {}", missing.concat()),
                ),
                _ => self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("missing properties {}", missing.join(", ")),
                ),
            }
        }
        for (key, key_span, value) in entries {
            path.push(Seg::Key(key));
            let mut matched = false;
            if let Some(sub) = props.and_then(|p| p.get(key)) {
                matched = true;
                self.check(value, sub, path, found, refs);
            }
            for (pat, sub) in patterns.into_iter().flatten() {
                if self.regex(pat).is_some_and(|r| r.is_match(key)) {
                    matched = true;
                    self.check(value, sub, path, found, refs);
                }
            }
            if !matched {
                match additional {
                    Some(Json::Bool(false)) => {
                        let suggestion = props.and_then(|p| {
                            did_you_mean(key, p.keys().map(String::as_str))
                                .map(|s| format!(" (did you mean {s:?}?)"))
                        });
                        path.pop();
                        let key_node = Node::new(Value::Null, *key_span);
                        let what = format!(
                            "additional properties '{key}' not allowed{}",
                            suggestion.unwrap_or_default()
                        );
                        let before = found.len();
                        self.push(found, &key_node, path, 1, what);
                        // located at the key, and the path names it
                        if let Some(f) = found.get_mut(before) {
                            f.error.path = if f.error.path.is_empty() {
                                key.clone()
                            } else {
                                format!("{}.{key}", f.error.path)
                            };
                        }
                        path.push(Seg::Key(key));
                    }
                    Some(sub @ Json::Object(_)) => self.check(value, sub, path, found, refs),
                    _ => {}
                }
            }
            path.pop();
        }
    }

    fn check_seq<'n>(
        &self,
        node: &'n Node,
        items: &'n [Node],
        s: &'c serde_json::Map<String, Json>,
        path: &mut Vec<Seg<'n>>,
        found: &mut Vec<Found>,
        refs: usize,
    ) {
        let n = items.len() as u64;
        if let Some(min) = s.get("minItems").and_then(Json::as_u64) {
            if n < min {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("minItems: got {n}, want {min}"),
                );
            }
        }
        if let Some(max) = s.get("maxItems").and_then(Json::as_u64) {
            if n > max {
                self.push(
                    found,
                    node,
                    path,
                    0,
                    format!("maxItems: got {n}, want {max}"),
                );
            }
        }
        match s.get("items") {
            Some(sub @ (Json::Object(_) | Json::Bool(_))) => {
                for (i, it) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.check(it, sub, path, found, refs);
                    path.pop();
                }
            }
            Some(Json::Array(tuple)) => {
                for (i, (it, sub)) in items.iter().zip(tuple).enumerate() {
                    path.push(Seg::Index(i));
                    self.check(it, sub, path, found, refs);
                    path.pop();
                }
            }
            _ => {}
        }
        if s.get("uniqueItems") == Some(&Json::Bool(true)) && !deduplicated(path) {
            'outer: for (j, b) in items.iter().enumerate() {
                for (i, a) in items.iter().enumerate().take(j) {
                    if equals_node(a, b) {
                        self.push(found, b, path, 0, format!("items at {i} and {j} are equal"));
                        break 'outer;
                    }
                }
            }
        }
    }
}

/// Lists compose-go de-duplicates (its unicity rules) before it validates, so a
/// repeated entry there is merged away, never a `uniqueItems` error.
fn deduplicated(path: &[Seg<'_>]) -> bool {
    let keys: Vec<&str> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k,
            Seg::Index(_) => "#",
        })
        .collect();
    matches!(
        keys.as_slice(),
        ["networks", _, "labels"]
            | ["networks", _, "ipam", "options"]
            | [
                "services",
                _,
                "annotations"
                    | "cap_add"
                    | "cap_drop"
                    | "devices"
                    | "configs"
                    | "dns"
                    | "dns_opt"
                    | "dns_search"
                    | "environment"
                    | "env_file"
                    | "expose"
                    | "labels"
                    | "links"
                    | "ports"
                    | "profiles"
                    | "secrets"
                    | "sysctls"
                    | "tmpfs"
                    | "volumes"
            ]
            | [
                "services",
                _,
                "build",
                "args" | "additional_contexts" | "platforms" | "tags" | "labels"
            ]
            | ["services", _, "deploy", "labels"]
            | ["services", _, "networks", _, "aliases" | "link_local_ips"]
    )
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schema_compiles_with_every_pattern() {
        let c = compiled().expect("schema parses");
        for p in [
            "^x-",
            "^[a-zA-Z0-9._-]+$",
            "[a-zA-Z0-9][a-zA-Z0-9_.-]+",
            "^[a-z]+$",
        ] {
            assert!(c.regexes.contains_key(p), "{p}");
        }
    }

    #[test]
    fn human_readable_types_like_compose_go() {
        assert_eq!(human_types(&["object"]), "mapping");
        assert_eq!(
            human_types(&["string", "number", "boolean", "null"]),
            "boolean, null, number or string"
        );
        assert_eq!(human_types(&["object", "array"]), "array or mapping");
    }
}
