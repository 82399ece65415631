//! The shell's side of SPA: a candidate read from the ring buffer is verified by the
//! stage ([`crate::spa::SpaRuntime`]) and the grants it earns are written through the
//! engine, with door triggers and events.

use crate::{daemon::state::Shared, spa::Candidate};

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
    match r {
        Ok(a) => {
            let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            let mut opened = Vec::new();
            for (k, secs) in &a.grants {
                match g
                    .engine
                    .grant(*k, *secs, statewall_common::maps::GRANT_BY_SPA)
                {
                    Ok(_) => {
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
