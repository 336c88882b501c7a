//! RTM_NEWLINK dump replies, decoded attribute by attribute.
#![no_main]

use collector::sources::netlink::parse_dump;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_dump(data);
});
