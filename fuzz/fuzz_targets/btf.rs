//! BTF bytes: any file given with --btf, parsed and walked for the probe offsets.
#![no_main]

use collector::sources::ebpf::btf_offsets::KernelBtf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = KernelBtf::from_bytes(data) {
        let _ = btf.member_offset("sk_buff", "dev");
        let _ = btf.member_offset("net", "ns.inum");
        let _ = btf.member_offset("net_device", "nd_net.net");
        let _ = btf.enum_value("skb_drop_reason", "SKB_CONSUMED");
    }
});
