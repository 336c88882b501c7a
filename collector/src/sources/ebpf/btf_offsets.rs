//! Struct member offsets of the running kernel, read from its BTF.
//!
//! This is where the probes' portability comes from: a member path such as
//! `sk_buff.dev` is resolved against `/sys/kernel/btf/vmlinux` at start-up,
//! walking through the anonymous unions and structs the kernel nests members
//! in, so no offset is compiled into the BPF object.
//!
//! The reader is deliberately small: it keeps the file's bytes and one
//! offset per type id, and decodes only the records a lookup touches. A
//! general BTF library that materialises every type (btf-rs did) peaks near
//! 57 MiB on a 6.18 vmlinux for the handful of offsets the probes need; this
//! one holds the 5-6 MiB file plus 4 bytes per type.

use std::path::Path;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading BTF from {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("BTF has no struct named `{0}`")]
    StructNotFound(String),
    #[error("BTF struct `{ty}` has no member path `{path}`")]
    MemberNotFound { ty: String, path: String },
    #[error("BTF member path `{ty}.{path}` is a bitfield, not a byte-addressable member")]
    Bitfield { ty: String, path: String },
    #[error("BTF member path `{ty}.{path}` has an offset beyond any struct (corrupt BTF)")]
    Corrupt { ty: String, path: String },
    #[error("BTF has no enum named `{0}`")]
    EnumNotFound(String),
    #[error("BTF has no `btf_trace_{0}` (no BTF-typed tracepoint of that name)")]
    TracepointNotFound(String),
}

/// BTF kinds (`BTF_KIND_*` in include/uapi/linux/btf.h).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// Bytes of the kind-specific data after a type's 12-byte common header.
fn extra_bytes(kind: u32, vlen: u32) -> Option<usize> {
    let vlen = vlen as usize;
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        _ => return None,
    })
}

/// One decoded type header.
#[derive(Debug, Clone, Copy)]
struct TypeRecord {
    /// Byte offset of the header in the file.
    at: usize,
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
}

pub struct KernelBtf {
    bytes: Vec<u8>,
    little_endian: bool,
    strings: std::ops::Range<usize>,
    /// File offset of each type's header, indexed by type id - 1.
    types: Vec<u32>,
}

impl KernelBtf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let read_error = |reason: String| BtfError::Read {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
        Self::from_vec(bytes).map_err(|e| match e {
            BtfError::Read { reason, .. } => read_error(reason),
            other => other,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        Self::from_vec(bytes.to_vec())
    }

    fn from_vec(bytes: Vec<u8>) -> Result<Self, BtfError> {
        let read_error = |reason: String| BtfError::Read {
            path: "<bytes>".into(),
            reason,
        };
        let sections = check_header(&bytes).map_err(read_error)?;
        let mut btf = KernelBtf {
            little_endian: sections.little_endian,
            strings: sections.strings,
            types: Vec::new(),
            bytes,
        };
        // One pass over the type section records where each type starts;
        // every length comes from the file, so each step is bounds-checked.
        let mut at = sections.types.start;
        while at < sections.types.end {
            let info = btf
                .word(at + 4)
                .filter(|_| at + 12 <= sections.types.end)
                .ok_or_else(|| read_error(format!("type record at byte {at} is cut short")))?;
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let extra = extra_bytes(kind, vlen)
                .ok_or_else(|| read_error(format!("unknown BTF kind {kind} at byte {at}")))?;
            let end = at + 12 + extra;
            if end > sections.types.end {
                return Err(read_error(format!(
                    "type record at byte {at} runs past the type section"
                )));
            }
            btf.types.push(at as u32);
            at = end;
        }
        btf.types.shrink_to_fit();
        Ok(btf)
    }

    /// Byte offset of a dotted member path, e.g. `("net", "ns.inum")`.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let not_found = || BtfError::MemberNotFound {
            ty: struct_name.to_string(),
            path: path.to_string(),
        };
        let mut current = self
            .find_named(struct_name, |k| k == kind::STRUCT)
            .ok_or_else(|| BtfError::StructNotFound(struct_name.to_string()))?;
        let mut bits = 0u32;
        for component in path.split('.') {
            let composite = match self.strip_modifiers(current) {
                Some(t) if matches!(t.kind, kind::STRUCT | kind::UNION) => t,
                _ => return Err(not_found()),
            };
            let hit = self
                .find_member(composite, component, 0)
                .ok_or_else(not_found)?;
            if hit.bitfield {
                return Err(BtfError::Bitfield {
                    ty: struct_name.to_string(),
                    path: path.to_string(),
                });
            }
            bits = bits
                .checked_add(hit.bit_offset)
                .ok_or_else(|| BtfError::Corrupt {
                    ty: struct_name.to_string(),
                    path: path.to_string(),
                })?;
            current = hit.type_id;
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield {
                ty: struct_name.to_string(),
                path: path.to_string(),
            });
        }
        Ok(bits / 8)
    }

    /// Value of an enumerator, e.g. `("skb_drop_reason", "SKB_CONSUMED")`.
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Result<Option<u32>, BtfError> {
        let id = self
            .find_named(enum_name, |k| matches!(k, kind::ENUM | kind::ENUM64))
            .ok_or_else(|| BtfError::EnumNotFound(enum_name.to_string()))?;
        let Some(record) = self.record(id) else {
            return Err(BtfError::EnumNotFound(enum_name.to_string()));
        };
        let stride = if record.kind == kind::ENUM64 { 12 } else { 8 };
        Ok((0..record.vlen as usize)
            .map(|i| record.at + 12 + i * stride)
            .find(|&at| {
                self.word(at)
                    .is_some_and(|name| self.string(name) == Some(enumerator))
            })
            // ENUM64 values above 32 bits never name a drop reason; the
            // probes compare the low word, as the kernel passes it.
            .and_then(|at| self.word(at + 4)))
    }

    /// The arguments a BTF-typed (`tp_btf`) program on tracepoint `event`
    /// receives, as C-like type names (`struct sk_buff *`,
    /// `enum skb_drop_reason`, ...): the parameters of the kernel's
    /// `btf_trace_<event>` typedef without its leading `void *` (the
    /// tracepoint's private data, which programs never see).
    pub fn tracepoint_args(&self, event: &str) -> Result<Vec<String>, BtfError> {
        let not_found = || BtfError::TracepointNotFound(event.to_string());
        let typedef = self
            .find_named(&format!("btf_trace_{event}"), |k| k == kind::TYPEDEF)
            .ok_or_else(not_found)?;
        let ptr = self
            .strip_modifiers(typedef)
            .filter(|t| t.kind == kind::PTR)
            .ok_or_else(not_found)?;
        let proto = self
            .record(ptr.size_or_type)
            .filter(|t| t.kind == kind::FUNC_PROTO)
            .ok_or_else(not_found)?;
        Ok((0..proto.vlen as usize)
            .skip(1)
            .map(|i| match self.word(proto.at + 12 + i * 8 + 4) {
                Some(type_id) => self.type_name(type_id, 0),
                None => "?".to_string(),
            })
            .collect())
    }

    /// A C-like name of a type, qualifiers and typedefs kept as written,
    /// deep enough for argument types (`const struct sk_buff *`).
    fn type_name(&self, type_id: u32, depth: u32) -> String {
        if type_id == 0 {
            return "void".to_string();
        }
        let Some(t) = self.record(type_id).filter(|_| depth <= 8) else {
            return "?".to_string();
        };
        let name = self.string(t.name_off).unwrap_or("?");
        let named = |keyword: &str| match name {
            "" => format!("{keyword} (anon)"),
            name => format!("{keyword} {name}"),
        };
        let inner = || self.type_name(t.size_or_type, depth + 1);
        match t.kind {
            kind::PTR => format!("{} *", inner()),
            kind::CONST => format!("const {}", inner()),
            kind::VOLATILE => format!("volatile {}", inner()),
            kind::RESTRICT | kind::TYPE_TAG => inner(),
            kind::STRUCT => named("struct"),
            kind::UNION => named("union"),
            kind::ENUM | kind::ENUM64 => named("enum"),
            kind::FWD if t.kind_flag => named("union"),
            kind::FWD => named("struct"),
            kind::TYPEDEF | kind::INT | kind::FLOAT => name.to_string(),
            kind::FUNC_PROTO => "function".to_string(),
            _ => "?".to_string(),
        }
    }

    /// The first type named `name` whose kind `wanted` accepts.
    fn find_named(&self, name: &str, wanted: impl Fn(u32) -> bool) -> Option<u32> {
        (1..=self.types.len() as u32).find(|&id| {
            self.record(id).is_some_and(|t| {
                wanted(t.kind) && t.name_off != 0 && self.string(t.name_off) == Some(name)
            })
        })
    }

    /// Follows typedefs and qualifiers down to the type they name.
    fn strip_modifiers(&self, mut type_id: u32) -> Option<TypeRecord> {
        for _ in 0..16 {
            let t = self.record(type_id)?;
            match t.kind {
                kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG => {
                    type_id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Finds `name` among the members of `composite`, descending into
    /// anonymous members. Anonymous members nest a few levels in real
    /// kernels; the bound stops a corrupt BTF whose anonymous struct
    /// contains itself.
    fn find_member(&self, composite: TypeRecord, name: &str, depth: u32) -> Option<MemberHit> {
        const MAX_ANONYMOUS_DEPTH: u32 = 8;
        for i in 0..composite.vlen as usize {
            let at = composite.at + 12 + i * 12;
            let (name_off, type_id, offset) =
                (self.word(at)?, self.word(at + 4)?, self.word(at + 8)?);
            // With kind_flag the offset word packs a bitfield size above
            // a 24-bit bit offset.
            let (bit_offset, bitfield) = if composite.kind_flag {
                (offset & 0xff_ffff, offset >> 24 != 0)
            } else {
                (offset, false)
            };
            let member_name = self.string(name_off)?;
            if member_name == name {
                return Some(MemberHit {
                    bit_offset,
                    type_id,
                    bitfield,
                });
            }
            if member_name.is_empty() && depth < MAX_ANONYMOUS_DEPTH {
                let inner = self.strip_modifiers(type_id);
                if let Some(inner) = inner.filter(|t| matches!(t.kind, kind::STRUCT | kind::UNION))
                {
                    if let Some(hit) = self.find_member(inner, name, depth + 1) {
                        let bit_offset = bit_offset.checked_add(hit.bit_offset)?;
                        return Some(MemberHit { bit_offset, ..hit });
                    }
                }
            }
        }
        None
    }

    fn record(&self, type_id: u32) -> Option<TypeRecord> {
        let at = *self.types.get((type_id as usize).checked_sub(1)?)? as usize;
        let info = self.word(at + 4)?;
        Some(TypeRecord {
            at,
            name_off: self.word(at)?,
            kind: (info >> 24) & 0x1f,
            vlen: info & 0xffff,
            kind_flag: info >> 31 != 0,
            size_or_type: self.word(at + 8)?,
        })
    }

    fn word(&self, at: usize) -> Option<u32> {
        let raw: [u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    }

    /// The NUL-terminated string at `offset` in the string section.
    fn string(&self, offset: u32) -> Option<&str> {
        let start = self.strings.start.checked_add(offset as usize)?;
        let section = self.bytes.get(start..self.strings.end)?;
        let end = section.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&section[..end]).ok()
    }
}

/// Where the sections of a checked BTF blob are.
struct Sections {
    little_endian: bool,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
}

/// Bounds-checks the BTF header: every offset and length in it comes from
/// the file, so a truncated or corrupt header must be rejected before any
/// section is read (an unchecked header addition in the previous parser
/// was found by `cargo xtask fuzz`).
fn check_header(bytes: &[u8]) -> Result<Sections, String> {
    const HEADER_BYTES: usize = 24;
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or("shorter than a BTF header")?;
    let little_endian = match header[..2] {
        [0x9f, 0xeb] => true,
        [0xeb, 0x9f] => false,
        _ => return Err("no BTF magic".into()),
    };
    let word = |at: usize| {
        let raw: [u8; 4] = header[at..at + 4].try_into().expect("4 bytes");
        if little_endian {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    };
    if header[2] != 1 {
        return Err(format!("unsupported BTF version {}", header[2]));
    }
    let (hdr_len, type_off, type_len, str_off, str_len) =
        (word(4), word(8), word(12), word(16), word(20));
    let section = |offset: u32, len: u32| {
        let start = hdr_len.checked_add(offset)? as usize;
        let end = start.checked_add(len as usize)?;
        (end <= bytes.len()).then_some(start..end)
    };
    match (
        (hdr_len as usize) >= HEADER_BYTES,
        section(type_off, type_len),
        section(str_off, str_len),
    ) {
        (true, Some(types), Some(strings)) => Ok(Sections {
            little_endian,
            types,
            strings,
        }),
        _ => Err(format!(
            "BTF header sections (hdr_len {hdr_len}, types {type_off}+{type_len}, strings {str_off}+{str_len}) exceed the {} bytes given",
            bytes.len()
        )),
    }
}

struct MemberHit {
    bit_offset: u32,
    type_id: u32,
    bitfield: bool,
}

#[cfg(test)]
mod tests {
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
        let parts = btf.member_offset("net", "ns").unwrap()
            + btf.member_offset("ns_common", "inum").unwrap();
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
}
