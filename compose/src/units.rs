//! Durations, byte sizes and file modes as compose writes and prints them.
//!
//! Durations parse like Go's `time.ParseDuration` (`1m30s`, `1.5s`, `500ms`; a bare
//! number is seconds) and print like Go's `Duration.String` (`1m30s`, `1m0s`), which
//! is what `docker compose config` prints. Byte sizes parse like docker's
//! `RAMInBytes` (`50M` is 52428800; binary multiples) and print as the decimal number.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// Parses a Go duration string.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration {s:?}");
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let mult = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += n * mult;
        rest = tail;
    }
    if !nanos.is_finite() || nanos > 1e19 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

fn frac(mut v: u64, digits: u32) -> String {
    // `v` holds `digits` fractional digits; trailing zeros dropped.
    let mut s = String::new();
    let mut started = false;
    let mut out = Vec::new();
    for _ in 0..digits {
        let d = v % 10;
        v /= 10;
        if d != 0 || started {
            started = true;
            out.push(char::from(b'0' + d as u8));
        }
    }
    if !out.is_empty() {
        s.push('.');
        s.extend(out.iter().rev());
    }
    s
}

/// Formats like Go's `time.Duration.String`.
pub fn format_duration(d: Duration) -> String {
    let n = d.as_nanos() as u64;
    if n == 0 {
        return "0s".into();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}{}µs", n / 1_000, frac(n % 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}{}ms", n / 1_000_000, frac(n % 1_000_000, 6));
    }
    let secs = n / 1_000_000_000;
    let sub = frac(n % 1_000_000_000, 9);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{sub}s")
    } else if m > 0 {
        format!("{m}m{s}{sub}s")
    } else {
        format!("{s}{sub}s")
    }
}

/// `Option<Duration>` as a Go duration string (serde `with`).
pub(crate) mod opt_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 1m30s")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|s| Some(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if (0.0..1e10).contains(&v) {
                    Ok(Some(Duration::from_secs_f64(v)))
                } else {
                    Err(E::custom("invalid duration"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(Some).map_err(E::custom)
            }
        }
        d.deserialize_option(V)
    }
}

/// A size in bytes (`mem_limit`, `shm_size`, tmpfs `size`): parsed from `50M` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Parses docker's `RAMInBytes` syntax: a number, an optional space, an optional
/// binary unit `k`/`m`/`g`/`t`/`p` (any case) and an optional `i`/`b` suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid size {s:?}");
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_len);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v > 1.8e19 {
        return Err(bad());
    }
    Ok(v as u64)
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 512m or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                if (0.0..1.8e19).contains(&v) {
                    Ok(ByteSize(v as u64))
                } else {
                    Err(E::custom("invalid size"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_bytes(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A file mode printed in octal (`"0440"`), read from a number or an octal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0{:o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a file mode")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FileMode, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .map(FileMode)
                    .ok_or_else(|| E::custom("invalid file mode"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FileMode, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileMode, E> {
                u32::from_str_radix(v.trim(), 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .map(FileMode)
                    .ok_or_else(|| E::custom(format!("invalid file mode {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_round_trip() {
        for (i, o) in [
            ("60s", "1m0s"),
            ("120s", "2m0s"),
            ("1m30s", "1m30s"),
            ("10s", "10s"),
            ("1.5s", "1.5s"),
            ("500ms", "500ms"),
            ("1h", "1h0m0s"),
            ("0", "0s"),
        ] {
            assert_eq!(format_duration(parse_duration(i).unwrap()), o, "{i}");
        }
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ram_in_bytes() {
        assert_eq!(parse_bytes("50M").unwrap(), 52428800);
        assert_eq!(parse_bytes("20m").unwrap(), 20971520);
        assert_eq!(parse_bytes("1gb").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("10000").unwrap(), 10000);
        assert!(parse_bytes("ten").is_err());
    }
}
