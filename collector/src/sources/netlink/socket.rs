//! rtnetlink sockets: dump requests, the receive loop with its deadline, and
//! the notification socket that tells the link cache when to refresh.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::stats::{StatsFilterMask, StatsMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::decode::{self, parse_datagram, Progress};
use super::{LinkCounters, LinkDump, NetlinkError};

/// Kernel dump messages are at most 32 KiB; a larger buffer never truncates.
pub const RECV_BUFFER_BYTES: usize = 64 * 1024;
/// An interrupted dump (links changed while the kernel walked them) is
/// retried this many times before its partial result is used.
const DUMP_ATTEMPTS: u32 = 3;
/// `RTNLGRP_LINK` as a bind-time group mask.
const RTMGRP_LINK: u32 = 1;

/// A connected rtnetlink socket for dumps.
pub struct DumpSocket {
    socket: Socket,
    buffer: Vec<u8>,
    sequence: u32,
}

/// An rtnetlink socket bound to a kernel-chosen port and connected to the
/// kernel: what every request of the collector goes through.
pub(crate) fn connected_socket() -> Result<Socket, NetlinkError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NetlinkError::Socket)?;
    Ok(socket)
}

/// `message` as one request datagram: its `nlmsghdr` (port 0: the kernel
/// fills it in) and the message as `netlink-packet-route` encodes it.
pub(crate) fn request_bytes(message: RouteNetlinkMessage, flags: u16, sequence: u32) -> Vec<u8> {
    let mut message = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
    message.header.flags = flags;
    message.header.sequence_number = sequence;
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

impl DumpSocket {
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(DumpSocket {
            socket: connected_socket()?,
            buffer: vec![0u8; RECV_BUFFER_BYTES],
            sequence: 0,
        })
    }

    /// A full `RTM_GETLINK` dump: attributes and counters of every link.
    /// Retried while the kernel flags it interrupted; the whole of it,
    /// retries included, must finish by `deadline`.
    pub fn links(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<LinkDump, NetlinkError> {
        let mut dump = LinkDump::default();
        for attempt in 1..=DUMP_ATTEMPTS {
            dump = LinkDump::default();
            let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
            let sequence = self.request("RTM_GETLINK", request)?;
            let (socket, buffer) = (&self.socket, &mut self.buffer);
            receive(
                socket,
                buffer,
                "RTM_GETLINK",
                deadline,
                timeout,
                &mut |datagram| decode::parse_link_datagram(datagram, sequence, &mut dump),
            )?;
            if !dump.interrupted {
                break;
            }
            tracing::debug!(
                attempt,
                "RTM_GETLINK dump interrupted by a link change, retrying"
            );
        }
        Ok(dump)
    }

    /// Counters of every link from `RTM_GETSTATS` with only
    /// `IFLA_STATS_LINK_64` (the kernel fills no other attribute), and
    /// whether the kernel flagged the dump as interrupted by a link change.
    pub fn counters(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Vec<(u32, LinkCounters)>, bool), NetlinkError> {
        // ifindex 0: every link.
        let mut request = StatsMessage::default();
        request.header.filter_mask = StatsFilterMask::Link64;
        let request = RouteNetlinkMessage::GetStats(request);
        let what = ("RTM_GETSTATS", decode::RTM_NEWSTATS);
        self.dump(what, request, decode::stats_from_payload, deadline, timeout)
    }

    /// The main table's host routes (`/32`, `/128`) with their output
    /// interface: how L3 CNI plugins (azure-vnet transparent, Calico, AWS)
    /// send a pod's address to its host veth.
    pub fn host_routes(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<(IpAddr, u32)>, NetlinkError> {
        // AF_UNSPEC: both families in one dump.
        let request = RouteNetlinkMessage::GetRoute(RouteMessage::default());
        let what = ("RTM_GETROUTE", decode::RTM_NEWROUTE);
        let (routes, _) = self.dump(
            what,
            request,
            decode::host_route_from_payload,
            deadline,
            timeout,
        )?;
        Ok(routes)
    }

    /// One dump of `request`: what `decode` makes of each reply of the
    /// `(name, reply type)` asked for, and whether the kernel flagged the
    /// dump as interrupted.
    fn dump<T>(
        &mut self,
        (name, reply): (&'static str, u16),
        request: RouteNetlinkMessage,
        decode: fn(&[u8]) -> Option<T>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Vec<T>, bool), NetlinkError> {
        let sequence = self.request(name, request)?;
        let mut found = Vec::new();
        let mut interrupted = false;
        let (socket, buffer) = (&self.socket, &mut self.buffer);
        receive(socket, buffer, name, deadline, timeout, &mut |datagram| {
            parse_datagram(
                datagram,
                sequence,
                name,
                &mut interrupted,
                &mut |kind, payload| {
                    if kind == reply {
                        found.extend(decode(payload));
                    }
                },
            )
        })?;
        Ok((found, interrupted))
    }

    fn request(
        &mut self,
        name: &'static str,
        message: RouteNetlinkMessage,
    ) -> Result<u32, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let message = request_bytes(message, NLM_F_REQUEST | NLM_F_DUMP, self.sequence);
        self.socket
            .send(&message, 0)
            .map_err(|source| NetlinkError::Send {
                request: name,
                source,
            })?;
        Ok(self.sequence)
    }
}

/// Sets the socket's receive timeout to what is left until the deadline, so
/// a `recv` never blocks past it.
pub(crate) fn set_receive_timeout(socket: &Socket, left: Duration) -> std::io::Result<()> {
    // At least 1 ms: a zero timeval would mean "block forever".
    let left = left.max(Duration::from_millis(1));
    socket2::SockRef::from(socket).set_read_timeout(Some(left))
}

/// Receives datagrams into `on_datagram` until it says the dump is done, or
/// fails with [`NetlinkError::Timeout`] at `deadline`.
fn receive(
    socket: &Socket,
    buffer: &mut [u8],
    request: &'static str,
    deadline: Instant,
    timeout: Duration,
    on_datagram: &mut dyn FnMut(&[u8]) -> Result<Progress, NetlinkError>,
) -> Result<(), NetlinkError> {
    let timed_out = NetlinkError::Timeout { request, timeout };
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(NetlinkError::Timeout { request, timeout })?;
        set_receive_timeout(socket, left).map_err(NetlinkError::Socket)?;
        let received = match socket.recv(&mut &mut buffer[..], 0) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out)
            }
            Err(source) => return Err(NetlinkError::Receive { request, source }),
        };
        if received > buffer.len() {
            return Err(NetlinkError::Decode {
                request,
                message: format!(
                    "datagram of {received} bytes exceeds the {} byte buffer",
                    buffer.len()
                ),
            });
        }
        if on_datagram(&buffer[..received])? == Progress::Done {
            return Ok(());
        }
    }
}

/// A socket subscribed to `RTNLGRP_LINK`: the kernel sends it a message for
/// every link created, deleted or changed (name, flags, MTU, carrier, oper
/// state, master, address) — everything the cache holds, and nothing when
/// only counters move.
pub struct LinkEvents {
    socket: Socket,
    buffer: Vec<u8>,
}

impl LinkEvents {
    pub fn subscribe() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket
            .bind(&SocketAddr::new(0, RTMGRP_LINK))
            .map_err(NetlinkError::Socket)?;
        socket
            .set_non_blocking(true)
            .map_err(NetlinkError::Socket)?;
        Ok(LinkEvents {
            socket,
            buffer: vec![0u8; RECV_BUFFER_BYTES],
        })
    }

    /// Reads every queued notification; true when there was any, or when
    /// some were lost (ENOBUFS: the queue overflowed), so that either way
    /// the cache is refreshed.
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Ok(0) => return changed,
                Ok(_) => changed = true,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return changed,
                Err(error) => {
                    tracing::debug!(%error, "link notifications lost; refreshing the link cache");
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_request_asks_every_link_for_link_64_only() {
        let mut request = StatsMessage::default();
        request.header.filter_mask = StatsFilterMask::Link64;
        let bytes = request_bytes(RouteNetlinkMessage::GetStats(request), NLM_F_REQUEST, 7);
        // nlmsghdr, then struct if_stats_msg: family, pads, ifindex, filter_mask.
        assert_eq!(bytes.len(), 16 + 12);
        let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), 28, "nlmsg_len");
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 94, "RTM_GETSTATS");
        assert_eq!(word(8), 7, "sequence");
        assert_eq!(word(20), 0, "ifindex 0: all links");
        assert_eq!(word(24), 1, "IFLA_STATS_FILTER_BIT(IFLA_STATS_LINK_64)");
    }

    #[test]
    fn a_dump_that_never_answers_times_out() {
        // A socket that sent no request: nothing will ever arrive, which is
        // what a wedged dump looks like from here.
        let mut socket = Socket::new(NETLINK_ROUTE).expect("netlink socket");
        socket.bind_auto().expect("bind");
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
        let result = receive(
            &socket,
            &mut buffer,
            "RTM_GETLINK",
            Instant::now() + timeout,
            timeout,
            &mut |_| Ok(Progress::More),
        );
        assert!(
            matches!(result, Err(NetlinkError::Timeout { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
