//! The shell's side of the knock doors: what joins the door bookkeeping
//! ([`crate::xfsm::doors::Doors`]) to the daemon's state: kernel events read from the
//! ring buffer, the sweeper that closes doors whose grants ended, and manual open and close
//! (API, CLI: `POST /api/v1/doors/{door}/open` and `/close`, routed here).

use std::{net::IpAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use statewall_common::{
    maps::{GrantKey, GRANT_BY_API},
    xfsm::{reason, Event},
};

use crate::{
    config::KnockConfig,
    daemon::api::call::{parse_body, ApiError},
    daemon::state::{Inner, Shared},
    xfsm::doors::{door_keys, event_kind, event_source, unix_now, DoorEvent},
};

use crate::xfsm::error::DoorError;

/// The door called `name` in the config in force.
fn find_door(g: &Inner, name: &str) -> Result<KnockConfig, DoorError> {
    g.config
        .knocks
        .iter()
        .find(|k| k.name == name)
        .cloned()
        .ok_or_else(|| DoorError::NoDoor(name.to_string()))
}

/// Handles one kernel event.
pub fn on_kernel_event(s: &Shared, e: &Event) {
    // Doors are machines 0.., the `[[xfsm]]` machines follow: their events are
    // published the same way, under the machine's name.
    let (door, name, from, to, reg_names, detector) = {
        let g = s.lock();
        let Some(c) = g.engine.xfsm_compiled() else {
            return;
        };
        let m = e.machine as usize;
        let nk = g.config.knocks.len();
        let (door, name, regs, detector) = match g.config.knocks.get(m) {
            Some(k) => (Some(k.clone()), k.name.clone(), Vec::new(), false),
            None => match g.config.machines.get(m - nk) {
                Some(x) => (None, x.name.clone(), x.registers.clone(), x.exempt),
                None => return,
            },
        };
        (
            door,
            name,
            c.state_name(m, e.old_state),
            c.state_name(m, e.new_state),
            regs,
            detector,
        )
    };
    let registers = (matches!(e.reason, reason::TRANSITION | reason::ACTION)
        && !reg_names.is_empty())
    .then(|| reg_names.into_iter().zip(e.regs).collect());
    let source = event_source(e);
    if detector && to == crate::detect::FLOOD && from != crate::detect::FLOOD {
        // (The event's registers are those before the transition's updates; its address
        // is the packet's source, one of the flood's.)
        let count = e.regs[1];
        tracing::warn!(
            detector = %name,
            count,
            "detect: flood detected ({count} packets to one destination within a second, \
             one of them from {source}): `statewall detect list` shows the mitigation"
        );
    }
    let packet = match e.proto {
        6 => Some(format!("tcp/{}", e.port)),
        17 => Some(format!("udp/{}", e.port)),
        _ => None,
    };
    s.doors.publish(DoorEvent {
        time: unix_now(),
        door: name,
        source,
        kind: event_kind(e).into(),
        from,
        to,
        packet,
        registers,
    });
    let Some(door) = door else { return };
    match e.reason {
        reason::GRANTED => {
            s.doors.opened(&door, source, "knock");
            share_door(s, &door, source);
        }
        reason::REVOKED => s.doors.closed(&door, source, false),
        _ => {}
    }
}

/// Shares the grants a knock just opened with the cluster (`[cluster]`), with the
/// expiries the kernel gave them.
fn share_door(s: &Shared, door: &KnockConfig, source: IpAddr) {
    let Some(link) = &s.cluster else { return };
    let g = s.lock();
    let now = g.engine.kernel_now();
    for key in door_keys(door, source) {
        if let Ok(Some(v)) = g.engine.grant_of(&key) {
            link.share(&key, v.expires_ns, now, "knock", &door.name);
        }
    }
}

/// Closes doors whose grants have all ended (called every second).
pub fn sweep(s: &Shared, live: &[GrantKey]) {
    // Knock doors, and SPA actions and stanzas with commands.
    let mut knocks = {
        let g = s.lock();
        g.config.knocks.clone()
    };
    knocks.extend(
        s.spa_triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned(),
    );
    let open = s.doors.open_keys();
    for (name, source) in open {
        match knocks.iter().find(|k| k.name == name) {
            Some(k) => {
                if !door_keys(k, source).iter().any(|key| live.contains(key)) {
                    s.doors.closed(k, source, true);
                }
            }
            // The door left the config: forget it.
            None => {
                s.doors.forget(&name, source);
            }
        }
    }
}

/// Opens a door for a source by hand (API/CLI): grants its ports for `seconds` (the
/// door's `open_for` when absent) and runs the start command.
pub fn manual_open(
    s: &Shared,
    door: &str,
    source: IpAddr,
    seconds: Option<u64>,
) -> Result<(KnockConfig, u64), DoorError> {
    let k = {
        let mut g = s.lock();
        let k = find_door(&g, door)?;
        let secs = seconds.unwrap_or_else(|| k.open_for.0.as_secs().max(1));
        for key in door_keys(&k, source) {
            g.engine.grant(key, secs, GRANT_BY_API)?;
        }
        (k, secs)
    };
    s.doors.opened(&k.0, source, "api");
    share_door(s, &k.0, source);
    Ok(k)
}

/// Closes a door for a source by hand: revokes its ports and runs the stop command.
pub fn manual_close(s: &Shared, door: &str, source: IpAddr) -> Result<bool, DoorError> {
    let (k, any) = {
        let mut g = s.lock();
        let k = find_door(&g, door)?;
        let mut any = false;
        for key in door_keys(&k, source) {
            any |= g.engine.revoke(&key)?;
            if let Some(l) = &s.cluster {
                l.unshare(&key);
            }
        }
        (k, any)
    };
    s.doors.closed(&k, source, false);
    Ok(any)
}

/// Adds the doors' manual open and close (`POST /api/v1/doors/{door}/open`, `/close`).
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    r.route("/api/v1/doors/{door}/open", post(door_open))
        .route("/api/v1/doors/{door}/close", post(door_close))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DoorReq {
    source: IpAddr,
    #[serde(default)]
    seconds: Option<u64>,
}

async fn door_open(
    State(s): State<Arc<Shared>>,
    Path(door): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: DoorReq = parse_body(&body)?;
    if r.seconds == Some(0) || r.seconds.is_some_and(|n| n > 86400 * 365) {
        return Err(ApiError::bad("seconds: from 1 to 31536000"));
    }
    let (k, secs) = manual_open(&s, &door, r.source, r.seconds)?;
    Ok(
        Json(
            json!({"door": k.name, "source": r.source, "seconds": secs, "protected": k.protected}),
        )
        .into_response(),
    )
}

async fn door_close(
    State(s): State<Arc<Shared>>,
    Path(door): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: DoorReq = parse_body(&body)?;
    let was_open = manual_close(&s, &door, r.source)?;
    Ok(Json(json!({"door": door, "source": r.source, "was_open": was_open})).into_response())
}
