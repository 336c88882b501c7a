//! Names of the kernel's drop reasons, as the running kernel spells them.
//!
//! `enum skb_drop_reason` is not UAPI: values were prepended and reordered
//! across versions, so no table is compiled in. The names come from the
//! kernel's BTF (so a collector whose probes are all `tp_btf` needs no
//! tracefs), else from the `kfree_skb` format's `__print_symbolic` (the
//! classic fallback on kernels without BTF for the enum). Since 6.4 the high
//! 16 bits of a reason carry a subsystem (openvswitch, mac80211), whose
//! reasons live in their own `enum *_drop_reason`.

use std::collections::BTreeMap;

use collector_common::REASON_UNKNOWN;

use super::btf_offsets::KernelBtf;

/// `SKB_DROP_REASON_SUBSYS_SHIFT` in `include/net/dropreason.h`.
const SUBSYS_SHIFT: u32 = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonNames {
    /// Reason value -> name without the `SKB_DROP_REASON_` prefix.
    names: BTreeMap<u32, String>,
    /// Subsystem id (high 16 bits) -> its name without
    /// `SKB_DROP_REASON_SUBSYS_`, for reasons the enums do not name.
    subsystems: BTreeMap<u32, String>,
}

impl ReasonNames {
    /// The names in the kernel's BTF; `None` when it has no
    /// `enum skb_drop_reason` (kernels before 5.17).
    pub fn from_btf(btf: &KernelBtf) -> Option<ReasonNames> {
        let core = btf.enumerators("skb_drop_reason").ok()?;
        let mut names = BTreeMap::new();
        for (name, value) in core {
            let short = name
                .strip_prefix("SKB_DROP_REASON_")
                .or_else(|| name.strip_prefix("SKB_"))
                .unwrap_or(&name);
            if short != "MAX" {
                names.entry(value).or_insert_with(|| short.to_string());
            }
        }
        let subsystem_enums =
            btf.enum_names(|n| n.ends_with("_drop_reason") && n != "skb_drop_reason");
        for enum_name in subsystem_enums {
            for (name, value) in btf.enumerators(&enum_name).unwrap_or_default() {
                if value >> SUBSYS_SHIFT != 0 {
                    names.entry(value).or_insert(name);
                }
            }
        }
        let subsystems = btf
            .enumerators("skb_drop_reason_subsys")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, id)| {
                let short = name.strip_prefix("SKB_DROP_REASON_SUBSYS_")?;
                (id != 0 && short != "NUM").then(|| (id, short.to_string()))
            })
            .collect();
        Some(ReasonNames { names, subsystems })
    }

    /// Names from a tracepoint format's `__print_symbolic` table.
    pub fn from_table(names: BTreeMap<u32, String>) -> ReasonNames {
        ReasonNames {
            names,
            subsystems: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of `reason` as served in the `reason` label.
    pub fn name(&self, reason: u32) -> String {
        if reason == REASON_UNKNOWN {
            return "unknown".to_string();
        }
        if let Some(name) = self.names.get(&reason) {
            return name.clone();
        }
        let (subsystem, code) = (reason >> SUBSYS_SHIFT, reason & 0xffff);
        match self.subsystems.get(&subsystem) {
            Some(name) => format!("{name}_REASON_{code}"),
            None => format!("reason_{reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_btf_enums_with_their_subsystems() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/btf/tiny.btf");
        let btf = KernelBtf::from_file(std::path::Path::new(path)).unwrap();
        let names = ReasonNames::from_btf(&btf).unwrap();
        assert_eq!(names.name(3), "NO_SOCKET");
        assert_eq!(names.name(2), "NOT_SPECIFIED");
        assert_eq!(names.name(1), "CONSUMED");
        // SKB_DROP_REASON_MAX is a bound, not a reason.
        assert_eq!(names.name(4), "reason_4");
        assert_eq!(names.name(0x30001), "OVS_DROP_LAST_ACTION");
        // A subsystem's reason no enum names still says whose it is.
        assert_eq!(names.name(0x30007), "OPENVSWITCH_REASON_7");
        assert_eq!(names.name(0x50001), "reason_327681");
        assert_eq!(names.name(REASON_UNKNOWN), "unknown");
    }

    #[test]
    fn a_format_table_names_what_it_lists() {
        let names = ReasonNames::from_table(BTreeMap::from([(2, "NO_SOCKET".to_string())]));
        assert_eq!(names.name(2), "NO_SOCKET");
        assert_eq!(names.name(9), "reason_9");
        assert!(ReasonNames::default().is_empty());
    }
}
