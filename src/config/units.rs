//! Units a person writes and reads: durations (`10s`, `500ms`) and sizes (`64K`, `1M`) on
//! the command line, byte counts (`1.2 MiB`) in log lines.

use std::time::Duration;

/// `10`, `1.5s`, `500ms`, `2m`, `1h`: a plain number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?} has unknown unit {unit:?} (use ms, s, m or h)")),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * scale < 1e9 => Ok(Duration::from_secs_f64(n * scale)),
        _ => Err(format!("{text:?} is not a duration")),
    }
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

/// Bytes in the units a person reads: `512 B`, `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err() && parse_duration("").is_err() && parse_duration("1d").is_err());
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert!(parse_size("9999999999999M").is_err());
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(35 * 1024 * 1024), "35.0 MiB");
    }
}
