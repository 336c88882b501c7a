//! The conntrack parser on files the kernel wrote
//! (`tests/fixtures/conntrack/`), changed here to put numbers in the
//! served columns, and the source over a directory laid out like `/proc`.

use std::collections::BTreeMap;

use super::parse::{parse_stat, parse_value, ParseError, MAX_FILE_BYTES};
use super::*;

const HOST: &str = include_str!("../../../tests/fixtures/conntrack/stat-6.18-host");
const ENTRIES: &str = include_str!("../../../tests/fixtures/conntrack/stat-6.18-8-entries");

/// 4.19's header (`ct_cpu_seq_show`): `searched` and `delete_list` where
/// 6.18 has `clashres` and `chainlength`.
const HEADER_4_19: &str = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart";

fn sums(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().collect()
}

/// `text` with the value of `column` set in each row, one value per row.
fn with_column(text: &str, column: &str, per_row: &[&str]) -> String {
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let at = header.split_whitespace().position(|n| n == column).unwrap();
    let mut out = format!("{header}\n");
    for (row, value) in lines.zip(per_row) {
        let mut values: Vec<&str> = row.split_whitespace().collect();
        values[at] = value;
        out.push_str(&values.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn the_captured_files_parse_with_every_served_column() {
    let zero = sums(&[("drop", 0), ("early_drop", 0), ("insert_failed", 0)]);
    assert_eq!(parse_stat(HOST).unwrap(), zero);
    // entries is not summed: it is the namespace's count, on every row.
    assert_eq!(parse_stat(ENTRIES).unwrap(), zero);
}

#[test]
fn each_column_is_summed_over_the_cpus_in_hexadecimal() {
    let text = with_column(ENTRIES, "insert_failed", &["0000000a", "00000005"]);
    let text = with_column(&text, "drop", &["ffffffff", "00000001"]);
    let text = with_column(&text, "early_drop", &["00000000", "00000100"]);
    assert_eq!(
        parse_stat(&text).unwrap(),
        sums(&[
            ("insert_failed", 15),
            ("drop", 0x1_0000_0000),
            ("early_drop", 256)
        ])
    );
}

#[test]
fn columns_are_found_by_name_not_position() {
    // The served columns moved to the front, in another order.
    let text = "early_drop entries drop insert_failed\n00000003 00000009 00000002 00000001\n00000004 00000009 00000000 00000001\n";
    assert_eq!(
        parse_stat(text).unwrap(),
        sums(&[("insert_failed", 2), ("drop", 2), ("early_drop", 7)])
    );
    // 4.19's header, same rows.
    let rows: String = ENTRIES.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let old = with_column(
        &format!("{HEADER_4_19}\n{rows}"),
        "early_drop",
        &["00000001", "00000002"],
    );
    assert_eq!(
        parse_stat(&old).unwrap(),
        sums(&[("insert_failed", 0), ("drop", 0), ("early_drop", 3)])
    );
    // A served column the kernel lacks is left out, the others kept.
    let without = "entries drop\n00000001 00000002\n";
    assert_eq!(parse_stat(without).unwrap(), sums(&[("drop", 2)]));
}

#[test]
fn malformed_files_are_errors_that_name_the_problem() {
    assert_eq!(parse_stat(""), Err(ParseError::Empty));
    let header = format!("{}\n", ENTRIES.lines().next().unwrap());
    assert_eq!(parse_stat(&header), Err(ParseError::NoRows));
    let cut = &ENTRIES[..ENTRIES.len() - 5];
    assert_eq!(parse_stat(cut), Err(ParseError::Unterminated));
    let short = ENTRIES.replacen(" 00000000\n", "\n", 1);
    assert_eq!(
        parse_stat(&short),
        Err(ParseError::Mismatch {
            line: 2,
            names: 17,
            values: 16
        })
    );
    let not_hex = with_column(ENTRIES, "drop", &["0000000g", "00000000"]);
    let error = parse_stat(&not_hex).unwrap_err();
    assert_eq!(
        error,
        ParseError::Hex {
            line: 2,
            column: "drop",
            value: "0000000g".into()
        }
    );
    assert!(error.to_string().contains("column drop"), "{error}");
    let huge = format!("{header}{}", "0 ".repeat(MAX_FILE_BYTES));
    assert_eq!(parse_stat(&huge), Err(ParseError::TooLarge));
}

#[test]
fn sysctl_values_are_one_decimal_number() {
    assert_eq!(parse_value("262144\n"), Ok(262144));
    assert_eq!(parse_value("0\n"), Ok(0));
    assert_eq!(
        parse_value("-1\n"),
        Err(ParseError::Value { value: "-1".into() })
    );
    assert_eq!(parse_value("12"), Err(ParseError::Unterminated));
}

/// A directory laid out as `/proc/net/stat` and `/proc/sys/net/netfilter`.
fn layout(
    stat: Option<&str>,
    count: Option<&str>,
    max: Option<&str>,
) -> (tempfile::TempDir, ConntrackSource) {
    let dir = tempfile::tempdir().unwrap();
    let sysctl = dir.path().join("netfilter");
    std::fs::create_dir(&sysctl).unwrap();
    let stat_path = dir.path().join("nf_conntrack");
    for (path, text) in [
        (stat_path.clone(), stat),
        (sysctl.join("nf_conntrack_count"), count),
        (sysctl.join("nf_conntrack_max"), max),
    ] {
        if let Some(text) = text {
            std::fs::write(path, text).unwrap();
        }
    }
    let source = ConntrackSource::new(stat_path, sysctl);
    (dir, source)
}

#[test]
fn no_conntrack_in_the_kernel_is_nothing_read_and_no_error() {
    let (_dir, source) = layout(None, None, None);
    let (conntrack, errors) = source.read();
    assert_eq!(conntrack, None);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn every_file_read_gives_every_value() {
    let stat = with_column(ENTRIES, "insert_failed", &["00000002", "00000001"]);
    let (_dir, source) = layout(Some(&stat), Some("8\n"), Some("262144\n"));
    let (conntrack, errors) = source.read();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        conntrack,
        Some(Conntrack {
            entries: Some(8),
            entries_limit: Some(262144),
            stat: sums(&[("insert_failed", 3), ("drop", 0), ("early_drop", 0)]),
        })
    );
}

#[test]
fn a_malformed_file_is_an_error_and_the_others_are_still_read() {
    let (_dir, source) = layout(
        Some("entries drop\n00000001 0000000z\n"),
        Some("8\n"),
        Some("262144\n"),
    );
    let (conntrack, errors) = source.read();
    let conntrack = conntrack.unwrap();
    assert_eq!(
        (conntrack.entries, conntrack.entries_limit),
        (Some(8), Some(262144))
    );
    assert!(conntrack.stat.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0].to_string();
    assert!(
        message.contains("nf_conntrack:") && message.contains("column drop"),
        "{message}"
    );

    let (_dir, source) = layout(Some(ENTRIES), Some("eight\n"), None);
    let (conntrack, errors) = source.read();
    let conntrack = conntrack.unwrap();
    assert_eq!((conntrack.entries, conntrack.entries_limit), (None, None));
    assert_eq!(conntrack.stat.len(), 3);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]
        .to_string()
        .contains("nf_conntrack_count: `eight` is not a number"));
}

#[test]
fn an_unreadable_file_is_an_error_not_an_absence() {
    // A directory where the file should be: open succeeds, read fails.
    let (dir, source) = layout(None, Some("1\n"), Some("2\n"));
    std::fs::create_dir(dir.path().join("nf_conntrack")).unwrap();
    let (conntrack, errors) = source.read();
    assert_eq!(conntrack.unwrap().entries, Some(1));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(errors[0], ConntrackError::Read { .. }),
        "{errors:?}"
    );
}
