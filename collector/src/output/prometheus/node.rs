//! The collector's own families: build, collections, errors per source,
//! the eBPF probes' and maps' health, pod identity, and the HTTP server's
//! counters. Each is a [`NodeFamily`] row; none carries interface labels.

use std::fmt::Write;

use super::{escape, header, Kind};
use crate::model::{HttpStats, Snapshot};

/// A sample value as the text format writes it.
#[derive(Debug, Clone, Copy)]
enum Number {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(value) => value.fmt(f),
            Number::Float(value) => value.fmt(f),
        }
    }
}

fn int(value: impl Into<u64>) -> Number {
    Number::Int(value.into())
}

/// Labels and value of one sample, given to a family's `samples`.
type Emit<'a> = dyn FnMut(&[(&str, &str)], Number) + 'a;

/// One family of the collector's own.
struct NodeFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    served: fn(&Snapshot) -> bool,
    samples: fn(&Snapshot, &HttpStats, &mut Emit),
}

fn always(_: &Snapshot) -> bool {
    true
}

fn ebpf_enabled(snapshot: &Snapshot) -> bool {
    snapshot.sources.ebpf.enabled
}

fn has_attachments(snapshot: &Snapshot) -> bool {
    !snapshot.sources.ebpf.attachments.is_empty()
}

fn has_programs(snapshot: &Snapshot) -> bool {
    ebpf_enabled(snapshot) && !snapshot.sources.ebpf.programs.is_empty()
}

fn pod_identity_enabled(snapshot: &Snapshot) -> bool {
    snapshot.sources.pod_identity.enabled
}

/// Each source that is on (eBPF loaded, pod identity configured, conntrack
/// in the kernel; netlink always) and whether it succeeded in this collection, as node_exporter's
/// node_scrape_collector_success: a gauge alerts can compare with 0 without
/// a rate() over the error counters.
fn sources_up(snapshot: &Snapshot) -> Vec<(&'static str, bool)> {
    let sources = &snapshot.sources;
    let mut up = vec![("netlink", sources.netlink_error.is_none())];
    if sources.ebpf.enabled {
        up.push(("ebpf", sources.ebpf.read_error.is_none()));
    }
    if sources.pod_identity.enabled {
        up.push(("pods", sources.pod_identity.up));
    }
    // Conntrack is on while the kernel has it (any of its files there).
    if snapshot.conntrack.is_some() || sources.conntrack_error.is_some() {
        up.push(("conntrack", sources.conntrack_error.is_none()));
    }
    up
}

const FAMILIES: [NodeFamily; 26] = [
    NodeFamily {
        name: "collector_build_info",
        help: "Build of the running collector; value is always 1.",
        kind: Kind::Gauge,
        served: always,
        samples: |_, _, emit| emit(&[("version", env!("CARGO_PKG_VERSION"))], int(1u8)),
    },
    NodeFamily {
        name: "collector_scrape_duration_seconds",
        help: "Time the last collection took.",
        kind: Kind::Gauge,
        served: always,
        samples: |s, _, emit| emit(&[], Number::Float(s.collection_seconds)),
    },
    NodeFamily {
        name: "collector_collections_total",
        help: "Collections (netlink dump and map read) since start; concurrent scrapes share one.",
        kind: Kind::Counter,
        served: always,
        samples: |s, _, emit| emit(&[], int(s.sources.collections_total)),
    },
    NodeFamily {
        name: "collector_scrape_errors_total",
        help: "Failed collections per source since start.",
        kind: Kind::Counter,
        served: always,
        samples: |s, _, emit| {
            for (source, errors) in &s.sources.errors_total {
                emit(&[("source", source)], int(*errors));
            }
        },
    },
    NodeFamily {
        name: "collector_source_up",
        help: "1 when the source succeeded in the last collection, 0 when it failed (netlink dump, eBPF map read, pods' results directory, conntrack files); only sources that are on.",
        kind: Kind::Gauge,
        served: always,
        samples: |s, _, emit| {
            for (source, up) in sources_up(s) {
                emit(&[("source", source)], int(up));
            }
        },
    },
    NodeFamily {
        name: "collector_netlink_dump_timeouts_total",
        help: "Netlink link dumps that did not complete within --netlink-timeout (also counted as netlink errors).",
        kind: Kind::Counter,
        served: always,
        samples: |s, _, emit| emit(&[], int(s.sources.netlink_timeouts_total)),
    },
    NodeFamily {
        name: "collector_netlink_attributes_skipped_total",
        help: "Link attributes that did not decode and were skipped; their interface is still served.",
        kind: Kind::Counter,
        served: always,
        samples: |s, _, emit| emit(&[], int(s.sources.netlink_skipped_attributes_total)),
    },
    NodeFamily {
        name: "collector_ebpf_enabled",
        help: "1 when the eBPF probes are loaded and attached.",
        kind: Kind::Gauge,
        served: always,
        samples: |s, _, emit| emit(&[], int(s.sources.ebpf.enabled)),
    },
    NodeFamily {
        name: "collector_ebpf_probe_info",
        help: "Each selected BPF program, the tracepoint it attaches to and its flavour (btf: tp_btf, classic: tracepoint); value is always 1.",
        kind: Kind::Gauge,
        served: has_attachments,
        samples: |s, _, emit| {
            for a in &s.sources.ebpf.attachments {
                let labels = [
                    ("program", a.program.as_str()),
                    ("tracepoint", a.tracepoint.as_str()),
                    ("flavour", a.flavour.as_str()),
                ];
                emit(&labels, int(1u8));
            }
        },
    },
    NodeFamily {
        name: "collector_ebpf_probe_attached",
        help: "1 when the program is attached, 0 when it could not be (its warning is logged).",
        kind: Kind::Gauge,
        served: has_attachments,
        samples: |s, _, emit| {
            for a in &s.sources.ebpf.attachments {
                emit(&[("program", &a.program)], int(a.attached));
            }
        },
    },
    NodeFamily {
        name: "collector_ebpf_map_full_total",
        help: "Probe updates lost because a BPF map was full.",
        kind: Kind::Counter,
        served: ebpf_enabled,
        samples: |s, _, emit| {
            let c = &s.sources.ebpf.probe_counters;
            emit(&[("map", "traffic")], int(c.traffic_map_full));
            emit(&[("map", "drops")], int(c.drop_map_full));
            emit(&[("map", "tcp")], int(c.tcp_map_full));
        },
    },
    NodeFamily {
        name: "collector_ebpf_kernel_read_errors_total",
        help: "Probe reads of kernel memory that failed.",
        kind: Kind::Counter,
        served: ebpf_enabled,
        samples: |s, _, emit| emit(&[], int(s.sources.ebpf.probe_counters.kernel_read_errors)),
    },
    NodeFamily {
        name: "collector_ebpf_map_entries",
        help: "Entries in each BPF map after stale interfaces were removed.",
        kind: Kind::Gauge,
        served: ebpf_enabled,
        samples: |s, _, emit| {
            let status = &s.sources.ebpf;
            emit(&[("map", "traffic")], int(status.traffic_map_entries as u64));
            emit(&[("map", "drops")], int(status.drop_map_entries as u64));
        },
    },
    NodeFamily {
        name: "collector_ebpf_map_memory_bytes",
        help: "Kernel memory each BPF map holds (fdinfo memlock), charged to the pod's memory cgroup; per-CPU maps scale with the possible CPUs.",
        kind: Kind::Gauge,
        served: ebpf_enabled,
        samples: |s, _, emit| {
            let memory = &s.sources.ebpf.map_memory;
            emit(&[("map", "traffic")], int(memory.traffic));
            emit(&[("map", "drops")], int(memory.drops));
            emit(&[("map", "counters")], int(memory.counters));
            emit(&[("map", "first_drops")], int(memory.first_drops));
            emit(&[("map", "tcp")], int(memory.tcp));
        },
    },
    NodeFamily {
        name: "collector_ebpf_bpf_stats_enabled",
        help: "kernel.bpf_stats_enabled: program runs and run time only advance while 1.",
        kind: Kind::Gauge,
        served: |s| ebpf_enabled(s) && s.sources.ebpf.bpf_stats_enabled.is_some(),
        samples: |s, _, emit| {
            if let Some(enabled) = s.sources.ebpf.bpf_stats_enabled {
                emit(&[], int(enabled));
            }
        },
    },
    NodeFamily {
        name: "collector_ebpf_program_runs_total",
        help: "Runs of each attached BPF program (counted while kernel.bpf_stats_enabled is 1).",
        kind: Kind::Counter,
        served: has_programs,
        samples: |s, _, emit| {
            for p in &s.sources.ebpf.programs {
                emit(&[("program", &p.program)], int(p.run_cnt));
            }
        },
    },
    NodeFamily {
        name: "collector_ebpf_program_run_seconds_total",
        help: "Time spent in each attached BPF program (counted while kernel.bpf_stats_enabled is 1).",
        kind: Kind::Counter,
        served: has_programs,
        samples: |s, _, emit| {
            for p in &s.sources.ebpf.programs {
                let seconds = Number::Float(p.run_time_ns as f64 / 1e9);
                emit(&[("program", &p.program)], seconds);
            }
        },
    },
    NodeFamily {
        name: "collector_ebpf_program_recursion_misses_total",
        help: "Runs of each BPF program the kernel skipped because it was already running on that CPU.",
        kind: Kind::Counter,
        served: |s| has_programs(s) && s.sources.ebpf.programs.iter().any(|p| p.recursion_misses.is_some()),
        samples: |s, _, emit| {
            for p in &s.sources.ebpf.programs {
                if let Some(misses) = p.recursion_misses {
                    emit(&[("program", &p.program)], int(misses));
                }
            }
        },
    },
    NodeFamily {
        name: "collector_pod_identity_up",
        help: "1 when the CNI results directory was read in this collection (network_interface_pod_info is served).",
        kind: Kind::Gauge,
        served: pod_identity_enabled,
        samples: |s, _, emit| emit(&[], int(s.sources.pod_identity.up)),
    },
    NodeFamily {
        name: "collector_pod_identity_errors_total",
        help: "Pod identity failures: directory (results directory unreadable, per collection), file, malformed (cache file), netns (netns file gone), nsid (RTM_GETNSID failed).",
        kind: Kind::Counter,
        served: pod_identity_enabled,
        samples: |s, _, emit| {
            for (reason, count) in &s.sources.pod_identity.errors_total {
                emit(&[("reason", reason)], int(*count));
            }
        },
    },
    NodeFamily {
        name: "collector_pod_netstat_errors_total",
        help: "Pods whose own SNMP counters were not read, once per pod and failing stretch: process (no live sandbox process found under --host-proc), read (its /proc/PID/net files unreadable), malformed (they did not parse); proc (--host-proc could not be listed, per search).",
        kind: Kind::Counter,
        served: |s| s.sources.pod_netstat.enabled,
        samples: |s, _, emit| {
            for (reason, count) in &s.sources.pod_netstat.errors_total {
                emit(&[("reason", reason)], int(*count));
            }
        },
    },
    NodeFamily {
        name: "collector_http_connections_rejected_total",
        help: "Connections displaced: reset to make room for a newer one when every connection slot was taken, the one quiet longest first (waiting for a request head or a basic-auth check, or not reading its response). Newcomers are never refused.",
        kind: Kind::Counter,
        served: always,
        samples: |_, http, emit| emit(&[], int(http.connections_displaced)),
    },
    NodeFamily {
        name: "collector_http_responses_total",
        help: "/metrics responses by content encoding (gzip when the scraper accepts it, as Prometheus does).",
        kind: Kind::Counter,
        served: always,
        samples: |_, http, emit| {
            emit(&[("encoding", "identity")], int(http.plain_responses));
            emit(&[("encoding", "gzip")], int(http.gzip_responses));
        },
    },
    NodeFamily {
        name: "collector_http_responses_cut_total",
        help: "Responses cut before their end: `stalled` (the client read nothing for 10s), `evicted` (it read slower than newer scrapes arrived).",
        kind: Kind::Counter,
        served: always,
        samples: |_, http, emit| {
            emit(&[("why", "stalled")], int(http.stalled_responses_cut));
            emit(&[("why", "evicted")], int(http.evicted_responses_cut));
        },
    },
    NodeFamily {
        name: "collector_http_web_config_reload_failures_total",
        help: "Changes of --web.config.file (or of the certificate files it names) that did not load; the last good configuration stays in force, and the log says why.",
        kind: Kind::Counter,
        served: always,
        samples: |_, http, emit| emit(&[], int(http.web_config_reload_failures)),
    },
    NodeFamily {
        name: "collector_http_retained_bodies",
        help: "Rendered /metrics bodies held for responses still being read (bounded).",
        kind: Kind::Gauge,
        served: always,
        samples: |_, http, emit| emit(&[], int(http.retained_bodies)),
    },
];

pub(super) fn write(out: &mut String, snapshot: &Snapshot, http: &HttpStats) {
    for family in &FAMILIES {
        if !(family.served)(snapshot) {
            continue;
        }
        header(out, family.name, family.help, family.kind);
        (family.samples)(snapshot, http, &mut |labels, value| {
            out.push_str(family.name);
            if !labels.is_empty() {
                out.push('{');
                for (n, (key, label_value)) in labels.iter().enumerate() {
                    let comma = if n == 0 { "" } else { "," };
                    let _ = write!(out, "{comma}{key}=\"{}\"", escape(label_value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        });
    }
}
