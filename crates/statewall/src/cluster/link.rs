//! The link to the cluster's etcd as a host holds it: SPA claims go through it at once
//! ([`Link::claim`]); grants and blocks made here wait in its outbox ([`Link::share`],
//! [`Link::share_block`]) until the daemon's task writes them ([`Link::flush`]); what
//! could not be written while etcd was away stays there and is written when etcd returns
//! (unless it has expired by then). It also holds the link's health, counters and the
//! pushed policy this host runs.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use serde::Serialize;
use statewall_common::maps::GrantKey;

use super::{
    blocks::SharedBlock,
    grants::{suffix, SharedGrant},
    store::{Store, StoreError},
    ClusterConfig, OnDown, Refused,
};
use crate::engine::clock::{kernel_to_unix_ms, unix_ms};

/// The pushed policy a host runs and what it refused, by key under the policy prefix.
#[derive(Debug, Default)]
pub struct PolicyState {
    /// Applied: key to revision.
    pub applied: BTreeMap<String, i64>,
    /// Refused: key to revision and reason.
    pub refused: BTreeMap<String, Refused>,
}

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
    /// Grants and blocks written to etcd.
    pub published: AtomicU64,
    /// Grants and blocks of other hosts installed here.
    pub installed: AtomicU64,
    /// Grants revoked and blocks released here because they were elsewhere.
    pub revoked: AtomicU64,
    /// Full reads (the first one and every resynchronisation).
    pub resyncs: AtomicU64,
    /// Keys under the grants prefix that did not read.
    pub unreadable: AtomicU64,
}

/// Writes and deletes of one kind of key waiting for etcd, by key suffix: the latest one
/// of each key wins (a write cancels a waiting delete, a delete a waiting write).
#[derive(Debug)]
struct Pending<V> {
    puts: BTreeMap<String, V>,
    deletes: Vec<String>,
}

impl<V> Default for Pending<V> {
    fn default() -> Self {
        Pending {
            puts: BTreeMap::new(),
            deletes: Vec::new(),
        }
    }
}

impl<V> Pending<V> {
    fn put(&mut self, k: String, v: V) {
        self.deletes.retain(|d| *d != k);
        self.puts.insert(k, v);
    }

    fn delete(&mut self, k: String) {
        self.puts.remove(&k);
        if !self.deletes.contains(&k) {
            self.deletes.push(k);
        }
    }

    fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    /// Puts back what a flush could not write, unless the same key was written or
    /// deleted again meanwhile (the newer one wins).
    fn restore(&mut self, back: Pending<V>) {
        for k in back.deletes {
            if !self.deletes.contains(&k) && !self.puts.contains_key(&k) {
                self.deletes.push(k);
            }
        }
        for (k, v) in back.puts {
            if !self.puts.contains_key(&k) && !self.deletes.contains(&k) {
                self.puts.insert(k, v);
            }
        }
    }
}

/// What waits to be written to etcd.
#[derive(Debug, Default)]
struct Outbox {
    /// Grants and revocations.
    grants: Pending<SharedGrant>,
    /// Digests accepted while etcd was away, to claim when it returns: (digest, until).
    claims: Vec<([u8; 32], u64)>,
    /// Blocks and releases.
    blocks: Pending<SharedBlock>,
}

/// The link to the cluster.
pub struct Link {
    /// `[cluster]` as read at start.
    pub cfg: ClusterConfig,
    /// This host's name.
    pub node: String,
    /// The store.
    pub store: Store,
    /// Pushed policy in force and refused (applied by the daemon's policy task).
    pub policy: Mutex<PolicyState>,
    /// The pushed config sections this host runs. Held while a config is read and
    /// applied (a reload, a push), before the daemon's own lock.
    pub sections: Mutex<super::sections::Sections>,
    up: AtomicBool,
    /// The revision this host has applied (the last read or watch event).
    pub revision: AtomicI64,
    last_error: Mutex<String>,
    outbox: Mutex<Outbox>,
    /// Woken when something waits in the outbox.
    pub wake: tokio::sync::Notify,
    /// Woken when the policy should be read again in full (a reload after a refusal).
    pub reread: tokio::sync::Notify,
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
    /// Grants, blocks, their deletes and claims waiting for etcd.
    pub pending: usize,
    /// Members whose port refused connections, out of the balance until it accepts again.
    pub members_out: Vec<String>,
    /// What SPA does while etcd is away.
    pub on_cluster_down: OnDown,
    /// Counters.
    pub counts: BTreeMap<&'static str, u64>,
    /// Pushed policy in force: key to revision (`firewall/web`, `knock`...).
    pub policy: BTreeMap<String, i64>,
    /// Pushed policy refused: key to revision and reason.
    pub refused: BTreeMap<String, Refused>,
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
            sections: Default::default(),
            up: AtomicBool::new(false),
            revision: AtomicI64::new(0),
            last_error: Mutex::new("not connected yet".into()),
            outbox: Mutex::new(Outbox::default()),
            wake: tokio::sync::Notify::new(),
            reread: tokio::sync::Notify::new(),
            counts: Counts::default(),
        }))
    }

    /// Forgets why pushed config sections (and their withdrawals) were refused and has the
    /// policy read again in full: after a reload, the file they were refused with may have
    /// been mended.
    pub fn retry_sections(&self) {
        let mut p = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        let before = p.refused.len();
        p.refused
            .retain(|k, _| !super::sections::SECTIONS.contains(&k.as_str()));
        if p.refused.len() != before {
            self.reread.notify_one();
        }
    }

    /// Marks the link up (a request succeeded).
    pub fn set_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(node = %self.node, "cluster: etcd reachable");
        }
    }

    /// Marks the link down with the error that said so.
    pub fn set_down(&self, e: &StoreError) {
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
        let g = SharedGrant {
            source: statewall_common::maps::key_addr(key),
            proto: key.proto,
            port: key.port,
            expires_ms: kernel_to_unix_ms(expires_ns, kernel_now),
            by: by.into(),
            name: name.into(),
            node: self.node.clone(),
        };
        let mut o = self.lock_outbox();
        // (A longer grant of the same key waiting already stays.)
        if o.grants
            .puts
            .get(&g.key_suffix())
            .is_none_or(|cur| cur.expires_ms < g.expires_ms)
        {
            o.grants.put(g.key_suffix(), g);
        }
        drop(o);
        self.wake.notify_one();
    }

    /// Revokes a grant on every host of the group.
    pub fn unshare(&self, key: &GrantKey) {
        self.lock_outbox().grants.delete(suffix(key));
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
            kernel_to_unix_ms(expires_ns, kernel_now)
        };
        let b = SharedBlock {
            prefix: prefix.into(),
            expires_ms,
            by: by.into(),
            reason: reason.into(),
            node: self.node.clone(),
        };
        self.lock_outbox().blocks.put(b.key_suffix(), b);
        self.wake.notify_one();
    }

    /// Releases a block on every host of the group.
    pub fn unshare_block(&self, prefix: &str) {
        self.lock_outbox()
            .blocks
            .delete(crate::cluster::blocks::suffix(prefix));
        self.wake.notify_one();
    }

    /// The link's state.
    pub fn status(&self) -> LinkStatus {
        let o = self.lock_outbox();
        let pending = o.grants.len() + o.claims.len() + o.blocks.len();
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
        let (policy, refused) = {
            let p = self.policy.lock().unwrap_or_else(|p| p.into_inner());
            (p.applied.clone(), p.refused.clone())
        };
        LinkStatus {
            policy,
            refused,
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
            members_out: self.store.members_out(),
            on_cluster_down: self.cfg.on_cluster_down,
            counts,
        }
    }

    /// Deletes `{prefix}{suffix}` for each suffix until one fails (then `failed`); returns
    /// the suffixes not deleted.
    async fn delete_all(
        &self,
        prefix: &str,
        suffixes: Vec<String>,
        failed: &mut Option<StoreError>,
    ) -> Vec<String> {
        let mut left = Vec::new();
        for k in suffixes {
            if failed.is_none() {
                match self.store.delete(&format!("{prefix}{k}")).await {
                    Ok(_) => continue,
                    Err(e) => *failed = Some(e),
                }
            }
            left.push(k);
        }
        left
    }

    /// Writes what waits in the outbox, in order (claims, grants, blocks), stopping at the
    /// first failure; what was not written goes back (what has expired does not).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (claims, grants, blocks) = {
            let mut o = self.lock_outbox();
            (
                std::mem::take(&mut o.claims),
                std::mem::take(&mut o.grants),
                std::mem::take(&mut o.blocks),
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
            if failed.is_none() {
                // Taken while etcd was away: a claim another host made meanwhile makes
                // this one a replay that was let in; counted, nothing more can be done.
                match self.store.claim(&d, until, &self.node, now).await {
                    Ok(true) => {
                        self.counts.claims.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(false) => {
                        self.counts.replays.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            back.claims.push((d, until));
        }
        back.grants.deletes = self
            .delete_all(&self.cfg.grants_prefix(), grants.deletes, &mut failed)
            .await;
        for (k, g) in grants.puts {
            if g.expires_ms <= now_ms {
                continue;
            }
            if failed.is_none() {
                match self.store.put_grant(&g, now).await {
                    Ok(rev) => {
                        self.counts.published.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(grant = %k, revision = rev, "cluster: grant published");
                        continue;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            back.grants.puts.insert(k, g);
        }
        back.blocks.deletes = self
            .delete_all(&self.cfg.blocks_prefix(), blocks.deletes, &mut failed)
            .await;
        for (k, b) in blocks.puts {
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
            back.blocks.puts.insert(k, b);
        }
        {
            let mut o = self.lock_outbox();
            o.claims.extend(back.claims);
            o.grants.restore(back.grants);
            o.blocks.restore(back.blocks);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
