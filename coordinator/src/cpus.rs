//! The CPUs this process may run on: one worker per CPU by default, each pinned to its
//! own.

use nix::sched::{CpuSet, sched_getaffinity};
use nix::unistd::Pid;

/// CPUs this process may run on.
pub fn usable_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}
