//! The fleet's costs, against a real 3-member etcd cluster on loopback started here:
//! - SPA to open with the cluster's replay claim, against the same on a single host plus
//!   twice the median create-if-absent transaction measured alone (target: at most that);
//! - the time from a grant made on one host until the two others let the source in,
//!   against the median time from a put until a watch on another connection sees it
//!   (target: at most 3x).
//!
//! Each baseline request is made right after one of the figures it is compared with
//! (alternating), so that both see the same load of the machine.

use std::{
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use statewall::{
    cluster::{grants::SharedGrant, store::Store, ClusterConfig},
    spa,
};

use super::{
    daemon::{spa_to_open, start_daemon, Daemon, OPEN_PORT, PORT},
    report::{median, ratio_row, Row, RUNS},
};
use crate::{etcd::Etcd, netns::Pair};

/// The wait after a figure before its baseline request: the daemons' writes for it
/// (a shared grant) are done by then, and do not share etcd with the baseline's.
const SETTLE: Duration = Duration::from_millis(50);

/// SPA packets and grants timed per figure: a median of 30, since one figure on this
/// shared 2-CPU machine (three etcd members and up to three daemons) varies by 30% from
/// run to run.
const SAMPLES: usize = RUNS * 6;

/// The client's wait between two connect attempts while it waits for a port to open: on
/// this 2-CPU machine a client retrying at once keeps a CPU busy, which the etcd members
/// and the daemon's runtime then lack (a claim measured alone has both CPUs). The same
/// for the single-host figure; it bounds each figure's resolution to this.
const PAUSE: Duration = Duration::from_micros(200);

/// The same for the grant-spread probes: each attempt already waits up to 100 us for an
/// answer (asleep), and a probe thread needs a few microseconds of CPU per attempt.
const PROBE_PAUSE: Duration = Duration::from_micros(50);

fn cluster_section(etcd: &Etcd, node: &str) -> String {
    let eps: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    format!(
        "\n[cluster]\nendpoints = [{}]\nnode = \"{node}\"\ngroup = \"bench\"\n",
        eps.join(", ")
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// etcd measured alone (no daemon in the path), one request at a time, so that each
/// figure of the daemons can be taken next to its baseline, under the same load of this
/// shared machine (a baseline measured minutes apart varied by 30%).
struct Alone {
    rt: tokio::runtime::Runtime,
    claims: Store,
    writer: Store,
    watch: statewall::cluster::store::GrantWatch,
    n: u16,
    now: u64,
}

impl Alone {
    /// Connects, and warms both paths up (5 requests each, not counted).
    fn new(etcd: &Etcd) -> anyhow::Result<Alone> {
        let rt = runtime()?;
        let cfg = |n: &str, group: &str| ClusterConfig {
            endpoints: etcd.endpoints(),
            node: n.into(),
            group: group.into(),
            ..Default::default()
        };
        let (claims, writer, watch) = rt.block_on(async {
            let claims = Store::connect(&cfg("bench-alone", "bench")).await?;
            let writer = Store::connect(&cfg("w", "bench-watch")).await?;
            let reader = Store::connect(&cfg("r", "bench-watch")).await?;
            let rev = reader.revision().await?;
            let watch = reader.watch_grants(rev + 1).await?;
            anyhow::Ok((claims, writer, watch))
        })?;
        let mut a = Alone {
            rt,
            claims,
            writer,
            watch,
            n: 0,
            now: statewall::engine::clock::unix_secs(),
        };
        for _ in 0..5 {
            a.claim()?;
            a.put_to_watch()?;
        }
        Ok(a)
    }

    /// µs of one create-if-absent claim (a fresh digest, its lease made already).
    fn claim(&mut self) -> anyhow::Result<f64> {
        let d = spa::random_bytes::<32>()?;
        let (s, now) = (&self.claims, self.now);
        self.rt.block_on(async {
            let t0 = Instant::now();
            anyhow::ensure!(s.claim(&d, now + 120, "bench-alone", now).await?, "claimed");
            Ok(t0.elapsed().as_nanos() as f64 / 1e3)
        })
    }

    /// µs from a put (by one client) until a watch (another client) delivers it.
    fn put_to_watch(&mut self) -> anyhow::Result<f64> {
        self.n = self.n.wrapping_add(1);
        let g = SharedGrant {
            source: "10.99.0.1".parse()?,
            proto: 6,
            port: 1000 + self.n,
            expires_ms: (self.now + 600) * 1000,
            by: "api".into(),
            name: String::new(),
            node: "w".into(),
        };
        let (writer, w, now) = (&self.writer, &mut self.watch, self.now);
        self.rt.block_on(async {
            let t0 = Instant::now();
            writer.put_grant(&g, now).await?;
            loop {
                let (changes, _) = tokio::time::timeout(Duration::from_secs(5), w.next())
                    .await
                    .context("the watch did not deliver within 5 s")??;
                if !changes.is_empty() {
                    return Ok(t0.elapsed().as_nanos() as f64 / 1e3);
                }
            }
        })
    }
}

/// From a grant through host A's API until every host of `others` lets the source in
/// (each probed from its own client namespace by a thread of its own): µs, `n` times.
/// After each, a put-to-watch of etcd alone: (the spreads, the baselines).
fn grant_to_enforced(
    a: &Daemon,
    others: &[&Pair],
    n: usize,
    alone: &mut Alone,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let cv = others[0].client_v4;
    anyhow::ensure!(
        others.iter().all(|p| p.client_v4 == cv),
        "the hosts' clients must share one address, as behind a balancer"
    );
    let path = format!("/api/v1/gate/grants?addr={cv}&proto=tcp&port={PORT}");
    let body = format!(r#"{{"addr": "{cv}", "proto": "tcp", "port": {PORT}, "seconds": 600}}"#);
    // One client runtime for every request: a runtime made per request (what
    // `request_blocking` does) costs the time to set up its reactor inside the figure.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut runs, mut base) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let _ = rt.block_on(statewall::client::request(&a.socket, "DELETE", &path, None));
        // Until the revocation has reached every host.
        for p in others {
            let to = SocketAddr::from((p.server_v4, PORT));
            let t0 = Instant::now();
            while p.client.run(|| crate::netns::try_connect(to)) {
                if t0.elapsed() > Duration::from_secs(5) {
                    bail!("a host still lets the source in 5 s after the revocation");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let start = std::sync::Barrier::new(others.len() + 1);
        let (t0, opened) = std::thread::scope(|sc| -> anyhow::Result<_> {
            let probes: Vec<_> = others
                .iter()
                .map(|p| {
                    let start = &start;
                    sc.spawn(move || {
                        let to = SocketAddr::from((p.server_v4, PORT));
                        // At the barrier even when the namespace cannot be entered: the
                        // main thread waits there.
                        let arrive = Arrive(start, std::sync::atomic::AtomicBool::new(false));
                        p.client.run(|| {
                            arrive.now();
                            let t0 = Instant::now();
                            while !crate::netns::try_connect(to) {
                                std::thread::sleep(PROBE_PAUSE);
                                if t0.elapsed() > Duration::from_secs(5) {
                                    return None;
                                }
                            }
                            Some(Instant::now())
                        })
                    })
                })
                .collect();
            start.wait();
            let t0 = Instant::now();
            let r = rt.block_on(statewall::client::request(
                &a.socket,
                "POST",
                "/api/v1/gate/grants",
                Some(body.clone()),
            ))?;
            anyhow::ensure!(r.status == 201, "grant: {} {}", r.status, r.body);
            let mut opened = Vec::new();
            for h in probes {
                match h.join() {
                    Ok(t) => opened.push(t),
                    Err(_) => bail!("a probe thread panicked (see above)"),
                }
            }
            Ok((t0, opened))
        })?;
        let last = opened
            .into_iter()
            .collect::<Option<Vec<Instant>>>()
            .context("a host did not let the source in within 5 s of the grant")?
            .into_iter()
            .max()
            .unwrap_or(t0);
        runs.push(last.saturating_duration_since(t0).as_nanos() as f64 / 1e3);
        std::thread::sleep(SETTLE);
        base.push(alone.put_to_watch()?);
    }
    Ok((runs, base))
}

/// A thread's place at a barrier, taken at most once: by [`Arrive::now`], or when dropped
/// (a thread that panics before it gets there must not leave the others waiting).
struct Arrive<'a>(&'a std::sync::Barrier, std::sync::atomic::AtomicBool);

impl Arrive<'_> {
    fn now(&self) {
        if !self.1.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.0.wait();
        }
    }
}

impl Drop for Arrive<'_> {
    fn drop(&mut self) {
        self.now();
    }
}

/// The rows.
pub fn rows() -> anyhow::Result<Vec<Row>> {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let etcd = Etcd::start(3);
    let mut alone = Alone::new(&etcd)?;
    let k = spa::random_bytes::<32>()?;
    let h = spa::random_bytes::<64>()?;
    let (kb, hb) = (STANDARD.encode(k), STANDARD.encode(h));
    let pa = Pair::new("clba");
    let pb = Pair::new("clbb");
    let pc = Pair::new("clbc");
    let mut listeners = Vec::new();
    for p in [&pa, &pb, &pc] {
        let sv = p.server_v4;
        listeners.push(p.server.run(|| TcpListener::bind((sv, PORT)))?);
        listeners.push(p.server.run(|| TcpListener::bind((sv, OPEN_PORT)))?);
    }
    // Single host first, then the same host in the cluster (with a second host, B).
    let (single, _) = {
        let d = start_daemon(&pa, &kb, &hb, "cl-single", "")?;
        spa_to_open(&pa, &d, (&k, &h), SAMPLES, PAUSE)?
    };
    let a = start_daemon(&pa, &kb, &hb, "cl-a", &cluster_section(&etcd, "a"))?;
    // Each SPA packet to the clustered host followed by a claim of etcd alone.
    let (mut clustered, mut claims) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        clustered.extend(spa_to_open(&pa, &a, (&k, &h), 1, PAUSE)?.0);
        // (Once the daemon's own writes for that packet, the grant it shares, are done.)
        std::thread::sleep(SETTLE);
        claims.push(alone.claim()?);
    }
    let txn = median(&claims);
    // Hosts B and C only now: on this one machine their work (installing A's grants)
    // would take CPU from A's path, which on a real fleet runs on other machines.
    let _b = start_daemon(&pb, &kb, &hb, "cl-b", &cluster_section(&etcd, "b"))?;
    let _c = start_daemon(&pc, &kb, &hb, "cl-c", &cluster_section(&etcd, "c"))?;
    let (spread, watches) = grant_to_enforced(&a, &[&pb, &pc], SAMPLES, &mut alone)?;
    let watch = median(&watches);
    drop(listeners);
    let (s1, sc) = (median(&single), median(&clustered));
    let bound = s1 + 2.0 * txn;
    let row =
        |name: &str, runs: Vec<f64>, each: &str, base_name: &str, base: f64, max: Option<f64>| {
            ratio_row(name, "us", runs, each.into(), base_name, base, max)
        };
    Ok(vec![
        row(
            "cluster: SPA to open with the replay claim (3-member etcd)",
            clustered,
            "1 SPA packet",
            "single-host SPA to open + 2 x one claim alone",
            bound,
            Some(1.0),
        ),
        row(
            "cluster: SPA to open on a single host (same run)",
            single,
            "1 SPA packet",
            "cluster SPA to open",
            sc,
            None,
        ),
        row(
            "cluster: one create-if-absent claim alone (median)",
            vec![txn],
            &format!("median of {SAMPLES}, each after one SPA packet above"),
            "single-host SPA to open",
            s1,
            None,
        ),
        row(
            "cluster: grant on host A until hosts B and C enforce it",
            spread,
            "1 grant by the API",
            "put until another client's watch sees it (one after each grant)",
            watch,
            Some(3.0),
        ),
    ])
}
