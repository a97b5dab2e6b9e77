//! The perry-owned spanned tree every compose source loads into.

/// Where a node starts in its source file (1-based; 0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
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
