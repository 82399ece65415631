//! The cluster's store: etcd through its v3 API (the `etcd-client` crate), the few
//! operations the fleet needs, each bounded by the configured request timeout.
//!
//! Leases are shared: a claim or a grant takes the lease of its expiry rounded up to the
//! next [`LEASE_STEP`] seconds, made once and reused, so that a claim is one transaction
//! and a grant one put, not a lease grant each.
//!
//! The client balances requests over the members, and its balancer keeps sending a share
//! of them to a member that is down (they fail at once): [`Store::check_members`] takes a
//! member whose port refuses connections out of the balance and puts it back once it
//! accepts again, so that a group with one member down goes on as if nothing happened.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};

use super::{blocks::SharedBlock, grants::SharedGrant, ClusterConfig};

/// Leases end on multiples of this many seconds (Unix time).
pub const LEASE_STEP: u64 = 10;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A certificate or key file could not be read.
    #[error("[cluster] {key}: {path}: {msg}")]
    File {
        /// The config key.
        key: &'static str,
        /// The file.
        path: String,
        /// What the system said.
        msg: String,
    },
    /// etcd did not answer within the request timeout.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// etcd (or the way to it) answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A watch's stream ended (etcd went away, or closed it).
    #[error("the watch stream ended")]
    WatchEnded,
    /// A watch was cancelled by etcd; `compacted` is etcd's oldest revision when the
    /// revision asked for was compacted away.
    #[error("etcd cancelled the watch ({reason}; compacted up to {compacted})")]
    WatchCancelled {
        /// etcd's reason.
        reason: String,
        /// The compaction revision (0 when not compacted).
        compacted: i64,
    },
}

/// A change seen by a watch on the grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantChange {
    /// A grant was written (made or extended).
    Put(SharedGrant),
    /// A grant's key was deleted: `before` is its last value (when etcd still had it).
    Deleted {
        /// The key.
        key: String,
        /// The value before the delete.
        before: Option<SharedGrant>,
    },
    /// A key under the prefix that does not read as a grant.
    Unreadable(String),
}

/// A connection to the cluster's etcd.
pub struct Store {
    client: Client,
    timeout: Duration,
    /// The configured endpoints, and the connect timeout to probe them with.
    endpoints: Vec<String>,
    connect_timeout: Duration,
    /// Indices of the endpoints taken out of the balance (they refused a connection).
    out: Mutex<BTreeSet<usize>>,
    replay: String,
    grants: String,
    blocks: String,
    /// Lease ids by the Unix second they end at.
    leases: Mutex<BTreeMap<u64, i64>>,
}

fn read(key: &'static str, p: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(p).map_err(|e| StoreError::File {
        key,
        path: p.display().to_string(),
        msg: e.to_string(),
    })
}

impl Store {
    /// Connects (lazily: no member needs to be up yet; requests fail until one is).
    pub async fn connect(cfg: &ClusterConfig) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout.0)
            .with_timeout(cfg.request_timeout.0)
            .with_keep_alive(Duration::from_secs(5), cfg.request_timeout.0);
        if cfg.tls() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &cfg.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read("ca_file", ca)?));
            }
            if let (Some(c), Some(k)) = (&cfg.cert_file, &cfg.key_file) {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read("cert_file", c)?,
                    read("key_file", k)?,
                ));
            }
            if let Some(n) = &cfg.server_name {
                tls = tls.domain_name(n.clone());
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts)).await?;
        Ok(Store {
            client,
            timeout: cfg.request_timeout.0,
            endpoints: cfg.endpoints.clone(),
            connect_timeout: cfg.connect_timeout.0,
            out: Default::default(),
            replay: cfg.replay_prefix(),
            grants: cfg.grants_prefix(),
            blocks: cfg.blocks_prefix(),
            leases: Mutex::new(BTreeMap::new()),
        })
    }

    /// Probes every member's port (a TCP connection, at most the connect timeout): one
    /// that does not accept is taken out of the client's balance, one that accepts again is
    /// put back. Called by one task (the daemon's cluster task).
    pub async fn check_members(&self) {
        let t = self.connect_timeout;
        let up = futures_util::future::join_all(self.endpoints.iter().map(|e| async move {
            let addr = e
                .split_once("://")
                .map_or(e.as_str(), |(_, r)| r)
                .trim_end_matches('/');
            matches!(
                tokio::time::timeout(t, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        }))
        .await;
        for (i, (e, up)) in self.endpoints.iter().zip(up).enumerate() {
            let is_out = self.lock_out().contains(&i);
            if !up && !is_out {
                match self.client.remove_endpoint(e).await {
                    Ok(()) => {
                        self.lock_out().insert(i);
                        tracing::warn!(endpoint = %e, "cluster: etcd member refuses connections: requests go to the others");
                    }
                    Err(err) => tracing::warn!(endpoint = %e, "cluster: {err}"),
                }
            } else if up && is_out {
                match self.client.add_endpoint(e).await {
                    Ok(()) => {
                        self.lock_out().remove(&i);
                        tracing::info!(endpoint = %e, "cluster: etcd member accepts connections again");
                    }
                    Err(err) => tracing::warn!(endpoint = %e, "cluster: {err}"),
                }
            }
        }
    }

    fn lock_out(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoints taken out of the balance ([`Store::check_members`]).
    pub fn members_out(&self) -> Vec<String> {
        let out = self.lock_out();
        out.iter().map(|&i| self.endpoints[i].clone()).collect()
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// The lease that ends at `until` (Unix seconds) rounded up to [`LEASE_STEP`].
    async fn lease(&self, until: u64, now: u64) -> Result<i64, StoreError> {
        let end = until.div_ceil(LEASE_STEP) * LEASE_STEP;
        {
            let mut l = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            // Leases that end within a step are not handed out again (they may lapse
            // before the request reaches etcd), and are forgotten.
            l.retain(|e, _| *e > now + LEASE_STEP);
            if let Some(id) = l.get(&end) {
                return Ok(*id);
            }
        }
        let ttl = (end.saturating_sub(now)).max(LEASE_STEP) as i64;
        let mut c = self.client.clone();
        let id = self.bounded(c.lease_grant(ttl, None)).await?.id();
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(end, id);
        Ok(id)
    }

    /// Forgets the cached leases (after etcd said one is gone).
    fn forget_leases(&self) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn lease_lost(e: &StoreError) -> bool {
        matches!(e, StoreError::Etcd(etcd_client::Error::GRpcStatus(s))
            if s.message().contains("lease not found"))
    }

    /// Runs `op` with the lease that ends at `until` (none for `None`), once more with a
    /// new lease when etcd says the cached one is gone.
    async fn leased<T, F, Fut>(&self, until: Option<u64>, now: u64, op: F) -> Result<T, StoreError>
    where
        F: Fn(Option<i64>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        for attempt in 0..2 {
            let lease = match until {
                Some(u) => Some(self.lease(u, now).await?),
                None => None,
            };
            match op(lease).await {
                Err(e) if attempt == 0 && Self::lease_lost(&e) => self.forget_leases(),
                r => return r,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Writes `value` at `key` under the lease ending at `until`; the revision written at.
    async fn put_leased(
        &self,
        key: String,
        value: Vec<u8>,
        until: Option<u64>,
        now: u64,
    ) -> Result<i64, StoreError> {
        self.leased(until, now, |lease| {
            let mut c = self.client.clone();
            let opts = lease.map(|l| PutOptions::new().with_lease(l));
            let (key, value) = (key.clone(), value.clone());
            async move {
                let r = self.bounded(c.put(key, value, opts)).await?;
                Ok(r.header().map_or(0, |h| h.revision()))
            }
        })
        .await
    }

    /// Claims `digest` for the whole cluster until `until` (Unix seconds): true when this
    /// call made the claim, false when the digest was claimed before (a replay).
    pub async fn claim(
        &self,
        digest: &[u8; 32],
        until: u64,
        node: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let key = format!(
            "{}{}",
            self.replay,
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        self.leased(Some(until), now, |lease| {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    node,
                    lease.map(|l| PutOptions::new().with_lease(l)),
                )]);
            let mut c = self.client.clone();
            async move { Ok(self.bounded(c.txn(txn)).await?.succeeded()) }
        })
        .await
    }

    /// Writes (or extends) a shared grant; returns the revision it was written at. Its
    /// lease ends a second after the grant: it only cleans up.
    pub async fn put_grant(&self, g: &SharedGrant, now: u64) -> Result<i64, StoreError> {
        let key = format!("{}{}", self.grants, g.key_suffix());
        let until = g.expires_ms.div_ceil(1000) + 1;
        self.put_leased(key, g.encode(), Some(until), now).await
    }

    /// Writes (or re-arms) a shared block; its lease ends a second after it (none when it
    /// lasts until released). Returns the revision it was written at.
    pub async fn put_block(&self, b: &SharedBlock, now: u64) -> Result<i64, StoreError> {
        let key = format!("{}{}", self.blocks, b.key_suffix());
        let until = (b.expires_ms != 0).then(|| b.expires_ms.div_ceil(1000) + 1);
        self.put_leased(key, b.encode(), until, now).await
    }

    /// Deletes a shared grant (a revocation); true when there was one.
    pub async fn delete_grant(&self, suffix: &str) -> Result<bool, StoreError> {
        self.delete(&format!("{}{suffix}", self.grants)).await
    }

    /// Deletes one key; true when there was one.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut c = self.client.clone();
        let r = self.bounded(c.delete(key, None)).await?;
        Ok(r.deleted() > 0)
    }

    /// Every shared grant of the group, with the revision of the read; keys that do not
    /// read as grants are returned apart.
    pub async fn grants(&self) -> Result<(Vec<SharedGrant>, Vec<String>, i64), StoreError> {
        let mut c = self.client.clone();
        let r = self
            .bounded(c.get(self.grants.clone(), Some(GetOptions::new().with_prefix())))
            .await?;
        let rev = r.header().map_or(0, |h| h.revision());
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for kv in r.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match SharedGrant::decode(&key, kv.value()) {
                Ok(g) => ok.push(g),
                Err(_) => bad.push(key),
            }
        }
        Ok((ok, bad, rev))
    }

    /// Watches the grants from revision `from` (inclusive).
    pub async fn watch_grants(&self, from: i64) -> Result<GrantWatch, StoreError> {
        Ok(GrantWatch {
            raw: self.watch_prefix(&self.grants, from).await?,
        })
    }

    /// Watches the keys under `prefix` from revision `from` (inclusive), with the values
    /// deleted keys had.
    pub async fn watch_prefix(&self, prefix: &str, from: i64) -> Result<RawWatch, StoreError> {
        let mut c = self.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(from);
        let stream = self.bounded(c.watch(prefix, Some(opts))).await?;
        Ok(RawWatch { stream })
    }

    /// Every key under `prefix` with its value and the revision it was last written at,
    /// and the revision of the read.
    pub async fn read_prefix(&self, prefix: &str) -> Result<(Vec<RawKv>, i64), StoreError> {
        let mut c = self.client.clone();
        let r = self
            .bounded(c.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let rev = r.header().map_or(0, |h| h.revision());
        let kvs = r
            .kvs()
            .iter()
            .map(|kv| RawKv {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                revision: kv.mod_revision(),
            })
            .collect();
        Ok((kvs, rev))
    }

    /// Writes `value` at `key` (no lease); the revision it was written at.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        self.put_leased(key.to_string(), value, None, 0).await
    }

    /// Writes `value` at `key` until `until` (Unix seconds, rounded up to
    /// [`LEASE_STEP`]): gone then unless written again.
    pub async fn put_until(
        &self,
        key: &str,
        value: Vec<u8>,
        until: u64,
        now: u64,
    ) -> Result<i64, StoreError> {
        self.put_leased(key.to_string(), value, Some(until), now)
            .await
    }

    /// A request that any member answers: the cluster's current revision.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let mut c = self.client.clone();
        let r = self
            .bounded(c.get(
                self.grants.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ))
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }
}

/// A key, its value and the revision it was last written at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawKv {
    /// The key.
    pub key: String,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
    /// The revision of the write (or of the delete).
    pub revision: i64,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawChange {
    /// Written.
    Put(RawKv),
    /// Deleted; the value before, when etcd still had it.
    Deleted(RawKv, Option<Vec<u8>>),
}

/// A watch on the keys under a prefix.
pub struct RawWatch {
    stream: WatchStream,
}

impl RawWatch {
    /// The next batch of changes and the revision they bring the reader to. A stream that
    /// ended or a cancelled watch (a compacted revision) is an error: the reader
    /// resynchronises from a full read.
    pub async fn next(&mut self) -> Result<(Vec<RawChange>, i64), StoreError> {
        loop {
            let Some(r) = self.stream.message().await? else {
                return Err(StoreError::WatchEnded);
            };
            if r.canceled() || r.compact_revision() > 0 {
                return Err(StoreError::WatchCancelled {
                    reason: r.cancel_reason().to_string(),
                    compacted: r.compact_revision(),
                });
            }
            let rev = r.header().map_or(0, |h| h.revision());
            if r.events().is_empty() && r.created() {
                continue;
            }
            let changes = r
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let raw = RawKv {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: kv.value().to_vec(),
                        revision: kv.mod_revision(),
                    };
                    Some(match e.event_type() {
                        EventType::Put => RawChange::Put(raw),
                        EventType::Delete => {
                            RawChange::Deleted(raw, e.prev_kv().map(|p| p.value().to_vec()))
                        }
                    })
                })
                .collect();
            return Ok((changes, rev));
        }
    }
}

/// A watch on the group's grants.
pub struct GrantWatch {
    raw: RawWatch,
}

impl GrantWatch {
    /// The next batch of grant changes (see [`RawWatch::next`]).
    pub async fn next(&mut self) -> Result<(Vec<GrantChange>, i64), StoreError> {
        let (raw, rev) = self.raw.next().await?;
        let changes = raw
            .into_iter()
            .map(|c| match c {
                RawChange::Put(kv) => match SharedGrant::decode(&kv.key, &kv.value) {
                    Ok(g) => GrantChange::Put(g),
                    Err(_) => GrantChange::Unreadable(kv.key),
                },
                RawChange::Deleted(kv, before) => GrantChange::Deleted {
                    before: before.and_then(|b| SharedGrant::decode(&kv.key, &b).ok()),
                    key: kv.key,
                },
            })
            .collect();
        Ok((changes, rev))
    }
}
