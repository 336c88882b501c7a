//! Drops of skbs freed from queues, and what drives them: IPv4 fragments
//! sent raw, a TCP stream whose receiver never reads, the pod's own kernel
//! counters, and the drop map's keys checked against the namespaces that
//! exist.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::*;

/// Drops of skbs freed from rbtree queues, where `skb->dev` before 6.11
/// holds another skb or nothing: TCP out-of-order pruning (owned by the
/// pod's socket, so the pod's, with no device; traced since TCP's drop
/// reasons, 5.18) and IP fragment queues
/// timing out (the first fragment's device is restored by the kernel; the
/// others have neither device nor socket). None of them may make a key
/// that no namespace accounts for.
pub fn queued_drops_are_the_pods(flavour: &str, has_reason: bool) {
    let (node, runtime) = node_with_runtime(47);
    let pod = traffic_pod(&runtime, ("team-d", "stream"));
    let collector = start(&node, &runtime.results_dir(), flavour);
    let watch = NamespaceWatch::start();
    let scrape = || pod_drops(&collector.scrape(&node), &pod);
    let named = |reason: &str| if has_reason { reason } else { "unknown" }.to_string();

    // Fragment queues left to time out: FRAGMENTS datagrams with only their
    // first fragment, as many with three later fragments and no first.
    const FRAGMENTED: u16 = 5;
    pod.netns.exec(&["sysctl", "-qw", "net.ipv4.ipfrag_time=1"]);
    let before = scrape();
    let fails = kernel_counter(&pod.netns, "/proc/net/snmp", "Ip", "ReasmFails");
    let destination: std::net::Ipv4Addr = pod.pod_address.parse().unwrap();
    for id in 0..FRAGMENTED {
        first_fragment(&node, destination, 0x7100 + id);
        later_fragments(&node, destination, 0x7200 + id);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let fails = kernel_counter(&pod.netns, "/proc/net/snmp", "Ip", "ReasmFails") - fails;
    assert_eq!(
        fails,
        2 * u64::from(FRAGMENTED),
        "the kernel's own count of expired queues"
    );
    let fragments = changed(&before, &scrape());
    println!("{flavour}: expired fragment queues: {fragments:?}, ReasmFails +{fails}");
    // `FRAG_REASM_TIMEOUT` where the kernel has it (6.2 on); 6.1 frees the
    // head with a plain `kfree_skb`.
    let expired = ["FRAG_REASM_TIMEOUT", "NOT_SPECIFIED"].map(named);
    let on_eth0: Vec<_> = fragments
        .iter()
        .filter(|((interface, reason), _)| interface == "eth0" && expired.contains(reason))
        .collect();
    assert!(
        on_eth0.len() == 1 && *on_eth0[0].1 == f64::from(FRAGMENTED),
        "each first fragment is the pod's, on its eth0: {fragments:?}"
    );

    // Out-of-order segments pruned from a starved receiver's queue; the
    // holes are random, so a stream that queued nothing out of order is
    // tried again, a few times at most.
    let before = scrape();
    let ofo_pruned = || kernel_counter(&pod.netns, "/proc/net/netstat", "TcpExt", "OfoPruned");
    let pruned_before = ofo_pruned();
    for _ in 0..3 {
        starved_stream_with_holes(&node, &pod);
        if ofo_pruned() > pruned_before {
            break;
        }
    }
    settle();
    let pruned = ofo_pruned() - pruned_before;
    assert!(
        pruned > 0,
        "TEST SETUP FAILED: the kernel pruned no out-of-order queue"
    );
    let stream = changed(&before, &scrape());
    println!("{flavour}: starved stream with holes: {stream:?}, OfoPruned +{pruned}");
    // Each prune frees at least one out-of-order skb. Kernels without drop
    // reasons free TCP's drops with `__kfree_skb`, which fires no
    // tracepoint: there is nothing to count, only keys to check.
    if has_reason {
        let prune = (String::new(), named("TCP_OFO_QUEUE_PRUNE"));
        let given = stream.get(&prune).copied().unwrap_or(0.0);
        assert!(
            given >= pruned as f64,
            "pruned out-of-order skbs are the pod's, with no device: {stream:?}"
        );
    }

    let seen = watch.seen();
    let pod_devices = [1, pod.netns.ifindex("eth0")];
    let keys = drop_map_keys(collector.pid());
    let foreign = foreign_keys(&keys, &seen, (pod.netns.inode(), &pod_devices));
    assert!(
        foreign.is_empty(),
        "keys no namespace accounts for: {foreign:?}"
    );
}

/// The lowest inode a network namespace can have (the probe's
/// `NETNS_INUM_FLOOR`): the kernel's fixed init inodes and nsfs's dynamic
/// range are above it.
const NETNS_INUM_FLOOR: u32 = 0xEFFF_FF00;

/// One IPv4 fragment of a UDP datagram `id` from `ns` to `destination`:
/// `offset` in 8-byte units, more fragments always announced, so the
/// datagram never completes and the receiver's queue times out. The
/// kernel fills in the source address, length and header checksum.
fn send_fragment(ns: &Netns, destination: Ipv4Addr, id: u16, offset: u16, payload: &[u8]) {
    const MORE_FRAGMENTS: u16 = 0x2000;
    let mut packet = vec![0x45, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&(MORE_FRAGMENTS | offset).to_be_bytes());
    packet.extend_from_slice(&[64, libc::IPPROTO_UDP as u8, 0, 0, 0, 0, 0, 0]);
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(payload);
    ns.run_in(|| {
        // SAFETY: plain socket calls on a descriptor this block owns and
        // closes; the address and buffer outlive the calls.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let address = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(destination.octets()),
                },
                sin_zero: [0; 8],
            };
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&address as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(sent, packet.len() as isize, "sendto: {error}");
        }
    });
}

/// The first fragment of a UDP datagram to port 9: its header and 16
/// bytes, the rest never sent.
fn first_fragment(ns: &Netns, destination: Ipv4Addr, id: u16) {
    let mut payload = Vec::new();
    payload.extend_from_slice(&40000u16.to_be_bytes());
    payload.extend_from_slice(&9u16.to_be_bytes());
    payload.extend_from_slice(&64u16.to_be_bytes());
    payload.extend_from_slice(&[0, 0]);
    payload.extend_from_slice(&[0xab; 16]);
    send_fragment(ns, destination, id, 0, &payload);
}

/// Three later fragments of a datagram whose first never comes, sent out
/// of order so the queue's rbtree has nodes with children when it is
/// purged (where `skb->dev` reads as another skb).
fn later_fragments(ns: &Netns, destination: Ipv4Addr, id: u16) {
    for offset in [4, 8, 6] {
        send_fragment(ns, destination, id, offset, &[0xcd; 16]);
    }
}

/// A counter of `/proc/net/netstat` or `/proc/net/snmp` inside `ns`.
fn kernel_counter(ns: &Netns, file: &str, group: &str, field: &str) -> u64 {
    let out = ns.exec(&["cat", file]);
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == field)
        .unwrap_or_else(|| panic!("no {group} {field} in {file}"));
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// A TCP stream from `node` into `pod` whose receiver never reads, while
/// the pod's own nftables rule drops a random third of its data segments:
/// segments past each hole wait in the out-of-order queue. Half a second
/// in, the receiver shrinks its receive buffer to the minimum; the window
/// already offered cannot shrink, so what keeps arriving overflows the
/// buffer and the kernel prunes the out-of-order queue
/// (`tcp_prune_ofo_queue`). Bounded: the sender stops after two seconds.
fn starved_stream_with_holes(node: &Netns, pod: &Pod) {
    let rule = "table inet bpfwalk_holes { chain input { type filter hook input priority 0; policy accept; tcp dport 5201 meta length > 200 numgen random mod 3 0 counter drop; }; }";
    pod.netns.exec(&["nft", rule]);
    let address = format!("{}:5201", pod.pod_address);
    let listener = pod.netns.run_in(|| TcpListener::bind(&address).unwrap());
    // Accepted sockets inherit the listener's receive buffer.
    set_receive_buffer(&listener, 1 << 20);
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            set_receive_buffer(&stream, 1);
            stream
        });
        let sender = node.run_in(|| TcpStream::connect(&address).unwrap());
        sender
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut writer = &sender;
        while Instant::now() < deadline {
            // A closed window blocks past the timeout; keep offering data
            // so retransmissions and new segments keep arriving.
            let _ = writer.write(&chunk);
        }
        let _stream = receiver.join().unwrap();
    });
    pod.netns
        .exec(&["nft", "delete", "table", "inet", "bpfwalk_holes"]);
}

fn set_receive_buffer(socket: &impl AsFd, bytes: usize) {
    let set = socket2::SockRef::from(socket).set_recv_buffer_size(bytes);
    set.expect("SO_RCVBUF");
}

/// Every network namespace seen on this machine while it runs, sampled
/// every 50 ms: other tests' namespaces come and go, and their drops are
/// counted too.
struct NamespaceWatch {
    stop: std::sync::mpsc::Sender<()>,
    sampler: std::thread::JoinHandle<BTreeSet<u32>>,
}

impl NamespaceWatch {
    fn start() -> NamespaceWatch {
        let (stop, stopped) = std::sync::mpsc::channel();
        let sampler = std::thread::spawn(move || {
            let mut seen = live_namespaces();
            // Stopped, or the watch dropped by a failing test: both end it.
            while matches!(
                stopped.recv_timeout(Duration::from_millis(50)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            ) {
                seen.extend(live_namespaces());
            }
            seen.extend(live_namespaces());
            seen
        });
        NamespaceWatch { stop, sampler }
    }

    fn seen(self) -> BTreeSet<u32> {
        let _ = self.stop.send(());
        self.sampler.join().expect("namespace sampler panicked")
    }
}

/// Inodes of every network namespace on this machine now: named ones and
/// every process's.
fn live_namespaces() -> BTreeSet<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut inodes = BTreeSet::new();
    let named = std::fs::read_dir("/var/run/netns").into_iter().flatten();
    let processes = std::fs::read_dir("/proc").into_iter().flatten();
    for entry in named.chain(processes).flatten() {
        let path = entry.path();
        let file = if path.starts_with("/proc") {
            path.join("ns/net")
        } else {
            path
        };
        if let Ok(meta) = std::fs::metadata(&file) {
            inodes.insert(meta.ino() as u32);
        }
    }
    inodes
}

/// Keys of the drop map that no namespace accounts for: a device without a
/// namespace, an inode no namespace can have or none that existed during
/// the test (`seen`), a device of the pod other than its `lo` and `eth0`.
fn foreign_keys(keys: &[DropMapKey], seen: &BTreeSet<u32>, pod: (u32, &[u32])) -> Vec<DropMapKey> {
    keys.iter()
        .filter(|k| match k.netns {
            0 => k.ifindex != 0,
            inode if inode == pod.0 => k.ifindex != 0 && !pod.1.contains(&k.ifindex),
            inode => inode < NETNS_INUM_FLOOR || !seen.contains(&inode),
        })
        .copied()
        .collect()
}
