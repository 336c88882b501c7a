//! Capabilities: what the process holds, why the kernel refused a BPF call,
//! and giving up what serving no longer needs once the probes are attached.
//!
//! Loading and attaching need CAP_BPF and CAP_PERFMON; afterwards the
//! programs stay attached through the fds we hold, and map reads and deletes
//! go through those fds. Newer kernels check privileges per `bpf(2)`
//! command, so an open map fd is enough; older ones with
//! `kernel.unprivileged_bpf_disabled` set refuse every `bpf(2)` call without
//! CAP_BPF (Debian's 5.10 does, its 6.1 does not: `cargo xtask kernels`).
//! Which one this kernel is, is found out by trying, not from its version.

use std::io;

use caps::{CapSet, Capability, CapsHashSet};

/// What the process kept after [`drop_after_attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// No capability at all.
    Nothing,
    /// Only CAP_BPF, because this kernel refuses map reads without it.
    Bpf,
}

/// Drops every capability from every set of the calling thread, keeping
/// CAP_BPF only when `map_access_works` says the maps cannot be read
/// without it. Call it before any other thread starts: capabilities are
/// per thread, and threads inherit the creator's.
pub fn drop_after_attach(
    map_access_works: impl Fn() -> bool,
) -> Result<Kept, caps::errors::CapsError> {
    // The bounding set needs CAP_SETPCAP to shrink; without it (the
    // DaemonSet's case) it holds only what was granted anyway.
    if let Ok(bounding) = caps::read(None, CapSet::Bounding) {
        for cap in bounding {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let permitted = caps::read(None, CapSet::Permitted)?;
    caps::clear(None, CapSet::Effective)?;
    let kept = if map_access_works() || !permitted.contains(&Capability::CAP_BPF) {
        caps::clear(None, CapSet::Permitted)?;
        Kept::Nothing
    } else {
        let bpf: CapsHashSet = [Capability::CAP_BPF].into_iter().collect();
        caps::set(None, CapSet::Permitted, &bpf)?;
        caps::set(None, CapSet::Effective, &bpf)?;
        Kept::Bpf
    };
    // No exec of ours may regain what was dropped (root regains all on exec).
    // SAFETY: prctl with these arguments only sets a flag on this thread.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    Ok(kept)
}

/// The effective capabilities of this thread, as the kernel reports them.
fn effective() -> CapsHashSet {
    caps::read(None, CapSet::Effective).unwrap_or_default()
}

/// The first OS error in an error's source chain.
pub fn os_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if io.raw_os_error().is_some() {
                return Some(io);
            }
        }
        current = error.source();
    }
    None
}

/// Why the kernel refused a BPF map or program, in words that send an
/// operator the right way: missing capabilities, a seccomp profile or LSM,
/// the memory limit, or the plain errno.
pub fn bpf_refusal_hint(error: &(dyn std::error::Error + 'static)) -> String {
    let Some(errno) = os_error(error).and_then(io::Error::raw_os_error) else {
        return "the kernel refused it".to_string();
    };
    let held = effective();
    let has = |cap| held.contains(&cap) || held.contains(&Capability::CAP_SYS_ADMIN);
    match errno {
        libc::EPERM | libc::EACCES
            if has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON) =>
        {
            format!(
                "refused with {} although CAP_BPF and CAP_PERFMON are held: a seccomp profile or an LSM (AppArmor, SELinux) denied bpf(2); check securityContext.seccompProfile in manifests/base/daemonset.yaml (the runtime's default profile must allow bpf with CAP_BPF)",
                errno_name(errno)
            )
        }
        libc::EPERM | libc::EACCES => {
            let missing: Vec<&str> = [
                (Capability::CAP_BPF, "CAP_BPF"),
                (Capability::CAP_PERFMON, "CAP_PERFMON"),
            ]
            .into_iter()
            .filter(|(cap, _)| !has(*cap))
            .map(|(_, name)| name)
            .collect();
            format!(
                "refused with {}: needs CAP_BPF and CAP_PERFMON, or root (missing: {})",
                errno_name(errno),
                missing.join(", ")
            )
        }
        libc::ENOMEM => "out of memory (ENOMEM): the pod's memory limit (BPF maps are charged to its cgroup), or RLIMIT_MEMLOCK on kernels before 5.11; lower --ebpf-max-interfaces or raise the limit".to_string(),
        other => format!("the kernel refused it with {}", errno_name(other)),
    }
}

fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::E2BIG => "E2BIG",
        libc::ENOSPC => "ENOSPC",
        libc::ENOENT => "ENOENT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EBUSY => "EBUSY",
        _ => return format!("errno {errno}"),
    };
    format!("{name} (errno {errno})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("map error")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn the_errno_is_found_through_the_source_chain_and_named() {
        let error = Wrapper(io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(bpf_refusal_hint(&error).contains("ENOMEM"));
        let error = Wrapper(io::Error::from_raw_os_error(libc::E2BIG));
        assert_eq!(
            bpf_refusal_hint(&error),
            "the kernel refused it with E2BIG (errno 7)"
        );
        let error = Wrapper(io::Error::other("no errno"));
        assert_eq!(bpf_refusal_hint(&error), "the kernel refused it");
    }
}
