//! Terminal table of a [`Snapshot`], the `ip -s link` replacement view.

use std::borrow::Cow;
use std::fmt::Write;

use crate::snapshot::Snapshot;

/// Text from the kernel made safe for a terminal: an interface name may hold
/// ESC and other control characters (the kernel accepts any byte but NUL,
/// `/`, `:` and white space), which would otherwise reach the terminal as
/// commands. Each control character is shown as `\xNN` (or `\u{NNNN}`
/// beyond one byte), the form the name policy already uses for bytes that
/// are not UTF-8 (`sources::netlink::name_from_bytes`).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if c.is_control() && (c as u32) < 0x100 => {
                let _ = write!(shown, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
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

pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}  TOP DROP REASONS (eBPF)",
        "INTERFACE", "STATE", "MTU", "RX", "RX PKTS", "TX", "TX PKTS", "ERRORS", "DROPPED"
    );
    for interface in &snapshot.interfaces {
        let link = &interface.link;
        let c = &link.counters;
        let top = top_reasons(
            interface.ebpf.iter().flat_map(|e| e.drops.iter()),
            |count| count.to_string(),
        );
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}  {}",
            printable(&link.name),
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
        assert!(!printable("\x07\x1b]0;title\x07")
            .chars()
            .any(char::is_control));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512.0), "512B");
        assert_eq!(human_bytes(1536.0), "1.5KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0), "3.0MiB");
    }
}
