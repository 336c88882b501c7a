//! Content negotiation of `/metrics`.

use super::*;

/// Each header value and whether gzip may be sent for it.
const CASES: &[(&str, bool)] = &[
    ("gzip", true),
    ("GZip", true),
    ("x-gzip", true),
    ("gzip, deflate, br", true),
    ("deflate, br", false),
    ("", false),
    ("identity", false),
    ("*", true),
    ("*;q=0", false),
    ("gzip;q=0", false),
    ("gzip; q=0.000", false),
    ("gzip;q=0.001", true),
    ("gzip;Q=0.5", true),
    // An explicit refusal wins over the wildcard (RFC 9110 §12.5.3).
    ("gzip;q=0, *", false),
    ("*, gzip;q=0", false),
    ("*;q=0, gzip", true),
    ("identity;q=0, *", true),
    // A preference for identity over gzip is honoured.
    ("gzip;q=0.2, identity;q=0.8", false),
    ("gzip;q=0.8, identity;q=0.2", true),
    ("identity;q=0.5, *;q=0.9", true),
    // Malformed q-values make the entry void, not a yes.
    ("gzip;q=2", false),
    ("gzip;q=abc", false),
    ("gzip;q=0.5.1", false),
    ("gzip;q=-1", false),
    ("gzip ; q=1", true),
    ("gzip;level=1;q=0", false),
    (" , gzip", true),
];

#[test]
fn q_values_wildcards_and_identity_follow_rfc_9110() {
    for (header, expected) in CASES {
        assert_eq!(
            accepts_gzip([*header]),
            *expected,
            "Accept-Encoding: {header:?}"
        );
    }
}

#[test]
fn repeated_headers_are_one_list() {
    assert!(!accepts_gzip(["*", "gzip;q=0"]));
    assert!(accepts_gzip(["deflate", "gzip"]));
    assert!(!accepts_gzip(std::iter::empty()));
}
