//! Regular expressions written in configuration, kept with their source text.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A regex that must match a whole value. The source is kept for display and round-trips; the
/// compiled form is anchored (`^(?:…)$`) whatever the author wrote, so a pattern can never match
/// only part of an argument or identity.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source`, anchored at both ends.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()?;
        Ok(Self {
            source: source.into(),
            regex,
        })
    }

    /// True when the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s).map_err(|e| {
            // regex errors are multi-line; keep the first useful line.
            let msg = e.to_string();
            let short = msg.lines().last().unwrap_or(&msg).trim().to_string();
            de::Error::custom(format!("invalid regex `{s}`: {short}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_anchored() {
        let p = Pattern::new("-n[0-9]+").unwrap();
        assert!(p.is_match("-n5"));
        assert!(!p.is_match("x-n5"));
        assert!(!p.is_match("-n5; rm -rf /"));
        let p = Pattern::new("a|b").unwrap();
        assert!(!p.is_match("ab"), "alternation must be anchored as a group");
    }
}
