//! RFC 3339 timestamps (UTC, microseconds) without a date-time dependency.
//!
//! Records carry `time` as fixed-width `YYYY-MM-DDTHH:MM:SS.ffffffZ` so that the canonical form is
//! unique and lexical order equals time order; review filters accept any RFC 3339 time or a
//! relative age such as `15m`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

fn num(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} `{s}`"));
    }
    s.parse().map_err(|_| format!("bad {what} `{s}`"))
}

/// Parses an RFC 3339 date-time (`2026-01-02T03:04:05Z`, optional fraction, `Z` or `±hh:mm`) into
/// microseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let err = |m: String| format!("`{s}` is not an RFC 3339 time: {m}");
    if !s.is_ascii() || s.len() < 20 {
        return Err(err("expected YYYY-MM-DDTHH:MM:SSZ".into()));
    }
    let b = s.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return Err(err("expected YYYY-MM-DDTHH:MM:SSZ".into()));
    }
    if b[16] != b':' {
        return Err(err("expected YYYY-MM-DDTHH:MM:SSZ".into()));
    }
    let y = num(&s[0..4], "year").map_err(err)?;
    let mo = num(&s[5..7], "month").map_err(err)?;
    let d = num(&s[8..10], "day").map_err(err)?;
    let h = num(&s[11..13], "hour").map_err(err)?;
    let mi = num(&s[14..16], "minute").map_err(err)?;
    let se = num(&s[17..19], "second").map_err(err)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(err("field out of range".into()));
    }
    let mut rest = &s[19..];
    let mut frac_us: i64 = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(err("empty fraction".into()));
        }
        let digits = &r[..n];
        let mut us = String::from(&digits[..n.min(6)]);
        while us.len() < 6 {
            us.push('0');
        }
        frac_us = us.parse::<i64>().map_err(|e| err(e.to_string()))?;
        rest = &r[n..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh = num(&o[1..3], "offset hour").map_err(err)? as i64;
            let om = num(&o[4..6], "offset minute").map_err(err)? as i64;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(err("expected `Z` or an offset like +02:00".into())),
    };
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86_400 + (h as i64) * 3600 + (mi as i64) * 60 + se as i64 - offset_secs;
    Ok(secs * 1_000_000 + frac_us)
}

/// Parses a duration like `90s`, `15m`, `2h`, `7d` into microseconds.
pub fn parse_age(s: &str) -> Result<i64, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` needs a unit (s, m, h, d)"))?;
    let n: i64 = s[..split]
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 15m"))?;
    let unit = match &s[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        u => {
            return Err(format!(
                "unknown duration unit `{u}` in `{s}` (use s, m, h, d)"
            ))
        }
    };
    n.checked_mul(unit * 1_000_000)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Parses a filter bound: an RFC 3339 time, or an age (`15m`) meaning that long before now.
pub fn parse_bound(s: &str) -> Result<i64, String> {
    if s.contains('-') || s.contains(':') {
        parse_rfc3339(s)
    } else {
        Ok(now_micros() - parse_age(s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_times() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            parse_rfc3339("2026-11-22T22:41:34.5Z").unwrap(),
            1_795_387_294_500_000
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T23:41:34.5+01:00").unwrap(),
            1_795_387_294_500_000
        );
        assert_eq!(
            format_micros(1_795_387_294_500_000),
            "2026-11-22T22:41:34.500000Z"
        );
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_err());
        assert_eq!(parse_age("15m").unwrap(), 900_000_000);
        assert!(parse_age("15w").is_err());
    }

    proptest! {
        #[test]
        fn round_trip(us in -10_000_000_000_000_000i64..10_000_000_000_000_000i64) {
            prop_assert_eq!(parse_rfc3339(&format_micros(us)).unwrap(), us);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
            let _ = parse_bound(&s);
        }
    }
}
