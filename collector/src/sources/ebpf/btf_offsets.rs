//! Struct member offsets of the running kernel, read from its BTF.
//!
//! This is where the probes' portability comes from: a member path such as
//! `sk_buff.dev` is resolved against `/sys/kernel/btf/vmlinux` at start-up,
//! walking through the anonymous unions and structs the kernel nests members
//! in, so no offset is compiled into the BPF object.
//!
//! The reader is deliberately small: it keeps the file's bytes and one
//! offset per type id, and decodes only the records a lookup touches. A
//! general BTF library materialises every type, many times the file's
//! size, for the handful of offsets the probes need; this one holds the
//! file plus 4 bytes per type.

mod format;

use std::path::Path;

use format::{check_header, extra_bytes, kind, TypeRecord};

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
        Ok(self
            .enumerators(enum_name)?
            .into_iter()
            .find(|(name, _)| name == enumerator)
            .map(|(_, value)| value))
    }

    /// Every enumerator of an enum with its value, in declaration order.
    pub fn enumerators(&self, enum_name: &str) -> Result<Vec<(String, u32)>, BtfError> {
        let id = self
            .find_named(enum_name, |k| matches!(k, kind::ENUM | kind::ENUM64))
            .ok_or_else(|| BtfError::EnumNotFound(enum_name.to_string()))?;
        let Some(record) = self.record(id) else {
            return Err(BtfError::EnumNotFound(enum_name.to_string()));
        };
        let stride = if record.kind == kind::ENUM64 { 12 } else { 8 };
        Ok((0..record.vlen as usize)
            .map(|i| record.at + 12 + i * stride)
            .filter_map(|at| {
                let name = self.string(self.word(at)?)?;
                // ENUM64 values above 32 bits never name a drop reason; the
                // probes compare the low word, as the kernel passes it.
                Some((name.to_string(), self.word(at + 4)?))
            })
            .collect())
    }

    /// Names of the enums whose name `wanted` accepts.
    pub fn enum_names(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        (1..=self.types.len() as u32)
            .filter_map(|id| {
                let t = self.record(id)?;
                if !matches!(t.kind, kind::ENUM | kind::ENUM64) || t.name_off == 0 {
                    return None;
                }
                let name = self.string(t.name_off)?;
                wanted(name).then(|| name.to_string())
            })
            .collect()
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
}

struct MemberHit {
    bit_offset: u32,
    type_id: u32,
    bitfield: bool,
}

#[cfg(test)]
mod tests;
