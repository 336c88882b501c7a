//! Terminal table of a [`Snapshot`], the `ip -s link` replacement view.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;

use crate::model::PodIdentity;
use crate::model::Snapshot;

/// Characters a terminal would obey or hide rather than show, beyond the
/// control characters (Unicode category Cc): the format characters
/// (category Cf: bidirectional overrides and isolates such as U+202E, which
/// reorder what follows on screen, zero-width characters, the BOM, tags)
/// and the line and paragraph separators.
const INVISIBLE: [(char, char); 21] = [
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{2028}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

fn shown_escaped(c: char) -> bool {
    c.is_control()
        || INVISIBLE
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&c))
}

/// Text from the kernel or the environment made safe for a terminal: an
/// interface name may hold ESC and other control characters (the kernel
/// accepts any byte but NUL, `/`, `:` and white space), and a node name
/// anything; either would otherwise reach the terminal as commands, or as
/// a bidirectional override that makes the line read differently. Each
/// such character is shown as `\xNN` (or `\u{NNNN}` beyond one byte), the
/// form the name policy already uses for bytes that are not UTF-8
/// (`sources::netlink::name_from_bytes`).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(shown_escaped) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if shown_escaped(c) && (c as u32) < 0x100 => {
                let _ = write!(shown, "\\x{:02x}", c as u32);
            }
            c if shown_escaped(c) => {
                let _ = write!(shown, "\\u{{{:04x}}}", c as u32);
            }
            c => shown.push(c),
        }
    }
    Cow::Owned(shown)
}

/// Binary units as `ip -h` prints them: 1.5KiB, 3.2MiB.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// The three largest drop reasons as `NAME=value`, largest first; equal
/// values keep the order they come in (by name, from a BTreeMap).
pub fn top_reasons<'a, V: PartialOrd + Copy + 'a>(
    reasons: impl Iterator<Item = (&'a String, &'a V)>,
    show: impl Fn(V) -> String,
) -> String {
    let mut reasons: Vec<(&String, V)> = reasons.map(|(name, value)| (name, *value)).collect();
    reasons.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let top: Vec<String> = reasons
        .iter()
        .take(3)
        .map(|(name, value)| format!("{name}={}", show(*value)))
        .collect();
    top.join(" ")
}

/// `namespace/pod` of an interface's pod, shown next to its name.
pub fn pod_label(pod: Option<&PodIdentity>) -> String {
    pod.map(|p| printable(&format!("{}/{}", p.namespace, p.pod)).into_owned())
        .unwrap_or_default()
}

/// The POD column: as wide as its longest entry (within bounds), and only
/// on nodes where some interface is a pod's, so others keep their layout.
pub fn pod_column_width<'a>(pods: impl Iterator<Item = &'a str>) -> Option<usize> {
    pods.map(|p| p.chars().count())
        .filter(|len| *len > 0)
        .max()
        .map(|len| len.clamp(3, 48))
}

/// Pods listed in the "drops inside pods" section, most drops first.
const TOP_PODS: usize = 10;

/// Each pod's drops inside its own network namespace, summed over its
/// devices: `namespace/pod` (printable) -> reason -> packets.
pub fn drops_by_pod(snapshot: &Snapshot) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut pods: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for drops in &snapshot.namespace_drops {
        let Some(pod) = &drops.pod else { continue };
        let reasons = pods.entry(pod_label(Some(pod))).or_default();
        for (reason, packets) in &drops.drops {
            *reasons.entry(reason.clone()).or_default() += *packets as f64;
        }
    }
    pods
}

/// The "drops inside pods" section: the pods with the most drops (or drop
/// rate), each with its total and largest reasons; `None` when the drop
/// probe is not attached.
pub fn pod_drops_section(
    snapshot: &Snapshot,
    pods: &BTreeMap<String, BTreeMap<String, f64>>,
    title: &str,
    show: impl Fn(f64) -> String,
) -> Option<String> {
    let ebpf = &snapshot.sources.ebpf;
    if !(ebpf.enabled && ebpf.attached(crate::model::Probe::Drop)) {
        return None;
    }
    let mut totals: Vec<(&String, f64, &BTreeMap<String, f64>)> = pods
        .iter()
        .map(|(pod, reasons)| (pod, reasons.values().sum::<f64>(), reasons))
        .filter(|(_, total, _)| *total > 0.0)
        .collect();
    if totals.is_empty() {
        return Some(format!("\n{title}: none\n"));
    }
    totals.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let width = pod_column_width(totals.iter().map(|(pod, _, _)| pod.as_str())).unwrap_or(3);
    let mut out = format!(
        "\n{title}\n{:<width$} {:>10}  TOP REASONS\n",
        "POD", "DROPS"
    );
    for (pod, total, reasons) in totals.into_iter().take(TOP_PODS) {
        let top = top_reasons(reasons.iter(), &show);
        let _ = writeln!(out, "{pod:<width$} {:>10}  {top}", show(total));
    }
    Some(out)
}

pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let pods: Vec<String> = snapshot
        .interfaces
        .iter()
        .map(|i| pod_label(i.pod.as_ref()))
        .collect();
    let width = pod_column_width(pods.iter().map(String::as_str));
    let pod_cell = |text: &str| width.map(|w| format!("{text:<w$} ")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<16} {}{:<5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}  TOP DROP REASONS (eBPF)",
        "INTERFACE",
        pod_cell("POD"),
        "STATE",
        "MTU",
        "RX",
        "RX PKTS",
        "TX",
        "TX PKTS",
        "ERRORS",
        "DROPPED"
    );
    for (interface, pod) in snapshot.interfaces.iter().zip(&pods) {
        let link = interface;
        let c = &link.counters;
        let top = top_reasons(
            interface.ebpf.iter().flat_map(|e| e.drops.iter()),
            |count| count.to_string(),
        );
        let _ = writeln!(
            out,
            "{:<16} {}{:<5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}  {}",
            printable(&link.name),
            pod_cell(pod),
            if link.admin_up { "up" } else { "down" },
            link.mtu,
            human_bytes(c.rx_bytes as f64),
            c.rx_packets,
            human_bytes(c.tx_bytes as f64),
            c.tx_packets,
            c.rx_errors + c.tx_errors,
            c.rx_dropped + c.tx_dropped,
            top
        );
    }
    let pods = drops_by_pod(snapshot);
    let title = "DROPS INSIDE PODS (eBPF, by kernel reason)";
    if let Some(section) = pod_drops_section(snapshot, &pods, title, |n| format!("{n:.0}")) {
        out.push_str(&section);
    }
    let tcp = crate::output::tcp::tcp_by_pod(snapshot);
    let title = "TCP TROUBLE IN PODS (their own counters, since each pod's namespace was made)";
    if let Some(section) =
        crate::output::tcp::tcp_section(snapshot, &tcp, title, |n| format!("{n:.0}"))
    {
        out.push_str(&section);
    }
    let ebpf = &snapshot.sources.ebpf;
    if !ebpf.enabled {
        let why = ebpf.disabled_reason.as_deref().unwrap_or("not loaded");
        let _ = writeln!(
            out,
            "\neBPF: off ({}); netlink counters only",
            printable(why)
        );
    }
    if let Some(error) = &snapshot.sources.netlink_error {
        let _ = writeln!(out, "\nnetlink: {}", printable(error));
    }
    if let Some(error) = &snapshot.sources.pod_identity.error {
        let _ = writeln!(out, "\npods: not named ({})", printable(error));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_reasons_are_the_three_largest_ties_by_name() {
        let drops: std::collections::BTreeMap<String, u64> =
            [("A", 1), ("B", 5), ("C", 5), ("D", 9)]
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
        assert_eq!(top_reasons(drops.iter(), |n| n.to_string()), "D=9 B=5 C=5");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("eth0"), "eth0");
        assert_eq!(printable("e\x1b[31m"), "e\\x1b[31m");
        assert_eq!(printable("a\u{9b}b\x7f"), "a\\x9bb\\x7f");
        assert_eq!(printable("tab\there"), "tab\\x09here");
        assert_eq!(printable("a\u{202e}b\u{feff}"), "a\\u{202e}b\\u{feff}");
        assert_eq!(printable("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
        assert!(!printable("\x07\x1b]0;title\x07")
            .chars()
            .any(char::is_control));
    }

    #[test]
    fn the_pod_column_appears_only_with_pods_and_fits_them() {
        assert_eq!(pod_column_width(["", ""].into_iter()), None);
        assert_eq!(pod_column_width(["", "a/b"].into_iter()), Some(3));
        assert_eq!(
            pod_column_width(["kube-system/coredns-5d78c9869d-x2x4q"].into_iter()),
            Some(36)
        );
        let pod = PodIdentity {
            namespace: "ns".into(),
            pod: "p\x1b[2J".into(),
            pod_uid: "u".into(),
            container_id: "c".into(),
            pod_interface: None,
            network: None,
        };
        assert_eq!(pod_label(Some(&pod)), "ns/p\\x1b[2J");
        assert_eq!(pod_label(None), "");
    }

    #[test]
    fn the_pods_with_most_drops_come_first_with_their_reasons() {
        use crate::model::{Flavour, NamespaceDrops, Netns, Probe, ProbeAttachment};
        let pod = |name: &str| PodIdentity {
            namespace: "kube-system".into(),
            pod: name.into(),
            pod_uid: format!("uid-{name}"),
            container_id: "c".into(),
            pod_interface: None,
            network: None,
        };
        let drops =
            |pod: Option<PodIdentity>, ifindex: u32, reasons: &[(&str, u64)]| NamespaceDrops {
                netns: Netns::Inode(7),
                pod,
                ifindex,
                interface: None,
                drops: reasons.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            };
        let mut snapshot = crate::model::tests::empty_snapshot();
        snapshot.namespace_drops = vec![
            drops(
                Some(pod("coredns")),
                2,
                &[("SOCKET_RCVBUFF", 90), ("NO_SOCKET", 1)],
            ),
            drops(Some(pod("coredns")), 0, &[("SOCKET_RCVBUFF", 9)]),
            drops(Some(pod("web")), 2, &[("NETFILTER_DROP", 3)]),
            drops(Some(pod("idle")), 2, &[("NO_SOCKET", 0)]),
            // Not a pod's: never in this section.
            drops(None, 2, &[("NO_SOCKET", 500)]),
        ];
        let pods = drops_by_pod(&snapshot);
        // The drop probe not attached: no section at all.
        assert_eq!(
            pod_drops_section(&snapshot, &pods, "T", |n| n.to_string()),
            None
        );
        snapshot.sources.ebpf.enabled = true;
        snapshot.sources.ebpf.attachments = vec![ProbeAttachment {
            program: Probe::Drop.program().into(),
            tracepoint: "skb:kfree_skb".into(),
            flavour: Flavour::Btf,
            attached: true,
            error: None,
        }];
        let text = render(&snapshot);
        let section: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("DROPS INSIDE PODS"))
            .collect();
        assert_eq!(
            section,
            [
                "DROPS INSIDE PODS (eBPF, by kernel reason)",
                "POD                      DROPS  TOP REASONS",
                "kube-system/coredns        100  SOCKET_RCVBUFF=99 NO_SOCKET=1",
                "kube-system/web              3  NETFILTER_DROP=3",
            ]
        );
        snapshot.namespace_drops.truncate(0);
        assert!(render(&snapshot).contains("DROPS INSIDE PODS (eBPF, by kernel reason): none"));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512.0), "512B");
        assert_eq!(human_bytes(1536.0), "1.5KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0), "3.0MiB");
    }
}
