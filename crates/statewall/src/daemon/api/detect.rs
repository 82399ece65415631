//! Detect REST: the mitigations in force, blocks by hand, and release.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/api/v1/detect` | mode, detectors, allowlist, counters, every mitigation in force, and the classifier's windows and last detections |
//! | POST | `/api/v1/detect/blocks` | `{"prefix": "198.51.100.0/24", "seconds": 600}`: drop a source or prefix (no `seconds`: until released) |
//! | DELETE | `/api/v1/detect/{addr}` | release: the block of that prefix, or the detectors' and the classifier's mitigations of that destination |
//!
//! A block inside an allowlisted prefix is refused (409); a wider one leaves the
//! allowlisted addresses in it passing (the kernel asks the allowlist first).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    daemon::api::call::{parse_body, ApiError},
    daemon::state::{Inner, Shared},
    detect::{live::Learned, Prefix},
};
use statewall_common::{detect::DestKey, maps::addr_ip};

type ApiResult = Result<Response, ApiError>;

/// Adds the detect routes.
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    r.route("/api/v1/detect", get(show))
        .route("/api/v1/detect/blocks", post(block))
        .route("/api/v1/detect/{*addr}", delete(release))
}

/// A learned detector's part of `GET /api/v1/detect` (null without it).
fn classifier(s: &Shared, w: Learned) -> serde_json::Value {
    let c = s.learned(w).lock().unwrap_or_else(|p| p.into_inner());
    let Some(l) = &c.live else {
        return json!(null);
    };
    let n = match w {
        Learned::Flows => "packets_per_flow",
        Learned::Mining => "history_windows",
    };
    json!({
        "model": l.config.model.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
        "window_s": l.model.shape.t_ns as f64 / 1e9,
        n: l.model.shape.n,
        "sessions": l.config.sessions,
        "stats": l.stats,
        "held": c.held.len(),
        "max_blocks": l.config.max_blocks,
        "refused": c.refused,
        "allowlisted": c.allowlisted,
        "lone": c.lone,
        "last": c.last,
        "destinations": c.dests.len(),
        "last_destinations": c.last_destinations,
    })
}

/// Everything `GET /api/v1/detect` shows (also for `statewall top`).
fn overview(s: &Shared, g: &Inner) -> Result<serde_json::Value, ApiError> {
    let mitigations = s.mitigations(g).map_err(ApiError::internal)?;
    let counters: serde_json::Map<String, serde_json::Value> = g
        .engine
        .detect_counters()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(n, v)| (n.to_string(), json!(v)))
        .collect();
    let (mode, allowlist, detectors) = match &g.config.detect {
        None => (json!(null), json!([]), json!([])),
        Some(d) => {
            let list: Vec<_> = d
                .detectors()
                .iter()
                .map(|c| json!({"name": c.name, "enabled": c.enabled, "threshold": c.threshold}))
                .collect();
            (json!(d.mode), json!(d.allowlist), json!(list))
        }
    };
    // The allowlist in force: the configured prefixes and the gateways.
    let in_force: Vec<String> = match &g.config.detect {
        None => Vec::new(),
        Some(_) => g
            .engine
            .detect_allowlist()
            .map_err(ApiError::internal)?
            .iter()
            .map(|p| p.to_string())
            .collect(),
    };
    Ok(json!({
        "mode": mode,
        "allowlist": allowlist,
        "allowlist_in_force": in_force,
        "detectors": detectors,
        "counters": counters,
        "mitigations": mitigations,
        "classifier": classifier(s, Learned::Flows),
        "mining": classifier(s, Learned::Mining),
    }))
}

async fn show(State(s): State<Arc<Shared>>) -> ApiResult {
    let g = s.lock();
    Ok(Json(overview(&s, &g)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    prefix: String,
    #[serde(default)]
    seconds: Option<u64>,
}

async fn block(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let r: BlockRequest = parse_body(&body)?;
    let p = Prefix::parse(&r.prefix).map_err(|e| ApiError::bad(format!("prefix: {e}")))?;
    if r.seconds == Some(0) || r.seconds.is_some_and(|s| s > 30 * 86400) {
        return Err(ApiError::bad(
            "seconds: 1 to 2592000, or none (until released)",
        ));
    }
    let mut g = s.lock();
    let Some(d) = &g.config.detect else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the detect stage is off: add a [detect] section to the config (its blocks run \
             first on ingress)"
                .into(),
        ));
    };
    let allow = g.engine.detect_allowlist_or(d);
    if let Some(a) = allow.iter().find(|a| a.len <= p.len && a.contains(p.addr)) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{p} is on the allowlist ({a}): it is never blocked"),
        ));
    }
    let expires = match r.seconds {
        Some(s) => g.engine.kernel_now() + s * 1_000_000_000,
        None => 0,
    };
    g.engine.detect_block(&p, expires).map_err(|e| match e {
        crate::engine::EngineError::TableFull { .. } => {
            ApiError(StatusCode::CONFLICT, e.to_string())
        }
        e => ApiError::internal(e),
    })?;
    if let Some(l) = &s.cluster {
        l.share_block(
            &p.to_string(),
            expires,
            g.engine.kernel_now(),
            "api",
            "by hand",
        );
    }
    tracing::warn!(prefix = %p, seconds = ?r.seconds, "detect: blocked through the API");
    Ok((
        StatusCode::CREATED,
        Json(json!({"blocked": p.to_string(), "seconds": r.seconds})),
    )
        .into_response())
}

async fn release(State(s): State<Arc<Shared>>, Path(addr): Path<String>) -> ApiResult {
    let p = Prefix::parse(&addr).map_err(|e| ApiError::bad(format!("address: {e}")))?;
    let mut g = s.lock();
    let unblocked = g.engine.detect_unblock(&p).map_err(ApiError::internal)?;
    let full = p.len == if p.addr.is_ipv4() { 32 } else { 128 };
    let ms: Vec<usize> = g.detector_machines().0.iter().map(|(i, _)| *i).collect();
    let released = if full {
        let by_machines = g
            .engine
            .detect_release_destination(&ms, p.addr)
            .map_err(ApiError::internal)?;
        let ours = |k: &DestKey| addr_ip(k.family, &k.addr) == p.addr;
        let by_classifier = g
            .engine
            .detect_dest_remove(ours)
            .map_err(ApiError::internal)?;
        s.classifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dests
            .retain(|k, _| !ours(k));
        by_machines + by_classifier
    } else {
        0
    };
    // In a cluster the block may be held on other hosts only: released everywhere.
    if let Some(l) = &s.cluster {
        l.unshare_block(&p.to_string());
    }
    if !unblocked && released == 0 && s.cluster.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no block of {p} and no mitigation for it as a destination"),
        ));
    }
    tracing::warn!(target = %p, unblocked, released, "detect: released by hand");
    Ok(
        Json(json!({"released": p.to_string(), "block": unblocked, "destination": released > 0}))
            .into_response(),
    )
}
