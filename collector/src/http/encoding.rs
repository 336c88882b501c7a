//! Content negotiation of `/metrics`: whether the client's `Accept-Encoding`
//! (RFC 9110 §12.5.3) admits gzip.

/// Whether gzip is acceptable under the given `Accept-Encoding` field
/// values (a repeated header is one comma-separated list) and preferred
/// over sending the body as is.
///
/// An explicit `gzip` (or `x-gzip`) entry decides gzip's weight and `*`
/// only codings the client did not name, so `gzip;q=0, *` refuses gzip.
/// Identity is the fallback and wins only where the client weighs it
/// above gzip; on equal weights gzip wins, as it costs the network less.
pub fn accepts_gzip<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    let (mut gzip, mut identity, mut any) = (None, None, None);
    for (coding, weight) in values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter_map(entry)
    {
        let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding.eq_ignore_ascii_case("identity") {
            &mut identity
        } else if coding == "*" {
            &mut any
        } else {
            continue;
        };
        // A coding listed twice: the more favourable weight counts.
        *slot = Some(slot.map_or(weight, |w: u16| w.max(weight)));
    }
    let gzip = gzip.or(any).unwrap_or(0);
    let identity = identity.or(any).unwrap_or(0);
    gzip > 0 && gzip >= identity
}

/// One list member: its coding and weight in thousandths, or `None` when
/// the member is empty or its weight is malformed (such a member is void).
fn entry(item: &str) -> Option<(&str, u16)> {
    let mut parts = item.split(';').map(str::trim);
    let coding = parts.next().filter(|c| !c.is_empty())?;
    let mut weight = 1000;
    for parameter in parts {
        if let Some(q) = parameter
            .strip_prefix("q=")
            .or_else(|| parameter.strip_prefix("Q="))
        {
            weight = qvalue(q)?;
        }
    }
    Some((coding, weight))
}

/// RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`, in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
}
