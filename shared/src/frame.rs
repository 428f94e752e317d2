//! Length-prefixed bincode frames: a 4-byte little-endian payload length, then the
//! payload. The length is checked against [`MAX_FRAME_LEN`] before anything is
//! allocated, a clean EOF between frames reads as `None`, and EOF inside a frame is an
//! error.

use std::io::{self, Read, Write};

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest payload accepted, in bytes.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_FRAME_LEN>>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// What can go wrong reading or writing a frame.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The pipe failed.
    #[error("pipe i/o: {0}")]
    Io(#[from] io::Error),
    /// The length prefix is over [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes is over the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    /// The stream ended inside a frame.
    #[error("pipe closed in the middle of a frame")]
    Truncated,
    /// The payload is not a valid message.
    #[error("frame does not decode: {0}")]
    Decode(String),
    /// The message could not be encoded.
    #[error("message does not encode: {0}")]
    Encode(String),
}

/// Appends `msg` as one frame to `buf`.
pub fn encode_into<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let at = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    bincode::serde::encode_into_std_write(msg, buf, config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = buf.len() - at - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        buf.truncate(at);
        return Err(FrameError::TooLarge(len));
    }
    // len <= MAX_FRAME_LEN < u32::MAX.
    buf[at..at + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encodes `msg` as one frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::new();
    encode_into(msg, &mut buf)?;
    Ok(buf)
}

/// The payload length a header announces, checked against the limit.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one payload; trailing bytes make it invalid.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Decode(format!(
            "{} bytes left over after the message",
            payload.len() - used
        )));
    }
    Ok(msg)
}

/// Decodes one whole frame (header and payload) from a slice.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let header: [u8; HEADER_LEN] = frame
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated)?;
    let len = payload_len(header)?;
    let payload = frame
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(FrameError::Truncated)?;
    decode_payload(payload)
}

/// Reads the next frame; `Ok(None)` on a clean EOF before its first byte.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut header = [0; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut payload = vec![0; payload_len(header)?];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    decode_payload(&payload).map(Some)
}

/// Writes one frame and flushes.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Batch;
    use crate::protocol::{FromWorker, JobReport, Outcome, ToWorker};
    use proptest::prelude::*;

    fn report(i: u64) -> FromWorker {
        FromWorker::Done(JobReport {
            batch: Batch {
                index: i,
                start: i * 10,
                end: i * 10 + 10,
            },
            url: format!("http://127.0.0.1:1/api/tickers/?start={}", i * 10),
            status: Some(200),
            bytes: 2048,
            elapsed_us: 1234,
            attempts: 1,
            outcome: Outcome::Saved {
                file: format!("batch{i}.json"),
            },
            chain: None,
            validators: Default::default(),
        })
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let mut wire = Vec::new();
        for i in 0..3 {
            write_frame(&mut wire, &report(i)).unwrap();
        }
        let mut r = wire.as_slice();
        for i in 0..3 {
            assert_eq!(read_frame::<FromWorker>(&mut r).unwrap(), Some(report(i)));
        }
        assert_eq!(read_frame::<FromWorker>(&mut r).unwrap(), None);
    }

    #[test]
    fn slice_decode_matches_stream_decode() {
        let frame = encode(&ToWorker::Finish).unwrap();
        assert_eq!(decode::<ToWorker>(&frame).unwrap(), ToWorker::Finish);
    }

    #[test]
    fn truncated_frame_is_an_error_not_an_eof() {
        let frame = encode(&report(7)).unwrap();
        for cut in 1..frame.len() {
            let mut r = &frame[..cut];
            assert!(
                matches!(read_frame::<FromWorker>(&mut r), Err(FrameError::Truncated)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversize_frame_is_rejected_before_allocating() {
        let mut wire = ((MAX_FRAME_LEN + 1) as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&[0; 8]);
        assert!(matches!(
            read_frame::<FromWorker>(&mut wire.as_slice()),
            Err(FrameError::TooLarge(n)) if n == MAX_FRAME_LEN + 1
        ));
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        assert!(matches!(encode(&big), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn trailing_bytes_make_a_frame_invalid() {
        let mut frame = encode(&ToWorker::Finish).unwrap();
        frame.push(0);
        let len = (frame.len() - HEADER_LEN) as u32;
        frame[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            decode::<ToWorker>(&frame),
            Err(FrameError::Decode(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_frame::<FromWorker>(&mut bytes.as_slice());
            let _ = read_frame::<ToWorker>(&mut bytes.as_slice());
        }

        #[test]
        fn garbage_payload_behind_a_valid_header_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut wire = (payload.len() as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(&payload);
            let _ = read_frame::<FromWorker>(&mut wire.as_slice());
            let _ = read_frame::<ToWorker>(&mut wire.as_slice());
        }

        #[test]
        fn any_report_round_trips(i in any::<u64>(), bytes in any::<u64>(), status in proptest::option::of(any::<u16>())) {
            let mut msg = report(i % 1_000_000);
            if let FromWorker::Done(r) = &mut msg { r.bytes = bytes; r.status = status; }
            let frame = encode(&msg).unwrap();
            prop_assert_eq!(decode::<FromWorker>(&frame).unwrap(), msg);
        }
    }
}
