//! Tracepoint programs counting per-interface traffic and drops.
//!
//! Two flavours of each probe, the same counting behind both:
//! - BTF-typed (`tp_btf`, the default): the kernel hands the program its
//!   `struct sk_buff *` without building a trace record, and every field is a
//!   direct load the verifier checks against the kernel's BTF (no helper call
//!   on the hot path).
//! - classic tracepoints, for kernels where `tp_btf` cannot load: the record
//!   is read at tracefs offsets and the struct walk goes through
//!   `bpf_probe_read_kernel`.
//!
//! Every kernel-specific number (tracepoint record offsets, struct member
//! offsets, the collector's network namespace) arrives in `KERNEL_LAYOUT`,
//! written by userspace from tracefs and BTF before load. Maps are per-CPU so
//! the hot path never needs an atomic.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use collector_common::{
    Counter, DropKey, IfTraffic, KernelLayout, DROP_MAP_ENTRIES, NETNS_NONE, REASON_UNKNOWN,
    TRAFFIC_MAP_ENTRIES,
};

const BPF_NOEXIST: u64 = 1;

#[no_mangle]
static KERNEL_LAYOUT: KernelLayout = KernelLayout {
    netns_inum: 0,
    rx_skbaddr: 0,
    rx_len: 0,
    tx_skbaddr: 0,
    tx_len: 0,
    drop_skbaddr: 0,
    drop_reason: 0,
    drop_has_reason: 0,
    reason_not_dropped: 0,
    reason_consumed: 0,
    skb_dev: 0,
    dev_ifindex: 0,
    dev_nd_net: 0,
    net_ns_inum: 0,
    skb_len: 0,
    btf_drop_has_reason: 0,
    drop_rx_sk: 0,
    drop_has_rx_sk: 0,
    btf_drop_has_rx_sk: 0,
    skb_sk: 0,
    sk_net: 0,
};

#[map]
static TRAFFIC: PerCpuHashMap<u32, IfTraffic> =
    PerCpuHashMap::with_max_entries(TRAFFIC_MAP_ENTRIES, 0);

#[map]
static DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(DROP_MAP_ENTRIES, 0);

/// When each namespace's first counted drop was inserted (CLOCK_BOOTTIME
/// ns): userspace compares it with when a pod's namespace was made, so the
/// counts of a namespace that lived and died between two collections are
/// never given to the next one on its inode. Written only on the path that
/// inserts a new drop key, never per drop.
#[map]
static NETNS_FIRST_DROP: HashMap<u32, u64> = HashMap::with_max_entries(TRAFFIC_MAP_ENTRIES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[inline(always)]
fn layout() -> KernelLayout {
    // Volatile: the value is patched into .rodata after compilation, so the
    // compiler must not fold the zero initialiser.
    unsafe { core::ptr::read_volatile(&KERNEL_LAYOUT) }
}

/// One field of `KERNEL_LAYOUT`, read on its own: a single load from the
/// frozen read-only map, which the verifier replaces by the value userspace
/// wrote. That known constant is what lets the BTF-typed programs use it as
/// the offset of a direct load. Volatile for the same reason as [`layout`].
macro_rules! layout_field {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(KERNEL_LAYOUT.$field)) };
        value
    }};
}

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
unsafe fn read_kernel<T>(base: *const u8, offset: u32) -> Result<T, ()> {
    bpf_probe_read_kernel(base.add(offset as usize) as *const T).map_err(|_| ())
}

/// Where `skb->dev` lives, seen from the collector (traffic only: drops
/// are counted in every namespace, see [`drop_place`]).
enum Device {
    /// In the collector's network namespace, with this ifindex.
    Local(u32),
    /// In another namespace: someone else's traffic, never counted here.
    Foreign,
    /// No device attached.
    Absent,
}

#[inline(always)]
unsafe fn skb_device(layout: &KernelLayout, skb: *const u8) -> Result<Device, ()> {
    let dev: *const u8 = read_kernel(skb, layout.skb_dev)?;
    if dev.is_null() {
        return Ok(Device::Absent);
    }
    let net: *const u8 = read_kernel(dev, layout.dev_nd_net)?;
    if net.is_null() {
        return Ok(Device::Absent);
    }
    let inum: u32 = read_kernel(net, layout.net_ns_inum)?;
    if inum != layout.netns_inum {
        return Ok(Device::Foreign);
    }
    let ifindex: i32 = read_kernel(dev, layout.dev_ifindex)?;
    Ok(Device::Local(ifindex as u32))
}

/// A direct load of a `T` at `base + offset` inside a kernel object the
/// verifier knows the BTF type of: it checks the access against that type
/// (the offset is a constant from `KERNEL_LAYOUT`) and the JIT emits a load
/// that cannot fault, so no helper is needed.
#[inline(always)]
unsafe fn load<T>(base: *const u8, offset: u32) -> T {
    core::ptr::read_volatile(base.add(offset as usize) as *const T)
}

/// [`skb_device`] for a BTF-typed `skb`: the same walk in direct loads.
#[inline(always)]
unsafe fn skb_device_btf(skb: *const u8) -> Device {
    // Null checks come before any arithmetic: the verifier refuses offsets
    // on a pointer that may still be null.
    if skb.is_null() {
        return Device::Absent;
    }
    let dev: *const u8 = load(skb, layout_field!(skb_dev));
    if dev.is_null() {
        return Device::Absent;
    }
    let net: *const u8 = load(dev, layout_field!(dev_nd_net));
    if net.is_null() {
        return Device::Absent;
    }
    let inum: u32 = load(net, layout_field!(net_ns_inum));
    if inum != layout_field!(netns_inum) {
        return Device::Foreign;
    }
    let ifindex: i32 = load(dev, layout_field!(dev_ifindex));
    Device::Local(ifindex as u32)
}

#[inline(always)]
fn add_traffic(ifindex: u32, rx: bool, len: u32) {
    let entry = match TRAFFIC.get_ptr_mut(ifindex) {
        Some(entry) => entry,
        None => {
            if TRAFFIC
                .insert(ifindex, IfTraffic::default(), BPF_NOEXIST)
                .is_err()
            {
                // Either the map is full or another program on this CPU
                // raced us in; only the first is a lost update.
                if TRAFFIC.get_ptr_mut(ifindex).is_none() {
                    bump(Counter::TrafficMapFull);
                    return;
                }
            }
            match TRAFFIC.get_ptr_mut(ifindex) {
                Some(entry) => entry,
                None => return,
            }
        }
    };
    let entry = unsafe { &mut *entry };
    if rx {
        entry.rx_packets += 1;
        entry.rx_bytes += len as u64;
    } else {
        entry.tx_packets += 1;
        entry.tx_bytes += len as u64;
    }
}

#[inline(always)]
fn count_traffic(ctx: &TracePointContext, skbaddr_off: u32, len_off: u32, rx: bool) {
    let layout = layout();
    let result = unsafe {
        let skb: *const u8 = match ctx.read_at(skbaddr_off as usize) {
            Ok(skb) => skb,
            Err(_) => return bump(Counter::KernelReadError),
        };
        let len: u32 = match ctx.read_at(len_off as usize) {
            Ok(len) => len,
            Err(_) => return bump(Counter::KernelReadError),
        };
        skb_device(&layout, skb).map(|device| (device, len))
    };
    match result {
        Ok((Device::Local(ifindex), len)) => add_traffic(ifindex, rx, len),
        Ok(_) => {}
        Err(()) => bump(Counter::KernelReadError),
    }
}

#[tracepoint]
pub fn netif_receive_skb(ctx: TracePointContext) -> u32 {
    let layout = layout();
    count_traffic(&ctx, layout.rx_skbaddr, layout.rx_len, true);
    0
}

#[tracepoint]
pub fn net_dev_start_xmit(ctx: TracePointContext) -> u32 {
    let layout = layout();
    count_traffic(&ctx, layout.tx_skbaddr, layout.tx_len, false);
    0
}

/// Traffic seen by a BTF-typed program at `skb`, its length read from the skb.
#[inline(always)]
fn count_traffic_btf(skb: *const u8, rx: bool) {
    if let Device::Local(ifindex) = unsafe { skb_device_btf(skb) } {
        let len: u32 = unsafe { load(skb, layout_field!(skb_len)) };
        add_traffic(ifindex, rx, len);
    }
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb_btf(ctx: BtfTracePointContext) -> i32 {
    count_traffic_btf(ctx.arg(0), true);
    0
}

#[btf_tracepoint(function = "net_dev_start_xmit")]
pub fn net_dev_start_xmit_btf(ctx: BtfTracePointContext) -> i32 {
    count_traffic_btf(ctx.arg(0), false);
    0
}

// Drops are counted in every network namespace, keyed by the namespace
// they happened in. Which namespace: the receiving socket's (`rx_sk`, 6.11+:
// `skb->dev` can be cleared or reused by then), else the device's, else the
// socket the skb belongs to (often a local sender); the device's ifindex
// only when the device is in that namespace.

/// Namespace and device of a drop, read with helper calls (classic flavour).
#[inline(always)]
unsafe fn drop_place(
    layout: &KernelLayout,
    skb: *const u8,
    rx_sk: *const u8,
) -> Result<(u32, u32), ()> {
    let mut netns = NETNS_NONE;
    if !rx_sk.is_null() {
        netns = sock_netns(layout, rx_sk)?;
    }
    let dev: *const u8 = read_kernel(skb, layout.skb_dev)?;
    if !dev.is_null() {
        let net: *const u8 = read_kernel(dev, layout.dev_nd_net)?;
        if !net.is_null() {
            let dev_netns: u32 = read_kernel(net, layout.net_ns_inum)?;
            if netns == NETNS_NONE {
                netns = dev_netns;
            }
            if dev_netns == netns {
                let ifindex: i32 = read_kernel(dev, layout.dev_ifindex)?;
                return Ok((netns, ifindex as u32));
            }
        }
    }
    if netns == NETNS_NONE {
        let sk: *const u8 = read_kernel(skb, layout.skb_sk)?;
        if !sk.is_null() {
            netns = sock_netns(layout, sk)?;
        }
    }
    Ok((netns, 0))
}

#[inline(always)]
unsafe fn sock_netns(layout: &KernelLayout, sk: *const u8) -> Result<u32, ()> {
    let net: *const u8 = read_kernel(sk, layout.sk_net)?;
    if net.is_null() {
        return Ok(NETNS_NONE);
    }
    read_kernel(net, layout.net_ns_inum)
}

/// [`drop_place`] for BTF-typed pointers: the same walk in direct loads.
#[inline(always)]
unsafe fn drop_place_btf(skb: *const u8, rx_sk: *const u8) -> (u32, u32) {
    let mut netns = NETNS_NONE;
    if !rx_sk.is_null() {
        netns = sock_netns_btf(rx_sk);
    }
    if skb.is_null() {
        return (netns, 0);
    }
    let dev: *const u8 = load(skb, layout_field!(skb_dev));
    if !dev.is_null() {
        let net: *const u8 = load(dev, layout_field!(dev_nd_net));
        if !net.is_null() {
            let dev_netns: u32 = load(net, layout_field!(net_ns_inum));
            if netns == NETNS_NONE {
                netns = dev_netns;
            }
            if dev_netns == netns {
                let ifindex: i32 = load(dev, layout_field!(dev_ifindex));
                return (netns, ifindex as u32);
            }
        }
    }
    if netns == NETNS_NONE {
        let sk: *const u8 = load(skb, layout_field!(skb_sk));
        if !sk.is_null() {
            netns = sock_netns_btf(sk);
        }
    }
    (netns, 0)
}

#[inline(always)]
unsafe fn sock_netns_btf(sk: *const u8) -> u32 {
    let net: *const u8 = load(sk, layout_field!(sk_net));
    if net.is_null() {
        return NETNS_NONE;
    }
    load(net, layout_field!(net_ns_inum))
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    // The reason is argument 2 and `rx_sk` argument 3 wherever they exist;
    // on older kernels the verifier knows the flag is 0 and never looks at
    // a load of an argument the tracepoint does not have.
    let reason = if layout_field!(btf_drop_has_reason) != 0 {
        let reason: u64 = ctx.arg(2);
        let reason = reason as u32;
        if reason == layout_field!(reason_not_dropped) || reason == layout_field!(reason_consumed) {
            return 0;
        }
        reason
    } else {
        REASON_UNKNOWN
    };
    let rx_sk: *const u8 = if layout_field!(btf_drop_has_rx_sk) != 0 {
        ctx.arg(3)
    } else {
        core::ptr::null()
    };
    let (netns, ifindex) = unsafe { drop_place_btf(ctx.arg(0), rx_sk) };
    count_drop(DropKey {
        netns,
        ifindex,
        reason,
    });
    0
}

#[inline(always)]
fn count_drop(key: DropKey) {
    if let Some(count) = DROPS.get_ptr_mut(key) {
        unsafe { *count += 1 };
        return;
    }
    if key.netns != NETNS_NONE && key.netns != layout_field!(netns_inum) {
        // SAFETY: a helper without arguments, allowed in every tracing program.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        // Already there (not the namespace's first key) or full: both fine,
        // userspace treats a missing time as unknown.
        let _ = NETNS_FIRST_DROP.insert(key.netns, now, BPF_NOEXIST);
    }
    if DROPS.insert(key, 1, BPF_NOEXIST).is_err() {
        match DROPS.get_ptr_mut(key) {
            Some(count) => unsafe { *count += 1 },
            None => bump(Counter::DropMapFull),
        }
    }
}

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let layout = layout();
    let reason = if layout.drop_has_reason != 0 {
        match unsafe { ctx.read_at::<u32>(layout.drop_reason as usize) } {
            Ok(reason) => reason,
            Err(_) => {
                bump(Counter::KernelReadError);
                return 0;
            }
        }
    } else {
        REASON_UNKNOWN
    };
    if layout.drop_has_reason != 0
        && (reason == layout.reason_not_dropped || reason == layout.reason_consumed)
    {
        return 0;
    }
    let place = unsafe {
        let skb: Result<*const u8, _> = ctx.read_at(layout.drop_skbaddr as usize);
        let rx_sk: Result<*const u8, _> = if layout.drop_has_rx_sk != 0 {
            ctx.read_at(layout.drop_rx_sk as usize)
        } else {
            Ok(core::ptr::null())
        };
        match (skb, rx_sk) {
            (Ok(skb), Ok(rx_sk)) => drop_place(&layout, skb, rx_sk),
            _ => Err(()),
        }
    };
    match place {
        Ok((netns, ifindex)) => count_drop(DropKey {
            netns,
            ifindex,
            reason,
        }),
        Err(()) => bump(Counter::KernelReadError),
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
