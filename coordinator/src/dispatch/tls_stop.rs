//! Stopping a run that cannot succeed: when its first [`TLS_STOP_AFTER`] batches all
//! fail with one and the same TLS error (an untrusted certificate, a refused client
//! certificate), the rest would only fail the same way, one handshake each.

use shared::config::TLS_ERROR_PREFIX;
use shared::protocol::{JobReport, Outcome};

/// Batches that must all have failed with the same TLS error before a run stops early.
pub const TLS_STOP_AFTER: u32 = 50;

/// Watches the first reports of a run.
#[derive(Debug, Default)]
pub struct TlsWatch {
    /// The TLS error every report so far failed with, and how many did.
    same: Option<(String, u32)>,
    /// Set once a report broke the pattern: the run goes on to its end.
    settled: bool,
}

impl TlsWatch {
    /// Takes the next report; `true` when the run should stop now.
    pub fn stop_after(&mut self, report: &JobReport) -> bool {
        if self.settled {
            return false;
        }
        let error = match &report.outcome {
            Outcome::Failed { error } if error.starts_with(TLS_ERROR_PREFIX) => error,
            _ => {
                self.settled = true;
                return false;
            }
        };
        let (first, count) = self.same.get_or_insert_with(|| (error.clone(), 0));
        if first != error {
            self.settled = true;
            return false;
        }
        *count += 1;
        if *count >= TLS_STOP_AFTER {
            self.settled = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::plan::Batch;

    fn report(error: Option<&str>) -> JobReport {
        JobReport {
            batch: Batch {
                index: 0,
                start: 0,
                end: 1,
            },
            url: String::new(),
            status: None,
            bytes: 0,
            elapsed_us: 0,
            attempts: 1,
            outcome: match error {
                Some(error) => Outcome::Failed {
                    error: error.to_owned(),
                },
                None => Outcome::Saved { file: "f".into() },
            },
            chain: None,
            validators: Default::default(),
        }
    }

    #[test]
    fn fifty_same_tls_errors_in_a_row_stop_the_run() {
        let mut watch = TlsWatch::default();
        let bad = report(Some(
            "TLS with h:443: certificate signed by an unknown authority",
        ));
        for _ in 1..TLS_STOP_AFTER {
            assert!(!watch.stop_after(&bad));
        }
        assert!(watch.stop_after(&bad));
        assert!(!watch.stop_after(&bad), "only once");
    }

    #[test]
    fn any_other_outcome_first_lets_the_run_go_on() {
        for other in [
            report(None),
            report(Some("HTTP 500 Internal Server Error")),
            report(Some("TLS with other:443: certificate has expired")),
        ] {
            let mut watch = TlsWatch::default();
            let bad = report(Some(
                "TLS with h:443: certificate signed by an unknown authority",
            ));
            assert!(!watch.stop_after(&bad));
            assert!(!watch.stop_after(&other));
            for _ in 0..2 * TLS_STOP_AFTER {
                assert!(!watch.stop_after(&bad));
            }
        }
    }
}
