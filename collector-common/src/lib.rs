//! Types that cross the kernel boundary: BPF map keys and values, and the
//! layout of the globals userspace writes before loading the programs.
//!
//! Everything here is `#[repr(C)]` and `Pod` so both sides agree on the
//! bytes. With the `user` feature the types also implement `aya::Pod`.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Default bound of interfaces tracked in the traffic map: four times
/// AKS's 250-pod maximum per node. A node with more live interfaces loses
/// per-interface eBPF counts for the excess (counted in
/// [`Counter::TrafficMapFull`], the alarm to raise `--ebpf-max-interfaces`),
/// never the netlink ones. Maps are per-CPU and preallocated, so every
/// entry costs memory on every possible CPU (docs/metrics.md#kernel-memory-of-the-maps gives the formula).
pub const TRAFFIC_MAP_ENTRIES: u32 = 1_024;
/// Default bound of (namespace, device, reason) triples in the drop map:
/// four per interface slot, so sixteen per pod at AKS's 250-pod maximum,
/// shared between its host veth and its own namespace (`eth0`, no device,
/// `lo`); docs/metrics.md#kernel-memory-of-the-maps gives the sizing.
pub const DROP_MAP_ENTRIES: u32 = 4 * TRAFFIC_MAP_ENTRIES;
/// Default bound of (namespace, event, detail) triples in the TCP event
/// map: as many as drops. A pod that connects, accepts, retransmits and
/// sees resets with one handshake-RTT bucket per side uses about 10.
pub const TCP_MAP_ENTRIES: u32 = 4 * TRAFFIC_MAP_ENTRIES;
/// `netns` of a drop no namespace could be found for (no receiving socket,
/// no device, no socket): a node-level count by reason.
pub const NETNS_NONE: u32 = 0;
/// Reason value recorded when the running kernel's `kfree_skb` tracepoint has
/// no `reason` field (kernels before 5.17).
pub const REASON_UNKNOWN: u32 = u32::MAX;

/// Packets and bytes seen by the probes on one interface (one copy per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IfTraffic {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Key of the drop map: in which network namespace (its inode number,
/// `ns.inum`; [`NETNS_NONE`] when none was found), on which device of that
/// namespace (its ifindex there, 0 for none), for which kernel drop reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct DropKey {
    pub netns: u32,
    pub ifindex: u32,
    pub reason: u32,
}

/// Slots of the per-CPU `DROP_SLOTS` array the drop probe counts in before
/// the drop map: a power of two, indexed by a multiplicative mix of the
/// key (see [`drop_slot_index`]).
pub const DROP_SLOT_COUNT: u32 = 128;

/// Which slot of `DROP_SLOTS` a key is counted in.
#[inline(always)]
pub fn drop_slot_index(key: &DropKey) -> u32 {
    // Fibonacci hashing: the top bits of one multiplication, which spread
    // consecutive inodes evenly; the device and reason are moved up so
    // that they reach those bits too.
    let mixed = key.netns ^ key.ifindex.rotate_left(16) ^ key.reason.rotate_left(8);
    mixed.wrapping_mul(0x9E37_79B1) >> (32 - DROP_SLOT_COUNT.trailing_zeros())
}

/// One CPU's slot of `DROP_SLOTS`: a write-back cache of one drop key's
/// count, so the hot path is an array lookup and a compare instead of a
/// hash of the key. The key is always in the drop map too (the slot is
/// taken only after counting the key's first drop there); `pending` is
/// what this CPU counted since, moved into the map's entry when another
/// key takes the slot or the generation changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DropSlot {
    pub key: DropKey,
    /// `DROP_GENERATION` + 1 when the slot was taken; 0: never taken or
    /// released. Userspace bumps the generation after deleting drop keys,
    /// which makes every slot check its key against the map again.
    pub epoch: u32,
    /// `NETNS_FIRST_DROP` of the key's namespace when the slot was taken (0
    /// when it had none): which life of the namespace's inode the pending
    /// count belongs to. A count is moved into (or served with) the map's
    /// entry only while the namespace's first-drop time is still this one.
    pub born: u64,
    pub pending: u64,
}

/// Offsets and identities read from the running kernel by userspace and
/// written into the BPF object as the global `KERNEL_LAYOUT` before load.
/// Nothing kernel-version dependent is compiled into the BPF programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct KernelLayout {
    /// Inode number of the network namespace whose devices are counted.
    pub netns_inum: u32,
    /// `net:netif_receive_skb` record: offsets of `skbaddr` and `len`.
    pub rx_skbaddr: u32,
    pub rx_len: u32,
    /// `net:net_dev_start_xmit` record: offsets of `skbaddr` and `len`.
    pub tx_skbaddr: u32,
    pub tx_len: u32,
    /// `skb:kfree_skb` record: offsets of `skbaddr` and `reason`.
    pub drop_skbaddr: u32,
    pub drop_reason: u32,
    /// Non-zero when the `kfree_skb` record carries `reason`.
    pub drop_has_reason: u32,
    /// Drop reason values that mean "not a drop" (`NOT_DROPPED_YET`,
    /// `CONSUMED`) on kernels that route them through `kfree_skb`.
    pub reason_not_dropped: u32,
    pub reason_consumed: u32,
    /// `struct sk_buff`: offset of `dev`.
    pub skb_dev: u32,
    /// `struct net_device`: offsets of `ifindex` and `nd_net.net`.
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    /// `struct net`: offset of `ns.inum`.
    pub net_ns_inum: u32,
    /// `struct sk_buff`: offset of `len` (what the classic records carry as
    /// `len`; the BTF-typed programs read it from the skb directly).
    pub skb_len: u32,
    /// Non-zero when argument 2 of the BTF-typed `kfree_skb` tracepoint
    /// (`btf_trace_kfree_skb` without its leading `void *`) is its
    /// `enum skb_drop_reason`, as on every kernel since 5.17.
    pub btf_drop_has_reason: u32,
    /// `skb:kfree_skb` record: offset of `rx_sk` (6.11+), and non-zero when
    /// the record has it.
    pub drop_rx_sk: u32,
    pub drop_has_rx_sk: u32,
    /// Non-zero when argument 3 of the BTF-typed `kfree_skb` is its
    /// `struct sock *rx_sk` (6.11+).
    pub btf_drop_has_rx_sk: u32,
    /// `struct sk_buff`: offset of `sk`.
    pub skb_sk: u32,
    /// `struct sock`: offset of `__sk_common.skc_net.net`.
    pub sk_net: u32,
    /// `struct net_device`: offsets of `adj_list.upper` and
    /// `adj_list.lower`, two list heads every device has from allocation to
    /// free, and `struct list_head`: offset of `prev`. A device pointer is
    /// trusted only if both heads are well formed (each head's next node
    /// points back to it): `skb->dev` shares its bytes with other fields,
    /// so it is not always a device (see the BPF crate's `walk`).
    pub dev_adj_upper: u32,
    pub dev_adj_lower: u32,
    pub list_prev: u32,
    /// `struct net`: offset of the namespace's reference count (`count`,
    /// `ns.count` or `ns.__ns_ref` by kernel), and non-zero when the BTF
    /// has one. The count is 0 once the namespace is being torn down.
    pub net_refcount: u32,
    pub net_has_refcount: u32,
    /// `sock:inet_sock_set_state` record: offsets of `skaddr`, `oldstate`,
    /// `newstate` and `protocol`.
    pub state_skaddr: u32,
    pub state_oldstate: u32,
    pub state_newstate: u32,
    pub state_protocol: u32,
    /// `tcp:tcp_retransmit_skb` record: offsets of `skaddr` and `state`.
    pub retransmit_skaddr: u32,
    pub retransmit_state: u32,
    /// `tcp:tcp_retransmit_synack` record: offset of `skaddr`.
    pub synack_skaddr: u32,
    /// `tcp:tcp_send_reset` record: offsets of `skbaddr` and `skaddr`.
    pub send_reset_skbaddr: u32,
    pub send_reset_skaddr: u32,
    /// `tcp:tcp_receive_reset` record: offset of `skaddr`.
    pub receive_reset_skaddr: u32,
    /// `struct sock`: offsets of `__sk_common.skc_state` (u8),
    /// `sk_protocol` (u16) and `sk_err` (int).
    pub sk_state: u32,
    pub sk_protocol: u32,
    pub sk_err: u32,
    /// `struct tcp_sock`: offset of `srtt_us` (the smoothed RTT, in
    /// microseconds times 8).
    pub tcp_srtt_us: u32,
}

/// Key of the TCP event map: in which network namespace (as for drops),
/// which [`TcpEvent`], and its detail (an [`Outcome`], a retransmit or
/// reset kind, or a handshake-RTT bucket).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct TcpKey {
    pub netns: u32,
    pub event: u16,
    pub detail: u16,
}

/// What a [`TcpKey`] counts. Every event fires once per connection or per
/// error, never per delivered packet.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// An active open left SYN_SENT; detail: its [`Outcome`].
    Connect = 0,
    /// A passive open's socket left SYN_RECV; detail: its [`Outcome`].
    Accept = 1,
    /// A retransmitted skb; detail: [`RETRANSMIT_DATA`], `_SYN`, `_SYNACK`.
    Retransmit = 2,
    /// A reset; detail: [`RESET_SENT`] or [`RESET_RECEIVED`].
    Reset = 3,
    /// A synchronized connection closed with an error; detail: its
    /// [`Outcome`] (never `Established`).
    Abort = 4,
    /// A handshake's smoothed RTT at ESTABLISHED; detail:
    /// `side * RTT_BUCKETS + bucket` (side 0 connect, 1 accept).
    RttBucket = 5,
    /// The same, summed in microseconds; detail: the side.
    RttSum = 6,
}

impl TcpEvent {
    pub const ALL: [TcpEvent; 7] = [
        TcpEvent::Connect,
        TcpEvent::Accept,
        TcpEvent::Retransmit,
        TcpEvent::Reset,
        TcpEvent::Abort,
        TcpEvent::RttBucket,
        TcpEvent::RttSum,
    ];

    pub fn from_u16(value: u16) -> Option<TcpEvent> {
        Self::ALL.into_iter().find(|e| *e as u16 == value)
    }
}

/// How a connection attempt ended, from `sk_err` when it left the
/// handshake (or a synchronized state) for CLOSE.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Established = 0,
    /// ECONNREFUSED: a reset answered the SYN.
    Refused = 1,
    /// ETIMEDOUT: retransmissions ran out.
    TimedOut = 2,
    /// EHOSTUNREACH or ENETUNREACH (an ICMP error, or no route).
    Unreachable = 3,
    /// ECONNRESET or EPIPE: a reset on a synchronized connection.
    Reset = 4,
    /// Closed without one of these errors (the application gave up).
    Other = 5,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Established,
        Outcome::Refused,
        Outcome::TimedOut,
        Outcome::Unreachable,
        Outcome::Reset,
        Outcome::Other,
    ];
}

pub const RETRANSMIT_DATA: u16 = 0;
pub const RETRANSMIT_SYN: u16 = 1;
pub const RETRANSMIT_SYNACK: u16 = 2;
pub const RESET_SENT: u16 = 0;
pub const RESET_RECEIVED: u16 = 1;
pub const SIDE_CONNECT: u16 = 0;
pub const SIDE_ACCEPT: u16 = 1;

/// Upper bounds (microseconds, inclusive) of the handshake-RTT buckets;
/// the last bucket is everything above.
pub const RTT_BOUNDS_US: [u32; 6] = [500, 1_000, 5_000, 20_000, 100_000, 500_000];
pub const RTT_BUCKETS: u16 = RTT_BOUNDS_US.len() as u16 + 1;

/// The event (`Connect` or `Accept`) whose `Established` count a key of
/// `event`/`detail` adds to: an RTT bucket's. The probe counts a handshake
/// whose RTT it read in the bucket alone, one map update fewer per
/// handshake, and `Established` only when the RTT could not be read.
pub fn established_by_bucket(event: u16, detail: u16) -> Option<TcpEvent> {
    if event != TcpEvent::RttBucket as u16 {
        return None;
    }
    match detail / RTT_BUCKETS {
        SIDE_CONNECT => Some(TcpEvent::Connect),
        SIDE_ACCEPT => Some(TcpEvent::Accept),
        _ => None,
    }
}

/// The lowest `ns.inum` a network namespace can have: nsfs inodes are
/// allocated from `PROC_DYNAMIC_FIRST` (0xF0000000) up, and the initial
/// namespaces have fixed inodes just below it (`PROC_NET_INIT_INO` is
/// 0xEFFFFFF9 where it exists). Anything lower read through a pointer is
/// not a namespace's inode.
pub const NETNS_INUM_FLOOR: u32 = 0xEFFF_FF00;

/// Slots of the per-CPU `COUNTERS` array the probes bump on events that are
/// not traffic: lost updates and unreadable kernel memory.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    TrafficMapFull = 0,
    DropMapFull = 1,
    KernelReadError = 2,
    TcpMapFull = 3,
}

impl Counter {
    pub const ALL: [Counter; 4] = [
        Counter::TrafficMapFull,
        Counter::DropMapFull,
        Counter::KernelReadError,
        Counter::TcpMapFull,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are repr(C), Copy, and bytemuck::Pod (no padding, any
    // bit pattern valid), which is what aya::Pod requires.
    unsafe impl aya::Pod for super::IfTraffic {}
    unsafe impl aya::Pod for super::DropKey {}
    unsafe impl aya::Pod for super::TcpKey {}
    unsafe impl aya::Pod for super::DropSlot {}
    unsafe impl aya::Pod for super::KernelLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_buckets_count_their_sides_handshakes() {
        let bucket = TcpEvent::RttBucket as u16;
        assert_eq!(established_by_bucket(bucket, 0), Some(TcpEvent::Connect));
        assert_eq!(
            established_by_bucket(bucket, RTT_BUCKETS - 1),
            Some(TcpEvent::Connect)
        );
        assert_eq!(
            established_by_bucket(bucket, RTT_BUCKETS),
            Some(TcpEvent::Accept)
        );
        assert_eq!(established_by_bucket(bucket, 2 * RTT_BUCKETS), None);
        assert_eq!(established_by_bucket(TcpEvent::RttSum as u16, 0), None);
        assert_eq!(established_by_bucket(TcpEvent::Connect as u16, 0), None);
    }

    #[test]
    fn pods_eth0_keys_spread_over_the_drop_slots() {
        // One pod's eth0 (ifindex 2) dropping NO_SOCKET, on consecutive
        // inodes as nsfs hands them out: the keys a busy node has at once.
        let mut used = [0u32; DROP_SLOT_COUNT as usize];
        for inode in 0xF000_0000u32..0xF000_0000 + DROP_SLOT_COUNT {
            let index = drop_slot_index(&DropKey {
                netns: inode,
                ifindex: 2,
                reason: 2,
            });
            assert!(index < DROP_SLOT_COUNT);
            used[index as usize] += 1;
        }
        let empty = used.iter().filter(|n| **n == 0).count();
        // Random placement leaves about 1/e of the slots empty.
        assert!(empty < DROP_SLOT_COUNT as usize / 2, "{used:?}");
    }
}
