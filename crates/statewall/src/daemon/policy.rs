//! The policy a cluster pushes: the supervised task `cluster_policy` reads
//! `{prefix}/groups/{group}/policy/` in full, then follows it by a watch, applies each
//! firewall instance's newest chains (committed as the API commits any firewall change)
//! and each pushed config section (`[[knock]]`, `[[xfsm]]`, `[spa]`, `[detect]`, applied
//! like a reload) atomically, keeps the last good ones when a push is refused, and writes
//! this host's report.
//!
//! How a change is put in force is not this module's: the daemon's top hands it the
//! firewall's commit and the loader as [`Appliers`]. So this task, below both, only follows
//! the keys, tells new revisions from applied ones, keeps what was refused and reports.
//!
//! An instance under cluster policy refuses changes through the local API (409) until its
//! policy key is deleted; it may still be attached and detached here (ports are local).

use std::{sync::Arc, time::Duration};

use crate::{
    cluster::link::Link,
    cluster::sections::{Pushed, Sections, SECTIONS},
    cluster::{
        store::{RawChange, StoreError},
        NodeReport, Refused,
    },
    config::Config,
    daemon::state::Shared,
};

/// How the pushed policy is put in force: given by the daemon's top ([`crate::daemon`]).
/// Each leaves everything as it was when it fails.
#[derive(Clone, Copy)]
pub struct Appliers {
    /// Replaces the chains of firewall instance `name` (made when missing) with a policy
    /// value, their counters from zero.
    pub firewall: fn(&Shared, &str, &[u8]) -> anyhow::Result<()>,
    /// The config file read again with these pushed sections over its own (not applied).
    pub load: fn(&Shared, &Sections) -> anyhow::Result<Config>,
    /// Puts a config in force, as a reload does.
    pub apply: fn(&Shared, Config) -> anyhow::Result<()>,
}

/// Applies a written policy key (`firewall/{name}` under the prefix) unless this
/// revision is in force already.
fn on_put(s: &Shared, ap: &Appliers, link: &Link, key: &str, value: &[u8], revision: i64) {
    {
        let p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
        if p.applied.get(key).is_some_and(|r| *r >= revision)
            || p.refused.get(key).is_some_and(|r| r.revision >= revision)
        {
            return;
        }
    }
    // (Not under the policy lock: an API handler may hold the daemon's lock and ask.)
    let r = match key.strip_prefix("firewall/") {
        Some(name) if crate::types::check_name(name).is_ok() => {
            (ap.firewall)(s, name, value).map_err(|e| e.to_string())
        }
        _ if SECTIONS.contains(&key) => std::str::from_utf8(value)
            .map_err(|_| "not UTF-8 text".to_string())
            .and_then(|text| {
                let p = Pushed {
                    revision,
                    text: text.into(),
                };
                apply_section(s, ap, link, key, Some(p)).map_err(|e| format!("{e:#}"))
            }),
        _ => {
            Err("not a policy key statewall knows (firewall/NAME, knock, xfsm, spa, detect)".into())
        }
    };
    let mut p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
    match r {
        Ok(()) => {
            tracing::info!(key, revision, "cluster: policy applied");
            p.applied.insert(key.to_string(), revision);
            p.refused.remove(key);
        }
        Err(e) => {
            let kept = p.applied.get(key).copied();
            tracing::warn!(
                key,
                revision,
                "cluster: pushed policy refused: {e} (revision {kept:?} stays in force)"
            );
            p.refused.insert(
                key.to_string(),
                Refused {
                    revision,
                    reason: e,
                },
            );
        }
    }
}

/// The pushed sections this host runs, kept under its state directory.
fn kept_sections(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("cluster-sections.json")
}

/// Runs the config file with `pushed` as the pushed section `name` (`None`: withdrawn,
/// the file's own section again), applied like a reload: a config that does not load or
/// apply changes nothing.
fn apply_section(
    s: &Shared,
    ap: &Appliers,
    link: &Link,
    name: &str,
    pushed: Option<Pushed>,
) -> anyhow::Result<()> {
    let mut cur = link.sections.lock().unwrap_or_else(|p| p.into_inner());
    let mut next = cur.clone();
    match pushed {
        // (Read, and checked to hold that section only, by `load_config_over`.)
        Some(p) => {
            next.by_name.insert(name.to_string(), p);
        }
        None if next.by_name.remove(name).is_none() => return Ok(()),
        None => {}
    }
    let cfg = (ap.load)(s, &next)?;
    let kept = kept_sections(&cfg.daemon.state_dir);
    (ap.apply)(s, cfg)?;
    if let Err(e) = next.save(&kept) {
        tracing::warn!("cluster: {e}: a restart while etcd is away runs older sections");
    }
    *cur = next;
    Ok(())
}

/// At start: the config with the pushed sections this host ran last (so that a restart
/// while etcd is away keeps them), marked as applied at their revisions. When they no
/// longer load (the file changed under them), the file alone, and the policy task applies
/// what etcd holds once it is reached. `load_kept` reads the config file with the kept
/// sections over it.
pub fn with_kept_sections(
    cfg: Config,
    link: &Link,
    load_kept: impl FnOnce(&Sections) -> anyhow::Result<Config>,
) -> Config {
    let kept = match Sections::load(&kept_sections(&cfg.daemon.state_dir)) {
        Ok(k) if k.is_empty() => return cfg,
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("cluster: {e}: starting with the file's sections");
            return cfg;
        }
    };
    match load_kept(&kept) {
        Ok(mut c) => {
            tracing::info!("cluster: running the pushed {}", kept.describe());
            // `[daemon]` as read first: the sockets and pins are bound to it already.
            c.daemon = cfg.daemon;
            let mut sections = link.sections.lock().unwrap_or_else(|p| p.into_inner());
            let mut p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
            for (n, s) in &kept.by_name {
                p.applied.insert(n.clone(), s.revision);
            }
            *sections = kept;
            c
        }
        Err(e) => {
            tracing::warn!("cluster: the pushed sections kept here do not load ({e:#}): starting with the file's");
            cfg
        }
    }
}

/// A policy key deleted: a firewall instance keeps its chains and is local again; a
/// section gives way to the file's own.
fn on_delete(s: &Shared, ap: &Appliers, link: &Link, key: &str) {
    if SECTIONS.contains(&key) {
        if let Err(e) = apply_section(s, ap, link, key, None) {
            tracing::warn!(
                key,
                "cluster: pushed section withdrawn, but the file's own does not apply ({e:#}): the pushed one stays in force"
            );
            // Still in force, and said so; tried again after a reload.
            let mut p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
            let revision = p.applied.get(key).copied().unwrap_or(0);
            p.refused.insert(
                key.to_string(),
                Refused {
                    revision,
                    reason: format!("withdrawal: the file's own section does not apply: {e:#}"),
                },
            );
            return;
        }
    }
    let mut p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
    if p.applied.remove(key).is_some() {
        tracing::info!(
            key,
            "cluster: policy withdrawn; the instance keeps its rules and takes local changes again"
        );
    }
    p.refused.remove(key);
}

/// How long a host's report outlives it (it is written every 5 s): a host that stopped
/// leaves `statewall cluster status` 30 to 40 s later.
const REPORT_KEPT: u64 = 30;

/// Writes this host's report.
async fn report(link: &Link) -> Result<(), StoreError> {
    let now = crate::engine::clock::unix_secs();
    let r = {
        let p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
        NodeReport {
            node: link.node.clone(),
            time: now,
            applied: p.applied.clone(),
            refused: p.refused.clone(),
        }
    };
    let key = format!("{}{}", link.cfg.nodes_prefix(), link.node);
    let value = serde_json::to_vec(&r).unwrap_or_default();
    link.store
        .put_until(&key, value, now + REPORT_KEPT, now)
        .await?;
    Ok(())
}

/// The supervised task: full read, then watch, again after every gap (a second later).
pub async fn run(
    s: Arc<Shared>,
    link: Arc<Link>,
    ap: Appliers,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let every = Duration::from_secs(1);
    super::supervise::until_stopped(
        stop,
        (every, every),
        "cluster policy",
        |_| {},
        |mut stop| {
            let (s, link) = (s.clone(), link.clone());
            async move { follow(&s, &ap, &link, &mut stop).await }
        },
    )
    .await
}

async fn follow(
    s: &Shared,
    ap: &Appliers,
    link: &Link,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let prefix = link.cfg.policy_prefix();
    let rev = read_all(s, ap, link, &prefix).await?;
    report(link).await?;
    let mut watch = link.store.watch_prefix(&prefix, rev + 1).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = watch.next() => {
                let (changes, _) = m?;
                for c in changes {
                    match c {
                        RawChange::Put(kv) => on_put(s, ap, link, &kv.key[prefix.len()..], &kv.value, kv.revision),
                        RawChange::Deleted(kv, _) => on_delete(s, ap, link, &kv.key[prefix.len()..]),
                    }
                }
                report(link).await?;
            }
            _ = link.reread.notified() => {
                read_all(s, ap, link, &prefix).await?;
                report(link).await?;
            }
            _ = tick.tick() => report(link).await?,
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Reads the policy in full and applies what is not in force yet (withdraws what is gone);
/// the revision of the read.
async fn read_all(s: &Shared, ap: &Appliers, link: &Link, prefix: &str) -> Result<i64, StoreError> {
    let (kvs, rev) = link.store.read_prefix(prefix).await?;
    let present: Vec<String> = kvs
        .iter()
        .map(|kv| kv.key[prefix.len()..].to_string())
        .collect();
    for kv in &kvs {
        on_put(s, ap, link, &kv.key[prefix.len()..], &kv.value, kv.revision);
    }
    // Withdrawn while this host was away.
    let gone: Vec<String> = {
        let p = link.policy.lock().unwrap_or_else(|p| p.into_inner());
        p.applied
            .keys()
            .chain(p.refused.keys())
            .filter(|k| !present.contains(k))
            .cloned()
            .collect()
    };
    for k in gone {
        on_delete(s, ap, link, &k);
    }
    Ok(rev)
}
