//! Names of the TCP probes' (event, detail) keys, shared by every output:
//! the outcome of a handshake or an abort, and the snapshot's flat event
//! names (`connect_refused`, `retransmit_syn`, `rtt_accept_le_0.005`...).

use std::collections::BTreeMap;

use collector_common::{
    Outcome, TcpEvent, RESET_RECEIVED, RESET_SENT, RETRANSMIT_DATA, RETRANSMIT_SYN,
    RETRANSMIT_SYNACK, RTT_BUCKETS, SIDE_ACCEPT, SIDE_CONNECT,
};

/// The label value of an [`Outcome`] detail; `None` for one no probe
/// writes.
pub fn outcome_name(detail: u16) -> Option<&'static str> {
    let outcome = Outcome::ALL.into_iter().find(|o| *o as u16 == detail)?;
    Some(match outcome {
        Outcome::Established => "established",
        Outcome::Refused => "refused",
        Outcome::TimedOut => "timed_out",
        Outcome::Unreachable => "unreachable",
        Outcome::Reset => "reset",
        Outcome::Other => "other",
    })
}

pub fn retransmit_name(detail: u16) -> Option<&'static str> {
    match detail {
        RETRANSMIT_DATA => Some("data"),
        RETRANSMIT_SYN => Some("syn"),
        RETRANSMIT_SYNACK => Some("synack"),
        _ => None,
    }
}

pub fn reset_name(detail: u16) -> Option<&'static str> {
    match detail {
        RESET_SENT => Some("sent"),
        RESET_RECEIVED => Some("received"),
        _ => None,
    }
}

pub fn side_name(side: u16) -> Option<&'static str> {
    match side {
        SIDE_CONNECT => Some("connect"),
        SIDE_ACCEPT => Some("accept"),
        _ => None,
    }
}

/// `le` of each handshake-RTT bucket: `RTT_BOUNDS_US` in seconds, then
/// `+Inf`.
pub const RTT_LE: [&str; RTT_BUCKETS as usize] =
    ["0.0005", "0.001", "0.005", "0.02", "0.1", "0.5", "+Inf"];

/// The snapshot's name of one key: `<side>_<outcome>`,
/// `retransmit_<kind>`, `reset_<direction>`, `abort_<error>`,
/// `rtt_<side>_le_<le>` (per bucket, not cumulative) and
/// `rtt_<side>_sum_us`; `None` for a key no probe writes.
pub fn event_name(event: u16, detail: u16) -> Option<String> {
    let is = |e: TcpEvent| event == e as u16;
    if is(TcpEvent::Connect) || is(TcpEvent::Accept) {
        let side = if is(TcpEvent::Connect) {
            "connect"
        } else {
            "accept"
        };
        Some(format!("{side}_{}", outcome_name(detail)?))
    } else if is(TcpEvent::Retransmit) {
        Some(format!("retransmit_{}", retransmit_name(detail)?))
    } else if is(TcpEvent::Reset) {
        Some(format!("reset_{}", reset_name(detail)?))
    } else if is(TcpEvent::Abort) {
        Some(format!("abort_{}", outcome_name(detail)?))
    } else if is(TcpEvent::RttBucket) {
        let side = side_name(detail / RTT_BUCKETS)?;
        Some(format!(
            "rtt_{side}_le_{}",
            RTT_LE[(detail % RTT_BUCKETS) as usize]
        ))
    } else if is(TcpEvent::RttSum) {
        Some(format!("rtt_{}_sum_us", side_name(detail)?))
    } else {
        None
    }
}

/// Serializes a namespace's events by [`event_name`] (JSON keys must be
/// strings); keys without a name are left out.
pub fn serialize_events<S: serde::Serializer>(
    events: &BTreeMap<(u16, u16), u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let named: BTreeMap<String, u64> = events
        .iter()
        .filter_map(|(&(event, detail), &count)| Some((event_name(event, detail)?, count)))
        .collect();
    serde::Serialize::serialize(&named, serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_common::RTT_BOUNDS_US;

    #[test]
    fn every_rtt_bound_has_its_le() {
        for (bound, le) in RTT_BOUNDS_US.iter().zip(RTT_LE) {
            assert_eq!(le.parse::<f64>().unwrap(), *bound as f64 / 1e6);
        }
        assert_eq!(RTT_LE[RTT_BOUNDS_US.len()], "+Inf");
    }

    #[test]
    fn every_key_a_probe_writes_has_one_name_and_others_none() {
        let names: Vec<_> = Outcome::ALL
            .iter()
            .map(|o| outcome_name(*o as u16).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "established",
                "refused",
                "timed_out",
                "unreachable",
                "reset",
                "other"
            ]
        );
        let name = |e: TcpEvent, d| event_name(e as u16, d);
        assert_eq!(
            name(TcpEvent::Connect, Outcome::TimedOut as u16).as_deref(),
            Some("connect_timed_out")
        );
        assert_eq!(
            name(TcpEvent::RttBucket, RTT_BUCKETS + 6).as_deref(),
            Some("rtt_accept_le_+Inf")
        );
        assert_eq!(
            name(TcpEvent::RttSum, SIDE_CONNECT).as_deref(),
            Some("rtt_connect_sum_us")
        );
        // A detail a newer probe might add is never named as another.
        assert_eq!(name(TcpEvent::Retransmit, 7), None);
        assert_eq!(name(TcpEvent::RttBucket, 2 * RTT_BUCKETS), None);
        assert_eq!(event_name(99, 0), None);
    }
}
