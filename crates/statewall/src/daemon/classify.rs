//! The learned classifier's task: once a second, blocks it holds are re-armed while their
//! drop counters grow (the monitor no longer sees what a block drops) and forgotten when
//! gone; once per model window, a window is read and classified (on a blocking thread: a
//! read waits a grace period) and, under `enforce`, each attacking source is blocked for
//! `[detect] expiry`, unless allowlisted or `max_blocks` are held.

use std::{sync::Arc, time::Duration};

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
    let mut since_read = Duration::ZERO;
    loop {
        let mut r = rx.clone();
        tokio::select! {
            _ = tick.tick() => {}
            _ = r.wait_for(|v| *v) => return Ok(()),
        }
        rearm(&s);
        since_read += Duration::from_secs(1);
        let window = match lock(&s).live.as_ref() {
            Some(l) => Duration::from_nanos(l.model.shape.t_ns),
            None => continue,
        };
        if since_read < window {
            continue;
        }
        since_read = Duration::ZERO;
        let s2 = s.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut c = lock(&s2);
            c.live.as_mut().map(|l| l.window())
        })
        .await?;
        match read {
            Some(Ok(d)) => act(&s, d),
            Some(Err(e)) => tracing::warn!("detect classifier: reading its window: {e}"),
            None => {}
        }
    }
}

/// Blocks the sources of `found` (under `enforce`) and keeps them as the last detections.
fn act(s: &Shared, found: Vec<Detection>) {
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
    for det in &found {
        if allow.iter().any(|p| p.contains(det.source)) {
            c.allowlisted += 1;
            continue;
        }
        if d.mode != Mode::Enforce {
            continue;
        }
        let p = Prefix::new(det.source, if det.source.is_ipv4() { 32 } else { 128 });
        let known = c.held.contains_key(&p);
        if !known && c.held.len() >= max {
            c.refused += 1;
            continue;
        }
        let until = g.engine.kernel_now() + d.expiry.0.as_nanos() as u64;
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
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = lock(s);
    if c.held.is_empty() {
        return;
    }
    let Some(expiry) = g.config.detect.as_ref().map(|d| d.expiry.0) else {
        c.held.clear();
        return;
    };
    let blocks = match g.engine.detect_blocks() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("detect classifier: reading blocks: {e}");
            return;
        }
    };
    let now = g.engine.kernel_now();
    let mut gone = Vec::new();
    for (p, h) in c.held.iter_mut() {
        let Some((_, b)) = blocks.iter().find(|(q, _)| q == p) else {
            gone.push(*p);
            continue;
        };
        if b.expires_ns != 0 && b.expires_ns <= now {
            gone.push(*p);
            continue;
        }
        if b.dropped > h.dropped_seen {
            h.dropped_seen = b.dropped;
            if let Err(e) = g.engine.detect_block(p, now + expiry.as_nanos() as u64) {
                tracing::warn!("detect classifier: re-arming {p}: {e}");
            }
        }
    }
    for p in gone {
        c.held.remove(&p);
    }
}
