//! The etcd client statewall pins (`etcd-client` 0.21.1, whose own tests run against etcd
//! 3.5 and newer) against the etcd Debian ships (3.4, started here on loopback): what the
//! fleet relies on. A create-if-absent transaction claims a key once; a lease removes its
//! keys when it ends; a watch from a past revision replays what happened since, deletes
//! with their previous values; a watch from a compacted revision is cancelled with the
//! compaction revision, and a read at one is refused, so the reader knows to read afresh.

use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use statewall::cluster::{
    grants::SharedGrant,
    store::{GrantChange, Store, StoreError},
    ClusterConfig,
};
use statewall_harness::etcd::Etcd;

fn config(etcd: &Etcd, node: &str) -> ClusterConfig {
    ClusterConfig {
        endpoints: etcd.endpoints(),
        node: node.into(),
        group: "proof".into(),
        ..Default::default()
    }
}

fn grant(port: u16, node: &str) -> SharedGrant {
    SharedGrant {
        source: "10.77.0.1".parse().unwrap(),
        proto: 6,
        port,
        // (A fixed instant: the values compared below are made at different times.)
        expires_ms: 4_000_000_000_000,
        by: "api".into(),
        name: String::new(),
        node: node.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pinned_client_does_what_the_fleet_needs_on_debians_etcd() {
    let etcd = Etcd::start(1);
    let version = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(version.contains("etcd Version: 3.4."), "{version}");
    let now = statewall::engine::clock::unix_secs();

    // Create-if-absent: the first claim wins, from any client.
    let a = Store::connect(&config(&etcd, "a")).await.unwrap();
    let b = Store::connect(&config(&etcd, "b")).await.unwrap();
    let d = [7u8; 32];
    assert!(
        a.claim(&d, now + 30, "a", now).await.unwrap(),
        "first claim"
    );
    assert!(
        !a.claim(&d, now + 30, "a", now).await.unwrap(),
        "again: a replay"
    );
    assert!(
        !b.claim(&d, now + 30, "b", now).await.unwrap(),
        "another host: a replay"
    );
    assert!(
        b.claim(&[8u8; 32], now + 30, "b", now).await.unwrap(),
        "another digest"
    );
    let mut raw = Client::connect(etcd.endpoints(), None).await.unwrap();
    let key = format!("/statewall/replay/{}", "07".repeat(32));
    let r = raw.get(key.as_str(), None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"a", "the claim names its host");
    assert_ne!(r.kvs()[0].lease(), 0, "under a lease");

    // A lease takes its keys with it when it ends.
    let lease = raw.lease_grant(2, None).await.unwrap().id();
    raw.put(
        "/statewall/proof/leased",
        "x",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    assert_eq!(
        raw.get("/statewall/proof/leased", None)
            .await
            .unwrap()
            .count(),
        1
    );
    let t0 = Instant::now();
    loop {
        if raw
            .get("/statewall/proof/leased", None)
            .await
            .unwrap()
            .count()
            == 0
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the lease never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "not before its time"
    );

    // A watch from a past revision replays the puts and the delete (with its value).
    let first = a.put_grant(&grant(22, "a"), now).await.unwrap();
    a.put_grant(&grant(23, "a"), now).await.unwrap();
    let g22 = grant(22, "a");
    assert!(a.delete_grant(&g22.key_suffix()).await.unwrap());
    assert!(
        !a.delete_grant(&g22.key_suffix()).await.unwrap(),
        "already gone"
    );
    let mut w = b.watch_grants(first).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (changes, _rev) = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("the watch delivers")
            .unwrap();
        seen.extend(changes);
    }
    assert_eq!(seen[0], GrantChange::Put(grant(22, "a")));
    assert_eq!(seen[1], GrantChange::Put(grant(23, "a")));
    match &seen[2] {
        GrantChange::Deleted { key, before } => {
            assert!(key.ends_with("/10.77.0.1-tcp-22"), "{key}");
            assert_eq!(before.as_ref(), Some(&g22), "the value before the delete");
        }
        other => panic!("expected the delete, saw {other:?}"),
    }
    let (now_grants, bad, rev) = b.grants().await.unwrap();
    assert_eq!(now_grants, vec![grant(23, "a")]);
    assert!(bad.is_empty());
    assert!(rev > first);

    // Raw watch: events come in revision order with their revisions.
    let mut ws = raw
        .watch(
            "/statewall/groups/proof/",
            Some(WatchOptions::new().with_prefix().with_start_revision(first)),
        )
        .await
        .unwrap();
    let mut revs = Vec::new();
    while revs.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for e in m.events() {
            revs.push((e.event_type(), e.kv().unwrap().mod_revision()));
        }
    }
    assert_eq!(revs[0], (EventType::Put, first));
    assert!(revs.windows(2).all(|w| w[0].1 < w[1].1), "{revs:?}");

    // Compaction: a watch from before it is cancelled with the compaction revision, and
    // a read at an old revision is refused; a full read still works.
    raw.compact(rev, None).await.unwrap();
    let mut old = b.watch_grants(first).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), old.next())
        .await
        .expect("a cancelled watch answers")
    {
        Err(StoreError::WatchCancelled { compacted, .. }) => assert_eq!(compacted, rev),
        other => panic!("expected a cancelled watch, got {:?}", other.map(|_| ())),
    }
    let r = raw
        .get(
            "/statewall/groups/proof/",
            Some(GetOptions::new().with_prefix().with_revision(first)),
        )
        .await;
    assert!(
        r.unwrap_err().to_string().contains("compacted"),
        "a read at a compacted revision is refused"
    );
    let (again, _, _) = b.grants().await.unwrap();
    assert_eq!(again, vec![grant(23, "a")]);
}

/// With every member gone, a request fails within the request timeout, and works again
/// when a member is back, with the same client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_etcd_is_down_and_recover() {
    let mut etcd = Etcd::start(1);
    let mut cfg = config(&etcd, "a");
    cfg.request_timeout = statewall::types::Dur(Duration::from_millis(500));
    let s = Store::connect(&cfg).await.unwrap();
    let now = statewall::engine::clock::unix_secs();
    assert!(s.claim(&[1; 32], now + 30, "a", now).await.unwrap());
    etcd.kill(0);
    let t0 = Instant::now();
    assert!(s.claim(&[2; 32], now + 30, "a", now).await.is_err());
    // (A hang guard: the timeout is 0.5 s.)
    assert!(t0.elapsed() < Duration::from_secs(20));
    etcd.restart(0);
    etcd.wait_healthy();
    let t0 = Instant::now();
    loop {
        match s.claim(&[2; 32], now + 30, "a", now).await {
            Ok(claimed) => {
                assert!(claimed, "the failed claim left nothing behind");
                break;
            }
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(30), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The claim made before the outage is still there (the data survived the restart).
    assert!(!s.claim(&[1; 32], now + 30, "a", now).await.unwrap());
}

/// Over TLS with client certificates (`[cluster]` `ca_file`, `cert_file`, `key_file`), as
/// the fleet manifest runs it: with the client certificate the claim is made; without one,
/// or trusting another CA, etcd cannot be reached (an error, never a claim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let etcd = Etcd::start_with(1, true);
    let certs = etcd.certs().unwrap().clone();
    let mut cfg = config(&etcd, "a");
    assert!(cfg.endpoints[0].starts_with("https://"));
    cfg.request_timeout = statewall::types::Dur(Duration::from_secs(2));
    cfg.ca_file = Some(certs.ca.clone());
    cfg.cert_file = Some(certs.client.0.clone());
    cfg.key_file = Some(certs.client.1.clone());
    cfg.validate().unwrap();
    let now = statewall::engine::clock::unix_secs();
    let s = Store::connect(&cfg).await.unwrap();
    assert!(s.claim(&[3; 32], now + 30, "a", now).await.unwrap());
    assert!(!s.claim(&[3; 32], now + 30, "a", now).await.unwrap());
    // No client certificate: refused by etcd.
    let mut anon = cfg.clone();
    anon.cert_file = None;
    anon.key_file = None;
    let s = Store::connect(&anon).await.unwrap();
    assert!(s.claim(&[4; 32], now + 30, "a", now).await.is_err());
    // Another CA: etcd's certificate is not trusted.
    let other = Etcd::start_with(1, true);
    let mut wrong = cfg.clone();
    wrong.ca_file = Some(other.certs().unwrap().ca.clone());
    let s = Store::connect(&wrong).await.unwrap();
    assert!(s.claim(&[5; 32], now + 30, "a", now).await.is_err());
    // A key file that is not there: a clear error at connect, naming the key and file.
    let mut missing = cfg.clone();
    missing.key_file = Some("/nonexistent/tls.key".into());
    let e = Store::connect(&missing).await.err().unwrap().to_string();
    assert!(
        e.contains("key_file") && e.contains("/nonexistent/tls.key"),
        "{e}"
    );
}
