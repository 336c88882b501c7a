//! Identity of the network namespace the collector runs in.

use std::os::unix::fs::MetadataExt;

const OWN_NETNS: &str = "/proc/self/ns/net";

/// The inode number of our network namespace, the value the kernel keeps in
/// `net->ns.inum` and the probes compare device namespaces against.
pub fn own_netns_inum() -> std::io::Result<u32> {
    let inode = std::fs::metadata(OWN_NETNS)?.ino();
    u32::try_from(inode).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{OWN_NETNS} inode {inode} exceeds u32"),
        )
    })
}
