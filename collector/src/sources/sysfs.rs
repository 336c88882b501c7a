//! Negotiated link speed, which rtnetlink does not carry, from sysfs.

use std::path::Path;

const SYSFS_NET: &str = "/sys/class/net";

/// Speed in bytes per second, or `None` when the driver reports none
/// (virtual devices, links without carrier report -1 or refuse the read).
pub fn speed_bytes_per_second(interface: &str) -> Option<u64> {
    speed_from_sysfs(Path::new(SYSFS_NET), interface)
}

fn speed_from_sysfs(root: &Path, interface: &str) -> Option<u64> {
    let text = std::fs::read_to_string(root.join(interface).join("speed")).ok()?;
    let megabits: i64 = text.trim().parse().ok()?;
    (megabits > 0).then(|| megabits as u64 * 1_000_000 / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_megabits_and_rejects_unknown() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [("eth0", "25000\n"), ("down0", "-1\n"), ("junk0", "fast\n")] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("speed"), content).unwrap();
        }
        assert_eq!(speed_from_sysfs(dir.path(), "eth0"), Some(3_125_000_000));
        assert_eq!(speed_from_sysfs(dir.path(), "down0"), None);
        assert_eq!(speed_from_sysfs(dir.path(), "junk0"), None);
        assert_eq!(speed_from_sysfs(dir.path(), "missing0"), None);
    }
}
