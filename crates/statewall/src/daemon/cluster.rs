//! The shell's side of the fleet (`[cluster]`): the supervised task (`cluster`) that
//! writes the link's outbox ([`crate::cluster::link::Link`]) and keeps the watches.
//!
//! - The task reads every shared grant of the group, installs them with their own expiry,
//!   revokes the grants it installed that are gone from etcd, then watches from the
//!   revision after that read (the shared blocks likewise, `blocks` below). A gap (etcd
//!   away, a compacted revision, a broken stream) means a full read again.
//! - A delete of a grant before its expiry is a revocation: every host revokes it. A delete
//!   at or after its expiry is the lease cleaning up: nothing to do.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use statewall_common::maps::{GrantKey, GRANT_BY_CLUSTER};

use crate::{
    cluster::{
        grants::SharedGrant,
        link::Link,
        revoked_early,
        store::{GrantChange, StoreError},
        SAME_MS,
    },
    daemon::state::Shared,
    engine::clock::{kernel_to_unix_ms, unix_ms_to_kernel},
};

/// Installs a shared grant here with its own expiry; false when it had expired.
fn install(s: &Shared, link: &Link, g: &SharedGrant) -> bool {
    let mut inner = s.lock();
    let Some(until) = unix_ms_to_kernel(g.expires_ms, inner.engine.kernel_now()) else {
        return false;
    };
    match inner.engine.grant_until(g.key(), until, GRANT_BY_CLUSTER) {
        Ok(_) => {
            link.counts.installed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(grant = %g.key_suffix(), from = %g.node, "cluster: grant installed");
            true
        }
        Err(e) => {
            tracing::warn!(source = %g.source, port = g.port, from = %g.node, "cluster: a shared grant could not be installed: {e}");
            false
        }
    }
}

/// The expiry of this host's grant of `key` in Unix milliseconds, when it has one.
fn local_expiry_ms(s: &Shared, key: &GrantKey) -> Option<u64> {
    let inner = s.lock();
    let v = inner.engine.grant_of(key).ok()??;
    Some(kernel_to_unix_ms(v.expires_ns, inner.engine.kernel_now()))
}

fn revoke(s: &Shared, link: &Link, key: &GrantKey, why: &str) {
    let mut inner = s.lock();
    if inner.engine.revoke(key).unwrap_or(false) {
        link.counts.revoked.fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = %statewall_common::maps::key_addr(key), port = key.port, "cluster: grant revoked ({why})");
    }
}

/// Applies the group's grants as read in full: installs them, and revokes what this host
/// installed from the cluster that is no longer there.
fn apply_all(s: &Shared, link: &Link, grants: &[SharedGrant]) {
    let mut keep = std::collections::BTreeSet::new();
    for g in grants {
        keep.insert(g.key());
        // Our own too: a kernel that lost them (a teardown while the daemon was down)
        // gets them back; one that has them keeps them as they are.
        install(s, link, g);
    }
    let stale: Vec<GrantKey> = {
        let inner = s.lock();
        inner
            .engine
            .grants()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, v)| v.origin == GRANT_BY_CLUSTER && !keep.contains(k))
            .map(|(k, _)| k)
            .collect()
    };
    for k in stale {
        revoke(s, link, &k, "gone from the cluster");
    }
}

fn apply_change(s: &Shared, link: &Link, c: GrantChange) {
    match c {
        GrantChange::Put(g) => {
            if g.node != link.node {
                install(s, link, &g);
            }
        }
        GrantChange::Deleted { key, before } => {
            // Revoked before its end (a delete by the lease comes after it).
            if let Some(g) = before.filter(|g| revoked_early(g.expires_ms)) {
                // It takes back the grant it names, not a later one made here since.
                if local_expiry_ms(s, &g.key()).is_some_and(|t| t <= g.expires_ms + SAME_MS) {
                    revoke(s, link, &g.key(), &format!("revoked in the cluster: {key}"));
                }
            }
        }
        GrantChange::Unreadable(key) => {
            link.counts.unreadable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster: {key} does not read as a shared grant; ignored");
        }
    }
}

/// The supervised task: full read, then watch, again after every gap; writes the outbox.
pub async fn run(
    s: Arc<Shared>,
    link: Arc<Link>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let backoff = (Duration::from_millis(200), Duration::from_secs(2));
    super::supervise::until_stopped(
        stop,
        backoff,
        "cluster",
        |e| link.set_down(e),
        |mut stop| {
            let (s, link) = (s.clone(), link.clone());
            async move { follow(&s, &link, &mut stop).await }
        },
    )
    .await
}

/// One connected stretch: read everything, then follow the watch until it breaks
/// (`Err`) or the daemon stops (`Ok`).
async fn follow(
    s: &Shared,
    link: &Link,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), StoreError> {
    link.store.check_members().await;
    let (grants, bad, rev) = link.store.grants().await?;
    link.set_up();
    link.counts.resyncs.fetch_add(1, Ordering::Relaxed);
    link.counts
        .unreadable
        .fetch_add(bad.len() as u64, Ordering::Relaxed);
    apply_all(s, link, &grants);
    let blocks_prefix = link.cfg.blocks_prefix();
    let (kvs, brev) = link.store.read_prefix(&blocks_prefix).await?;
    let (blocks, bad) = blocks::decode_all(&kvs);
    link.counts
        .unreadable
        .fetch_add(bad as u64, Ordering::Relaxed);
    blocks::apply_all(s, link, &blocks);
    link.revision.store(rev.max(brev), Ordering::Relaxed);
    tracing::info!(node = %link.node, revision = rev, grants = grants.len(), blocks = blocks.len(), "cluster: shared grants and blocks read");
    link.flush().await?;
    let mut watch = link.store.watch_grants(rev + 1).await?;
    let mut bwatch = link.store.watch_prefix(&blocks_prefix, brev + 1).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = watch.next() => {
                let (changes, rev) = m?;
                for c in changes {
                    apply_change(s, link, c);
                }
                link.revision.fetch_max(rev, Ordering::Relaxed);
                link.set_up();
            }
            m = bwatch.next() => {
                let (changes, rev) = m?;
                for c in changes {
                    blocks::apply_change(s, link, c);
                }
                link.revision.fetch_max(rev, Ordering::Relaxed);
                link.set_up();
            }
            _ = link.wake.notified() => link.flush().await?,
            _ = tick.tick() => {
                // The members' ports, then a probe, so that a silent etcd is noticed; then
                // what failed before.
                link.store.check_members().await;
                link.store.revision().await?;
                link.set_up();
                link.flush().await?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

mod blocks {
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
}
