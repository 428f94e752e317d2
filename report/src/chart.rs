//! Charts as inline SVG: lines over time, stacked bars over time, and plain bars. Each
//! is one `<svg>` element with its axes, ticks, labels and legend (its title is the
//! page's caption above it, and the element's `<title>`), drawn at a fixed size and
//! scaled by the browser.

use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

/// Colours that stay apart from each other, and from red, which marks failures.
pub const PALETTE: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
];
/// The colour of failures.
pub const RED: &str = "#d62728";

/// One named series of a chart.
pub struct Series<'a> {
    /// Its name, for the legend.
    pub name: String,
    /// Its colour.
    pub color: &'a str,
    /// Its values: `(x, y)` for lines, one `y` per bar for bars.
    pub points: Vec<(f64, f64)>,
}

/// Lines over `x`, for series of `(x, y)` points.
pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (x_max, y_max) = all.fold((0.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let frame = Frame::new(x_max.max(1.0), y_max);
    let mut svg = frame.open(title, x_label, y_label);
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", frame.x(x), frame.y(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.color,
            path.join(" ")
        );
    }
    svg.push_str(&legend(series));
    svg.push_str("</svg>");
    svg
}

/// Bars stacked per second: one stack per `x`, a layer per series.
pub fn stacked(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let mut totals: Vec<(f64, f64)> = Vec::new();
    for s in series {
        for &(x, y) in &s.points {
            match totals.iter_mut().find(|t| t.0 == x) {
                Some(t) => t.1 += y,
                None => totals.push((x, y)),
            }
        }
    }
    let x_max = totals.iter().map(|t| t.0).fold(0.0, f64::max) + 1.0;
    let y_max = totals.iter().map(|t| t.1).fold(0.0, f64::max);
    let frame = Frame::new(x_max, y_max);
    let mut svg = frame.open(title, x_label, y_label);
    let width = ((frame.x(1.0) - frame.x(0.0)) * 0.9).max(1.0);
    let mut base: Vec<(f64, f64)> = Vec::new();
    for s in series {
        for &(x, y) in &s.points {
            if y <= 0.0 {
                continue;
            }
            let below = match base.iter_mut().find(|b| b.0 == x) {
                Some(b) => {
                    let at = b.1;
                    b.1 += y;
                    at
                }
                None => {
                    base.push((x, y));
                    0.0
                }
            };
            let (top, bottom) = (frame.y(below + y), frame.y(below));
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{:.1}" y="{top:.1}" width="{width:.1}" height="{:.1}" fill="{}"><title>{}: {y} at {x} s</title></rect>"#,
                frame.x(x),
                (bottom - top).max(0.5),
                s.color,
                escape(&s.name),
            );
        }
    }
    svg.push_str(&legend(series));
    svg.push_str("</svg>");
    svg
}

/// One bar per label.
pub fn bars(title: &str, y_label: &str, color: &str, bars: &[(String, f64)]) -> String {
    let y_max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let frame = Frame::new(bars.len().max(1) as f64, y_max);
    let mut svg = frame.open_without_x(title, y_label);
    let width = (frame.x(1.0) - frame.x(0.0)) * 0.8;
    // Label every bar while they fit, every n-th after that.
    let every = (bars.len() / 16).max(1);
    for (i, (label, value)) in bars.iter().enumerate() {
        let (x, top) = (frame.x(i as f64), frame.y(*value));
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{top:.1}" width="{width:.1}" height="{:.1}" fill="{color}"><title>{}: {value}</title></rect>"#,
            (frame.y(0.0) - top).max(0.5),
            escape(label),
        );
        if i % every == 0 {
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + width / 2.0,
                HEIGHT - BOTTOM + 16.0,
                escape(label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The plot area and its scales.
struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn new(x_max: f64, y_max: f64) -> Frame {
        Frame {
            x_max,
            y_max: nice_ceiling(y_max),
        }
    }

    fn x(&self, x: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * x / self.x_max
    }

    fn y(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * y / self.y_max
    }

    /// The `<svg>` start with its title, axes and ticks.
    fn open(&self, title: &str, x_label: &str, y_label: &str) -> String {
        let mut svg = self.open_without_x(title, y_label);
        // Seconds: whole ticks only.
        for x in ticks(self.x_max).into_iter().filter(|x| x.fract() == 0.0) {
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                self.x(x),
                HEIGHT - BOTTOM + 16.0,
                number(x)
            );
        }
        let _ = write!(
            svg,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 6.0,
            escape(x_label)
        );
        svg
    }

    fn open_without_x(&self, title: &str, y_label: &str) -> String {
        let mut svg = format!(
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" role="img"><title>{}</title>"#,
            escape(title)
        );
        for y in ticks(self.y_max) {
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                self.y(y),
                self.y(y),
                LEFT - 6.0,
                self.y(y) + 4.0,
                number(y)
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}" stroke="#444"/><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#444"/>"##,
            HEIGHT - BOTTOM,
            WIDTH - RIGHT,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM,
        );
        let _ = write!(
            svg,
            r#"<text class="label" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            escape(y_label)
        );
        svg
    }
}

fn legend(series: &[Series<'_>]) -> String {
    let mut out = String::new();
    let mut x = WIDTH - RIGHT;
    for s in series.iter().rev() {
        let width = 18.0 + 7.0 * s.name.chars().count() as f64;
        x -= width + 12.0;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="8" width="12" height="12" fill="{}"/><text class="legend" x="{:.1}" y="18">{}</text>"#,
            s.color,
            x + 16.0,
            escape(&s.name)
        );
    }
    out
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `v` (1 for nothing).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let step = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * step)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * step)
}

/// About five round ticks from 0 to `max`.
fn ticks(max: f64) -> Vec<f64> {
    let step = nice_ceiling(max / 5.0);
    (0..=10)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= max * 1.000_1)
        .collect()
}

/// A number as people write it on an axis: no trailing zeros, thousands as k.
fn number(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{}k", number(v / 1000.0))
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Text made safe for SVG and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_take_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(ticks(10.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(number(2_500.0), "2500");
        assert_eq!(number(25_000.0), "25k");
        assert_eq!(number(0.25), "0.25");
    }

    #[test]
    fn charts_are_svg_with_their_data_and_escaped_text() {
        let series = [Series {
            name: "p50 <ms>".into(),
            color: PALETTE[0],
            points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
        }];
        let svg = lines("latency", "s", "ms", &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("p50 &lt;ms&gt;") && !svg.contains("p50 <ms>"));
        let svg = stacked("statuses", "s", "n", &series);
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        let svg = bars(
            "share",
            "n",
            PALETTE[1],
            &[("w0".into(), 3.0), ("w1".into(), 0.0)],
        );
        assert_eq!(svg.matches("class=\"bar\"").count(), 2);
    }
}
