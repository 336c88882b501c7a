//! A pod's own SNMP counters: the MIB of its network namespace, as
//! `/proc/net/snmp`, `/proc/net/netstat` and `/proc/net/snmp6` show it
//! inside the pod. Which counters are read, and what each is, is the one
//! table [`NETSTAT_FIELDS`]: the source reads its rows and the output
//! serves each row as a family.

use std::collections::BTreeMap;

use serde::Serialize;

use super::PodIdentity;

/// The file under `/proc/<pid>/net/` a counter is read from, by its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NetstatFile {
    /// `snmp`: a line of names, then a line of values, per section.
    Snmp,
    /// `netstat`: the same layout as `snmp` (TcpExt, IpExt...).
    Netstat,
    /// `snmp6`: one `<Section><Name> <value>` per line.
    Snmp6,
}

impl NetstatFile {
    pub const ALL: [NetstatFile; 3] = [NetstatFile::Snmp, NetstatFile::Netstat, NetstatFile::Snmp6];

    /// The path under `/proc/<pid>/`.
    pub fn path(self) -> &'static str {
        match self {
            NetstatFile::Snmp => "net/snmp",
            NetstatFile::Netstat => "net/netstat",
            NetstatFile::Snmp6 => "net/snmp6",
        }
    }
}

/// Which `/metrics` profile serves a counter. `snapshot` reads and shows
/// every counter whatever the profile; `serve` reads only the files that
/// hold a counter of its profile (each file is read whole, so within a
/// file the cost of a counter is its series, one per pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetstatSet {
    /// Served by default: what the shipped alerts, the dashboard's
    /// "TCP health by pod" row and the README's AKS questions read.
    Default,
    /// Served with `--detailed-metrics` only: the rest of node_exporter's
    /// default netstat set.
    Detailed,
}

/// One counter of a namespace's MIB, as node_exporter's netstat collector
/// names it: `<section>_<name>`.
#[derive(Debug, Clone, Copy)]
pub struct NetstatField {
    pub set: NetstatSet,
    pub file: NetstatFile,
    pub section: &'static str,
    pub name: &'static str,
    /// `<section>_<name>`: the key in [`PodNetstat::counters`] and the
    /// end of the metric name.
    pub key: &'static str,
    /// A level (CurrEstab, Forwarding), not a running total.
    pub gauge: bool,
    pub help: &'static str,
}

macro_rules! field {
    ($set:ident, $file:ident, $section:literal, $name:literal, $gauge:literal, $help:literal) => {
        NetstatField {
            set: NetstatSet::$set,
            file: NetstatFile::$file,
            section: $section,
            name: $name,
            key: concat!($section, "_", $name),
            gauge: $gauge,
            help: $help,
        }
    };
}

/// node_exporter's default `--collector.netstat.fields` as issue 27 lists
/// it, with Udp6 from `snmp6`: what someone who reads `node_netstat_*`
/// for the node expects per pod, and no more (each row is one series per
/// pod). The rows marked `Default` are the lean set served without
/// `--detailed-metrics`; why each is there is in docs/metrics.md.
pub const NETSTAT_FIELDS: [NetstatField; 34] = [
    field!(
        Default,
        Snmp,
        "Tcp",
        "ActiveOpens",
        false,
        "TCP connections the pod opened (SYN_SENT from CLOSED)."
    ),
    field!(
        Default,
        Snmp,
        "Tcp",
        "PassiveOpens",
        false,
        "TCP connections the pod accepted (SYN_RECV from LISTEN)."
    ),
    field!(
        Default,
        Snmp,
        "Tcp",
        "CurrEstab",
        true,
        "TCP connections in ESTABLISHED or CLOSE_WAIT now."
    ),
    field!(
        Detailed,
        Snmp,
        "Tcp",
        "InSegs",
        false,
        "TCP segments received, errors included."
    ),
    field!(
        Default,
        Snmp,
        "Tcp",
        "OutSegs",
        false,
        "TCP segments sent, retransmissions excluded."
    ),
    field!(
        Default,
        Snmp,
        "Tcp",
        "RetransSegs",
        false,
        "TCP segments retransmitted."
    ),
    field!(
        Default,
        Snmp,
        "Tcp",
        "InErrs",
        false,
        "TCP segments received in error (bad checksum, header, or no room)."
    ),
    field!(
        Default,
        Snmp,
        "Tcp",
        "OutRsts",
        false,
        "TCP segments sent with RST."
    ),
    field!(
        Detailed,
        Netstat,
        "TcpExt",
        "SyncookiesSent",
        false,
        "SYN cookies sent (the listen queue was full)."
    ),
    field!(
        Detailed,
        Netstat,
        "TcpExt",
        "SyncookiesRecv",
        false,
        "Valid SYN cookies received."
    ),
    field!(
        Detailed,
        Netstat,
        "TcpExt",
        "SyncookiesFailed",
        false,
        "Invalid SYN cookies received."
    ),
    field!(
        Default,
        Netstat,
        "TcpExt",
        "ListenOverflows",
        false,
        "Connections dropped because a listener's accept queue was full."
    ),
    field!(
        Default,
        Netstat,
        "TcpExt",
        "ListenDrops",
        false,
        "SYNs and handshake ACKs dropped at a listener (overflows included)."
    ),
    field!(
        Default,
        Netstat,
        "TcpExt",
        "TCPSynRetrans",
        false,
        "SYN and SYN-ACK retransmissions."
    ),
    field!(
        Default,
        Netstat,
        "TcpExt",
        "TCPTimeouts",
        false,
        "TCP retransmission timeouts."
    ),
    field!(
        Detailed,
        Netstat,
        "TcpExt",
        "TCPOFOQueue",
        false,
        "TCP segments put on the out-of-order queue."
    ),
    field!(
        Detailed,
        Netstat,
        "TcpExt",
        "TCPRcvQDrop",
        false,
        "TCP segments dropped for lack of receive memory."
    ),
    field!(
        Detailed,
        Snmp,
        "Udp",
        "InDatagrams",
        false,
        "UDP datagrams delivered to sockets."
    ),
    field!(
        Detailed,
        Snmp,
        "Udp",
        "OutDatagrams",
        false,
        "UDP datagrams sent."
    ),
    field!(
        Default,
        Snmp,
        "Udp",
        "NoPorts",
        false,
        "UDP datagrams to a port with no socket."
    ),
    field!(
        Default,
        Snmp,
        "Udp",
        "InErrors",
        false,
        "UDP datagrams not delivered for other reasons than NoPorts."
    ),
    field!(
        Default,
        Snmp,
        "Udp",
        "RcvbufErrors",
        false,
        "UDP datagrams dropped because a socket's receive buffer was full."
    ),
    field!(
        Detailed,
        Snmp,
        "Udp",
        "SndbufErrors",
        false,
        "UDP datagrams not sent for lack of send buffer."
    ),
    field!(
        Detailed,
        Snmp6,
        "Udp6",
        "InDatagrams",
        false,
        "UDP over IPv6 datagrams delivered to sockets."
    ),
    field!(
        Detailed,
        Snmp6,
        "Udp6",
        "OutDatagrams",
        false,
        "UDP over IPv6 datagrams sent."
    ),
    field!(
        Detailed,
        Snmp6,
        "Udp6",
        "NoPorts",
        false,
        "UDP over IPv6 datagrams to a port with no socket."
    ),
    field!(
        Detailed,
        Snmp6,
        "Udp6",
        "InErrors",
        false,
        "UDP over IPv6 datagrams not delivered for other reasons than NoPorts."
    ),
    field!(
        Detailed,
        Snmp6,
        "Udp6",
        "RcvbufErrors",
        false,
        "UDP over IPv6 datagrams dropped because a socket's receive buffer was full."
    ),
    field!(
        Detailed,
        Snmp6,
        "Udp6",
        "SndbufErrors",
        false,
        "UDP over IPv6 datagrams not sent for lack of send buffer."
    ),
    field!(
        Detailed,
        Snmp,
        "Ip",
        "Forwarding",
        true,
        "1 when the pod's namespace forwards IPv4, 2 when it does not."
    ),
    field!(
        Detailed,
        Netstat,
        "IpExt",
        "InOctets",
        false,
        "IPv4 octets received."
    ),
    field!(
        Detailed,
        Netstat,
        "IpExt",
        "OutOctets",
        false,
        "IPv4 octets sent."
    ),
    field!(
        Detailed,
        Snmp,
        "Icmp",
        "InMsgs",
        false,
        "ICMP messages received."
    ),
    field!(
        Detailed,
        Snmp,
        "Icmp",
        "OutMsgs",
        false,
        "ICMP messages sent."
    ),
];

/// One pod's counters, read in one collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodNetstat {
    /// The pod (`pod_interface` and `network` unset).
    pub pod: PodIdentity,
    /// Its network namespace's inode (`ns.inum`).
    pub netns: u32,
    /// [`NetstatField::key`] -> value; a field the running kernel does not
    /// have is absent.
    pub counters: BTreeMap<&'static str, u64>,
}

/// How reading pods' counters fared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PodNetstatStatus {
    /// False when the collector was built without the source.
    pub enabled: bool,
    /// Failures by reason since start (see the source's `ERROR_REASONS`).
    pub errors_total: BTreeMap<&'static str, u64>,
}
