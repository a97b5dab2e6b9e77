//! `.env` / `env_file` parsing with compose's dotenv rules.
//!
//! Lines are `KEY=value` or `KEY: value`, optionally prefixed by `export `; `#`
//! starts a comment line, and in an unquoted value ` #` starts an inline comment.
//! Single quotes are literal (only `\'` is an escape); double quotes expand
//! `\n \t \r \a \b \f \v \\ \" \$` and `\0NNN` octal and may span lines; both
//! unquoted and double-quoted values expand `${VAR}` (the lookup is asked first,
//! then keys defined earlier in the same files). A bare `KEY` line takes the value
//! from the lookup, or is left out. A UTF-8 BOM is ignored.

use std::collections::BTreeMap;

use crate::substitute;

/// A dotenv syntax error: 1-based line and message (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DotenvError {
    pub(crate) line: u64,
    pub(crate) message: String,
}

/// Parses `src`, adding to `out`; `lookup` is consulted before `out` for `${VAR}`
/// and for bare `KEY` lines.
pub(crate) fn parse_into(
    src: &str,
    out: &mut BTreeMap<String, String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), DotenvError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0usize;
    let mut line = 1u64;
    let err = |line: u64, message: String| DotenvError { line, message };
    loop {
        // statement start: skip whitespace and comment lines
        loop {
            while let Some(&c) = chars.get(i) {
                if !c.is_whitespace() {
                    break;
                }
                if c == '\n' {
                    line += 1;
                }
                i += 1;
            }
            if chars.get(i) == Some(&'#') {
                while chars.get(i).is_some_and(|c| *c != '\n') {
                    i += 1;
                }
                continue;
            }
            break;
        }
        if i >= chars.len() {
            return Ok(());
        }
        // `export` prefix
        let rest: String = chars.get(i..i + 7).unwrap_or_default().iter().collect();
        if rest.starts_with("export")
            && rest
                .chars()
                .nth(6)
                .is_some_and(|c| c.is_whitespace() && c != '\n')
        {
            i += 6;
            while chars.get(i).is_some_and(|c| is_space(*c)) {
                i += 1;
            }
        }
        // key
        let key_start = i;
        let mut inherited = false;
        let key_end;
        loop {
            match chars.get(i) {
                None => {
                    key_end = i;
                    inherited = true;
                    break;
                }
                Some(&c) if is_space(c) => i += 1,
                Some('=') | Some(':') => {
                    key_end = i;
                    i += 1;
                    break;
                }
                Some('\n') => {
                    key_end = i;
                    inherited = true;
                    break;
                }
                Some(&c) if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']') => {
                    i += 1
                }
                Some(&c) => {
                    // the name only, up to `=`, `:` or a space: what follows may be a secret
                    // (compose-go quotes the whole line here)
                    let name: String = chars
                        .get(key_start..)
                        .unwrap_or_default()
                        .iter()
                        .take_while(|c| !matches!(**c, '\n' | '=' | ':') && !is_space(**c))
                        .collect();
                    return Err(err(
                        line,
                        format!("unexpected character \"{c}\" in variable name {name:?}"),
                    ));
                }
            }
        }
        let key: String = chars
            .get(key_start..key_end)
            .unwrap_or_default()
            .iter()
            .collect::<String>()
            .trim_end()
            .to_string();
        if key.contains(' ') || key.contains('\t') {
            return Err(err(line, "key cannot contain a space".into()));
        }
        if inherited {
            if let Some(v) = lookup(&key) {
                out.insert(key, v);
            }
            continue;
        }
        while chars.get(i).is_some_and(|c| is_space(*c)) {
            i += 1;
        }
        let expand = |v: &str, out: &BTreeMap<String, String>| {
            substitute(v, &|name| lookup(name).or_else(|| out.get(name).cloned()))
        };
        match chars.get(i) {
            Some(&q @ ('"' | '\'')) => {
                let start_line = line;
                i += 1;
                let mut val = String::new();
                let mut escaped = false;
                let mut closed = false;
                while let Some(&c) = chars.get(i) {
                    i += 1;
                    if c == '\n' {
                        line += 1;
                    }
                    if c != q {
                        if !escaped && c == '\\' {
                            escaped = true;
                            continue;
                        }
                        if escaped {
                            escaped = false;
                            val.push('\\');
                        }
                        val.push(c);
                        continue;
                    }
                    if escaped {
                        escaped = false;
                        val.push(c);
                        continue;
                    }
                    closed = true;
                    break;
                }
                if !closed {
                    return Err(err(
                        start_line,
                        format!("unterminated quoted value for {key}"),
                    ));
                }
                if q == '"' {
                    let v =
                        expand(&expand_escapes(&val), out).map_err(|e| err(line, e.to_string()))?;
                    out.insert(key, v);
                } else {
                    out.insert(key, val);
                }
            }
            _ => {
                let mut raw = String::new();
                while let Some(&c) = chars.get(i) {
                    i += 1;
                    if c == '\n' {
                        break;
                    }
                    raw.push(c);
                }
                let this_line = line;
                line += 1;
                let raw = match raw.find(" #") {
                    Some(p) => raw.get(..p).unwrap_or_default().to_string(),
                    None => raw,
                };
                let v = expand(raw.trim_end(), out).map_err(|e| err(this_line, e.to_string()))?;
                out.insert(key, v);
            }
        }
    }
}

fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

fn expand_escapes(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let simple = match next {
            Some('a') => Some('\u{7}'),
            Some('b') => Some('\u{8}'),
            Some('f') => Some('\u{c}'),
            Some('n') => Some('\n'),
            Some('r') => Some('\r'),
            Some('t') => Some('\t'),
            Some('v') => Some('\u{b}'),
            Some('"') => Some('"'),
            Some('\\') => Some('\\'),
            _ => None,
        };
        if let Some(r) = simple {
            out.push(r);
            i += 2;
        } else if next == Some('$') {
            out.push_str("$$");
            i += 2;
        } else if next == Some('0') {
            // \0 followed by up to three digits, read as octal (like \NNN)
            let digits: String = chars
                .get(i + 2..)
                .unwrap_or_default()
                .iter()
                .take(3)
                .take_while(|d| d.is_ascii_digit())
                .collect();
            match u32::from_str_radix(&digits, 8)
                .ok()
                .and_then(char::from_u32)
            {
                Some(ch) if digits.len() == 3 => {
                    out.push(ch);
                    i += 2 + digits.len();
                }
                _ => {
                    out.push('\\');
                    out.push('0');
                    out.push_str(&digits);
                    i += 2 + digits.len();
                }
            }
        } else {
            out.push('\\');
            i += 1;
        }
    }
    out
}

/// Parses a dotenv file's text on its own (no lookup), for tests and tools.
pub fn parse_dotenv(src: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    parse_into(src, &mut out, &|_| None).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    Ok(out)
}

/// Parses a dotenv file's text with a lookup consulted first (shell environment).
pub fn parse_dotenv_with_lookup(
    src: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    parse_into(src, &mut out, lookup).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    Ok(out)
}
