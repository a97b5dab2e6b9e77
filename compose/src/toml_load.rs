//! TOML front-end: `compose.toml` into the same [`Node`] tree as YAML.
//!
//! TOML has no tags, so `!reset` / `!override` are spelled as a one-key table whose
//! key is the tag: `ports = { "!reset" = [] }` is YAML's `ports: !reset []`, and
//! `[services.web."!override"]` / `environment = { "!override" = { A = "1" } }` is
//! `!override`. Datetimes become strings.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::{Node, ParseError, Span, Value, MAX_DEPTH, MAX_FILE_BYTES};

struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn at(&self, offset: usize) -> Span {
        let before = self.0.get(..offset).unwrap_or(self.0);
        let line = before.matches('\n').count() as u64 + 1;
        let col_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before
            .get(col_start..)
            .map(|s| s.chars().count())
            .unwrap_or(0) as u64
            + 1;
        Span {
            line,
            column,
            file: 0,
            interpolated: false,
        }
    }
}

fn tag_of(key: &str) -> Option<&'static str> {
    match key {
        "!reset" => Some("reset"),
        "!override" => Some("override"),
        _ => None,
    }
}

fn convert(
    v: &Spanned<DeValue<'_>>,
    lines: &Lines<'_>,
    file: &str,
    depth: usize,
) -> Result<Node, ParseError> {
    let span = lines.at(v.span().start);
    let bad = |message: String| ParseError {
        file: file.to_string(),
        line: span.line,
        column: span.column,
        path: String::new(),
        message,
    };
    if depth > MAX_DEPTH {
        return Err(bad(format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    let value = match v.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => Value::Int(
            i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| bad("integer out of range".into()))?,
        ),
        DeValue::Float(f) => Value::Float(
            f.as_str()
                .replace('_', "")
                .parse()
                .map_err(|_| bad("invalid float".into()))?,
        ),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(a) => Value::Seq(
            a.iter()
                .map(|x| convert(x, lines, file, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        DeValue::Table(t) => {
            if t.len() == 1 {
                if let Some((k, inner)) = t.iter().next() {
                    if let Some(tag) = tag_of(k.get_ref()) {
                        let mut n = convert(inner, lines, file, depth + 1)?;
                        n.tag = Some(tag.to_string());
                        n.span = span;
                        return Ok(n);
                    }
                }
            }
            let mut out = Vec::with_capacity(t.len());
            for (k, val) in t.iter() {
                out.push((
                    k.get_ref().to_string(),
                    lines.at(k.span().start),
                    convert(val, lines, file, depth + 1)?,
                ));
            }
            Value::Map(out)
        }
    };
    Ok(Node {
        value,
        tag: None,
        span,
    })
}

/// Parses one TOML compose file into a [`Node`] tree.
pub fn parse_toml(file: &str, text: &str) -> Result<Node, ParseError> {
    let lines = Lines(text);
    if text.len() > MAX_FILE_BYTES {
        return Err(ParseError {
            file: file.to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("file larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    let doc = DeTable::parse(text).map_err(|e| {
        let s = e.span().map(|r| lines.at(r.start)).unwrap_or_default();
        ParseError {
            file: file.to_string(),
            line: s.line,
            column: s.column,
            path: String::new(),
            message: e.message().to_string(),
        }
    })?;
    let span = doc.span();
    let as_value = Spanned::new(span, DeValue::Table(doc.into_inner()));
    convert(&as_value, &lines, file, 0)
}
