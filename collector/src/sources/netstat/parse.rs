//! Parsing the MIB files of `/proc/<pid>/net/` into the counters of
//! [`NETSTAT_FIELDS`]. Pure: the text in, the wanted values or an error
//! out. Fields not in the table are skipped unparsed (`Tcp MaxConn` is
//! -1); a wanted field that is missing is left out, not an error (older
//! kernels lack some, e.g. `TCPRcvQDrop` before 5.0).

use std::collections::BTreeMap;

use crate::model::{NetstatFile, NETSTAT_FIELDS};

/// Larger than any of these files on any kernel (`netstat` is about 6 KB
/// on 6.18): more is not a MIB file, and is not read.
pub const MAX_FILE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{file}: line {line}: `{section}` names {names} counters but has {values} values")]
    Mismatch {
        file: &'static str,
        line: usize,
        section: String,
        names: usize,
        values: usize,
    },
    #[error("{file}: line {line}: `{section}` names without a line of values")]
    Unpaired {
        file: &'static str,
        line: usize,
        section: String,
    },
    #[error("{file}: line {line}: {key} is `{value}`, not a counter")]
    Value {
        file: &'static str,
        line: usize,
        key: &'static str,
        value: String,
    },
    #[error("{file}: line {line}: not `<name> <value>`")]
    Line { file: &'static str, line: usize },
    #[error("{file}: the last line is not terminated: the file was cut")]
    Unterminated { file: &'static str },
}

/// The wanted counters of `file`'s `text`, added to `counters`.
pub fn parse_into(
    file: NetstatFile,
    text: &str,
    counters: &mut BTreeMap<&'static str, u64>,
) -> Result<(), ParseError> {
    // procfs ends every line; a value on a cut last line could be a prefix
    // of the real one (`12` read as `1`).
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ParseError::Unterminated { file: file.path() });
    }
    match file {
        NetstatFile::Snmp | NetstatFile::Netstat => parse_sections(file, text, counters),
        NetstatFile::Snmp6 => parse_lines(text, counters),
    }
}

/// The wanted field of `file` named `section`, `name`.
fn wanted(
    file: NetstatFile,
    matches: impl Fn(&str, &str) -> bool,
) -> Option<&'static crate::model::NetstatField> {
    NETSTAT_FIELDS
        .iter()
        .find(|f| f.file == file && matches(f.section, f.name))
}

fn counter(
    file: NetstatFile,
    line: usize,
    key: &'static str,
    value: &str,
) -> Result<u64, ParseError> {
    value.parse().map_err(|_| ParseError::Value {
        file: file.path(),
        line,
        key,
        value: value.chars().take(32).collect(),
    })
}

/// `snmp` and `netstat`: `Section: Name Name...` followed by `Section: 1 2...`.
fn parse_sections(
    file: NetstatFile,
    text: &str,
    counters: &mut BTreeMap<&'static str, u64>,
) -> Result<(), ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    while let Some((at, names)) = lines.next() {
        let line = at + 1;
        let (section, names) = names.split_once(':').ok_or(ParseError::Line {
            file: file.path(),
            line,
        })?;
        let unpaired = || ParseError::Unpaired {
            file: file.path(),
            line,
            section: section.chars().take(32).collect(),
        };
        let (_, values) = lines.next().ok_or_else(unpaired)?;
        let values = match values.split_once(':') {
            Some((again, values)) if again == section => values,
            _ => return Err(unpaired()),
        };
        let (names, values): (Vec<&str>, Vec<&str>) = (
            names.split_whitespace().collect(),
            values.split_whitespace().collect(),
        );
        if names.len() != values.len() {
            return Err(ParseError::Mismatch {
                file: file.path(),
                line,
                section: section.chars().take(32).collect(),
                names: names.len(),
                values: values.len(),
            });
        }
        // The section's wanted fields, looked up once: each name is then
        // matched against a handful, not against the whole table.
        let fields: Vec<&crate::model::NetstatField> = NETSTAT_FIELDS
            .iter()
            .filter(|f| f.file == file && f.section == section)
            .collect();
        if fields.is_empty() {
            continue;
        }
        for (name, value) in names.iter().zip(values) {
            if let Some(field) = fields.iter().find(|f| f.name == *name) {
                counters.insert(field.key, counter(file, line + 1, field.key, value)?);
            }
        }
    }
    Ok(())
}

/// `snmp6`: `Udp6InDatagrams <value>`.
fn parse_lines(text: &str, counters: &mut BTreeMap<&'static str, u64>) -> Result<(), ParseError> {
    let file = NetstatFile::Snmp6;
    for (at, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(ParseError::Line {
                file: file.path(),
                line: at + 1,
            });
        };
        let found = wanted(file, |s, n| {
            name.strip_prefix(s).is_some_and(|rest| rest == n)
        });
        if let Some(field) = found {
            counters.insert(field.key, counter(file, at + 1, field.key, value)?);
        }
    }
    Ok(())
}
