//! Dynamic monitor REST: the native paths under `/api/v1/dynmon` and Polycube's Dynmon
//! (`/polycube/v1/dynmon`), whose GETs fall back here when no built-in monitor has the
//! name.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/api/v1/dynmon` | every instance |
//! | POST | `/api/v1/dynmon/{name}` | load (and attach): `{"interface", "netns"?, "paths": [{"direction", "source" or "object", "program"?, "metrics"}]}` |
//! | GET | `/api/v1/dynmon/{name}` | one instance: paths, programs, hooks, maps |
//! | POST | `/api/v1/dynmon/{name}/read` | every metric, decoded (swap-on-read and empty-on-read apply) |
//! | DELETE | `/api/v1/dynmon/{name}` | detach and unload |
//! | POST | `/polycube/v1/dynmon/{name}` | `{"dataplane-config": {"ingress-path": {"name", "code", "metric-configs"}, "egress-path": ...}}` (statewall also reads `interface` and `netns` here) |
//! | PUT | `/polycube/v1/dynmon/{name}/dataplane-config` | load or replace the code, keeping the interface |
//! | GET | `/polycube/v1/dynmon/{name}/dataplane-config` | the paths as given |
//! | GET | `/polycube/v1/dynmon/{name}/metrics` | `{"ingress-metrics": [{"name", "value", "timestamp"}], "egress-metrics": [...]}` |
//! | GET | `/polycube/v1/dynmon/{name}/open-metrics` | the metrics as Prometheus text |
//! | DELETE | `/polycube/v1/dynmon/{name}` | detach and unload |
//! | POST | `/polycube/v1/attach`, `/polycube/v1/detach` | `{"cube", "port"}`: routed in [`crate::daemon::polycube`], which calls [`attach_detach`] for a dynamic monitor's cube |
//!
//! A program the verifier rejects gives 400 with the verifier's log; nothing stays loaded.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    daemon::api::call::{off_workers, parse_body, ApiError},
    daemon::state::Shared,
    dynmon::{code_field, Direction, Dynmon, DynmonSpec, MetricConfig, PathSpec, Reading},
};

type ApiResult = Result<Response, ApiError>;

/// Adds the dynmon routes (`/polycube/v1/dynmon/{name}` itself and `.../metrics` are
/// [`crate::daemon::polycube`]'s, shared with the config's monitors).
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    let mut r = r.route("/api/v1/dynmon", get(list));
    for slash in ["", "/"] {
        r = r
            .route(
                &format!("/api/v1/dynmon/{{name}}{slash}"),
                get(show).post(load).delete(unload),
            )
            .route(&format!("/api/v1/dynmon/{{name}}/read{slash}"), post(read))
            .route(
                &format!("/polycube/v1/dynmon/{{name}}/dataplane-config{slash}"),
                get(pc_config).put(pc_put_config),
            )
            .route(
                &format!("/polycube/v1/dynmon/{{name}}/open-metrics{slash}"),
                get(pc_open_metrics),
            );
    }
    r
}

fn not_found(name: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no dynamic monitor {name:?}"),
    )
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, crate::dynmon::Dynmons> {
    s.dynmon.lock().unwrap_or_else(|p| p.into_inner())
}

/// An instance as the native API shows it.
pub fn view(d: &Dynmon) -> Value {
    let paths: Vec<Value> = d
        .paths
        .iter()
        .map(|p| {
            let maps: serde_json::Map<String, Value> = p
                .maps
                .iter()
                .map(|(n, m)| {
                    (
                        n.clone(),
                        json!({
                            "type": crate::dynmon::map_type_name(m.map_type),
                            "key_size": m.key_size,
                            "value_size": m.value_size,
                            "max_entries": m.max_entries,
                            "key_type": (m.key_ty != 0).then(|| p.btf.type_name(m.key_ty)),
                            "value_type": (m.value_ty != 0).then(|| p.btf.type_name(m.value_ty)),
                            "swapped": m.swapped,
                        }),
                    )
                })
                .collect();
            json!({
                "name": p.spec.name,
                "direction": p.spec.direction,
                "program": p.program,
                "xdp": p.xdp,
                "program_ids": p.prog_ids,
                "copies": p.prog_ids.len(),
                "maps": maps,
                "metrics": p.spec.metrics,
            })
        })
        .collect();
    let hooks: Vec<Value> = d
        .hooks()
        .into_iter()
        .map(|(h, id)| json!({"hook": h, "program_id": id}))
        .collect();
    json!({
        "name": d.name,
        "interface": d.spec.interface,
        "netns": d.spec.netns,
        "paths": paths,
        "hooks": hooks,
        "reads": d.reads,
        "load_us": d.load_time.as_micros() as u64,
        "last_switch_us": d.last.0.as_micros() as u64,
        "last_read_us": d.last.1.as_micros() as u64,
    })
}

// The lock is held by reads (a grace period) and by writes (a synced file): every
// handler takes it off the async workers.

async fn list(State(s): State<Arc<Shared>>) -> ApiResult {
    off_workers(move || {
        let g = lock(&s);
        let mut v: Vec<Value> = g.by_name.values().map(view).collect();
        // Kept instances that did not load at start.
        v.extend(g.failed.iter().map(|(n, spec)| {
            json!({"name": n, "interface": spec.interface, "netns": spec.netns, "loaded": false})
        }));
        Ok(Json(v).into_response())
    })
    .await
}

async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    off_workers(move || {
        let g = lock(&s);
        let d = g.by_name.get(&name).ok_or_else(|| not_found(&name))?;
        Ok(Json(view(d)).into_response())
    })
    .await
}

/// Loads an instance without holding the lock (clang and the verifier take a while),
/// then puts it in place; `replace` allows an existing one of that name to go.
async fn put(s: Arc<Shared>, name: String, spec: DynmonSpec, replace: bool) -> ApiResult {
    // All of it off the async tasks (`off_workers`): the name's reservation, the load
    // (outside the lock: clang and the verifier take a while) and what follows (under it,
    // with a synced state file). Once started it runs to its end even when the client
    // goes away, so the name is freed and a replaced instance put back either way.
    off_workers(move || {
        // A new name must follow the naming rule; one stored before the rule keeps working.
        if !lock(&s).by_name.contains_key(&name) {
            crate::types::check_name(&name).map_err(|e| ApiError::bad(format!("name: {e}")))?;
        }
        if s.is_builtin_monitor(&name) {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("{name:?} is a built-in monitor of the config"),
            ));
        }
        // The name is reserved while the load runs (outside the lock: clang and the verifier
        // take a while), so two requests for one name cannot both get it.
        let old_iface = {
            let mut g = lock(&s);
            if g.pending.contains(&name) {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("dynamic monitor {name:?} is being loaded by another request"),
                ));
            }
            if !replace && g.by_name.contains_key(&name) {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("dynamic monitor {name:?} exists: DELETE it first"),
                ));
            }
            g.pending.insert(name.clone());
            // A replaced instance stays attached while its successor loads (no gap on tcx),
            // except an XDP one: the interface has room for one XDP program.
            match g.by_name.get_mut(&name) {
                Some(d) if d.paths.iter().any(|p| p.xdp) => {
                    // Off the hook, its spec unchanged: a save meanwhile keeps it as it is.
                    let i = d.spec.interface.clone();
                    d.unhook();
                    i
                }
                _ => None,
            }
        };
        let _reserved = Reserved {
            s: s.clone(),
            name: name.clone(),
        };
        let loaded = Dynmon::load(&name, spec);
        let mut g = lock(&s);
        // A failed load or save changes nothing: the replaced instance (if any) is
        // attached again where its successor's load had to take it off its hook. If that
        // fails too, it stays loaded, detached, and the state file says so.
        let keep_old = |g: &mut crate::dynmon::Dynmons, e: ApiError| -> ApiError {
            let Some(i) = &old_iface else { return e };
            let Some(old) = g.by_name.get_mut(&name) else {
                return e;
            };
            let Err(again) = old.attach(i, old.spec.netns.clone()) else {
                return e;
            };
            old.detach();
            let spec = old.spec.clone();
            let saved = match g.save_with(&name, Some(&spec)) {
                Ok(()) => String::new(),
                Err(s) => format!("; {s}"),
            };
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "{}; the previous program of {name:?} could not be attached again ({again}): it is loaded and detached{saved}",
                    e.1
                ),
            )
        };
        let d = match loaded {
            Ok(d) => d,
            Err(e) => {
                let e = e.context(format!("dynamic monitor {name:?}"));
                return Err(keep_old(&mut g, e.into()));
            }
        };
        if let Err(e) = g.save_with(&name, Some(&d.spec)) {
            drop(d);
            let e = e.context(format!("dynamic monitor {name:?} (nothing changed)"));
            return Err(keep_old(&mut g, e.into()));
        }
        tracing::info!(dynmon = %name, load_us = d.load_time.as_micros() as u64, "dynamic monitor loaded");
        let v = view(&d);
        let old = g.by_name.insert(name.clone(), d);
        g.failed.remove(&name);
        drop(old);
        Ok((StatusCode::CREATED, Json(v)).into_response())
    })
    .await
}

/// A name reserved for a load, freed when the load's body ends however it ends (a panic
/// included).
struct Reserved {
    s: Arc<Shared>,
    name: String,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        lock(&self.s).pending.remove(&self.name);
    }
}

async fn load(State(s): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let spec: DynmonSpec = parse_body(&body)?;
    put(s, name, spec, false).await
}

async fn unload(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    off_workers(move || {
        let mut g = lock(&s);
        if !g.by_name.contains_key(&name) && !g.failed.contains_key(&name) {
            return Err(not_found(&name));
        }
        // Written first: a state file that cannot be written leaves the instance running.
        g.save_with(&name, None).map_err(|e| {
            ApiError::from(e.context(format!("dynamic monitor {name:?} (still loaded)")))
        })?;
        let d = g.by_name.remove(&name);
        g.failed.remove(&name);
        drop(d);
        tracing::info!(dynmon = %name, "dynamic monitor unloaded");
        Ok(Json(json!({"unloaded": name})).into_response())
    })
    .await
}

/// Takes a read of instance `name` (off the async workers: it waits a grace period) and
/// hands it to `f` with the instance, under the lock.
async fn take<T: Send + 'static>(
    s: Arc<Shared>,
    name: String,
    f: impl FnOnce(&Dynmon, &[Reading]) -> T + Send + 'static,
) -> Result<T, ApiError> {
    off_workers(move || {
        let mut g = lock(&s);
        let d = g.by_name.get_mut(&name).ok_or_else(|| not_found(&name))?;
        let r = d.read().map_err(ApiError::from)?;
        Ok(f(d, &r))
    })
    .await
}

async fn read(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let metrics = take(s, name.clone(), |_, r| {
        r.iter()
            .map(|m| json!({"name": m.name, "path": m.path, "value": m.value, "timestamp": m.timestamp_us}))
            .collect::<Vec<Value>>()
    })
    .await?;
    Ok(Json(json!({"name": name, "metrics": metrics})).into_response())
}

/// Whether a dynamic monitor has this name.
pub fn exists(s: &Shared, name: &str) -> bool {
    lock(s).by_name.contains_key(name)
}

/// Dynmon's `GET /dynmon/{name}` for a dynamic instance.
pub fn pc_show(s: &Shared, name: &str) -> Option<Value> {
    let g = lock(s);
    let d = g.by_name.get(name)?;
    Some(json!({
        "name": d.name,
        "service-name": "dynmon",
        "type": if d.paths.iter().any(|p| p.xdp) { "XDP_SKB" } else { "TC" },
        "parent": d.spec.interface.clone().unwrap_or_default(),
        "dataplane-config": pc_paths(&d.spec),
    }))
}

fn pc_paths(spec: &DynmonSpec) -> Value {
    let mut out = json!({});
    for p in &spec.paths {
        let key = match p.direction {
            Direction::Egress => "egress-path",
            _ => "ingress-path",
        };
        out[key] = json!({
            "name": p.name,
            "code": p.object.clone().or_else(|| p.source.clone()).unwrap_or_default(),
            "metric-configs": p.metrics,
        });
    }
    out
}

/// Dynmon's `GET /dynmon/{name}/metrics` for a dynamic instance (a read).
pub async fn pc_metrics(s: Arc<Shared>, name: String) -> ApiResult {
    let v = take(s, name, |d, r| {
        let (mut ing, mut eg) = (Vec::new(), Vec::new());
        for m in r {
            let v = json!({"name": m.name, "value": m.value, "timestamp": m.timestamp_us});
            if d.paths[m.path].spec.direction == Direction::Egress {
                eg.push(v)
            } else {
                ing.push(v)
            }
        }
        json!({"ingress-metrics": ing, "egress-metrics": eg})
    })
    .await?;
    Ok(Json(v).into_response())
}

async fn pc_open_metrics(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let text = take(s, name, |d, r| {
        let mut fams = crate::dynmon::openmetrics::Families::default();
        d.render(r, false, &mut fams);
        let mut out = String::new();
        fams.finish(&mut out);
        out
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// One of Dynmon's paths.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PcPath {
    #[serde(default)]
    name: String,
    code: String,
    #[serde(rename = "metric-configs", default)]
    metric_configs: Vec<MetricConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PcConfig {
    #[serde(rename = "ingress-path", default)]
    ingress: Option<PcPath>,
    #[serde(rename = "egress-path", default)]
    egress: Option<PcPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PcCreate {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "dataplane-config")]
    config: PcConfig,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    netns: Option<String>,
    /// Polycube's cube type: `TC` (the default), `XDP_SKB` or `XDP_DRV` (a program in
    /// BCC's dialect on the ingress path then runs in XDP).
    #[serde(default, rename = "type")]
    kind: Option<String>,
    // Polycube's own cube field, accepted and ignored.
    #[serde(default, rename = "loglevel")]
    _loglevel: Option<String>,
}

fn pc_spec(
    c: PcConfig,
    interface: Option<String>,
    netns: Option<String>,
    xdp: bool,
) -> Result<DynmonSpec, ApiError> {
    let mut paths = Vec::new();
    for (p, direction) in [
        (c.ingress, Direction::Ingress),
        (c.egress, Direction::Egress),
    ] {
        if let Some(p) = p {
            if p.code.trim().is_empty() {
                continue;
            }
            let (source, object) = code_field(&p.code);
            paths.push(PathSpec {
                name: p.name,
                direction,
                source,
                object,
                program: None,
                shared: vec![],
                xdp: xdp && direction == Direction::Ingress,
                metrics: p.metric_configs,
            });
        }
    }
    if paths.is_empty() {
        return Err(ApiError::bad(
            "dataplane-config has no code: give ingress-path or egress-path with `code`",
        ));
    }
    Ok(DynmonSpec {
        interface,
        netns,
        paths,
    })
}

/// `POST /polycube/v1/dynmon/{name}`.
pub async fn pc_create(s: Arc<Shared>, name: String, body: Bytes) -> ApiResult {
    let c: PcCreate = parse_body(&body)?;
    if c.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad(format!(
            "body names {:?}, the path {name:?}",
            c.name.unwrap()
        )));
    }
    let xdp = match c.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("TC") => false,
        Some("XDP_SKB" | "XDP_DRV") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "type {other:?}: a dynmon cube is TC, XDP_SKB or XDP_DRV"
            )))
        }
    };
    let spec = pc_spec(c.config, c.interface, c.netns, xdp)?;
    put(s, name, spec, false).await
}

/// `DELETE /polycube/v1/dynmon/{name}`.
pub async fn pc_delete(s: Arc<Shared>, name: String) -> ApiResult {
    unload(State(s), Path(name)).await
}

async fn pc_config(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    off_workers(move || {
        let g = lock(&s);
        let d = g.by_name.get(&name).ok_or_else(|| not_found(&name))?;
        Ok(Json(pc_paths(&d.spec)).into_response())
    })
    .await
}

async fn pc_put_config(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let c: PcConfig = parse_body(&body)?;
    let (iface, netns, xdp) = {
        let g = lock(&s);
        match g.by_name.get(&name) {
            Some(d) => (
                d.spec.interface.clone(),
                d.spec.netns.clone(),
                d.spec.paths.iter().any(|p| p.xdp),
            ),
            None => (None, None, false),
        }
    };
    let spec = pc_spec(c, iface, netns, xdp)?;
    put(s, name, spec, true).await
}

/// Polycube's `/attach` and `/detach` for a dynamic monitor's cube (the firewall's
/// handler hands them over).
pub fn attach_detach(
    s: &Shared,
    cube: &str,
    port: &str,
    netns: Option<String>,
    position: Option<String>,
    on: bool,
) -> ApiResult {
    if position
        .as_deref()
        .is_some_and(|p| !p.eq_ignore_ascii_case("auto") && !p.eq_ignore_ascii_case("last"))
    {
        return Err(ApiError::bad(
            "position: a dynamic monitor runs last in statewall's chain (auto or last)",
        ));
    }
    let mut g = lock(s);
    let d = g.by_name.get_mut(cube).ok_or_else(|| not_found(cube))?;
    let kept = |e: crate::dynmon::error::DynmonError| {
        ApiError::from(e.context(format!("dynamic monitor {cube:?} (nothing changed)")))
    };
    if on {
        let before = d.spec.clone();
        let netns = netns.or_else(|| d.spec.netns.clone());
        d.attach(port, netns)
            .map_err(|e| ApiError::from(e.context(format!("dynamic monitor {cube:?}"))))?;
        let spec = d.spec.clone();
        if let Err(e) = g.save_with(cube, Some(&spec)) {
            // Back as it was: detached, with the namespace it had.
            if let Some(d) = g.by_name.get_mut(cube) {
                d.unhook();
                d.spec = before;
            }
            return Err(kept(e));
        }
    } else {
        if d.spec.interface.as_deref() != Some(port) {
            return Err(ApiError::bad(format!(
                "port: {cube:?} is not attached to {port:?}"
            )));
        }
        let mut spec = d.spec.clone();
        spec.interface = None;
        g.save_with(cube, Some(&spec)).map_err(kept)?;
        if let Some(d) = g.by_name.get_mut(cube) {
            d.detach();
        }
    }
    Ok(Json(json!({"cube": cube, "attached": on})).into_response())
}
