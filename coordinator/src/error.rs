//! Bad input, found before anything is started or written: exit code 2.

use thiserror::Error;

/// Bad input: the flag it concerns and what is wrong with it. Exit code 2.
#[derive(Debug, Error)]
#[error("{flag}: {problem}")]
pub struct UsageError {
    flag: &'static str,
    problem: String,
}

impl UsageError {
    /// A problem with `flag`.
    pub fn new(flag: &'static str, problem: impl ToString) -> UsageError {
        UsageError {
            flag,
            problem: problem.to_string(),
        }
    }
}

/// A [`UsageError`] about `flag`.
pub fn usage(flag: &'static str, problem: impl ToString) -> UsageError {
    UsageError::new(flag, problem)
}
