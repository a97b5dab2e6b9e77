//! YAML front-end: `serde-saphyr` with compose's options, into a [`Node`] tree.
//!
//! Tags and spans come from serde-saphyr's own wrappers: every child is read as
//! `Spanned<Tagged<Raw>>`, so the visitor below sees each value's location and tag.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Spanned, Tagged};
use std::fmt;

use crate::{Node, ParseError, Span, Value};

/// Deepest nesting accepted (YAML and TOML). Compose files need about ten levels;
/// the limit keeps parsing within a 2 MiB thread stack (tokio's default) even in
/// debug builds, where serde-saphyr overflows such a stack near 50 levels.
pub const MAX_DEPTH: usize = 32;

/// Largest compose file accepted (bytes).
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

struct Raw(Value);

thread_local! {
    /// Where the visitor found a duplicate key (serde-saphyr does not locate
    /// errors raised by visitors at the top level).
    static DUPLICATE_AT: std::cell::Cell<Option<Span>> = const { std::cell::Cell::new(None) };
}

type Child = Spanned<Tagged<Raw>>;

fn to_node(c: Child) -> Node {
    let Tagged(Raw(value), tag) = c.value;
    Node {
        value,
        tag: tag.map(|t| t.trim_start_matches('!').to_string()),
        span: Span {
            line: c.referenced.line(),
            column: c.referenced.column(),
            file: 0,
            interpolated: false,
        },
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw(Value::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(|i| Raw(Value::Int(i)))
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw(Value::String(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut out = Vec::new();
        while let Some(c) = a.next_element::<Child>()? {
            out.push(to_node(c));
        }
        Ok(Raw(Value::Seq(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut out: Vec<(String, Span, Node)> = Vec::new();
        while let Some(k) = a.next_key::<Child>()? {
            let key = to_node(k);
            let name = match key.value {
                Value::String(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                _ => return Err(de::Error::custom("mapping keys must be scalars")),
            };
            let v = to_node(a.next_value::<Child>()?);
            if let Some((_, first, _)) = out.iter().find(|(k, _, _)| *k == name) {
                DUPLICATE_AT.with(|d| d.set(Some(key.span)));
                return Err(de::Error::custom(format!(
                    "line {}: mapping key {name:?} already defined at line {} (duplicate key)",
                    key.span.line, first.line
                )));
            }
            out.push((name, key.span, v));
        }
        Ok(Raw(Value::Map(out)))
    }
}

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    // Duplicates reach the visitor, which refuses them naming both lines.
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    o.legacy_octal_numbers = true;
    o.strict_booleans = true;
    let mut b = serde_saphyr::Budget::default();
    b.max_reader_input_bytes = Some(MAX_FILE_BYTES);
    b.max_events = 1_000_000;
    b.max_depth = MAX_DEPTH;
    b.max_aliases = 10_000;
    b.max_anchors = 10_000;
    o.budget = Some(b);
    o.alias_limits.max_total_replayed_events = 50_000;
    o.alias_limits.max_alias_expansions_per_anchor = 1_000;
    o
}

/// Parses one YAML compose file into a [`Node`] tree (empty input is `Null`).
pub fn parse_yaml(file: &str, text: &str) -> Result<Node, ParseError> {
    let fail = |line, column, message: String| ParseError {
        file: file.to_string(),
        line,
        column,
        path: String::new(),
        message,
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(fail(
            0,
            0,
            format!("file larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    if text.trim().is_empty() {
        return Ok(Node {
            value: Value::Null,
            tag: None,
            span: Span {
                line: 1,
                column: 1,
                file: 0,
                interpolated: false,
            },
        });
    }
    DUPLICATE_AT.with(|d| d.set(None));
    match serde_saphyr::from_str_with_options::<Child>(text, options()) {
        Ok(c) => Ok(to_node(c)),
        Err(e) => {
            let duplicate = DUPLICATE_AT.with(|d| d.take());
            let (line, column) = match duplicate {
                Some(s) => (s.line, s.column),
                None => e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0)),
            };
            let path = duplicate
                .and_then(|_| key_path_at(text, line, column))
                .unwrap_or_default();
            let mut msg = message(&e.without_snippet().to_string());
            if msg.starts_with("cycle detected") {
                if let Some((from, to)) = alias_cycle(text) {
                    msg =
                        format!("cycle detected: node at path {from} references node at path {to}");
                }
            }
            Err(ParseError {
                path,
                ..fail(line, column, msg)
            })
        }
    }
}

/// serde-saphyr's message without its rendered snippet and location prefix, worded
/// like compose-go where the cases expect it.
fn message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // drop "line N column M: "
    let msg = match first.strip_prefix("line ") {
        Some(rest) => match rest.split_once(": ") {
            Some((loc, m)) if loc.contains("column") => m,
            _ => first,
        },
        None => first,
    };
    if msg.contains("alias") && (msg.contains("limit") || msg.contains("budget")) {
        format!("excessive aliasing: {msg}")
    } else if msg.contains("merge value must be mapping") {
        format!("map merge requires map or sequence of maps as the value ({msg})")
    } else if msg.contains("recursive references") {
        format!("cycle detected: an alias refers to a node that contains it ({msg})")
    } else {
        msg.to_string()
    }
}

/// Parses every document of a YAML stream (`---` separated; empty documents are
/// skipped, and an empty stream is one empty document), as compose-go loads them.
pub(crate) fn parse_yaml_documents(file: &str, text: &str) -> Result<Vec<Node>, ParseError> {
    if text.len() > MAX_FILE_BYTES || text.trim().is_empty() || !text.contains("---") {
        return parse_yaml(file, text).map(|n| vec![n]);
    }
    DUPLICATE_AT.with(|d| d.set(None));
    match serde_saphyr::from_multiple_with_options::<Child>(text, options()) {
        Ok(docs) if docs.is_empty() => parse_yaml(file, "").map(|n| vec![n]),
        Ok(docs) => Ok(docs.into_iter().map(to_node).collect()),
        Err(_) => {
            // Same error, located and worded as for a single document.
            parse_yaml(file, text).map(|n| vec![n])
        }
    }
}

/// One node of the event walk: where it sits and what it is.
enum Seen<'e> {
    /// A mapping key (`path` is the key's own path) at 1-based `line`, `column`.
    Key { line: u64, column: u64 },
    /// An alias; `open` when its anchor's node (at `anchor`) contains it.
    Alias { open: bool, anchor: &'e [String] },
}

/// Walks `text`'s parser events (serde-saphyr's own parser, re-exported), calling
/// `f` with each node's (or key's) path until it returns `Some`. For the located
/// details serde-saphyr's errors lack; `None` when the text does not parse.
fn walk<T>(text: &str, mut f: impl FnMut(&[String], Seen<'_>) -> Option<T>) -> Option<T> {
    use serde_saphyr::granit_parser::{Event, Parser};
    struct Frame {
        map: bool,
        path: Vec<String>,
        anchor: usize,
        key: Option<String>,
        index: usize,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.ok()?;
        // A mapping frame alternates key / value.
        if let Some(fr) = stack.last_mut() {
            if fr.map && fr.key.is_none() {
                match &ev {
                    Event::Scalar(k, ..) => {
                        let mut p = fr.path.clone();
                        p.push(k.to_string());
                        let (line, column) =
                            (span.start.line() as u64, span.start.col() as u64 + 1);
                        if let Some(t) = f(&p, Seen::Key { line, column }) {
                            return Some(t);
                        }
                        fr.key = Some(k.to_string());
                        continue;
                    }
                    Event::MappingEnd => {}
                    _ => return None, // complex keys: no compose file has them
                }
            }
        }
        let here = |stack: &mut Vec<Frame>| -> Vec<String> {
            match stack.last_mut() {
                Some(fr) if fr.map => {
                    let mut p = fr.path.clone();
                    p.push(fr.key.take().unwrap_or_default());
                    p
                }
                Some(fr) => {
                    let mut p = fr.path.clone();
                    p.push(fr.index.to_string());
                    fr.index += 1;
                    p
                }
                None => Vec::new(),
            }
        };
        match ev {
            Event::MappingStart(_, anchor, _) | Event::SequenceStart(_, anchor, _) => {
                let map = matches!(ev, Event::MappingStart(..));
                let path = here(&mut stack);
                if anchor != 0 {
                    anchors.insert(anchor, path.clone());
                }
                stack.push(Frame {
                    map,
                    path,
                    anchor,
                    key: None,
                    index: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(..) => {
                here(&mut stack);
            }
            Event::Alias(id) => {
                let at = here(&mut stack);
                let open = stack.iter().any(|fr| fr.anchor == id);
                let anchor = anchors.get(&id).map(Vec::as_slice).unwrap_or_default();
                if let Some(t) = f(&at, Seen::Alias { open, anchor }) {
                    return Some(t);
                }
            }
            _ => {}
        }
    }
    None
}

/// The dot path of the mapping key at `line`:`column` (a duplicate key).
fn key_path_at(text: &str, line: u64, column: u64) -> Option<String> {
    walk(text, |path, seen| match seen {
        Seen::Key { line: l, column: c } if (l, c) == (line, column) => Some(path.join(".")),
        _ => None,
    })
}

/// The two paths compose-go's `!reset` walk names for the first alias that refers
/// to a node containing it (serde-saphyr refuses such a file without paths):
/// walking the alias at `A` (its path, one `.<<` dropped) expands the anchored node
/// there, which reaches the alias again at `A` + (anchor → alias) and so reports
/// `node at path <that> references node at path A`.
fn alias_cycle(text: &str) -> Option<(String, String)> {
    let drop_merge = |p: &str| p.replacen(".<<", "", 1);
    walk(text, |at, seen| match seen {
        Seen::Alias { open: true, anchor } => {
            let rel = at.get(anchor.len()..)?.join(".");
            let first = drop_merge(&at.join("."));
            let again = drop_merge(&format!("{first}.{rel}"));
            Some((again, first))
        }
        _ => None,
    })
}
