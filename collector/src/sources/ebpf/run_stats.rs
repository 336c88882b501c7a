//! `bpf(BPF_ENABLE_STATS)`: the kernel's run-time statistics of every BPF
//! program (`run_time_ns`, `run_cnt` in fdinfo), on while the returned fd
//! is open, whatever `kernel.bpf_stats_enabled` says.
//!
//! The collector itself never turns them on (they cost every program run
//! two clock reads); the integration tests and the benchmark do, to
//! measure the probes, and share this one call.

use std::os::fd::{FromRawFd, OwnedFd};

/// `BPF_ENABLE_STATS` in `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_ENABLE_STATS: libc::c_long = 32;

/// Turns run-time statistics on until the fd is dropped.
pub fn enable_run_time_stats() -> std::io::Result<OwnedFd> {
    let attr: [u32; 2] = [0, 0]; // enable_stats.type = BPF_STATS_RUN_TIME
                                 // SAFETY: attr is a zero-padded bpf_attr prefix of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
