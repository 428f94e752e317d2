//! Numbers as people and scripts read them: rounded to what is meaningful. Times in
//! milliseconds keep microseconds (3 decimals), seconds keep milliseconds, rates one
//! decimal; rates in text lose their decimals once they are large.

use std::fmt::Write as _;

/// Decimals of a time in milliseconds (microseconds: the histograms' unit).
pub const MS_DECIMALS: i32 = 3;
/// Decimals of a time in seconds (milliseconds).
pub const S_DECIMALS: i32 = 3;
/// Decimals of a rate per second, or of a time in microseconds.
pub const RATE_DECIMALS: i32 = 1;

/// `x` rounded to `decimals` places, so that JSON prints it with at most that many.
/// Infinities and NaN stay as they are.
pub fn round(x: f64, decimals: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(decimals);
    let rounded = (x * scale).round() / scale;
    // -0.0 would print as "-0.0".
    if rounded == 0.0 { 0.0 } else { rounded }
}

/// A time in milliseconds, to the microsecond.
pub fn ms(x: f64) -> f64 {
    round(x, MS_DECIMALS)
}

/// Microseconds as milliseconds.
pub fn us_as_ms(us: u64) -> f64 {
    ms(us as f64 / 1e3)
}

/// A time in seconds, to the millisecond.
pub fn secs(x: f64) -> f64 {
    round(x, S_DECIMALS)
}

/// A rate per second (or a time in µs), to a tenth.
pub fn rate(x: f64) -> f64 {
    round(x, RATE_DECIMALS)
}

/// A rate for people: `12.5/s` below 100, `1,365/s` from there on.
pub fn rate_text(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "-/s".to_owned();
    }
    if per_sec < 100.0 {
        return format!("{per_sec:.1}/s");
    }
    format!("{}/s", thousands(per_sec.round() as u64))
}

/// `n` with a comma between each group of three digits.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        let _ = write!(out, "{c}");
    }
    out
}

/// Every number in `value` (as serialized) with more decimals than `allowed` says its
/// key may have, as `path: text`; `allowed` gets the key and the number's text.
#[cfg(test)]
pub fn too_precise(value: &serde_json::Value, allowed: &dyn Fn(&str) -> i32) -> Vec<String> {
    fn walk(
        value: &serde_json::Value,
        path: &str,
        key: &str,
        allowed: &dyn Fn(&str) -> i32,
        found: &mut Vec<String>,
    ) {
        match value {
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                let decimals = match text.split_once('.') {
                    Some((_, fraction)) => {
                        assert!(!fraction.contains('e'), "{path}: {text} in exponent form");
                        fraction.len() as i32
                    }
                    None => 0,
                };
                if text.contains('e') || decimals > allowed(key) {
                    found.push(format!("{path}: {text}"));
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), key, allowed, found);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    // Inside `latency_ms: {p50, …}` the unit is the object's.
                    let key = if key.ends_with("_ms") && !k.ends_with("_ms") && k != "count" {
                        key
                    } else {
                        k.as_str()
                    };
                    walk(v, &format!("{path}.{k}"), key, allowed, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    // Through the serializer, as a script reads it.
    let text = serde_json::to_string(value).expect("a Value serializes");
    let reparsed: serde_json::Value = serde_json::from_str(&text).expect("it parses back");
    walk(&reparsed, "", "", allowed, &mut found);
    found
}

/// The decimals a key of a summary may have, by its unit.
#[cfg(test)]
pub fn decimals_by_unit(key: &str) -> i32 {
    if key.ends_with("_ms") {
        MS_DECIMALS
    } else if key.ends_with("_s") {
        S_DECIMALS
    } else if key.ends_with("per_s") || key == "rps" || key == "rate" || key.contains("_us_per_") {
        RATE_DECIMALS
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::RunStats;
    use shared::plan::Batch;
    use shared::protocol::{JobReport, Outcome, WorkerStats};

    #[test]
    fn rounding_keeps_what_is_meaningful() {
        assert_eq!(ms(0.773_999_999_999_999_9).to_string(), "0.774");
        assert_eq!(us_as_ms(1_234_567).to_string(), "1234.567");
        assert_eq!(rate(1364.9276).to_string(), "1364.9");
        assert_eq!(round(-0.0001, 3).to_string(), "0");
        assert!(round(f64::NAN, 3).is_nan());
        assert_eq!(serde_json::json!(ms(0.1 + 0.2)).to_string(), "0.3");
    }

    #[test]
    fn rates_in_text_lose_their_decimals_when_large() {
        assert_eq!(rate_text(1364.9276), "1,365/s");
        assert_eq!(rate_text(12.345), "12.3/s");
        assert_eq!(rate_text(0.0), "0.0/s");
        assert_eq!(rate_text(1_234_567.8), "1,234,568/s");
        assert_eq!(rate_text(f64::INFINITY), "-/s");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn the_scrape_summary_has_no_number_with_more_decimals_than_its_unit_allows() {
        let mut stats = RunStats::new(2);
        for i in 0..1000u64 {
            // Latencies that are not round in ms: 773 µs, 1,777 µs, ...
            let report = JobReport {
                batch: Batch::single(i),
                url: format!("http://h/{i}"),
                status: Some(200),
                bytes: 1000 + i,
                elapsed_us: 773 + i * 1001,
                attempts: 1,
                outcome: if i % 7 == 0 {
                    Outcome::Failed {
                        error: "HTTP 500".into(),
                    }
                } else {
                    Outcome::Saved { file: "f".into() }
                },
                chain: None,
                validators: Default::default(),
            };
            stats.record((i % 2) as usize, &report);
        }
        stats.add_worker_stats(
            0,
            WorkerStats {
                requests: 1000,
                max_loop_lag_us: 1_234_567,
            },
        );
        let json = stats.to_json(Some("stopped by SIGINT"), 130);
        let found = too_precise(&json, &decimals_by_unit);
        assert!(found.is_empty(), "too many decimals: {found:?}\n{json}");
        // The check does look: a raw float fails it.
        let raw = serde_json::json!({ "latency_ms": { "p50": 0.773_999_999_999_999_9 } });
        assert_eq!(too_precise(&raw, &decimals_by_unit).len(), 1);
        let raw = serde_json::json!({ "pages_per_s": 1364.9276 });
        assert_eq!(too_precise(&raw, &decimals_by_unit).len(), 1);
    }
}
