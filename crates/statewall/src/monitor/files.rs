//! Files of `statewall monitor extract`: the formats the original monitors' extraction
//! scripts wrote (COMPAT.md section 5), so that analysis pipelines keep working, and a
//! tidy format (one CSV row per packet or session, with a header) for new users.
//!
//! Compat files hold IPv4 sessions of TCP, UDP and ICMP only (what the original consumers
//! accept); the tidy files hold everything. Input: a window as `POST
//! /api/v1/monitor/{name}/read` returns it.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The original monitors' files (CSV, or JSON with `--json`).
    Compat,
    /// One CSV row per packet (ddos) or session (crypto), with a header.
    Tidy,
}

/// The crypto `results.csv` header, verbatim.
pub const CRYPTO_HEADER: &str = "Timestamp (Unix ns), IP Client, IP Server, Port Client, Port Server, Protocol, Server Method, Packets_server, Packets_client, Bits_ server, Bits_ client, Duration (ns), Packets_server / Seconds, Packets_client / Seconds, Bits_server / Seconds, Bits_client / Seconds, Bits_server / Packets_server, Bits_client / Packets_client, Packets_server / Packets_client, Bits_server / Bits_client";

const DDOS_TIDY_HEADER: &str = "window,timestamp_ns,family,client,client_port,server,server_port,proto,ip_flags_frag,tcp_flags,tcp_win,udp_size,icmp_type,len,tcp_payload,tcp_ack";
const CRYPTO_TIDY_HEADER: &str = "window,family,client,client_port,server,server_port,proto,method,packets_client,packets_server,bytes_client,bytes_server,start_ns,alive_ns";

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn proto_name(p: u64) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "ICMPv6".into(),
        n => n.to_string(),
    }
}

/// A float as Python's `str()` writes it (`3.0`, `0.25`).
pub fn py_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// One session end: (address, port).
type End = (String, u64);

/// (client, server) of a session JSON object (`src`/`dst` are the key's order).
fn ends(sess: &Value) -> (End, End) {
    let a = (s(&sess["src"]), u(&sess["sport"]));
    let b = (s(&sess["dst"]), u(&sess["dport"]));
    if s(&sess["server"]) == a.0 && a.0 != b.0 {
        (b, a)
    } else if a.0 == b.0 {
        // Same address on both ends: the lower port is the server.
        if a.1 <= b.1 {
            (b, a)
        } else {
            (a, b)
        }
    } else {
        (a, b)
    }
}

fn compat_session(sess: &Value) -> bool {
    !s(&sess["src"]).contains(':') && matches!(u(&sess["proto"]), 1 | 6 | 17)
}

fn same_key(a: &Value, b: &Value) -> bool {
    ["src", "sport", "dst", "dport", "proto"]
        .iter()
        .all(|k| a[k] == b[k])
}

/// A ratio, or `-` when the denominator is zero.
fn ratio(a: f64, b: f64) -> Value {
    if b == 0.0 {
        json!("-")
    } else {
        json!(a / b)
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Number(n) if n.is_f64() => py_float(n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

/// The 13 derived crypto numbers (COMPAT.md), then (client, server).
fn crypto_row(sess: &Value) -> (Vec<Value>, End, End) {
    let (cli, srv) = ends(sess);
    let server_is_first = s(&sess["server"]) == s(&sess["src"]);
    let (pf, pr, bf, br) = (
        u(&sess["n_packets"]),
        u(&sess["n_packets_reverse"]),
        u(&sess["n_bytes"]),
        u(&sess["n_bytes_reverse"]),
    );
    let (ps, pc, bs, bc) = if server_is_first {
        (pf, pr, bf * 8, br * 8)
    } else {
        (pr, pf, br * 8, bf * 8)
    };
    let dur = u(&sess["alive_timestamp"]).saturating_sub(u(&sess["start_timestamp"]));
    let secs = dur as f64 / 1e9;
    let (ps_f, pc_f, bs_f, bc_f) = (ps as f64, pc as f64, bs as f64, bc as f64);
    let v = vec![
        json!(ps),
        json!(pc),
        json!(bs),
        json!(bc),
        json!(dur),
        ratio(ps_f, secs),
        ratio(pc_f, secs),
        ratio(bs_f, secs),
        ratio(bc_f, secs),
        ratio(bs_f, ps_f),
        ratio(bc_f, pc_f),
        ratio(ps_f, pc_f),
        ratio(bs_f, bc_f),
    ];
    (v, cli, srv)
}

/// Appends `text` to `path`, after `header` when the file is new. `sep` goes between the
/// header and `text` (the compat CSV has no newline at the end, so its lines start with
/// one; the tidy ones end with one).
fn append(path: &Path, header: &str, sep: &str, text: &str) -> std::io::Result<()> {
    let mut all = String::new();
    if !path.exists() {
        all.push_str(header);
        all.push_str(sep);
    }
    all.push_str(text);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(all.as_bytes())
}

/// Writes one window into `dir`; `iter` numbers the files of this extraction (from 0).
/// Returns the files written or appended to.
pub fn write_window(
    dir: &Path,
    window: &Value,
    iter: u64,
    format: Format,
    json_out: bool,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let kind = s(&window["kind"]);
    let sessions = window["sessions"].as_array().cloned().unwrap_or_default();
    let packets = window["packets"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    match (kind.as_str(), format) {
        ("ddos", Format::Compat) => {
            // Packets grouped by session, sessions in the order of their first packet.
            let mut flows: Vec<(Value, Vec<&Value>)> = Vec::new();
            for p in &packets {
                let k = &p["session"];
                match flows.iter_mut().find(|(s, _)| same_key(s, k)) {
                    Some((_, v)) => v.push(p),
                    None => {
                        let sess = sessions
                            .iter()
                            .find(|s| same_key(s, k))
                            .cloned()
                            .unwrap_or_else(|| k.clone());
                        flows.push((sess, vec![p]));
                    }
                }
            }
            flows.retain(|(s, _)| compat_session(s));
            if json_out {
                let v: Vec<Value> = flows
                    .iter()
                    .map(|(sess, pk)| {
                        let (c, sv) = ends(sess);
                        json!({
                            "id": [c.0, c.1, sv.0, sv.1, proto_name(u(&sess["proto"]))],
                            "packets": pk.iter().map(|p| json!([
                                u(&p["timestamp"]) as f64 / 1e9,
                                u(&p["ip_flags_frag"]),
                                u(&p["tcp_flags"]),
                                u(&p["tcp_win"]),
                                u(&p["udp_size"]),
                                u(&p["icmp_type"]),
                            ])).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let path = dir.join(format!("result_{iter}.json"));
                std::fs::write(&path, serde_json::to_string_pretty(&v)?)?;
                out.push(path);
            } else {
                for (sess, pk) in &flows {
                    let (c, sv) = ends(sess);
                    let name = format!(
                        "{}-{}___{}-{}___{}-iter{iter}.csv",
                        c.0,
                        c.1,
                        sv.0,
                        sv.1,
                        proto_name(u(&sess["proto"]))
                    );
                    let row = |label: &str, f: &dyn Fn(&Value) -> u64| {
                        let vals: Vec<String> = pk.iter().map(|p| f(p).to_string()).collect();
                        format!("{label},\t{}", vals.join(","))
                    };
                    let rows = [
                        row("Seconds     ", &|p| u(&p["timestamp"]) / 1_000_000_000),
                        row("Ns          ", &|p| u(&p["timestamp"]) % 1_000_000_000),
                        row("IPv4 flags  ", &|p| u(&p["ip_flags_frag"])),
                        row("TCP flags   ", &|p| u(&p["tcp_flags"])),
                        row("TCP Win     ", &|p| u(&p["tcp_win"])),
                        row("UDP len     ", &|p| u(&p["udp_size"])),
                        row("ICMP type   ", &|p| u(&p["icmp_type"])),
                    ];
                    let path = dir.join(name);
                    std::fs::write(&path, rows.join("\n"))?;
                    out.push(path);
                }
            }
        }
        ("crypto", Format::Compat) => {
            let rows: Vec<(Vec<Value>, End, End, &Value)> = sessions
                .iter()
                .filter(|s| compat_session(s))
                .map(|s| {
                    let (v, c, sv) = crypto_row(s);
                    (v, c, sv, s)
                })
                .collect();
            if json_out {
                let v: Vec<Value> = rows
                    .iter()
                    .map(|(v, c, sv, sess)| {
                        let mut value =
                            vec![sess["alive_timestamp"].clone(), sess["method"].clone()];
                        value.extend(v.iter().cloned());
                        json!({
                            "id": [c.0, sv.0, c.1, sv.1, proto_name(u(&sess["proto"]))],
                            "value": value,
                        })
                    })
                    .collect();
                let path = dir.join(format!("result_{iter}.json"));
                std::fs::write(&path, serde_json::to_string_pretty(&v)?)?;
                out.push(path);
            } else {
                let path = dir.join("results.csv");
                let mut text = String::new();
                for (v, c, sv, sess) in &rows {
                    let mut cells = vec![
                        u(&sess["alive_timestamp"]).to_string(),
                        c.0.clone(),
                        sv.0.clone(),
                        c.1.to_string(),
                        sv.1.to_string(),
                        proto_name(u(&sess["proto"])),
                        u(&sess["method"]).to_string(),
                    ];
                    cells.extend(v.iter().map(cell));
                    text.push('\n');
                    text.push_str(&cells.join(", "));
                }
                append(&path, CRYPTO_HEADER, "", &text)?;
                out.push(path);
            }
        }
        ("ddos", Format::Tidy) => {
            let path = dir.join("packets.csv");
            let mut text = String::new();
            for p in &packets {
                let k = &p["session"];
                let sess = sessions.iter().find(|s| same_key(s, k)).unwrap_or(k);
                let (c, sv) = ends(sess);
                let fam = if c.0.contains(':') { 6 } else { 4 };
                text.push_str(&format!(
                    "{},{},{fam},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                    u(&window["window"]),
                    u(&p["timestamp"]),
                    c.0,
                    c.1,
                    sv.0,
                    sv.1,
                    proto_name(u(&k["proto"])),
                    u(&p["ip_flags_frag"]),
                    u(&p["tcp_flags"]),
                    u(&p["tcp_win"]),
                    u(&p["udp_size"]),
                    u(&p["icmp_type"]),
                    u(&p["len"]),
                    u(&p["tcp_payload"]),
                    u(&p["tcp_ack"]),
                ));
            }
            append(&path, DDOS_TIDY_HEADER, "\n", &text)?;
            out.push(path);
        }
        ("crypto", Format::Tidy) => {
            let path = dir.join("sessions.csv");
            let mut text = String::new();
            for sess in &sessions {
                let (c, sv) = ends(sess);
                let first_is_client = s(&sess["src"]) == c.0 && u(&sess["sport"]) == c.1;
                let (pc, ps, bc, bs) = if first_is_client {
                    (
                        u(&sess["n_packets"]),
                        u(&sess["n_packets_reverse"]),
                        u(&sess["n_bytes"]),
                        u(&sess["n_bytes_reverse"]),
                    )
                } else {
                    (
                        u(&sess["n_packets_reverse"]),
                        u(&sess["n_packets"]),
                        u(&sess["n_bytes_reverse"]),
                        u(&sess["n_bytes"]),
                    )
                };
                let fam = if c.0.contains(':') { 6 } else { 4 };
                text.push_str(&format!(
                    "{},{fam},{},{},{},{},{},{},{pc},{ps},{bc},{bs},{},{}\n",
                    u(&window["window"]),
                    c.0,
                    c.1,
                    sv.0,
                    sv.1,
                    proto_name(u(&sess["proto"])),
                    u(&sess["method"]),
                    u(&sess["start_timestamp"]),
                    u(&sess["alive_timestamp"]),
                ));
            }
            append(&path, CRYPTO_TIDY_HEADER, "\n", &text)?;
            out.push(path);
        }
        (k, _) => {
            return Err(std::io::Error::other(format!("unknown monitor kind {k:?}")));
        }
    }
    Ok(out)
}
