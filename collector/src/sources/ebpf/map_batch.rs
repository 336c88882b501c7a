//! Reading a whole per-CPU hash map in a few `BPF_MAP_LOOKUP_BATCH` calls
//! (Linux 5.6+) instead of two syscalls per key (`GET_NEXT_KEY`, then
//! `LOOKUP_ELEM`): at 1,000 interfaces that is a handful of calls a scrape
//! instead of 2,000. aya 0.14 has no batch API, so this is the one raw
//! `bpf(2)` call of the collector; kernels without it answer EINVAL and the
//! caller iterates key by key instead.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use bytemuck::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Kernel-internal ENOTSUPP, which batch ops return for map types without them.
const ENOTSUPP: i32 = 524;
/// Elements asked for per call; a hash bucket with more makes the kernel
/// answer ENOSPC, and the buffer grows.
const FIRST_CHUNK: usize = 256;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("this kernel has no BPF_MAP_LOOKUP_BATCH for this map")]
    Unsupported,
    #[error("BPF_MAP_LOOKUP_BATCH: {0}")]
    Os(#[source] io::Error),
}

/// Every entry of the per-CPU hash map behind `fd`: its key and one value
/// per possible CPU (`cpus` of them).
pub fn per_cpu_entries<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    cpus: usize,
) -> Result<Vec<(K, Vec<V>)>, BatchError> {
    // Per-CPU values come 8-byte aligned per CPU.
    let value_stride = std::mem::size_of::<V>().next_multiple_of(8);
    let mut chunk = FIRST_CHUNK;
    let mut keys = vec![0u8; chunk * std::mem::size_of::<K>()];
    let mut values = vec![0u8; chunk * cpus * value_stride];
    // Hash maps walk by bucket: the batch token is a u32 bucket index.
    let (mut token_in, mut token_out) = (0u32, 0u32);
    let mut started = false;
    let mut entries = Vec::new();
    loop {
        let mut attr = BatchAttr {
            in_batch: if started {
                &token_in as *const u32 as u64
            } else {
                0
            },
            out_batch: &mut token_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values that
        // outlive the call; the kernel writes at most that many of each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let errno = if rc < 0 {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        match errno {
            0 | libc::ENOENT => {
                split(
                    &keys,
                    &values,
                    attr.count as usize,
                    cpus,
                    value_stride,
                    &mut entries,
                );
                if errno == libc::ENOENT {
                    return Ok(entries);
                }
                token_in = token_out;
                started = true;
            }
            libc::ENOSPC => {
                chunk *= 2;
                keys.resize(chunk * std::mem::size_of::<K>(), 0);
                values.resize(chunk * cpus * value_stride, 0);
            }
            libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP if !started && entries.is_empty() => {
                return Err(BatchError::Unsupported)
            }
            _ => return Err(BatchError::Os(io::Error::from_raw_os_error(errno))),
        }
    }
}

/// The first `count` keys and their per-CPU values out of the raw buffers.
fn split<K: Pod, V: Pod>(
    keys: &[u8],
    values: &[u8],
    count: usize,
    cpus: usize,
    value_stride: usize,
    into: &mut Vec<(K, Vec<V>)>,
) {
    let key_size = std::mem::size_of::<K>();
    let value_size = std::mem::size_of::<V>();
    for i in 0..count {
        let key = bytemuck::pod_read_unaligned(&keys[i * key_size..(i + 1) * key_size]);
        let per_cpu = (0..cpus)
            .map(|cpu| {
                let at = (i * cpus + cpu) * value_stride;
                bytemuck::pod_read_unaligned(&values[at..at + value_size])
            })
            .collect();
        into.push((key, per_cpu));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_batch_buffers_split_into_keys_and_per_cpu_values() {
        let cpus = 3;
        // Two entries: keys 7 and 9; values (u32, padded to 8) per CPU.
        let keys: Vec<u8> = [7u32, 9].iter().flat_map(|k| k.to_ne_bytes()).collect();
        let mut values = vec![0u8; 2 * cpus * 8];
        for (slot, value) in [1u32, 2, 3, 10, 20, 30].iter().enumerate() {
            values[slot * 8..slot * 8 + 4].copy_from_slice(&value.to_ne_bytes());
        }
        let mut entries: Vec<(u32, Vec<u32>)> = Vec::new();
        split(&keys, &values, 2, cpus, 8, &mut entries);
        assert_eq!(entries, [(7, vec![1, 2, 3]), (9, vec![10, 20, 30])]);
    }
}
