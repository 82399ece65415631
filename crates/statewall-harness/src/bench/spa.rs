//! SPA benchmarks: verifications per second on one core (pkd and fwknop, each beside the
//! bare hash or HMAC it is built on, timed in the same run), and SPA-to-open: the time from
//! sending a fwknop packet to the first answered SYN on the port it opens, through the real
//! daemon (kernel filter, ring buffer, verification, grant) between two namespaces, beside
//! a plain connect to an open port on the same namespaces.

use std::{
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use anyhow::bail;
use sha2::{Digest, Sha256};

use crate::bench::daemon::{open_packet, spa_to_open, start_daemon, OPEN_PORT, PORT};
use crate::{
    bench::report::{median, Row, RUNS},
    netns::Pair,
};
use statewall::spa::{self, FwknopMessage, FwknopStanza, PkdAction};

/// How long each throughput run lasts.
const RUN_FOR: Duration = Duration::from_millis(300);

/// Calls `f` for `RUN_FOR` and returns calls per second.
fn rate(mut f: impl FnMut(u64)) -> f64 {
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < RUN_FOR {
        for _ in 0..64 {
            f(n);
            n += 1;
        }
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Throughput against the baseline's, with a floor on their ratio.
fn throughput_row(name: &str, base: &str, b: Vec<f64>, s: Vec<f64>, min_ratio: f64) -> Row {
    let (bv, sv) = (median(&b), median(&s));
    Row {
        name: name.into(),
        unit: "/s".into(),
        value: sv,
        runs: s,
        each: format!("{} ms of calls", RUN_FOR.as_millis()),
        baseline: base.into(),
        baseline_value: bv,
        ratio: sv / bv,
        delta: sv - bv,
        target: Some(format!(">= {min_ratio}x")),
        met: Some(sv / bv >= min_ratio),
    }
}

/// pkd and fwknop verifications per second.
pub fn verify_rows() -> anyhow::Result<Vec<Row>> {
    let key = spa::pkd_bytes::<40>("bench key").unwrap();
    let tag = *b"BNCH";
    let actions = [PkdAction {
        name: "b".into(),
        port: 22,
        protos: vec![6],
        tag,
        key,
        window: 30,
        skew: Some(10),
        reset: false,
        min_interval: 0,
    }];
    let now = 1_800_000_000;
    let pkts: Vec<[u8; 56]> = (0..1024u32)
        .map(|i| {
            let mut r = [0u8; 12];
            r[..4].copy_from_slice(&i.to_le_bytes());
            spa::pkd_packet(4000, &tag, &key, now, &r)
        })
        .collect();
    let mut pkd = Vec::new();
    let mut sha = Vec::new();
    let input = [7u8; 68];
    for _ in 0..RUNS {
        sha.push(rate(|n| {
            let mut b = input;
            b[0] = n as u8;
            std::hint::black_box(Sha256::digest(b));
        }));
        pkd.push(rate(|n| {
            let p = &pkts[n as usize % pkts.len()];
            let r = spa::pkd_check(p, 4000, now, &actions);
            assert!(r.is_ok());
            std::hint::black_box(r.ok());
        }));
    }
    let k = spa::random_bytes::<32>()?.to_vec();
    let h = spa::random_bytes::<64>()?.to_vec();
    let stanza = [FwknopStanza::any_source("b", k.clone(), h.clone())];
    let src = "10.0.0.1".parse().unwrap();
    let m = FwknopMessage {
        user: "bench".into(),
        ts: now,
        allow: src,
        access: vec![(6, 22)],
        timeout: None,
    };
    let pkt = spa::fwknop_packet(&m, &k, &h, 256)?;
    let mut fw = Vec::new();
    let mut hm = Vec::new();
    for _ in 0..RUNS {
        hm.push(rate(|n| {
            use hmac::{Hmac, Mac};
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&h).unwrap();
            mac.update(pkt.as_bytes());
            mac.update(&n.to_le_bytes());
            std::hint::black_box(mac.finalize());
        }));
        fw.push(rate(|_| {
            let r = spa::fwknop_check(pkt.as_bytes(), src, now, &stanza);
            assert!(r.is_ok());
            std::hint::black_box(r.ok());
        }));
    }
    Ok(vec![
        throughput_row(
            "pkd verifications per second (one core)",
            "SHA-256 of 68 bytes",
            sha,
            pkd,
            // At most 30 hashes' time per verification.
            0.033,
        ),
        throughput_row(
            "fwknop verifications per second (one core)",
            "HMAC-SHA256 of the packet",
            hm,
            fw,
            // At most 40 MACs' time per verification (decryption included).
            0.025,
        ),
    ])
}

/// The replay cache's fsync is part of the figure; writeback of unrelated data (the build
/// that `make bench` just ran keeps the disk busy for a while) is not. Flushes it, then
/// waits (at most 60 s) until five synced 64-byte writes in a row take under 1 ms each.
fn quiet_disk() {
    use std::io::Write;
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    let path = std::env::temp_dir().join(format!("statewall-bench-fsync-{}", std::process::id()));
    let t0 = Instant::now();
    let mut quiet = 0;
    while quiet < 5 && t0.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        let ok = std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&[0u8; 64]).and_then(|_| f.sync_all()))
            .is_ok();
        if ok && t.elapsed() < Duration::from_millis(1) {
            quiet += 1;
        } else {
            quiet = 0;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// SPA-to-open through the daemon, beside a plain connect.
pub fn open_rows() -> anyhow::Result<Vec<Row>> {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    quiet_disk();
    let pair = Pair::new("spab");
    let sv = pair.server_v4;
    let _l = pair.server.run(|| TcpListener::bind((sv, PORT)))?;
    let _o = pair.server.run(|| TcpListener::bind((sv, OPEN_PORT)))?;
    let k = spa::random_bytes::<32>()?;
    let h = spa::random_bytes::<64>()?;
    let d = start_daemon(&pair, &STANDARD.encode(k), &STANDARD.encode(h), "spa", "")?;
    let (runs, base) = spa_to_open(&pair, &d, (&k, &h), RUNS * 2, Duration::ZERO)?;
    let to = SocketAddr::from((sv, PORT));
    let cv = pair.client_v4;
    drop(d);
    // The same with Debian's fwknopd (pcap, then an iptables rule), restarted for every
    // run so that the port is shut again (it flushes its chain at start).
    let mut fw = Vec::new();
    let kb = STANDARD.encode(k);
    let hb = STANDARD.encode(h);
    let dir = std::env::temp_dir().join(format!("statewall-bench-fwknopd-{}", std::process::id()));
    for i in 0..RUNS {
        let fd = crate::fwknopd::Fwknopd::start(
            &pair.server,
            &pair.server_if,
            &dir.join(i.to_string()),
            PORT,
            &kb,
            &hb,
        )?;
        let pkt = open_packet(cv, (&k, &h))?;
        let t = pair.client.run(|| -> anyhow::Result<f64> {
            if crate::netns::try_connect(to) {
                bail!("tcp/{PORT} answers before SPA with fwknopd");
            }
            let t0 = Instant::now();
            spa::send_udp(SocketAddr::from((sv, 62201)), pkt.as_bytes())?;
            loop {
                if crate::netns::try_connect(to) {
                    return Ok(t0.elapsed().as_nanos() as f64 / 1e3);
                }
                if t0.elapsed() > Duration::from_secs(5) {
                    bail!("fwknopd: no answer within 5 s: {}", fd.log());
                }
            }
        })?;
        fw.push(t);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (s, b, f) = (median(&runs), median(&base), median(&fw));
    Ok(vec![
        Row {
            name: "SPA to open: fwknop packet to answered SYN, statewall daemon".into(),
            unit: "us".into(),
            value: s,
            runs,
            each: "1 SPA packet".into(),
            baseline: "fwknopd + iptables".into(),
            baseline_value: f,
            ratio: s / f,
            delta: s - f,
            target: Some("<= 0.1x".into()),
            met: Some(s / f <= 0.1),
        },
        Row {
            name: "connect to an open port (the namespaces' floor)".into(),
            unit: "us".into(),
            value: b,
            runs: base,
            each: "1 connect".into(),
            baseline: "statewall SPA to open".into(),
            baseline_value: s,
            ratio: b / s,
            delta: b - s,
            target: None,
            met: None,
        },
    ])
}
