//! The shell's side of SPA: a candidate read from the ring buffer is queued by its
//! follower ([`queue`]) for the verifier thread ([`start_verifier`]), which verifies it
//! with the stage ([`crate::spa::SpaRuntime`]: decryption, the replay cache's fdatasync,
//! blocking work kept off the async workers) and writes the grants it earns through the
//! engine, with door triggers and events.

use std::sync::{mpsc::Receiver, Arc};

use crate::{daemon::state::Shared, spa::Candidate};

/// Candidates waiting for the verifier at most. A full queue turns candidates away
/// (counted as `queue_full`): the kernel already limits them per source.
pub const QUEUE: usize = 4096;

/// Hands a candidate to the verifier thread (the follower's handler: never blocks).
pub fn queue(s: &Shared, c: Candidate) {
    if s.spa_queue.try_send(c).is_err() {
        s.spa_queue_full
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Starts the verifier thread (supervised as `spa_verifier`): it verifies queued
/// candidates one by one until the daemon ends.
/// Called from the runtime: start commands and events that a verdict triggers are spawned
/// on it.
pub fn start_verifier(s: &Arc<Shared>, rx: Receiver<Candidate>) -> std::io::Result<()> {
    let rx = std::sync::Mutex::new(rx);
    let shared = s.clone();
    let runtime = tokio::runtime::Handle::current();
    s.tasks.spawn_thread("spa_verifier", move || {
        let _in_runtime = runtime.enter();
        let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(c) = rx.recv() {
            on_candidate(&shared, &c);
            if super::supervise::fault("spa_verifier") {
                panic!("fault injected into the SPA verifier (STATEWALL_FAULTS)");
            }
        }
    })
}

/// Verifies one candidate and applies the grants it earns.
pub fn on_candidate(s: &Shared, c: &Candidate) {
    let now = crate::engine::clock::unix_secs();
    let kind = if c.kind == statewall_common::spa::KIND_PKD {
        "pkd"
    } else {
        "fwknop"
    };
    let (r, triggers) = {
        let mut spa = s.spa.lock().unwrap_or_else(|p| p.into_inner());
        let r = spa.verify(c, now);
        // Read under `spa`, as reload writes them: the triggers of the setup just used.
        let triggers = s
            .spa_triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (r, triggers)
    };
    let r = r.and_then(|a| claim(s, c, a, now));
    match r {
        Ok(a) => {
            let mut g = s.lock();
            let mut opened = Vec::new();
            for (k, secs) in &a.grants {
                match g
                    .engine
                    .grant(*k, *secs, statewall_common::maps::GRANT_BY_SPA)
                {
                    Ok(until) => {
                        if let Some(l) = &s.cluster {
                            l.share(k, until, g.engine.kernel_now(), "spa", &a.name);
                        }
                        opened.push(format!("{}/{}", crate::config::proto_name(k.proto), k.port))
                    }
                    Err(e) => {
                        *s.spa
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .counts
                            .entry("grant_refused")
                            .or_default() += 1;
                        tracing::warn!(source = %c.src, action = %a.name, "SPA grant refused: {e}")
                    }
                }
            }
            drop(g);
            s.spa
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .count_accepted();
            tracing::info!(source = %c.src, kind, action = %a.name, opened = %opened.join(","), "SPA accepted");
            for t in triggers.iter().filter(|t| a.names.contains(&t.name)) {
                s.doors.opened(t, c.src, "spa");
            }
            s.doors.publish(crate::xfsm::doors::DoorEvent {
                time: crate::xfsm::doors::unix_now(),
                door: a.name,
                source: c.src,
                kind: "spa_accepted".into(),
                from: String::new(),
                to: opened.join(","),
                packet: Some(format!("udp/{}", c.dport)),
                registers: None,
            });
        }
        Err(e) => {
            // At most one line per reason every 10 s at info (a flood must not flood the
            // log); the counters have every one.
            let loud = {
                let mut spa = s.spa.lock().unwrap_or_else(|p| p.into_inner());
                let last = spa.last_log.entry(e.name()).or_insert(0);
                let loud = now >= *last + 10;
                if loud {
                    *last = now;
                }
                loud
            };
            if loud {
                tracing::info!(source = %c.src, kind, reason = e.name(), "SPA refused (further refusals for 10 s at debug level; see the counters)");
            } else {
                tracing::debug!(source = %c.src, kind, reason = e.name(), "SPA refused");
            }
        }
    }
}

/// Claims an accepted packet's digest for the whole cluster (`[cluster]`): a digest
/// another host claimed first is a replay; etcd out of reach refuses the packet or lets
/// the local check stand, as `on_cluster_down` says. Without a cluster, nothing to do.
fn claim(
    s: &Shared,
    c: &Candidate,
    a: crate::spa::Accepted,
    now: u64,
) -> Result<crate::spa::Accepted, crate::spa::Reject> {
    use crate::cluster::link::Claim;
    use crate::{cluster::OnDown, spa::Reject};
    let Some(link) = &s.cluster else {
        return Ok(a);
    };
    let refuse = |r: Reject| {
        *s.spa
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts
            .entry(r.name())
            .or_default() += 1;
        Err(r)
    };
    match link.claim(&a.digest, a.until, now) {
        Claim::Mine => Ok(a),
        // (Logged with the other refusals, at most once per reason every 10 s.)
        Claim::Replay => refuse(Reject::Replay),
        Claim::Down(OnDown::Refuse) => refuse(Reject::ClusterDown),
        Claim::Down(OnDown::Local) => {
            tracing::info!(source = %c.src, action = %a.name, "SPA accepted on the local replay check only (etcd unreachable; the claim is made when it returns)");
            Ok(a)
        }
    }
}
