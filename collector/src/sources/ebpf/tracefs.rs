//! Tracepoint record layouts from the running kernel's tracefs `format` files.
//!
//! Field offsets differ between kernels (5.15's `kfree_skb` has no `reason`,
//! 6.x moved `protocol` and added `rx_sk`), so the probes never assume one:
//! they receive the offsets parsed here. The same file carries the
//! `__print_symbolic` table that names every drop reason of this kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where tracefs is usually mounted, newest convention first.
pub const TRACEFS_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted (looked in {0}); mount it with `mount -t tracefs tracefs /sys/kernel/tracing`")]
    NotMounted(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: malformed field declaration `{text}`")]
    MalformedField {
        path: String,
        line: usize,
        text: String,
    },
    #[error("{path}: no `format:` section")]
    NoFormat { path: String },
    #[error("tracepoint {tracepoint} has no field `{field}`")]
    MissingField { tracepoint: String, field: String },
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub declaration: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl TracepointFormat {
    /// Parses the text of an `events/<category>/<name>/format` file.
    /// `origin` only names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TracefsError> {
        let mut name = String::new();
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        let mut saw_format = false;
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("name:") {
                name = rest.trim().to_string();
            } else if trimmed == "format:" {
                saw_format = true;
            } else if let Some(rest) = trimmed.strip_prefix("print fmt:") {
                print_fmt = rest.trim().to_string();
            } else if trimmed.starts_with("field:") {
                let field = parse_field(trimmed).ok_or_else(|| TracefsError::MalformedField {
                    path: origin.to_string(),
                    line: index + 1,
                    text: trimmed.chars().take(120).collect(),
                })?;
                fields.push(field);
            }
        }
        if !saw_format {
            return Err(TracefsError::NoFormat {
                path: origin.to_string(),
            });
        }
        Ok(TracepointFormat {
            name,
            fields,
            print_fmt,
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn require(&self, name: &str) -> Result<&Field, TracefsError> {
        self.field(name).ok_or_else(|| TracefsError::MissingField {
            tracepoint: self.name.clone(),
            field: name.to_string(),
        })
    }

    /// The value-to-name table of `__print_symbolic(REC-><field>, ...)` in
    /// the print format, e.g. `3 -> "NO_SOCKET"` for `kfree_skb`'s reason.
    pub fn symbolic_names(&self, field: &str) -> BTreeMap<u32, String> {
        let marker = format!("__print_symbolic(REC->{field},");
        let mut names = BTreeMap::new();
        let Some(start) = self.print_fmt.find(&marker) else {
            return names;
        };
        let mut rest = &self.print_fmt[start + marker.len()..];
        // Entries look like `{ 3, "NO_SOCKET" }`; the list ends at the `)`
        // closing __print_symbolic, which never appears inside an entry.
        while let Some(open) = rest.find('{') {
            if rest[..open].contains(')') {
                break;
            }
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let entry = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            let Some((value, label)) = entry.split_once(',') else {
                continue;
            };
            let label = label.trim().trim_matches('"');
            if let Some(value) = parse_number(value.trim()) {
                names.insert(value, label.to_string());
            }
        }
        names
    }
}

fn parse_number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `field:unsigned int len;<TAB>offset:16;<TAB>size:4;<TAB>signed:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut declaration = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':')?;
        match key.trim() {
            "field" => declaration = Some(value.trim().to_string()),
            "offset" => offset = value.trim().parse().ok(),
            "size" => size = value.trim().parse().ok(),
            "signed" => signed = Some(value.trim() == "1"),
            _ => {}
        }
    }
    let declaration = declaration?;
    let name = field_name(&declaration)?;
    Some(Field {
        name,
        declaration,
        offset: offset?,
        size: size?,
        signed: signed.unwrap_or(false),
    })
}

/// The identifier of a C declaration: `void * skbaddr` -> `skbaddr`,
/// `__data_loc char[] name` -> `name`, `char name[16]` -> `name`.
fn field_name(declaration: &str) -> Option<String> {
    let without_array = match declaration.find('[') {
        Some(open) if declaration.ends_with(']') => &declaration[..open],
        _ => declaration,
    };
    let name = without_array
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()?
        .trim();
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| name.to_string())
}

/// A mounted tracefs, found or given.
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Tracefs { root: root.into() }
    }

    /// The first candidate directory that has an `events` tree.
    pub fn locate() -> Result<Self, TracefsError> {
        TRACEFS_CANDIDATES
            .iter()
            .map(Path::new)
            .find(|root| root.join("events").is_dir())
            .map(Tracefs::at)
            .ok_or_else(|| TracefsError::NotMounted(TRACEFS_CANDIDATES.join(", ")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn format(&self, category: &str, name: &str) -> Result<TracepointFormat, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TracepointFormat::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE_SKB_6_18: &str =
        include_str!("../../../tests/fixtures/tracefs/6.18/kfree_skb.format");
    const KFREE_SKB_6_6: &str =
        include_str!("../../../tests/fixtures/tracefs/6.6/kfree_skb.format");
    const KFREE_SKB_6_1: &str =
        include_str!("../../../tests/fixtures/tracefs/6.1/kfree_skb.format");
    const KFREE_SKB_5_15: &str =
        include_str!("../../../tests/fixtures/tracefs/5.15/kfree_skb.format");
    const RX_6_18: &str =
        include_str!("../../../tests/fixtures/tracefs/6.18/netif_receive_skb.format");
    const TX_6_18: &str =
        include_str!("../../../tests/fixtures/tracefs/6.18/net_dev_start_xmit.format");
    const TX_5_15: &str =
        include_str!("../../../tests/fixtures/tracefs/5.15/net_dev_start_xmit.format");

    // Captured verbatim from the kernels `cargo xtask kernels` boots.
    const KFREE_SKB_5_10: &str =
        include_str!("../../../tests/fixtures/tracefs/5.10/kfree_skb.format");
    const KFREE_SKB_6_12: &str =
        include_str!("../../../tests/fixtures/tracefs/6.12/kfree_skb.format");
    const CAPTURED: [(&str, &str, &str, &str); 4] = [
        (
            "5.10",
            include_str!("../../../tests/fixtures/tracefs/5.10/netif_receive_skb.format"),
            include_str!("../../../tests/fixtures/tracefs/5.10/net_dev_start_xmit.format"),
            KFREE_SKB_5_10,
        ),
        (
            "6.1",
            include_str!("../../../tests/fixtures/tracefs/6.1/netif_receive_skb.format"),
            include_str!("../../../tests/fixtures/tracefs/6.1/net_dev_start_xmit.format"),
            KFREE_SKB_6_1,
        ),
        (
            "6.12",
            include_str!("../../../tests/fixtures/tracefs/6.12/netif_receive_skb.format"),
            include_str!("../../../tests/fixtures/tracefs/6.12/net_dev_start_xmit.format"),
            KFREE_SKB_6_12,
        ),
        ("6.18", RX_6_18, TX_6_18, KFREE_SKB_6_18),
    ];

    fn offset(text: &str, field: &str) -> Option<u32> {
        TracepointFormat::parse(text, "fixture")
            .unwrap()
            .field(field)
            .map(|f| f.offset)
    }

    #[test]
    fn kfree_skb_offsets_move_between_kernels() {
        assert_eq!(offset(KFREE_SKB_6_18, "skbaddr"), Some(8));
        assert_eq!(offset(KFREE_SKB_6_18, "reason"), Some(36));
        assert_eq!(offset(KFREE_SKB_6_6, "reason"), Some(28));
        assert_eq!(offset(KFREE_SKB_6_1, "reason"), Some(28));
        assert_eq!(offset(KFREE_SKB_5_15, "reason"), None);
        assert_eq!(offset(KFREE_SKB_5_15, "skbaddr"), Some(8));
    }

    #[test]
    fn rx_and_tx_fields() {
        assert_eq!(offset(RX_6_18, "skbaddr"), Some(8));
        assert_eq!(offset(RX_6_18, "len"), Some(16));
        assert_eq!(offset(RX_6_18, "name"), Some(20));
        assert_eq!(offset(TX_6_18, "skbaddr"), Some(16));
        assert_eq!(offset(TX_6_18, "len"), Some(36));
        assert_eq!(offset(TX_5_15, "len"), Some(36));
    }

    #[test]
    fn captured_formats_carry_every_field_the_probes_read() {
        for (kernel, rx, tx, kfree_skb) in CAPTURED {
            let fields = [
                (rx, "skbaddr", 8),
                (rx, "len", 16),
                (rx, "name", 20),
                (tx, "skbaddr", 16),
                (tx, "len", 36),
                (kfree_skb, "skbaddr", 8),
            ];
            for (text, field, expected) in fields {
                assert_eq!(offset(text, field), Some(expected), "{kernel} {field}");
            }
        }
        // `reason` only from 5.17 on; behind `rx_sk` from 6.12 on.
        let reasons: Vec<_> = CAPTURED
            .iter()
            .map(|(kernel, _, _, kfree_skb)| (*kernel, offset(kfree_skb, "reason")))
            .collect();
        assert_eq!(
            reasons,
            [
                ("5.10", None),
                ("6.1", Some(28)),
                ("6.12", Some(36)),
                ("6.18", Some(36))
            ]
        );
    }

    #[test]
    fn captured_drop_reason_numbering_differs_between_kernels() {
        let number = |text: &str, name: &str| {
            TracepointFormat::parse(text, "fixture")
                .unwrap()
                .symbolic_names("reason")
                .into_iter()
                .find(|(_, n)| n == name)
                .map(|(number, _)| number)
        };
        assert_eq!(number(KFREE_SKB_6_1, "NO_SOCKET"), Some(2));
        assert_eq!(number(KFREE_SKB_6_1, "NETFILTER_DROP"), Some(7));
        assert_eq!(number(KFREE_SKB_6_12, "NO_SOCKET"), Some(3));
        assert_eq!(number(KFREE_SKB_6_12, "NETFILTER_DROP"), Some(11));
        assert_eq!(number(KFREE_SKB_6_18, "NO_SOCKET"), Some(3));
        assert_eq!(number(KFREE_SKB_6_18, "NETFILTER_DROP"), Some(12));
        assert_eq!(number(KFREE_SKB_5_10, "NO_SOCKET"), None);
    }

    #[test]
    fn drop_reason_names_come_from_print_symbolic() {
        let format = TracepointFormat::parse(KFREE_SKB_6_18, "fixture").unwrap();
        let names = format.symbolic_names("reason");
        assert_eq!(names.get(&3).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(names.get(&12).map(String::as_str), Some("NETFILTER_DROP"));
        assert_eq!(names.get(&127).map(String::as_str), Some("RECURSION_LIMIT"));
        let older = TracepointFormat::parse(KFREE_SKB_6_1, "fixture").unwrap();
        let older_names = older.symbolic_names("reason");
        assert_eq!(older_names.get(&2).map(String::as_str), Some("NO_SOCKET"));
        assert!(TracepointFormat::parse(KFREE_SKB_5_15, "fixture")
            .unwrap()
            .symbolic_names("reason")
            .is_empty());
    }

    #[test]
    fn field_names_of_unusual_declarations() {
        assert_eq!(
            field_name("__data_loc char[] name").as_deref(),
            Some("name")
        );
        assert_eq!(field_name("char name[16]").as_deref(), Some("name"));
        assert_eq!(
            field_name("const void * skbaddr").as_deref(),
            Some("skbaddr")
        );
        assert_eq!(field_name("void *skbaddr").as_deref(), Some("skbaddr"));
        assert_eq!(
            field_name("enum skb_drop_reason reason").as_deref(),
            Some("reason")
        );
        assert_eq!(field_name("").as_deref(), None);
    }

    #[test]
    fn malformed_input_is_an_error_naming_the_file() {
        let error = TracepointFormat::parse("format:\n\tfield:int x;\toffset:zz;\n", "f.txt")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("f.txt") && error.contains("line 2"),
            "{error}"
        );
        assert!(TracepointFormat::parse("name: x\n", "g").is_err());
    }
}
