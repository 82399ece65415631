//! Firewall classification cost against the rule count: random rulesets of 1 to 10000
//! rules (source prefixes, destination prefixes, protocols, destination ports) where the
//! test packet matches only the last rule, conntrack off; test-run, ns above an empty tc
//! program in the same interleaved runs. Published anchor for the same measurement on a
//! BPF classifier (bpfilter): 95 ns at 1 rule, 2,081 ns at 512, 17,087 ns at 2048.

use std::collections::BTreeMap;

use crate::{
    bench::{
        report::{row, Row, RUNS},
        rulesets::{ruleset, SIZES, V4_BLOCKS},
    },
    packet::Packet,
    testrun::TestBed,
};
use statewall::{
    engine::ebpf,
    firewall::{
        rules::{Chain, Rule},
        tables::Tables,
    },
};
use statewall_common::firewall::{
    ACT_ACCEPT, ACT_DROP, LINEAR_MAX, MAP_FW_BITSETS, MAP_FW_V4, WILD_SETS,
};

/// The packet every ruleset's last rule matches.
pub fn packet() -> Vec<u8> {
    Packet::tcp(
        "192.168.1.1".parse().unwrap(),
        "172.16.5.5".parse().unwrap(),
        40000,
        443,
        0x10,
    )
    .build()
}

/// The rows: one per size (targets at 1 and 10,000 rules), the ingress chain in XDP at 1
/// and 10,000 rules against the empty XDP program, and the 10000/100 ratio.
pub fn rows(repeat: u32) -> anyhow::Result<Vec<Row>> {
    let frame = packet();
    let mut rows = Vec::new();
    let mut xdp_rows = Vec::new();
    for n in SIZES {
        let mut chains = BTreeMap::new();
        chains.insert(
            0,
            Chain {
                rules: ruleset(n, 6),
                default_action: ACT_DROP,
                accept_established: false,
            },
        );
        let mut count = Tables::new(1 << 16);
        count.set_chains(&chains, &[]).map_err(anyhow::Error::msg)?;
        let cap = (count.sets_in_use() as u32 + WILD_SETS + 16).next_power_of_two();
        let mut bed = TestBed::with_sizes(&[(MAP_FW_BITSETS, cap), (MAP_FW_V4, V4_BLOCKS)]);
        bed.fw_iface(1, 0);
        let mut t = Tables::new(cap);
        t.set_chains(&chains, &[]).map_err(anyhow::Error::msg)?;
        let g = t.write(&mut bed).map_err(anyhow::Error::msg)?;
        // Both address fields read through the IPv4 direct table.
        let (blocks, direct, fallen) = t.v4_use(g);
        anyhow::ensure!(
            n < 100 || (direct == 2 && fallen == 0),
            "{n} rules: {direct} fields in the IPv4 direct table, {fallen} without room"
        );
        eprintln!("{n} rules: {blocks} KiB of IPv4 direct table in a generation");
        anyhow::ensure!(
            bed.run_tc(ebpf::PROG_FW_INGRESS, &frame) == statewall_common::TCX_NEXT,
            "{n} rules: the test packet is not accepted by the last rule"
        );
        let (mut b, mut s) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            b.push(bed.time_tc(ebpf::PROG_EMPTY_TC, &frame, repeat).as_nanos() as f64);
            s.push(
                bed.time_tc(ebpf::PROG_FW_INGRESS, &frame, repeat)
                    .as_nanos() as f64,
            );
        }
        rows.push(row(
            &format!(
                "firewall, {n} rule{}, packet matching the last",
                if n == 1 { "" } else { "s" }
            ),
            "empty tc program",
            &b,
            s,
            repeat,
            match n {
                1 => Some(3.0),
                10_000 => Some(5.0),
                _ => None,
            },
        ));
        if n == 1 || n == 10_000 {
            xdp_rows.push(xdp_row(&mut bed, n, &frame, repeat)?);
        }
    }
    rows.extend(xdp_rows);
    rows.extend(breakdown(&frame, repeat)?);
    // The growth of the classifier through its sets: from 100 rules, the first size read
    // that way (a chain of up to LINEAR_MAX rules is read rule by rule).
    const _: () = assert!(SIZES[2] == 100 && LINEAR_MAX < 100);
    let (small, big) = (rows[2].value, rows[5].value);
    rows.push(Row {
        name: "firewall, cost at 10000 rules / cost at 100 rules".into(),
        unit: "x".into(),
        value: big / small,
        runs: vec![big / small],
        each: "the two rows' medians".into(),
        baseline: "100 rules".into(),
        baseline_value: small,
        ratio: big / small,
        delta: big - small,
        target: Some("<= 2".into()),
        met: Some(big / small <= 2.0),
    });
    Ok(rows)
}

/// The ingress chain of `n` rules in XDP (`sw_fw_xdp`, the interface's entry marked XDP)
/// against the empty XDP program.
fn xdp_row(bed: &mut TestBed, n: usize, frame: &[u8], repeat: u32) -> anyhow::Result<Row> {
    use statewall_common::firewall::IFACE_XDP;
    let mark = |bed: &mut TestBed, v: u32| -> anyhow::Result<()> {
        bed.fw_iface(1, v);
        Ok(())
    };
    mark(bed, IFACE_XDP)?;
    anyhow::ensure!(
        bed.run_xdp(ebpf::PROG_FW_XDP, frame) == 2,
        "{n} rules: the test packet is not passed by the last rule in XDP"
    );
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        b.push(bed.time_xdp(ebpf::PROG_EMPTY_XDP, frame, repeat).as_nanos() as f64);
        s.push(bed.time_xdp(ebpf::PROG_FW_XDP, frame, repeat).as_nanos() as f64);
    }
    mark(bed, 0)?;
    Ok(row(
        &format!(
            "firewall in XDP, {n} rule{}, packet matching the last",
            if n == 1 { "" } else { "s" }
        ),
        "empty XDP program",
        &b,
        s,
        repeat,
        None,
    ))
}

/// Where a packet's time goes, from test-run variants on one bed (each against the empty
/// tc program in the same interleaved runs): the parser alone (the parse probe, which
/// also stores what it parsed), then the firewall program with chains that add one part
/// at a time: no rule (interface and chain lookup, default action), one rule on the
/// destination port (a port-table lookup, the bitset AND, the rule walk and its counter),
/// one rule on the source /24 (a prefix-trie lookup instead), the benchmark's rule on
/// every field, and the same with connection tracking (a chain that accepts
/// established connections: a lookup and an update of the table).
fn breakdown(frame: &[u8], repeat: u32) -> anyhow::Result<Vec<Row>> {
    let any = Rule {
        src: None,
        dst: None,
        proto: None,
        sport: None,
        dport: None,
        tcpflags: None,
        ct: None,
        action: ACT_ACCEPT,
    };
    let last = ruleset(1, 6).remove(0);
    // Chains of up to LINEAR_MAX rules are read rule by rule; these fillers (after the
    // rule that matches, on the same field, matching nothing) make the chain read through
    // the sets instead.
    let pad = |r: Rule, f: &dyn Fn(usize) -> Rule| -> Vec<Rule> {
        std::iter::once(r).chain((0..LINEAR_MAX).map(f)).collect()
    };
    let on_port = Rule {
        dport: Some((443, 443)),
        ..any.clone()
    };
    let on_src = Rule {
        src: Some(("192.168.1.0".parse()?, 24)),
        ..any.clone()
    };
    let variants: [(&str, Vec<Rule>, bool); 7] = [
        (
            "a chain of no rules (interface, chain, default)",
            vec![],
            false,
        ),
        (
            "1 rule on the destination port (read rule by rule, counter)",
            vec![on_port.clone()],
            false,
        ),
        (
            "1 rule on the source /24 (read rule by rule, counter)",
            vec![on_src.clone()],
            false,
        ),
        (
            "the port rule first of 17 (port lookup, AND, walk, counter)",
            pad(on_port.clone(), &|i| Rule {
                dport: Some((1000 + i as u16, 1000 + i as u16)),
                ..any.clone()
            }),
            false,
        ),
        (
            "the /24 rule first of 17 (prefix-trie lookup, AND, walk, counter)",
            pad(on_src.clone(), &|i| Rule {
                src: Some((std::net::IpAddr::from([10, 200, i as u8, 0]), 24)),
                ..any.clone()
            }),
            false,
        ),
        (
            "1 rule on source, destination, protocol and port",
            vec![last.clone()],
            false,
        ),
        (
            "the same with connection tracking (accept-established)",
            vec![last],
            true,
        ),
    ];
    let mut bed = TestBed::new();
    bed.fw_iface(1, 0);
    let mut rows = Vec::new();
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        b.push(bed.time_tc(ebpf::PROG_EMPTY_TC, frame, repeat).as_nanos() as f64);
        s.push(bed.time_tc(ebpf::PROG_PARSE_TC, frame, repeat).as_nanos() as f64);
    }
    rows.push(row(
        "firewall breakdown: the parser alone (parse probe)",
        "empty tc program",
        &b,
        s,
        repeat,
        None,
    ));
    // The object's default bitset table: 1,024 entries.
    let mut t = Tables::new(1024);
    for (name, rules, established) in variants {
        let chains = BTreeMap::from([(
            0u32,
            Chain {
                rules,
                default_action: ACT_ACCEPT,
                accept_established: established,
            },
        )]);
        t.set_chains(&chains, &[]).map_err(anyhow::Error::msg)?;
        t.write(&mut bed).map_err(anyhow::Error::msg)?;
        let (mut b, mut s) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            b.push(bed.time_tc(ebpf::PROG_EMPTY_TC, frame, repeat).as_nanos() as f64);
            s.push(bed.time_tc(ebpf::PROG_FW_INGRESS, frame, repeat).as_nanos() as f64);
        }
        rows.push(row(
            &format!("firewall breakdown: {name}"),
            "empty tc program",
            &b,
            s,
            repeat,
            None,
        ));
    }
    Ok(rows)
}
