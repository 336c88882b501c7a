//! Network namespaces and veth pairs the test creates, removed on drop
//! (also when a test panics), and UDP traffic between them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;

pub(super) static NEXT_NETNS: AtomicU32 = AtomicU32::new(0);

/// A network namespace in /var/run/netns; deleted on drop if the test
/// made it.
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "ct-{tag}-{}-{}",
            std::process::id(),
            NEXT_NETNS.fetch_add(1, Ordering::Relaxed)
        );
        Netns::named(name)
    }

    /// A namespace under exactly `name` in /var/run/netns.
    pub fn named(name: String) -> Netns {
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name, owned: true };
        // No IPv6: router solicitations and MLD reports would add packets the
        // tests do not send.
        netns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        netns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// A namespace someone else made (a container runtime), which that
    /// owner deletes.
    pub fn existing(name: String) -> Netns {
        Netns { name, owned: false }
    }

    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Moves the calling thread into this namespace (for threads the test
    /// spawns itself and never returns to the host namespace).
    pub fn enter_this_thread(&self) {
        enter_netns(&self.name);
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created
    /// there stay in this namespace wherever they are used afterwards.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter_netns(&self.name);
                    f()
                })
                .join()
                .expect("thread in netns panicked")
        })
    }

    /// `ip -s -s -j link` of this namespace, by interface name.
    /// The namespace's inode number: the kernel's `ns.inum`, which the
    /// probes key drops by.
    pub fn inode(&self) -> u32 {
        use std::os::unix::fs::MetadataExt;
        let path = format!("/var/run/netns/{}", self.name);
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .ino() as u32
    }

    /// The ifindex of `interface` in this namespace.
    pub fn ifindex(&self, interface: &str) -> u32 {
        self.ip_links()[interface]["ifindex"].as_u64().unwrap() as u32
    }

    pub fn ip_links(&self) -> BTreeMap<String, serde_json::Value> {
        let output = self.ip(&["-s", "-s", "-j", "link", "show"]);
        let links: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).expect("ip -j output is JSON");
        links
            .into_iter()
            .map(|l| (l["ifname"].as_str().unwrap().to_string(), l))
            .collect()
    }

    pub fn mac(&self, interface: &str) -> String {
        self.ip_links()[interface]["address"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn enter_netns(name: &str) {
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: valid fd of a netns file; affects the calling thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A veth pair between two namespaces, addressed from 198.18.<subnet>.0/24
/// with permanent neighbour entries, so no ARP adds packets.
pub struct VethPair {
    pub a: String,
    pub b: String,
    pub a_addr: String,
    pub b_addr: String,
}

impl VethPair {
    pub fn new(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str, subnet: u8) -> VethPair {
        ns_a.ip(&[
            "link", "add", a, "type", "veth", "peer", "name", b, "netns", &ns_b.name,
        ]);
        let a_addr = format!("198.18.{subnet}.1");
        let b_addr = format!("198.18.{subnet}.2");
        ns_a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", a]);
        ns_b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", b]);
        ns_a.ip(&["link", "set", a, "up"]);
        ns_b.ip(&["link", "set", b, "up"]);
        let (mac_a, mac_b) = (ns_a.mac(a), ns_b.mac(b));
        ns_a.ip(&[
            "neigh",
            "replace",
            &b_addr,
            "lladdr",
            &mac_b,
            "dev",
            a,
            "nud",
            "permanent",
        ]);
        ns_b.ip(&[
            "neigh",
            "replace",
            &a_addr,
            "lladdr",
            &mac_a,
            "dev",
            b,
            "nud",
            "permanent",
        ]);
        VethPair {
            a: a.into(),
            b: b.into(),
            a_addr,
            b_addr,
        }
    }
}

/// Sends `count` UDP datagrams of `payload` bytes from inside `ns`.
pub fn send_udp(ns: &Netns, destination: &str, count: usize, payload: usize) {
    let destination = destination.to_string();
    ns.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let data = vec![0x5au8; payload];
        for _ in 0..count {
            socket.send_to(&data, &destination).unwrap();
        }
    });
}

/// A UDP socket bound inside `ns` with a receive buffer of `bytes` (root
/// may force past rmem_max; 0 gives the kernel's minimum).
pub fn udp_socket(ns: &Netns, address: &str, bytes: libc::c_int) -> UdpSocket {
    let address = address.to_string();
    let socket = ns.run_in(move || UdpSocket::bind(&address).unwrap());
    // SAFETY: valid socket fd, option value of the declared size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    socket
}

/// A UDP socket bound inside `ns`; counts what arrives.
pub fn udp_listener(ns: &Netns, address: &str) -> UdpSocket {
    // Room for every datagram a test sends before it reads, so counts
    // never depend on the reader keeping up.
    let socket = udp_socket(ns, address, 16 << 20);
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

pub fn receive_all(socket: &UdpSocket, expected: usize) -> usize {
    let mut buffer = [0u8; 65536];
    let mut received = 0;
    while received < expected && socket.recv(&mut buffer).is_ok() {
        received += 1;
    }
    received
}

/// `ip -n NS -batch -` with `commands` on stdin (thousands of links in one process).
pub fn ip_batch(ns: &Netns, commands: &str) {
    let mut child = Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("starting ip -batch");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch failed");
}

/// Closes `stream` with a reset rather than a FIN (SO_LINGER on, 0 s).
pub fn reset_on_close(stream: std::net::TcpStream) {
    let linger = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    linger.expect("SO_LINGER");
    drop(stream);
}
