//! Mining detection: the built-in mining model; a held-out capture of Stratum miners among
//! long-lived benign sessions (ssh with keepalives, MQTT through mosquitto, WebSocket),
//! made between namespaces this test creates and classified by `statewall detect eval`;
//! and, live, `[detect.mining]` finding a miner on the protected host, blocking its pool
//! (and only its pool) under `enforce`, letting the block lapse once mining stops, and
//! reporting without blocking under `monitor`.

mod common;

use std::{
    net::{SocketAddr, TcpListener},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use common::{bin, cli, free_port, scrape, Daemon, Paths};
use serde_json::Value;
use statewall::{
    detect::{
        capture,
        model::Model,
        sessions,
        windows::{SampleKind, Shape},
    },
    monitor::{Kind, Monitor, MonitorSpec},
};
use statewall_common::TCX_NEXT;
use statewall_harness::{
    dataset::{self, Plan},
    netns::Pair,
    packet::Packet,
    stratum, websocket,
};

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, len: usize) -> Vec<u8> {
    Packet::tcp(ip(src), ip(dst), sport, dport, flags)
        .payload(&vec![b'j'; len])
        .build()
}

/// The same frames through the kernel's crypto monitor (BPF_PROG_TEST_RUN) and through a
/// capture cut at 96 bytes read back give the same session values: packets and IP bytes
/// each way, the server and how it was found; and the capture's times give the span.
#[test]
fn captured_sessions_count_as_the_kernel_counts() {
    let frames = vec![
        tcp("10.0.0.1", "10.0.0.3", 40000, 3333, 0x02, 0),
        tcp("10.0.0.3", "10.0.0.1", 3333, 40000, 0x12, 0),
        tcp("10.0.0.1", "10.0.0.3", 40000, 3333, 0x18, 180),
        tcp("10.0.0.3", "10.0.0.1", 3333, 40000, 0x18, 700),
        tcp("10.0.0.1", "10.0.0.3", 40000, 3333, 0x10, 0),
        tcp("10.0.0.3", "10.0.0.1", 3333, 40000, 0x18, 37),
        Packet::udp(ip("10.0.0.9"), ip("10.0.0.2"), 5000, 53)
            .payload(&[1; 40])
            .build(),
        Packet::udp(ip("10.0.0.2"), ip("10.0.0.9"), 53, 5000)
            .payload(&[2; 300])
            .build(),
        tcp("fd00::1", "fd00::2", 41000, 14444, 0x18, 250),
        tcp("fd00::2", "fd00::1", 14444, 41000, 0x18, 90),
        // Not counted: ICMP.
        Packet::echo_request(ip("10.0.0.3"), ip("10.0.0.2"), 4).build(),
    ];
    let mut mon = Monitor::open(MonitorSpec::new("capm", Kind::Crypto, &["lo"])).unwrap();
    for f in &frames {
        assert_eq!(mon.test_run(f).unwrap(), TCX_NEXT);
    }
    let mut kernel: Vec<_> = mon
        .read()
        .unwrap()
        .crypto
        .into_iter()
        .map(|c| (c.key, c.total))
        .collect();
    kernel.sort_by_key(|k| k.0);
    assert_eq!(kernel.len(), 3);
    let t0 = 1_700_000_000_000_000_000u64;
    let timed: Vec<(u64, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (t0 + i as u64 * 250_000_000, f.clone()))
        .collect();
    let c = capture::read_sessions(&capture::write_pcap(&timed, 96)).unwrap();
    let shape = Shape {
        t_ns: 60_000_000_000,
        n: 4,
        max_flows: 100,
        kind: SampleKind::Sessions,
    };
    let (windows, turned_away) = sessions::values(&c.sessions, shape);
    assert!(turned_away.is_empty());
    assert_eq!(windows.len(), 1);
    let mut offline = windows[0].clone();
    offline.sort_by_key(|k| k.0);
    assert_eq!(offline.len(), kernel.len());
    for ((kk, kv), (ok, ov)) in kernel.iter().zip(&offline) {
        assert_eq!(kk, ok);
        let counts = |v: &statewall_common::monitor::CryptoVal| {
            (
                v.n_packets,
                v.n_packets_reverse,
                v.n_bytes,
                v.n_bytes_reverse,
                v.server,
                v.method,
            )
        };
        assert_eq!(counts(kv), counts(ov), "{kk:?}");
        assert!(kv.n_packets + kv.n_packets_reverse >= 2);
    }
    // The TCP session: first frame 0, last frame 5.
    let tcp4 = offline
        .iter()
        .find(|(k, _)| k.dport == 3333 || k.sport == 3333)
        .unwrap();
    assert_eq!(tcp4.1.alive_ts - tcp4.1.start_ts, 5 * 250_000_000);
    // A window with a bound of 2 sessions turns the third away.
    let (w, away) = sessions::values(
        &c.sessions,
        Shape {
            max_flows: 2,
            ..shape
        },
    );
    assert_eq!((w[0].len(), away.len()), (2, 1));
}

#[test]
fn the_builtin_mining_model_reads() {
    let m = Model::builtin_mining();
    assert_eq!(m.shape.kind, SampleKind::Sessions);
    assert!(m.trained_on.0 > 0 && m.trained_on.1 > 0, "{m:?}");
    // `make model`'s bar: 21 of the 25 trees; 6 windows of 10 s.
    assert_eq!((m.params.trees, m.params.min_votes), (25, 21));
    assert_eq!((m.shape.n, m.shape.t_ns), (6, 10_000_000_000));
    // `detect eval --detector mining` reads with the built-in mining model and names the
    // capture it could not read. (A flood model where a mining one is asked for is refused
    // by the config: `detect::tests::bad_values_name_their_key`.)
    let out = std::process::Command::new(bin())
        .args([
            "detect",
            "eval",
            "--detector",
            "mining",
            "/nonexistent.pcap",
        ])
        .args(["--attackers", "10.0.0.1", "--victims", "10.0.0.2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent.pcap"), "{err}");
}

/// A held-out mining capture (a seed the training set never used: other pool port, job
/// and share timing, addresses of the benign sessions), classified by the built-in model:
/// recall >= 0.9, precision >= 0.8 and fpr <= 0.01, at least a third of the flows benign.
/// (The bar, F1 >= 0.99, is measured by `make model` on the held-out set and not
/// always met: a WebSocket dashboard of a capture can be taken for mining, README.)
#[test]
fn held_out_mining_is_classified() {
    let dir = std::env::temp_dir().join(format!("statewall-mining-{}", std::process::id()));
    let plans = dataset::mining_plans("held-out", 9500, 1, 150);
    dataset::make(&dir, &plans).unwrap();
    let p: &Plan = &plans[0];
    let (m, f) = (dir.join("manifest.json"), dir.join(p.file()));
    let v = common::eval_json(&[
        "--detector".as_ref(),
        "mining".as_ref(),
        "--manifest".as_ref(),
        m.as_os_str(),
        f.as_os_str(),
    ]);
    let n = |k: &str| v[k].as_u64().unwrap();
    eprintln!("{}: {v}", p.file());
    let benign = n("fp") + n("tn");
    assert_eq!(n("tp") + n("fp") + n("tn") + n("fn"), n("flows"));
    assert!(n("tp") >= 4 && benign * 3 >= n("flows"), "{v}");
    assert!(v["recall"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["precision"].as_f64().unwrap() >= 0.8, "{v}");
    assert!(v["fpr"].as_f64().unwrap() <= 0.01, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for `f`, at most `secs` seconds (mining shows over windows of 10 s).
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A peer's end: an error is a failure unless it came once `stop` was set (the pools then
/// reset their connections).
fn ended_ok(r: std::io::Result<()>, stop: &AtomicBool, what: &str) {
    if let Err(e) = r {
        assert!(stop.load(Ordering::Relaxed), "{what}: {e}");
    }
}

fn mitigations(d: &Daemon) -> Vec<Value> {
    d.get("/api/v1/detect")["mitigations"]
        .as_array()
        .unwrap()
        .clone()
}

/// The protected host (the server namespace, 10.77.0.2) runs a miner to a pool at
/// 10.77.0.8 and another to an allowlisted pool at 10.77.0.9, and keeps a WebSocket
/// session to 10.77.0.1 (benign, and allowlisted too: the model can take a dashboard for
/// a pool, README "Mining detection"). Under `enforce` the first pool is blocked with its
/// reason, its miner's shares stop being accepted while the allowlisted pool's and the
/// WebSocket's traffic go on, and the block lapses after mining stops. Under `monitor` the
/// same sessions are reported and nothing is blocked, and a second miner of the host that
/// connects to the pool once the first was found is reported in its first window, as a
/// session of a known miner (the model judges a session from its second window).
#[test]
fn mining_is_detected_and_its_pool_blocked() {
    for mode in ["enforce", "monitor"] {
        let pair = Pair::new("dmn");
        let p = Paths::new("dmn");
        for a in ["10.77.0.8/24", "10.77.0.9/24"] {
            pair.client
                .exec_ok(&["ip", "addr", "add", a, "dev", &pair.client_if]);
        }
        let off = "syn_flood = { enabled = false }\nudp_flood = { enabled = false }\n\
                   icmp_flood = { enabled = false }\nreflection = { enabled = false }\n";
        std::fs::write(
            &p.config,
            format!(
                "[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n\n[detect]\nmode = \"{mode}\"\n\
                 expiry = \"20s\"\nallowlist = [\"10.77.0.9/32\", \"10.77.0.1/32\"]\n{off}\n\
                 [detect.mining]\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\n",
                i = pair.server_if,
                n = pair.server.name
            ),
        )
        .unwrap();
        let mport = free_port();
        let d = Daemon::start(&p, &["--metrics-listen", &format!("127.0.0.1:{mport}")]);
        let stop = AtomicBool::new(false);
        let stop_a = AtomicBool::new(false);
        let (acc_a, acc_b, ws) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let acc_c = AtomicU64::new(0);
        let pool_a: SocketAddr = "10.77.0.8:3333".parse().unwrap();
        let pool_b: SocketAddr = "10.77.0.9:4444".parse().unwrap();
        let ws_at: SocketAddr = "10.77.0.1:8081".parse().unwrap();
        let from: SocketAddr = "10.77.0.2:0".parse().unwrap();
        let pool_t = stratum::PoolTiming {
            job: 12.0,
            branch: 8,
        };
        let ws_t = websocket::Timing {
            update: 4.0,
            ping: 15.0,
            message: 10.0,
        };
        let t = stratum::MinerTiming { share: 4.0 };
        let (c, s) = (&pair.client, &pair.server);
        std::thread::scope(|sc| {
            for (at, seed) in [(pool_a, 1u64), (pool_b, 2)] {
                let stop = &stop;
                sc.spawn(move || {
                    c.run(|| stratum::pool(TcpListener::bind(at).unwrap(), pool_t, seed, stop))
                });
            }
            sc.spawn(|| {
                c.run(|| websocket::server(TcpListener::bind(ws_at).unwrap(), ws_t, 3, &stop))
            });
            std::thread::sleep(Duration::from_millis(500));
            sc.spawn(|| {
                let r = s.run(|| stratum::miner(from, pool_a, "a.1", t, 4, &stop_a, &acc_a));
                ended_ok(r, &stop, "the miner of the blocked pool");
            });
            sc.spawn(|| {
                let r = s.run(|| stratum::miner(from, pool_b, "b.1", t, 5, &stop, &acc_b));
                ended_ok(r, &stop, "the miner of the allowlisted pool");
            });
            sc.spawn(|| {
                let r = s.run(|| websocket::client(from, ws_at, ws_t, 6, &stop, &ws));
                ended_ok(r, &stop, "the WebSocket client");
            });
            let check = || {
                let ms = mitigations(&d);
                for m in &ms {
                    for t in ["10.77.0.9/32", "10.77.0.1/32", "10.77.0.2/32"] {
                        assert_ne!(m["target"], t, "never blocked: {ms:?}");
                    }
                }
                ms
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if mode == "monitor" {
                    let flows = |known: Option<bool>| -> Vec<String> {
                        let v = d.get("/api/v1/detect");
                        v["mining"]["last"]
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .filter(|x| {
                                        x["block"] == "10.77.0.8"
                                            && known.is_none_or(|k| {
                                                // A known miner's first window: no forest
                                                // judged it (0 of 0 trees).
                                                x["known_miner"] == k
                                                    && (!k
                                                        || x["votes"] == serde_json::json!([0, 0]))
                                            })
                                    })
                                    .map(|x| x["flow"].as_str().unwrap().to_string())
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    // The first miner's session, as the model found it.
                    let mut first = Vec::new();
                    wait_for("mining reported", 240, || {
                        check();
                        first = flows(None);
                        !first.is_empty()
                    });
                    let before = acc_a.load(Ordering::Relaxed);
                    wait_for("shares accepted on", 60, || {
                        acc_a.load(Ordering::Relaxed) >= before + 3
                    });
                    assert!(check().iter().all(|m| m["detector"] != "mining"));
                    // A second miner of the host connects to the pool: its session is mining
                    // from its first window, before the model could judge it (it judges a
                    // session from its second), as one of a host known to mine there.
                    let acc_c = &acc_c;
                    let stop = &stop;
                    sc.spawn(move || {
                        let r = s.run(|| stratum::miner(from, pool_a, "a.2", t, 7, stop, acc_c));
                        ended_ok(r, stop, "the second miner of the pool");
                    });
                    let mut seen = Vec::new();
                    wait_for(
                        "the second miner's session taken as one of a known miner",
                        60,
                        || {
                            seen = flows(Some(true));
                            seen.iter().any(|f| !first.contains(f))
                        },
                    );
                    eprintln!("monitor: model {first:?}, known miner {seen:?}");
                    assert!(check().iter().all(|m| m["detector"] != "mining"));
                    return;
                }
                wait_for("the pool blocked", 240, || {
                    check()
                        .iter()
                        .any(|m| m["detector"] == "mining" && m["target"] == "10.77.0.8/32")
                });
                let ms = check();
                let m = ms.iter().find(|m| m["detector"] == "mining").unwrap();
                let reason = m["reason"].as_str().unwrap();
                // With the forest's score: at least its bar, 21 of 25 trees.
                let votes = reason
                    .split_once("classified as mining by ")
                    .and_then(|(_, r)| r.split_once(" of 25 trees"))
                    .and_then(|(v, _)| v.parse::<u32>().ok());
                assert!(
                    votes.is_some_and(|v| (21..=25).contains(&v)) && reason.contains("10.77.0.2"),
                    "{m}"
                );
                let (rc, out, err) = cli(&p, &["detect", "list"]);
                eprintln!("{out}");
                assert_eq!(rc, 0, "{err}");
                assert!(
                    out.lines().any(|l| l.starts_with("mining")
                        && l.contains("10.77.0.8/32")
                        && l.contains("classified as mining")),
                    "{out}"
                );
                // Shares in flight when the block came may still be answered; then none.
                std::thread::sleep(Duration::from_secs(2));
                let (a0, b0, w0) = (
                    acc_a.load(Ordering::Relaxed),
                    acc_b.load(Ordering::Relaxed),
                    ws.load(Ordering::Relaxed),
                );
                wait_for("the allowlisted pool and the WebSocket go on", 90, || {
                    acc_b.load(Ordering::Relaxed) >= b0 + 3 && ws.load(Ordering::Relaxed) >= w0 + 3
                });
                assert_eq!(
                    acc_a.load(Ordering::Relaxed),
                    a0,
                    "the blocked pool answered: {:?}",
                    check()
                );
                let v = d.get("/api/v1/detect");
                let mining = &v["mining"];
                eprintln!("{mode}: mining {mining}");
                assert!(
                    mining["stats"]["windows"].as_u64().unwrap() >= 1,
                    "{mining}"
                );
                assert!(
                    mining["stats"]["attacks"].as_u64().unwrap() >= 1,
                    "{mining}"
                );
                let metrics = scrape(mport);
                assert!(
                    metrics.contains("statewall_detect_mining_total{what=\"windows\"}"),
                    "{metrics}"
                );
                // Mining stops: the block lapses (its drop count stops growing).
                stop_a.store(true, Ordering::Relaxed);
                wait_for("the block lapsed", 60, || {
                    check().iter().all(|m| m["detector"] != "mining")
                });
            }));
            stop_a.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            if let Err(e) = result {
                std::panic::resume_unwind(e);
            }
        });
        drop(d);
        drop(p);
    }
}
