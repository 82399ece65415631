//! The shell's side of the fleet (`[cluster]`): the link to etcd that SPA claims digests
//! through and that grants are shared by, and the supervised task (`cluster`) that keeps
//! the watch.
//!
//! - A grant made here (SPA, a knock, by hand) goes to the outbox ([`Link::share`]); the
//!   task writes it. What could not be written while etcd was away stays in the outbox
//!   and is written when etcd returns (unless it has expired by then).
//! - The task reads every shared grant of the group, installs them with their own expiry,
//!   revokes the grants it installed that are gone from etcd, then watches from the
//!   revision after that read. A gap (etcd away, a compacted revision, a broken stream)
//!   means a full read again.
//! - A delete of a grant before its expiry is a revocation: every host revokes it. A delete
//!   at or after its expiry is the lease cleaning up: nothing to do.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::Serialize;
use statewall_common::maps::{GrantKey, GRANT_BY_CLUSTER};

use crate::{
    cluster::{
        blocks::SharedBlock,
        grants::{suffix, SharedGrant},
        store::{GrantChange, Store, StoreError},
        ClusterConfig, OnDown,
    },
    daemon::state::Shared,
    engine::clock::unix_ms,
};

/// What a claim of an SPA digest came to.
#[derive(Debug)]
pub enum Claim {
    /// This host claimed it first: go on.
    Mine,
    /// Another host (or this one) claimed it before: a replay.
    Replay,
    /// etcd could not be reached; the config says what to do.
    Down(OnDown),
}

/// Counters of the link (`GET /api/v1/status`, `/metrics`).
#[derive(Debug, Default)]
pub struct Counts {
    /// Digests claimed.
    pub claims: AtomicU64,
    /// Digests another host had claimed: refused as replays.
    pub replays: AtomicU64,
    /// Claims that could not be made (etcd away).
    pub claims_failed: AtomicU64,
    /// Grants written to etcd.
    pub published: AtomicU64,
    /// Grants of other hosts installed here.
    pub installed: AtomicU64,
    /// Grants revoked here because they were revoked elsewhere.
    pub revoked: AtomicU64,
    /// Full reads (the first one and every resynchronisation).
    pub resyncs: AtomicU64,
    /// Keys under the grants prefix that did not read.
    pub unreadable: AtomicU64,
}

/// What waits to be written to etcd.
#[derive(Debug, Default)]
struct Outbox {
    /// Grants by key suffix (the latest expiry wins).
    grants: BTreeMap<String, SharedGrant>,
    /// Revocations by key suffix.
    revokes: Vec<String>,
    /// Digests accepted while etcd was away, to claim when it returns: (digest, until).
    claims: Vec<([u8; 32], u64)>,
    /// Blocks by key suffix (the latest wins).
    blocks: BTreeMap<String, SharedBlock>,
    /// Releases by key suffix.
    unblocks: Vec<String>,
}

/// The link to the cluster.
pub struct Link {
    /// `[cluster]` as read at start.
    pub cfg: ClusterConfig,
    /// This host's name.
    pub node: String,
    pub(crate) store: Store,
    /// Pushed policy in force and refused (`daemon::policy`).
    pub policy: super::policy::SharedPolicy,
    up: AtomicBool,
    /// The revision this host has applied (the last read or watch event).
    revision: AtomicI64,
    last_error: Mutex<String>,
    outbox: Mutex<Outbox>,
    wake: tokio::sync::Notify,
    /// Counters.
    pub counts: Counts,
}

/// The link as `GET /api/v1/status` shows it.
#[derive(Debug, Serialize)]
pub struct LinkStatus {
    /// This host's name.
    pub node: String,
    /// The group.
    pub group: String,
    /// Whether the last request to etcd succeeded.
    pub up: bool,
    /// The revision applied.
    pub revision: i64,
    /// The last error, when down.
    pub error: Option<String>,
    /// Grants, revocations and claims waiting for etcd.
    pub pending: usize,
    /// What SPA does while etcd is away.
    pub on_cluster_down: OnDown,
    /// Counters.
    pub counts: BTreeMap<&'static str, u64>,
}

impl Link {
    /// Connects (lazily) with `[cluster]`; fails only on settings that cannot work (a
    /// certificate that does not read, an endpoint that is not a URL).
    pub async fn connect(cfg: &ClusterConfig) -> Result<Arc<Link>, StoreError> {
        let store = Store::connect(cfg).await?;
        Ok(Arc::new(Link {
            node: cfg.node_name(),
            cfg: cfg.clone(),
            store,
            policy: Default::default(),
            up: AtomicBool::new(false),
            revision: AtomicI64::new(0),
            last_error: Mutex::new("not connected yet".into()),
            outbox: Mutex::new(Outbox::default()),
            wake: tokio::sync::Notify::new(),
            counts: Counts::default(),
        }))
    }

    fn set_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(node = %self.node, "cluster: etcd reachable");
        }
    }

    fn set_down(&self, e: &StoreError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(node = %self.node, "cluster: etcd unreachable: {e}; enforcing what is installed");
        }
    }

    /// Whether the last request to etcd succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Claims an SPA digest for the cluster until `until` (Unix seconds). Blocks: called
    /// on the SPA verifier thread (inside the runtime's context, not on a worker).
    pub fn claim(&self, digest: &[u8; 32], until: u64, now: u64) -> Claim {
        let h = tokio::runtime::Handle::current();
        match h.block_on(self.store.claim(digest, until, &self.node, now)) {
            Ok(true) => {
                self.set_up();
                self.counts.claims.fetch_add(1, Ordering::Relaxed);
                Claim::Mine
            }
            Ok(false) => {
                self.set_up();
                self.counts.replays.fetch_add(1, Ordering::Relaxed);
                Claim::Replay
            }
            Err(e) => {
                self.set_down(&e);
                self.counts.claims_failed.fetch_add(1, Ordering::Relaxed);
                if self.cfg.on_cluster_down == OnDown::Local {
                    self.lock_outbox().claims.push((*digest, until));
                    self.wake.notify_one();
                }
                Claim::Down(self.cfg.on_cluster_down)
            }
        }
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shares a grant made here: `key` until `expires_ns` on this host's kernel clock
    /// (`kernel_now` read with it), made `by` (`spa`, `knock`, `api`) for `name`.
    pub fn share(&self, key: &GrantKey, expires_ns: u64, kernel_now: u64, by: &str, name: &str) {
        tracing::debug!(grant = %suffix(key), by, "cluster: grant to share");
        let left_ms = expires_ns.saturating_sub(kernel_now) / 1_000_000;
        let g = SharedGrant {
            source: crate::gate::key_addr(key),
            proto: key.proto,
            port: key.port,
            expires_ms: unix_ms() + left_ms,
            by: by.into(),
            name: name.into(),
            node: self.node.clone(),
        };
        let mut o = self.lock_outbox();
        let k = g.key_suffix();
        o.revokes.retain(|r| *r != k);
        match o.grants.get(&k) {
            Some(cur) if cur.expires_ms >= g.expires_ms => {}
            _ => {
                o.grants.insert(k, g);
            }
        }
        drop(o);
        self.wake.notify_one();
    }

    /// Revokes a grant on every host of the group.
    pub fn unshare(&self, key: &GrantKey) {
        let k = suffix(key);
        let mut o = self.lock_outbox();
        o.grants.remove(&k);
        if !o.revokes.contains(&k) {
            o.revokes.push(k);
        }
        drop(o);
        self.wake.notify_one();
    }

    /// Shares a block made here: `prefix` (`ADDR/LEN`) until `expires_ns` on this host's
    /// kernel clock (0: until released), made `by` (`api`, `classifier`) for `reason`.
    pub fn share_block(
        &self,
        prefix: &str,
        expires_ns: u64,
        kernel_now: u64,
        by: &str,
        reason: &str,
    ) {
        let expires_ms = if expires_ns == 0 {
            0
        } else {
            unix_ms() + expires_ns.saturating_sub(kernel_now) / 1_000_000
        };
        let b = SharedBlock {
            prefix: prefix.into(),
            expires_ms,
            by: by.into(),
            reason: reason.into(),
            node: self.node.clone(),
        };
        let mut o = self.lock_outbox();
        let k = b.key_suffix();
        o.unblocks.retain(|r| *r != k);
        o.blocks.insert(k, b);
        drop(o);
        self.wake.notify_one();
    }

    /// Releases a block on every host of the group.
    pub fn unshare_block(&self, prefix: &str) {
        let k = crate::cluster::blocks::suffix(prefix);
        let mut o = self.lock_outbox();
        o.blocks.remove(&k);
        if !o.unblocks.contains(&k) {
            o.unblocks.push(k);
        }
        drop(o);
        self.wake.notify_one();
    }

    /// The link's state.
    pub fn status(&self) -> LinkStatus {
        let o = self.lock_outbox();
        let pending =
            o.grants.len() + o.revokes.len() + o.claims.len() + o.blocks.len() + o.unblocks.len();
        drop(o);
        let c = &self.counts;
        let counts = [
            ("claims", &c.claims),
            ("replays", &c.replays),
            ("claims_failed", &c.claims_failed),
            ("published", &c.published),
            ("installed", &c.installed),
            ("revoked", &c.revoked),
            ("resyncs", &c.resyncs),
            ("unreadable", &c.unreadable),
        ]
        .into_iter()
        .map(|(n, v)| (n, v.load(Ordering::Relaxed)))
        .collect();
        let up = self.is_up();
        LinkStatus {
            node: self.node.clone(),
            group: self.cfg.group.clone(),
            up,
            revision: self.revision.load(Ordering::Relaxed),
            error: (!up).then(|| {
                self.last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            }),
            pending,
            on_cluster_down: self.cfg.on_cluster_down,
            counts,
        }
    }

    /// Writes what waits in the outbox; what fails goes back (an expired grant does not).
    async fn flush(&self) -> Result<(), StoreError> {
        let (grants, revokes, claims) = {
            let mut o = self.lock_outbox();
            (
                std::mem::take(&mut o.grants),
                std::mem::take(&mut o.revokes),
                std::mem::take(&mut o.claims),
            )
        };
        let now = crate::engine::clock::unix_secs();
        let now_ms = unix_ms();
        let mut failed: Option<StoreError> = None;
        let mut back = Outbox::default();
        for (d, until) in claims {
            if until <= now {
                continue;
            }
            if failed.is_some() {
                back.claims.push((d, until));
                continue;
            }
            // Taken while etcd was away: a claim another host made meanwhile makes this
            // one a replay that was let in; counted, nothing more can be done now.
            match self.store.claim(&d, until, &self.node, now).await {
                Ok(true) => self.counts.claims.fetch_add(1, Ordering::Relaxed),
                Ok(false) => self.counts.replays.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    back.claims.push((d, until));
                    failed = Some(e);
                    continue;
                }
            };
        }
        for k in revokes {
            if failed.is_some() {
                back.revokes.push(k);
                continue;
            }
            if let Err(e) = self.store.delete_grant(&k).await {
                back.revokes.push(k);
                failed = Some(e);
            }
        }
        for (k, g) in grants {
            if g.expires_ms <= now_ms {
                continue;
            }
            if failed.is_some() {
                back.grants.insert(k, g);
                continue;
            }
            match self.store.put_grant(&g, now).await {
                Ok(rev) => {
                    self.counts.published.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(grant = %k, revision = rev, "cluster: grant published");
                }
                Err(e) => {
                    back.grants.insert(k, g);
                    failed = Some(e);
                }
            }
        }
        {
            let mut o = self.lock_outbox();
            o.claims.extend(back.claims);
            for k in back.revokes {
                if !o.revokes.contains(&k) && !o.grants.contains_key(&k) {
                    o.revokes.push(k);
                }
            }
            for (k, g) in back.grants {
                // A newer share made meanwhile wins.
                if !o.grants.contains_key(&k) && !o.revokes.contains(&k) {
                    o.grants.insert(k, g);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.flush_blocks(now).await
    }

    /// Writes the blocks and releases waiting in the outbox; what fails goes back.
    async fn flush_blocks(&self, now: u64) -> Result<(), StoreError> {
        let (blocks, unblocks) = {
            let mut o = self.lock_outbox();
            (
                std::mem::take(&mut o.blocks),
                std::mem::take(&mut o.unblocks),
            )
        };
        let now_ms = unix_ms();
        let mut failed = None;
        let (mut back_b, mut back_u) = (BTreeMap::new(), Vec::new());
        for k in unblocks {
            if failed.is_none() {
                match self.store.delete_block(&k).await {
                    Ok(_) => continue,
                    Err(e) => failed = Some(e),
                }
            }
            back_u.push(k);
        }
        for (k, b) in blocks {
            if b.expires_ms != 0 && b.expires_ms <= now_ms {
                continue;
            }
            if failed.is_none() {
                match self.store.put_block(&b, now).await {
                    Ok(_) => {
                        self.counts.published.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            back_b.insert(k, b);
        }
        let mut o = self.lock_outbox();
        for k in back_u {
            if !o.unblocks.contains(&k) && !o.blocks.contains_key(&k) {
                o.unblocks.push(k);
            }
        }
        for (k, b) in back_b {
            if !o.blocks.contains_key(&k) && !o.unblocks.contains(&k) {
                o.blocks.insert(k, b);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Installs a shared grant here with its own expiry; false when it had expired.
fn install(s: &Shared, link: &Link, g: &SharedGrant) -> bool {
    let left_ms = g.expires_ms.saturating_sub(unix_ms());
    if left_ms == 0 {
        return false;
    }
    let mut inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let until = inner.engine.kernel_now() + left_ms * 1_000_000;
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

/// Two expiries closer than this (ms) are the same grant's, read through two clocks.
const SAME_MS: u64 = 100;

/// The expiry of this host's grant of `key` in Unix milliseconds, when it has one.
fn local_expiry_ms(s: &Shared, key: &GrantKey) -> Option<u64> {
    let inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let v = inner.engine.grant_of(key).ok()??;
    let left = v.expires_ns.saturating_sub(inner.engine.kernel_now()) / 1_000_000;
    Some(unix_ms() + left)
}

fn revoke(s: &Shared, link: &Link, key: &GrantKey, why: &str) {
    let mut inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    if inner.engine.revoke(key).unwrap_or(false) {
        link.counts.revoked.fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = %crate::gate::key_addr(key), port = key.port, "cluster: grant revoked ({why})");
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
        let inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
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
            // Revoked before its end (the lease outlives the grant: a delete by the lease
            // comes after the expiry, when the kernel has already closed it).
            if let Some(g) = before.filter(|g| g.expires_ms > unix_ms() + 500) {
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
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        match follow(&s, &link, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                link.set_down(&e);
                tracing::debug!("cluster: {e}; retrying in {backoff:?}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One connected stretch: read everything, then follow the watch until it breaks
/// (`Err`) or the daemon stops (`Ok`).
async fn follow(
    s: &Shared,
    link: &Link,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let (grants, bad, rev) = link.store.grants().await?;
    link.set_up();
    link.counts.resyncs.fetch_add(1, Ordering::Relaxed);
    link.counts
        .unreadable
        .fetch_add(bad.len() as u64, Ordering::Relaxed);
    apply_all(s, link, &grants);
    let blocks_prefix = link.cfg.blocks_prefix();
    let (kvs, brev) = link.store.read_prefix(&blocks_prefix).await?;
    let (blocks, bad) = super::blocks::decode_all(&kvs);
    link.counts
        .unreadable
        .fetch_add(bad as u64, Ordering::Relaxed);
    super::blocks::apply_all(s, link, &blocks);
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
                    super::blocks::apply_change(s, link, c);
                }
                link.revision.fetch_max(rev, Ordering::Relaxed);
                link.set_up();
            }
            _ = link.wake.notified() => link.flush().await?,
            _ = tick.tick() => {
                // A probe, so that a silent etcd is noticed; then what failed before.
                link.store.revision().await?;
                link.set_up();
                link.flush().await?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
