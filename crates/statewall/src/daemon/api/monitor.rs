//! Monitor REST: the native paths under `/api/v1/monitor`, and what the Polycube Dynmon
//! paths ([`crate::daemon::polycube`]) show of the config's monitors.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/api/v1/monitor` | every instance, with counters and the last read's durations |
//! | GET | `/api/v1/monitor/{name}` | one instance |
//! | POST | `/api/v1/monitor/{name}/read` | take a window: every session and packet record, IPv4 and IPv6 |
//!
//! Every read takes a window: what it returns is gone from the kernel.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use statewall_common::monitor::{PktRec, SessKey};

use crate::{
    daemon::api::call::{off_workers, ApiError},
    daemon::state::Shared,
    monitor::{ip, Direction, Kind, Monitor, Window},
};

type ApiResult = Result<Response, ApiError>;

/// Adds the monitor routes.
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    let mut r = r.route("/api/v1/monitor", get(list));
    for slash in ["", "/"] {
        r = r
            .route(&format!("/api/v1/monitor/{{name}}{slash}"), get(show))
            .route(&format!("/api/v1/monitor/{{name}}/read{slash}"), post(read));
    }
    r
}

pub(crate) fn not_found(name: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no monitor {name:?}"))
}

fn view(m: &Monitor) -> Value {
    let counters: serde_json::Map<String, Value> = m
        .counters()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "name": m.spec.name,
        "kind": m.spec.kind,
        "interfaces": m.spec.interfaces,
        "netns": m.spec.netns,
        "direction": m.spec.direction,
        "extraction": m.spec.extraction,
        "sessions": m.spec.sessions(),
        "packets_per_session": (m.spec.kind == Kind::Ddos).then(|| m.spec.per_session()),
        "packets_total": (m.spec.kind == Kind::Ddos).then(|| m.spec.total()),
        "counters": counters,
        "windows": m.reads,
        "last_sessions": m.last_sessions,
        "top_sessions": m.last_top.iter().map(|(k, n)| {
            let mut v = key_json(k);
            v["packets"] = json!(n);
            v
        }).collect::<Vec<_>>(),
        "last_grace_us": m.last.0.as_micros() as u64,
        "last_read_us": m.last.1.as_micros() as u64,
    })
}

async fn list(State(s): State<Arc<Shared>>) -> ApiResult {
    let g = s.monitors.lock().unwrap_or_else(|p| p.into_inner());
    let v: Vec<Value> = g.by_name.values().map(view).collect();
    Ok(Json(v).into_response())
}

async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let g = s.monitors.lock().unwrap_or_else(|p| p.into_inner());
    let m = g.by_name.get(&name).ok_or_else(|| not_found(&name))?;
    Ok(Json(view(m)).into_response())
}

/// Takes a window of monitor `name` (off the async tasks: the grace period sleeps).
async fn take<T: Send + 'static>(
    s: Arc<Shared>,
    name: String,
    f: impl FnOnce(&Monitor, &Window) -> T + Send + 'static,
) -> Result<T, ApiError> {
    off_workers(move || {
        let mut g = s.monitors.lock().unwrap_or_else(|p| p.into_inner());
        let m = g.by_name.get_mut(&name).ok_or_else(|| not_found(&name))?;
        let w = m.read().map_err(ApiError::internal)?;
        Ok(f(m, &w))
    })
    .await
}

async fn read(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let v = take(s, name, window_json).await?;
    Ok(Json(v).into_response())
}

fn key_json(k: &SessKey) -> Value {
    json!({
        "src": ip(k.family, &k.saddr),
        "sport": k.sport,
        "dst": ip(k.family, &k.daddr),
        "dport": k.dport,
        "proto": k.proto,
    })
}

fn rec_json(r: &PktRec) -> Value {
    json!({
        "session": key_json(&r.key),
        "timestamp": r.ts,
        "ip_flags_frag": r.ip_flags_frag,
        "tcp_flags": r.tcp_flags,
        "tcp_win": r.tcp_win,
        "udp_size": r.udp_size,
        "icmp_type": r.icmp_type,
        "len": r.pkt_len,
        "tcp_payload": r.tcp_payload,
        "tcp_ack": r.tcp_ack,
    })
}

/// A window in the native shape (every family, every field).
pub fn window_json(m: &Monitor, w: &Window) -> Value {
    let sessions: Vec<Value> = match m.spec.kind {
        Kind::Ddos => w
            .ddos_sessions
            .iter()
            .map(|s| {
                let mut v = key_json(&s.key);
                v["server"] = json!(ip(s.key.family, &s.server));
                v["n_packets"] = json!(s.n_packets);
                v
            })
            .collect(),
        Kind::Crypto => w
            .crypto
            .iter()
            .map(|s| {
                let t = &s.total;
                let mut v = key_json(&s.key);
                v["server"] = json!(ip(s.key.family, &t.server));
                v["method"] = json!(t.method);
                v["n_packets"] = json!(t.n_packets);
                v["n_packets_reverse"] = json!(t.n_packets_reverse);
                v["n_bytes"] = json!(t.n_bytes);
                v["n_bytes_reverse"] = json!(t.n_bytes_reverse);
                v["start_timestamp"] = json!(t.start_ts);
                v["alive_timestamp"] = json!(t.alive_ts);
                v
            })
            .collect(),
    };
    json!({
        "name": m.spec.name,
        "kind": m.spec.kind,
        "window": w.n,
        "grace_us": w.grace.as_micros() as u64,
        "read_us": w.read.as_micros() as u64,
        "sessions": sessions,
        "packets": w.packets.iter().map(rec_json).collect::<Vec<_>>(),
    })
}

/// A monitor of the config as Dynmon shows it (`GET /polycube/v1/dynmon/{name}`), if
/// there is one by this name.
pub fn pc_show(s: &Shared, name: &str) -> Option<Value> {
    let g = s.monitors.lock().unwrap_or_else(|p| p.into_inner());
    let m = g.by_name.get(name)?;
    let metrics: Vec<&str> = metric_names(m.spec.kind).to_vec();
    let path = json!({"name": m.spec.name, "metric-configs": metrics.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()});
    let (ing, eg) = match m.spec.direction {
        Direction::Egress => (Value::Null, path),
        _ => (path, Value::Null),
    };
    Some(json!({
        "name": m.spec.name,
        "service-name": "dynmon",
        "type": "TC",
        "parent": m.spec.interfaces.first().cloned().unwrap_or_default(),
        "dataplane-config": {"ingress-path": ing, "egress-path": eg},
    }))
}

/// Dynmon's metric names of the built-in monitors, in their order.
pub fn metric_names(k: Kind) -> &'static [&'static str] {
    match k {
        Kind::Ddos => &["PACKET_BUFFER_DDOS", "SESSIONS_TRACKED_DDOS"],
        Kind::Crypto => &["SESSIONS_TRACKED_CRYPTO"],
    }
}

/// An IPv4 address as Dynmon encodes it: the 4 packet bytes read as a little-endian u32.
pub fn v4_le(a: &[u8; 16]) -> u32 {
    u32::from_le_bytes([a[0], a[1], a[2], a[3]])
}

/// A port as Dynmon encodes it: the 2 packet bytes (network order) read as a little-endian
/// u16, so that `ntohs` gives the port back.
pub fn port_le(p: u16) -> u16 {
    p.swap_bytes()
}

fn pc_key(k: &SessKey) -> Value {
    json!({
        "saddr": v4_le(&k.saddr),
        "daddr": v4_le(&k.daddr),
        "sport": port_le(k.sport),
        "dport": port_le(k.dport),
        "proto": k.proto,
    })
}

/// Whether a session goes into the Dynmon shape (IPv4; TCP, UDP or ICMP).
fn pc_wants(k: &SessKey) -> bool {
    k.family == 4 && matches!(k.proto, 1 | 6 | 17)
}

/// A window in Dynmon's shape.
pub fn polycube_metrics(m: &Monitor, w: &Window) -> Value {
    let now_us = crate::xfsm::doors::unix_now() * 1e6;
    let ts = now_us as u64;
    let names = metric_names(m.spec.kind);
    let metrics: Vec<Value> = match m.spec.kind {
        Kind::Ddos => {
            let pkts: Vec<Value> = w
                .packets
                .iter()
                .filter(|r| pc_wants(&r.key))
                .map(|r| {
                    json!({
                        "id": pc_key(&r.key),
                        "timestamp": r.ts,
                        "ipFlagsFrag": r.ip_flags_frag,
                        "tcpFlags": r.tcp_flags,
                        "tcpWin": r.tcp_win,
                        "udpSize": r.udp_size,
                        "icmpType": r.icmp_type,
                    })
                })
                .collect();
            let sess: Vec<Value> = w
                .ddos_sessions
                .iter()
                .filter(|s| pc_wants(&s.key))
                .map(|s| {
                    json!({
                        "key": pc_key(&s.key),
                        "value": {"server_ip": v4_le(&s.server), "n_packets": s.n_packets},
                    })
                })
                .collect();
            vec![
                json!({"name": names[0], "value": pkts, "timestamp": ts}),
                json!({"name": names[1], "value": sess, "timestamp": ts}),
            ]
        }
        Kind::Crypto => {
            let sess: Vec<Value> = w
                .crypto
                .iter()
                .filter(|s| pc_wants(&s.key))
                .map(|s| {
                    let per: Vec<Value> = s
                        .per_cpu
                        .iter()
                        .map(|v| {
                            json!({
                                "n_packets": v.n_packets,
                                "n_packets_reverse": v.n_packets_reverse,
                                "n_bytes": v.n_bytes,
                                "n_bytes_reverse": v.n_bytes_reverse,
                                "start_timestamp": v.start_ts,
                                "alive_timestamp": v.alive_ts,
                                "method": v.method,
                                "server_ip": v4_le(&v.server),
                            })
                        })
                        .collect();
                    json!({"key": pc_key(&s.key), "value": per})
                })
                .collect();
            vec![json!({"name": names[0], "value": sess, "timestamp": ts})]
        }
    };
    let (ing, eg) = match m.spec.direction {
        Direction::Egress => (Vec::new(), metrics),
        _ => (metrics, Vec::new()),
    };
    json!({"ingress-metrics": ing, "egress-metrics": eg})
}

/// Takes a window of a monitor of the config, in Dynmon's shape
/// (`GET /polycube/v1/dynmon/{name}/metrics`).
pub async fn pc_metrics(s: Arc<Shared>, name: String) -> ApiResult {
    let v = take(s, name, polycube_metrics).await?;
    Ok(Json(v).into_response())
}
