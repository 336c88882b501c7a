//! The walks from an `sk_buff` to its device and namespace, written once
//! for both flavours over a [`Memory`]: helper reads for the classic
//! tracepoints, direct loads for the BTF-typed ones.
//!
//! Every offset comes from `KERNEL_LAYOUT` through `layout_field!`, one
//! load of the frozen read-only map each: the verifier replaces it by the
//! value userspace wrote, which is what lets a direct load use it as a
//! constant offset.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use collector_common::{NETNS_INUM_FLOOR, NETNS_NONE};

use crate::KERNEL_LAYOUT;

/// One field of `KERNEL_LAYOUT`, read on its own (see the module doc).
/// Volatile: the value is patched into .rodata after compilation, so the
/// compiler must not fold the zero initialiser.
macro_rules! layout_field {
    ($field:ident) => {{
        // SAFETY: a read of a field of a static that lives for the whole
        // program; volatile only so the compiler keeps the load.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(KERNEL_LAYOUT.$field)) };
        value
    }};
}
pub(crate) use layout_field;

/// How a program reads kernel memory.
pub trait Memory {
    /// The `T` at `base + offset`, `None` when it cannot be read.
    ///
    /// # Safety
    /// `base` must be a kernel pointer the program was handed or read from
    /// kernel memory, and `offset` a member offset of its type from the
    /// kernel's BTF; neither implementation dereferences it in the
    /// program's own memory.
    unsafe fn read<T: Copy>(base: *const u8, offset: u32) -> Option<T>;
}

/// `bpf_probe_read_kernel`: any address, a failed read is `None`.
pub struct Helper;

impl Memory for Helper {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
        // SAFETY: the helper copies from kernel memory into the program's
        // stack and reports a fault instead of taking it; `add` only
        // computes an address, which is never dereferenced here.
        unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
    }
}

/// A direct load inside a kernel object the verifier knows the BTF type
/// of: it checks the access against that type (the offset is a constant
/// from `KERNEL_LAYOUT`) and the JIT emits a load whose fault reads as 0,
/// so no helper is needed and it never fails.
pub struct Direct;

impl Memory for Direct {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
        // SAFETY: in a BTF-typed program `base` is a BTF pointer, checked
        // non-null by every caller before the arithmetic (the verifier
        // refuses offsets on a maybe-null pointer); the verifier turns the
        // load into one that cannot fault.
        unsafe {
            Some(core::ptr::read_volatile(
                base.add(offset as usize) as *const T
            ))
        }
    }
}

/// Where `skb->dev` lives, seen from the collector (traffic only: drops
/// are counted in every namespace, see [`drop_place`]).
pub enum Device {
    /// In the collector's network namespace, with this ifindex.
    Local(u32),
    /// In another namespace: someone else's traffic, never counted here.
    Foreign,
    /// No device attached.
    Absent,
}

/// The device a traffic tracepoint's skb is on. Here `skb->dev` is always
/// a device: the receive and transmit paths set it before these
/// tracepoints. `None` when a read fails.
///
/// # Safety
/// `skb` is the tracepoint's `struct sk_buff *`.
#[inline(always)]
pub unsafe fn skb_device<M: Memory>(skb: *const u8) -> Option<Device> {
    // Null checks come before any arithmetic: the verifier refuses offsets
    // on a pointer that may still be null.
    if skb.is_null() {
        return Some(Device::Absent);
    }
    // SAFETY: each base is non-null and read at a member offset of its type.
    unsafe {
        let dev: *const u8 = M::read(skb, layout_field!(skb_dev))?;
        if dev.is_null() {
            return Some(Device::Absent);
        }
        let net: *const u8 = M::read(dev, layout_field!(dev_nd_net))?;
        if net.is_null() {
            return Some(Device::Absent);
        }
        let inum: u32 = M::read(net, layout_field!(net_ns_inum))?;
        if inum != layout_field!(netns_inum) {
            return Some(Device::Foreign);
        }
        let ifindex: i32 = M::read(dev, layout_field!(dev_ifindex))?;
        Some(Device::Local(ifindex as u32))
    }
}

// Which namespace a drop belongs to: the receiving socket's (`rx_sk`,
// 6.11+), else the device's, else the socket owning the skb (often a local
// sender); the device's ifindex only when the device is in that namespace.
//
// The device goes before `skb->sk` because a device is in the namespace the
// skb is in (a namespace crossing sets `skb->dev` to the peer), while the
// socket may be a sender's in another namespace: the `skb_scrub_packet`
// of current kernels keeps the socket on a crossing, and `ip_rcv_core`
// orphans the skb only later. But before 6.11 `skb->dev` is not always a device: it shares its
// bytes with `rbnode.rb_left` (TCP out-of-order and retransmit queues, IP
// fragment queues, netem, fq) and with UDP's `dev_scratch`. So a device is
// trusted only if its two `adj_list` heads are well formed (each next
// node's `prev` points back to the head: true of a device from allocation
// to free, also while it is unregistered, and of almost nothing else), its
// ifindex is positive and its namespace's inode is one a namespace can
// have; otherwise the skb is taken to have no device. Queued TCP skbs are
// owned by their receiving socket (`skb_set_owner_r`), which then names
// the namespace; fragments (`ip_defrag` orphans them) and `dev_scratch`
// UDP skbs have no socket and count at node level.

/// The namespace and device of a drop: (`ns.inum`, ifindex), (0, 0) when
/// no live namespace is found. `None` when the skb itself cannot be read
/// (classic flavour only).
///
/// # Safety
/// `skb` and `rx_sk` are the tracepoint's pointers (`rx_sk` may be null).
#[inline(always)]
pub unsafe fn drop_place<M: Memory>(skb: *const u8, rx_sk: *const u8) -> Option<(u32, u32)> {
    // SAFETY: every pointer is checked non-null before it is read, at a
    // member offset of its type.
    unsafe {
        let rx_net = if rx_sk.is_null() {
            core::ptr::null()
        } else {
            sock_net::<M>(rx_sk)
        };
        if skb.is_null() {
            return Some(namespace::<M>(rx_net, 0));
        }
        let dev: *const u8 = M::read(skb, layout_field!(skb_dev))?;
        if let Some((dev_net, ifindex)) = device::<M>(dev) {
            if rx_net.is_null() || rx_net == dev_net {
                return Some(namespace::<M>(dev_net, ifindex));
            }
        }
        if !rx_net.is_null() {
            return Some(namespace::<M>(rx_net, 0));
        }
        let sk: *const u8 = M::read(skb, layout_field!(skb_sk))?;
        if sk.is_null() {
            return Some((NETNS_NONE, 0));
        }
        Some(namespace::<M>(sock_net::<M>(sk), 0))
    }
}

/// `dev`'s namespace and ifindex if `dev` is a device.
///
/// # Safety
/// `dev` is a value read from `skb->dev`: a device, null, or not a device.
#[inline(always)]
unsafe fn device<M: Memory>(dev: *const u8) -> Option<(*const u8, u32)> {
    if dev.is_null() {
        return None;
    }
    // SAFETY: `dev` is non-null; a read through a pointer that is not what
    // its type says fails (helper) or reads 0 (direct load).
    unsafe {
        if !list_head::<M>(dev, layout_field!(dev_adj_upper))
            || !list_head::<M>(dev, layout_field!(dev_adj_lower))
        {
            return None;
        }
        let ifindex: i32 = M::read(dev, layout_field!(dev_ifindex))?;
        if ifindex <= 0 {
            return None;
        }
        let net: *const u8 = M::read(dev, layout_field!(dev_nd_net))?;
        if net.is_null() {
            return None;
        }
        Some((net, ifindex as u32))
    }
}

/// Whether the `struct list_head` at `base + offset` is a well-formed
/// list head: its next node's `prev` points back to it, as for every list
/// head the kernel keeps, empty (pointing to itself) or not.
///
/// # Safety
/// `base` is non-null.
#[inline(always)]
unsafe fn list_head<M: Memory>(base: *const u8, offset: u32) -> bool {
    // SAFETY: `base` and `next` are non-null when read.
    unsafe {
        let Some(next) = M::read::<*const u8>(base, offset) else {
            return false;
        };
        if next.is_null() {
            return false;
        }
        match M::read::<*const u8>(next, layout_field!(list_prev)) {
            Some(back) => back as usize == base as usize + offset as usize,
            None => false,
        }
    }
}

/// The `struct net *` of a socket, null when unreadable.
///
/// # Safety
/// `sk` is a non-null `struct sock *`.
#[inline(always)]
pub(crate) unsafe fn sock_net<M: Memory>(sk: *const u8) -> *const u8 {
    // SAFETY: `sk` is non-null (the caller's contract).
    unsafe { M::read(sk, layout_field!(sk_net)).unwrap_or(core::ptr::null()) }
}

/// The key part of a drop in `net`: its inode and `ifindex`, or (0, 0)
/// when `net` is null, not a namespace, or being torn down. A namespace
/// whose count has reached 0 is in `cleanup_net`: the kernel's own
/// `check_net` and `maybe_get_net` treat it as dead, its inode is freed
/// next and handed to the next namespace, so its drops (queues purged as
/// its devices go) are node-level, never the inode's.
///
/// # Safety
/// `net` is null or read from a `possible_net_t`.
#[inline(always)]
pub(crate) unsafe fn namespace<M: Memory>(net: *const u8, ifindex: u32) -> (u32, u32) {
    if net.is_null() {
        return (NETNS_NONE, 0);
    }
    // SAFETY: `net` is non-null and read at member offsets of `struct net`.
    unsafe {
        if layout_field!(net_has_refcount) != 0 {
            match M::read::<u32>(net, layout_field!(net_refcount)) {
                Some(count) if count != 0 => {}
                _ => return (NETNS_NONE, 0),
            }
        }
        let inum: u32 = match M::read(net, layout_field!(net_ns_inum)) {
            Some(inum) => inum,
            None => return (NETNS_NONE, 0),
        };
        if inum != layout_field!(netns_inum) && inum < NETNS_INUM_FLOOR {
            return (NETNS_NONE, 0);
        }
        (inum, ifindex)
    }
}
