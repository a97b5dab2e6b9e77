//! Argument comparisons: what one seccomp rule checks about a call's arguments.

use serde::Serialize;

/// Width of an argument comparison. `ioctl` commands and socket families are C `int`s: the kernel
/// ignores the upper half of the register, so comparing all 64 bits would let `0x1_00005412`
/// slip past a `!= TIOCSTI` check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Width {
    /// Low 32 bits only.
    Dword,
    /// All 64 bits.
    Qword,
}

/// A comparison operator for one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg < value`
    Lt,
    /// `arg > value`
    Gt,
    /// `arg & mask == value`
    MaskedEq {
        /// The bits compared.
        mask: u64,
    },
}

/// One comparison on one syscall argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ArgCheck {
    /// Argument position, 0-based.
    pub index: u8,
    /// Compared width.
    pub width: Width,
    /// Operator.
    pub op: Op,
    /// Right-hand side.
    pub value: u64,
    /// What the comparison means, for humans.
    pub meaning: &'static str,
}

/// A conjunction of argument checks: the rule matches when every check holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ArgRule {
    /// Checks that must all hold.
    pub checks: Vec<ArgCheck>,
}

impl ArgRule {
    pub(crate) fn one(index: u8, width: Width, op: Op, value: u64, meaning: &'static str) -> Self {
        ArgRule {
            checks: vec![ArgCheck {
                index,
                width,
                op,
                value,
                meaning,
            }],
        }
    }

    /// A short human description ("arg0 == 1 (AF_UNIX)").
    pub fn describe(&self) -> String {
        self.checks
            .iter()
            .map(|c| c.meaning.to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    }
}
