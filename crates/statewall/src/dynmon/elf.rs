//! Just enough ELF64 (little-endian, relocatable) to list an object's sections, take its
//! `.BTF`, and rename libbpf's program sections to names aya-obj knows.
//!
//! aya-obj 0.3 types a program by its section name and knows `classifier` and `xdp`, not
//! libbpf's `tc`, `tcx/ingress`, `tcx/egress`, `tc/ingress` or `tc/egress`. A renamed
//! section is `classifier/<old name>`. The new names go into a new section-name table
//! appended to the file, and into the `.BTF` string table (also rewritten at the end of
//! the file), because `.BTF.ext` finds a section's function and line records, and its
//! CO-RE relocations, by that section's name: each such record's name offset is patched
//! in place. Nothing else moves.

use super::error::BadObject;

/// A section: name, type, file range, header position.
#[derive(Clone, Debug)]
pub struct Section {
    /// Name.
    pub name: String,
    /// `sh_type`.
    pub kind: u32,
    /// File offset and size (within the file; empty for SHT_NOBITS).
    pub range: (usize, usize),
    /// `sh_size` (what a SHT_NOBITS section takes in memory).
    pub size: u64,
    /// `sh_link`.
    link: u32,
    /// Offset of this section's header in the file.
    header: usize,
}

const SHT_PROGBITS: u32 = 1;

fn rd<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], BadObject> {
    off.checked_add(N)
        .and_then(|end| b.get(off..end))
        .map(|s| s.try_into().unwrap())
        .ok_or_else(|| BadObject(format!("ELF truncated at byte {off}")))
}
fn u16_at(b: &[u8], off: usize) -> Result<u16, BadObject> {
    Ok(u16::from_le_bytes(rd(b, off)?))
}
fn u32_at(b: &[u8], off: usize) -> Result<u32, BadObject> {
    Ok(u32::from_le_bytes(rd(b, off)?))
}
fn u64_at(b: &[u8], off: usize) -> Result<u64, BadObject> {
    Ok(u64::from_le_bytes(rd(b, off)?))
}

/// The sections of an eBPF object.
pub fn sections(b: &[u8]) -> Result<Vec<Section>, BadObject> {
    if b.len() < 64 || b[0..4] != *b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if b[4] != 2 || b[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    if u16_at(b, 18)? != 247 {
        return Err(format!(
            "ELF machine {} is not BPF (247): build with clang -target bpf",
            u16_at(b, 18)?
        )
        .into());
    }
    let shoff = u64_at(b, 40)? as usize;
    let shentsize = u16_at(b, 58)? as usize;
    let shnum = u16_at(b, 60)? as usize;
    let shstrndx = u16_at(b, 62)? as usize;
    if shentsize < 64
        || shnum == 0
        || shstrndx >= shnum
        || shoff
            .checked_add(shnum * shentsize)
            .is_none_or(|end| end > b.len())
    {
        return Err("ELF section header table is malformed".into());
    }
    let hdr = |i: usize| shoff + i * shentsize;
    let range = |i: usize| -> Result<(usize, usize), BadObject> {
        let (off, size) = (
            u64_at(b, hdr(i) + 24)? as usize,
            u64_at(b, hdr(i) + 32)? as usize,
        );
        let kind = u32_at(b, hdr(i) + 4)?;
        // SHT_NOBITS (.bss) has no file contents: an empty range.
        if kind == 8 {
            return Ok((0, 0));
        }
        if off.checked_add(size).is_none_or(|e| e > b.len()) {
            return Err(format!("ELF section {i} lies outside the file").into());
        }
        Ok((off, size))
    };
    let (so, ss) = range(shstrndx)?;
    let names = &b[so..so + ss];
    let mut out = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let n = u32_at(b, hdr(i))? as usize;
        let rest = names.get(n..).ok_or("ELF section name out of bounds")?;
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        out.push(Section {
            name: String::from_utf8_lossy(&rest[..end]).into_owned(),
            kind: u32_at(b, hdr(i) + 4)?,
            range: range(i)?,
            size: u64_at(b, hdr(i) + 32)?,
            link: u32_at(b, hdr(i) + 40)?,
            header: hdr(i),
        });
    }
    Ok(out)
}

/// The symbols: (name, section index, value).
pub fn symbols(b: &[u8]) -> Result<Vec<(String, usize, u64)>, BadObject> {
    let secs = sections(b)?;
    let Some(st) = secs.iter().find(|s| s.kind == 2) else {
        return Ok(vec![]);
    };
    let strtab = secs
        .get(st.link as usize)
        .ok_or("ELF symbol table links to no string table")?;
    let names = &b[strtab.range.0..strtab.range.0 + strtab.range.1];
    let syms = &b[st.range.0..st.range.0 + st.range.1];
    let mut out = Vec::new();
    for e in syms.chunks_exact(24) {
        let n = u32::from_le_bytes(e[0..4].try_into().unwrap()) as usize;
        let shndx = u16::from_le_bytes(e[6..8].try_into().unwrap()) as usize;
        let value = u64::from_le_bytes(e[8..16].try_into().unwrap());
        let Some(rest) = names.get(n..) else { continue };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        out.push((
            String::from_utf8_lossy(&rest[..end]).into_owned(),
            shndx,
            value,
        ));
    }
    Ok(out)
}

/// The name aya-obj gets for a libbpf program section, when it needs a new one.
pub fn normalised(name: &str) -> Option<String> {
    let libbpf_tc = name == "tc"
        || name.starts_with("tc/")
        || name == "tcx"
        || name.starts_with("tcx/")
        || name == "tc_packet_hook";
    libbpf_tc.then(|| format!("classifier/{name}"))
}

/// The hook a program section names (`tcx/ingress`, `tc/egress`...), if it names one.
pub fn section_hook(name: &str) -> Option<&'static str> {
    let n = name.strip_prefix("classifier/").unwrap_or(name);
    match n {
        "tcx/ingress" | "tc/ingress" => Some("ingress"),
        "tcx/egress" | "tc/egress" => Some("egress"),
        "xdp" | "xdp.frags" => Some("xdp"),
        _ => None,
    }
}

/// The contents of the `.BTF` section.
pub fn btf(b: &[u8]) -> Result<Option<&[u8]>, BadObject> {
    Ok(sections(b)?
        .into_iter()
        .find(|s| s.name == ".BTF")
        .map(|s| &b[s.range.0..s.range.0 + s.range.1]))
}

/// Returns the object with libbpf program sections renamed (see the module docs); the
/// input unchanged when nothing needs renaming.
pub fn normalise(b: &[u8]) -> Result<Vec<u8>, BadObject> {
    let secs = sections(b)?;
    let renames: Vec<(usize, String)> = secs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == SHT_PROGBITS)
        .filter_map(|(i, s)| normalised(&s.name).map(|n| (i, n)))
        .collect();
    if renames.is_empty() {
        return Ok(b.to_vec());
    }
    let mut out = b.to_vec();
    let shstrndx = u16_at(b, 62)? as usize;
    let pad = |out: &mut Vec<u8>| {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    };
    // New section-name table: the old one plus the new names.
    let (so, ss) = secs[shstrndx].range;
    let mut names = b[so..so + ss].to_vec();
    for (i, new) in &renames {
        let off = names.len() as u32;
        names.extend_from_slice(new.as_bytes());
        names.push(0);
        out[secs[*i].header..secs[*i].header + 4].copy_from_slice(&off.to_le_bytes());
    }
    pad(&mut out);
    let at = out.len() as u64;
    out.extend_from_slice(&names);
    let h = secs[shstrndx].header;
    out[h + 24..h + 32].copy_from_slice(&at.to_le_bytes());
    out[h + 32..h + 40].copy_from_slice(&(names.len() as u64).to_le_bytes());

    // BTF: append the new names to its string table and point .BTF.ext at them.
    let Some(bi) = secs.iter().position(|s| s.name == ".BTF") else {
        return Ok(out);
    };
    let (bo, bs) = secs[bi].range;
    let btf = &b[bo..bo + bs];
    if btf.len() < 24 || btf[0..2] != [0x9f, 0xeb] {
        return Err(".BTF is not little-endian BTF".into());
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    if hdr_len < 24 || hdr_len > btf.len() {
        return Err(".BTF header length is invalid".into());
    }
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or(".BTF type section out of bounds")?;
    let mut strs = btf
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or(".BTF string section out of bounds")?
        .to_vec();
    // old string offset -> new string offset
    let mut moved: Vec<(String, u32)> = Vec::new();
    for (i, new) in &renames {
        moved.push((secs[*i].name.clone(), strs.len() as u32));
        strs.extend_from_slice(new.as_bytes());
        strs.push(0);
    }
    let mut nb = btf[..hdr_len].to_vec();
    nb[8..12].copy_from_slice(&0u32.to_le_bytes());
    nb[16..20].copy_from_slice(&(type_len as u32).to_le_bytes());
    nb[20..24].copy_from_slice(&(strs.len() as u32).to_le_bytes());
    nb.extend_from_slice(types);
    nb.extend_from_slice(&strs);
    pad(&mut out);
    let at = out.len() as u64;
    out.extend_from_slice(&nb);
    let h = secs[bi].header;
    out[h + 24..h + 32].copy_from_slice(&at.to_le_bytes());
    out[h + 32..h + 40].copy_from_slice(&(nb.len() as u64).to_le_bytes());

    let old_str = |off: u32| -> Option<String> {
        let rest = btf.get(hdr_len + str_off + off as usize..hdr_len + str_off + str_len)?;
        let end = rest.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    if let Some(e) = secs.iter().find(|s| s.name == ".BTF.ext") {
        let (eo, es) = e.range;
        let ext = &b[eo..eo + es];
        let ehdr = u32_at(ext, 4)? as usize;
        // (offset, length) of func_info, line_info and, when present, core_relo.
        let mut subs = vec![
            (u32_at(ext, 8)? as usize, u32_at(ext, 12)? as usize),
            (u32_at(ext, 16)? as usize, u32_at(ext, 20)? as usize),
        ];
        if ehdr >= 32 {
            subs.push((u32_at(ext, 24)? as usize, u32_at(ext, 28)? as usize));
        }
        for (off, len) in subs {
            if len == 0 {
                continue;
            }
            let start = ehdr + off;
            let end = start + len;
            if end > ext.len() {
                return Err(".BTF.ext record section out of bounds".into());
            }
            let rec = u32_at(ext, start)? as usize;
            let mut p = start + 4;
            while p + 8 <= end {
                let name_off = u32_at(ext, p)?;
                let n = u32_at(ext, p + 4)? as usize;
                if let Some(name) = old_str(name_off) {
                    if let Some((_, new)) = moved.iter().find(|(o, _)| *o == name) {
                        out[eo + p..eo + p + 4].copy_from_slice(&new.to_le_bytes());
                    }
                }
                p = p.saturating_add(n.saturating_mul(rec)).saturating_add(8);
            }
        }
    }
    Ok(out)
}
