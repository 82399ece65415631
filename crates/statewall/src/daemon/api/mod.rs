//! The REST API, served on the Unix socket (and optionally TCP with a bearer token).
//!
//! Endpoints (all JSON):
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/api/v1/status` | interfaces, attached programs in run order, links, maps and their fill |
//! | POST | `/api/v1/reload` | re-read the config file; 400 with the error and nothing changed if invalid |
//! | GET | `/api/v1/gate` | protected ports and gate counters |
//! | GET | `/api/v1/gate/grants` | live grants with seconds left |
//! | POST | `/api/v1/gate/grants` | `{"addr", "proto", "port", "seconds"}`: let a source in |
//! | DELETE | `/api/v1/gate/grants?addr=&proto=&port=` | revoke a grant |
//! | GET | `/api/v1/doors` | knock doors: open sources, sources part-way through, lockouts |
//! | POST | `/api/v1/doors/{door}/open` | `{"source", "seconds"?}`: open a door by hand |
//! | POST | `/api/v1/doors/{door}/close` | `{"source"}`: close a door by hand |
//! | GET | `/api/v1/xfsm` | xfsm stage counters, per-transition counters, `[[xfsm]]` machines and their states |
//! | GET | `/api/v1/spa` | SPA: kernel counters, verdicts, replay cache size, actions and stanzas |
//! | GET | `/api/v1/events` (alias `/api/v1/xfsm/events`) | door, SPA and firewall LOG events as server-sent events (`data: {json}`) |
//!
//! Bodies are parsed without looking at `Content-Type` (clients that send none are served);
//! a body that does not parse gets a 400 naming the field. The `/metrics` endpoint lives on
//! its own listener ([`crate::daemon::metrics`]).
//!
//! Each room serves its own paths: this file the status, the gate, the doors' list, the xfsm
//! machines, SPA and the events; `POST /api/v1/reload` is [`crate::daemon::load`]'s, the doors'
//! open and close [`crate::daemon::doors`]'s, and the route files below (firewall, detect,
//! monitors, dynamic monitors) their own. The daemon's top ([`crate::daemon::router`])
//! composes them, with the Polycube paths that join several rooms: a new route file is
//! added there, not to [`routes`].

pub mod call;
pub mod detect;
pub mod dynmon;
pub mod firewall;
pub mod grant;
pub mod monitor;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use statewall_common::maps::{addr_ip, key_addr};
use statewall_common::maps::{GrantKey, GRANT_BY_API};

use crate::daemon::state::Shared;

pub use call::{parse_body, ApiError};
pub use grant::GrantRequest;

type ApiResult = Result<Response, ApiError>;

/// Refuses what a web browser could send cross-site: any request with an `Origin` header,
/// and bodies typed as HTML forms or plain text (sent without a CORS preflight). API
/// clients send `application/json` or, like Polycube's scripts, no Content-Type at all.
pub async fn refuse_browsers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::{CONTENT_TYPE, ORIGIN};
    if req.headers().contains_key(ORIGIN) {
        return ApiError(
            StatusCode::FORBIDDEN,
            "requests from web pages (with an Origin header) are refused".into(),
        )
        .into_response();
    }
    if let Some(ct) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let ct = ct.to_ascii_lowercase();
        if [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ]
        .iter()
        .any(|t| ct.starts_with(t))
        {
            return ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {ct} is refused: send application/json (or no Content-Type)"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Adds the native API's own routes (the rooms' routes, the reload and the doors' open and
/// close are added beside them where the daemon composes its router:
/// [`crate::daemon::router`]).
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    r.route("/api/v1/status", get(status))
        .route("/api/v1/gate", get(gate))
        .route(
            "/api/v1/gate/grants",
            get(grants).post(grant).delete(revoke),
        )
        .route("/api/v1/gate/flows", get(flows))
        .route("/api/v1/doors", get(doors))
        .route("/api/v1/xfsm", get(xfsm))
        .route("/api/v1/xfsm/machines/{name}", get(xfsm_machine))
        .route("/api/v1/spa", get(spa))
        .route("/api/v1/events", get(xfsm_events))
        .route("/api/v1/xfsm/events", get(xfsm_events))
}

/// The composed routes made a router: 404 with a JSON error for any other path, browsers
/// refused, each response timed.
pub fn finish_router(r: Router<Arc<Shared>>, shared: Arc<Shared>) -> Router {
    r.fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::middleware::from_fn(refuse_browsers))
        .layer(axum::middleware::from_fn(server_timing))
        .with_state(shared)
}

/// Says how long the daemon took for each request (from the request read to the response
/// made: the handler's work, a durable write included), as `Server-Timing: app;dur=MS`,
/// followed by the phases the handler timed ([`call::Phases`]), if any.
pub async fn server_timing(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let t0 = std::time::Instant::now();
    let mut res = next.run(req).await;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut v = format!("app;dur={ms:.3}");
    if let Some(p) = res.extensions_mut().remove::<call::Phases>() {
        for (name, ms) in p.done() {
            v.push_str(&format!(", {name};dur={ms:.3}"));
        }
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
        res.headers_mut().insert("server-timing", v);
    }
    res
}

async fn status(State(s): State<Arc<Shared>>) -> ApiResult {
    let mut st = crate::daemon::state::status(&s.lock());
    st.cluster = s.cluster.as_ref().map(|l| l.status());
    let dyn_names: Vec<String> = s
        .dynmon
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .by_name
        .keys()
        .cloned()
        .collect();
    st.names_against_the_rule.extend(
        dyn_names
            .into_iter()
            .filter(|n| crate::types::check_name(n).is_err())
            .map(|name| crate::daemon::state::NamedObject {
                kind: "dynmon",
                name,
            }),
    );
    Ok(Json(st).into_response())
}

async fn gate(State(s): State<Arc<Shared>>) -> ApiResult {
    let g = s.lock();
    let protected: Vec<String> = g
        .engine
        .protected()
        .map_err(ApiError::internal)?
        .iter()
        .map(|p| p.to_string())
        .collect();
    let counters: serde_json::Map<String, serde_json::Value> = g
        .engine
        .gate_counters()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    Ok(Json(json!({"protected": protected, "counters": counters})).into_response())
}

/// A grant as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GrantView {
    /// Source address.
    pub addr: IpAddr,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Destination port.
    pub port: u16,
    /// Seconds left (0 = expired, awaiting the sweeper).
    pub seconds_left: f64,
}

/// Key for (addr, proto, port).
pub fn grant_key(addr: IpAddr, proto: &str, port: u16) -> Result<GrantKey, ApiError> {
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        other => return Err(ApiError::bad(format!("proto: {other:?} is not tcp or udp"))),
    };
    Ok(statewall_common::maps::key_for(addr, proto, port))
}

async fn grants(State(s): State<Arc<Shared>>) -> ApiResult {
    let g = s.lock();
    let now = g.engine.kernel_now();
    let v: Vec<GrantView> = g
        .engine
        .grants()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(k, v)| GrantView {
            addr: key_addr(&k),
            proto: crate::config::proto_name(k.proto).into(),
            port: k.port,
            seconds_left: v.expires_ns.saturating_sub(now) as f64 / 1e9,
        })
        .collect();
    Ok(Json(v).into_response())
}

/// A flow opened under a grant, as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FlowView {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// `tcp` or `udp`.
    pub proto: String,
    /// True once a FIN or RST was seen.
    pub closing: bool,
    /// Seconds until it idles out (0 = idle, awaiting the sweeper).
    pub seconds_left: f64,
}

async fn flows(State(s): State<Arc<Shared>>) -> ApiResult {
    let g = s.lock();
    let now = g.engine.kernel_now();
    let v: Vec<FlowView> = g
        .engine
        .flows()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(k, v)| FlowView {
            src: SocketAddr::new(addr_ip(k.family, &k.saddr), k.sport),
            dst: SocketAddr::new(addr_ip(k.family, &k.daddr), k.dport),
            proto: crate::config::proto_name(k.proto).into(),
            closing: v.closing != 0,
            seconds_left: v.expires_ns.saturating_sub(now) as f64 / 1e9,
        })
        .collect();
    Ok(Json(v).into_response())
}

async fn grant(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let r: GrantRequest = parse_body(&body)?;
    if r.port == 0 {
        return Err(ApiError::bad("port: must be 1-65535"));
    }
    if r.seconds == 0 || r.seconds > 7 * 86400 {
        return Err(ApiError::bad("seconds: must be 1-604800"));
    }
    let key = grant_key(r.addr, &r.proto, r.port)?;
    let mut g = s.lock();
    // (One lookup; the whole list only for the error.)
    if !g
        .engine
        .is_protected(key.proto, r.port)
        .map_err(ApiError::internal)?
    {
        let protected = g.engine.protected().map_err(ApiError::internal)?;
        let list: Vec<String> = protected.iter().map(|p| p.to_string()).collect();
        return Err(ApiError::bad(format!(
            "port: {}/{} is not protected, a grant would do nothing (protected: [{}])",
            r.proto.to_ascii_lowercase(),
            r.port,
            list.join(", ")
        )));
    }
    let until = g
        .engine
        .grant(key, r.seconds, GRANT_BY_API)
        .map_err(|e| match e {
            crate::engine::EngineError::TableFull { .. } => {
                ApiError(StatusCode::CONFLICT, e.to_string())
            }
            e => ApiError::internal(e),
        })?;
    if let Some(l) = &s.cluster {
        l.share(&key, until, g.engine.kernel_now(), "api", "");
    }
    tracing::info!(addr = %r.addr, proto = %r.proto, port = r.port, seconds = r.seconds, "grant added by API");
    Ok((StatusCode::CREATED, Json(json!({"granted": true}))).into_response())
}

/// Query of `DELETE /api/v1/gate/grants`.
#[derive(Deserialize)]
pub struct RevokeQuery {
    addr: IpAddr,
    proto: String,
    port: u16,
}

async fn revoke(
    State(s): State<Arc<Shared>>,
    q: Result<Query<RevokeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("query: {}", e.body_text())))?;
    let key = grant_key(q.addr, &q.proto, q.port)?;
    let mut g = s.lock();
    let here = g.engine.revoke(&key).map_err(ApiError::internal)?;
    // In a cluster the grant may live on other hosts only: revoked everywhere.
    if let Some(l) = &s.cluster {
        l.unshare(&key);
    }
    if here || s.cluster.is_some() {
        Ok(Json(json!({"revoked": here, "cluster": s.cluster.is_some()})).into_response())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no grant for {} {}/{}", q.addr, q.proto, q.port),
        ))
    }
}

/// A state-table key as JSON: its addresses, ports and protocol, as many as `scope` keys.
fn key_json(
    scope: &statewall_common::xfsm::Scope,
    k: &statewall_common::xfsm::StateKey,
) -> serde_json::Value {
    let (na, np, has_proto) = scope.shape();
    // An address slot holds an IP address or a MAC (`Scope::l2`).
    let addrs: Vec<String> = k.addrs[..na as usize]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if scope.l2 & (5 << i) != 0 {
                a[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            } else {
                addr_ip(k.family, a).to_string()
            }
        })
        .collect();
    json!({
        "addrs": addrs,
        "ports": &k.ports[..np as usize],
        "proto": if has_proto { Some(k.proto) } else { None },
    })
}

/// A state entry of machine `m` as JSON (key, state name, seconds left on each timer), or
/// `None` when a deadline has passed (the kernel rolls it back on the next packet).
fn live_state_json(
    c: &crate::xfsm::Compiled,
    m: usize,
    scope: &statewall_common::xfsm::Scope,
    k: &statewall_common::xfsm::StateKey,
    v: &statewall_common::xfsm::StateVal,
    now: u64,
) -> Option<serde_json::Value> {
    let live = |t: u64| t == 0 || t > now;
    if !live(v.hard_deadline) || !live(v.idle_deadline) {
        return None;
    }
    let left = |t: u64| (t != 0).then(|| t.saturating_sub(now) as f64 / 1e9);
    let mut e = key_json(scope, k);
    e["state"] = json!(c.state_name(m, v.state));
    e["idle_left"] = json!(left(v.idle_deadline));
    e["hard_left"] = json!(left(v.hard_deadline));
    Some(e)
}

/// `GET /api/v1/xfsm/machines/{name}`: one `[[xfsm]]` machine's flows (update key, state,
/// timers, registers by name) and its global registers.
async fn xfsm_machine(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let g = s.lock();
    let Some(i) = g.config.machines.iter().position(|m| m.name == name) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no [[xfsm]] machine named {name:?}"),
        ));
    };
    let mc = &g.config.machines[i];
    let m = g.config.knocks.len() + i;
    let c = g
        .engine
        .xfsm_compiled()
        .ok_or_else(|| ApiError::internal("no xfsm tables written"))?;
    let Some(mach) = c.machines.get(m) else {
        return Err(ApiError::internal("machine not compiled"));
    };
    let now = g.engine.kernel_now();
    let mut flows: std::collections::BTreeMap<statewall_common::xfsm::StateKey, serde_json::Value> =
        Default::default();
    for (k, v) in g.engine.xfsm_states().map_err(ApiError::internal)? {
        if k.machine as usize == m {
            if let Some(e) = live_state_json(c, m, &mach.update, &k, &v, now) {
                flows.insert(k, e);
            }
        }
    }
    for (k, v) in g.engine.xfsm_flow_regs().map_err(ApiError::internal)? {
        if k.machine as usize != m {
            continue;
        }
        let e = flows.entry(k).or_insert_with(|| {
            let mut e = key_json(&mach.update, &k);
            e["state"] = json!("DEFAULT");
            e
        });
        let regs: serde_json::Map<String, serde_json::Value> = mc
            .registers
            .iter()
            .zip(v.r)
            .map(|(n, r)| (n.clone(), json!(r)))
            .collect();
        e["registers"] = json!(regs);
    }
    let globals: serde_json::Map<String, serde_json::Value> = mc
        .globals
        .iter()
        .zip(g.engine.xfsm_globals(m).map_err(ApiError::internal)?)
        .map(|(n, r)| (n.clone(), json!(r)))
        .collect();
    Ok(Json(json!({
        "name": mc.name,
        "update": mc.update.as_ref().unwrap_or(&mc.lookup),
        "flows": flows.into_values().collect::<Vec<_>>(),
        "globals": globals,
    }))
    .into_response())
}

async fn doors(State(s): State<Arc<Shared>>) -> ApiResult {
    let open = s.doors.open_doors();
    let g = s.lock();
    let now = g.engine.kernel_now();
    let states = g.engine.xfsm_states().map_err(ApiError::internal)?;
    let locks = g.engine.xfsm_locks().map_err(ApiError::internal)?;
    let secs = |t: u64| t.saturating_sub(now) as f64 / 1e9;
    let mut out = Vec::new();
    for (m, k) in g.config.knocks.iter().enumerate() {
        let name = |st: u8| {
            g.engine
                .xfsm_compiled()
                .map(|c| c.state_name(m, st))
                .unwrap_or_default()
        };
        let in_progress: Vec<_> = states
            .iter()
            .filter(|(key, v)| {
                key.machine as usize == m
                    && (v.hard_deadline == 0 || v.hard_deadline > now)
                    && (v.idle_deadline == 0 || v.idle_deadline > now)
            })
            .map(|(key, v)| {
                json!({
                    "source": addr_ip(key.family, &key.addrs[0]),
                    "state": name(v.state),
                    "idle_left": if v.idle_deadline == 0 { None } else { Some(secs(v.idle_deadline)) },
                    "hard_left": if v.hard_deadline == 0 { None } else { Some(secs(v.hard_deadline)) },
                })
            })
            .collect();
        let locked: Vec<_> = locks
            .iter()
            .filter(|(key, v)| key.machine as usize == m && v.locked_until > now)
            .map(|(key, v)| json!({"source": addr_ip(key.family, &key.addr), "seconds_left": secs(v.locked_until)}))
            .collect();
        out.push(json!({
            "name": k.name,
            "sequence": k.sequence.to_string(),
            "close_sequence": k.close_sequence.as_ref().map(|c| c.to_string()),
            "toggle": k.toggle,
            "protected": k.protected,
            "open_for": k.open_for.to_string(),
            "open": open.iter().filter(|o| o.door == k.name).collect::<Vec<_>>(),
            "in_progress": in_progress,
            "locked_out": locked,
        }));
    }
    Ok(Json(json!(out)).into_response())
}

async fn xfsm(State(s): State<Arc<Shared>>) -> ApiResult {
    let g = s.lock();
    let counters: serde_json::Map<String, serde_json::Value> = g
        .engine
        .xfsm_counters()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let trans: Vec<_> = g
        .engine
        .xfsm_transition_counters()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(n, v)| json!({"transition": n, "packets": v}))
        .collect();
    // The `[[xfsm]]` machines and their live states (keys in the lookup scope's order).
    let now = g.engine.kernel_now();
    let states = g.engine.xfsm_states().map_err(ApiError::internal)?;
    let nk = g.config.knocks.len();
    let mut machines = Vec::new();
    if let Some(c) = g.engine.xfsm_compiled() {
        for (i, mc) in g.config.machines.iter().enumerate() {
            let m = nk + i;
            let Some(mach) = c.machines.get(m) else {
                continue;
            };
            let live: Vec<_> = states
                .iter()
                .filter(|(k, _)| k.machine as usize == m)
                .filter_map(|(k, v)| live_state_json(c, m, &mach.lookup, k, v, now))
                .collect();
            machines.push(json!({
                "name": mc.name,
                "lookup": mc.lookup,
                "update": mc.update.as_ref().unwrap_or(&mc.lookup),
                "states": live,
            }));
        }
    }
    Ok(
        Json(json!({"counters": counters, "transitions": trans, "machines": machines}))
            .into_response(),
    )
}

async fn spa(State(s): State<Arc<Shared>>) -> ApiResult {
    let kernel: serde_json::Map<String, serde_json::Value> = s
        .lock()
        .engine
        .spa_counters()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let spa = s.spa.lock().unwrap_or_else(|p| p.into_inner());
    let pkd: Vec<_> = spa
        .setup
        .pkd
        .iter()
        .map(|a| json!({"name": a.name, "port": a.port, "window": a.window}))
        .collect();
    let fwknop: Vec<_> = spa
        .setup
        .fwknop
        .iter()
        .map(|f| json!({"name": f.name, "open_ports": f.open_ports.iter().map(|(p, n)| format!("{}/{n}", crate::config::proto_name(*p))).collect::<Vec<_>>()}))
        .collect();
    Ok(Json(json!({
        "kernel": kernel,
        "verdicts": s.spa_verdicts(&spa),
        "replay_entries": spa.replay.len(),
        "pkd": pkd,
        "fwknop": fwknop,
    }))
    .into_response())
}

async fn xfsm_events(
    State(s): State<Arc<Shared>>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    let rx = s.doors.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let ev = axum::response::sse::Event::default()
                        .event(e.kind.clone())
                        .data(serde_json::to_string(&e).unwrap_or_default());
                    return Some((Ok(ev), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    axum::response::sse::Sse::new(stream).keep_alive(axum::response::sse::KeepAlive::default())
}
