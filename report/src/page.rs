//! The report page: a summary, the charts and the per-host table, in one HTML file.

use std::fmt::Write as _;

use crate::chart::{self, PALETTE, RED, Series, escape};
use crate::model::{Kind, Run, Second};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:800px;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}\
td:first-child,th:first-child{text-align:left}\
svg.chart{width:100%;height:auto;background:#fff}\
svg .tick,svg .legend{font-size:11px;fill:#444}\
svg .label{font-size:11px;fill:#666}";

/// The page for `run`.
pub fn render(run: &Run) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        escape(&run.title),
        escape(&run.title)
    );
    html.push_str(&summary(run));
    let unit = match run.kind {
        Kind::Scrape => "batches",
        Kind::Load { .. } => "requests",
    };
    let (title, svg) = throughput(run, unit);
    figure(&mut html, &title, &svg);
    let title = "Latency percentiles";
    let svg = chart::lines(title, "second of the run", "ms", &latency(run));
    figure(&mut html, title, &svg);
    if let Kind::Load { rate: Some(rate) } = run.kind {
        let title =
            format!("Latency at --rate {rate}/s: measured, and from the intended send time");
        let svg = chart::lines(&title, "second of the run", "ms", &intended(run));
        figure(&mut html, &title, &svg);
    }
    let title = "Latency histogram (log-spaced buckets, upper bounds in ms)";
    let buckets: Vec<(String, f64)> = run
        .latency
        .iter()
        .map(|(upper, n)| (format!("≤{}", ms(*upper)), *n as f64))
        .collect();
    figure(
        &mut html,
        title,
        &chart::bars(title, unit, PALETTE[2], &buckets),
    );
    let title = "Status codes and errors";
    let svg = chart::stacked(title, "second of the run", unit, &statuses(run));
    figure(&mut html, title, &svg);
    let title = "Share of each worker";
    let workers: Vec<(String, f64)> = run
        .workers
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("worker {i}"), *n as f64))
        .collect();
    figure(
        &mut html,
        title,
        &chart::bars(title, unit, PALETTE[1], &workers),
    );
    html.push_str(&hosts(run));
    html.push_str("</body></html>\n");
    html
}

/// `f` of every second of `run`, as `(second, value)` points.
fn over_time(run: &Run, f: impl Fn(&Second) -> Option<f64>) -> Vec<(f64, f64)> {
    run.seconds
        .iter()
        .enumerate()
        .filter_map(|(i, s)| f(s).map(|v| (i as f64, v)))
        .collect()
}

fn throughput(run: &Run, unit: &str) -> (String, String) {
    let series = [
        Series {
            name: "ok".into(),
            color: PALETTE[0],
            points: over_time(run, |s| Some(s.ok as f64)),
        },
        Series {
            name: "failed".into(),
            color: RED,
            points: over_time(run, |s| Some(s.failed as f64)),
        },
    ];
    let title = "Throughput".to_owned();
    let svg = chart::lines(&title, "second of the run", &format!("{unit}/s"), &series);
    (title, svg)
}

fn latency(run: &Run) -> Vec<Series<'static>> {
    ["p50", "p90", "p99"]
        .iter()
        .enumerate()
        .map(|(i, name)| Series {
            name: (*name).into(),
            color: PALETTE[i],
            points: over_time(run, |s| s.latency_ms.map(|l| l[i])),
        })
        .collect()
}

fn intended(run: &Run) -> Vec<Series<'static>> {
    vec![
        Series {
            name: "p99 measured".into(),
            color: PALETTE[0],
            points: over_time(run, |s| s.latency_ms.map(|l| l[2])),
        },
        Series {
            name: "p99 from intended send".into(),
            color: PALETTE[3],
            points: over_time(run, |s| s.intended_ms.map(|l| l[1])),
        },
    ]
}

/// A layer per status code (4xx pale red, 5xx red) and per cause of failure.
fn statuses(run: &Run) -> Vec<Series<'static>> {
    let mut codes: Vec<u16> = run
        .seconds
        .iter()
        .flat_map(|s| s.statuses.keys().copied())
        .collect();
    codes.sort_unstable();
    codes.dedup();
    let mut causes: Vec<String> = run
        .seconds
        .iter()
        .flat_map(|s| s.errors.keys().cloned())
        .collect();
    causes.sort_unstable();
    causes.dedup();
    let mut layers: Vec<Series<'static>> = codes
        .iter()
        .enumerate()
        .map(|(i, &code)| Series {
            name: code.to_string(),
            color: match code {
                500.. => RED,
                400.. => "#ff9896",
                _ => PALETTE[i % PALETTE.len()],
            },
            points: over_time(run, |s| {
                Some(s.statuses.get(&code).copied().unwrap_or(0) as f64)
            }),
        })
        .collect();
    layers.extend(causes.into_iter().enumerate().map(|(i, cause)| Series {
        color: ["#7f7f7f", "#bcbd22", "#e377c2", "#393b79"][i % 4],
        points: over_time(run, |s| {
            Some(s.errors.get(&cause).copied().unwrap_or(0) as f64)
        }),
        name: cause,
    }));
    layers
}

fn figure(html: &mut String, caption: &str, svg: &str) {
    let _ = write!(html, "<h2>{}</h2><figure>{svg}</figure>", escape(caption));
}

fn summary(run: &Run) -> String {
    let ok: u64 = run.seconds.iter().map(|s| s.ok).sum();
    let failed: u64 = run.seconds.iter().map(|s| s.failed).sum();
    let bytes: u64 = run.seconds.iter().map(|s| s.bytes).sum();
    let secs = run.seconds.len().max(1) as f64;
    let what = match run.kind {
        Kind::Scrape => "batches stored",
        Kind::Load { .. } => "responses",
    };
    let mut out = format!(
        "<table class=\"summary\"><tr><td>{what}</td><td>{ok}</td></tr><tr><td>failed</td><td>{failed}</td></tr><tr><td>body bytes</td><td>{bytes}</td></tr><tr><td>seconds</td><td>{}</td></tr><tr><td>mean rate</td><td>{:.1}/s</td></tr>",
        run.seconds.len(),
        (ok + failed) as f64 / secs
    );
    if run.unreadable > 0 {
        let _ = write!(
            out,
            "<tr><td>unreadable input lines</td><td>{}</td></tr>",
            run.unreadable
        );
    }
    out.push_str("</table>");
    out
}

fn hosts(run: &Run) -> String {
    if run.hosts.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Hosts</h2><table class=\"hosts\"><tr><th>host</th><th>requests</th><th>failed</th><th>bytes</th><th>p50</th></tr>",
    );
    for h in &run.hosts {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>",
            escape(&h.name),
            h.requests,
            h.failed,
            h.bytes,
            ms(h.p50_ms)
        );
    }
    out.push_str("</table>");
    out
}

/// Milliseconds with as many decimals as they need.
fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_every_chart_and_the_hosts() {
        let manifest = r#"{"index":0,"start":0,"end":1,"url":"http://a/x","status":200,"bytes":10,"elapsed_ms":3.0,"attempts":1,"worker":0,"at_ms":5000,"file":"f"}
{"index":1,"start":1,"end":2,"url":"http://a/<b>","status":404,"bytes":0,"elapsed_ms":5.0,"attempts":1,"worker":1,"at_ms":6200,"error":"HTTP 404 Not Found"}
"#;
        let run = Run::from_manifest(manifest.as_bytes(), "run <1>").unwrap();
        let html = render(&run);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.contains("run &lt;1&gt;") && !html.contains("run <1>"));
        assert!(html.contains("<td>http://a</td>"));
        assert!(!html.contains("<script"), "a report needs no script");
    }
}
