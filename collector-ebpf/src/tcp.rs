//! Why TCP connections fail, per network namespace: connect and accept
//! outcomes, retransmits by kind, resets each way, aborted connections and
//! the handshake's RTT. Every hook fires once per state change, retransmit
//! or reset, never per delivered packet.
//!
//! The namespace is the socket's (`sk->__sk_common.skc_net`), or for a
//! reset sent without a socket (a SYN to a closed port) the incoming skb's,
//! found as for drops. Both flavours share one body per hook over a
//! [`Memory`].

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuHashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use collector_common::{
    Counter, Outcome, TcpEvent, TcpKey, NETNS_NONE, RESET_RECEIVED, RESET_SENT, RETRANSMIT_DATA,
    RETRANSMIT_SYN, RETRANSMIT_SYNACK, RTT_BOUNDS_US, RTT_BUCKETS, SIDE_ACCEPT, SIDE_CONNECT,
    TCP_MAP_ENTRIES,
};

use crate::walk::{drop_place, layout_field, namespace, sock_net, Direct, Helper, Memory};
use crate::{bump, BPF_NOEXIST, KERNEL_LAYOUT, NETNS_FIRST_DROP};

#[map]
static TCP_EVENTS: PerCpuHashMap<TcpKey, u64> = PerCpuHashMap::with_max_entries(TCP_MAP_ENTRIES, 0);

const IPPROTO_TCP: u16 = 6;

// include/net/tcp_states.h
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_FIN_WAIT2: i32 = 5;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;
const TCP_CLOSING: i32 = 11;

// include/uapi/asm-generic/errno*.h, the same on every Linux architecture
// with BPF JITs of note.
const EPIPE: i32 = 32;
const ENETUNREACH: i32 = 101;
const ECONNRESET: i32 = 104;
const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const EHOSTUNREACH: i32 = 113;

/// Adds `value` to the namespace's count of `event`/`detail`.
#[inline(always)]
fn count(netns: u32, event: TcpEvent, detail: u16, value: u64) {
    let key = TcpKey {
        netns,
        event: event as u16,
        detail,
    };
    if let Some(total) = TCP_EVENTS.get_ptr_mut(key) {
        // SAFETY: this CPU's copy of a per-CPU value, written by no one
        // else while the program runs (see `bump`).
        unsafe { *total += value };
        return;
    }
    if netns != NETNS_NONE && netns != layout_field!(netns_inum) {
        // SAFETY: a helper without arguments, allowed in every tracing program.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        // The namespace's first key of either map stamps it (see the drop
        // probe); already stamped or full are both fine.
        let _ = NETNS_FIRST_DROP.insert(netns, now, BPF_NOEXIST);
    }
    if TCP_EVENTS.insert(key, value, BPF_NOEXIST).is_err() {
        match TCP_EVENTS.get_ptr_mut(key) {
            // SAFETY: as above; another CPU inserted the key first.
            Some(total) => unsafe { *total += value },
            None => bump(Counter::TcpMapFull),
        }
    }
}

/// The outcome `sk_err` names.
#[inline(always)]
fn outcome(err: i32) -> Outcome {
    match err {
        ECONNREFUSED => Outcome::Refused,
        ETIMEDOUT => Outcome::TimedOut,
        EHOSTUNREACH | ENETUNREACH => Outcome::Unreachable,
        ECONNRESET | EPIPE => Outcome::Reset,
        _ => Outcome::Other,
    }
}

/// The socket's namespace inode, [`NETNS_NONE`] when none is found.
///
/// # Safety
/// `sk` is null or a `struct sock *` the tracepoint handed over.
#[inline(always)]
unsafe fn sock_netns<M: Memory>(sk: *const u8) -> u32 {
    if sk.is_null() {
        return NETNS_NONE;
    }
    // SAFETY: `sk` is a non-null socket.
    unsafe { namespace::<M>(sock_net::<M>(sk), 0).0 }
}

/// A TCP socket's state change: the end of a handshake (either side), or
/// a synchronized connection closed with an error.
///
/// # Safety
/// `sk` is the tracepoint's non-null `struct sock *` of a TCP socket.
#[inline(always)]
unsafe fn state_change<M: Memory>(sk: *const u8, old: i32, new: i32) {
    let (event, side) = match old {
        TCP_SYN_SENT => (TcpEvent::Connect, SIDE_CONNECT),
        TCP_SYN_RECV => (TcpEvent::Accept, SIDE_ACCEPT),
        TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT | TCP_LAST_ACK
        | TCP_CLOSING => (TcpEvent::Abort, 0),
        _ => return,
    };
    // SAFETY: `sk` is a non-null socket, read at member offsets of its type.
    unsafe {
        match (event, new) {
            (TcpEvent::Abort, TCP_CLOSE) => {
                let err: i32 = M::read(sk, layout_field!(sk_err)).unwrap_or(0);
                // A close without an error is the application's own.
                if err != 0 {
                    count(sock_netns::<M>(sk), event, outcome(err) as u16, 1);
                }
            }
            (TcpEvent::Abort, _) => {}
            (_, TCP_ESTABLISHED) => {
                let netns = sock_netns::<M>(sk);
                // `srtt_us` is in `struct tcp_sock`, past the `struct sock`
                // a BTF-typed argument is checked against: read with the
                // helper in both flavours. A handshake with an RTT is
                // counted once, in its bucket: userspace adds the buckets
                // to the established count, which saves a map update per
                // handshake. Only one without an RTT is counted as
                // established here.
                match Helper::read::<u32>(sk, layout_field!(tcp_srtt_us)) {
                    Some(srtt) => {
                        let us = srtt >> 3;
                        let mut bucket = RTT_BOUNDS_US.len() as u16;
                        for (i, bound) in RTT_BOUNDS_US.iter().enumerate() {
                            if us <= *bound {
                                bucket = i as u16;
                                break;
                            }
                        }
                        count(netns, TcpEvent::RttBucket, side * RTT_BUCKETS + bucket, 1);
                        count(netns, TcpEvent::RttSum, side, us as u64);
                    }
                    None => count(netns, event, Outcome::Established as u16, 1),
                }
            }
            (_, TCP_CLOSE) => {
                let err: i32 = M::read(sk, layout_field!(sk_err)).unwrap_or(0);
                count(sock_netns::<M>(sk), event, outcome(err) as u16, 1);
            }
            _ => {}
        }
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's fields at their tracefs offsets.
    let fields = unsafe {
        (
            ctx.read_at::<u16>(layout_field!(state_protocol) as usize),
            ctx.read_at::<*const u8>(layout_field!(state_skaddr) as usize),
            ctx.read_at::<i32>(layout_field!(state_oldstate) as usize),
            ctx.read_at::<i32>(layout_field!(state_newstate) as usize),
        )
    };
    match fields {
        (Ok(IPPROTO_TCP), Ok(sk), Ok(old), Ok(new)) if !sk.is_null() => {
            // SAFETY: the record's socket, read with helper calls.
            unsafe { state_change::<Helper>(sk, old, new) }
        }
        (Ok(_), Ok(_), Ok(_), Ok(_)) => {}
        _ => bump(Counter::KernelReadError),
    }
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() {
        return 0;
    }
    let (old, new): (i32, i32) = (ctx.arg(1), ctx.arg(2));
    // Most changes count nothing (CLOSE -> SYN_SENT, LISTEN -> SYN_RECV,
    // a close without an error): those are left before the socket is read.
    if !(new == TCP_ESTABLISHED || new == TCP_CLOSE) {
        return 0;
    }
    // SAFETY: the tracepoint's BTF-typed socket, non-null.
    unsafe {
        if Direct::read::<u16>(sk, layout_field!(sk_protocol)) == Some(IPPROTO_TCP) {
            state_change::<Direct>(sk, old, new);
        }
    }
    0
}

/// A retransmitted skb: of a SYN while the socket is in SYN_SENT, of data
/// otherwise.
///
/// # Safety
/// `sk` is null or the tracepoint's `struct sock *`.
#[inline(always)]
unsafe fn retransmit<M: Memory>(sk: *const u8, state: Option<u8>) {
    let kind = match state {
        Some(state) if state as i32 == TCP_SYN_SENT => RETRANSMIT_SYN,
        _ => RETRANSMIT_DATA,
    };
    // SAFETY: the caller's contract.
    count(
        unsafe { sock_netns::<M>(sk) },
        TcpEvent::Retransmit,
        kind,
        1,
    );
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's fields at their tracefs offsets.
    let fields = unsafe {
        (
            ctx.read_at::<*const u8>(layout_field!(retransmit_skaddr) as usize),
            ctx.read_at::<i32>(layout_field!(retransmit_state) as usize),
        )
    };
    match fields {
        // SAFETY: the record's socket, read with helper calls.
        (Ok(sk), Ok(state)) => unsafe { retransmit::<Helper>(sk, Some(state as u8)) },
        _ => bump(Counter::KernelReadError),
    }
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_btf(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() {
        return 0;
    }
    // SAFETY: the tracepoint's BTF-typed socket, non-null.
    unsafe {
        let state = Direct::read::<u8>(sk, layout_field!(sk_state));
        retransmit::<Direct>(sk, state);
    }
    0
}

#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's `skaddr` at its tracefs offset, the listener.
    match unsafe { ctx.read_at::<*const u8>(layout_field!(synack_skaddr) as usize) } {
        Ok(sk) => {
            // SAFETY: the record's socket, read with helper calls.
            let netns = unsafe { sock_netns::<Helper>(sk) };
            count(netns, TcpEvent::Retransmit, RETRANSMIT_SYNACK, 1);
        }
        Err(_) => bump(Counter::KernelReadError),
    }
    0
}

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack_btf(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the tracepoint's BTF-typed listener, null-checked inside.
    let netns = unsafe { sock_netns::<Direct>(ctx.arg(0)) };
    count(netns, TcpEvent::Retransmit, RETRANSMIT_SYNACK, 1);
    0
}

/// A reset sent: for the socket's connection, or with no socket for the
/// skb it answers, whose device names the namespace.
///
/// # Safety
/// `sk` and `skb` are null or the tracepoint's pointers.
#[inline(always)]
unsafe fn reset_sent<M: Memory>(sk: *const u8, skb: *const u8) {
    // SAFETY: the caller's contract; `drop_place` takes the socket's
    // namespace first, as a drop's receiving socket.
    match unsafe { drop_place::<M>(skb, sk) } {
        Some((netns, _)) => count(netns, TcpEvent::Reset, RESET_SENT, 1),
        None => bump(Counter::KernelReadError),
    }
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's fields at their tracefs offsets.
    let fields = unsafe {
        (
            ctx.read_at::<*const u8>(layout_field!(send_reset_skaddr) as usize),
            ctx.read_at::<*const u8>(layout_field!(send_reset_skbaddr) as usize),
        )
    };
    match fields {
        // SAFETY: the record's pointers, read with helper calls.
        (Ok(sk), Ok(skb)) => unsafe { reset_sent::<Helper>(sk, skb) },
        _ => bump(Counter::KernelReadError),
    }
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_btf(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the tracepoint's BTF-typed socket and skb, each null-checked
    // before it is read.
    unsafe { reset_sent::<Direct>(ctx.arg(0), ctx.arg(1)) };
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's `skaddr` at its tracefs offset.
    match unsafe { ctx.read_at::<*const u8>(layout_field!(receive_reset_skaddr) as usize) } {
        Ok(sk) => {
            // SAFETY: the record's socket, read with helper calls.
            let netns = unsafe { sock_netns::<Helper>(sk) };
            count(netns, TcpEvent::Reset, RESET_RECEIVED, 1);
        }
        Err(_) => bump(Counter::KernelReadError),
    }
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset_btf(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the tracepoint's BTF-typed socket, null-checked inside.
    let netns = unsafe { sock_netns::<Direct>(ctx.arg(0)) };
    count(netns, TcpEvent::Reset, RESET_RECEIVED, 1);
    0
}
