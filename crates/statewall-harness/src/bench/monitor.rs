//! Monitor benchmarks: per-packet cost (test-run, ns above an empty tc program in the same
//! interleaved runs), one swap-and-read at 1k and 10k sessions (the grace period and the
//! read-and-decode separately), and iperf3 TCP throughput between namespaces with both
//! monitors attached, as a ratio to no program (median of back-to-back pairs).

use std::{net::IpAddr, process::Stdio, time::Duration};

use anyhow::{bail, Context};

use crate::{
    bench::report::{median, row, Row, RUNS},
    netns::Pair,
    packet::{Packet, L4},
    testrun::TestBed,
};
use statewall::{
    engine::ebpf,
    monitor::{Direction, Kind, Monitor, MonitorSpec},
};

fn spec(kind: Kind, name: &str) -> MonitorSpec {
    MonitorSpec::new(name, kind, &["lo"])
}

fn frame() -> Vec<u8> {
    Packet::new(
        "10.9.0.1".parse().unwrap(),
        "10.9.0.2".parse().unwrap(),
        L4::Tcp {
            sport: 40000,
            dport: 443,
            flags: 0x10,
            seq: 1,
            ack: 1,
            win: 512,
        },
    )
    .payload(&[0; 100])
    .build()
}

fn cost_row(
    bed: &mut TestBed,
    name: &str,
    m: &mut Monitor,
    repeat: u32,
    reset: bool,
) -> anyhow::Result<Row> {
    let f = frame();
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        if reset {
            m.read().map_err(anyhow::Error::msg)?;
        }
        b.push(bed.time_tc(ebpf::PROG_EMPTY_TC, &f, repeat).as_nanos() as f64);
        s.push(m.time(&f, repeat).map_err(anyhow::Error::msg)?.as_nanos() as f64);
    }
    Ok(row(name, "empty tc program", &b, s, repeat, Some(4.0)))
}

/// Per-packet cost and swap-and-read rows (no namespaces needed).
pub fn rows(repeat: u32) -> anyhow::Result<Vec<Row>> {
    let mut bed = TestBed::new();
    let mut rows = Vec::new();
    // ddos while the session still has room: every packet is recorded (the table holds
    // every run, and each run starts from an empty window).
    let n = repeat.min(50_000);
    let mut d = Monitor::open(MonitorSpec {
        packets_per_session: Some(65536),
        packets_total: Some(65536),
        ..spec(Kind::Ddos, "bench-ddos")
    })
    .map_err(anyhow::Error::msg)?;
    rows.push(cost_row(
        &mut bed,
        "ddos monitor, packet recorded (session lookup, atomic claims, clock, 32-byte record)",
        &mut d,
        n,
        true,
    )?);
    let mut d = Monitor::open(spec(Kind::Ddos, "bench-ddos2")).map_err(anyhow::Error::msg)?;
    rows.push(cost_row(
        &mut bed,
        "ddos monitor, session past its 100 packets (counted only)",
        &mut d,
        repeat,
        false,
    )?);
    let mut c = Monitor::open(spec(Kind::Crypto, "bench-crypto")).map_err(anyhow::Error::msg)?;
    rows.push(cost_row(
        &mut bed,
        "crypto monitor, packet of a known session",
        &mut c,
        repeat,
        false,
    )?);
    rows.extend(read_rows()?);
    Ok(rows)
}

/// One swap-and-read of a crypto monitor (mapped slots) holding 1k and 10k sessions.
fn read_rows() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for n in [1000u32, 10000] {
        let mut m = Monitor::open(MonitorSpec {
            sessions: Some(10240),
            ..spec(Kind::Crypto, "bench-read")
        })
        .map_err(anyhow::Error::msg)?;
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                Packet::udp(
                    IpAddr::from([10, 8, (i >> 8) as u8, i as u8]),
                    "10.9.0.2".parse().unwrap(),
                    20000 + (i % 1000) as u16,
                    5000,
                )
                .build()
            })
            .collect();
        let (mut grace, mut read) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            for f in &frames {
                m.test_run(f).map_err(anyhow::Error::msg)?;
            }
            let w = m.read().map_err(anyhow::Error::msg)?;
            if w.crypto.len() != n as usize {
                bail!("{n} sessions sent, {} read", w.crypto.len());
            }
            grace.push(w.grace.as_secs_f64() * 1e3);
            read.push(w.read.as_secs_f64() * 1e3);
        }
        let (g, r) = (median(&grace), median(&read));
        let target = n == 10000;
        rows.push(Row {
            name: format!("crypto monitor, swap-and-read of {n} sessions: read and decode"),
            unit: "ms".into(),
            value: r,
            runs: read,
            each: format!("1 read of {n} sessions"),
            baseline: "grace period of the same read".into(),
            baseline_value: g,
            ratio: r / g,
            delta: r - g,
            target: target.then(|| "< 1x".into()),
            met: target.then_some(r < g),
        });
        rows.push(Row {
            name: format!("crypto monitor, swap-and-read of {n} sessions: grace period"),
            unit: "ms".into(),
            value: g,
            runs: grace,
            each: format!("1 read of {n} sessions"),
            baseline: "-".into(),
            baseline_value: 0.0,
            ratio: 0.0,
            delta: 0.0,
            target: None,
            met: None,
        });
    }
    Ok(rows)
}

/// iperf3 TCP throughput (Gbit/s) from client to server for `secs` seconds.
fn iperf(pair: &Pair, port: u16, secs: u32) -> anyhow::Result<f64> {
    let out = pair.client.exec(&[
        "iperf3",
        "-c",
        &pair.server_v4.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ]);
    if !out.status.success() {
        bail!("iperf3: {}", String::from_utf8_lossy(&out.stdout));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    Ok(bps / 1e9)
}

/// Pairs of iperf3 runs (none, then both monitors), 3 s each.
const PAIRS: usize = 7;

/// Throughput with both monitors attached against none.
pub fn iperf_rows() -> anyhow::Result<Vec<Row>> {
    let pair = Pair::new("moniperf");
    let port = 5201;
    let mut server = pair
        .server
        .command(&["iperf3", "-s", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let res = (|| -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let (mut none, mut with) = (Vec::new(), Vec::new());
        for _ in 0..PAIRS {
            none.push(iperf(&pair, port, 3)?);
            let mk = |kind, name: &str, direction| MonitorSpec {
                interfaces: vec![pair.server_if.clone()],
                netns: Some(pair.server.name.clone()),
                direction,
                ..spec(kind, name)
            };
            let d = Monitor::load(mk(Kind::Ddos, "iperf-ddos", Direction::Ingress))
                .map_err(anyhow::Error::msg)?;
            let c = Monitor::load(mk(Kind::Crypto, "iperf-crypto", Direction::Both))
                .map_err(anyhow::Error::msg)?;
            with.push(iperf(&pair, port, 3)?);
            let seen: u64 = c
                .counters()
                .map_err(anyhow::Error::msg)?
                .iter()
                .find(|(k, _)| *k == "packets")
                .map(|x| x.1)
                .unwrap_or(0);
            if seen < 1000 {
                bail!("the crypto monitor saw {seen} packets of the iperf3 run");
            }
            drop((d, c));
        }
        Ok((none, with))
    })();
    let _ = server.kill();
    let _ = server.wait();
    let (none, with) = res?;
    // Each pair runs back to back, so it shares the machine's state of the moment: the
    // figure is the median of the per-pair ratios.
    let ratios: Vec<f64> = with.iter().zip(&none).map(|(w, n)| w / n).collect();
    let r = median(&ratios);
    let (n, w) = (median(&none), median(&with));
    Ok(vec![Row {
        name: "iperf3 TCP throughput with the ddos and crypto monitors attached (netns)".into(),
        unit: "Gbit/s".into(),
        value: w,
        runs: with,
        each: "3 s of iperf3, paired with 3 s without a program".into(),
        baseline: "no program".into(),
        baseline_value: n,
        ratio: r,
        delta: w - n,
        target: Some(">= 0.9x (median of 7 back-to-back pairs)".into()),
        met: Some(r >= 0.9),
    }])
}
