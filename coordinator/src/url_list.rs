//! `--urls FILE` or `--urls -`: the list opened, every line of a file checked before
//! anything starts, and its first URL read.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use crate::error::UsageError;
use crate::url_input::{Listed, UrlLines};

fn usage(flag: &'static str, problem: impl ToString) -> UsageError {
    UsageError::new(flag, problem)
}

/// A URL list, opened and checked to hold at least one URL.
pub struct UrlList {
    /// Where the lines come from.
    pub lines: UrlLines<Box<dyn BufRead + Send>>,
    /// The first URL, already read from `reader`.
    pub first: String,
    /// Number of URLs, when it could be counted up front (files, not stdin).
    pub total: Option<u64>,
}

/// Opens the list at `path` (`-` for stdin) and reads its first URL.
pub fn url_list(path: &Path) -> Result<UrlList, UsageError> {
    let (reader, total, origin): (Box<dyn BufRead + Send>, _, _) = if path == Path::new("-") {
        (
            Box::new(BufReader::new(io::stdin())),
            None,
            "stdin".to_owned(),
        )
    } else {
        let origin = path.display().to_string();
        let unreadable = |e: io::Error| usage("--urls", format!("cannot read {origin}: {e}"));
        // Every line is checked before anything starts: a bad one is named here.
        let total = UrlLines::new(BufReader::new(File::open(path).map_err(unreadable)?))
            .count()
            .map_err(unreadable)?
            .map_err(|refused| usage("--urls", format!("{origin}: {}", refused.message())))?;
        let file = File::open(path).map_err(unreadable)?;
        (Box::new(BufReader::new(file)), Some(total), origin)
    };
    let mut lines = UrlLines::new(reader);
    let first = match lines.next_item() {
        Err(e) => Err(usage("--urls", format!("cannot read {origin}: {e}")))?,
        Ok(None) => Err(usage("--urls", format!("{origin} holds no URL")))?,
        Ok(Some(Listed::Bad(refused))) => {
            Err(usage("--urls", format!("{origin}: {}", refused.message())))?
        }
        Ok(Some(Listed::Url(url))) => url,
    };
    Ok(UrlList {
        lines,
        first,
        total,
    })
}
