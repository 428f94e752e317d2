//! Values of the command line: durations, sizes, rates, HTTP statuses and headers.

use std::time::Duration;

use crate::error::{UsageError, usage};

/// Whole milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// `--retry-on`: a comma-separated list of HTTP statuses.
pub fn parse_statuses(text: &str) -> Result<Vec<u16>, UsageError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(usage(
                "--retry-on",
                format!("`{s}` is not an HTTP status (100 to 599)"),
            )),
        })
        .collect()
}

/// `--header`: `Name: value`.
pub fn parse_header(text: &str) -> Result<(String, String), UsageError> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        // The value may be a secret: name only the part before it.
        _ => Err(usage("--header", "expected 'Name: value'")),
    }
}

/// Requests per second: a positive number, e.g. `200` or `0.5`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of requests per second"
        )),
    }
}

/// `65536`, `64KiB`, `64MiB`, `1GiB` (also KB, MB, GB as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 64MiB, 500KB, 1048576)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    match value.checked_mul(scale) {
        Some(0) => Err(format!("`{text}` must be more than zero")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("`{text}` is too large")),
    }
}

/// `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}` has an unknown unit: use ms, s, m or h")),
    };
    if seconds <= 0.0 || !seconds.is_finite() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["", "0", "-1s", "10x", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("500KB").unwrap(), 500_000);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        for bad in ["", "0", "12XB", "MiB", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_statuses_are_checked() {
        assert_eq!(parse_statuses("429, 503").unwrap(), [429, 503]);
        assert!(parse_statuses("429,abc").is_err());
        assert!(parse_statuses("700").is_err());
    }

    #[test]
    fn headers_need_a_name_and_a_colon() {
        assert_eq!(
            parse_header("Authorization: Bearer x").unwrap(),
            ("Authorization".into(), "Bearer x".into())
        );
        let err = parse_header("secret-token").unwrap_err().to_string();
        assert!(!err.contains("secret-token"));
        assert!(parse_header(": v").is_err());
    }
}
