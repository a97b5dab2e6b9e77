//! The x86_64 syscall name table.
//!
//! seccompiler's own table stops at Linux 6.12 and is private, and a profile must be able to name
//! every call the running kernel has (this box runs 6.18). So the crate carries its own table
//! (`data/syscalls-x86_64.txt`, from systemd 257 plus later additions) and hands its BPF
//! compiler numbers, never names. A name missing from this table is a build error: nothing is
//! ever silently allowed or silently dropped from a deny list.

use std::collections::BTreeMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("../data/syscalls-x86_64.txt");

/// The x86_64 syscall table: name -> number.
fn table() -> &'static BTreeMap<&'static str, i64> {
    static T: OnceLock<BTreeMap<&'static str, i64>> = OnceLock::new();
    T.get_or_init(|| {
        TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, nr) = l.split_once(' ').expect("table line is `name number`");
                (name, nr.trim().parse().expect("table number parses"))
            })
            .collect()
    })
}

/// The syscall number of `name` on x86_64, or `None` when the table does not know the name.
pub fn number(name: &str) -> Option<i64> {
    table().get(name).copied()
}

/// The name of syscall number `nr` on x86_64 (for explaining denials), if known.
pub fn name(nr: i64) -> Option<&'static str> {
    table().iter().find(|(_, &n)| n == nr).map(|(k, _)| *k)
}

/// Every syscall name the table knows, sorted.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    table().keys().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_calls_newer_than_seccompiler() {
        // seccompiler 0.5 stops at 6.12; these are 6.13+ and must still resolve.
        assert_eq!(number("setxattrat"), Some(463));
        assert_eq!(number("open_tree_attr"), Some(467));
        assert_eq!(number("file_setattr"), Some(469));
        assert_eq!(number("clone3"), Some(435));
        assert_eq!(number("read"), Some(0));
        assert_eq!(name(59), Some("execve"));
        assert_eq!(number("not_a_syscall"), None);
        // 32-bit-only names must not be in the x86_64 table
        assert_eq!(number("mmap2"), None);
    }

    #[test]
    fn numbers_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for n in all_names() {
            assert!(seen.insert(number(n).unwrap()), "duplicate number for {n}");
        }
        assert!(seen.len() > 360);
    }
}
