//! The detection stage's blocks shared through the cluster (`[cluster]` with `[detect]`):
//! a block another host of the group made is installed here with its expiry; a delete
//! before that expiry is a release, applied here too. A host without `[detect]` keeps
//! none (its ingress has no block check). The allowlist wins in the kernel, so a shared
//! block never drops this host's allowlisted sources.

use std::sync::atomic::Ordering;

use crate::{
    cluster::{blocks::SharedBlock, link::Link, revoked_early, store::RawChange, SAME_MS},
    daemon::state::Shared,
    detect::Prefix,
    engine::clock::{kernel_to_unix_ms, unix_ms_to_kernel},
};

/// Installs a shared block here with its own expiry.
fn install(s: &Shared, link: &Link, b: &SharedBlock) {
    let Ok(p) = Prefix::parse(&b.prefix) else {
        return;
    };
    let mut g = s.lock();
    if g.config.detect.is_none() {
        return;
    }
    let until = if b.expires_ms == 0 {
        0
    } else {
        match unix_ms_to_kernel(b.expires_ms, g.engine.kernel_now()) {
            Some(t) => t,
            None => return,
        }
    };
    // An existing block that lasts longer (or for good) stays as it is.
    let longer = g.engine.detect_blocks().ok().and_then(|v| {
        v.into_iter()
            .find(|(q, _)| *q == p)
            .map(|(_, cur)| cur.expires_ns == 0 || (until != 0 && cur.expires_ns >= until))
    });
    if longer == Some(true) {
        return;
    }
    match g.engine.detect_block(&p, until) {
        Ok(()) => {
            link.counts.installed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(prefix = %p, from = %b.node, by = %b.by, reason = %b.reason, "cluster: block installed");
        }
        Err(e) => {
            tracing::warn!(prefix = %p, from = %b.node, "cluster: a shared block could not be installed: {e}")
        }
    }
}

/// Releases `before`'s block here, unless the block here is a later one.
fn release(s: &Shared, link: &Link, before: &SharedBlock) {
    let Ok(p) = Prefix::parse(&before.prefix) else {
        return;
    };
    let mut g = s.lock();
    let now = g.engine.kernel_now();
    let Some(cur) = g
        .engine
        .detect_blocks()
        .ok()
        .and_then(|v| v.into_iter().find(|(q, _)| *q == p).map(|(_, b)| b))
    else {
        return;
    };
    let same = match (cur.expires_ns, before.expires_ms) {
        (0, 0) => true,
        (0, _) | (_, 0) => false,
        (c, e) => kernel_to_unix_ms(c, now) <= e + SAME_MS,
    };
    if same && g.engine.detect_unblock(&p).unwrap_or(false) {
        link.counts.revoked.fetch_add(1, Ordering::Relaxed);
        tracing::info!(prefix = %p, "cluster: block released elsewhere in the group");
    }
}

/// Applies the group's blocks as read in full.
pub fn apply_all(s: &Shared, link: &Link, blocks: &[SharedBlock]) {
    for b in blocks.iter().filter(|b| b.node != link.node) {
        install(s, link, b);
    }
}

/// Applies one watched change under the blocks prefix.
pub fn apply_change(s: &Shared, link: &Link, c: RawChange) {
    match c {
        RawChange::Put(kv) => match SharedBlock::decode(&kv.key, &kv.value) {
            Ok(b) if b.node != link.node => install(s, link, &b),
            Ok(_) => {}
            Err(e) => {
                link.counts.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("cluster: {e}; ignored");
            }
        },
        RawChange::Deleted(kv, before) => {
            let Some(b) = before.and_then(|v| SharedBlock::decode(&kv.key, &v).ok()) else {
                return;
            };
            // A release: made before the block's end (a lease's delete comes after it).
            if revoked_early(b.expires_ms) {
                release(s, link, &b);
            }
        }
    }
}

/// Reads every key under the blocks prefix: the blocks, and how many did not read.
pub fn decode_all(kvs: &[crate::cluster::store::RawKv]) -> (Vec<SharedBlock>, usize) {
    let mut bad = 0;
    let ok = kvs
        .iter()
        .filter_map(|kv| match SharedBlock::decode(&kv.key, &kv.value) {
            Ok(b) => Some(b),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (ok, bad)
}
