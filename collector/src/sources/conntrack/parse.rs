//! Parsing the conntrack files into values. Pure: text in, the wanted
//! values or an error out.

use std::collections::BTreeMap;

use crate::model::CONNTRACK_STATS;

/// Larger than `/proc/net/stat/nf_conntrack` on any machine: a header and
/// about 160 bytes per possible CPU, 1.3 MB at the 8,192 CPUs x86-64
/// distribution kernels are built for. More is not the kernel's file.
pub const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty, no header of column names")]
    Empty,
    #[error("a header but no row of counters")]
    NoRows,
    #[error("line {line}: {values} values under a header of {names} columns")]
    Mismatch {
        line: usize,
        names: usize,
        values: usize,
    },
    #[error("line {line}: column {column} is `{value}`, not a hexadecimal counter")]
    Hex {
        line: usize,
        column: &'static str,
        value: String,
    },
    #[error("`{value}` is not a number")]
    Value { value: String },
    #[error("the last line is not terminated: the file was cut")]
    Unterminated,
    #[error("larger than {MAX_FILE_BYTES} bytes: not the kernel's file")]
    TooLarge,
}

fn whole(text: &str) -> Result<(), ParseError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ParseError::TooLarge);
    }
    // procfs ends every line; a cut line could hold a prefix of a value.
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ParseError::Unterminated);
    }
    Ok(())
}

/// `/proc/net/stat/nf_conntrack`: each column of [`CONNTRACK_STATS`]
/// found in the header, summed over the rows (one per CPU), found by its
/// name, never its position (columns were added and removed over the
/// kernel's history). A wanted column the header lacks is left out.
pub fn parse_stat(text: &str) -> Result<BTreeMap<&'static str, u64>, ParseError> {
    whole(text)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or(ParseError::Empty)?;
    let names: Vec<&str> = header.split_whitespace().collect();
    let wanted: Vec<(usize, &'static str)> = CONNTRACK_STATS
        .iter()
        .filter_map(|stat| {
            let at = names.iter().position(|n| *n == stat.column)?;
            Some((at, stat.column))
        })
        .collect();
    let mut sums: BTreeMap<&'static str, u64> = wanted.iter().map(|(_, c)| (*c, 0)).collect();
    let mut rows = 0;
    for (at, row) in lines {
        let values: Vec<&str> = row.split_whitespace().collect();
        if values.len() != names.len() {
            return Err(ParseError::Mismatch {
                line: at + 1,
                names: names.len(),
                values: values.len(),
            });
        }
        for (column, name) in &wanted {
            let value = values[*column];
            let count = u64::from_str_radix(value, 16).map_err(|_| ParseError::Hex {
                line: at + 1,
                column: name,
                value: value.chars().take(32).collect(),
            })?;
            *sums.entry(name).or_default() += count;
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(ParseError::NoRows);
    }
    Ok(sums)
}

/// A sysctl file holding one decimal number.
pub fn parse_value(text: &str) -> Result<u64, ParseError> {
    whole(text)?;
    let value = text.trim();
    value.parse().map_err(|_| ParseError::Value {
        value: value.chars().take(32).collect(),
    })
}
