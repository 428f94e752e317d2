//! What this process has used: CPU time and peak resident memory, from `getrusage`.

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;

/// CPU time (user + system) in microseconds and peak resident memory in KiB of this
/// process; zeros if the kernel does not say.
pub fn own_usage() -> (u64, u64) {
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return (0, 0);
    };
    let us = |t: TimeVal| t.tv_sec().max(0) as u64 * 1_000_000 + t.tv_usec().max(0) as u64;
    (
        us(usage.user_time()) + us(usage.system_time()),
        usage.max_rss().max(0) as u64,
    )
}
