//! A serde `Deserializer` over a canonical [`Node`] tree, so the typed model is
//! derived rather than hand-written while every error keeps its location.
//!
//! Why not `deny_unknown_fields`: it cannot coexist with the flattened `x-*`
//! extensions, and its message has no location. Here `deserialize_struct` sees the
//! struct's field list, so an unknown key is refused at the key's own span with a
//! did-you-mean, and `x-*` keys are skipped (the loader copies them separately).
//! Scalars are coerced the way compose-go casts interpolated strings: `"5"` is a
//! valid integer and `"true"` a valid boolean, and numbers are valid strings.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

use crate::{Node, Span, Value};

/// A typing error, located once (the innermost node wins).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeError {
    pub(crate) span: Option<Span>,
    pub(crate) path: Option<String>,
    pub(crate) message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            span: None,
            path: None,
            message: msg.to_string(),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        de::Error::custom(unknown_key_message(field, expected))
    }
}

/// `additional property "imgae" is not allowed (did you mean "image"?)`.
pub(crate) fn unknown_key_message(field: &str, expected: &[&str]) -> String {
    match did_you_mean(field, expected.iter().copied()) {
        Some(s) => format!("additional property {field:?} is not allowed (did you mean {s:?}?)"),
        None => format!("additional property {field:?} is not allowed"),
    }
}

/// The closest candidate within a small edit distance.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .filter(|c| !c.starts_with("__"))
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.last().copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// Deserializes `node` (whose dot path is `path`) into `T`.
pub(crate) fn from_node<T: de::DeserializeOwned>(node: &Node, path: &str) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        node,
        path: path.to_string(),
    })
    .map_err(|e| locate(e, node, path))
}

fn locate(mut e: DeError, node: &Node, path: &str) -> DeError {
    if e.span.is_none() {
        e.span = Some(node.span);
    }
    if e.path.is_none() {
        e.path = Some(path.to_string());
    }
    e
}

/// `path.key`, with a key that came from interpolation (a short `depends_on`
/// entry turned into a key) shown as [`crate::REDACTED`].
fn join_key(path: &str, key: &str, span: Span) -> String {
    join(path, &crate::node::shown(key, span, false))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl NodeDe<'_> {
    fn err(&self, message: String) -> DeError {
        DeError {
            span: Some(self.node.span),
            path: Some(self.path.clone()),
            message,
        }
    }

    fn kind(&self) -> &'static str {
        match &self.node.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::String(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "mapping",
        }
    }

    /// `s`, this node's text, as a message may show it (never an interpolated value).
    fn shown(&self, s: &str) -> String {
        crate::node::shown(s, self.node.span, true)
    }

    /// A visitor's own error about this node's text `s` (`invalid size "…"`, from
    /// `units.rs` or `model.rs`) with `s` replaced by [`crate::REDACTED`] when the
    /// node came from interpolation. Errors of deeper nodes are already located.
    fn scrub(&self, mut e: DeError, s: &str) -> DeError {
        if self.node.span.interpolated && e.span.is_none() && !s.is_empty() {
            e.message = e
                .message
                .replace(&format!("{s:?}"), crate::REDACTED)
                .replace(s, crate::REDACTED);
        }
        e
    }

    fn wrong(&self, want: &str) -> DeError {
        self.err(format!("must be a {want}, not a {}", self.kind()))
    }
}

/// compose-go's `toBoolean`, which casts every string decoded into a boolean field
/// (literal or interpolated): `true`/`false`, and YAML 1.1's `y`/`yes`/`on`,
/// `n`/`no`/`off` (it warns), case-insensitive; anything else (`1`) is refused.
/// The YAML layer stays strict: unquoted `yes` is the string "yes" (YAML 1.2), so a
/// string field such as an `environment` value keeps it as written.
fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" => Some(true),
        "false" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::Float(f) => v.visit_f64(*f),
            Value::String(s) => v.visit_str(s).map_err(|e| self.scrub(e, s)),
            Value::Seq(items) => v.visit_seq(SeqDe {
                items: items.iter(),
                index: 0,
                path: &self.path,
            }),
            Value::Map(entries) => v.visit_map(MapDe {
                entries: entries.iter().collect(),
                pos: 0,
                path: &self.path,
            }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Bool(b) => v.visit_bool(*b),
            Value::String(s) => match parse_bool(s) {
                Some(b) => v.visit_bool(b),
                None => Err(self.err(format!("{} is not a boolean", self.shown(s)))),
            },
            _ => Err(self.wrong("boolean")),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Int(i) => v.visit_i64(*i),
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => v.visit_i64(i),
                Err(_) => Err(self.err(format!("{} is not an integer", self.shown(s)))),
            },
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => v.visit_i64(*f as i64),
            _ => Err(self.wrong("integer")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Int(i) if *i >= 0 => v.visit_u64(*i as u64),
            Value::String(s) => match s.trim().parse::<u64>() {
                Ok(i) => v.visit_u64(i),
                Err(_) => Err(self.err(format!("{} is not a non-negative integer", self.shown(s)))),
            },
            Value::Int(_) => Err(self.err("must not be negative".into())),
            _ => Err(self.wrong("integer")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Int(i) => v.visit_f64(*i as f64),
            Value::Float(f) => v.visit_f64(*f),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => v.visit_f64(f),
                Err(_) => Err(self.err(format!("{} is not a number", self.shown(s)))),
            },
            _ => Err(self.wrong("number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.node.scalar_text() {
            Some(s) => v.visit_string(s.clone()).map_err(|e| self.scrub(e, &s)),
            None => Err(self.wrong("string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(_) => self.deserialize_any(v),
            _ => Err(self.wrong("list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => self.deserialize_any(v),
            _ => Err(self.wrong("mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let Value::Map(entries) = &self.node.value else {
            return Err(self.wrong("mapping"));
        };
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            let (key, span, _) = e;
            if key.starts_with("x-") && !fields.contains(&key.as_str()) {
                continue;
            }
            if !fields.contains(&key.as_str()) {
                return Err(DeError {
                    span: Some(*span),
                    path: Some(join_key(&self.path, key, *span)),
                    message: unknown_key_message(key, fields),
                });
            }
            kept.push(e);
        }
        v.visit_map(MapDe {
            entries: kept,
            pos: 0,
            path: &self.path,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::String(s) => {
                if !variants.contains(&s.as_str()) {
                    return Err(self.err(format!(
                        "{} is not one of {}",
                        self.shown(s),
                        variants
                            .iter()
                            .map(|x| format!("{x:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                v.visit_enum(s.as_str().into_deserializer())
                    .map_err(|e| self.scrub(e, s))
            }
            _ => Err(self.wrong("string")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(v)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(v)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'a str,
}

impl<'de> SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = join(self.path, &self.index.to_string());
        self.index += 1;
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map(Some)
        .map_err(|e| locate(e, node, &path))
    }
}

struct MapDe<'a> {
    entries: Vec<&'a (String, Span, Node)>,
    pos: usize,
    path: &'a str,
}

impl<'de> MapAccess<'de> for MapDe<'_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, span, _)) = self.entries.get(self.pos).copied() else {
            return Ok(None);
        };
        let de: de::value::StrDeserializer<'_, DeError> = key.as_str().into_deserializer();
        seed.deserialize(de).map(Some).map_err(|mut e| {
            e.span.get_or_insert(*span);
            e.path
                .get_or_insert_with(|| join_key(self.path, key, *span));
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, span, node)) = self.entries.get(self.pos).copied() else {
            return Err(de::Error::custom("value without key"));
        };
        self.pos += 1;
        let path = join_key(self.path, key, *span);
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map_err(|e| locate(e, node, &path))
    }
}
