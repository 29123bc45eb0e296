//! Units a person writes and reads: durations (`10s`, `500ms`) and sizes (`64K`, `1M`) on
//! the command line, byte counts (`1.2 MiB`) in log lines.

use std::time::Duration;

/// `10`, `1.5s`, `500ms`, `2m`, `1h`: a plain number is seconds. Below a nanosecond is
/// dropped; a billion seconds or more is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    // Nanoseconds per unit, as a fraction: the number's nanoseconds * numerator / denominator.
    let (numerator, denominator) = match unit {
        "" | "s" => (1, 1),
        "ms" => (1, 1000),
        "m" => (60, 1),
        "h" => (3600, 1),
        _ => return Err(format!("{text:?} has unknown unit {unit:?} (use ms, s, m or h)")),
    };
    let not_a_duration = || format!("{text:?} is not a duration");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.len() + fraction.len() == 0 || fraction.contains('.') || whole.len() > 10 {
        return Err(not_a_duration());
    }
    // Integers, not floating point: exact, and the binary carries no float formatting.
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| not_a_duration())? };
    let fraction_nanos =
        fraction.bytes().chain(std::iter::repeat(b'0')).take(9).fold(0, |n, digit| n * 10 + u128::from(digit - b'0'));
    let nanos = (whole * 1_000_000_000 + fraction_nanos) * numerator / denominator;
    if nanos >= 1_000_000_000 * 1_000_000_000 {
        return Err(not_a_duration());
    }
    Ok(Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32))
}

/// A duration as seconds with one decimal, rounded: `2.3`.
pub fn tenths_of_seconds(duration: Duration) -> String {
    let tenths = (duration.as_millis() + 50) / 100;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// `65536`, `64K`, `1M` (powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let upper = text.to_ascii_uppercase();
    let trimmed = upper.trim_end_matches("IB").trim_end_matches('B');
    let (number, scale) = match trimmed.char_indices().last() {
        Some((i, 'K')) => (&trimmed[..i], 1024),
        Some((i, 'M')) => (&trimmed[..i], 1024 * 1024),
        _ => (trimmed, 1),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| format!("{text:?} is not a size (like 65536, 64K or 1M)"))
}

/// Bytes in the units a person reads: `512 B`, `1.2 MiB` (one decimal, rounded).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let unit = (1..UNITS.len()).rev().find(|&unit| n >> (10 * unit) > 0).unwrap_or(0);
    if unit == 0 {
        return format!("{n} B");
    }
    let scale = 1u128 << (10 * unit);
    let tenths = (u128::from(n) * 10 + scale / 2) / scale;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0.5ms"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1.0000000019"), Ok(Duration::new(1, 1)), "below a nanosecond is dropped");
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("999999999"), Ok(Duration::from_secs(999_999_999)));
        for bad in ["-1", "", "1d", ".", "1.2.3", "1e3", "1000000000", "16666667m", "99999999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert!(parse_size("9999999999999M").is_err());
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(35 * 1024 * 1024), "35.0 MiB");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1_258_291), "1.2 MiB");
        assert_eq!(human_bytes(1_300_000), "1.2 MiB");
        assert_eq!(human_bytes(1_310_720), "1.3 MiB", "1.25 rounds up");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn tenths_of_seconds_round() {
        assert_eq!(tenths_of_seconds(Duration::ZERO), "0.0");
        assert_eq!(tenths_of_seconds(Duration::from_millis(2349)), "2.3");
        assert_eq!(tenths_of_seconds(Duration::from_millis(2350)), "2.4");
        assert_eq!(tenths_of_seconds(Duration::from_secs(3600)), "3600.0");
    }
}
