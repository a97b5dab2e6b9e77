//! Unit tests of loading and validation.

use std::path::Path;

use super::load::line_col;
use super::model::Config;
use crate::{ImageRef, Tier};

#[test]
fn empty_config_is_valid_and_denies_everything() {
    let c = Config::from_bytes(b"", Path::new("x.toml")).unwrap();
    assert!(c.trust.rules.is_empty());
    assert_eq!(c.sandbox.default_tier, Tier::Hardened);
    assert!(c
        .trust
        .rules_for(&ImageRef::parse("busybox").unwrap())
        .is_empty());
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("a\nbé c", 5), (2, 3));
    assert_eq!(line_col("a\nbé c", 6), (2, 4));
    assert_eq!(line_col("abc", 0), (1, 1));
}
