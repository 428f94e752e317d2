//! The memory a worker's response bodies may take at once (`--body-budget`), so that no
//! server, and no slow reader of `--out -`, can grow a worker at will.
//!
//! A body is charged as it arrives, a read at a time, and the charge is given back
//! once its bytes are on disk or in the pipe to the coordinator. A request that finds
//! the budget spent waits (its socket is not read, so TCP slows the server down)
//! rather than exceed it. One request at a time may take an overdraft and finish its
//! body beyond the budget: without it, requests each holding part of the budget could
//! all wait for each other forever. So a worker holds at most the budget plus one
//! `--max-body` of bodies.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

/// Bytes per permit: charges are rounded up to whole KiB.
const UNIT: u64 = 1024;

/// The bodies of one worker.
#[derive(Debug)]
pub struct Budget {
    permits: Semaphore,
    overdraft: Arc<Mutex<()>>,
}

impl Budget {
    /// A budget of `bytes` (at least one KiB).
    pub fn new(bytes: u64) -> Arc<Budget> {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64);
        Arc::new(Budget {
            permits: Semaphore::new(units as usize),
            overdraft: Arc::new(Mutex::new(())),
        })
    }
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    units: u64,
    overdraft: Option<OwnedMutexGuard<()>>,
}

impl Charge {
    /// Nothing held yet.
    pub fn new(budget: &Arc<Budget>) -> Charge {
        Charge {
            budget: Arc::clone(budget),
            units: 0,
            overdraft: None,
        }
    }

    /// Makes the charge cover `bytes` in all, waiting while the budget is spent and
    /// the overdraft taken.
    pub async fn cover(&mut self, bytes: usize) {
        let want = (bytes as u64).div_ceil(UNIT);
        if want <= self.units || self.overdraft.is_some() {
            return;
        }
        let more = u32::try_from(want - self.units).unwrap_or(u32::MAX);
        if let Ok(got) = self.budget.permits.try_acquire_many(more) {
            got.forget();
            self.units += u64::from(more);
            return;
        }
        // Boxed: the wait is rare, and its state would otherwise size every request's
        // task (ten thousand in flight each carry it).
        Box::pin(self.wait(more)).await;
    }

    /// Waits for `more` units, or for the overdraft, whichever comes first.
    async fn wait(&mut self, more: u32) {
        let budget = Arc::clone(&self.budget);
        let overdraft = Arc::clone(&budget.overdraft);
        tokio::select! {
            got = budget.permits.acquire_many(more) => {
                // The semaphore is never closed.
                if let Ok(got) = got {
                    got.forget();
                    self.units += u64::from(more);
                }
            }
            guard = overdraft.lock_owned() => self.overdraft = Some(guard),
        }
    }

    /// Gives back what is held (a failed attempt's body is gone).
    pub fn release(&mut self) {
        self.budget.permits.add_permits(self.units as usize);
        self.units = 0;
        self.overdraft = None;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn charges_wait_for_the_budget_and_one_may_overdraw() {
        let budget = Budget::new(10 * UNIT);
        let mut a = Charge::new(&budget);
        a.cover(6 * UNIT as usize).await;
        let mut b = Charge::new(&budget);
        b.cover(4 * UNIT as usize).await;
        // Spent: the next takes the overdraft and goes on.
        let mut c = Charge::new(&budget);
        c.cover(100 * UNIT as usize).await;
        assert!(c.overdraft.is_some());
        // A fourth waits, for budget or for the overdraft.
        let mut d = Charge::new(&budget);
        let waiting = tokio::time::timeout(std::time::Duration::from_secs(1), d.cover(1)).await;
        assert!(waiting.is_err(), "covered beyond the budget");
        drop(a);
        d.cover(UNIT as usize).await;
        assert_eq!((d.units, d.overdraft.is_some()), (1, false));
        drop((b, c, d));
        assert_eq!(budget.permits.available_permits(), 10);
    }
}
