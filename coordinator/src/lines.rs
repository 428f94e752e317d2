//! Reading a line with a cap on its length: a file or stdin that never sends a newline
//! must not grow a buffer without end. What is past the cap is read and dropped.

use std::io::{self, BufRead, Read};

/// How a read of one line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Nothing was left to read.
    End,
    /// A whole line, ended by a newline (not kept in the buffer).
    Whole,
    /// The last line, which has no newline: perhaps torn off by a crash.
    Unended,
    /// A line longer than the cap: the buffer holds its first `cap` bytes, and the rest
    /// up to its newline was skipped.
    TooLong,
}

/// Reads the next line into `buf` (cleared first), keeping at most `cap` bytes of it.
pub fn read_capped(reader: &mut impl BufRead, cap: usize, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    // One byte over the cap tells a line of exactly `cap` bytes from a longer one.
    let limit = (cap as u64).saturating_add(1);
    let read = reader.by_ref().take(limit).read_until(b'\n', buf)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Whole);
    }
    if read == 0 {
        return Ok(Line::End);
    }
    if buf.len() <= cap {
        return Ok(Line::Unended);
    }
    buf.truncate(cap);
    skip_line(reader)?;
    Ok(Line::TooLong)
}

/// Consumes input up to and including the next newline, without keeping it.
fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_cap_are_cut_and_the_rest_skipped() {
        let text = b"short\n0123456789abc\nnext\r\nlast";
        let mut reader = io::BufReader::with_capacity(4, &text[..]);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        loop {
            let line = read_capped(&mut reader, 10, &mut buf).unwrap();
            if line == Line::End {
                break;
            }
            seen.push((line, String::from_utf8(buf.clone()).unwrap()));
        }
        assert_eq!(
            seen,
            [
                (Line::Whole, "short".to_owned()),
                (Line::TooLong, "0123456789".to_owned()),
                (Line::Whole, "next\r".to_owned()),
                (Line::Unended, "last".to_owned()),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_whole() {
        let mut reader = &b"0123456789\n0123456789"[..];
        let mut buf = Vec::new();
        assert_eq!(read_capped(&mut reader, 10, &mut buf).unwrap(), Line::Whole);
        assert_eq!(
            read_capped(&mut reader, 10, &mut buf).unwrap(),
            Line::Unended
        );
        assert_eq!(buf, b"0123456789");
        assert_eq!(read_capped(&mut reader, 10, &mut buf).unwrap(), Line::End);
    }

    #[test]
    fn an_endless_line_costs_only_the_cap() {
        // 64 MiB with no newline, read through an 8 KiB buffer.
        let endless = io::repeat(b'a').take(64 << 20);
        let mut reader = io::BufReader::new(endless);
        let mut buf = Vec::new();
        assert_eq!(
            read_capped(&mut reader, 1000, &mut buf).unwrap(),
            Line::TooLong
        );
        assert!(buf.capacity() < 64 * 1024, "{}", buf.capacity());
        assert_eq!(read_capped(&mut reader, 1000, &mut buf).unwrap(), Line::End);
    }
}
