//! The firewall classifier: the kernel programs (BPF_PROG_TEST_RUN, real maps) against the
//! reference `statewall_common::fw::classify` on random rulesets (up to thousands of rules)
//! and packets drawn from them: every verdict and every rule's packet count must be equal;
//! plus deterministic first-match, range, flag and prefix cases.

mod common;

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use common::soak_cases;
use rand::{rngs::StdRng, Rng, SeedableRng};
use statewall::{
    ebpf::{PROG_FW_EGRESS, PROG_FW_INGRESS},
    fw::{compile, mask, write_tables, Chain, RefTables, Rule, Written},
    packet::Packet,
    testrun::TestBed,
};
use statewall_common::{
    fw::{
        classify, stats_slot, FwVerdict, RuleStats, ACT_ACCEPT, ACT_DROP, ACT_LOG, MAP_FW_BITSETS,
        MAP_FW_IFACES, MAP_FW_STATS,
    },
    parse::parse_packet,
    TCX_NEXT, TC_ACT_SHOT,
};

/// Bitset table size for the tests (half per generation).
const BITSETS: u32 = 8192;

fn bed() -> TestBed {
    let mut bed = TestBed::with_sizes(&[(MAP_FW_BITSETS, BITSETS)]);
    // Test-run packets come from the loopback device: instance 0.
    let mut m: BpfHashMap<&mut MapData, u32, u32> = bed.map(MAP_FW_IFACES).try_into().unwrap();
    m.insert(1, 0, 0).unwrap();
    bed
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A random address near the pool (so prefixes nest and overlap).
fn addr(rng: &mut StdRng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from([
            0x20,
            0x01,
            0x0d,
            0xb8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            rng.random_range(0..4),
            rng.random(),
        ])
    } else {
        IpAddr::from([
            10,
            rng.random_range(0..3),
            rng.random_range(0..4),
            rng.random(),
        ])
    }
}

fn random_rule(rng: &mut StdRng) -> Rule {
    let v6 = rng.random_bool(0.3);
    let prefix = |rng: &mut StdRng| {
        let len = if v6 {
            [96u8, 112, 120, 126, 128][rng.random_range(0..5)]
        } else {
            [8u8, 16, 22, 24, 28, 32][rng.random_range(0..6)]
        };
        let a = addr(rng, v6);
        (mask(a, len), len)
    };
    let proto = match rng.random_range(0..5) {
        0 => None,
        1 | 2 => Some(6),
        3 => Some(17),
        _ => Some(if v6 { 58 } else { 1 }),
    };
    let ported = matches!(proto, Some(6) | Some(17));
    let range = |rng: &mut StdRng| {
        let lo = [22u16, 53, 80, 443, 1000, 8080][rng.random_range(0..6)];
        if rng.random_bool(0.3) {
            (lo, lo + rng.random_range(1..2000))
        } else {
            (lo, lo)
        }
    };
    Rule {
        src: rng.random_bool(0.6).then(|| prefix(rng)),
        dst: rng.random_bool(0.5).then(|| prefix(rng)),
        proto,
        sport: (ported && rng.random_bool(0.2)).then(|| range(rng)),
        dport: (ported && rng.random_bool(0.6)).then(|| range(rng)),
        tcpflags: (proto == Some(6) && rng.random_bool(0.3)).then(|| {
            [(0x12u8, 0x02u8), (0x10, 0x10), (0x04, 0x04), (0x01, 0x01)][rng.random_range(0..4)]
        }),
        action: [ACT_DROP, ACT_ACCEPT, ACT_ACCEPT, ACT_LOG][rng.random_range(0..4)],
    }
}

/// A packet that a rule of the chain matches (usually), or a random one.
fn packet_for(rng: &mut StdRng, rules: &[Rule]) -> Vec<u8> {
    let r = &rules[rng.random_range(0..rules.len())];
    let within = |rng: &mut StdRng, n: Option<(IpAddr, u8)>, v6: bool| match n {
        Some((a, len)) if rng.random_bool(0.85) => {
            let host = addr(rng, a.is_ipv6());
            // Network bits from the rule, host bits random.
            match (a, host) {
                (IpAddr::V4(n), IpAddr::V4(h)) => {
                    let m = if len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - len as u32)
                    };
                    IpAddr::from(((u32::from(n) & m) | (u32::from(h) & !m)).to_be_bytes())
                }
                (IpAddr::V6(n), IpAddr::V6(h)) => {
                    let m = if len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - len as u32)
                    };
                    IpAddr::from(((u128::from(n) & m) | (u128::from(h) & !m)).to_be_bytes())
                }
                _ => host,
            }
        }
        _ => addr(rng, v6),
    };
    let v6 = r
        .src
        .or(r.dst)
        .map(|n| n.0.is_ipv6())
        .unwrap_or(rng.random_bool(0.3));
    let src = within(rng, r.src, v6);
    let mut dst = within(rng, r.dst, v6);
    if dst.is_ipv4() != src.is_ipv4() {
        dst = addr(rng, src.is_ipv6());
    }
    let port = |rng: &mut StdRng, p: Option<(u16, u16)>| match p {
        Some((lo, hi)) if rng.random_bool(0.85) => rng.random_range(lo..=hi),
        _ => [22u16, 53, 80, 443, 1000, 8080, 9999, 65535][rng.random_range(0..8)],
    };
    let proto = match r.proto {
        Some(p) if rng.random_bool(0.9) => p,
        _ => [6u8, 17, 1, 58][rng.random_range(0..4)],
    };
    let (sp, dp) = (port(rng, r.sport), port(rng, r.dport));
    let p = match proto {
        6 => {
            let flags = match r.tcpflags {
                Some((_, v)) if rng.random_bool(0.7) => {
                    v | if rng.random_bool(0.5) { 0x08 } else { 0 }
                }
                _ => [0x02u8, 0x12, 0x10, 0x11, 0x04][rng.random_range(0..5)],
            };
            Packet::tcp(src, dst, sp, dp, flags)
        }
        17 => Packet::udp(src, dst, sp, dp),
        _ => Packet::echo_request(src, dst, 7),
    };
    let p = if rng.random_bool(0.03) {
        p.fragment(8, false)
    } else {
        p
    };
    p.build()
}

fn code(v: FwVerdict) -> i32 {
    match v {
        FwVerdict::Pass => TCX_NEXT,
        FwVerdict::Rule(_, a) | FwVerdict::Default(a) => {
            if a == ACT_DROP {
                TC_ACT_SHOT
            } else {
                TCX_NEXT
            }
        }
    }
}

/// Runs one scenario; returns (packets, verdict kinds seen).
fn scenario(
    seed: u64,
    nrules: usize,
    packets: usize,
    bed: &mut TestBed,
    old: &mut Option<Written>,
) -> std::collections::BTreeSet<&'static str> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chains = BTreeMap::new();
    for ch in [0u32, 1] {
        let n = if ch == 0 { nrules } else { 1 + nrules / 4 };
        chains.insert(
            ch,
            Chain {
                rules: (0..n).map(|_| random_rule(&mut rng)).collect(),
                default_action: if rng.random_bool(0.5) {
                    ACT_DROP
                } else {
                    ACT_ACCEPT
                },
            },
        );
    }
    let c = compile(&chains).unwrap();
    let (_, w) = write_tables(bed, &c, BITSETS / 2, old.as_ref()).unwrap();
    *old = Some(w);
    // Counters are per position: zero them for this scenario.
    let before = stats(bed, &chains);
    let r = RefTables { c };
    let mut want: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..packets {
        let ch = if rng.random_bool(0.8) { 0 } else { 1 };
        let f = packet_for(&mut rng, &chains[&ch].rules);
        let p = parse_packet(&f);
        let v = classify(&r, &p, ch, |rule| {
            *want.entry((ch, rule)).or_default() += 1;
        });
        if let FwVerdict::Rule(rule, _) = v {
            *want.entry((ch, rule)).or_default() += 1;
        }
        seen.insert(match v {
            FwVerdict::Pass => "pass",
            FwVerdict::Rule(_, ACT_DROP) => "rule drop",
            FwVerdict::Rule(..) => "rule accept",
            FwVerdict::Default(_) => "default",
        });
        if p.family == 6 {
            seen.insert("ipv6");
        }
        let prog = if ch == 0 {
            PROG_FW_INGRESS
        } else {
            PROG_FW_EGRESS
        };
        let got = bed.run_tc(prog, &f);
        assert_eq!(
            got,
            code(v),
            "seed {seed} packet {i} chain {ch}: {v:?} {p:?}"
        );
    }
    if want
        .keys()
        .any(|(ch, r)| chains[ch].rules[*r as usize].action == ACT_LOG)
    {
        seen.insert("log");
    }
    let after = stats(bed, &chains);
    for (k, n) in &after {
        let got = n - before.get(k).copied().unwrap_or(0);
        assert_eq!(
            got,
            want.get(k).copied().unwrap_or(0),
            "seed {seed}: packets of rule {k:?}"
        );
    }
    seen
}

/// Packets per (chain, rule), summed over CPUs.
fn stats(bed: &mut TestBed, chains: &BTreeMap<u32, Chain>) -> BTreeMap<(u32, u32), u64> {
    let a: PerCpuArray<&MapData, RuleStats> = (&*bed.map(MAP_FW_STATS)).try_into().unwrap();
    let mut out = BTreeMap::new();
    for (ch, c) in chains {
        for r in 0..c.rules.len() as u32 {
            let v = a.get(&stats_slot(*ch, r), 0).unwrap();
            out.insert((*ch, r), v.iter().map(|s| s.packets).sum());
        }
    }
    out
}

#[test]
fn kernel_classifier_equals_reference() {
    let mut bed = bed();
    let mut old = None;
    let mut seen = std::collections::BTreeSet::new();
    let cases = soak_cases(40) as u64;
    for seed in 0..cases {
        let n = [1usize, 3, 10, 40, 200][seed as usize % 5];
        seen.extend(scenario(0xf1_0000 + seed, n, 300, &mut bed, &mut old));
    }
    // Thousands of rules, fewer packets.
    seen.extend(scenario(0xf1_ffff, 3000, 400, &mut bed, &mut old));
    for k in ["rule drop", "rule accept", "default", "log", "ipv6"] {
        assert!(seen.contains(k), "no '{k}' case: {seen:?}");
    }
}

/// First match wins, ranges are inclusive, `!` flags must be clear, prefixes nest, LOG
/// goes on to the next rule, and unused fields cost nothing (a chain of one rule).
#[test]
fn first_match_ranges_flags_prefixes() {
    let mut bed = bed();
    let rule = |f: &dyn Fn(&mut Rule)| {
        let mut r = Rule {
            action: ACT_ACCEPT,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let rules = vec![
        rule(&|r| {
            r.src = Some((ip("10.1.2.0"), 24));
            r.action = ACT_LOG;
        }),
        rule(&|r| {
            r.src = Some((ip("10.1.2.128"), 25));
            r.action = ACT_DROP;
        }),
        rule(&|r| {
            r.src = Some((ip("10.1.0.0"), 16));
            r.proto = Some(6);
            r.dport = Some((1000, 2000));
            r.tcpflags = Some((0x12, 0x02));
            r.action = ACT_ACCEPT;
        }),
        rule(&|r| {
            r.dst = Some((ip("2001:db8::"), 32));
            r.action = ACT_DROP;
        }),
    ];
    let mut chains = BTreeMap::new();
    chains.insert(
        0,
        Chain {
            rules,
            default_action: ACT_DROP,
        },
    );
    let c = compile(&chains).unwrap();
    write_tables(&mut bed, &c, BITSETS / 2, None).unwrap();
    let run = |bed: &mut TestBed, f: Vec<u8>| bed.run_tc(PROG_FW_INGRESS, &f);
    let (a, b) = (ip("10.1.2.200"), ip("10.9.9.9"));
    assert_eq!(
        run(&mut bed, Packet::tcp(a, b, 5, 1500, 0x02).build()),
        TC_ACT_SHOT,
        "rule 1 (/25) before rule 2"
    );
    let a = ip("10.1.2.3");
    assert_eq!(
        run(&mut bed, Packet::tcp(a, b, 5, 1000, 0x02).build()),
        TCX_NEXT,
        "log, then rule 2: range start"
    );
    assert_eq!(
        run(&mut bed, Packet::tcp(a, b, 5, 2000, 0x02).build()),
        TCX_NEXT,
        "range end"
    );
    assert_eq!(
        run(&mut bed, Packet::tcp(a, b, 5, 2001, 0x02).build()),
        TC_ACT_SHOT,
        "past the range: default"
    );
    assert_eq!(
        run(&mut bed, Packet::tcp(a, b, 5, 1500, 0x12).build()),
        TC_ACT_SHOT,
        "!ACK: a SYN-ACK does not match"
    );
    assert_eq!(
        run(&mut bed, Packet::udp(a, b, 5, 1500).build()),
        TC_ACT_SHOT,
        "UDP: rule 2 wants TCP"
    );
    let v6 = Packet::udp(ip("2001:db9::1"), ip("2001:db8::1"), 5, 5).build();
    assert_eq!(run(&mut bed, v6), TC_ACT_SHOT);
    let stats = {
        let a: PerCpuArray<&MapData, RuleStats> = (&*bed.map(MAP_FW_STATS)).try_into().unwrap();
        (0..4)
            .map(|r| {
                a.get(&stats_slot(0, r), 0)
                    .unwrap()
                    .iter()
                    .map(|s| s.packets)
                    .sum::<u64>()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stats,
        vec![6, 1, 2, 1],
        "LOG counted on the way, first matches counted"
    );
    // Non-IP passes whatever the default.
    assert_eq!(run(&mut bed, statewall::packet::non_ip(0x0806)), TCX_NEXT);
}
