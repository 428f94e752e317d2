//! Where progress bars draw: stderr, a few columns short of its width. A bar as wide
//! as the terminal leaves the cursor in its last column, so the `^C` the terminal
//! echoes on Ctrl-C wraps to a new line, and the next redraw or message clears that
//! line instead of the bar's: a stale bar stays on screen above the summary.

use std::io;

use console::Term;
use indicatif::{ProgressDrawTarget, TermLike};

/// Columns left free at the end of the bar's line (room for an echoed `^C`).
pub const MARGIN: u16 = 3;

/// Stderr for a bar redrawn at most `hz` times a second (bursts aside).
pub fn stderr_target(hz: u8) -> ProgressDrawTarget {
    ProgressDrawTarget::term_like_with_hz(Box::new(Narrow(Term::stderr())), hz)
}

/// A terminal that says it is [`MARGIN`] columns narrower than it is.
#[derive(Debug)]
struct Narrow(Term);

impl TermLike for Narrow {
    fn width(&self) -> u16 {
        let (_, columns) = self.0.size();
        columns.saturating_sub(MARGIN).max(20)
    }

    fn height(&self) -> u16 {
        self.0.size().0
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_up(n)
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_down(n)
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_right(n)
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_left(n)
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.0.write_line(s)
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.0.write_str(s)
    }

    fn clear_line(&self) -> io::Result<()> {
        self.0.clear_line()
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
}
