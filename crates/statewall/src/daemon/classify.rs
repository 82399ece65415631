//! The learned classifier's task: once a second, blocks it holds are re-armed while their
//! drop counters grow (the monitor no longer sees what a block drops) and forgotten when
//! gone; once per model window, a window is read and classified (on a blocking thread: a
//! read waits a grace period) and, under `enforce`, each attacking source is blocked for
//! `[detect] expiry`, unless allowlisted, one of the watched interfaces' own addresses, or
//! `max_blocks` are held; a block made by hand is never touched.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use statewall_common::detect::Block;

use crate::{
    daemon::state::Shared,
    detect::{
        live::{Classifier, Detection, Held, LAST_MAX},
        Mode, Prefix,
    },
    engine::EngineError,
};

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Classifier> {
    s.classifier.lock().unwrap_or_else(|p| p.into_inner())
}

/// The task.
pub async fn run(s: Arc<Shared>, rx: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Reads once per model window, on their own clock (a window of 2.5 s is read every
    // 2.5 s, not every 3).
    let mut window = Duration::ZERO;
    let mut reads = tokio::time::interval(Duration::from_secs(3600));
    loop {
        let mut r = rx.clone();
        let read_now = tokio::select! {
            _ = tick.tick() => false,
            _ = reads.tick() => true,
            _ = r.wait_for(|v| *v) => return Ok(()),
        };
        let w = lock(&s)
            .live
            .as_ref()
            .map(|l| Duration::from_nanos(l.model.shape.t_ns));
        match w {
            Some(w) if w != window => {
                // A new model (start, reload): its window, first read one window from now.
                window = w;
                reads = tokio::time::interval_at(tokio::time::Instant::now() + w, w);
                reads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                continue;
            }
            None => {
                window = Duration::ZERO;
                rearm(&s);
                continue;
            }
            _ => {}
        }
        if !read_now {
            rearm(&s);
            continue;
        }
        let s2 = s.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut c = lock(&s2);
            c.live.as_mut().map(|l| (l.window(), l.local_addrs()))
        })
        .await?;
        match read {
            Some((Ok(d), local)) => act(&s, d, &local),
            Some((Err(e), _)) => tracing::warn!("detect classifier: reading its window: {e}"),
            None => {}
        }
    }
}

/// Blocks the sources of `found` (under `enforce`) and keeps them as the last detections.
/// A source is blocked once a window however many of its flows were found; never one of
/// the watched interfaces' own addresses (`local`) or an allowlisted one; and a block the
/// classifier did not make (by hand, through the API) is left as it is.
fn act(s: &Shared, found: Vec<Detection>, local: &[std::net::IpAddr]) {
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let Some(d) = g.config.detect.clone() else {
        return;
    };
    let allow = d.allow_prefixes().unwrap_or_default();
    let max = d.classifier.as_ref().map_or(0, |c| c.max_blocks);
    let mut c = lock(s);
    if !found.is_empty() {
        tracing::info!(
            flows = found.len(),
            "detect classifier: flows classified as attacks"
        );
    }
    let existing: HashMap<Prefix, Block> = if d.mode == Mode::Enforce && !found.is_empty() {
        match g.engine.detect_blocks() {
            Ok(b) => b.into_iter().collect(),
            Err(e) => {
                tracing::warn!("detect classifier: reading blocks: {e}");
                return;
            }
        }
    } else {
        HashMap::new()
    };
    let until = g.engine.kernel_now() + d.expiry.0.as_nanos() as u64;
    let mut done: HashSet<std::net::IpAddr> = HashSet::new();
    for det in &found {
        if !done.insert(det.source) {
            continue;
        }
        if local.contains(&det.source) || allow.iter().any(|p| p.contains(det.source)) {
            c.allowlisted += 1;
            continue;
        }
        if d.mode != Mode::Enforce {
            continue;
        }
        let p = Prefix::new(det.source, if det.source.is_ipv4() { 32 } else { 128 });
        let known = c.held.contains_key(&p);
        if existing.contains_key(&p) && !known {
            // Blocked by hand: its expiry stays the one given.
            continue;
        }
        if !known && c.held.len() >= max {
            c.refused += 1;
            continue;
        }
        if existing.get(&p).is_some_and(|b| b.expires_ns >= until) {
            continue;
        }
        match g.engine.detect_block(&p, until) {
            Ok(()) => {
                let reason = format!(
                    "flow {} classified as an attack ({} packets in a {} s window)",
                    det.flow,
                    det.packets,
                    c.live
                        .as_ref()
                        .map_or(0, |l| l.model.shape.t_ns / 1_000_000_000)
                );
                if !known {
                    tracing::info!(
                        "detect classifier: blocked {p} for {:?}: {reason}",
                        d.expiry.0
                    );
                }
                if let Some(l) = &s.cluster {
                    l.share_block(
                        &p.to_string(),
                        until,
                        g.engine.kernel_now(),
                        "classifier",
                        &reason,
                    );
                }
                let seen = c.held.get(&p).map_or(0, |h| h.dropped_seen);
                c.held.insert(
                    p,
                    Held {
                        reason,
                        dropped_seen: seen,
                    },
                );
            }
            Err(EngineError::TableFull { .. }) => c.refused += 1,
            Err(e) => tracing::warn!("detect classifier: blocking {p}: {e}"),
        }
    }
    c.last = found.into_iter().take(LAST_MAX).collect();
}

/// Re-arms the classifier's blocks whose drop count grew; forgets those gone.
fn rearm(s: &Shared) {
    // (Nothing held, the common case: the daemon's lock is not taken.)
    if lock(s).held.is_empty() {
        return;
    }
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = lock(s);
    let Some(expiry) = g.config.detect.as_ref().map(|d| d.expiry.0) else {
        c.held.clear();
        return;
    };
    let blocks: HashMap<Prefix, Block> = match g.engine.detect_blocks() {
        Ok(b) => b.into_iter().collect(),
        Err(e) => {
            tracing::warn!("detect classifier: reading blocks: {e}");
            return;
        }
    };
    let now = g.engine.kernel_now();
    let mut gone = Vec::new();
    for (p, h) in c.held.iter_mut() {
        let Some(b) = blocks.get(p) else {
            gone.push(*p);
            continue;
        };
        if b.expires_ns != 0 && b.expires_ns <= now {
            gone.push(*p);
            continue;
        }
        if b.dropped > h.dropped_seen {
            h.dropped_seen = b.dropped;
            let until = now + expiry.as_nanos() as u64;
            match g.engine.detect_block(p, until) {
                Ok(()) => {
                    if let Some(l) = &s.cluster {
                        l.share_block(&p.to_string(), until, now, "classifier", &h.reason);
                    }
                }
                Err(e) => tracing::warn!("detect classifier: re-arming {p}: {e}"),
            }
        }
    }
    for p in gone {
        c.held.remove(&p);
    }
}
