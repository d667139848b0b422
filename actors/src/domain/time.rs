//! Time as the gateway and the TypeScript bot write it: Discord's RFC 3339 timestamps in,
//! ISO-8601 processing times and the `ms` package's durations out.

use std::time::SystemTime;

/// Parses an ISO-8601 / RFC 3339 timestamp (`2099-01-01T00:00:00.000000+00:00`, `...Z`) to Unix
/// milliseconds.
pub(crate) fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let padded: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
        millis = padded.parse().ok()?;
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// ISO-8601 UTC with milliseconds, as JavaScript's `toISOString()`; sorts as text.
pub fn iso8601(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A duration as the TypeScript bot writes it (the `ms` package's long format):
/// "10 minutes", "1 hour", "3 days".
pub(crate) fn human_duration(ms: i64) -> String {
    const S: f64 = 1000.0;
    const M: f64 = S * 60.0;
    const H: f64 = M * 60.0;
    const D: f64 = H * 24.0;
    let value = ms as f64;
    let abs = value.abs();
    let plural = |unit: f64, name: &str| {
        let n = (value / unit).round();
        format!("{n} {name}{}", if abs >= unit * 1.5 { "s" } else { "" })
    };
    if abs >= D {
        plural(D, "day")
    } else if abs >= H {
        plural(H, "hour")
    } else if abs >= M {
        plural(M, "minute")
    } else if abs >= S {
        plural(S, "second")
    } else {
        format!("{ms} ms")
    }
}

/// The wall clock in Unix milliseconds (0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_ms() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp_ms("2025-01-05T00:43:47.557+00:00"),
            Some(1736037827557)
        );
        assert_eq!(
            parse_timestamp_ms("2025-01-05T02:43:47.557+02:00"),
            Some(1736037827557)
        );
        assert_eq!(
            parse_timestamp_ms("2099-01-01T00:00:00.000000+00:00"),
            Some(4070908800000)
        );
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }

    #[test]
    fn durations_read_like_the_ms_package() {
        assert_eq!(human_duration(600_000), "10 minutes");
        assert_eq!(human_duration(60_000), "1 minute");
        assert_eq!(human_duration(89_000), "1 minute");
        assert_eq!(human_duration(90_000), "2 minutes");
        assert_eq!(human_duration(3 * 86_400_000), "3 days");
        assert_eq!(human_duration(500), "500 ms");
    }
}
