//! Assembles the [`KernelLayout`] the probes need from tracefs and BTF.

use std::collections::BTreeMap;

use collector_common::KernelLayout;

use super::btf_offsets::{BtfError, KernelBtf};
use super::tracefs::{Tracefs, TracefsError, TracepointFormat};

/// The tracepoints the probes attach to, as (category, name).
pub const RX_TRACEPOINT: (&str, &str) = ("net", "netif_receive_skb");
pub const TX_TRACEPOINT: (&str, &str) = ("net", "net_dev_start_xmit");
pub const DROP_TRACEPOINT: (&str, &str) = ("skb", "kfree_skb");

/// A reason value no kernel uses; stands in for enumerators this kernel lacks.
const NEVER_A_REASON: u32 = u32::MAX - 1;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
}

/// What the loader needs: the globals, and the names of drop reasons.
#[derive(Debug, Clone)]
pub struct ProbeLayout {
    pub globals: KernelLayout,
    /// Drop-reason value -> kernel name without the `SKB_DROP_REASON_` prefix.
    pub drop_reason_names: BTreeMap<u32, String>,
    pub has_drop_reason: bool,
}

/// The three tracepoint formats the probes read.
pub struct TracepointFormats {
    pub rx: TracepointFormat,
    pub tx: TracepointFormat,
    pub drop: TracepointFormat,
}

impl TracepointFormats {
    pub fn read(tracefs: &Tracefs) -> Result<Self, TracefsError> {
        Ok(TracepointFormats {
            rx: tracefs.format(RX_TRACEPOINT.0, RX_TRACEPOINT.1)?,
            tx: tracefs.format(TX_TRACEPOINT.0, TX_TRACEPOINT.1)?,
            drop: tracefs.format(DROP_TRACEPOINT.0, DROP_TRACEPOINT.1)?,
        })
    }
}

/// Combines tracepoint record offsets, BTF struct offsets and the namespace
/// to count in. Pure: every input is passed in, so fixtures can drive it.
pub fn probe_layout(
    formats: &TracepointFormats,
    btf: &KernelBtf,
    netns_inum: u32,
) -> Result<ProbeLayout, LayoutError> {
    let reason = formats.drop.field("reason");
    let drop_reason_names = formats.drop.symbolic_names("reason");
    let enum_value = |name: &str| {
        btf.enum_value("skb_drop_reason", name)
            .ok()
            .flatten()
            .unwrap_or(NEVER_A_REASON)
    };
    let globals = KernelLayout {
        netns_inum,
        rx_skbaddr: formats.rx.require("skbaddr")?.offset,
        rx_len: formats.rx.require("len")?.offset,
        tx_skbaddr: formats.tx.require("skbaddr")?.offset,
        tx_len: formats.tx.require("len")?.offset,
        drop_skbaddr: formats.drop.require("skbaddr")?.offset,
        drop_reason: reason.map_or(0, |f| f.offset),
        drop_has_reason: u32::from(reason.is_some()),
        reason_not_dropped: enum_value("SKB_NOT_DROPPED_YET"),
        reason_consumed: enum_value("SKB_CONSUMED"),
        skb_dev: btf.member_offset("sk_buff", "dev")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        dev_nd_net: btf.member_offset("net_device", "nd_net.net")?,
        net_ns_inum: btf.member_offset("net", "ns.inum")?,
    };
    Ok(ProbeLayout {
        globals,
        drop_reason_names,
        has_drop_reason: reason.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf_offsets::VMLINUX_BTF;

    fn fixture(kernel: &str, name: &str) -> TracepointFormat {
        let path = format!(
            "{}/tests/fixtures/tracefs/{kernel}/{name}.format",
            env!("CARGO_MANIFEST_DIR")
        );
        TracepointFormat::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
    }

    fn formats(kernel: &str) -> TracepointFormats {
        TracepointFormats {
            rx: fixture("6.18", "netif_receive_skb"),
            tx: fixture(kernel, "net_dev_start_xmit"),
            drop: fixture(kernel, "kfree_skb"),
        }
    }

    #[test]
    fn a_5_15_kernel_counts_drops_without_reason() {
        let btf = KernelBtf::from_file(std::path::Path::new(VMLINUX_BTF)).unwrap();
        let layout = probe_layout(&formats("5.15"), &btf, 7).unwrap();
        assert!(!layout.has_drop_reason);
        assert_eq!(layout.globals.drop_has_reason, 0);
        assert!(layout.drop_reason_names.is_empty());
        assert_eq!(layout.globals.drop_skbaddr, 8);
        assert_eq!(layout.globals.netns_inum, 7);
    }

    #[test]
    fn reason_offsets_and_names_follow_the_kernel() {
        let btf = KernelBtf::from_file(std::path::Path::new(VMLINUX_BTF)).unwrap();
        let old = probe_layout(&formats("6.1"), &btf, 1).unwrap();
        let new = probe_layout(&formats("6.18"), &btf, 1).unwrap();
        assert_eq!((old.globals.drop_reason, new.globals.drop_reason), (28, 36));
        assert_eq!(old.drop_reason_names[&2], "NO_SOCKET");
        assert_eq!(new.drop_reason_names[&3], "NO_SOCKET");
        assert_eq!(new.globals.tx_len, 36);
        assert_eq!(
            new.globals.skb_dev,
            btf.member_offset("sk_buff", "dev").unwrap()
        );
    }

    #[test]
    fn a_format_without_a_needed_field_is_an_error_naming_it() {
        let btf = KernelBtf::from_file(std::path::Path::new(VMLINUX_BTF)).unwrap();
        let mut broken = formats("6.18");
        broken.rx.fields.retain(|f| f.name != "len");
        let error = probe_layout(&broken, &btf, 1).unwrap_err().to_string();
        assert!(
            error.contains("netif_receive_skb") && error.contains("`len`"),
            "{error}"
        );
    }
}
