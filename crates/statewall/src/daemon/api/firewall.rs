//! Firewall REST: the native paths under `/api/v1/firewall` and the Polycube-compatible
//! subset under `/polycube/v1` (COMPAT.md section 4), served by the same handlers
//! (`/polycube/v1/attach` and `/detach` are routed in [`crate::daemon::polycube`],
//! since the cube may be a dynamic monitor's). Every
//! change is applied to a copy of the state, compiled and switched in the kernel with one
//! update, and only then kept (and saved): a bad operation changes nothing. The same commit
//! puts the chains the fleet pushes in force (`apply_policy`, handed to
//! [`crate::daemon::policy`] by the daemon's top).
//!
//! | method | path (native; Polycube's under `/polycube/v1/firewall/...`) | |
//! | --- | --- | --- |
//! | GET | `/api/v1/firewall` | every instance |
//! | GET/POST/DELETE | `/api/v1/firewall/{name}` | show / create (`{"type"}`) / delete |
//! | POST | `/api/v1/firewall/{name}/attach`, `/detach` | `{"port", "netns"?}` |
//! | POST | `/polycube/v1/attach`, `/polycube/v1/detach` | `{"cube", "port", "position"?}`: routed in [`crate::daemon::polycube`], which calls `do_attach` for a firewall's cube |
//! | POST | `.../{name}/chain/{CHAIN}/batch` | `{"rules": [{"operation", ...}]}` |
//! | GET | `.../{name}/chain/{CHAIN}/rule` | rules with ids, then the default stub |
//! | GET | `.../{name}/chain/{CHAIN}/stats` | per-rule `pkts`, `bytes` |
//! | POST/PATCH | `.../{name}/chain/{CHAIN}` | `{"default": "DROP"|"ACCEPT"}` |
//! | POST | `.../{name}/chain/{CHAIN}/stats/reset` | zero the chain's counters |
//! | GET | `.../{name}/sessions` (Polycube: `session-table`) | tracked connections |
//! | POST | `/api/v1/firewall/{name}/apply` | `{"INGRESS": {"default", "rules"}, "EGRESS": ..., "confirm": seconds}`: replace chains; with `confirm`, reverted unless confirmed in time |
//! | POST | `/api/v1/firewall/{name}/confirm` | keep what `apply` set |
//! | GET | `.../{name}/log` (`?since=SEQ`) | the latest LOG rule hits (also on the SSE stream as `fw_log`) |

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::firewall::log::{tcp_flag_names, LogEntry};
use crate::{
    daemon::api::call::{off_workers, parse_body, parse_large_body, ApiError, Phases},
    daemon::state::Shared,
    engine::EngineError,
    firewall::{
        batch::{plan_batch, BatchOp, SpecEdit},
        ChainState, FirewallError, FwState, Port,
    },
};

type ApiResult = Result<Response, ApiError>;

/// Why a firewall change was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// The kernel side refused it (placement, tables).
    #[error(transparent)]
    Kernel(#[from] EngineError),
    /// The state could not be saved, or the change does not read.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// Applies `new` (kernel first, then memory and disk); on error nothing changes. `moves`
/// says, per chain, where each rule's counters come from.
pub(crate) fn commit_firewall(
    s: &Shared,
    new: FwState,
    moves: &[(u32, Vec<Option<usize>>)],
) -> Result<(), CommitError> {
    let mut g = s.lock();
    let cfg = g.config.clone();
    crate::firewall::kernel::check_placement(&new, &cfg.links())?;
    g.engine
        .apply_firewall(&cfg.firewall, &cfg.links(), &new, moves)?;
    let path = cfg.daemon.state_dir.join("firewall.json");
    new.save(&path)?;
    g.fw = new;
    Ok(())
}

/// Applies one firewall policy value the cluster pushed to the instance `name` (made when
/// missing): its chains replaced at once, their counters from zero ([`crate::daemon::policy`]
/// calls it through the daemon's top).
pub(crate) fn apply_policy(s: &Shared, name: &str, value: &[u8]) -> Result<(), CommitError> {
    let spec = crate::firewall::read_policy(value)?;
    let mut new = s.lock().fw.clone();
    if !new.instances.contains_key(name) {
        new.create(name, "TC")?;
    }
    let next = new.instances[name].with(&spec)?;
    new.instances.insert(name.to_string(), next);
    new.pending.remove(name);
    let slot = new.instances[name].slot;
    let mut moves = Vec::new();
    if let Some(c) = &spec.ingress {
        moves.push((slot * 2, vec![None; c.rules.len()]));
    }
    if let Some(c) = &spec.egress {
        moves.push((slot * 2 + 1, vec![None; c.rules.len()]));
    }
    commit_firewall(s, new, &moves)
}

/// Where the firewall instance `name`'s policy comes from, when the cluster manages it:
/// (the key, the revision in force).
fn managed(s: &Shared, name: &str) -> Option<(String, i64)> {
    let link = s.cluster.as_ref()?;
    let key = format!("firewall/{name}");
    let p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
    p.applied
        .get(&key)
        .map(|rev| (format!("{}{key}", link.cfg.policy_prefix()), *rev))
}

/// Applies `new` (kernel first, then memory and disk); on error nothing changes.
fn commit(s: &Shared, new: FwState, moves: &[(u32, Vec<Option<usize>>)]) -> Result<(), ApiError> {
    commit_firewall(s, new, moves).map_err(|e| match e {
        CommitError::Kernel(e) => ApiError::bad(e.to_string()),
        CommitError::Firewall(e) => ApiError::internal(e),
    })
}

/// 409 for a change to an instance whose policy the cluster pushes (`[cluster]`).
fn refuse_if_managed(s: &Shared, name: &str) -> Result<(), ApiError> {
    match managed(s, name) {
        Some((key, rev)) => Err(ApiError(
            axum::http::StatusCode::CONFLICT,
            format!(
                "firewall {name:?} follows the cluster's policy at {key} (revision {rev}): \
                 change it with `statewall cluster push firewall {name} FILE`, or delete \
                 that key to manage it here again"
            ),
        )),
        None => Ok(()),
    }
}

/// Handles one LOG event from the kernel: kept for the API, published on the event stream,
/// and written to the log (at most [`crate::firewall::log::LOG_LINES_PER_SECOND`] lines a second).
pub fn on_log(s: &Shared, e: &statewall_common::firewall::FwLog) {
    let (firewall, description, index) = {
        let g = s.lock();
        // The kernel names the rule by its counter id.
        let index = g.engine.fw_rule_index(e.chain as u32, e.rule);
        let inst =
            g.fw.instances
                .iter()
                .find(|(_, i)| i.slot == e.chain as u32 / 2);
        match inst {
            Some((n, i)) => {
                let c = if e.chain & 1 == 0 {
                    &i.ingress
                } else {
                    &i.egress
                };
                let d = index
                    .and_then(|i| c.rules.get(i))
                    .and_then(|r| r.description.clone())
                    .unwrap_or_default();
                (n.clone(), d, index)
            }
            None => (format!("slot{}", e.chain / 2), String::new(), index),
        }
    };
    let mut entry = LogEntry {
        seq: 0,
        time: crate::xfsm::doors::unix_now(),
        firewall,
        chain: if e.chain & 1 == 0 {
            "INGRESS"
        } else {
            "EGRESS"
        },
        rule: index.map_or(e.rule, |i| i as u32),
        description,
        l4proto: match e.proto {
            6 => "TCP".into(),
            17 => "UDP".into(),
            1 => "ICMP".into(),
            58 => "ICMPv6".into(),
            n => n.to_string(),
        },
        src: statewall_common::maps::addr_ip(e.family, &e.saddr),
        dst: statewall_common::maps::addr_ip(e.family, &e.daddr),
        sport: e.sport,
        dport: e.dport,
        tcpflags: if e.proto == 6 {
            tcp_flag_names(e.tcp_flags)
        } else {
            String::new()
        },
        conntrack: ["NEW", "ESTABLISHED", "RELATED", "INVALID"][e.ct as usize & 3],
        len: e.len,
    };
    let loud = s
        .fw_log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(&mut entry, crate::engine::clock::unix_secs());
    let packet = format!(
        "{} {} -> {}",
        entry.l4proto,
        std::net::SocketAddr::new(entry.src, entry.sport),
        std::net::SocketAddr::new(entry.dst, entry.dport)
    );
    if loud {
        tracing::info!(
            firewall = %entry.firewall, chain = entry.chain, rule = entry.rule,
            conntrack = entry.conntrack, len = entry.len, flags = %entry.tcpflags,
            "firewall log: {packet}"
        );
    }
    s.doors.stream(crate::xfsm::doors::DoorEvent {
        time: entry.time,
        door: entry.firewall,
        source: entry.src,
        kind: "fw_log".into(),
        from: entry.chain.into(),
        to: format!("rule {}", entry.rule),
        packet: Some(packet),
        registers: None,
    });
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    since: u64,
}

async fn log(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<LogQuery>,
) -> ApiResult {
    s.lock()
        .fw
        .instances
        .get(&name)
        .ok_or_else(|| not_found(&name))?;
    let r = s.fw_log.lock().unwrap_or_else(|p| p.into_inner());
    let v: Vec<&LogEntry> = r
        .entries
        .iter()
        .filter(|e| e.firewall == name && e.seq > q.since)
        .collect();
    Ok(Json(v).into_response())
}

fn not_found(name: &str) -> ApiError {
    ApiError(
        axum::http::StatusCode::NOT_FOUND,
        format!("no firewall {name:?}"),
    )
}

/// Adds the firewall routes (native and Polycube, with and without a trailing slash).
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    let mut r = r.route("/api/v1/firewall", get(list));
    for base in ["/api/v1/firewall", "/polycube/v1/firewall"] {
        for slash in ["", "/"] {
            r = r
                .route(
                    &format!("{base}/{{name}}{slash}"),
                    get(show).post(create).delete(remove),
                )
                .route(&format!("{base}/{{name}}/attach{slash}"), post(attach))
                .route(&format!("{base}/{{name}}/sessions{slash}"), get(sessions))
                .route(&format!("{base}/{{name}}/apply{slash}"), post(apply))
                .route(&format!("{base}/{{name}}/confirm{slash}"), post(confirm))
                .route(&format!("{base}/{{name}}/log{slash}"), get(log))
                .route(
                    &format!("{base}/{{name}}/session-table{slash}"),
                    get(sessions),
                )
                .route(&format!("{base}/{{name}}/detach{slash}"), post(detach))
                .route(
                    &format!("{base}/{{name}}/chain/{{chain}}{slash}"),
                    post(set_default).patch(set_default).get(show_chain),
                )
                .route(
                    &format!("{base}/{{name}}/chain/{{chain}}/batch{slash}"),
                    post(batch),
                )
                .route(
                    &format!("{base}/{{name}}/chain/{{chain}}/rule{slash}"),
                    get(rules),
                )
                .route(
                    &format!("{base}/{{name}}/chain/{{chain}}/stats{slash}"),
                    get(stats),
                )
                .route(
                    &format!("{base}/{{name}}/chain/{{chain}}/stats/reset{slash}"),
                    post(reset_stats),
                );
        }
    }
    r
}

fn view(name: &str, i: &crate::firewall::Instance) -> Value {
    json!({
        "name": name,
        "type": i.kind,
        "parent": i.ports.first().map(|p| p.ifname.clone()).unwrap_or_default(),
        "ports": i.ports,
        "chain": [
            {"name": "INGRESS", "default": i.ingress.default, "rules": i.ingress.rules.len()},
            {"name": "EGRESS", "default": i.egress.default, "rules": i.egress.rules.len()},
        ],
    })
}

async fn list(State(s): State<Arc<Shared>>) -> ApiResult {
    let g = s.lock();
    let v: Vec<Value> = g.fw.instances.iter().map(|(n, i)| view(n, i)).collect();
    Ok(Json(v).into_response())
}

async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let g = s.lock();
    let i = g.fw.instances.get(&name).ok_or_else(|| not_found(&name))?;
    Ok(Json(view(&name, i)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    loglevel: Option<String>,
}

async fn create(State(s): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    off_workers(move || {
        let b: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
            CreateBody::default()
        } else {
            parse_body(&body)?
        };
        let _ = b.loglevel;
        let kind = b.kind.unwrap_or_else(|| "TC".into()).to_ascii_uppercase();
        if !["TC", "XDP_SKB", "XDP_DRV"].contains(&kind.as_str()) {
            return Err(ApiError::bad(format!(
                "type: {kind:?} is not TC, XDP_SKB or XDP_DRV"
            )));
        }
        let mut new = s.lock().fw.clone();
        new.create(&name, &kind)?;
        commit(&s, new, &[])?;
        let g = s.lock();
        Ok(Json(view(&name, &g.fw.instances[&name])).into_response())
    })
    .await
}

async fn remove(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    off_workers(move || {
        refuse_if_managed(&s, &name)?;
        let mut new = s.lock().fw.clone();
        new.instances
            .remove(&name)
            .ok_or_else(|| not_found(&name))?;
        new.pending.remove(&name);
        commit(&s, new, &[])?;
        Ok(Json(json!({"deleted": name})).into_response())
    })
    .await
}

/// The body of an attach or detach (native, or Polycube's with its `cube`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttachBody {
    /// The instance (Polycube's paths only).
    #[serde(default)]
    pub cube: Option<String>,
    /// The interface.
    pub port: String,
    /// Its network namespace.
    #[serde(default)]
    pub netns: Option<String>,
    /// `first`, `last` or `auto` (where in statewall's chain).
    #[serde(default)]
    pub position: Option<String>,
}

/// Attaches the instance `name` to the body's port, or detaches it.
pub(crate) fn do_attach(s: &Shared, name: &str, b: AttachBody, on: bool) -> ApiResult {
    if let Some(p) = &b.position {
        if !["first", "last", "auto"].contains(&p.to_ascii_lowercase().as_str()) {
            return Err(ApiError::bad(format!(
                "position: {p:?} is not first or last"
            )));
        }
    }
    let mut new = s.lock().fw.clone();
    let i = new.instances.get_mut(name).ok_or_else(|| not_found(name))?;
    let port = Port {
        netns: b.netns,
        ifname: b.port,
    };
    if on {
        if i.ports.contains(&port) {
            return Err(ApiError::bad(format!(
                "port: {} is attached already",
                port.ifname
            )));
        }
        i.ports.push(port);
    } else {
        let before = i.ports.len();
        i.ports.retain(|p| *p != port);
        if i.ports.len() == before {
            return Err(ApiError::bad(format!(
                "port: {} is not attached",
                port.ifname
            )));
        }
    }
    commit(s, new, &[])?;
    Ok(Json(json!({"cube": name, "attached": on})).into_response())
}

async fn attach(State(s): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    off_workers(move || do_attach(&s, &name, parse_body(&body)?, true)).await
}

async fn detach(State(s): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    off_workers(move || do_attach(&s, &name, parse_body(&body)?, false)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    rules: Vec<BatchOp>,
}

/// The chain `chain` of instance `name` and its kernel chain number.
fn chain_of<'a>(
    st: &'a FwState,
    name: &str,
    chain: &str,
) -> Result<(&'a ChainState, u32), ApiError> {
    let i = st.instances.get(name).ok_or_else(|| not_found(name))?;
    Ok((i.chain(chain)?, i.chain_no(chain)?))
}

/// The same, to change it.
fn chain_of_mut<'a>(
    st: &'a mut FwState,
    name: &str,
    chain: &str,
) -> Result<(&'a mut ChainState, u32), ApiError> {
    let i = st.instances.get_mut(name).ok_or_else(|| not_found(name))?;
    let no = i.chain_no(chain)?;
    Ok((i.chain_mut(chain)?, no))
}

async fn batch(
    State(s): State<Arc<Shared>>,
    Path((name, chain)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    off_workers(move || {
        let mut t = Phases::start();
        refuse_if_managed(&s, &name)?;
        let b: BatchBody = parse_large_body(&body)?;
        t.mark("parse");
        let mut g = s.lock();
        t.mark("lock");
        let (c, no) = chain_of(&g.fw, &name, &chain)?;
        let plan = plan_batch(&c.rules, &b.rules)
            .map_err(|(i, e)| ApiError::bad(format!("rules[{i}]: {e} (nothing was changed)")))?;
        // The kernel first, rewriting only what the batch changes; on an error, the chains
        // as they were.
        let edits: Vec<_> = plan.iter().map(SpecEdit::edit).collect();
        t.mark("plan");
        if let Err(e) = g.engine.fw_edit(no, &edits) {
            let (cfg, fw) = (g.config.clone(), g.fw.clone());
            if let Err(back) = g
                .engine
                .apply_firewall(&cfg.firewall, &cfg.links(), &fw, &[])
            {
                tracing::error!("firewall: restoring the chains after a failed batch: {back}");
            }
            return Err(ApiError::bad(format!("{e} (nothing was changed)")));
        }
        let path = g.config.daemon.state_dir.join("firewall.json");
        let fw = &mut g.fw;
        let inst = fw
            .instances
            .get_mut(&name)
            .ok_or_else(|| not_found(&name))?;
        t.mark("kernel");
        let c = inst.chain_mut(&chain)?;
        for e in plan {
            e.apply(&mut c.rules);
        }
        let n = c.rules.len();
        t.mark("state");
        fw.journal(&path, &name, &chain, &b.rules)
            .map_err(ApiError::internal)?;
        drop(g);
        t.mark("journal");
        // After the answer: the bits an update left are cleared (`Tables::scrub`), and
        // the generation this batch retired, behind by all of it (nothing reads it any
        // more: the switch waited), is written up to date, so that the next change writes
        // only its own entries. A change that comes first does both itself.
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = s.lock();
            if let Err(e) = g.engine.fw_scrub() {
                tracing::warn!("firewall: clearing what an update left: {e}");
            }
            if let Err(e) = g.engine.fw_catch_up() {
                tracing::warn!("firewall: bringing the retired generation up to date: {e}");
            }
        });
        let mut res = Json(json!({"rules": n})).into_response();
        res.extensions_mut().insert(t);
        Ok(res)
    })
    .await
}

fn rule_list(st: &FwState, name: &str, chain: &str) -> Result<Vec<Value>, ApiError> {
    let (c, _) = chain_of(st, name, chain)?;
    let mut v: Vec<Value> = c
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r.id = Some(i);
            serde_json::to_value(r).unwrap_or_default()
        })
        .collect();
    v.push(json!({"id": c.rules.len(), "action": c.default, "description": "Default Policy"}));
    Ok(v)
}

async fn rules(
    State(s): State<Arc<Shared>>,
    Path((name, chain)): Path<(String, String)>,
) -> ApiResult {
    let g = s.lock();
    Ok(Json(rule_list(&g.fw, &name, &chain)?).into_response())
}

async fn show_chain(
    State(s): State<Arc<Shared>>,
    Path((name, chain)): Path<(String, String)>,
) -> ApiResult {
    let g = s.lock();
    let (c, _) = chain_of(&g.fw, &name, &chain)?;
    Ok(Json(json!({
        "name": chain.to_ascii_uppercase(),
        "default": c.default,
        "rule": rule_list(&g.fw, &name, &chain)?,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultBody {
    #[serde(default)]
    default: Option<String>,
    #[serde(default, rename = "accept-established")]
    accept_established: Option<Value>,
}

async fn set_default(
    State(s): State<Arc<Shared>>,
    Path((name, chain)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    off_workers(move || {
        refuse_if_managed(&s, &name)?;
        let b: DefaultBody = parse_body(&body)?;
        let mut new = s.lock().fw.clone();
        let (c, _) = chain_of_mut(&mut new, &name, &chain)?;
        if let Some(d) = &b.default {
            c.default = crate::firewall::parse_default(d)
                .map_err(|e| ApiError::bad(format!("default: {e}")))?
                .into();
        }
        if let Some(v) = &b.accept_established {
            c.accept_established = match v {
                Value::Bool(b) => *b,
                Value::String(t) if t.eq_ignore_ascii_case("on") || t == "true" => true,
                Value::String(t) if t.eq_ignore_ascii_case("off") || t == "false" => false,
                o => {
                    return Err(ApiError::bad(format!(
                        "accept-established: {o} is not ON, OFF, true or false"
                    )))
                }
            };
        }
        if b.default.is_none() && b.accept_established.is_none() {
            return Err(ApiError::bad("give default and/or accept-established"));
        }
        let (d, ae) = (c.default.clone(), c.accept_established);
        commit(&s, new, &[])?;
        Ok(Json(json!({"default": d, "accept-established": ae})).into_response())
    })
    .await
}

async fn stats(
    State(s): State<Arc<Shared>>,
    Path((name, chain)): Path<(String, String)>,
) -> ApiResult {
    let g = s.lock();
    let (c, no) = chain_of(&g.fw, &name, &chain)?;
    let counts = g
        .engine
        .fw_stats(no, c.rules.len())
        .map_err(ApiError::internal)?;
    let v: Vec<Value> = counts
        .iter()
        .enumerate()
        .map(|(i, (p, b))| {
            json!({"id": i, "pkts": p, "bytes": b, "description": c.rules[i].description.clone().unwrap_or_default()})
        })
        .collect();
    Ok(Json(v).into_response())
}

async fn reset_stats(
    State(s): State<Arc<Shared>>,
    Path((name, chain)): Path<(String, String)>,
) -> ApiResult {
    let mut g = s.lock();
    let (c, no) = chain_of(&g.fw, &name, &chain)?;
    let n = c.rules.len();
    g.engine
        .fw_reset_stats(no)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(Json(json!({"reset": n})).into_response())
}

async fn sessions(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let g = s.lock();
    g.fw.instances.get(&name).ok_or_else(|| not_found(&name))?;
    let now = g.engine.kernel_now();
    let rows: Vec<Value> = g
        .engine
        .fw_sessions()
        .map_err(ApiError::internal)?
        .iter()
        .map(|(k, v)| {
            let (src, dst, sport, dport) = if v.orig_dir == 0 {
                (k.a0, k.a1, k.p0, k.p1)
            } else {
                (k.a1, k.a0, k.p1, k.p0)
            };
            let state = if k.proto == 6 {
                ["", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "CLOSING"][v.state as usize % 5]
            } else if v.seen_reply != 0 {
                "ESTABLISHED"
            } else {
                "NEW"
            };
            json!({
                "src": statewall_common::maps::addr_ip(k.family, &src),
                "dst": statewall_common::maps::addr_ip(k.family, &dst),
                "sport": sport,
                "dport": dport,
                "l4proto": match k.proto { 6 => "TCP", 17 => "UDP", 1 => "ICMP", _ => "ICMPv6" },
                "state": state,
                "eta": v.expires_ns.saturating_sub(now) / 1_000_000_000,
            })
        })
        .collect();
    Ok(Json(rows).into_response())
}

async fn apply(State(s): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    off_workers(move || {
        refuse_if_managed(&s, &name)?;
        let spec: crate::firewall::ApplySpec = parse_body(&body)?;
        if spec.confirm == Some(0) || spec.confirm.is_some_and(|c| c > 86400) {
            return Err(ApiError::bad("confirm: 1 to 86400 seconds"));
        }
        let mut new = s.lock().fw.clone();
        let cur = new
            .instances
            .get(&name)
            .ok_or_else(|| not_found(&name))?
            .clone();
        let next = cur.with(&spec)?;
        new.instances.insert(name.clone(), next);
        match spec.confirm {
            Some(secs) => {
                // Back to the state before the first unconfirmed apply.
                let previous = new
                    .pending
                    .get(&name)
                    .map(|p| p.previous.clone())
                    .unwrap_or(cur);
                new.pending.insert(
                    name.clone(),
                    crate::firewall::Pending {
                        deadline: crate::engine::clock::unix_secs() + secs,
                        previous,
                    },
                );
            }
            None => {
                new.pending.remove(&name);
            }
        }
        // Every rule of a replaced chain starts counting from zero.
        let slot = new.instances[&name].slot;
        let mut moves = Vec::new();
        if let Some(c) = &spec.ingress {
            moves.push((slot * 2, vec![None; c.rules.len()]));
        }
        if let Some(c) = &spec.egress {
            moves.push((slot * 2 + 1, vec![None; c.rules.len()]));
        }
        commit(&s, new, &moves)?;
        Ok(Json(json!({"applied": name, "confirm_within": spec.confirm})).into_response())
    })
    .await
}

async fn confirm(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    off_workers(move || {
        refuse_if_managed(&s, &name)?;
        let mut new = s.lock().fw.clone();
        if new.pending.remove(&name).is_none() {
            return Err(ApiError::bad(format!(
                "firewall {name:?} has nothing to confirm (no apply --confirm pending, or it was reverted)"
            )));
        }
        commit(&s, new, &[])?;
        Ok(Json(json!({"confirmed": name})).into_response())
    })
    .await
}

/// Reverts unconfirmed applies whose time is up (called every second by the daemon).
pub fn revert_due(s: &Shared) {
    let now = crate::engine::clock::unix_secs();
    // The names only: the whole state is copied for a due revert alone, not at every tick.
    let due: Vec<String> = s
        .lock()
        .fw
        .pending
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(n, _)| n.clone())
        .collect();
    for name in due {
        let mut new = s.lock().fw.clone();
        let Some(p) = new.pending.remove(&name) else {
            continue;
        };
        let moves = [
            (
                p.previous.slot * 2,
                vec![None; p.previous.ingress.rules.len()],
            ),
            (
                p.previous.slot * 2 + 1,
                vec![None; p.previous.egress.rules.len()],
            ),
        ];
        new.instances.insert(name.clone(), p.previous);
        match commit(s, new, &moves) {
            Ok(()) => {
                tracing::warn!(firewall = %name, "not confirmed in time: the previous ruleset is back")
            }
            Err(e) => {
                tracing::error!(firewall = %name, "reverting an unconfirmed apply failed: {}", e.1)
            }
        }
    }
}
