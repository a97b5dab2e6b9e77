//! Compose variable substitution: `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`,
//! `${VAR:?e}`, `${VAR?e}`, `${VAR:+r}`, `${VAR+r}`, nested arguments, `$$`.

/// Why a substitution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// The template is malformed (unclosed `${`, bad name).
    #[error("Invalid template: {0:?}")]
    InvalidTemplate(String),
    /// `${VAR?err}` / `${VAR:?err}` with the variable missing.
    #[error("required variable {name} is missing a value{}", reason_suffix(.reason))]
    MissingRequired {
        /// The variable.
        name: String,
        /// The (substituted) reason, possibly empty.
        reason: String,
    },
}

fn reason_suffix(r: &str) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!(": {r}")
    }
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Substitutes variables in `input`; `lookup` returns `None` for an unset variable.
pub fn substitute(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let start = i + 2;
                let Some(j) = closing_brace(&chars, start) else {
                    return Err(InterpolateError::InvalidTemplate(input.to_string()));
                };
                let body: String = chars.get(start..j).unwrap_or_default().iter().collect();
                out.push_str(&braced(&body, input, lookup)?);
                i = j + 1;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while chars.get(j).is_some_and(|c| is_name_char(*c)) {
                    j += 1;
                }
                let name: String = chars.get(i + 1..j).unwrap_or_default().iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn braced(
    body: &str,
    whole: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let name_len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let (name, rest) = body.split_at(name_len);
    if !name.starts_with(is_name_start) {
        return Err(InterpolateError::InvalidTemplate(whole.to_string()));
    }
    let value = lookup(name);
    if rest.is_empty() {
        return Ok(value.unwrap_or_default());
    }
    const OPS: [&str; 6] = [":?", ":-", ":+", "?", "-", "+"];
    let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
        return Err(InterpolateError::InvalidTemplate(whole.to_string()));
    };
    let arg = rest.get(op.len()..).unwrap_or_default();
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let set = value.is_some();
    let present = if op.starts_with(':') {
        set_nonempty
    } else {
        set
    };
    match op.trim_start_matches(':') {
        "-" if present => Ok(value.unwrap_or_default()),
        "-" => substitute(arg, lookup),
        "+" if present => substitute(arg, lookup),
        "+" => Ok(String::new()),
        _ if present => Ok(value.unwrap_or_default()),
        _ => Err(InterpolateError::MissingRequired {
            name: name.to_string(),
            reason: substitute(arg, lookup)?,
        }),
    }
}

/// A variable a compose file uses, as compose-go's `template.ExtractVariables`
/// reports it (what `docker compose config --variables` lists).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Variable {
    /// The variable's name.
    pub name: String,
    /// The default of `${VAR:-d}` / `${VAR-d}` (empty when none).
    pub default_value: String,
    /// The replacement of `${VAR:+r}` / `${VAR+r}` (empty when none).
    pub presence_value: String,
    /// `${VAR:?e}` / `${VAR?e}`.
    pub required: bool,
}

/// Every variable used in the strings of `tree` (nested defaults and replacements
/// included; `$$` is not a variable; malformed templates are skipped). A name used
/// twice keeps its last use.
pub fn extract_variables(tree: &crate::Node) -> std::collections::BTreeMap<String, Variable> {
    let mut out = std::collections::BTreeMap::new();
    walk_strings(tree, &mut |s| {
        for v in variables_in(s, 0) {
            out.insert(v.name.clone(), v);
        }
    });
    out
}

fn walk_strings(n: &crate::Node, f: &mut dyn FnMut(&str)) {
    match &n.value {
        crate::Value::String(s) => f(s),
        crate::Value::Seq(items) => items.iter().for_each(|i| walk_strings(i, f)),
        crate::Value::Map(entries) => entries.iter().for_each(|(_, _, v)| walk_strings(v, f)),
        _ => {}
    }
}

/// Nesting of defaults followed when extracting (deeper is not a compose file).
const MAX_NESTED: usize = 32;

fn variables_in(input: &str, depth: usize) -> Vec<Variable> {
    let mut out = Vec::new();
    if depth > MAX_NESTED {
        return out;
    }
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '$' {
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => i += 2,
            Some('{') => {
                let start = i + 2;
                let Some(j) = closing_brace(&chars, start) else {
                    return out;
                };
                let body: String = chars.get(start..j).unwrap_or_default().iter().collect();
                let name_len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
                let (name, rest) = body.split_at(name_len);
                if name.starts_with(is_name_start) {
                    let mut v = Variable {
                        name: name.to_string(),
                        ..Variable::default()
                    };
                    for op in [":?", "?", ":-", "-", ":+", "+"] {
                        if let Some(arg) = rest.strip_prefix(op) {
                            match op {
                                ":?" | "?" => v.required = true,
                                ":-" | "-" => v.default_value = arg.to_string(),
                                _ => v.presence_value = arg.to_string(),
                            }
                            break;
                        }
                    }
                    let nested = [v.default_value.clone(), v.presence_value.clone()];
                    out.push(v);
                    for arg in nested.iter().filter(|a| !a.is_empty()) {
                        out.extend(variables_in(arg, depth + 1));
                    }
                }
                i = j + 1;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while chars.get(j).is_some_and(|c| is_name_char(*c)) {
                    j += 1;
                }
                let name: String = chars.get(i + 1..j).unwrap_or_default().iter().collect();
                out.push(Variable {
                    name,
                    ..Variable::default()
                });
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// The index of the `}` closing the `${` whose body starts at `start` (nested braces
/// counted), or `None` when it is never closed.
fn closing_brace(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 1usize;
    for (j, &d) in chars.iter().enumerate().skip(start) {
        match d {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}
