//! Time-to-open: after the last knock, the client sends a new SYN to the protected port
//! every 100 us until one is answered; the figure is the time from the last knock to that
//! answer. Measured for statewall (xfsm in the kernel opens the gate) and for knockd
//! driving an nftables set (pcap in user space, then `nft add element`), on the same
//! namespaces, in one run. Target: statewall at least 100 times faster. Beside them, the
//! floor: the same knock and connect with nothing guarding the port.

use std::{
    net::{SocketAddr, TcpListener},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    bench::report::{median, Row, RUNS},
    netns::{try_connect, Pair, Reaped},
};
use statewall::{
    config::{Config, Sequence},
    engine::pins::Pins,
    engine::{self, Engine},
    xfsm::knockclient,
};

/// The protected port.
const PORT: u16 = 2222;
/// The knock sequence (TCP).
const SEQ: &str = "7000,8000,9000";
/// Give up on one measurement after this long.
const GIVE_UP: Duration = Duration::from_secs(3);

/// Knocks (all but the last step), then the last step, then SYNs every 100 us until one is
/// answered: returns the time from the last knock to the answer.
fn measure(pair: &Pair) -> anyhow::Result<Duration> {
    let sv = pair.server_v4;
    let steps = Sequence::parse(SEQ).unwrap().0;
    let to = SocketAddr::from((sv, PORT));
    pair.client.run(|| -> anyhow::Result<Duration> {
        let (first, last) = steps.split_at(steps.len() - 1);
        knockclient::knock(sv.into(), first, Duration::from_millis(5), None)?;
        std::thread::sleep(Duration::from_millis(5));
        let t0 = Instant::now();
        knockclient::knock(sv.into(), last, Duration::ZERO, None)?;
        loop {
            if try_connect(to) {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > GIVE_UP {
                bail!("no answer within {GIVE_UP:?}");
            }
        }
    })
}

fn statewall_runs(pair: &Pair) -> anyhow::Result<Vec<f64>> {
    let root = format!("/sys/fs/bpf/statewall-bench-{}", std::process::id());
    let pins = Pins::new(&root);
    let mut cfg = Config::parse(
        &format!(
            "[[knock]]\nname = \"bench\"\nsequence = \"{SEQ}\"\nprotected = [\"tcp/{PORT}\"]\n"
        ),
        "bench",
    )?;
    cfg.interfaces.push(pair.server_interface());
    let res = (|| -> anyhow::Result<Vec<f64>> {
        let mut eng = Engine::open(&pins, &cfg.map_sizes())?;
        statewall::daemon::state::apply(&mut eng, &cfg)?;
        let mut v = Vec::new();
        for _ in 0..RUNS {
            // Closed before every run.
            for (k, _) in eng.grants()? {
                eng.revoke(&k)?;
            }
            if try_connect_from(pair) {
                bail!("tcp/{PORT} answers before knocking: the gate is not working");
            }
            v.push(measure(pair)?.as_nanos() as f64 / 1e3);
        }
        Ok(v)
    })();
    engine::teardown(&pins)?;
    res
}

fn try_connect_from(pair: &Pair) -> bool {
    let to = SocketAddr::from((pair.server_v4, PORT));
    (0..3).any(|_| pair.client.run(|| try_connect(to)))
}

fn knockd_runs(pair: &Pair, dir: &std::path::Path) -> anyhow::Result<Vec<f64>> {
    let nft = format!(
        "table inet swbench {{\n  set allowed {{ type ipv4_addr; }}\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {PORT} ip saddr != @allowed drop\n  }}\n}}\n"
    );
    let nft_file = dir.join("bench.nft");
    std::fs::write(&nft_file, nft)?;
    let out = pair
        .server
        .exec(&["nft", "-f", &nft_file.display().to_string()]);
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }
    let conf = dir.join("knockd.conf");
    std::fs::write(
        &conf,
        format!(
            "[options]\n  LogFile = {}\n[bench]\n  sequence = {SEQ}\n  seq_timeout = 5\n  tcpflags = syn\n  start_command = /usr/sbin/nft add element inet swbench allowed {{ %IP% }}\n",
            dir.join("knockd.log").display()
        ),
    )?;
    let child = pair
        .server
        .command(&[
            "knockd",
            "-c",
            &conf.display().to_string(),
            "-i",
            &pair.server_if,
            "-v",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting knockd")?;
    let _k = Reaped(child);
    // knockd is listening once its log says so.
    let log = dir.join("knockd.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening")
    {
        if start.elapsed() > Duration::from_secs(5) {
            bail!("knockd did not start (log: {})", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut v = Vec::new();
    for _ in 0..RUNS {
        pair.server
            .exec(&["nft", "flush", "set", "inet", "swbench", "allowed"]);
        if try_connect_from(pair) {
            bail!("tcp/{PORT} answers before knocking: the nftables rule is not working");
        }
        v.push(measure(pair)?.as_nanos() as f64 / 1e3);
    }
    Ok(v)
}

/// The same measurement with nothing guarding the port: the cost of the knock (a
/// connect to a closed port, answered by a reset, all of it within the client's system
/// call on a veth pair) and of one connect. No implementation opens faster than this.
fn floor_runs(pair: &Pair) -> anyhow::Result<Vec<f64>> {
    (0..RUNS)
        .map(|_| Ok(measure(pair)?.as_nanos() as f64 / 1e3))
        .collect()
}

/// The time-to-open rows: statewall against knockd + nftables, and the floor beside it.
pub fn rows() -> anyhow::Result<Vec<Row>> {
    let pair = Pair::new("tto");
    let dir = std::env::temp_dir().join(format!("statewall-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sv = pair.server_v4;
    let _listener = pair
        .server
        .run(|| TcpListener::bind((sv, PORT)))
        .context("server socket")?;
    let floor = floor_runs(&pair);
    let sw = statewall_runs(&pair);
    let kd = knockd_runs(&pair, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (floor, sw, kd) = (floor?, sw?, kd?);
    let (f, s, k) = (median(&floor), median(&sw), median(&kd));
    Ok(vec![
        Row {
            name: "time to open: last knock to answered SYN, statewall".into(),
            unit: "us".into(),
            value: s,
            runs: sw,
            each: "1 knock sequence".into(),
            baseline: "knockd + nftables set".into(),
            baseline_value: k,
            ratio: s / k,
            delta: s - k,
            target: Some("<= 0.01x".into()),
            met: Some(s / k <= 0.01),
        },
        Row {
            name: "time to open's floor: the last knock and a connect, nothing guarding".into(),
            unit: "us".into(),
            value: f,
            runs: floor,
            each: "1 knock and 1 connect".into(),
            baseline: "knockd + nftables set".into(),
            baseline_value: k,
            ratio: f / k,
            delta: f - k,
            target: None,
            met: None,
        },
    ])
}
