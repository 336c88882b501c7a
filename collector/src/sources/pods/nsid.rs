//! `RTM_GETNSID`: the id the collector's network namespace has for another
//! namespace, given an open fd of it. Any process may ask (the rtnetlink
//! GET family needs no capability), so it works after the capability drop.

use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{Emitable, NlasIterator, Parseable, NLM_F_REQUEST};
use netlink_packet_route::nsid::{NsidAttribute, NsidHeader, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;

use crate::sources::netlink::decode::parse_datagram;
use crate::sources::netlink::socket::{
    connected_socket, request_bytes, set_receive_timeout, RECV_BUFFER_BYTES,
};
use crate::sources::netlink::NetlinkError;

const RTM_NEWNSID: u16 = 88;
/// One answer is a local round trip; a kernel that has not answered by then
/// never will, and the scrape must not wait on it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

pub struct NsidSocket {
    socket: Socket,
    buffer: Vec<u8>,
    sequence: u32,
}

impl NsidSocket {
    pub fn open() -> Result<NsidSocket, NetlinkError> {
        let socket = connected_socket()?;
        set_receive_timeout(&socket, REPLY_TIMEOUT).map_err(NetlinkError::Socket)?;
        Ok(NsidSocket {
            socket,
            buffer: vec![0u8; RECV_BUFFER_BYTES],
            sequence: 0,
        })
    }

    /// The id of the namespace `netns` refers to; `None` when the kernel
    /// has assigned it none here (no link of ours has a peer there).
    pub fn nsid_of(&mut self, netns: &impl AsRawFd) -> Result<Option<i32>, NetlinkError> {
        const REQUEST: &str = "RTM_GETNSID";
        self.sequence = self.sequence.wrapping_add(1);
        let mut request = NsidMessage::default();
        request
            .attributes
            .push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
        let message = request_bytes(
            RouteNetlinkMessage::GetNsId(request),
            NLM_F_REQUEST,
            self.sequence,
        );
        self.socket
            .send(&message, 0)
            .map_err(|source| NetlinkError::Send {
                request: REQUEST,
                source,
            })?;
        let mut nsid = None;
        let mut answered = false;
        let mut interrupted = false;
        while !answered {
            let received = self
                .socket
                .recv(&mut &mut self.buffer[..], 0)
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        NetlinkError::Timeout {
                            request: REQUEST,
                            timeout: REPLY_TIMEOUT,
                        }
                    }
                    _ => NetlinkError::Receive {
                        request: REQUEST,
                        source,
                    },
                })?;
            let datagram = &self.buffer[..received.min(self.buffer.len())];
            parse_datagram(
                datagram,
                self.sequence,
                REQUEST,
                &mut interrupted,
                &mut |kind, payload| {
                    if kind != RTM_NEWNSID {
                        return;
                    }
                    answered = true;
                    nsid = nsid_from_payload(payload);
                },
            )?;
        }
        Ok(nsid.filter(|id| *id >= 0))
    }
}

/// NETNSA_NSID of one RTM_NEWNSID payload (-1 is NETNSA_NSID_NOT_ASSIGNED),
/// each attribute decoded on its own so that one that does not decode
/// hides no other.
fn nsid_from_payload(payload: &[u8]) -> Option<i32> {
    let header = NsidHeader::parse(payload).ok()?;
    NlasIterator::new(payload.get(header.buffer_len()..)?)
        .map_while(Result::ok)
        .find_map(|nla| match NsidAttribute::parse(&nla) {
            Ok(NsidAttribute::Id(id)) => Some(id),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// struct rtgenmsg, padded to NLMSG_ALIGNTO.
    const RTGENMSG_LEN: usize = 4;
    const NETNSA_NSID: u16 = 1;

    #[test]
    fn reads_the_id_and_the_unassigned_marker() {
        let payload = |id: i32| {
            let mut bytes = vec![0u8; RTGENMSG_LEN];
            bytes.extend_from_slice(&8u16.to_ne_bytes());
            bytes.extend_from_slice(&NETNSA_NSID.to_ne_bytes());
            bytes.extend_from_slice(&id.to_ne_bytes());
            bytes
        };
        assert_eq!(nsid_from_payload(&payload(7)), Some(7));
        assert_eq!(nsid_from_payload(&payload(-1)), Some(-1));
        assert_eq!(nsid_from_payload(&[0u8; 2]), None);
        // A NETNSA_PID cut to two bytes does not hide the id after it.
        let mut odd = vec![0u8; RTGENMSG_LEN];
        odd.extend_from_slice(&6u16.to_ne_bytes());
        odd.extend_from_slice(&2u16.to_ne_bytes());
        odd.extend_from_slice(&[1, 2, 0, 0]);
        odd.extend_from_slice(&payload(7)[RTGENMSG_LEN..]);
        assert_eq!(nsid_from_payload(&odd), Some(7));
    }

    #[test]
    fn the_own_namespace_answers_without_privileges_needed() {
        // Our own namespace has no id in itself: the kernel answers -1,
        // which is "none". What matters is that it answers at all.
        let own = std::fs::File::open("/proc/self/ns/net").expect("own netns");
        let mut socket = NsidSocket::open().expect("rtnetlink socket");
        assert_eq!(socket.nsid_of(&own).expect("RTM_GETNSID answered"), None);
    }
}
