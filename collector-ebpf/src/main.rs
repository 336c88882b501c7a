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

mod tcp;
mod walk;

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use collector_common::{
    drop_slot_index, Counter, DropKey, DropSlot, IfTraffic, KernelLayout, DROP_MAP_ENTRIES,
    DROP_SLOT_COUNT, NETNS_NONE, REASON_UNKNOWN, TRAFFIC_MAP_ENTRIES,
};
use walk::{drop_place, layout_field, skb_device, Device, Direct, Helper, Memory};

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
    dev_adj_upper: 0,
    dev_adj_lower: 0,
    list_prev: 0,
    net_refcount: 0,
    net_has_refcount: 0,
    state_skaddr: 0,
    state_oldstate: 0,
    state_newstate: 0,
    state_protocol: 0,
    retransmit_skaddr: 0,
    retransmit_state: 0,
    synack_skaddr: 0,
    send_reset_skbaddr: 0,
    send_reset_skaddr: 0,
    receive_reset_skaddr: 0,
    sk_state: 0,
    sk_protocol: 0,
    sk_err: 0,
    tcp_srtt_us: 0,
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

/// Per-CPU write-back slots in front of `DROPS` (see `DropSlot`).
#[map]
static DROP_SLOTS: PerCpuArray<DropSlot> = PerCpuArray::with_max_entries(DROP_SLOT_COUNT, 0);

/// Bumped by userspace after it deletes drop keys (see `DropSlot::epoch`).
#[map]
static DROP_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot, and a program never runs nested on one
        // CPU (the kernel's `prog->active`), so nothing else writes it now.
        unsafe { *slot += 1 };
    }
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
                // Either the map is full or another CPU inserted the same
                // key first; only the first is a lost update.
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
    // SAFETY: this CPU's copy of a per-CPU value, written by no one else
    // while the program runs (see `bump`).
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
    // SAFETY: the offsets are the record's `skbaddr` and `len` fields, from
    // this kernel's tracefs format; `read_at` copies them with a helper.
    let record = unsafe {
        (
            ctx.read_at::<*const u8>(skbaddr_off as usize),
            ctx.read_at::<u32>(len_off as usize),
        )
    };
    let (Ok(skb), Ok(len)) = record else {
        return bump(Counter::KernelReadError);
    };
    // SAFETY: `skb` is the tracepoint's skb, read with helper calls.
    match unsafe { skb_device::<Helper>(skb) } {
        Some(Device::Local(ifindex)) => add_traffic(ifindex, rx, len),
        Some(_) => {}
        None => bump(Counter::KernelReadError),
    }
}

#[tracepoint]
pub fn netif_receive_skb(ctx: TracePointContext) -> u32 {
    count_traffic(&ctx, layout_field!(rx_skbaddr), layout_field!(rx_len), true);
    0
}

#[tracepoint]
pub fn net_dev_start_xmit(ctx: TracePointContext) -> u32 {
    count_traffic(
        &ctx,
        layout_field!(tx_skbaddr),
        layout_field!(tx_len),
        false,
    );
    0
}

/// Traffic seen by a BTF-typed program at `skb`, its length read from the skb.
#[inline(always)]
fn count_traffic_btf(skb: *const u8, rx: bool) {
    // SAFETY: `skb` is the tracepoint's BTF-typed argument.
    if let Some(Device::Local(ifindex)) = unsafe { skb_device::<Direct>(skb) } {
        // SAFETY: non-null (a Local device was read through it).
        let len = unsafe { Direct::read::<u32>(skb, layout_field!(skb_len)) };
        add_traffic(ifindex, rx, len.unwrap_or(0));
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
    // SAFETY: the tracepoint's own BTF-typed arguments.
    match unsafe { drop_place::<Direct>(ctx.arg(0), rx_sk) } {
        Some((netns, ifindex)) => count_drop(DropKey {
            netns,
            ifindex,
            reason,
        }),
        None => bump(Counter::KernelReadError),
    }
    0
}

/// Counts one drop: in this CPU's slot for the key when the slot holds it,
/// else in the drop map, the slot then taken for the key.
#[inline(always)]
fn count_drop(key: DropKey) {
    let (Some(generation), Some(slot)) = (
        DROP_GENERATION.get_ptr(0),
        DROP_SLOTS.get_ptr_mut(drop_slot_index(&key)),
    ) else {
        count_in_map(key);
        return;
    };
    // SAFETY: an array element, valid for the program's run; the slot is
    // this CPU's copy (see `bump`).
    let (epoch, slot) = unsafe { ((*generation).wrapping_add(1), &mut *slot) };
    if slot.epoch == epoch && slot.key == key {
        slot.pending += 1;
        return;
    }
    if slot.epoch != 0 {
        release(slot);
    }
    if count_in_map(key) {
        slot.key = key;
        slot.born = namespace_born(key.netns);
        slot.pending = 0;
        slot.epoch = epoch;
    }
}

/// Moves a slot's pending count into its key's entry of this CPU, if the
/// entry is still there for the same life of the namespace; otherwise the
/// key was deleted (its namespace or device forgotten) and so is the count.
#[inline(always)]
fn release(slot: &mut DropSlot) {
    if slot.pending != 0 && namespace_born(slot.key.netns) == slot.born {
        if let Some(count) = DROPS.get_ptr_mut(slot.key) {
            // SAFETY: this CPU's copy of a per-CPU value (see `bump`).
            unsafe { *count += slot.pending };
        }
    }
    slot.pending = 0;
    slot.epoch = 0;
}

/// The first-drop time of a namespace other than the collector's, 0 when
/// it has none.
#[inline(always)]
fn namespace_born(netns: u32) -> u64 {
    if netns == NETNS_NONE || netns == layout_field!(netns_inum) {
        return 0;
    }
    // SAFETY: a value of a map this program reads only.
    unsafe { NETNS_FIRST_DROP.get(netns).copied().unwrap_or(0) }
}

/// Counts one drop in the drop map; false when the map is full.
#[inline(always)]
fn count_in_map(key: DropKey) -> bool {
    if let Some(count) = DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's copy of a per-CPU value (see `bump`).
        unsafe { *count += 1 };
        return true;
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
            // SAFETY: as above; another CPU inserted the key first.
            Some(count) => unsafe { *count += 1 },
            None => {
                bump(Counter::DropMapFull);
                return false;
            }
        }
    }
    true
}

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let has_reason = layout_field!(drop_has_reason) != 0;
    let reason = if has_reason {
        // SAFETY: the record's `reason` field, at its tracefs offset.
        match unsafe { ctx.read_at::<u32>(layout_field!(drop_reason) as usize) } {
            Ok(reason) => reason,
            Err(_) => {
                bump(Counter::KernelReadError);
                return 0;
            }
        }
    } else {
        REASON_UNKNOWN
    };
    if has_reason
        && (reason == layout_field!(reason_not_dropped) || reason == layout_field!(reason_consumed))
    {
        return 0;
    }
    // SAFETY: the record's `skbaddr` and `rx_sk` fields at their tracefs
    // offsets, then a walk with helper reads from the pointers they hold.
    let place = unsafe {
        let skb = ctx.read_at::<*const u8>(layout_field!(drop_skbaddr) as usize);
        let rx_sk = if layout_field!(drop_has_rx_sk) != 0 {
            ctx.read_at::<*const u8>(layout_field!(drop_rx_sk) as usize)
        } else {
            Ok(core::ptr::null())
        };
        match (skb, rx_sk) {
            (Ok(skb), Ok(rx_sk)) => drop_place::<Helper>(skb, rx_sk),
            _ => None,
        }
    };
    match place {
        Some((netns, ifindex)) => count_drop(DropKey {
            netns,
            ifindex,
            reason,
        }),
        None => bump(Counter::KernelReadError),
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
