//! Struct member offsets of the running kernel, read from its BTF.
//!
//! This is where the probes' portability comes from: a member path such as
//! `sk_buff.dev` is resolved against `/sys/kernel/btf/vmlinux` at start-up,
//! walking through the anonymous unions and structs the kernel nests members
//! in, so no offset is compiled into the BPF object.

use std::path::Path;

use btf_rs::{Btf, Type};

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
    btf: Btf,
}

impl KernelBtf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let read_error = |reason: String| BtfError::Read {
            path: path.display().to_string(),
            reason,
        };
        // btf-rs reads with byteorder and trusts lengths in the header, so a
        // truncated or hostile file must not reach it unchecked.
        let bytes = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            BtfError::Read { reason, .. } => read_error(reason),
            other => other,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        check_header(bytes).map_err(|reason| BtfError::Read {
            path: "<bytes>".into(),
            reason,
        })?;
        let parsed = std::panic::catch_unwind(|| Btf::from_bytes(bytes));
        match parsed {
            Ok(Ok(btf)) => Ok(KernelBtf { btf }),
            Ok(Err(e)) => Err(BtfError::Read {
                path: "<bytes>".into(),
                reason: e.to_string(),
            }),
            Err(_) => Err(BtfError::Read {
                path: "<bytes>".into(),
                reason: "malformed BTF (parser rejected it)".into(),
            }),
        }
    }

    /// Byte offset of a dotted member path, e.g. `("net", "ns.inum")`.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let not_found = || BtfError::MemberNotFound {
            ty: struct_name.to_string(),
            path: path.to_string(),
        };
        let mut current = self.named_struct(struct_name)?;
        let mut bits = 0u32;
        for component in path.split('.') {
            let composite = match self.strip_modifiers(current) {
                Some(Type::Struct(s)) | Some(Type::Union(s)) => s,
                _ => return Err(not_found()),
            };
            let hit = self
                .find_member(&composite, component)
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
            current = hit.ty;
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
        let types = self
            .btf
            .resolve_types_by_name(enum_name)
            .unwrap_or_default();
        let found = types.into_iter().find_map(|t| match t {
            Type::Enum(e) => Some(e),
            _ => None,
        });
        let Some(e) = found else {
            return Err(BtfError::EnumNotFound(enum_name.to_string()));
        };
        Ok(e.members
            .iter()
            .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == enumerator))
            .map(|m| m.val()))
    }

    /// The arguments a BTF-typed (`tp_btf`) program on tracepoint `event`
    /// receives, as C-like type names (`struct sk_buff *`,
    /// `enum skb_drop_reason`, ...): the parameters of the kernel's
    /// `btf_trace_<event>` typedef without its leading `void *` (the
    /// tracepoint's private data, which programs never see).
    pub fn tracepoint_args(&self, event: &str) -> Result<Vec<String>, BtfError> {
        let not_found = || BtfError::TracepointNotFound(event.to_string());
        let types = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{event}"))
            .unwrap_or_default();
        let typedef = types
            .into_iter()
            .find(|t| matches!(t, Type::Typedef(_)))
            .ok_or_else(not_found)?;
        let Some(Type::Ptr(ptr)) = self.strip_modifiers(typedef) else {
            return Err(not_found());
        };
        let Ok(Type::FuncProto(proto)) = self.btf.resolve_chained_type(&ptr) else {
            return Err(not_found());
        };
        Ok(proto
            .parameters
            .iter()
            .skip(1)
            .map(|param| match self.btf.resolve_chained_type(param) {
                Ok(ty) => self.type_name(ty, 0),
                Err(_) => "?".to_string(),
            })
            .collect())
    }

    /// A C-like name of `ty`, qualifiers and typedefs kept as written, deep
    /// enough for argument types (`const struct sk_buff *`).
    fn type_name(&self, ty: Type, depth: u32) -> String {
        if depth > 8 {
            return "?".to_string();
        }
        let named = |kind: &str, t: &dyn btf_rs::BtfType| {
            let name = self.btf.resolve_name(t).unwrap_or_default();
            match (kind, name.is_empty()) {
                ("", _) => name,
                (kind, true) => format!("{kind} (anon)"),
                (kind, false) => format!("{kind} {name}"),
            }
        };
        let inner = |t: &dyn btf_rs::BtfType| match self.btf.resolve_chained_type(t) {
            Ok(inner) => self.type_name(inner, depth + 1),
            Err(_) => "void".to_string(),
        };
        match &ty {
            Type::Void => "void".to_string(),
            Type::Ptr(p) => format!("{} *", inner(p)),
            Type::Const(c) => format!("const {}", inner(c)),
            Type::Volatile(v) => format!("volatile {}", inner(v)),
            Type::Restrict(r) => inner(r),
            Type::TypeTag(t) => inner(t),
            Type::Struct(s) => named("struct", s),
            Type::Union(u) => named("union", u),
            Type::Enum(e) => named("enum", e),
            Type::Enum64(e) => named("enum", e),
            Type::Fwd(f) => named(if f.is_union() { "union" } else { "struct" }, f),
            Type::Typedef(t) => named("", t),
            Type::Int(i) => named("", i),
            Type::Float(f) => named("", f),
            other => other.name().to_string(),
        }
    }

    fn named_struct(&self, name: &str) -> Result<Type, BtfError> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| BtfError::StructNotFound(name.to_string()))
    }

    /// Follows typedefs and qualifiers down to the type they name.
    fn strip_modifiers(&self, mut ty: Type) -> Option<Type> {
        for _ in 0..16 {
            ty = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::Const(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::Volatile(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::Restrict(t) => self.btf.resolve_chained_type(t).ok()?,
                Type::TypeTag(t) => self.btf.resolve_chained_type(t).ok()?,
                _ => return Some(ty),
            };
        }
        None
    }

    /// Finds `name` among the members of `composite`, descending into
    /// anonymous members.
    fn find_member(&self, composite: &btf_rs::Struct, name: &str) -> Option<MemberHit> {
        self.find_member_within(composite, name, 0)
    }

    /// Anonymous members nest a few levels in real kernels; the bound stops
    /// a corrupt BTF whose anonymous struct contains itself.
    fn find_member_within(
        &self,
        composite: &btf_rs::Struct,
        name: &str,
        depth: u32,
    ) -> Option<MemberHit> {
        const MAX_ANONYMOUS_DEPTH: u32 = 8;
        for member in &composite.members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            if member_name == name {
                return Some(MemberHit {
                    bit_offset: member.bit_offset(),
                    ty: self.btf.resolve_chained_type(member).ok()?,
                    bitfield: member.bitfield_size().is_some_and(|size| size != 0),
                });
            }
            if member_name.is_empty() && depth < MAX_ANONYMOUS_DEPTH {
                let inner = self.strip_modifiers(self.btf.resolve_chained_type(member).ok()?);
                if let Some(Type::Struct(s)) | Some(Type::Union(s)) = inner {
                    if let Some(hit) = self.find_member_within(&s, name, depth + 1) {
                        let bit_offset = member.bit_offset().checked_add(hit.bit_offset)?;
                        return Some(MemberHit { bit_offset, ..hit });
                    }
                }
            }
        }
        None
    }
}

/// Bounds-checks the BTF header before btf-rs sees it: btf-rs adds header
/// offsets without overflow checks (found by `cargo xtask fuzz`), so a
/// corrupt header must be rejected here.
fn check_header(bytes: &[u8]) -> Result<(), String> {
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
    let end_of = |offset: u32, len: u32| {
        hdr_len
            .checked_add(offset)
            .and_then(|start| start.checked_add(len))
            .map(|end| end as usize)
    };
    let ends = [end_of(type_off, type_len), end_of(str_off, str_len)];
    if (hdr_len as usize) < HEADER_BYTES
        || ends
            .iter()
            .any(|end| end.is_none_or(|end| end > bytes.len()))
    {
        return Err(format!(
            "BTF header sections (hdr_len {hdr_len}, types {type_off}+{type_len}, strings {str_off}+{str_len}) exceed the {} bytes given",
            bytes.len()
        ));
    }
    Ok(())
}

struct MemberHit {
    bit_offset: u32,
    ty: Type,
    bitfield: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF; every machine this project builds on has it
    /// (the privileged tests need it too), so its absence is a failure.
    fn vmlinux() -> KernelBtf {
        KernelBtf::from_file(Path::new(VMLINUX_BTF))
            .expect("this machine exposes /sys/kernel/btf/vmlinux")
    }

    /// Hand-built BTF with offsets no kernel has (see make_tiny_btf.py).
    fn tiny() -> KernelBtf {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/btf/tiny.btf");
        KernelBtf::from_file(Path::new(path)).unwrap()
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
        let btf = vmlinux();
        let whole = btf.member_offset("net", "ns.inum").unwrap();
        let parts = btf.member_offset("net", "ns").unwrap()
            + btf.member_offset("ns_common", "inum").unwrap();
        assert_eq!(whole, parts);
        // possible_net_t is a typedef of an anonymous struct: followed through.
        let nd_net = btf.member_offset("net_device", "nd_net").unwrap();
        assert_eq!(
            btf.member_offset("net_device", "nd_net.net").unwrap(),
            nd_net
        );
    }

    #[test]
    fn members_inside_anonymous_unions_are_found() {
        // sk_buff.dev sits in an anonymous union inside an anonymous struct.
        let btf = vmlinux();
        let dev = btf.member_offset("sk_buff", "dev").unwrap();
        let len = btf.member_offset("sk_buff", "len").unwrap();
        assert!(
            dev < len,
            "dev ({dev}) precedes len ({len}) in every kernel's sk_buff"
        );
    }

    #[test]
    fn errors_name_what_is_missing() {
        let btf = vmlinux();
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
        let bytes = std::fs::read(VMLINUX_BTF).unwrap();
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
