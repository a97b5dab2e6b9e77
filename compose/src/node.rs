//! The perry-owned spanned tree every compose source loads into.

/// Where a node starts in its source file (1-based; 0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Index of the source file in the loader's file table (0 when unknown or single file).
    pub file: u32,
    /// The value here came from interpolation (a variable's value was substituted
    /// into it), so an error message must not quote it: see [`shown`]. Nodes derived
    /// from it (a short port's long form, a `depends_on` key) copy the span, and so
    /// the mark.
    pub interpolated: bool,
}

/// What an error message shows in place of a value that came from interpolation.
pub const REDACTED: &str = "(interpolated value)";

/// How an error message may show `s`, the text of the node at `span`: `s` itself
/// (debug-quoted when `quote`), or [`REDACTED`] when `span` is marked
/// [`Span::interpolated`], so values of variables never reach a message.
pub(crate) fn shown(s: &str, span: Span, quote: bool) -> String {
    match (span.interpolated, quote) {
        (true, _) => REDACTED.to_string(),
        (false, true) => format!("{s:?}"),
        (false, false) => s.to_string(),
    }
}

/// One value of the tree with its tag (e.g. `!reset`) and span.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// The tag as written without the leading `!` (`reset`, `override`), if any.
    pub tag: Option<String>,
    /// Where the value starts.
    pub span: Span,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null` / `~` / empty.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order; keys are strings with their own spans.
    Map(Vec<(String, Span, Node)>),
}

impl Node {
    /// Looks up `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    /// Equality of values and tags, ignoring spans and key order (two spellings of one tree).
    pub fn same_tree(&self, other: &Node) -> bool {
        if self.tag != other.tag {
            return false;
        }
        match (&self.value, &other.value) {
            (Value::Seq(a), Value::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_tree(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(ka, _, na)| {
                        b.iter()
                            .find(|(kb, _, _)| kb == ka)
                            .is_some_and(|(_, _, nb)| na.same_tree(nb))
                    })
            }
            (a, b) => a == b,
        }
    }
}

impl Node {
    /// A node with no tag at `span`.
    pub fn new(value: Value, span: Span) -> Node {
        Node {
            value,
            tag: None,
            span,
        }
    }

    /// A string node.
    pub fn string(s: impl Into<String>, span: Span) -> Node {
        Node::new(Value::String(s.into()), span)
    }

    /// Mutable lookup of `key` when this node is a mapping.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(entries) => entries
                .iter_mut()
                .find(|(k, _, _)| k == key)
                .map(|(_, _, n)| n),
            _ => None,
        }
    }

    /// Removes `key` from a mapping, returning its node.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        match &mut self.value {
            Value::Map(entries) => {
                let i = entries.iter().position(|(k, _, _)| k == key)?;
                Some(entries.remove(i).2)
            }
            _ => None,
        }
    }

    /// Sets `key` in a mapping (replacing, or appending at `self`'s span).
    pub fn insert(&mut self, key: &str, node: Node) {
        let span = node.span;
        if let Value::Map(entries) = &mut self.value {
            if let Some(e) = entries.iter_mut().find(|(k, _, _)| k == key) {
                e.2 = node;
            } else {
                entries.push((key.to_string(), span, node));
            }
        }
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar as text (strings, numbers, booleans); `None` for null and collections.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::String(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Sets the file index of every span in the tree.
    pub fn set_file(&mut self, file: u32) {
        self.span.file = file;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.set_file(file)),
            Value::Map(entries) => entries.iter_mut().for_each(|(_, s, n)| {
                s.file = file;
                n.set_file(file)
            }),
            _ => {}
        }
    }
}
