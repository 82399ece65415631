//! statewall's firewall beside the same ruleset as linear nftables rules, with real traffic
//! between two namespaces.
//!
//! The rulesets are those of [`crate::bench::rulesets`] (random source and destination prefixes,
//! protocols and destination ports), with a last rule that alone matches the test traffic:
//! UDP 192.168.1.1 -> 172.16.5.5:443. statewall runs them on tcx ingress of the server's
//! veth; nftables runs them as one rule each in a netdev ingress chain on the same veth (the
//! same place in the path). Conntrack is off in both.
//!
//! Unit: CPU time per packet on the sending core. On a veth pair the receive side (softirq:
//! the ingress hook, IP, UDP) runs on the core that sends, inside the send call, so the
//! time one pinned sender needs per packet is send + receive, classification included. The
//! receiving socket is never read: packets past its buffer are dropped after the hook, at
//! the same cost for every configuration. Runs are interleaved (nothing, statewall,
//! nftables, repeated), medians reported; the counters of the last rule must account for
//! every packet sent, so a run where the rule did not match fails the bench.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::ensure;

use crate::{
    bench::{
        nft::{nft, nft_counted, nft_hook, nft_script, spec},
        report::{median, Row, RUNS},
        rulesets::{ruleset, SIZES},
    },
    netns::Pair,
};
use statewall::{
    config::Config,
    engine::pins::Pins,
    engine::{self, Engine},
    firewall::{ChainState, FwState, Instance, Port},
};

/// Sending time per run.
const RUN_TIME: Duration = Duration::from_millis(300);
const CLIENT: &str = "192.168.1.1";
const SERVER: &str = "172.16.5.5";
const PORT: u16 = 443;

/// Sends to the server for [`RUN_TIME`] from a sender pinned to CPU 0: (packets, ns per
/// packet).
fn blast(pair: &Pair) -> anyhow::Result<(u64, f64)> {
    pair.client.run(|| -> anyhow::Result<(u64, f64)> {
        // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let sock = UdpSocket::bind((CLIENT.parse::<IpAddr>()?, 40000))?;
        sock.connect(SocketAddr::new(SERVER.parse()?, PORT))?;
        let payload = [0u8; 18];
        let mut n = 0u64;
        let t0 = Instant::now();
        loop {
            for _ in 0..256 {
                sock.send(&payload)?;
            }
            n += 256;
            let el = t0.elapsed();
            if el >= RUN_TIME {
                return Ok((n, el.as_nanos() as f64 / n as f64));
            }
        }
    })
}

/// Extra addresses and routes for the test traffic, and the receiving socket (never read).
fn prepare(pair: &Pair) -> anyhow::Result<UdpSocket> {
    pair.client.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{CLIENT}/32"),
        "dev",
        &pair.client_if,
    ]);
    pair.client.exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{SERVER}/32"),
        "dev",
        &pair.client_if,
        "src",
        CLIENT,
    ]);
    pair.server.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{SERVER}/32"),
        "dev",
        &pair.server_if,
    ]);
    pair.server.exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{CLIENT}/32"),
        "dev",
        &pair.server_if,
    ]);
    let sink = pair
        .server
        .run(|| UdpSocket::bind((SERVER.parse::<IpAddr>().unwrap(), PORT)))?;
    // Resolve the neighbour before anything is measured.
    pair.client.run(|| -> anyhow::Result<()> {
        let s = UdpSocket::bind((CLIENT.parse::<IpAddr>()?, 0))?;
        for _ in 0..3 {
            s.send_to(b"warm", SocketAddr::new(SERVER.parse()?, PORT))?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })?;
    Ok(sink)
}

/// By size: the median with nothing attached, statewall's runs, nftables' runs.
type Runs = BTreeMap<usize, (f64, Vec<f64>, Vec<f64>)>;

/// At each size: the median with nothing attached, statewall's runs and nftables' runs
/// (ns/packet).
fn measure(pair: &Pair) -> anyhow::Result<Runs> {
    let root = format!("/sys/fs/bpf/statewall-bench-nft-{}", std::process::id());
    let pins = Pins::new(&root);
    // 10000 random rules make about 29000 distinct bit sets (1.3 kB each).
    let cfg = Config::parse("[firewall]\nbitsets_max = 55296\n", "bench")?;
    let res = (|| -> anyhow::Result<Runs> {
        let mut eng = Engine::open(&pins, &cfg.map_sizes())?;
        let mut out = BTreeMap::new();
        for n in SIZES {
            let rules = ruleset(n, 17);
            let mut st = FwState::default();
            st.instances.insert(
                "bench".into(),
                Instance {
                    slot: 0,
                    kind: "TC".into(),
                    ports: Vec::new(),
                    ingress: ChainState {
                        rules: rules.iter().map(|r| Box::new(spec(r))).collect(),
                        default: "DROP".into(),
                        accept_established: false,
                    },
                    egress: ChainState::default(),
                },
            );
            let port = Port {
                netns: Some(pair.server.name.clone()),
                ifname: pair.server_if.clone(),
            };
            let _ = nft(pair, &["delete table netdev swbench"]);
            let script = std::env::temp_dir().join(format!(
                "statewall-bench-nft-{}-{n}.nft",
                std::process::id()
            ));
            std::fs::write(&script, nft_script(&rules))?;
            let loaded = nft(pair, &["-f", &script.display().to_string()]);
            let _ = std::fs::remove_file(&script);
            loaded?;
            let (mut none, mut sw, mut nf) = (Vec::new(), Vec::new(), Vec::new());
            let (mut sw_sent, mut nf_sent) = (0u64, 0u64);
            // The first apply of a size starts its rules' counters from zero.
            let mut zero = vec![(0u32, vec![None; n])];
            for _ in 0..RUNS {
                none.push(blast(pair)?.1);
                st.instances.get_mut("bench").unwrap().ports = vec![port.clone()];
                eng.apply_firewall(&cfg.firewall, &cfg.links(), &st, &zero)?;
                zero.clear();
                let (k, ns) = blast(pair)?;
                sw_sent += k;
                sw.push(ns);
                st.instances.get_mut("bench").unwrap().ports.clear();
                eng.apply_firewall(&cfg.firewall, &cfg.links(), &st, &[])?;
                nft_hook(pair, true)?;
                let (k, ns) = blast(pair)?;
                nf_sent += k;
                nf.push(ns);
                nft_hook(pair, false)?;
            }
            // Every packet of the statewall runs went through the ruleset to its last rule,
            // and so did every packet of the nftables runs.
            let stats = eng.fw_stats(0, n)?;
            let matched = stats[n - 1].0;
            ensure!(
                matched == sw_sent && stats[..n - 1].iter().all(|s| s.0 == 0),
                "{n} rules: statewall's last rule counted {matched} of {sw_sent} packets sent"
            );
            let counted = nft_counted(pair)?;
            ensure!(
                counted == nf_sent,
                "{n} rules: nftables' last rule counted {counted} of {nf_sent} packets sent"
            );
            out.insert(n, (median(&none), sw, nf));
        }
        Ok(out)
    })();
    engine::teardown(&pins)?;
    res
}

/// One row per size: statewall's ns per packet against nftables'. Target: statewall ahead
/// at every size above 10 rules.
pub fn rows() -> anyhow::Result<Vec<Row>> {
    let pair = Pair::new("fwnft");
    let _sink = prepare(&pair)?;
    let m = measure(&pair)?;
    let mut rows = Vec::new();
    for (n, (none, runs, nf)) in m {
        let (sw, nf) = (median(&runs), median(&nf));
        let target = n > 10;
        rows.push(Row {
            name: format!(
                "firewall vs nftables, {n} rule{}, real traffic (nothing attached: {none:.0} ns/packet)",
                if n == 1 { "" } else { "s" }
            ),
            unit: "ns/packet".into(),
            value: sw,
            runs,
            each: format!("{} s of UDP from one sender", RUN_TIME.as_secs_f64()),
            baseline: "nftables, same rules".into(),
            baseline_value: nf,
            ratio: sw / nf,
            delta: sw - nf,
            target: target.then(|| "< 1x".into()),
            met: target.then_some(sw < nf),
        });
    }
    Ok(rows)
}
