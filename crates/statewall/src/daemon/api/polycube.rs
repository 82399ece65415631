//! The Polycube Dynmon name space `/polycube/v1/dynmon/{name}` (COMPAT.md sections 4 and 5),
//! shared by the config's monitors and the dynamic monitors: a name is looked up among the
//! config's monitors first, then among the dynamic ones.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/polycube/v1/dynmon/{name}` | the monitor as Dynmon shows it (404 when absent) |
//! | POST | `/polycube/v1/dynmon/{name}` | load a dynamic monitor (409 for a config monitor's name) |
//! | DELETE | `/polycube/v1/dynmon/{name}` | unload a dynamic monitor (409 for a config monitor) |
//! | GET | `/polycube/v1/dynmon/{name}/metrics` | take a window, in Dynmon's shape (config monitors: IPv4 only, integer encodings of COMPAT.md) |
//!
//! The other Dynmon paths (`dataplane-config`, `open-metrics`, attach and detach) are the
//! dynamic monitors' own ([`crate::daemon::api::dynmon`]); the firewall's Polycube paths
//! are served by the firewall's handlers ([`crate::daemon::api::firewall`]).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use crate::daemon::{
    api::{call::ApiError, dynmon, monitor},
    state::Shared,
};

type ApiResult = Result<Response, ApiError>;

/// Adds the shared Dynmon routes.
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    let mut r = r;
    for slash in ["", "/"] {
        r = r
            .route(
                &format!("/polycube/v1/dynmon/{{name}}{slash}"),
                get(show).post(create).delete(delete),
            )
            .route(
                &format!("/polycube/v1/dynmon/{{name}}/metrics{slash}"),
                get(metrics),
            );
    }
    r
}

async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    monitor::pc_show(&s, &name)
        .or_else(|| dynmon::pc_show(&s, &name))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| monitor::not_found(&name))
}

async fn create(State(s): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    dynmon::pc_create(s, name, body).await
}

async fn delete(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    if s.is_builtin_monitor(&name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{name:?} is a monitor of the config file: remove it there and reload"),
        ));
    }
    dynmon::pc_delete(s, name).await
}

async fn metrics(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    if !s.is_builtin_monitor(&name) && dynmon::exists(&s, &name) {
        return dynmon::pc_metrics(s, name).await;
    }
    monitor::pc_metrics(s, name).await
}
