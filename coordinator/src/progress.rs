//! Live progress on stderr: a bar on a terminal, a plain line every few seconds
//! otherwise (logs, CI), nothing with --quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::{messages, numbers, terminal};

/// Time between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Redraws of the bar a second, at most (but for lines printed above it).
const HZ: u8 = 10;
/// Time between redraws of the bar.
const DRAW_EVERY: Duration = Duration::from_millis(1000 / HZ as u64);

/// The progress display.
pub enum Progress {
    /// An indicatif bar on a terminal.
    /// (and the batches done before this invocation).
    Bar(ProgressBar, u64),
    /// Periodic plain lines.
    Plain {
        /// Batches in all, when known.
        total: Option<u64>,
        /// Batches done before this invocation (by the run a resume continues).
        before: u64,
        /// When the run started.
        started: Instant,
        /// When the last line was printed.
        last: Instant,
    },
    /// Nothing.
    Off,
}

impl Progress {
    /// The display that suits stderr.
    pub fn new(total: Option<u64>, before: u64, quiet: bool) -> Progress {
        if quiet {
            return Progress::Off;
        }
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            return Progress::Plain {
                total,
                before,
                started: now,
                last: now,
            };
        }
        let bar = ProgressBar::with_draw_target(total, terminal::stderr_target(HZ));
        let template = if total.is_some() {
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} batches · {rate} · ETA {eta} · {msg}"
        } else {
            "{elapsed_precise} {spinner} {human_pos} batches · {rate} · {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> ").with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&numbers::rate_text(state.per_sec()));
                },
            ));
        }
        // Drawn by a clock, not by every batch: at most HZ times a second, whatever
        // the rate (indicatif's own limit lets bursts of 20 through).
        bar.enable_steady_tick(DRAW_EVERY);
        bar.set_message("0 failed");
        // A resume starts where the run it continues stopped; its rate is its own.
        bar.set_position(before);
        bar.reset_eta();
        messages::show_bar(&bar);
        Progress::Bar(bar, before)
    }

    /// Shows the counts after a batch finished.
    pub fn update(&mut self, done: u64, failed: u64) {
        match self {
            Progress::Bar(bar, before) => {
                bar.set_position(*before + done);
                // A new message draws at once: only when it changed.
                if failed > 0 {
                    let message = format!("{failed} failed");
                    if bar.message() != message {
                        bar.set_message(message);
                    }
                }
            }
            Progress::Plain {
                total,
                before,
                started,
                last,
            } => {
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    let line = plain_line(*before, done, failed, *total, started.elapsed());
                    messages::line(line);
                }
            }
            Progress::Off => {}
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Progress::Bar(bar, _) = self {
            messages::hide_bar();
            bar.finish_and_clear();
        }
    }
}

/// A plain progress line: `before` batches were done by earlier invocations (a
/// resume's), `done` by this one, at the rate this one goes.
fn plain_line(
    before: u64,
    done: u64,
    failed: u64,
    total: Option<u64>,
    elapsed: Duration,
) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let all = before + done;
    let this = if before > 0 {
        format!(" ({done} in this invocation)")
    } else {
        String::new()
    };
    match total {
        Some(total) => {
            let left = total.saturating_sub(all) as f64;
            let eta = if rate > 0.0 {
                format!("{:.0}s", left / rate)
            } else {
                "?".into()
            };
            format!(
                "progress: {all}/{total} batches ({:.1}%){this}, {rate:.1} pages/s, {failed} failed, ETA {eta}",
                100.0 * all as f64 / total.max(1) as f64
            )
        }
        None => format!("progress: {all} batches{this}, {rate:.1} pages/s, {failed} failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_shows_share_rate_and_eta() {
        let line = plain_line(0, 250, 3, Some(1000), Duration::from_secs(5));
        assert_eq!(
            line,
            "progress: 250/1000 batches (25.0%), 50.0 pages/s, 3 failed, ETA 15s"
        );
        let open = plain_line(0, 10, 0, None, Duration::from_secs(2));
        assert_eq!(open, "progress: 10 batches, 5.0 pages/s, 0 failed");
        let resumed = plain_line(600, 250, 0, Some(1000), Duration::from_secs(5));
        assert_eq!(
            resumed,
            "progress: 850/1000 batches (85.0%) (250 in this invocation), 50.0 pages/s, 0 failed, ETA 3s"
        );
    }
}
