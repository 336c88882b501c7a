//! The kernel's run-time statistics of every BPF program (`run_time_ns`,
//! `run_cnt`), on while the returned fd is open, whatever
//! `kernel.bpf_stats_enabled` says.
//!
//! The collector itself never turns them on (they cost every program run
//! two clock reads); the integration tests and the benchmark do, to
//! measure the probes, and share this one call.

use std::os::fd::OwnedFd;

use aya::sys::{enable_stats, Stats, SyscallError};

/// Turns run-time statistics on (`BPF_ENABLE_STATS`) until the fd is dropped.
pub fn enable_run_time_stats() -> Result<OwnedFd, SyscallError> {
    enable_stats(Stats::RunTime)
}
