//! The Prometheus text exposition format (version 0.0.4), written by hand: a family is
//! a `# HELP` and a `# TYPE` line, then one line per sample, `name{label="value"} 1`.
//!
//! The well-kept Rust client (`prometheus-client`) has no summary type, and a summary
//! is what quantiles read from an HDR histogram are; the format itself is a few lines.

use std::fmt::Write as _;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type, as the `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (a run's totals).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Quantiles, with `_sum` and `_count`.
    Summary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// A page of metric families being written.
#[derive(Default)]
pub struct Page {
    out: String,
}

impl Page {
    /// An empty page.
    pub fn new() -> Page {
        Page::default()
    }

    /// Starts the family `name`: its help and type lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Page {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
        self
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) -> &mut Page {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Value) -> &mut Page {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A summary family in seconds from microsecond `quantiles` (`(q, µs)`, `None`
    /// when nothing was observed: then `NaN`), the sum of all observations in seconds
    /// and their count.
    pub fn summary_seconds(
        &mut self,
        name: &str,
        help: &str,
        quantiles: &[(&str, Option<u64>)],
        sum_seconds: f64,
        count: u64,
    ) -> &mut Page {
        self.family(name, Kind::Summary, help);
        for (q, us) in quantiles {
            let value = us.map_or(f64::NAN, |us| us as f64 / 1e6);
            self.sample(name, &[("quantile", q)], value);
        }
        self.sample(&format!("{name}_sum"), &[], sum_seconds);
        self.sample(&format!("{name}_count"), &[], count)
    }

    /// The page's text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A sample's value.
pub trait Value {
    /// Appends the value as the format spells it.
    fn write_to(&self, out: &mut String);
}

impl Value for u64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// Label values escape `\`, `"` and line feeds.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let mut page = Page::new();
        page.family("x_total", Kind::Counter, "Things.\nCounted.")
            .sample("x_total", &[("host", "a\"b\\c\nd"), ("k", "v")], 3u64);
        page.single("y", Kind::Gauge, "A gauge.", 0.25);
        page.summary_seconds(
            "z_seconds",
            "Times.",
            &[("0.5", Some(1500)), ("0.99", None)],
            2.5,
            4,
        );
        assert_eq!(
            page.finish(),
            "# HELP x_total Things.\\nCounted.\n# TYPE x_total counter\n\
             x_total{host=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\n\
             # HELP y A gauge.\n# TYPE y gauge\ny 0.25\n\
             # HELP z_seconds Times.\n# TYPE z_seconds summary\n\
             z_seconds{quantile=\"0.5\"} 0.0015\nz_seconds{quantile=\"0.99\"} NaN\n\
             z_seconds_sum 2.5\nz_seconds_count 4\n"
        );
    }
}
