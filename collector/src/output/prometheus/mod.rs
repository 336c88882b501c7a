//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Written directly into one `String`: a node has tens of samples per
//! interface and up to thousands of interfaces, and building the
//! `prometheus` crate's protobuf model for each sample (a struct and owned
//! strings per label) would cost more than the netlink dump itself.
//!
//! Every family is a row of a table: its name, help, type, when it is
//! served, and a function from the model to its samples and their labels.
//! [`interface`] (with the counter tables of [`counters`]) holds the
//! per-interface families, [`namespace`] the drops inside pods' and other
//! namespaces, [`tcp`] their TCP events, [`pod_netstat`] pods' own SNMP
//! counters, [`conntrack`] the node's conntrack table, [`node`] the
//! collector's own; this module only
//! writes the text format.

mod conntrack;
mod counters;
mod interface;
mod namespace;
mod node;
mod pod_netstat;
mod tcp;
#[cfg(test)]
mod tests;

use std::fmt::Write;

use crate::model::{HttpStats, Snapshot};

pub use counters::{CounterFamily, DETAIL_COUNTERS, SEED_COUNTERS};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which families are served: the lean default, or every counter the kernel
/// has (node_exporter's `--collector.netdev.enable-detailed-metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// The seed's 13 families, link state, info, eBPF and drops by reason.
    #[default]
    Default,
    /// Also the rest of IFLA_STATS64, carrier changes and the rest of
    /// each pod's SNMP counters.
    Detailed,
}

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Renders what `/metrics` serves in the default profile.
pub fn render(snapshot: &Snapshot, http: &HttpStats) -> String {
    render_profile(snapshot, http, Profile::Default)
}

/// Renders everything `/metrics` serves in `profile`.
pub fn render_profile(snapshot: &Snapshot, http: &HttpStats, profile: Profile) -> String {
    let mut out = String::with_capacity(256 + snapshot.interfaces.len() * 6_000);
    interface::write(&mut out, snapshot, profile, &mut |_| {});
    namespace::write(&mut out, snapshot);
    tcp::write(&mut out, snapshot);
    pod_netstat::write(&mut out, snapshot, profile);
    conntrack::write(&mut out, snapshot);
    node::write(&mut out, snapshot, http);
    out
}

/// Renders the same text as [`render_profile`] in pieces of about one
/// family each, handed to `sink` in order: the whole text (3 MB per 1,000
/// interfaces) never has to be in memory at once.
pub fn render_pieces(
    snapshot: &Snapshot,
    http: &HttpStats,
    profile: Profile,
    sink: &mut dyn FnMut(&str),
) {
    let mut out = String::with_capacity(64 * 1024);
    let mut flush = |out: &mut String| {
        sink(out);
        out.clear();
    };
    interface::write(&mut out, snapshot, profile, &mut flush);
    namespace::write(&mut out, snapshot);
    tcp::write(&mut out, snapshot);
    pod_netstat::write(&mut out, snapshot, profile);
    conntrack::write(&mut out, snapshot);
    flush(&mut out);
    node::write(&mut out, snapshot, http);
    flush(&mut out);
}

fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
}

/// `interface="eth0",host="n",hostname="n",cluster="c"`: the labels every
/// per-interface series carries.
fn identity_labels(snapshot: &Snapshot, interface: &str) -> String {
    let node = escape(&snapshot.node);
    let mut labels = format!(
        "interface=\"{}\",host=\"{node}\",hostname=\"{node}\"",
        escape(interface)
    );
    for (key, value) in &snapshot.labels {
        let _ = write!(labels, ",{key}=\"{}\"", escape(value));
    }
    labels
}

/// `name{identity,extra} value`: one sample of a per-interface family.
/// Pushed piece by piece rather than through `write!`: tens of thousands
/// of samples a scrape, where the formatting machinery costs more than
/// the bytes.
fn sample(out: &mut String, name: &str, identity: &str, extra: &[(&str, &str)], value: u64) {
    out.push_str(name);
    out.push('{');
    out.push_str(identity);
    for (key, label_value) in extra {
        out.push(',');
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(&escape(label_value));
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(itoa::Buffer::new().format(value));
    out.push('\n');
}

/// Label value escaping per the text format: backslash, quote, newline.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    // By byte: a `char` pattern decodes UTF-8 first, for every label of
    // every sample.
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    std::borrow::Cow::Owned(escaped)
}
