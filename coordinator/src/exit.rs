//! Exit codes, and how errors reach the user: one line on stderr.

use std::io::{self, Write};
use std::process::ExitCode;

use crate::error::UsageError;
use crate::messages;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every batch was stored.
    Ok = 0,
    /// The run finished but some batches failed; the manifest lists them.
    SomeFailed = 1,
    /// Bad command line or input; nothing was started or written.
    Usage = 2,
    /// The run could not go on (a worker kept dying, or the disk failed).
    Fatal = 3,
    /// Stopped at --deadline; `--resume` fetches the rest.
    Deadline = 4,
    /// Stopped by SIGHUP (the terminal went away), like SIGTERM; `--resume` fetches the
    /// rest.
    HungUp = 129,
    /// Stopped by SIGINT (Ctrl-C); `--resume` fetches the rest.
    Interrupted = 130,
    /// Stopped by SIGTERM; `--resume` fetches the rest.
    Terminated = 143,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Prints `result`'s error, if any, and ends the process with its exit code. A run
/// that SIGINT or SIGTERM stopped ends by that signal, once it has cleaned up, so
/// that a calling shell (or script loop) sees it was interrupted and stops too; its
/// exit status is then 130 or 143 as a shell reports it.
pub fn end(result: anyhow::Result<Exit>) -> ExitCode {
    let exit = match result {
        Ok(exit) => exit,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            messages::line(format_args!("error: {e:#}"));
            Exit::Usage
        }
        Err(e) => {
            messages::line(format_args!("error: {e:#}"));
            Exit::Fatal
        }
    };
    let signal = match exit {
        Exit::Interrupted => Some(signal_hook::consts::SIGINT),
        Exit::Terminated => Some(signal_hook::consts::SIGTERM),
        _ => None,
    };
    if let Some(signal) = signal {
        let _ = io::stdout().flush();
        // Restores the default action and raises the signal: this does not return.
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
    exit.into()
}

/// Help and version go to stdout with 0; any other parse error is one line and 2.
pub fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{} (see --help)", first_paragraph(&e.render().to_string()));
            Exit::Usage.into()
        }
    }
}

/// A clap message on one line: its first line, and when that ends in a colon, the
/// indented lines that follow it (the arguments it is about).
fn first_paragraph(text: &str) -> String {
    let mut lines = text.lines();
    let mut out = lines.next().unwrap_or("invalid arguments").to_owned();
    if out.ends_with(':') {
        let items: Vec<&str> = lines
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        out.push(' ');
        out.push_str(&items.join(", "));
    }
    // clap's "did you mean": `tip: a similar argument exists: '--concurrency'`.
    if let Some(tip) = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tip: a similar"))
    {
        out.push_str("; ");
        out.push_str(tip);
    }
    out
}

/// Writes `text` to stdout; a closed stdout (`| head`) is a normal end, not an error.
pub fn print_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_messages_keep_the_arguments_they_name() {
        let missing = "error: the following required arguments were not provided:\n  --http2\n\nUsage: coordinator load --http2 [URL]...\n";
        assert_eq!(
            first_paragraph(missing),
            "error: the following required arguments were not provided: --http2"
        );
        let typo = "error: unexpected argument '--concurency' found\n\n  tip: a similar argument exists: '--concurrency'\n\nUsage: x\n";
        assert_eq!(
            first_paragraph(typo),
            "error: unexpected argument '--concurency' found; tip: a similar argument exists: '--concurrency'"
        );
        let plain = "error: unexpected argument '--bogus' found\n\nUsage: x\n";
        assert_eq!(
            first_paragraph(plain),
            "error: unexpected argument '--bogus' found"
        );
    }
}
