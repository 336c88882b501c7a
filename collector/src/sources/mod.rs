//! Data sources. Each owns one way of reading the kernel and returns plain
//! values; none of them formats output.
pub mod conntrack;
pub mod ebpf;
pub mod netlink;
pub mod netstat;
pub mod pods;
pub mod sysfs;
