//! Human units in configuration: durations (`"10s"`, `"5m"`) and sizes (`"512MiB"`, `"1M"`).
//!
//! Operators write limits by hand, so the units must be unambiguous: sizes follow IEC for binary
//! suffixes (`KiB`, `MiB`, `GiB`, also `Ki`/`Mi`/`Gi`) and SI for decimal ones (`K`/`KB`, `M`/`MB`,
//! `G`/`GB`); a bare number is bytes. Durations take `ms`, `s`, `m`, `h` and `d`.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in configuration, e.g. `"10s"`; kept as whole milliseconds. The default
/// is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(std::time::Duration);

/// A size in bytes written in configuration, e.g. `"512MiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// Why a unit string was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The string had no number in front.
    #[error("`{0}` has no number (examples: {1})")]
    NoNumber(String, &'static str),
    /// The suffix is not one we know.
    #[error("`{input}` has unknown unit `{unit}` (use one of {allowed})")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The suffix that was not recognised.
        unit: String,
        /// The suffixes that are accepted.
        allowed: &'static str,
    },
    /// The value does not fit in 64 bits.
    #[error("`{0}` is too large")]
    Overflow(String),
}

const DURATION_UNITS: &str = "`ms`, `s`, `m`, `h`, `d`";
const SIZE_UNITS: &str = "`B`, `K`, `KB`, `KiB`, `M`, `MB`, `MiB`, `G`, `GB`, `GiB`, `T`, `TiB`";

fn split_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n = s[..digits].parse().ok()?;
    Some((n, s[digits..].trim_start()))
}

impl HumanDuration {
    /// Wraps a standard duration (rounded down to milliseconds).
    pub fn from_std(d: std::time::Duration) -> Self {
        Self(std::time::Duration::from_millis(d.as_millis() as u64))
    }

    /// Whole seconds, for building durations in code.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// The duration as the standard type.
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let (n, unit) =
            split_number(s).ok_or_else(|| UnitError::NoNumber(input.into(), "`10s`, `5m`"))?;
        let millis_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(UnitError::UnknownUnit {
                    input: input.into(),
                    unit: unit.into(),
                    allowed: DURATION_UNITS,
                })
            }
        };
        let ms = n
            .checked_mul(millis_per)
            .ok_or_else(|| UnitError::Overflow(input.into()))?;
        Ok(Self(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis() as u64;
        for (unit, per) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl ByteSize {
    /// A size of exactly `n` bytes.
    pub const fn bytes(n: u64) -> Self {
        Self(n)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        Self(n * 1024 * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let (n, unit) =
            split_number(s).ok_or_else(|| UnitError::NoNumber(input.into(), "`512MiB`, `1M`"))?;
        let per: u64 = match unit {
            "" | "B" => 1,
            "K" | "KB" | "k" | "kB" => 1_000,
            "Ki" | "KiB" => 1 << 10,
            "M" | "MB" => 1_000_000,
            "Mi" | "MiB" => 1 << 20,
            "G" | "GB" => 1_000_000_000,
            "Gi" | "GiB" => 1 << 30,
            "T" | "TB" => 1_000_000_000_000,
            "Ti" | "TiB" => 1 << 40,
            _ => {
                return Err(UnitError::UnknownUnit {
                    input: input.into(),
                    unit: unit.into(),
                    allowed: SIZE_UNITS,
                })
            }
        };
        n.checked_mul(per)
            .map(Self)
            .ok_or_else(|| UnitError::Overflow(input.into()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, per) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if n != 0 && n.is_multiple_of(per) {
                return write!(f, "{}{unit}", n / per);
            }
        }
        write!(f, "{n}B")
    }
}

macro_rules! serde_via_str {
    ($ty:ty, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        Err(E::custom(format!(
                            "`{v}` needs a unit and quotes, e.g. \"{v}s\" or \"{v}MiB\""
                        )))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

serde_via_str!(HumanDuration, "a duration string such as \"10s\" or \"5m\"");
serde_via_str!(ByteSize, "a size string such as \"512MiB\" or \"1M\"");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_durations() {
        assert_eq!(
            "10s".parse::<HumanDuration>().unwrap().as_std().as_secs(),
            10
        );
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().as_std().as_secs(),
            300
        );
        assert_eq!(
            "250ms"
                .parse::<HumanDuration>()
                .unwrap()
                .as_std()
                .as_millis(),
            250
        );
        assert_eq!("2h".parse::<HumanDuration>().unwrap().to_string(), "2h");
        assert_eq!("90s".parse::<HumanDuration>().unwrap().to_string(), "90s");
    }

    #[test]
    fn rejects_bad_durations_with_reason() {
        let e = "10 parsecs"
            .parse::<HumanDuration>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        let e = "soon".parse::<HumanDuration>().unwrap_err().to_string();
        assert!(e.contains("has no number"), "{e}");
        let e = "99999999999999999d".parse::<HumanDuration>().unwrap_err();
        assert!(matches!(e, UnitError::Overflow(_)));
    }

    #[test]
    fn parses_sizes_iec_and_si() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().as_u64(), 512 << 20);
        assert_eq!("1M".parse::<ByteSize>().unwrap().as_u64(), 1_000_000);
        assert_eq!("4096".parse::<ByteSize>().unwrap().as_u64(), 4096);
        assert_eq!("1Gi".parse::<ByteSize>().unwrap().to_string(), "1GiB");
        assert!("3 furlongs".parse::<ByteSize>().is_err());
    }

    proptest! {
        #[test]
        fn duration_display_round_trips(ms in 0u64..10_000_000_000) {
            let d = HumanDuration(std::time::Duration::from_millis(ms));
            prop_assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
        }

        #[test]
        fn size_display_round_trips(n in any::<u64>()) {
            let s = ByteSize(n);
            prop_assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
        }

        #[test]
        fn unit_parsers_never_panic(s in "\\PC{0,24}") {
            let _ = s.parse::<ByteSize>();
            let _ = s.parse::<HumanDuration>();
        }
    }
}
