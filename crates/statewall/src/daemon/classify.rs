//! A learned detector's task (one for `[detect.classifier]`, one for `[detect.mining]`):
//! once a second, blocks it holds are re-armed while their drop counters grow (the monitor
//! no longer sees what a block drops) and forgotten when gone; once per model window, a
//! window is read and classified (on a blocking thread: a read waits a grace period) and,
//! under `enforce`, the address each detection names (a flood's source, a miner's pool) is
//! blocked for `[detect] expiry`, unless allowlisted, one of the watched interfaces' own
//! addresses, or `max_blocks` are held; a block made by hand is never touched. Flood
//! flows from many sources to one destination make a destination mitigation instead
//! ([`crate::detect::spread`]), re-armed the same way.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use statewall_common::detect::{in_force, Block, DestKey, DestMit, DEST_LIMIT, DEST_VERIFY};

use crate::{
    daemon::state::Shared,
    detect::{
        live::{lone_sources, orient, Classifier, Detection, Held, Learned, LAST_MAX},
        spread, Mode, Prefix,
    },
    engine::EngineError,
};

fn lock(s: &Shared, w: Learned) -> std::sync::MutexGuard<'_, Classifier> {
    s.learned(w).lock().unwrap_or_else(|p| p.into_inner())
}

/// The task of the detector `w`.
pub async fn run(
    s: Arc<Shared>,
    rx: tokio::sync::watch::Receiver<bool>,
    w: Learned,
) -> anyhow::Result<()> {
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
        let t = lock(&s, w)
            .live
            .as_ref()
            .map(|l| Duration::from_nanos(l.model.shape.t_ns));
        match t {
            Some(t) if t != window => {
                // A new model (start, reload): its window, first read one window from now.
                window = t;
                reads = tokio::time::interval_at(tokio::time::Instant::now() + t, t);
                reads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                continue;
            }
            None => {
                window = Duration::ZERO;
                rearm(&s, w);
                continue;
            }
            _ => {}
        }
        if !read_now {
            rearm(&s, w);
            continue;
        }
        let s2 = s.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut c = lock(&s2, w);
            c.live.as_mut().map(|l| (l.window(), l.local_addrs()))
        })
        .await?;
        match read {
            Some((Ok(mut d), local)) => {
                if w == Learned::Flows {
                    orient(&mut d, &local);
                }
                act(&s, w, d, &local)
            }
            Some((Err(e), _)) => tracing::warn!("detect {}: reading its window: {e}", w.section()),
            None => {}
        }
    }
}

/// Blocks the addresses `found` names (under `enforce`) and keeps them as the last
/// detections. An address is blocked once a window however many of its flows were found;
/// never one of the watched interfaces' own addresses (`local`) or an allowlisted one; and
/// a block the detector did not make (by hand, through the API) is left as it is.
fn act(s: &Shared, w: Learned, found: Vec<Detection>, local: &[std::net::IpAddr]) {
    let mut g = s.lock();
    let Some(d) = g.config.detect.clone() else {
        return;
    };
    // The allowlist in force (the gateways with the configured prefixes), read only when
    // there is something to block.
    let allow = if found.is_empty() {
        Vec::new()
    } else {
        g.engine.detect_allowlist_or(&d)
    };
    let max = w.config(&d).map_or(0, |c| c.max_blocks);
    let mut c = lock(s, w);
    let section = w.section();
    if !found.is_empty() {
        tracing::info!(
            flows = found.len(),
            "detect {section}: flows classified as attacks"
        );
    }
    let existing: HashMap<Prefix, Block> = if d.mode == Mode::Enforce && !found.is_empty() {
        match g.engine.detect_blocks() {
            Ok(b) => b.into_iter().collect(),
            Err(e) => {
                tracing::warn!("detect {section}: reading blocks: {e}");
                return;
            }
        }
    } else {
        HashMap::new()
    };
    let until = g.engine.kernel_now() + d.expiry.0.as_nanos() as u64;
    let plans = match (w, w.config(&d)) {
        (Learned::Flows, Some(cc)) => {
            spread::plans(&found, cc.destination_sources, cc.destination_limit)
        }
        _ => Vec::new(),
    };
    let t = c
        .live
        .as_ref()
        .map_or(0, |l| l.model.shape.t_ns / 1_000_000_000);
    c.last_destinations = plans
        .iter()
        .map(|p| format!("{}: {}", spread::target(&p.key), spread::action(p)))
        .collect();
    let placed = if d.mode == Mode::Enforce {
        destinations(&mut g.engine, &mut c, &plans, until, t)
    } else {
        Vec::new()
    };
    // Floods: a source of a single packet is not blocked one by one.
    let lone = match w {
        Learned::Flows => lone_sources(&found),
        Learned::Mining => HashSet::new(),
    };
    let mut done: HashSet<std::net::IpAddr> = HashSet::new();
    for det in &found {
        // A flow a destination mitigation in place covers: its source is not blocked on
        // its own.
        if placed.iter().any(|p| spread::covers(p, det)) || !done.insert(det.block) {
            continue;
        }
        if local.contains(&det.block) || allow.iter().any(|p| p.contains(det.block)) {
            c.allowlisted += 1;
            continue;
        }
        if lone.contains(&det.block) {
            c.lone += 1;
            continue;
        }
        if d.mode != Mode::Enforce {
            continue;
        }
        let p = Prefix::host(det.block);
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
                let reason = match w {
                    Learned::Flows => format!(
                        "flow {} classified as an attack by {} of {} trees ({} in a {t} s window)",
                        det.flow, det.votes.0, det.votes.1, packets(det.packets)
                    ),
                    Learned::Mining if det.known_miner => format!(
                        "session {} goes to a pool its host was found mining at: {} mines at this pool ({} in a {t} s window)",
                        det.flow, det.source, packets(det.packets)
                    ),
                    Learned::Mining => format!(
                        "session {} classified as mining by {} of {} trees: {} mines at this pool ({} in a {t} s window)",
                        det.flow, det.votes.0, det.votes.1, det.source, packets(det.packets)
                    ),
                };
                if !known {
                    tracing::info!(
                        "detect {section}: blocked {p} for {:?}: {reason}",
                        d.expiry.0
                    );
                }
                if let Some(l) = &s.cluster {
                    l.share_block(
                        &p.to_string(),
                        until,
                        g.engine.kernel_now(),
                        section,
                        &reason,
                    );
                }
                let seen = c.held.get(&p).map_or(0, |h| h.dropped_seen);
                c.held.insert(
                    p,
                    Held {
                        reason,
                        dropped_seen: seen,
                        detector: section,
                    },
                );
            }
            Err(EngineError::TableFull { .. }) => c.refused += 1,
            Err(e) => tracing::warn!("detect {section}: blocking {p}: {e}"),
        }
    }
    c.last = found.into_iter().take(LAST_MAX).collect();
}

/// "1 packet", "10 packets".
fn packets(n: usize) -> String {
    if n == 1 {
        "1 packet".into()
    } else {
        format!("{n} packets")
    }
}

/// Puts the destination mitigations `plans` in place (or re-arms them) until `until`;
/// `t`: the window, seconds, for their reasons. The plans in place.
fn destinations<'a>(
    engine: &mut crate::engine::Engine,
    c: &mut Classifier,
    plans: &'a [spread::Plan],
    until: u64,
    t: u64,
) -> Vec<&'a spread::Plan> {
    let mut placed = Vec::new();
    for p in plans {
        let target = spread::target(&p.key);
        let known = c.dests.contains_key(&p.key);
        match engine.detect_dest_put(&p.key, p.mode, p.limit, until) {
            Ok(()) => {
                let reason = format!(
                    "{} flows from {} sources classified as attacks in a {t} s window: {}",
                    p.flows,
                    p.sources,
                    spread::action(p)
                );
                if !known {
                    tracing::info!("detect classifier: destination {target}: {reason}");
                }
                let seen = c.dests.get(&p.key).map_or(0, |h| h.dropped_seen);
                c.dests.insert(
                    p.key,
                    Held {
                        reason,
                        dropped_seen: seen,
                        detector: Learned::Flows.section(),
                    },
                );
                placed.push(p);
            }
            Err(EngineError::TableFull { .. }) => c.refused += 1,
            Err(e) => tracing::warn!("detect classifier: destination {target}: {e}"),
        }
    }
    placed
}

/// What shows a destination mitigation's flood going on: its drops, less (verifying)
/// the SYNs it admitted, as each admitted client had one held first.
fn flood_count(m: &DestMit) -> u64 {
    if m.mode == DEST_VERIFY {
        m.dropped.saturating_sub(m.passed)
    } else {
        m.dropped
    }
}

/// Re-arms the detector's blocks and destination mitigations whose drop count grew;
/// forgets those gone.
fn rearm(s: &Shared, w: Learned) {
    // (Nothing held, the common case: the daemon's lock is not taken.)
    {
        let c = lock(s, w);
        if c.held.is_empty() && c.dests.is_empty() {
            return;
        }
    }
    let mut g = s.lock();
    let mut c = lock(s, w);
    let Some(expiry) = g.config.detect.as_ref().map(|d| d.expiry.0) else {
        c.held.clear();
        c.dests.clear();
        return;
    };
    let blocks: HashMap<Prefix, Block> = match g.engine.detect_blocks() {
        Ok(b) => b.into_iter().collect(),
        Err(e) => {
            tracing::warn!("detect {}: reading blocks: {e}", w.section());
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
        if !in_force(b.expires_ns, now) {
            gone.push(*p);
            continue;
        }
        if b.dropped > h.dropped_seen {
            h.dropped_seen = b.dropped;
            let until = now + expiry.as_nanos() as u64;
            match g.engine.detect_block(p, until) {
                Ok(()) => {
                    if let Some(l) = &s.cluster {
                        l.share_block(&p.to_string(), until, now, w.section(), &h.reason);
                    }
                }
                Err(e) => tracing::warn!("detect {}: re-arming {p}: {e}", w.section()),
            }
        }
    }
    for p in gone {
        c.held.remove(&p);
    }
    if c.dests.is_empty() {
        return;
    }
    // Destination mitigations hold only while the classifier enforces them.
    let cc = g.config.detect.as_ref().and_then(|d| {
        let c = w.config(d)?;
        (d.mode == Mode::Enforce && c.destination_sources > 0).then_some(c.destination_limit)
    });
    let Some(limit) = cc else {
        let keys: Vec<DestKey> = c.dests.keys().copied().collect();
        if let Err(e) = g.engine.detect_dest_remove(|k| keys.contains(k)) {
            tracing::warn!("detect {}: lifting destinations: {e}", w.section());
        }
        c.dests.clear();
        return;
    };
    let dests: HashMap<DestKey, DestMit> = match g.engine.detect_dests() {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            tracing::warn!("detect {}: reading destinations: {e}", w.section());
            return;
        }
    };
    c.dests
        .retain(|k, _| dests.get(k).is_some_and(|m| in_force(m.expires_ns, now)));
    for (k, h) in c.dests.iter_mut() {
        let m = dests[k];
        if flood_count(&m) > h.dropped_seen {
            h.dropped_seen = flood_count(&m);
            let until = now + expiry.as_nanos() as u64;
            let limit = if m.mode == DEST_LIMIT { limit } else { m.limit };
            if let Err(e) = g.engine.detect_dest_put(k, m.mode, limit, until) {
                tracing::warn!(
                    "detect {}: re-arming {}: {e}",
                    w.section(),
                    spread::target(k)
                );
            }
        }
    }
}
