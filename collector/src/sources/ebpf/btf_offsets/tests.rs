//! The BTF reader on a hand-made BTF and fuzz-found inputs.

use super::*;

// Unit tests read fixtures only, never the host's /sys/kernel/btf:
// they must pass the same on any build machine. The running kernel's
// BTF is exercised by the privileged integration tests.
const TINY_BTF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/btf/tiny.btf");

/// Hand-built BTF with the shapes a kernel nests members in (anonymous
/// struct and union, typedef, bitfield) and offsets no kernel has (see
/// make_tiny_btf.py).
fn tiny() -> KernelBtf {
    KernelBtf::from_file(Path::new(TINY_BTF)).unwrap()
}

#[test]
fn offsets_follow_the_btf_through_unions_typedefs_and_nesting() {
    let btf = tiny();
    assert_eq!(btf.member_offset("sk_buff", "dev").unwrap(), 8);
    assert_eq!(btf.member_offset("sk_buff", "len").unwrap(), 16);
    assert_eq!(btf.member_offset("net_device", "ifindex").unwrap(), 0);
    assert_eq!(btf.member_offset("net_device", "nd_net.net").unwrap(), 8);
    assert_eq!(btf.member_offset("net", "ns.inum").unwrap(), 12);
    assert_eq!(
        btf.enum_value("skb_drop_reason", "SKB_CONSUMED").unwrap(),
        Some(1)
    );
    assert_eq!(btf.enum_value("skb_drop_reason", "SKB_NOPE").unwrap(), None);
    assert!(matches!(
        btf.member_offset("net", "ns.inum.deeper"),
        Err(BtfError::MemberNotFound { .. })
    ));
}

#[test]
fn nested_paths_add_up_their_components() {
    let btf = tiny();
    let whole = btf.member_offset("net", "ns.inum").unwrap();
    let parts =
        btf.member_offset("net", "ns").unwrap() + btf.member_offset("ns_common", "inum").unwrap();
    // Both parts are non-zero in the fixture (8 + 4), so a walker that
    // dropped either would be caught.
    assert_eq!((whole, parts), (12, 12));
    // possible_net_t is a typedef of an anonymous struct: followed through.
    let nd_net = btf.member_offset("net_device", "nd_net").unwrap();
    assert_eq!(
        btf.member_offset("net_device", "nd_net.net").unwrap(),
        nd_net
    );
}

#[test]
fn members_inside_anonymous_unions_are_found() {
    // As in a kernel's sk_buff, the fixture's dev sits in an anonymous
    // union (4 bytes into) an anonymous struct (4 bytes into sk_buff):
    // both nesting offsets are added.
    let btf = tiny();
    assert_eq!(btf.member_offset("sk_buff", "dev").unwrap(), 8);
    assert_eq!(btf.member_offset("sk_buff", "len").unwrap(), 16);
}

#[test]
fn errors_name_what_is_missing() {
    let btf = tiny();
    let missing = btf
        .member_offset("sk_buff", "no_such_member")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("sk_buff") && missing.contains("no_such_member"),
        "{missing}"
    );
    assert!(matches!(
        btf.member_offset("no_such_struct_xyz", "a"),
        Err(BtfError::StructNotFound(_))
    ));
    assert!(matches!(
        btf.member_offset("sk_buff", "cloned"),
        Err(BtfError::Bitfield { .. })
    ));
}

#[test]
fn truncated_or_garbage_btf_is_an_error_not_a_panic() {
    let bytes = std::fs::read(TINY_BTF).unwrap();
    assert!(
        KernelBtf::from_bytes(&bytes).is_ok(),
        "the whole file parses"
    );
    for cut in [0, 4, 24, 100, bytes.len() / 2] {
        assert!(
            KernelBtf::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    assert!(KernelBtf::from_bytes(&[0xffu8; 64]).is_err());
}

#[test]
fn fuzz_found_member_offset_overflow_is_an_error() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/btf/fuzz-member-offset-overflow.btf"
    );
    let btf = KernelBtf::from_file(Path::new(path)).unwrap();
    // Its `net.ns` sits at a bit offset that overflows once `inum` is added.
    assert!(matches!(
        btf.member_offset("net", "ns.inum"),
        Err(BtfError::Corrupt { .. })
    ));
}

#[test]
fn fuzz_found_header_offset_overflow_is_rejected() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/btf/fuzz-header-offset-overflow.btf"
    );
    let error = KernelBtf::from_file(Path::new(path))
        .err()
        .expect("corrupt header rejected");
    assert!(error.to_string().contains("exceed"), "{error}");
}
