//! The BTF format itself: kinds, the size of each type record, the header
//! and its bounds checks, and reading words and strings out of the blob.

use super::KernelBtf;

/// BTF kinds (`BTF_KIND_*` in include/uapi/linux/btf.h).
pub(super) mod kind {
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
pub(super) fn extra_bytes(kind: u32, vlen: u32) -> Option<usize> {
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
pub(super) struct TypeRecord {
    /// Byte offset of the header in the file.
    pub(super) at: usize,
    pub(super) name_off: u32,
    pub(super) kind: u32,
    pub(super) vlen: u32,
    pub(super) kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    pub(super) size_or_type: u32,
}

impl KernelBtf {
    pub(super) fn record(&self, type_id: u32) -> Option<TypeRecord> {
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

    pub(super) fn word(&self, at: usize) -> Option<u32> {
        let raw: [u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    }

    /// The NUL-terminated string at `offset` in the string section.
    pub(super) fn string(&self, offset: u32) -> Option<&str> {
        let start = self.strings.start.checked_add(offset as usize)?;
        let section = self.bytes.get(start..self.strings.end)?;
        let end = section.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&section[..end]).ok()
    }
}

/// Where the sections of a checked BTF blob are.
pub(super) struct Sections {
    pub(super) little_endian: bool,
    pub(super) types: std::ops::Range<usize>,
    pub(super) strings: std::ops::Range<usize>,
}

/// Bounds-checks the BTF header: every offset and length in it comes from
/// the file, so a truncated or corrupt header must be rejected before any
/// section is read, and every addition of them checked (`cargo xtask fuzz`
/// feeds it such headers).
pub(super) fn check_header(bytes: &[u8]) -> Result<Sections, String> {
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
