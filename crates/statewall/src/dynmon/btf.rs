//! A BTF reader: enough of the format (`Documentation/bpf/btf.rst`) to find the key and
//! value types of an object's maps and to decode map entries into JSON by walking those
//! types. aya-obj parses BTF too, but keeps its type walkers to itself.
//!
//! Decoding rules: integers as JSON numbers (128-bit ones as decimal strings), `bool` as
//! `true`/`false`, `char` arrays as strings (up to the first NUL), enums as the name of
//! the value (the number when no name has it), structs and unions as objects keyed by
//! member name (anonymous members are merged into their parent, bitfields are
//! extracted), arrays as lists, pointers as numbers, floats as numbers. A type the
//! reader cannot decode gives the bytes as a hex string, never an error.

use super::error::BadObject;
use serde_json::{json, Map, Value};

/// BTF kinds.
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// A member of a struct, union, datasec (variables) or enum.
#[derive(Clone, Debug)]
pub struct Member {
    /// Name (empty for anonymous members).
    pub name: String,
    /// Type id (enums: unused).
    pub ty: u32,
    /// Struct/union: bit offset; datasec: byte offset.
    pub bit_offset: u32,
    /// Bitfield width in bits (0: not a bitfield).
    pub bits: u32,
    /// Enum value; datasec: variable size.
    pub value: i128,
}

/// One BTF type.
#[derive(Clone, Debug)]
pub struct Type {
    /// Kind (one of the `BTF_KIND_*` numbers).
    pub kind: u32,
    /// Name (may be empty).
    pub name: String,
    /// Size (int, struct, union, enum, datasec, float) or referenced type id.
    pub size_or_type: u32,
    /// Kind flag bit.
    pub kind_flag: bool,
    /// Int: encoding (1 signed, 2 char, 4 bool) and bit size.
    pub int_enc: u32,
    /// Int: bit size.
    pub int_bits: u32,
    /// Array: element type and count.
    pub array: (u32, u32),
    /// Struct, union, enum and datasec members.
    pub members: Vec<Member>,
}

/// Parsed BTF: types by id (id 0 is `void`).
#[derive(Debug, Default)]
pub struct Btf {
    types: Vec<Type>,
}

/// The key and value types a BTF-defined map declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapTypes {
    /// Key type id (0: not declared).
    pub key: u32,
    /// Value type id (0: not declared).
    pub value: u32,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BadObject> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| BadObject(format!("BTF truncated at byte {off}")))
}

fn string_at(strs: &[u8], off: u32) -> Result<String, BadObject> {
    let rest = strs
        .get(off as usize..)
        .ok_or_else(|| format!("BTF string offset {off} is past the string section"))?;
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

impl Btf {
    /// Parses the contents of a `.BTF` section (little-endian).
    pub fn parse(b: &[u8]) -> Result<Btf, BadObject> {
        if b.len() < 24 || b[0..2] != [0x9f, 0xeb] {
            return Err("not little-endian BTF (bad magic)".into());
        }
        let hdr_len = u32_at(b, 4)? as usize;
        if hdr_len < 24 {
            return Err("BTF header length is invalid".into());
        }
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let types = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("BTF type section out of bounds")?;
        let strs = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("BTF string section out of bounds")?;
        let mut out = vec![Type {
            kind: 0,
            name: "void".into(),
            size_or_type: 0,
            kind_flag: false,
            int_enc: 0,
            int_bits: 0,
            array: (0, 0),
            members: vec![],
        }];
        let mut p = 0usize;
        while p < types.len() {
            let name = string_at(strs, u32_at(types, p)?)?;
            let info = u32_at(types, p + 4)?;
            let size_or_type = u32_at(types, p + 8)?;
            p += 12;
            let (vlen, kind, kind_flag) = (info & 0xffff, (info >> 24) & 0x1f, info >> 31 == 1);
            let mut t = Type {
                kind,
                name,
                size_or_type,
                kind_flag,
                int_enc: 0,
                int_bits: 0,
                array: (0, 0),
                members: vec![],
            };
            match kind {
                INT => {
                    let v = u32_at(types, p)?;
                    t.int_enc = (v >> 24) & 0xf;
                    t.int_bits = v & 0xff;
                    p += 4;
                }
                ARRAY => {
                    t.array = (u32_at(types, p)?, u32_at(types, p + 8)?);
                    p += 12;
                }
                STRUCT | UNION => {
                    for _ in 0..vlen {
                        let off = u32_at(types, p + 8)?;
                        let (bit_offset, bits) = if kind_flag {
                            (off & 0xff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        t.members.push(Member {
                            name: string_at(strs, u32_at(types, p)?)?,
                            ty: u32_at(types, p + 4)?,
                            bit_offset,
                            bits,
                            value: 0,
                        });
                        p += 12;
                    }
                }
                ENUM | ENUM64 => {
                    // ENUM: name, 32-bit value; ENUM64: name, low and high 32 bits.
                    let rec = if kind == ENUM { 8 } else { 12 };
                    for _ in 0..vlen {
                        let lo = u32_at(types, p + 4)? as u64;
                        let hi = if kind == ENUM {
                            0
                        } else {
                            u32_at(types, p + 8)? as u64
                        };
                        let value = match (kind == ENUM, kind_flag) {
                            (true, true) => lo as u32 as i32 as i128,
                            (false, true) => ((hi << 32) | lo) as i64 as i128,
                            _ => ((hi << 32) | lo) as i128,
                        };
                        t.members.push(Member {
                            name: string_at(strs, u32_at(types, p)?)?,
                            ty: 0,
                            bit_offset: 0,
                            bits: 0,
                            value,
                        });
                        p += rec;
                    }
                }
                FUNC_PROTO => {
                    for _ in 0..vlen {
                        t.members.push(Member {
                            name: string_at(strs, u32_at(types, p)?)?,
                            ty: u32_at(types, p + 4)?,
                            bit_offset: 0,
                            bits: 0,
                            value: 0,
                        });
                        p += 8;
                    }
                }
                VAR | DECL_TAG => p += 4,
                DATASEC => {
                    for _ in 0..vlen {
                        let ty = u32_at(types, p)?;
                        t.members.push(Member {
                            name: String::new(),
                            ty,
                            bit_offset: u32_at(types, p + 4)?,
                            bits: 0,
                            value: u32_at(types, p + 8)? as i128,
                        });
                        p += 12;
                    }
                }
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => {}
                k => return Err(format!("BTF type {} has unknown kind {k}", out.len()).into()),
            }
            out.push(t);
        }
        // Datasec members are variables: give them the variable's name.
        for i in 0..out.len() {
            if out[i].kind == DATASEC {
                for m in 0..out[i].members.len() {
                    let var = out[i].members[m].ty as usize;
                    if let Some(v) = out.get(var).filter(|v| v.kind == VAR) {
                        out[i].members[m].name = v.name.clone();
                    }
                }
            }
        }
        Ok(Btf { types: out })
    }

    /// Number of type ids (void included).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether there is no type but void.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// Gives the global-data sections (`.bss`, `.data`...) their size and their variables
    /// their offsets, which clang leaves at 0 for the loader to fill in (as libbpf and aya
    /// do): `size_of` gives a section's size, `offset_of` a variable's offset in it.
    pub fn fix_datasecs(
        &mut self,
        size_of: impl Fn(&str) -> Option<u64>,
        offset_of: impl Fn(&str, &str) -> Option<u64>,
    ) {
        for t in self.types.iter_mut().filter(|t| t.kind == DATASEC) {
            if let Some(sz) = size_of(&t.name) {
                if t.size_or_type == 0 {
                    t.size_or_type = sz.min(u32::MAX as u64) as u32;
                }
            }
            for m in t.members.iter_mut() {
                if m.bit_offset == 0 {
                    if let Some(o) = offset_of(&t.name, &m.name) {
                        m.bit_offset = o.min(u32::MAX as u64) as u32;
                    }
                }
            }
        }
    }

    /// The type with id `id`.
    pub fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Skips typedefs, qualifiers, type tags and variables.
    pub fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..64 {
            match self.get(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | VAR
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// The size of type `id` in bytes (None for void, functions, forward declarations, and
    /// arrays too large or nested too deep to be real).
    pub fn size(&self, id: u32) -> Option<usize> {
        self.size_depth(id, 0)
    }

    fn size_depth(&self, id: u32, depth: u32) -> Option<usize> {
        let t = self.get(self.resolve(id))?;
        match t.kind {
            INT | STRUCT | UNION | ENUM | ENUM64 | DATASEC | FLOAT => Some(t.size_or_type as usize),
            PTR => Some(8),
            ARRAY if depth < 32 => self
                .size_depth(t.array.0, depth + 1)?
                .checked_mul(t.array.1 as usize)
                .filter(|s| *s <= u32::MAX as usize),
            _ => None,
        }
    }

    /// A type's name as C would write it (`struct key`, `__u32`, `u64[4]`).
    pub fn type_name(&self, id: u32) -> String {
        self.type_name_depth(id, 0)
    }

    fn type_name_depth(&self, id: u32, depth: u32) -> String {
        let Some(t) = self.get(id) else {
            return format!("type {id}");
        };
        if depth > 16 {
            return "...".into();
        }
        let inner = |i| self.type_name_depth(i, depth + 1);
        match t.kind {
            0 => "void".into(),
            STRUCT => format!("struct {}", t.name),
            UNION => format!("union {}", t.name),
            ENUM | ENUM64 => format!("enum {}", t.name),
            PTR => format!("{} *", inner(t.size_or_type)),
            ARRAY => format!("{}[{}]", inner(t.array.0), t.array.1),
            CONST | VOLATILE | RESTRICT | TYPE_TAG | VAR => inner(t.size_or_type),
            _ => t.name.clone(),
        }
    }

    /// Finds a named type (`struct event`, `event`, or a typedef name).
    pub fn find(&self, name: &str) -> Option<u32> {
        let bare = name
            .strip_prefix("struct ")
            .or_else(|| name.strip_prefix("union "))
            .or_else(|| name.strip_prefix("enum "))
            .unwrap_or(name)
            .trim();
        self.types
            .iter()
            .position(|t| {
                t.name == bare && matches!(t.kind, STRUCT | UNION | ENUM | ENUM64 | TYPEDEF | INT)
            })
            .map(|i| i as u32)
    }

    /// The datasec named `name` (`.maps`, `.bss`, `.data`...).
    pub fn datasec(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == DATASEC && t.name == name)
            .map(|i| i as u32)
    }

    /// Key and value types of the BTF-defined map `name` (a variable in `.maps` whose
    /// struct has `key` and `value` pointer members, as libbpf's `__type(key, T)` and
    /// aya's `btf_maps` write them).
    pub fn map_types(&self, name: &str) -> Option<MapTypes> {
        let sec = self.get(self.datasec(".maps")?)?;
        let var = sec.members.iter().find(|m| m.name == name)?;
        let def = self.get(self.resolve(var.ty))?;
        if def.kind != STRUCT {
            return None;
        }
        let mut out = MapTypes::default();
        for m in &def.members {
            let t = self.get(self.resolve(m.ty))?;
            if t.kind != PTR {
                continue;
            }
            match m.name.as_str() {
                "key" => out.key = t.size_or_type,
                "value" => out.value = t.size_or_type,
                _ => {}
            }
        }
        Some(out)
    }

    /// Decodes `bytes` as type `id`.
    pub fn decode(&self, id: u32, bytes: &[u8]) -> Value {
        self.plan(id).decode(bytes)
    }

    /// A decoder for type `id`, worked out once and used for every entry of a map.
    ///
    /// Hostile BTF cannot make it costly: a plan has at most 100,000 nodes, and a type
    /// that would decode into more than 1,000,000 values is shown as hex.
    pub fn plan(&self, id: u32) -> Plan {
        let budget = std::cell::Cell::new(100_000usize);
        let p = self.plan_depth(id, 0, &budget);
        if p.weight() > 1_000_000 {
            return Plan::Hex(p.size());
        }
        p
    }

    fn plan_depth(&self, id: u32, depth: u32, budget: &std::cell::Cell<usize>) -> Plan {
        let id = self.resolve(id);
        let size = self.size(id).unwrap_or(0);
        let Some(t) = self.get(id) else {
            return Plan::Hex(size);
        };
        if depth > 32 || budget.get() == 0 {
            return Plan::Hex(size);
        }
        budget.set(budget.get() - 1);
        match t.kind {
            INT if t.int_enc & 4 != 0 => Plan::Bool(size),
            INT => Plan::Int(size, t.int_enc & 1 != 0),
            PTR => Plan::Int(8, false),
            ENUM | ENUM64 => Plan::Enum(
                size,
                t.kind_flag,
                t.members
                    .iter()
                    .map(|m| (m.value, m.name.clone()))
                    .collect(),
            ),
            FLOAT => Plan::Float(size),
            ARRAY if self.size(id).is_none() => Plan::Hex(0),
            ARRAY => {
                let (elem, n) = t.array;
                let es = self.size(elem).unwrap_or(0);
                let e = self.get(self.resolve(elem));
                if e.is_some_and(|e| {
                    e.kind == INT && e.size_or_type == 1 && (e.int_enc & 2 != 0 || e.name == "char")
                }) {
                    return Plan::Str(size);
                }
                Plan::Array(
                    Box::new(self.plan_depth(elem, depth + 1, budget)),
                    n as usize,
                    es,
                )
            }
            STRUCT | UNION => Plan::Struct(
                size,
                t.members
                    .iter()
                    .map(|m| Field {
                        name: m.name.clone(),
                        off: (m.bit_offset / 8) as usize,
                        bit_off: m.bit_offset,
                        bits: m.bits,
                        size: self.size(m.ty).unwrap_or(0),
                        plan: if m.bits > 0 {
                            Plan::Hex(0)
                        } else {
                            self.plan_depth(m.ty, depth + 1, budget)
                        },
                    })
                    .collect(),
            ),
            DATASEC => Plan::Struct(
                size,
                t.members
                    .iter()
                    .map(|m| Field {
                        name: m.name.clone(),
                        off: m.bit_offset as usize,
                        bit_off: 0,
                        bits: 0,
                        size: m.value as usize,
                        plan: self.plan_depth(m.ty, depth + 1, budget),
                    })
                    .collect(),
            ),
            _ => Plan::Hex(size),
        }
    }
}

/// A member of a struct plan.
#[derive(Clone, Debug)]
pub struct Field {
    name: String,
    off: usize,
    bit_off: u32,
    bits: u32,
    size: usize,
    plan: Plan,
}

/// How to decode one type (see the module docs for the rules).
#[derive(Clone, Debug)]
pub enum Plan {
    /// Integer: size, signed.
    Int(usize, bool),
    /// `bool`.
    Bool(usize),
    /// Enum: size, signed, value names.
    Enum(usize, bool, Vec<(i128, String)>),
    /// Float.
    Float(usize),
    /// `char` array.
    Str(usize),
    /// Array: element plan, count, element size.
    Array(Box<Plan>, usize, usize),
    /// Struct, union or datasec: size and members.
    Struct(usize, Vec<Field>),
    /// Anything else: hex of this many bytes (0: all given).
    Hex(usize),
}

impl Plan {
    /// How many JSON values a decode makes (saturating).
    fn weight(&self) -> usize {
        match self {
            Plan::Array(e, n, _) => n.saturating_mul(e.weight()).max(1),
            Plan::Struct(_, f) => f
                .iter()
                .fold(1usize, |a, f| a.saturating_add(f.plan.weight())),
            _ => 1,
        }
    }

    /// Bytes the plan reads.
    pub fn size(&self) -> usize {
        match self {
            Plan::Int(s, _)
            | Plan::Bool(s)
            | Plan::Enum(s, _, _)
            | Plan::Float(s)
            | Plan::Str(s)
            | Plan::Struct(s, _)
            | Plan::Hex(s) => *s,
            Plan::Array(_, n, es) => n.saturating_mul(*es),
        }
    }

    /// Decodes `bytes` (hex when they are shorter than the type).
    pub fn decode(&self, bytes: &[u8]) -> Value {
        let size = self.size();
        if bytes.len() < size {
            return hex(bytes);
        }
        let b = if size == 0 { bytes } else { &bytes[..size] };
        match self {
            Plan::Int(_, signed) => int_value(b, *signed),
            Plan::Bool(_) => Value::Bool(b.iter().any(|&c| c != 0)),
            Plan::Enum(_, signed, names) => {
                let v = le_int(b, *signed);
                match names.iter().find(|(n, _)| *n == v) {
                    Some((_, name)) => Value::String(name.clone()),
                    None => int_value(b, *signed),
                }
            }
            Plan::Float(4) => json!(f32::from_le_bytes(b.try_into().unwrap())),
            Plan::Float(8) => json!(f64::from_le_bytes(b.try_into().unwrap())),
            Plan::Float(_) | Plan::Hex(_) => hex(b),
            Plan::Str(_) => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                Value::String(String::from_utf8_lossy(&b[..end]).into_owned())
            }
            Plan::Array(elem, n, es) => {
                if *es == 0 {
                    return Value::Array(vec![]);
                }
                Value::Array(
                    (0..*n)
                        .map(|i| elem.decode(&b[i * es..(i + 1) * es]))
                        .collect(),
                )
            }
            Plan::Struct(_, fields) => {
                let mut obj = Map::new();
                Self::fields_into(fields, b, &mut obj);
                Value::Object(obj)
            }
        }
    }

    fn fields_into(fields: &[Field], b: &[u8], obj: &mut Map<String, Value>) {
        for f in fields {
            let v = if f.bits > 0 {
                // Bitfield: read the storage around it and shift.
                let mut raw = [0u8; 16];
                let start = (f.bit_off / 8) as usize;
                let n = (b.len() - start.min(b.len())).min(16);
                let Some(src) = b.get(start..start + n) else {
                    continue;
                };
                raw[..n].copy_from_slice(src);
                let word = u128::from_le_bytes(raw) >> (f.bit_off % 8);
                let mask = if f.bits >= 128 {
                    u128::MAX
                } else {
                    (1u128 << f.bits) - 1
                };
                json!((word & mask) as u64)
            } else {
                match b.get(f.off..f.off + f.size) {
                    Some(x) => f.plan.decode(x),
                    None => continue,
                }
            };
            if f.name.is_empty() {
                // Anonymous struct or union: its members belong to the parent.
                if let Value::Object(inner) = v {
                    obj.extend(inner);
                }
            } else {
                obj.insert(f.name.clone(), v);
            }
        }
    }
}

fn le_int(bytes: &[u8], signed: bool) -> i128 {
    let mut raw = [0u8; 16];
    let n = bytes.len().min(16);
    raw[..n].copy_from_slice(&bytes[..n]);
    let v = u128::from_le_bytes(raw);
    if signed && n < 16 && n > 0 && bytes[n - 1] & 0x80 != 0 {
        (v | (u128::MAX << (n * 8))) as i128
    } else {
        v as i128
    }
}

fn int_value(bytes: &[u8], signed: bool) -> Value {
    let v = le_int(bytes, signed);
    if bytes.len() > 8 {
        return Value::String(if signed {
            v.to_string()
        } else {
            (v as u128).to_string()
        });
    }
    if signed {
        json!(v as i64)
    } else {
        json!(v as u64)
    }
}

/// Bytes as a lowercase hex string.
pub fn hex(bytes: &[u8]) -> Value {
    Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF by hand: types as (name, info, size_or_type, extra words).
    fn build(types: &[(&str, u32, u32, Vec<u32>)], extra_names: &[&str]) -> (Vec<u8>, Vec<u32>) {
        let mut strs = vec![0u8];
        let name_off = |s: &str, strs: &mut Vec<u8>| -> u32 {
            if s.is_empty() {
                return 0;
            }
            let o = strs.len() as u32;
            strs.extend_from_slice(s.as_bytes());
            strs.push(0);
            o
        };
        let extra: Vec<u32> = extra_names.iter().map(|n| name_off(n, &mut strs)).collect();
        let mut ty = Vec::new();
        for (n, info, sz, words) in types {
            ty.extend_from_slice(&name_off(n, &mut strs).to_le_bytes());
            ty.extend_from_slice(&info.to_le_bytes());
            ty.extend_from_slice(&sz.to_le_bytes());
            for w in words {
                ty.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut b = vec![0x9f, 0xeb, 1, 0];
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(ty.len() as u32).to_le_bytes());
        b.extend_from_slice(&(ty.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strs.len() as u32).to_le_bytes());
        b.extend(ty);
        b.extend(strs);
        (b, extra)
    }

    #[test]
    fn decodes_struct_enum_array_bitfield_and_char_string() {
        // Member names are string offsets: put them first so they are known.
        let names = ["a", "b", "c", "flags", "tag", "RED", "BLUE", "name"];
        let (_, off) = build(&[], &names);
        let info = |kind: u32, vlen: u32, kf: bool| (kind << 24) | vlen | ((kf as u32) << 31);
        let types = vec![
            // 1: unsigned int (32 bits)
            ("unsigned int", info(INT, 0, false), 4, vec![32]),
            // 2: int, signed
            ("int", info(INT, 0, false), 4, vec![(1 << 24) | 32]),
            // 3: enum color { RED = 1, BLUE = 7 }
            ("color", info(ENUM, 2, false), 4, vec![off[5], 1, off[6], 7]),
            // 4: u32[2]
            ("", info(ARRAY, 0, false), 0, vec![1, 1, 2]),
            // 5: char
            ("char", info(INT, 0, false), 1, vec![(2 << 24) | 8]),
            // 6: char[4]
            ("", info(ARRAY, 0, false), 0, vec![5, 1, 4]),
            // 7: struct s { u32 a; int b; u32[2] c; u32 flags:3 (bit 128); enum tag; char name[4] }
            (
                "s",
                info(STRUCT, 6, true),
                28,
                vec![
                    off[0],
                    1,
                    0,
                    off[1],
                    2,
                    32,
                    off[2],
                    4,
                    64,
                    off[3],
                    1,
                    (3 << 24) | 128,
                    off[4],
                    3,
                    160,
                    off[7],
                    6,
                    192,
                ],
            ),
        ];
        let (b, _) = build(&types, &names);
        let btf = Btf::parse(&b).unwrap();
        assert_eq!(btf.size(7), Some(28));
        let mut v = Vec::new();
        v.extend_from_slice(&5u32.to_le_bytes());
        v.extend_from_slice(&(-3i32).to_le_bytes());
        v.extend_from_slice(&10u32.to_le_bytes());
        v.extend_from_slice(&20u32.to_le_bytes());
        v.extend_from_slice(&0b1101u32.to_le_bytes());
        v.extend_from_slice(&7u32.to_le_bytes());
        v.extend_from_slice(b"ab\0\0");
        assert_eq!(
            btf.decode(7, &v),
            json!({"a": 5, "b": -3, "c": [10, 20], "flags": 5, "tag": "BLUE", "name": "ab"})
        );
        // An enum value without a name stays a number.
        assert_eq!(btf.decode(3, &9u32.to_le_bytes()), json!(9));
        assert_eq!(btf.find("struct s"), Some(7));
        assert_eq!(btf.type_name(4), "unsigned int[2]");
    }

    #[test]
    fn refuses_garbage() {
        assert!(Btf::parse(b"not btf at all, no").is_err());
        let (mut b, _) = build(&[("x", 1 << 24, 4, vec![32])], &[]);
        b[12] = 0xff; // type_len past the end
        assert!(Btf::parse(&b).is_err());
    }
}
