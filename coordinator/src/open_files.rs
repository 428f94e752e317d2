//! The open-file limit. Every request in flight holds a socket, and a socket is a file
//! descriptor: a worker with ten thousand requests in flight needs ten thousand of
//! them, while many systems start processes with a soft limit of 1024.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::error::UsageError;

/// Descriptors a process keeps besides its sockets: stdio, pipes, the manifest, temp
/// files being written, the runtime's own.
pub const RESERVED: u64 = 64;

/// Raises the soft limit on open files to the hard limit, as far as the kernel allows,
/// and returns the soft limit now in force. Worker processes inherit it.
pub fn raise() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Checks that one process can hold `sockets` connections at once under `limit`;
/// otherwise a usage error on `flag` that says what to do instead.
pub fn check(flag: &'static str, sockets: u64, limit: u64) -> Result<(), UsageError> {
    let needed = sockets.saturating_add(RESERVED);
    if needed <= limit {
        return Ok(());
    }
    Err(UsageError::new(
        flag,
        format!(
            "{sockets} connections in one process need about {needed} open files, but the \
             limit is {limit} (ulimit -Hn); spread them over more --workers or raise the limit"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_plus_the_reserve_must_fit_the_limit() {
        assert!(check("--concurrency", 1000, 1024).is_err());
        assert!(check("--concurrency", 1024 - RESERVED, 1024).is_ok());
        let err = check("--concurrency", 50_000, 20_000)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--concurrency: 50000 connections"), "{err}");
        assert!(err.contains("limit is 20000"), "{err}");
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise() >= soft);
    }
}
