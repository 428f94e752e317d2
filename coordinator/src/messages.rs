//! Every line the coordinator writes to stderr goes through here: warnings, worker
//! output, progress lines, summaries. While a progress bar is drawn, a line is printed
//! above it (the bar is suspended, then redrawn), never through it.

use std::fmt::Display;
use std::sync::Mutex;

use indicatif::ProgressBar;

/// The bar on screen, if any.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Lines are printed above `bar` from now on.
pub fn show_bar(bar: &ProgressBar) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
}

/// The bar is gone: lines go straight to stderr again.
pub fn hide_bar() {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Prints `text` (one or more lines) on stderr.
pub fn line(text: impl Display) {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// Prints `text` without a line end of its own (it ends with one).
pub fn block(text: impl Display) {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(|| eprint!("{text}")),
        None => eprint!("{text}"),
    }
}

/// `warning: …`.
pub fn warn(text: impl Display) {
    line(format_args!("warning: {text}"));
}

/// A line a worker wrote to its stderr, tagged with its slot.
pub fn from_worker(slot: usize, text: &str) {
    line(format_args!("worker {slot}: {text}"));
}
