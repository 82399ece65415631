//! The per-packet code of the kernel objects calls no `memset`, `memmove` or `memcpy`.
//!
//! For BPF those are functions the linker adds, each a loop over single bytes (about 8
//! instructions a byte): a struct copied by assignment or zeroed by a literal became such
//! a call, and copying a machine's 328-byte condition set cost more than the rest of the
//! machine. Only the cold paths listed below may call them. The object is read as built
//! (its ELF relocations), so a new call anywhere else fails here.

use std::collections::BTreeSet;

/// Functions that may call them: answers (a reset or an ICMP error is built once per
/// refused packet), a first fragment's record, the entry a new flow or connection inserts,
/// and the rate limit of SPA candidates.
const COLD: &[&str] = &[
    "admitted",
    "reset_tc",
    "reset_xdp",
    "unreach_tc",
    "unreach_xdp",
    "fragment",
    "protected",
    "track",
];

fn u16le(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize
}
fn u32le(b: &[u8], o: usize) -> usize {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

struct Section {
    kind: usize,
    offset: usize,
    size: usize,
    link: usize,
    info: usize,
    entsize: usize,
}

struct Symbol {
    name: String,
    section: usize,
    value: u64,
    size: u64,
    func: bool,
}

fn sections(b: &[u8]) -> Vec<Section> {
    assert_eq!(&b[..4], b"\x7fELF", "not an ELF file");
    let (shoff, shentsize, shnum) = (u64le(b, 0x28) as usize, u16le(b, 0x3a), u16le(b, 0x3c));
    (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            Section {
                kind: u32le(b, h + 4),
                offset: u64le(b, h + 0x18) as usize,
                size: u64le(b, h + 0x20) as usize,
                link: u32le(b, h + 0x28),
                info: u32le(b, h + 0x2c),
                entsize: u64le(b, h + 0x38) as usize,
            }
        })
        .collect()
}

fn symbols(b: &[u8], secs: &[Section]) -> (usize, Vec<Symbol>) {
    const SHT_SYMTAB: usize = 2;
    let (idx, st) = secs
        .iter()
        .enumerate()
        .find(|(_, s)| s.kind == SHT_SYMTAB)
        .expect("a symbol table");
    let strtab = &secs[st.link];
    let name = |o: usize| {
        let s = &b[strtab.offset + o..];
        String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]).into_owned()
    };
    let syms = (0..st.size / st.entsize)
        .map(|i| {
            let e = st.offset + i * st.entsize;
            Symbol {
                name: name(u32le(b, e)),
                func: b[e + 4] & 0xf == 2,
                section: u16le(b, e + 6),
                value: u64le(b, e + 8),
                size: u64le(b, e + 16),
            }
        })
        .collect();
    (idx, syms)
}

/// (calling function, callee) for every call of `memset`/`memmove`/`memcpy`.
fn mem_calls(b: &[u8]) -> BTreeSet<(String, String)> {
    const SHT_REL: usize = 9;
    let secs = sections(b);
    let (symtab, syms) = symbols(b, &secs);
    let mut out = BTreeSet::new();
    for rel in secs
        .iter()
        .filter(|s| s.kind == SHT_REL && s.link == symtab)
    {
        for i in 0..rel.size / 16 {
            let (off, info) = (
                u64le(b, rel.offset + i * 16),
                u64le(b, rel.offset + i * 16 + 8),
            );
            let target = &syms[(info >> 32) as usize].name;
            if !matches!(target.as_str(), "memset" | "memmove" | "memcpy") {
                continue;
            }
            let caller = syms
                .iter()
                .find(|s| {
                    s.func && s.section == rel.info && s.value <= off && off < s.value + s.size
                })
                .map_or_else(|| format!("section {}", rel.info), |s| s.name.clone());
            out.insert((caller, target.clone()));
        }
    }
    out
}

/// A (possibly mangled) symbol name ends with the function `f`.
fn is(name: &str, f: &str) -> bool {
    // Rust v0 mangling: `..._<len><name>`; legacy: `..<len><name>17h<hash>E`.
    let v0 = format!("{}{f}", f.len());
    name == f || name.ends_with(&v0) || name.contains(&format!("{v0}17h"))
}

#[test]
fn per_packet_code_calls_no_byte_loop_memset_or_memmove() {
    let calls = mem_calls(statewall::engine::ebpf::OBJECT);
    // The check itself: the cold paths do call them today, so the parser finds calls.
    assert!(
        calls.iter().any(|(c, _)| is(c, "reset_tc")),
        "no call found at all: is the relocation parser broken? {calls:?}"
    );
    let hot: Vec<_> = calls
        .iter()
        .filter(|(c, _)| !COLD.iter().any(|f| is(c, f)))
        .collect();
    assert!(
        hot.is_empty(),
        "per-packet functions calling a byte-loop mem function (copy word by word with \
         statewall_common::mem instead): {hot:?}"
    );
}

#[test]
fn the_monitor_object_calls_none() {
    let calls = mem_calls(statewall::monitor::OBJECT);
    assert!(
        calls.is_empty(),
        "the monitor program calls a byte-loop mem function: {calls:?}"
    );
}
