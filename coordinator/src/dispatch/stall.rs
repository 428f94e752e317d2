//! The watchdog's verdict on a worker that holds batches and has been quiet: a function
//! of the quiet time, tested without a clock.

use std::time::Duration;

/// What the watchdog makes of a worker that holds batches and has been quiet.
#[derive(Debug, PartialEq, Eq)]
pub enum Stall {
    Fine,
    /// Named on stderr, once per silence: half the stall timeout has passed.
    Warn,
    /// Replaced, its batches handed out again: the whole timeout has passed.
    Replace,
}

pub fn stall_verdict(quiet: Duration, timeout: Duration, warned: bool) -> Stall {
    if quiet >= timeout {
        Stall::Replace
    } else if quiet >= timeout / 2 && !warned {
        Stall::Warn
    } else {
        Stall::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_worker_is_named_at_half_the_stall_timeout_and_replaced_at_all_of_it() {
        let timeout = Duration::from_secs(60);
        let at = Duration::from_secs;
        assert_eq!(stall_verdict(at(29), timeout, false), Stall::Fine);
        assert_eq!(stall_verdict(at(30), timeout, false), Stall::Warn);
        assert_eq!(
            stall_verdict(at(45), timeout, true),
            Stall::Fine,
            "named once"
        );
        assert_eq!(stall_verdict(at(60), timeout, true), Stall::Replace);
        assert_eq!(stall_verdict(at(600), timeout, false), Stall::Replace);
    }
}
