//! `--fail-if` thresholds: `p99>50ms`, `errors>0.1%`, `rps<1000`... Any that holds
//! makes a load test exit with code 1, for use in CI.

use std::fmt;
use std::str::FromStr;

/// What a threshold looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// Service-time quantile (0.5 for p50), in microseconds.
    Quantile(f64),
    /// Mean service time, in microseconds.
    Mean,
    /// Longest service time, in microseconds.
    Max,
    /// Failed requests, as a count.
    Errors,
    /// Failed requests, as a share of all in percent.
    ErrorShare,
    /// Responses per second.
    Rps,
}

/// Comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// One `--fail-if` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    metric: Metric,
    op: Op,
    value: f64,
}

/// The measured values a threshold can look at.
pub struct Measured {
    /// Service-time quantile, in microseconds.
    pub quantile: Box<dyn Fn(f64) -> f64>,
    /// Mean service time, in microseconds.
    pub mean_us: f64,
    /// Longest service time, in microseconds.
    pub max_us: f64,
    /// Failed requests.
    pub errors: f64,
    /// All requests finished.
    pub requests: f64,
    /// Responses per second.
    pub rps: f64,
}

impl Threshold {
    /// Whether the threshold holds (the test fails) for `m`.
    pub fn breached(&self, m: &Measured) -> bool {
        let actual = self.actual(m);
        match self.op {
            Op::Gt => actual > self.value,
            Op::Ge => actual >= self.value,
            Op::Lt => actual < self.value,
            Op::Le => actual <= self.value,
        }
    }

    /// The measured value, in the threshold's own unit, for messages.
    pub fn actual(&self, m: &Measured) -> f64 {
        match self.metric {
            Metric::Quantile(q) => (m.quantile)(q),
            Metric::Mean => m.mean_us,
            Metric::Max => m.max_us,
            Metric::Errors => m.errors,
            Metric::ErrorShare => 100.0 * m.errors / m.requests.max(1.0),
            Metric::Rps => m.rps,
        }
    }

    /// A value in the threshold's unit, for people.
    pub fn show(&self, v: f64) -> String {
        match self.metric {
            Metric::Quantile(_) | Metric::Mean | Metric::Max => format!("{:.2}ms", v / 1e3),
            Metric::ErrorShare => format!("{v:.3}%"),
            Metric::Errors | Metric::Rps => format!("{v:.1}"),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact.find(['<', '>']).ok_or_else(|| {
            format!("`{text}` has no comparison: write e.g. p99>50ms or errors>0.1%")
        })?;
        let (name, rest) = compact.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            (Op::Lt, &rest[1..])
        };
        let latency = |q: Option<f64>, name: &str| -> Result<(Metric, f64), String> {
            let metric = match (q, name) {
                (Some(q), _) => Metric::Quantile(q),
                (None, "mean") => Metric::Mean,
                _ => Metric::Max,
            };
            Ok((
                metric,
                parse_time_us(value).ok_or_else(|| {
                    format!("`{text}`: `{value}` is not a time (e.g. 50ms, 1s, 800us)")
                })?,
            ))
        };
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("`{text}`: `{value}` is not a number"))
        };
        let (metric, value) = match name {
            "mean" | "max" => latency(None, name)?,
            "errors" => match value.strip_suffix('%') {
                Some(share) => (
                    Metric::ErrorShare,
                    share
                        .parse()
                        .map_err(|_| format!("`{text}`: `{value}` is not a share"))?,
                ),
                None => (Metric::Errors, number()?),
            },
            "rps" => (Metric::Rps, number()?),
            p if p.starts_with('p') => {
                let q: f64 = p[1..].parse().map_err(|_| unknown(text, name))?;
                if !(0.0..=100.0).contains(&q) {
                    return Err(unknown(text, name));
                }
                latency(Some(q / 100.0), name)?
            }
            _ => return Err(unknown(text, name)),
        };
        Ok(Threshold {
            text: text.to_owned(),
            metric,
            op,
            value,
        })
    }
}

fn unknown(text: &str, name: &str) -> String {
    format!("`{text}`: unknown metric `{name}`: use p50, p90, p99, p99.9, mean, max, errors or rps")
}

/// `50ms`, `1.5s`, `800us` in microseconds.
fn parse_time_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measured {
        Measured {
            quantile: Box::new(|q| q * 100_000.0),
            mean_us: 30_000.0,
            max_us: 200_000.0,
            errors: 3.0,
            requests: 1000.0,
            rps: 500.0,
        }
    }

    #[test]
    fn thresholds_compare_in_their_units() {
        let m = measured();
        let holds = |t: &str| t.parse::<Threshold>().unwrap().breached(&m);
        assert!(holds("p99>50ms")); // 99 ms
        assert!(!holds("p50 > 51ms")); // 50 ms
        assert!(holds("p99.9>=99.9ms"));
        assert!(holds("errors>0.1%")); // 0.3 %
        assert!(!holds("errors>5"));
        assert!(holds("rps<1000"));
        assert!(!holds("max>1s"));
        assert!(holds("mean>=30ms"));
    }

    #[test]
    fn bad_thresholds_say_what_is_wrong() {
        for (bad, says) in [
            ("p99", "no comparison"),
            ("p99>fast", "not a time"),
            ("q99>1ms", "unknown metric"),
            ("p101>1ms", "unknown metric"),
            ("rps>x", "not a number"),
        ] {
            let err = bad.parse::<Threshold>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
