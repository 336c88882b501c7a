//! Assembles the [`KernelLayout`] the probes need from tracefs and BTF.

use std::collections::BTreeMap;

use collector_common::KernelLayout;

use super::btf_offsets::{BtfError, KernelBtf};
use super::drop_reasons::ReasonNames;
use super::tracefs::{Tracefs, TracefsError, TracepointFormat};

pub use crate::model::Probe;

/// A reason value no kernel uses; stands in for enumerators this kernel lacks.
const NEVER_A_REASON: u32 = u32::MAX - 1;

/// Where `struct net` keeps the count that reaches 0 when the namespace
/// is torn down (`put_net` then queues it for `cleanup_net`), newest
/// kernels first: `ns_common.__ns_ref` (6.18), `ns_common.count` (6.1,
/// 6.12), `net.count` (5.10), as their BTF has them. A kernel with none of them counts drops of
/// dying namespaces under their inode, as before this check existed.
const NET_REFCOUNT: [&str; 3] = ["ns.__ns_ref", "ns.count", "count"];

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
}

/// What the loader needs: the globals, the names of drop reasons, and
/// which probes this kernel cannot support (with why).
#[derive(Debug, Clone)]
pub struct ProbeLayout {
    pub globals: KernelLayout,
    /// Drop-reason names: the BTF's, else the `kfree_skb` format's.
    pub drop_reason_names: ReasonNames,
    pub has_drop_reason: bool,
    /// Probes whose classic tracepoint cannot be used, with why.
    pub unavailable: BTreeMap<Probe, String>,
    /// Probes whose BTF-typed tracepoint cannot be used, with why.
    pub btf_unavailable: BTreeMap<Probe, String>,
}

/// The tracepoint formats the probes read; a missing one disables its probe.
pub struct TracepointFormats {
    pub formats: BTreeMap<Probe, Result<TracepointFormat, String>>,
}

impl TracepointFormats {
    pub fn read(tracefs: &Tracefs) -> Self {
        let formats = Probe::ALL
            .into_iter()
            .map(|probe| {
                let (category, name) = probe.tracepoint();
                (
                    probe,
                    tracefs.format(category, name).map_err(|e| e.to_string()),
                )
            })
            .collect();
        TracepointFormats { formats }
    }

    /// No format at all (no tracefs): every classic tracepoint is off.
    pub fn unavailable(why: &str) -> Self {
        let formats = Probe::ALL
            .into_iter()
            .map(|probe| (probe, Err(why.to_string())))
            .collect();
        TracepointFormats { formats }
    }

    fn get(&self, probe: Probe) -> Result<&TracepointFormat, String> {
        match self.formats.get(&probe) {
            Some(Ok(format)) => Ok(format),
            Some(Err(error)) => Err(error.clone()),
            None => Err(format!(
                "tracepoint {}:{} not read",
                probe.tracepoint().0,
                probe.tracepoint().1
            )),
        }
    }
}

/// Offsets of `skbaddr` and `len` in a traffic tracepoint's record.
fn traffic_offsets(formats: &TracepointFormats, probe: Probe) -> Result<(u32, u32), String> {
    let format = formats.get(probe)?;
    let skbaddr = format.require("skbaddr").map_err(|e| e.to_string())?.offset;
    let len = format.require("len").map_err(|e| e.to_string())?.offset;
    Ok((skbaddr, len))
}

/// What the BTF-typed programs can rely on, checked so a kernel that
/// reorders its arguments falls back to the classic tracepoint instead of
/// counting garbage.
struct BtfSupport {
    unavailable: BTreeMap<Probe, String>,
    /// `kfree_skb`'s third argument is the drop reason (5.17+).
    drop_has_reason: bool,
    /// `kfree_skb`'s fourth argument is the receiving socket (6.11+).
    drop_has_rx_sk: bool,
}

/// Each tracepoint's first argument must be the `struct sk_buff *` the
/// programs read; `kfree_skb`'s later ones are used only where they are
/// the reason and the receiving socket.
fn btf_support(btf: &KernelBtf) -> BtfSupport {
    let mut unavailable = BTreeMap::new();
    let mut drop_has_reason = false;
    let mut drop_has_rx_sk = false;
    for probe in Probe::ALL {
        let event = probe.tracepoint().1;
        let args = match btf.tracepoint_args(event) {
            Ok(args) => args,
            Err(error) => {
                unavailable.insert(probe, error.to_string());
                continue;
            }
        };
        if let Err(why) = btf_arguments_fit(probe, &args) {
            unavailable.insert(probe, format!("btf_trace_{event}: {why}"));
            continue;
        }
        if probe == Probe::Drop {
            drop_has_reason = args.get(2).map(String::as_str) == Some("enum skb_drop_reason");
            drop_has_rx_sk =
                drop_has_reason && args.get(3).map(String::as_str) == Some("struct sock *");
        }
    }
    BtfSupport {
        unavailable,
        drop_has_reason,
        drop_has_rx_sk,
    }
}

/// Whether a tracepoint's BTF-typed arguments are those its program reads:
/// the skb first for the packet probes; the socket first for the TCP ones,
/// then the two states, or the skb a reset answers.
fn btf_arguments_fit(probe: Probe, args: &[String]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).map(String::as_str);
    let skb = |a: Option<&str>| matches!(a, Some("struct sk_buff *" | "const struct sk_buff *"));
    let sock = |a: Option<&str>| matches!(a, Some("struct sock *" | "const struct sock *"));
    let int = |a: Option<&str>| matches!(a, Some("int" | "const int"));
    let fits = match probe {
        Probe::Rx | Probe::Tx | Probe::Drop => skb(arg(0)),
        Probe::TcpState => sock(arg(0)) && int(arg(1)) && int(arg(2)),
        Probe::TcpSendReset => sock(arg(0)) && skb(arg(1)),
        Probe::TcpRetransmit | Probe::TcpRetransmitSynack | Probe::TcpReceiveReset => sock(arg(0)),
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "arguments {args:?} are not the ones the program reads"
        ))
    }
}

/// Offsets of the named fields in a probe's tracepoint record.
fn record_offsets<const N: usize>(
    formats: &TracepointFormats,
    probe: Probe,
    names: [&str; N],
) -> Result<[u32; N], String> {
    let format = formats.get(probe)?;
    let mut offsets = [0; N];
    for (offset, name) in offsets.iter_mut().zip(names) {
        *offset = format.require(name).map_err(|e| e.to_string())?.offset;
    }
    Ok(offsets)
}

/// Member offsets of the sockets the TCP probes read, `None` when this
/// kernel's BTF lacks one (the TCP probes are then not loaded).
struct TcpOffsets {
    sk_state: u32,
    sk_protocol: u32,
    sk_err: u32,
    tcp_srtt_us: u32,
}

fn tcp_offsets(btf: &KernelBtf) -> Result<TcpOffsets, BtfError> {
    Ok(TcpOffsets {
        sk_state: btf.member_offset("sock", "__sk_common.skc_state")?,
        sk_protocol: btf.member_offset("sock", "sk_protocol")?,
        sk_err: btf.member_offset("sock", "sk_err")?,
        tcp_srtt_us: btf.member_offset("tcp_sock", "srtt_us")?,
    })
}

/// Combines tracepoint record offsets, BTF struct offsets and the namespace
/// to count in. Pure: every input is passed in, so fixtures can drive it.
/// Fails only on what every probe needs (the BTF struct offsets).
pub fn probe_layout(
    formats: &TracepointFormats,
    btf: &KernelBtf,
    netns_inum: u32,
) -> Result<ProbeLayout, LayoutError> {
    let mut unavailable = BTreeMap::new();
    let mut offsets_of = |probe: Probe| match traffic_offsets(formats, probe) {
        Ok(offsets) => offsets,
        Err(reason) => {
            unavailable.insert(probe, reason);
            (0, 0)
        }
    };
    let (rx_skbaddr, rx_len) = offsets_of(Probe::Rx);
    let (tx_skbaddr, tx_len) = offsets_of(Probe::Tx);
    let drop = formats.get(Probe::Drop).and_then(|format| {
        format
            .require("skbaddr")
            .map(|f| (format, f.offset))
            .map_err(|e| e.to_string())
    });
    let (drop_skbaddr, reason, rx_sk, table_names) = match drop {
        Ok((format, skbaddr)) => (
            skbaddr,
            format.field("reason").map(|f| f.offset),
            format.field("rx_sk").map(|f| f.offset),
            format.symbolic_names("reason"),
        ),
        Err(why) => {
            unavailable.insert(Probe::Drop, why);
            (0, None, None, BTreeMap::new())
        }
    };
    let mut record = |probe: Probe, names| match record_offsets(formats, probe, names) {
        Ok(offsets) => offsets,
        Err(reason) => {
            unavailable.insert(probe, reason);
            [0; 4]
        }
    };
    let state = record(
        Probe::TcpState,
        ["skaddr", "oldstate", "newstate", "protocol"],
    );
    let [retransmit_skaddr, retransmit_state, ..] = record(
        Probe::TcpRetransmit,
        ["skaddr", "state", "skaddr", "skaddr"],
    );
    let [synack_skaddr, ..] = record(Probe::TcpRetransmitSynack, ["skaddr"; 4]);
    let [send_reset_skbaddr, send_reset_skaddr, ..] = record(
        Probe::TcpSendReset,
        ["skbaddr", "skaddr", "skaddr", "skaddr"],
    );
    let [receive_reset_skaddr, ..] = record(Probe::TcpReceiveReset, ["skaddr"; 4]);
    let mut support = btf_support(btf);
    let tcp = match tcp_offsets(btf) {
        Ok(tcp) => Some(tcp),
        Err(error) => {
            for probe in Probe::TCP {
                unavailable.insert(probe, error.to_string());
                support.unavailable.insert(probe, error.to_string());
            }
            None
        }
    };
    let drop_reason_names =
        ReasonNames::from_btf(btf).unwrap_or_else(|| ReasonNames::from_table(table_names));
    let enum_value = |name: &str| {
        btf.enum_value("skb_drop_reason", name)
            .ok()
            .flatten()
            .unwrap_or(NEVER_A_REASON)
    };
    let net_refcount = NET_REFCOUNT
        .iter()
        .find_map(|path| btf.member_offset("net", path).ok());
    let globals = KernelLayout {
        netns_inum,
        rx_skbaddr,
        rx_len,
        tx_skbaddr,
        tx_len,
        drop_skbaddr,
        drop_reason: reason.unwrap_or(0),
        drop_has_reason: u32::from(reason.is_some()),
        reason_not_dropped: enum_value("SKB_NOT_DROPPED_YET"),
        reason_consumed: enum_value("SKB_CONSUMED"),
        skb_dev: btf.member_offset("sk_buff", "dev")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        dev_nd_net: btf.member_offset("net_device", "nd_net.net")?,
        net_ns_inum: btf.member_offset("net", "ns.inum")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        btf_drop_has_reason: u32::from(support.drop_has_reason),
        drop_rx_sk: rx_sk.unwrap_or(0),
        drop_has_rx_sk: u32::from(rx_sk.is_some()),
        btf_drop_has_rx_sk: u32::from(support.drop_has_rx_sk),
        skb_sk: btf.member_offset("sk_buff", "sk")?,
        sk_net: btf.member_offset("sock", "__sk_common.skc_net.net")?,
        dev_adj_upper: btf.member_offset("net_device", "adj_list.upper")?,
        dev_adj_lower: btf.member_offset("net_device", "adj_list.lower")?,
        list_prev: btf.member_offset("list_head", "prev")?,
        net_refcount: net_refcount.unwrap_or(0),
        net_has_refcount: u32::from(net_refcount.is_some()),
        state_skaddr: state[0],
        state_oldstate: state[1],
        state_newstate: state[2],
        state_protocol: state[3],
        retransmit_skaddr,
        retransmit_state,
        synack_skaddr,
        send_reset_skbaddr,
        send_reset_skaddr,
        receive_reset_skaddr,
        sk_state: tcp.as_ref().map_or(0, |t| t.sk_state),
        sk_protocol: tcp.as_ref().map_or(0, |t| t.sk_protocol),
        sk_err: tcp.as_ref().map_or(0, |t| t.sk_err),
        tcp_srtt_us: tcp.as_ref().map_or(0, |t| t.tcp_srtt_us),
    };
    Ok(ProbeLayout {
        globals,
        drop_reason_names,
        has_drop_reason: reason.is_some(),
        unavailable,
        btf_unavailable: support.unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made BTF fixture (offsets no kernel has), never the host's
    /// /sys/kernel/btf: unit tests must not depend on the build machine's
    /// kernel, and distinctive offsets show they come from the BTF.
    fn tiny_btf() -> KernelBtf {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/btf/tiny.btf");
        KernelBtf::from_file(std::path::Path::new(path)).unwrap()
    }

    fn fixture(kernel: &str, name: &str) -> TracepointFormat {
        let path = format!(
            "{}/tests/fixtures/tracefs/{kernel}/{name}.format",
            env!("CARGO_MANIFEST_DIR")
        );
        TracepointFormat::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
    }

    fn formats(kernel: &str) -> TracepointFormats {
        let formats = BTreeMap::from([
            (Probe::Rx, Ok(fixture("6.18", "netif_receive_skb"))),
            (Probe::Tx, Ok(fixture(kernel, "net_dev_start_xmit"))),
            (Probe::Drop, Ok(fixture(kernel, "kfree_skb"))),
        ]);
        TracepointFormats { formats }
    }

    #[test]
    fn every_captured_kernel_yields_a_complete_layout() {
        let btf = tiny_btf();
        // Captured from real kernels (see tests/fixtures/tracefs/README.md).
        for (kernel, has_reason) in [
            ("5.10", false),
            ("6.1", true),
            ("6.12", true),
            ("6.18", true),
        ] {
            let own = TracepointFormats {
                formats: Probe::ALL
                    .into_iter()
                    .map(|probe| (probe, Ok(fixture(kernel, probe.tracepoint().1))))
                    .collect(),
            };
            let layout = probe_layout(&own, &btf, 1).unwrap();
            assert!(
                layout.unavailable.is_empty(),
                "{kernel}: {:?}",
                layout.unavailable
            );
            assert_eq!(layout.has_drop_reason, has_reason, "{kernel}");
            // Names are the BTF's whatever the format says.
            assert_eq!(layout.drop_reason_names.name(3), "NO_SOCKET", "{kernel}");
            let has_rx_sk = matches!(kernel, "6.12" | "6.18");
            assert_eq!(
                layout.globals.drop_has_rx_sk,
                u32::from(has_rx_sk),
                "{kernel}"
            );
            assert_eq!(
                (layout.globals.rx_len, layout.globals.tx_len),
                (16, 36),
                "{kernel}"
            );
            // The socket members are the fixture BTF's.
            let g = &layout.globals;
            assert_eq!(
                (g.sk_state, g.sk_protocol, g.sk_err, g.tcp_srtt_us),
                (10, 40, 44, 100),
                "{kernel}"
            );
            if kernel != "6.18" {
                continue;
            }
            // The TCP records as 6.18 lays them out.
            assert_eq!(
                (
                    g.state_skaddr,
                    g.state_oldstate,
                    g.state_newstate,
                    g.state_protocol
                ),
                (8, 16, 20, 30),
                "{kernel}"
            );
            assert_eq!(
                (g.retransmit_skaddr, g.retransmit_state, g.synack_skaddr),
                (16, 24, 8),
                "{kernel}"
            );
            assert_eq!(
                (
                    g.send_reset_skbaddr,
                    g.send_reset_skaddr,
                    g.receive_reset_skaddr
                ),
                (8, 16, 8),
                "{kernel}"
            );
        }
    }

    #[test]
    fn a_5_15_kernel_counts_drops_without_reason() {
        let btf = tiny_btf();
        let layout = probe_layout(&formats("5.15"), &btf, 7).unwrap();
        assert!(!layout.has_drop_reason);
        assert_eq!(layout.globals.drop_has_reason, 0);
        assert_eq!(layout.globals.drop_has_rx_sk, 0);
        assert_eq!(layout.globals.drop_skbaddr, 8);
        assert_eq!(layout.globals.netns_inum, 7);
    }

    #[test]
    fn reason_offsets_and_names_follow_the_kernel() {
        let btf = tiny_btf();
        let old = probe_layout(&formats("6.1"), &btf, 1).unwrap();
        let new = probe_layout(&formats("6.18"), &btf, 1).unwrap();
        assert_eq!((old.globals.drop_reason, new.globals.drop_reason), (28, 36));
        // Names follow the BTF, not a table of either format.
        assert_eq!(old.drop_reason_names, new.drop_reason_names);
        assert_eq!(new.drop_reason_names.name(3), "NO_SOCKET");
        assert_eq!(new.globals.drop_rx_sk, 24);
        assert_eq!(new.globals.tx_len, 36);
        // Struct offsets are the fixture's (see make_tiny_btf.py).
        assert_eq!(
            (
                new.globals.skb_dev,
                new.globals.dev_ifindex,
                new.globals.dev_nd_net,
                new.globals.net_ns_inum
            ),
            (8, 0, 8, 12)
        );
        assert_eq!((new.globals.skb_sk, new.globals.sk_net), (24, 24));
        // The list heads a device pointer is checked by, and the
        // namespace count found at `ns.count` (the fixture has no
        // `ns.__ns_ref`).
        assert_eq!(
            (
                new.globals.dev_adj_upper,
                new.globals.dev_adj_lower,
                new.globals.list_prev
            ),
            (16, 32, 8)
        );
        assert_eq!(
            (new.globals.net_refcount, new.globals.net_has_refcount),
            (8, 1)
        );
        // The fixture has no btf_trace_kfree_skb: no BTF-typed rx_sk.
        assert_eq!(new.globals.btf_drop_has_rx_sk, 0);
    }

    #[test]
    fn a_probe_whose_format_lacks_a_field_or_is_missing_is_unavailable_alone() {
        let btf = tiny_btf();
        let mut broken = formats("6.18");
        if let Some(Ok(rx)) = broken.formats.get_mut(&Probe::Rx) {
            rx.fields.retain(|f| f.name != "len");
        }
        broken.formats.insert(
            Probe::Drop,
            Err("events/skb/kfree_skb/format: No such file".into()),
        );
        let layout = probe_layout(&broken, &btf, 1).unwrap();
        let rx_reason = &layout.unavailable[&Probe::Rx];
        assert!(
            rx_reason.contains("netif_receive_skb") && rx_reason.contains("`len`"),
            "{rx_reason}"
        );
        assert!(layout.unavailable[&Probe::Drop].contains("kfree_skb"));
        assert!(!layout.unavailable.contains_key(&Probe::Tx));
        assert_eq!(layout.globals.tx_len, 36);
    }
}
