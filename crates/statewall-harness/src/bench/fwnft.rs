//! statewall's firewall beside the same ruleset as linear nftables rules, with real traffic
//! between two namespaces.
//!
//! The rulesets are those of [`crate::bench::fw`] (random source and destination prefixes,
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

use anyhow::{bail, ensure, Context};

use crate::{
    bench::{median, Row, RUNS},
    netns::Pair,
};
use statewall::{
    config::Config,
    engine::pins::Pins,
    engine::{self, Engine},
    firewall::rules::Rule,
    firewall::{ChainState, FwState, Instance, Port, PortArg, RuleSpec},
};
use statewall_common::firewall::{ACT_ACCEPT, ACT_DROP};

/// Rule counts compared.
pub const SIZES: [usize; 6] = crate::bench::firewall::SIZES;
/// Sending time per run.
const RUN_TIME: Duration = Duration::from_millis(300);
const CLIENT: &str = "192.168.1.1";
const SERVER: &str = "172.16.5.5";
const PORT: u16 = 443;

/// The rule in the API's form.
pub fn spec(r: &Rule) -> RuleSpec {
    let cidr = |c: &Option<(IpAddr, u8)>| c.map(|(a, l)| format!("{a}/{l}"));
    RuleSpec {
        src: cidr(&r.src),
        dst: cidr(&r.dst),
        l4proto: r.proto.map(|p| if p == 6 { "TCP" } else { "UDP" }.into()),
        dport: r.dport.map(|(a, b)| {
            if a == b {
                PortArg::N(a as u64)
            } else {
                PortArg::S(format!("{a}-{b}"))
            }
        }),
        action: Some(
            if r.action == ACT_ACCEPT {
                "ACCEPT"
            } else {
                "DROP"
            }
            .into(),
        ),
        ..Default::default()
    }
}

/// The rule as one nftables rule (netdev family: nft adds the protocol dependencies).
fn nft_rule(r: &Rule, last: bool) -> String {
    let mut s = String::new();
    if let Some((a, l)) = r.src {
        s += &format!("ip saddr {a}/{l} ");
    }
    if let Some((a, l)) = r.dst {
        s += &format!("ip daddr {a}/{l} ");
    }
    let proto = if r.proto == Some(6) { "tcp" } else { "udp" };
    match r.dport {
        Some((a, b)) if a == b => s += &format!("{proto} dport {a} "),
        Some((a, b)) => s += &format!("{proto} dport {a}-{b} "),
        None => s += &format!("meta l4proto {proto} "),
    }
    if last {
        s += "counter ";
    }
    s += if r.action == ACT_DROP {
        "drop"
    } else {
        "accept"
    };
    s
}

/// The ruleset in a regular chain `rules` of table `netdev swbench`; the base chain that
/// jumps to it is added and removed by [`nft_hook`].
pub(crate) fn nft_script(rules: &[Rule]) -> String {
    let mut s = String::from("table netdev swbench {\n  chain rules {\n");
    for (i, r) in rules.iter().enumerate() {
        s += "    ";
        s += &nft_rule(r, i + 1 == rules.len());
        s += "\n";
    }
    s += "  }\n}\n";
    s
}

pub(crate) fn nft(pair: &Pair, args: &[&str]) -> anyhow::Result<String> {
    let mut a = vec!["nft"];
    a.extend_from_slice(args);
    let out = pair.server.exec(&a);
    if !out.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Hooks the ruleset into netdev ingress of the server's veth, or unhooks it.
pub(crate) fn nft_hook(pair: &Pair, on: bool) -> anyhow::Result<()> {
    if on {
        nft(
            pair,
            &[
                "add chain netdev swbench base { type filter hook ingress device",
                &format!("\"{}\"", pair.server_if),
                "priority 0; policy accept; }",
            ],
        )?;
        nft(pair, &["add rule netdev swbench base jump rules"])?;
    } else {
        nft(pair, &["delete chain netdev swbench base"])?;
    }
    Ok(())
}

/// Packets counted by the nftables ruleset's last rule.
pub(crate) fn nft_counted(pair: &Pair) -> anyhow::Result<u64> {
    let out = nft(pair, &["list chain netdev swbench rules"])?;
    let n = out
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no counter on the nftables ruleset's last rule")?;
    Ok(n)
}

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
            let rules = crate::bench::firewall::ruleset(n, 17);
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
