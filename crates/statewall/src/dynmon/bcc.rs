//! Polycube's BCC dialect, translated into the libbpf-style C that [`super::compile_c`]
//! builds: a source-to-source step before clang, plus a header (the prelude below).
//!
//! What a Dynmon program writes and what it becomes:
//! - the entry point `static __always_inline int handle_rx(struct CTXTYPE *ctx, struct
//!   pkt_metadata *md)` is called by a program statewall adds at the end, in the section of
//!   the path's hook; `RX_OK` hands the packet on (`TC_ACT_UNSPEC`, tcx's "next";
//!   `XDP_PASS` for an XDP cube's ingress path, whose `CTXTYPE` is `xdp_md`), `RX_DROP`
//!   drops it (`TC_ACT_SHOT`, `XDP_DROP`); `RX_REDIRECT` is refused;
//! - `BPF_TABLE`, `BPF_HASH`, `BPF_ARRAY`, `BPF_PERCPU_*`, `BPF_QUEUESTACK`, `BPF_QUEUE`,
//!   `BPF_STACK` and their `_SHARED`/`_PUBLIC` forms become BTF-defined maps (`SEC(".maps")`)
//!   of the same name, type, key, value and size; an `"extern"` table is the monitor's
//!   other path's table of that name (the same declaration here; the loader makes both
//!   programs use one map: `PathSpec::shared`);
//! - `map.lookup(k)` and the other methods become `bpf_map_*` calls (typed as the map's
//!   value, as in BCC);
//! - `pcn_get_time_epoch()` is the kernel clock plus an offset the loader writes into a
//!   map the program may only read ([`EPOCH_MAP`]); `pcn_log(ctx, level, fmt, ...)`
//!   formats its message in the kernel (`bpf_snprintf`) into a ring ([`LOG_MAP`]) that
//!   the daemon writes to its log, at most 16 a second per CPU;
//! - `#include <uapi/linux/X.h>` becomes `#include <linux/X.h>`.
//!
//! Every line of the user's source stays one line of the translation, after a `#line 1`
//! directive: clang's errors name the user's lines. Anything else of the dialect (another
//! `pcn_` helper, a table type or method not listed) is an error naming its line.

use super::error::DynmonError;
use crate::types::Direction;

/// The map holding `pcn_get_time_epoch`'s offset (Unix ns minus the kernel's monotonic
/// ns), written by the loader.
pub const EPOCH_MAP: &str = "__pcn_epoch";

/// The ring buffer `pcn_log` writes its records to (level, length, message), which the
/// daemon copies into its log.
pub const LOG_MAP: &str = "__pcn_log";

/// Identifiers that mark a source as written in the dialect.
pub(super) const MARKERS: &[&str] = &[
    "BPF_TABLE",
    "BPF_HASH",
    "BPF_ARRAY",
    "BPF_PERCPU_ARRAY",
    "BPF_PERCPU_HASH",
    "BPF_QUEUE",
    "BPF_STACK",
    "BPF_QUEUESTACK",
    "handle_rx",
    "CTXTYPE",
    "pkt_metadata",
];

/// Whether `src` is in Polycube's BCC dialect: it uses one of `MARKERS` as an
/// identifier (outside comments and strings).
pub fn is_bcc(src: &str) -> bool {
    let code = code_mask(src);
    let found = idents(src, &code).any(|(_, id)| MARKERS.contains(&id) || id.starts_with("pcn_"));
    found
}

/// Translates a Dynmon program for a path running on `dir` (ingress or egress), for tc
/// or (`xdp`, ingress only) XDP.
pub fn translate(src: &str, dir: Direction, xdp: bool) -> Result<String, DynmonError> {
    translate_with(src, dir, None, xdp).map(|t| t.c)
}

/// A translated path.
pub struct Translation {
    /// The libbpf-style C.
    pub c: String,
    /// Its `"extern"` tables: maps the other path of the monitor declares, which this
    /// path's program must use (the loader shares them).
    pub externs: Vec<String>,
}

/// [`translate`], with the source of the monitor's other path (`other`), whose tables an
/// `"extern"` declaration names; `xdp`: an ingress path that runs in XDP (`CTXTYPE` is
/// `xdp_md`, `RX_OK` is `XDP_PASS` and `RX_DROP` `XDP_DROP`).
pub fn translate_with(
    src: &str,
    dir: Direction,
    other: Option<&str>,
    xdp: bool,
) -> Result<Translation, DynmonError> {
    if xdp && dir != Direction::Ingress {
        return Err(err(
            1,
            "XDP runs on ingress only: load the egress path for tc (cube type TC)",
        ));
    }
    let program_type = match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
        Direction::Both => {
            return Err(err(
                1,
                "a program in Polycube's dialect runs on one direction (its \
                 POLYCUBE_PROGRAM_TYPE): load it for ingress or for egress",
            ))
        }
    };
    let code = code_mask(src);
    check_identifiers(src, &code)?;
    // The other path's tables, as it declares them (its own errors are its own).
    let theirs = match other {
        Some(o) => translate_maps(o, &code_mask(o), &[]).map_or(Vec::new(), |t| t.1),
        None => Vec::new(),
    };
    let (body, maps) = translate_maps(src, &code, &theirs)?;
    let externs = maps
        .iter()
        .filter(|t| t.ext)
        .map(|t| t.name.clone())
        .collect();
    let code = code_mask(&body);
    let body = translate_methods(&body, &code, &maps)?;
    let body = translate_includes(&body);
    if !has_handle_rx(&body) {
        return Err(err(
            1,
            "no `handle_rx`: a Dynmon program defines `static __always_inline int \
             handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md)`",
        ));
    }
    let (ctx, hook, entry) = if xdp {
        (
            "xdp_md",
            "xdp",
            "\tmd.in_port = ctx->ingress_ifindex;\n\
             \tmd.packet_len = ctx->data_end - ctx->data;\n\
             \treturn handle_rx(ctx, &md) == RX_DROP ? XDP_DROP : XDP_PASS;\n",
        )
    } else {
        (
            "__sk_buff",
            if program_type == 0 {
                "tcx/ingress"
            } else {
                "tcx/egress"
            },
            "\tmd.in_port = ctx->ifindex;\n\
             \tmd.packet_len = ctx->len;\n\
             \treturn handle_rx(ctx, &md) == RX_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;\n",
        )
    };
    let mut out = String::with_capacity(src.len() + 4096);
    out.push_str(&prelude(program_type, ctx));
    out.push_str("#line 1 \"prog.c\"\n");
    out.push_str(&body);
    if !body.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "#line 1 \"statewall-bcc-entry\"\n\
         SEC(\"{hook}\")\n\
         int statewall_bcc_rx(struct {ctx} *ctx)\n\
         {{\n\
         \tstruct pkt_metadata md;\n\
         \t__builtin_memset(&md, 0, sizeof(md));\n\
         {entry}\
         }}\n\
         char _statewall_bcc_license[] SEC(\"license\") = \"GPL\";\n"
    ));
    Ok(Translation { c: out, externs })
}

/// What is wrong with one construct (the caller adds its line).
struct Bad(String);

fn err(line: usize, msg: &str) -> DynmonError {
    DynmonError::Compile(format!("line {line}: {msg}"))
}

/// The header every translation starts with (`pcn.h`): what Polycube gives a Dynmon
/// program without includes (no protocol header structs: programs define their own).
fn prelude(program_type: u32, ctx: &str) -> String {
    const PCN_H: &str = include_str!("pcn.h");
    debug_assert!(PCN_H.contains(EPOCH_MAP));
    PCN_H
        .replace("@POLYCUBE_PROGRAM_TYPE@", &program_type.to_string())
        .replace("@CTXTYPE@", ctx)
}

/// For each byte: true when it is code (not inside a comment, a string or a character
/// literal).
fn code_mask(src: &str) -> Vec<bool> {
    let b = src.as_bytes();
    let mut m = vec![true; b.len()];
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let end = if b[i..].starts_with(b"//") {
            i + b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .unwrap_or(b.len() - i)
        } else if b[i..].starts_with(b"/*") {
            b[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(b.len(), |p| i + 2 + p + 2)
        } else if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            let mut j = i + 1;
            while j < b.len() && b[j] != q && b[j] != b'\n' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(b.len())
        } else {
            i += 1;
            continue;
        };
        for x in &mut m[start..end] {
            *x = false;
        }
        i = end.max(start + 1);
    }
    m
}

/// Identifiers in code, with their byte offsets.
fn idents<'a>(src: &'a str, code: &'a [bool]) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    let b = src.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if code[i]
                && (b[i].is_ascii_alphabetic() || b[i] == b'_')
                && (i == 0 || !word(b[i - 1]))
            {
                let s = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                return Some((s, &src[s..i]));
            }
            i += 1;
        }
        None
    })
}

fn line_of(src: &str, off: usize) -> usize {
    src[..off].bytes().filter(|&c| c == b'\n').count() + 1
}

/// The dialect's constructs statewall does not translate: an error naming the first.
fn check_identifiers(src: &str, code: &[bool]) -> Result<(), DynmonError> {
    for (off, id) in idents(src, code) {
        let line = line_of(src, off);
        if id == "RX_REDIRECT" {
            return Err(err(
                line,
                "`RX_REDIRECT` is not supported: a dynamic monitor observes, it does not \
                 forward (return RX_OK to hand the packet on, RX_DROP to drop it)",
            ));
        }
        if id.starts_with("pcn_") && !matches!(id, "pcn_get_time_epoch" | "pcn_log") {
            return Err(err(
                line,
                &format!(
                    "`{id}` is a Polycube helper statewall does not provide (it provides \
                     pcn_get_time_epoch and pcn_log)"
                ),
            ));
        }
        if matches!(
            id,
            "BPF_PERF_OUTPUT" | "BPF_RINGBUF_OUTPUT" | "BPF_PROG_ARRAY"
        ) {
            return Err(err(
                line,
                &format!(
                    "`{id}` is not translated: a dynamic monitor's tables are hash, array, \
                     percpu_hash, percpu_array, lru_hash, queue and stack"
                ),
            ));
        }
    }
    Ok(())
}

/// A declared table.
#[derive(Clone, Debug)]
pub(super) struct Table {
    name: String,
    queue: bool,
    /// Declared `"extern"`: the other path's table.
    ext: bool,
    /// Its map definition (and type names), on one line.
    c: String,
}

/// The top-level arguments of the call whose `(` is at `open`; returns them (trimmed) and
/// the offset after the closing `)`.
fn call_args(src: &str, code: &[bool], open: usize) -> Option<(Vec<String>, usize)> {
    let b = src.as_bytes();
    let (mut depth, mut start) = (0usize, open + 1);
    let mut args = Vec::new();
    let mut i = open;
    while i < b.len() {
        if code[i] {
            match b[i] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        let last = src[start..i].trim();
                        if !last.is_empty() || !args.is_empty() {
                            args.push(last.to_string());
                        }
                        return Some((args, i + 1));
                    }
                }
                b',' if depth == 1 => {
                    args.push(src[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('"')
}

/// Replaces the table declarations by BTF-defined maps (on as many lines as they took).
/// `theirs`: the other path's tables, for `"extern"` declarations.
fn translate_maps(
    src: &str,
    code: &[bool],
    theirs: &[Table],
) -> Result<(String, Vec<Table>), DynmonError> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() * 2);
    let mut tables: Vec<Table> = Vec::new();
    let mut last = 0;
    let decls: Vec<(usize, &str)> = idents(src, code)
        .filter(|(_, id)| id.starts_with("BPF_") && MACROS.contains(id))
        .collect();
    for (off, id) in decls {
        if off < last {
            continue;
        }
        let line = line_of(src, off);
        let mut open = off + id.len();
        while open < b.len() && b[open].is_ascii_whitespace() {
            open += 1;
        }
        if open >= b.len() || b[open] != b'(' {
            continue;
        }
        let (args, mut end) = call_args(src, code, open)
            .ok_or_else(|| err(line, &format!("`{id}(` is not closed")))?;
        while end < b.len() && (b[end] == b' ' || b[end] == b'\t') {
            end += 1;
        }
        if end < b.len() && b[end] == b';' {
            end += 1;
        }
        let t = match extern_name(id, &args) {
            // The same map as the other path's (the loader makes it the very same).
            Some(name) => match theirs.iter().find(|t| t.name == name) {
                Some(t) if !t.ext => Table {
                    ext: true,
                    ..t.clone()
                },
                _ => {
                    return Err(err(
                        line,
                        &format!(
                            "table `{name}` is \"extern\", but the monitor's other path \
                             declares no table `{name}`"
                        ),
                    ))
                }
            },
            None => {
                let d = declaration(id, &args).map_err(|m| err(line, &m.0))?;
                Table {
                    name: d.name,
                    queue: d.queue,
                    ext: false,
                    c: d.c,
                }
            }
        };
        if tables.iter().any(|x| x.name == t.name) {
            return Err(err(line, &format!("table `{}` is declared twice", t.name)));
        }
        out.push_str(&src[last..off]);
        out.push_str(&t.c);
        // The declaration's own line breaks, so that the lines after it keep their numbers.
        out.extend(src[off..end].matches('\n').map(|_| '\n'));
        tables.push(t);
        last = end;
    }
    out.push_str(&src[last..]);
    Ok((out, tables))
}

/// The name an `"extern"` declaration gives (`BPF_TABLE("extern", K, V, name, size)`,
/// `BPF_QUEUESTACK("extern", name, V, size, flags)`), if it is one.
fn extern_name(id: &str, args: &[String]) -> Option<String> {
    if args.first().map(|a| unquote(a)) != Some("extern") {
        return None;
    }
    let i = if id.starts_with("BPF_QUEUESTACK") {
        1
    } else {
        3
    };
    args.get(i).cloned()
}

const MACROS: &[&str] = &[
    "BPF_TABLE",
    "BPF_TABLE_SHARED",
    "BPF_TABLE_PUBLIC",
    "BPF_HASH",
    "BPF_ARRAY",
    "BPF_PERCPU_HASH",
    "BPF_PERCPU_ARRAY",
    "BPF_QUEUESTACK",
    "BPF_QUEUESTACK_SHARED",
    "BPF_QUEUESTACK_PUBLIC",
    "BPF_QUEUE",
    "BPF_QUEUE_SHARED",
    "BPF_QUEUE_PUBLIC",
    "BPF_STACK",
    "BPF_STACK_SHARED",
    "BPF_STACK_PUBLIC",
];

struct Decl {
    name: String,
    queue: bool,
    c: String,
}

/// One table declaration (macro `id` with `args`) as a map definition on one line.
fn declaration(id: &str, args: &[String]) -> Result<Decl, Bad> {
    let base = id
        .trim_end_matches("_SHARED")
        .trim_end_matches("_PUBLIC")
        .to_string();
    let arg = |i: usize, default: &str| -> String {
        args.get(i)
            .filter(|a| !a.is_empty())
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let want = |n| arity(&format!("`{id}`"), args, n);
    // (table type, key, value, name, size)
    let (kind, key, value, name, size) = match base.as_str() {
        "BPF_TABLE" => {
            want(5..=5)?;
            (
                unquote(&args[0]).to_string(),
                arg(1, ""),
                arg(2, ""),
                arg(3, ""),
                arg(4, ""),
            )
        }
        "BPF_HASH" | "BPF_PERCPU_HASH" => {
            want(1..=4)?;
            let kind = if base == "BPF_HASH" {
                "hash"
            } else {
                "percpu_hash"
            };
            (
                kind.into(),
                arg(1, "u64"),
                arg(2, "u64"),
                arg(0, ""),
                arg(3, "10240"),
            )
        }
        "BPF_ARRAY" | "BPF_PERCPU_ARRAY" => {
            want(1..=3)?;
            let kind = if base == "BPF_ARRAY" {
                "array"
            } else {
                "percpu_array"
            };
            (
                kind.into(),
                "int".into(),
                arg(1, "u64"),
                arg(0, ""),
                arg(2, "10240"),
            )
        }
        "BPF_QUEUESTACK" => {
            want(4..=5)?;
            (
                unquote(&args[0]).to_string(),
                String::new(),
                arg(2, ""),
                arg(1, ""),
                arg(3, ""),
            )
        }
        "BPF_QUEUE" | "BPF_STACK" => {
            want(3..=4)?;
            let kind = if base == "BPF_QUEUE" {
                "queue"
            } else {
                "stack"
            };
            (
                kind.into(),
                String::new(),
                arg(1, ""),
                arg(0, ""),
                arg(2, ""),
            )
        }
        _ => {
            return Err(Bad(format!(
                "`{id}` is not a table declaration statewall knows"
            )))
        }
    };
    let map_type = match kind.as_str() {
        "hash" => "BPF_MAP_TYPE_HASH",
        "array" => "BPF_MAP_TYPE_ARRAY",
        "percpu_hash" => "BPF_MAP_TYPE_PERCPU_HASH",
        "percpu_array" => "BPF_MAP_TYPE_PERCPU_ARRAY",
        "lru_hash" => "BPF_MAP_TYPE_LRU_HASH",
        "queue" => "BPF_MAP_TYPE_QUEUE",
        "stack" => "BPF_MAP_TYPE_STACK",
        other => {
            return Err(Bad(format!(
                "table `{name}`: type \"{other}\" is not one statewall translates (hash, array, \
                 percpu_hash, percpu_array, lru_hash, queue, stack)"
            )))
        }
    };
    if !valid_c_ident(&name) {
        return Err(Bad(format!("`{id}`: {name:?} is not a table name")));
    }
    let queue = matches!(kind.as_str(), "queue" | "stack");
    let mut c = format!("struct {{ __uint(type, {map_type}); ");
    let mut typedefs = String::new();
    if !queue {
        // Arrays are indexed by 32 bits in BTF (BCC's `int` keys are 32 bits too).
        let key = if matches!(kind.as_str(), "array" | "percpu_array") {
            "__u32".to_string()
        } else {
            key
        };
        c.push_str(&format!("__type(key, {key}); "));
        typedefs.push_str(&format!(" typedef {key} {name}__key_t;"));
    }
    c.push_str(&format!(
        "__type(value, {value}); __uint(max_entries, {size}); }} {name} SEC(\".maps\");\
         {typedefs} typedef {value} {name}__leaf_t;"
    ));
    Ok(Decl { name, queue, c })
}

/// `what` (a macro or method, quoted) takes a number of arguments in `n`.
fn arity(what: &str, args: &[String], n: std::ops::RangeInclusive<usize>) -> Result<(), Bad> {
    if n.contains(&args.len()) {
        Ok(())
    } else {
        Err(Bad(format!(
            "{what} takes {} to {} arguments, not {}",
            n.start(),
            n.end(),
            args.len()
        )))
    }
}

fn valid_c_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

const METHODS: &[&str] = &[
    "lookup",
    "lookup_or_try_init",
    "lookup_or_init",
    "update",
    "insert",
    "delete",
    "increment",
    "atomic_increment",
    "push",
    "pop",
    "peek",
];

/// Replaces `table.method(args)` by the `bpf_map_*` calls.
fn translate_methods(src: &str, code: &[bool], tables: &[Table]) -> Result<String, DynmonError> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() * 2);
    let mut last = 0;
    let found: Vec<(usize, &str)> = idents(src, code).collect();
    for (off, id) in found {
        if off < last {
            continue;
        }
        let Some(t) = tables.iter().find(|t| t.name == id) else {
            continue;
        };
        let mut i = off + id.len();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'.' || !code[i] {
            continue;
        }
        let line = line_of(src, off);
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let m_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let method = &src[m_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if !METHODS.contains(&method) || i >= b.len() || b[i] != b'(' {
            return Err(err(
                line,
                &format!(
                    "`{id}.{method}` is not a table method statewall translates ({})",
                    METHODS.join(", ")
                ),
            ));
        }
        let (args, end) = call_args(src, code, i)
            .ok_or_else(|| err(line, &format!("`{id}.{method}(` is not closed")))?;
        let c = method_call(t, method, &args).map_err(|m| err(line, &m.0))?;
        out.push_str(&src[last..off]);
        out.push_str(&c);
        out.extend(src[off..end].matches('\n').map(|_| '\n'));
        last = end;
    }
    out.push_str(&src[last..]);
    Ok(out)
}

fn method_call(t: &Table, method: &str, args: &[String]) -> Result<String, Bad> {
    let n = &t.name;
    let want = |k| arity(&format!("`{n}.{method}`"), args, k);
    let keyed = || -> Result<(), Bad> {
        if t.queue {
            Err(Bad(format!(
                "`{n}` is a queue or stack: it has push, pop and peek, not {method}"
            )))
        } else {
            Ok(())
        }
    };
    let a = |i: usize| args[i].as_str();
    Ok(match method {
        "lookup" => {
            keyed()?;
            want(1..=1)?;
            format!("(({n}__leaf_t *)bpf_map_lookup_elem(&{n}, {}))", a(0))
        }
        "lookup_or_try_init" | "lookup_or_init" => {
            keyed()?;
            want(2..=2)?;
            format!(
                "(({n}__leaf_t *)__pcn_lookup_or_init(&{n}, {}, {}))",
                a(0),
                a(1)
            )
        }
        "update" | "insert" => {
            keyed()?;
            want(2..=2)?;
            let flag = if method == "update" {
                "BPF_ANY"
            } else {
                "BPF_NOEXIST"
            };
            format!("bpf_map_update_elem(&{n}, {}, {}, {flag})", a(0), a(1))
        }
        "delete" => {
            keyed()?;
            want(1..=1)?;
            format!("bpf_map_delete_elem(&{n}, {})", a(0))
        }
        "increment" | "atomic_increment" => {
            keyed()?;
            want(1..=2)?;
            let inc = args.get(1).map_or("1", |s| s.as_str());
            format!(
                "__pcn_increment(&{n}, {n}__key_t, {n}__leaf_t, {}, {inc}, {})",
                a(0),
                (method == "atomic_increment") as u8
            )
        }
        "push" => {
            if !t.queue {
                return Err(Bad(format!("`{n}.push`: `{n}` is not a queue or stack")));
            }
            want(1..=2)?;
            let flags = args.get(1).map_or("0", |s| s.as_str());
            format!("bpf_map_push_elem(&{n}, {}, {flags})", a(0))
        }
        "pop" | "peek" => {
            if !t.queue {
                return Err(Bad(format!(
                    "`{n}.{method}`: `{n}` is not a queue or stack"
                )));
            }
            want(1..=1)?;
            format!("bpf_map_{method}_elem(&{n}, {})", a(0))
        }
        _ => unreachable!("methods are checked against METHODS"),
    })
}

/// `#include <uapi/linux/X.h>` -> `#include <linux/X.h>`.
fn translate_includes(src: &str) -> String {
    src.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("#include") && t.contains("<uapi/linux/") {
                l.replacen("<uapi/linux/", "<linux/", 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if src.ends_with('\n') { "\n" } else { "" }
}

fn has_handle_rx(src: &str) -> bool {
    let code = code_mask(src);
    let found = idents(src, &code).any(|(_, id)| id == "handle_rx");
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = r#"#include <uapi/linux/ip.h>
// BPF_TABLE in a comment is not a table
BPF_TABLE("hash", struct key, u64, counts, 1024);
BPF_ARRAY(totals, u64, 4);
BPF_QUEUE(events, struct key, 64);
struct key { u32 a; };
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
  struct key k = {};
  u64 zero = 0;
  u64 *v = counts.lookup_or_try_init(&k, &zero);
  totals.increment(0);
  events.push(&k, 0);
  if (counts.lookup(&k)) counts.update(&k,
      &zero);
  return RX_OK;
}
"#;

    #[test]
    fn lines_keep_their_numbers_and_tables_become_maps() {
        let t = translate(PROG, Direction::Ingress, false).unwrap();
        let body = &t[t.find("#line 1 \"prog.c\"\n").unwrap() + 17..];
        let user: Vec<&str> = body.lines().collect();
        // Each user line is one line of the translation.
        assert!(user[0].contains("#include <linux/ip.h>"), "{}", user[0]);
        assert!(user[1].contains("BPF_TABLE in a comment"), "{}", user[1]);
        assert!(
            user[2].contains("BPF_MAP_TYPE_HASH")
                && user[2].contains("__type(key, struct key)")
                && user[2].contains("} counts SEC(\".maps\")")
                && user[2].contains("typedef u64 counts__leaf_t;"),
            "{}",
            user[2]
        );
        assert!(
            user[3].contains("BPF_MAP_TYPE_ARRAY") && user[3].contains("__type(key, __u32)"),
            "{}",
            user[3]
        );
        assert!(
            user[4].contains("BPF_MAP_TYPE_QUEUE") && !user[4].contains("__type(key"),
            "{}",
            user[4]
        );
        assert!(user[9].contains("__pcn_lookup_or_init(&counts, &k, &zero)"));
        assert!(user[10].contains("__pcn_increment(&totals, totals__key_t"));
        assert!(user[11].contains("bpf_map_push_elem(&events, &k, 0)"));
        assert!(user[12].contains("bpf_map_lookup_elem(&counts, &k)"));
        // A call over two lines is written on the first; the second keeps the rest.
        assert!(user[12].contains("bpf_map_update_elem(&counts, &k, &zero, BPF_ANY)"));
        assert_eq!(user[13].trim(), ";");
        assert!(user[14].contains("return RX_OK;"));
        assert!(t.contains("SEC(\"tcx/ingress\")"));
        assert!(t.contains("#define POLYCUBE_PROGRAM_TYPE 0"));
        let e = translate(PROG, Direction::Egress, false).unwrap();
        assert!(e.contains("SEC(\"tcx/egress\")") && e.contains("POLYCUBE_PROGRAM_TYPE 1"));
        let x = translate(PROG, Direction::Ingress, true).unwrap();
        assert!(
            x.contains("SEC(\"xdp\")")
                && x.contains("#define CTXTYPE xdp_md")
                && x.contains("XDP_DROP : XDP_PASS"),
            "{x}"
        );
        let e = translate(PROG, Direction::Egress, true).unwrap_err();
        assert!(e.to_string().contains("XDP runs on ingress only"), "{e}");
    }

    #[test]
    fn unsupported_constructs_name_their_line() {
        let cases = [
            ("BPF_TABLE(\"lpm_trie\", u32, u32, t, 4);\n", 1, "lpm_trie"),
            (
                "\nBPF_TABLE(\"extern\", u32, u32, t, 4);\n",
                2,
                "declares no table `t`",
            ),
            ("\n\nreturn RX_REDIRECT;\n", 3, "RX_REDIRECT"),
            ("x;\npcn_pkt_redirect(ctx, md, 1);\n", 2, "pcn_pkt_redirect"),
            (
                "BPF_HASH(h, u32, u32);\n\nh.perf_submit(ctx, 1);\n",
                3,
                "h.perf_submit",
            ),
            (
                "BPF_QUEUE(q, u32, 4);\nq.lookup(&k);\n",
                2,
                "queue or stack",
            ),
            ("BPF_HASH(h);\nBPF_HASH(h);\n", 2, "declared twice"),
        ];
        for (src, line, what) in cases {
            let e = translate(src, Direction::Ingress, false)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("line {line}:")) && e.contains(what),
                "{src:?}: {e}"
            );
        }
        let e = translate(PROG, Direction::Both, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one direction"), "{e}");
        let e = translate("BPF_HASH(h);\n", Direction::Ingress, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `handle_rx`"), "{e}");
    }

    #[test]
    fn the_dialect_is_recognised_by_identifiers_in_code_only() {
        assert!(is_bcc(PROG));
        assert!(!is_bcc(
            "// BPF_TABLE(\"hash\", ...)\nSEC(\"tc\") int f(void *c) { return 0; }"
        ));
        assert!(!is_bcc("char *s = \"BPF_HASH\";"));
        assert!(is_bcc("u64 t = pcn_get_time_epoch();"));
    }
}
