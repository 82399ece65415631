//! The firewall classifier: the kernel programs (BPF_PROG_TEST_RUN, real maps) against the
//! reference `statewall_common::firewall::packet::classify` on random rulesets (up to thousands of rules)
//! and packets drawn from them: every verdict and every rule's packet count must be equal;
//! plus deterministic first-match, range, flag and prefix cases.

mod common;

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use common::soak_cases;
use rand::{rngs::StdRng, Rng, SeedableRng};
use statewall::engine::drain_ring;
use statewall::{
    engine::ebpf::{PROG_FW_EGRESS, PROG_FW_INGRESS, PROG_FW_XDP},
    firewall::{
        rules::{mask, Chain, Rule},
        tables::{Edit, Tables},
    },
};
use statewall_common::firewall::{FwLog, MAP_FW_LOG};
use statewall_common::maps::addr_ip;
use statewall_common::{
    ct::{CtConf, CtKey, CtVal, MAP_CT, MAP_CT_CONF},
    firewall::{
        packet::{classify, FwTables, FwVerdict},
        stats_slot, RuleStats, ACT_ACCEPT, ACT_DROP, ACT_LOG, IFACE_XDP, MAP_FW_BITSETS,
        MAP_FW_STATS,
    },
    parse::parse_packet,
    TCX_NEXT, TC_ACT_SHOT,
};
use statewall_harness::{packet::Packet, testrun::TestBed};

/// XDP verdicts.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Bitset table size for the tests.
const BITSETS: u32 = 8192;

/// Chain 0 alone, with these rules and default action.
fn chain0(rules: &[Rule], default_action: u8) -> BTreeMap<u32, Chain> {
    BTreeMap::from([(
        0u32,
        Chain {
            rules: rules.to_vec(),
            default_action,
            accept_established: false,
        },
    )])
}

fn bed() -> TestBed {
    let mut bed = TestBed::with_sizes(&[(MAP_FW_BITSETS, BITSETS)]);
    // Test-run packets come from the loopback device: instance 0.
    bed.fw_iface(1, 0);
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
        ct: rng.random_bool(0.15).then(|| rng.random_range(0..4u8)),
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

const SEC: u64 = 1_000_000_000;

/// The other direction of an earlier packet, with the flags an answer would carry.
fn reply(rng: &mut StdRng, p: &statewall_common::parse::PacketInfo) -> Option<Vec<u8>> {
    let ip = |a: [u8; 16]| addr_ip(p.family, &a);
    if p.status != 1 || p.flags & 4 == 0 {
        return None;
    }
    let (s, d) = (ip(p.daddr), ip(p.saddr));
    Some(
        match p.l4proto {
            6 => {
                let flags = match p.tcp_flags & 0x17 {
                    0x02 => [0x12u8, 0x12, 0x04, 0x10][rng.random_range(0..4)],
                    _ => [0x10u8, 0x10, 0x11, 0x04, 0x02][rng.random_range(0..5)],
                };
                Packet::tcp(s, d, p.dport, p.sport, flags)
            }
            17 => Packet::udp(s, d, p.dport, p.sport),
            _ => Packet::echo_request(s, d, p.icmp_id),
        }
        .build(),
    )
}

fn code(v: FwVerdict) -> i32 {
    match v {
        FwVerdict::Pass | FwVerdict::Established => TCX_NEXT,
        FwVerdict::Rule(_, a) | FwVerdict::Default(a) => {
            if a == ACT_DROP {
                TC_ACT_SHOT
            } else {
                TCX_NEXT
            }
        }
    }
}

/// Runs one scenario; returns (packets, verdict kinds seen). `xdp`: the ingress chain runs
/// in `sw_fw_xdp` (the bed's interface entry says so), its verdicts read as tc's.
fn scenario(
    seed: u64,
    nrules: usize,
    packets: usize,
    bed: &mut TestBed,
    t: &mut Tables,
    xdp: bool,
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
                accept_established: rng.random_bool(0.5),
            },
        );
    }
    // The same tables for every scenario: only what differs from what the generation
    // held is written.
    t.set_chains(&chains, &[]).unwrap();
    t.write(bed).unwrap();
    // Counters of rules kept from the last scenario go on: count from here.
    let before = stats(bed, t, &chains);
    let created_before = ct_created(bed);
    let mut created = 0u64;
    let r = &*t;
    // The reference names rules by position; the tests by index.
    let index = |ch: u32, pos: u32| r.positions(ch).binary_search(&pos).unwrap() as u32;
    let mut want: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut ct_ref: std::collections::HashMap<CtKey, CtVal> = Default::default();
    let conf = CtConf {
        tcp_syn_ns: 3 * SEC,
        tcp_est_ns: 20 * SEC,
        tcp_close_ns: 2 * SEC,
        udp_ns: 4 * SEC,
    };
    {
        let mut a: Array<&mut MapData, CtConf> = bed.map(MAP_CT_CONF).try_into().unwrap();
        a.set(0, conf, 0).unwrap();
    }
    let mut now = bed.kernel_now();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for i in 0..packets {
        now += match rng.random_range(0..10) {
            0 => rng.random_range(1..6) * SEC,
            _ => rng.random_range(0..200) * 1_000_000,
        };
        bed.freeze(now);
        let ch = if rng.random_bool(0.8) { 0 } else { 1 };
        // Often the answer to an earlier packet (the other direction of its connection).
        let f = match sent.len() {
            // An ICMP error about an earlier packet, from where it went.
            n if n > 0 && rng.random_bool(0.08) => {
                let orig = &sent[rng.random_range(n.saturating_sub(8)..n)];
                let op = parse_packet(orig);
                let ip = |a: [u8; 16]| addr_ip(op.family, &a);
                let l3 = op.l3_off as usize;
                let q = &orig[l3..orig.len().min(l3 + 64)];
                let ty = if op.family == 6 { 1 } else { 3 };
                Packet::new(
                    ip(op.daddr),
                    ip(op.saddr),
                    statewall_harness::packet::L4::Icmp {
                        ty,
                        code: 3,
                        id: 0,
                        seq: 0,
                    },
                )
                .payload(q)
                .build()
            }
            n if n > 0 && rng.random_bool(0.35) => {
                let prev = parse_packet(&sent[rng.random_range(n.saturating_sub(8)..n)]);
                reply(&mut rng, &prev).unwrap_or_else(|| packet_for(&mut rng, &chains[&ch].rules))
            }
            _ => packet_for(&mut rng, &chains[&ch].rules),
        };
        // Now and then damaged by the malformed-frame generator, for both sides to agree
        // on; a frame the reference calls malformed matches no rule (checked below).
        // (test-run refuses frames shorter than an IPv6 header after Ethernet; the cuts
        // below that go over the wire in tests/bad_packets.rs.)
        let f = if rng.random_bool(0.08) {
            let (kind, g) = statewall_harness::packet::malform(&f, rng.random());
            seen.insert(kind);
            DAMAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            g
        } else {
            f
        };
        sent.push(f.clone());
        SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = parse_packet(&f);
        if p.status == statewall_common::parse::Status::Malformed as u8 {
            seen.insert("malformed");
        }
        // The reference connection table.
        let chain_on = r.chain(0, ch).enabled != 0 && p.status == 1;
        let tracked = statewall_common::ct::key(&p);
        let entry = tracked
            .and_then(|(k, _)| ct_ref.get(&k).copied())
            .filter(|e| e.expires_ns > now);
        let dir = tracked.map(|t| t.1).unwrap_or(0);
        let track = r.chain(0, ch).track != 0;
        let mut st = if track {
            statewall_common::ct::state(&p, entry.as_ref(), dir)
        } else {
            statewall_common::ct::NEW
        };
        if track && tracked.is_none() && statewall_common::ct::is_error(&p) {
            let off = p.payload_off as usize + statewall_common::ct::QUOTE_OFF as usize;
            let q = &f[off.min(f.len())..];
            let n = q.len().min(statewall_common::ct::QUOTE_LEN);
            let mut q48 = [0u8; statewall_common::ct::QUOTE_LEN];
            q48[..n].copy_from_slice(&q[..n]);
            let mut k = CtKey::default();
            if n >= 28
                && statewall_common::ct::related_key(p.family, &q48, n, &mut k)
                && ct_ref.get(&k).is_some_and(|e| e.expires_ns > now)
            {
                st = statewall_common::ct::RELATED;
            }
        }
        let mut logged = Vec::new();
        let v = classify(r, &p, ch, st, |rule| {
            *want.entry((ch, index(ch, rule))).or_default() += 1;
            logged.push(index(ch, rule));
        });
        // The rule list read directly agrees (the kernel's word walk and the reference's
        // share the tables' layout, not this).
        if chain_on && matches!(v, FwVerdict::Rule(..) | FwVerdict::Default(_)) {
            let c = &chains[&ch];
            let (lv, llog) = linear(&c.rules, c.default_action, &p, st);
            let by_idx = match v {
                FwVerdict::Rule(r, a) => FwVerdict::Rule(index(ch, r), a),
                o => o,
            };
            assert_eq!(by_idx, lv, "seed {seed} packet {i}: tables and rule list");
            let llog: Vec<u32> = llog.into_iter().map(|x| x as u32).collect();
            assert_eq!(logged, llog, "seed {seed} packet {i}: LOG rules met");
        }
        let accepted = !matches!(
            v,
            FwVerdict::Rule(_, ACT_DROP) | FwVerdict::Default(ACT_DROP)
        );
        if chain_on && accepted && track {
            if let Some((k, d)) = tracked {
                match statewall_common::ct::next(&p, entry.as_ref(), d, st, now, &conf) {
                    Some(nv) => {
                        if entry != Some(nv) {
                            ct_ref.insert(k, nv);
                            created += entry.is_none() as u64;
                        }
                    }
                    None => {
                        ct_ref.remove(&k);
                    }
                }
            }
        }
        if p.status == statewall_common::parse::Status::Malformed as u8 {
            // As documented: the chain's default action (or a pass when it is off), never
            // a rule, no LOG event, no connection entry.
            assert!(
                matches!(v, FwVerdict::Default(_) | FwVerdict::Pass) && logged.is_empty(),
                "seed {seed} packet {i}: a malformed frame got {v:?}"
            );
        }
        seen.insert(["ct new", "ct established", "ct related", "ct invalid"][st as usize]);
        if let FwVerdict::Rule(rule, _) = v {
            *want.entry((ch, index(ch, rule))).or_default() += 1;
        }
        seen.insert(match v {
            FwVerdict::Pass => "pass",
            FwVerdict::Rule(_, ACT_DROP) => "rule drop",
            FwVerdict::Rule(..) => "rule accept",
            FwVerdict::Default(_) => "default",
            FwVerdict::Established => "accepted as established",
        });
        if p.family == 6 {
            seen.insert("ipv6");
        }
        let got = match (ch, xdp) {
            (0, true) => match bed.run_xdp(PROG_FW_XDP, &f) {
                XDP_PASS => TCX_NEXT,
                XDP_DROP => TC_ACT_SHOT,
                o => panic!("sw_fw_xdp returned {o}"),
            },
            (0, false) => bed.run_tc(PROG_FW_INGRESS, &f),
            _ => bed.run_tc(PROG_FW_EGRESS, &f),
        };
        assert_eq!(
            got,
            code(v),
            "seed {seed} packet {i} chain {ch}: {v:?} {p:?}"
        );
        // One LOG event per LOG rule passed, in rule order, about this packet.
        let events: Vec<FwLog> = drain_ring(bed.map(MAP_FW_LOG));
        let want_events: Vec<FwLog> = logged
            .iter()
            .map(|&rule| FwLog {
                saddr: p.saddr,
                daddr: p.daddr,
                len: f.len() as u32,
                rule: r.counter_ids(ch)[rule as usize],
                sport: p.sport,
                dport: p.dport,
                chain: ch as u8,
                family: p.family,
                proto: p.l4proto,
                ct: st,
                tcp_flags: p.tcp_flags,
                icmp_type: p.icmp_type,
                _pad: [0; 2],
            })
            .collect();
        assert_eq!(
            events, want_events,
            "seed {seed} packet {i} chain {ch}: LOG events"
        );
        if !events.is_empty() {
            seen.insert("log event");
        }
    }
    if want
        .keys()
        .any(|(ch, r)| chains[ch].rules[*r as usize].action == ACT_LOG)
    {
        seen.insert("log");
    }
    // The connection tables agree.
    let kt: BpfHashMap<&MapData, CtKey, CtVal> = (&*bed.map(MAP_CT)).try_into().unwrap();
    let kt: BTreeMap<CtKey, CtVal> = kt.iter().map(|x| x.unwrap()).collect();
    let rt: BTreeMap<CtKey, CtVal> = ct_ref.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(kt, rt, "seed {seed}: connection tables differ");
    {
        // Empty it for the next scenario.
        let mut kt: BpfHashMap<&mut MapData, CtKey, CtVal> = bed.map(MAP_CT).try_into().unwrap();
        for k in rt.keys() {
            let _ = kt.remove(k);
        }
    }
    assert_eq!(
        ct_created(bed) - created_before,
        created,
        "seed {seed}: connections created"
    );
    if created > 0 {
        seen.insert("ct created");
    }
    let after = stats(bed, t, &chains);
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

/// The stage's `ct_created` counter, summed over CPUs.
fn ct_created(bed: &mut TestBed) -> u64 {
    use statewall_common::firewall::{CNT_CT_CREATED, MAP_FW_COUNTERS};
    let a: PerCpuArray<&MapData, u64> = (&*bed.map(MAP_FW_COUNTERS)).try_into().unwrap();
    a.get(&CNT_CT_CREATED, 0).unwrap().iter().sum()
}

/// Packets per (chain, rule index), summed over CPUs.
fn stats(
    bed: &mut TestBed,
    t: &Tables,
    chains: &BTreeMap<u32, Chain>,
) -> BTreeMap<(u32, u32), u64> {
    let a: PerCpuArray<&MapData, RuleStats> = (&*bed.map(MAP_FW_STATS)).try_into().unwrap();
    let mut out = BTreeMap::new();
    for (ch, c) in chains {
        for r in 0..c.rules.len() as u32 {
            let id = t.counter_ids(*ch)[r as usize];
            let v = a.get(&stats_slot(*ch, id), 0).unwrap();
            out.insert((*ch, r), v.iter().map(|s| s.packets).sum());
        }
    }
    out
}

/// Frames sent and frames damaged by the malformed-frame generator, over all scenarios.
static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static DAMAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[test]
fn kernel_classifier_equals_reference() {
    let mut bed = bed();
    let mut t = Tables::new(BITSETS);
    let mut seen = std::collections::BTreeSet::new();
    let cases = soak_cases(40) as u64;
    for seed in 0..cases {
        let n = [1usize, 3, 10, 40, 200][seed as usize % 5];
        seen.extend(scenario(0xf1_0000 + seed, n, 300, &mut bed, &mut t, false));
    }
    // Thousands of rules, fewer packets.
    seen.extend(scenario(0xf1_ffff, 3000, 400, &mut bed, &mut t, false));
    common::tally(
        "property: firewall frames, kernel = reference",
        SENT.load(std::sync::atomic::Ordering::Relaxed),
    );
    common::tally(
        "property: malformed frames among them",
        DAMAGED.load(std::sync::atomic::Ordering::Relaxed),
    );
    for k in [
        "rule drop",
        "rule accept",
        "default",
        "log",
        "log event",
        "malformed",
        "ipv6",
        "ct new",
        "ct created",
        "ct established",
        "ct invalid",
        "ct related",
        "accepted as established",
    ]
    .into_iter()
    // (The frames carry no payload to empty.)
    .chain(
        statewall_harness::packet::MALFORM_KINDS
            .into_iter()
            .filter(|k| *k != "zero-length payload"),
    ) {
        assert!(seen.contains(k), "no '{k}' case: {seen:?}");
    }
}

/// A field whose IPv4 prefixes find no room in the direct table (too few blocks, or the
/// table turned off with 2 blocks) reads its prefix trie, and the kernel still decides as
/// the reference; in the default table, the ingress chain's two address fields read it
/// (two roots a generation: the egress chain's fields read their tries).
#[test]
fn fields_without_room_in_the_direct_table_read_their_tries() {
    use statewall_common::firewall::{MAP_FW_CTL, MAP_FW_V4, V4_DEFAULT_BLOCKS, V4_ROOT_BLOCKS};
    for (blocks, room) in [
        (2 + 2 * (V4_ROOT_BLOCKS + 3), false),
        (2, false),
        (V4_DEFAULT_BLOCKS, true),
    ] {
        let mut bed = TestBed::with_sizes(&[(MAP_FW_BITSETS, BITSETS), (MAP_FW_V4, blocks)]);
        bed.fw_iface(1, 0);
        let mut t = Tables::new(BITSETS);
        let mut used = (0, 0);
        for seed in 0..4 {
            scenario(0xf4_0000 + seed, 200, 200, &mut bed, &mut t, false);
            let a: Array<&MapData, u32> = (&*bed.map(MAP_FW_CTL)).try_into().unwrap();
            let g = a.get(&0, 0).unwrap() & 1;
            let (_, direct, fallen) = t.v4_use(g);
            used = (used.0 + direct, used.1 + fallen);
        }
        if room {
            assert!(used.0 >= 4 * 2, "{blocks} blocks: {used:?}");
        } else {
            assert!(used.0 == 0 && used.1 > 0, "{blocks} blocks: {used:?}");
        }
    }
}

/// The same property with the ingress chain in XDP (`sw_fw_xdp`): same rules, counters,
/// LOG events and connection states as on tc. The tc ingress program then lets every
/// packet go on (it was classified in XDP), and without the interface's XDP bit the XDP
/// program does.
#[test]
fn kernel_classifier_equals_reference_in_xdp() {
    let mut bed = bed();
    bed.fw_iface(1, IFACE_XDP);
    let mut t = Tables::new(BITSETS);
    let mut seen = std::collections::BTreeSet::new();
    let cases = soak_cases(20) as u64;
    for seed in 0..cases {
        let n = [1usize, 3, 10, 40, 200][seed as usize % 5];
        seen.extend(scenario(0xf2_0000 + seed, n, 300, &mut bed, &mut t, true));
    }
    seen.extend(scenario(0xf2_ffff, 3000, 300, &mut bed, &mut t, true));
    for k in [
        "rule drop",
        "rule accept",
        "default",
        "log",
        "malformed",
        "ipv6",
        "ct established",
        "ct related",
    ] {
        assert!(seen.contains(k), "no '{k}' case: {seen:?}");
    }
    // A chain that drops everything: XDP drops, tc ingress lets the packet go on; with
    // the bit cleared, the other way round.
    let chains = chain0(&[], ACT_DROP);
    t.set_chains(&chains, &[]).unwrap();
    t.write(&mut bed).unwrap();
    let f = Packet::udp(ip("10.0.0.1"), ip("10.0.0.2"), 1000, 53).build();
    assert_eq!(bed.run_xdp(PROG_FW_XDP, &f), XDP_DROP);
    assert_eq!(bed.run_tc(PROG_FW_INGRESS, &f), TCX_NEXT);
    bed.fw_iface(1, 0);
    assert_eq!(bed.run_xdp(PROG_FW_XDP, &f), XDP_PASS);
    assert_eq!(bed.run_tc(PROG_FW_INGRESS, &f), TC_ACT_SHOT);
}

/// The rule list read directly, as a user reads it (no tables, no bit sets): does rule
/// `r` match packet `p` in connection state `ct`? An independent reference for the
/// compiler, which the table-based tests share with the kernel.
fn rule_matches(r: &Rule, p: &statewall_common::parse::PacketInfo, ct: u8) -> bool {
    use statewall_common::parse::{FLAG_L4, FLAG_NONFIRST_FRAG};
    let ip = |a: [u8; 16]| addr_ip(p.family, &a);
    let within = |net: Option<(IpAddr, u8)>, a: [u8; 16]| match net {
        None => true,
        Some((n, len)) => n.is_ipv6() == (p.family == 6) && mask(ip(a), len) == n,
    };
    let whole = p.flags & FLAG_L4 != 0 && p.flags & FLAG_NONFIRST_FRAG == 0;
    let ports = whole && (p.l4proto == 6 || p.l4proto == 17);
    let port_in = |range: Option<(u16, u16)>, port: u16| match range {
        None => true,
        Some((lo, hi)) => ports && lo <= port && port <= hi,
    };
    within(r.src, p.saddr)
        && within(r.dst, p.daddr)
        && r.proto.is_none_or(|pr| pr == p.l4proto)
        && port_in(r.sport, p.sport)
        && port_in(r.dport, p.dport)
        && r.tcpflags
            .is_none_or(|(m, v)| whole && p.l4proto == 6 && p.tcp_flags & m == v)
        && r.ct.is_none_or(|st| st == ct)
}

/// The compiled tables (read by the reference classifier) decide as the rule list read
/// directly: the first rule that matches, LOG rules passed (and each one met reported),
/// else the default; over random rulesets of up to 300 rules, packets drawn from them, in
/// every connection state.
#[test]
fn compiled_tables_decide_as_the_rule_list() {
    use statewall_common::parse::Status;
    let mut rng = StdRng::seed_from_u64(0xc0_0000);
    let mut checked = 0;
    for case in 0..soak_cases(60) {
        let n = [1usize, 2, 5, 20, 80, 300][case as usize % 6];
        let rules: Vec<Rule> = (0..n).map(|_| random_rule(&mut rng)).collect();
        let chains = chain0(&rules, ACT_DROP);
        let mut r = Tables::new(1 << 16);
        r.set_chains(&chains, &[]).unwrap();
        for _ in 0..200 {
            let f = packet_for(&mut rng, &rules);
            let p = parse_packet(&f);
            if p.status != Status::Ip as u8 {
                continue;
            }
            let ct = rng.random_range(0..4u8);
            let (got, logged) = by_index(&r, &p, ct);
            let (want, want_logged) = linear(&rules, ACT_DROP, &p, ct);
            assert_eq!(got, want, "case {case}: {p:?}");
            assert_eq!(logged, want_logged, "case {case}: LOG rules met");
            checked += 1;
        }
    }
    assert!(checked > 5000, "{checked} packets checked");
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
            accept_established: false,
        },
    );
    let mut t = Tables::new(BITSETS);
    t.set_chains(&chains, &[]).unwrap();
    t.write(&mut bed).unwrap();
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
                a.get(&stats_slot(0, t.counter_ids(0)[r]), 0)
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
    assert_eq!(
        run(&mut bed, statewall_harness::packet::non_ip(0x0806)),
        TCX_NEXT
    );
}

/// Rules on the connection state: with an ESTABLISHED-only rule and a DROP default, a SYN
/// (NEW) is dropped, the answer to an accepted outgoing SYN gets in, a mid-stream packet
/// without a connection is INVALID; accept-established lets known connections in before
/// any rule.
#[test]
fn conntrack_states_in_rules() {
    let mut bed = bed();
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let mut chains = BTreeMap::new();
    let rule = |ct, action| Rule {
        ct: Some(ct),
        action,
        ..Default::default()
    };
    chains.insert(
        0,
        Chain {
            rules: vec![rule(statewall_common::ct::ESTABLISHED, ACT_ACCEPT)],
            default_action: ACT_DROP,
            accept_established: false,
        },
    );
    // Egress: everything accepted (and tracked), except INVALID.
    chains.insert(
        1,
        Chain {
            rules: vec![rule(statewall_common::ct::INVALID, ACT_DROP)],
            default_action: ACT_ACCEPT,
            accept_established: false,
        },
    );
    let mut t = Tables::new(BITSETS);
    t.set_chains(&chains, &[]).unwrap();
    assert_ne!(
        t.chain(0, 0).used & statewall_common::firewall::field::CT,
        0
    );
    t.write(&mut bed).unwrap();
    let syn_in = Packet::tcp(b, a, 5555, 22, 0x02).build();
    assert_eq!(
        bed.run_tc(PROG_FW_INGRESS, &syn_in),
        TC_ACT_SHOT,
        "NEW from outside"
    );
    let ack_in = Packet::tcp(b, a, 5556, 22, 0x10).build();
    assert_eq!(
        bed.run_tc(PROG_FW_INGRESS, &ack_in),
        TC_ACT_SHOT,
        "INVALID from outside"
    );
    let ack_out = Packet::tcp(a, b, 22, 5557, 0x10).build();
    assert_eq!(
        bed.run_tc(PROG_FW_EGRESS, &ack_out),
        TC_ACT_SHOT,
        "INVALID going out"
    );
    let syn_out = Packet::tcp(a, b, 40000, 443, 0x02).build();
    assert_eq!(bed.run_tc(PROG_FW_EGRESS, &syn_out), TCX_NEXT);
    let synack_in = Packet::tcp(b, a, 443, 40000, 0x12).build();
    assert_eq!(
        bed.run_tc(PROG_FW_INGRESS, &synack_in),
        TCX_NEXT,
        "the answer: ESTABLISHED"
    );
    let data_in = Packet::tcp(b, a, 443, 40000, 0x18).build();
    assert_eq!(bed.run_tc(PROG_FW_INGRESS, &data_in), TCX_NEXT);
    // UDP: the answer to an outgoing datagram.
    let udp_out = Packet::udp(a, b, 5353, 53).build();
    assert_eq!(bed.run_tc(PROG_FW_EGRESS, &udp_out), TCX_NEXT);
    assert_eq!(
        bed.run_tc(PROG_FW_INGRESS, &Packet::udp(b, a, 53, 5353).build()),
        TCX_NEXT
    );
    assert_eq!(
        bed.run_tc(PROG_FW_INGRESS, &Packet::udp(b, a, 53, 5354).build()),
        TC_ACT_SHOT
    );
    // accept-established: no rule needed.
    chains.get_mut(&0).unwrap().rules.clear();
    chains.get_mut(&0).unwrap().accept_established = true;
    t.set_chains(&chains, &[]).unwrap();
    t.write(&mut bed).unwrap();
    assert_eq!(bed.run_tc(PROG_FW_INGRESS, &data_in), TCX_NEXT);
    assert_eq!(bed.run_tc(PROG_FW_INGRESS, &syn_in), TC_ACT_SHOT);
}

/// The rule list read directly: what the chain decides (rule by index) and the LOG rules
/// met on the way.
fn linear(
    rules: &[Rule],
    default: u8,
    p: &statewall_common::parse::PacketInfo,
    ct: u8,
) -> (FwVerdict, Vec<usize>) {
    let mut logged = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule_matches(rule, p, ct) {
            if rule.action == ACT_LOG {
                logged.push(i);
                continue;
            }
            return (FwVerdict::Rule(i as u32, rule.action), logged);
        }
    }
    (FwVerdict::Default(default), logged)
}

/// What the tables' chain 0 decides (the reference classifier over them), with rules named
/// by index, not position: the verdict and the LOG rules met.
fn by_index(
    t: &Tables,
    p: &statewall_common::parse::PacketInfo,
    ct: u8,
) -> (FwVerdict, Vec<usize>) {
    let index = |pos: u32| t.positions(0).iter().position(|p| *p == pos).unwrap();
    let mut logged = Vec::new();
    let v = match classify(t, p, 0, ct, |r| logged.push(index(r))) {
        FwVerdict::Rule(r, a) => FwVerdict::Rule(index(r) as u32, a),
        v => v,
    };
    (v, logged)
}

/// One to four random edits (one most often), applied to the list too.
fn random_batch(
    rng: &mut StdRng,
    rules: &mut Vec<Rule>,
    counts: &mut Vec<u64>,
    ct: bool,
) -> Vec<Edit> {
    let k = if rng.random_bool(0.2) {
        rng.random_range(2..5)
    } else {
        1
    };
    (0..k)
        .map(|_| random_edit(rng, rules, counts, ct))
        .collect()
}

/// A random edit of `rules` (inserts often at the front, where a chain has no room left
/// soonest), applied to the list too; `counts` follows the rules.
fn random_edit(rng: &mut StdRng, rules: &mut Vec<Rule>, counts: &mut Vec<u64>, ct: bool) -> Edit {
    let mut rule = random_rule(rng);
    if !ct {
        rule.ct = None;
    }
    let n = rules.len();
    match rng.random_range(0..10) {
        0..=3 if n > 0 => {
            let i = rng.random_range(0..n);
            rules.remove(i);
            counts.remove(i);
            Edit::Delete(i)
        }
        4 | 5 if n > 0 => {
            let i = rng.random_range(0..n);
            rules[i] = rule.clone();
            Edit::Update(i, rule)
        }
        k => {
            let i = match k {
                6 | 7 => 0,
                _ => rng.random_range(0..=n),
            };
            rules.insert(i, rule.clone());
            counts.insert(i, 0);
            Edit::Insert(i, rule)
        }
    }
}

/// Rule changes applied edit by edit (a rule moves to a free position near its
/// neighbours, or the nearest few rules move by one; the sets that hold the rules touched
/// are replaced, no others) decide as the rule list read directly, after every batch of
/// one to four edits, over chains of up to 2,000 rules; positions and counter ids stay
/// distinct; an insert at the front of a long chain moves few rules.
#[test]
fn edited_tables_decide_as_the_rule_list() {
    use statewall_common::parse::Status;
    let mut rng = StdRng::seed_from_u64(0xed_0000);
    let (mut checked, mut edits_done) = (0u64, 0u64);
    for case in 0..soak_cases(12) {
        let n = [0usize, 1, 5, 40, 300, 2000][case as usize % 6];
        let mut rules: Vec<Rule> = (0..n).map(|_| random_rule(&mut rng)).collect();
        let mut counts = vec![0; n];
        let chain = |rules: Vec<Rule>| {
            BTreeMap::from([(
                0u32,
                Chain {
                    rules,
                    default_action: ACT_DROP,
                    accept_established: false,
                },
            )])
        };
        let mut t = Tables::new(1 << 16);
        t.set_chains(&chain(rules.clone()), &[]).unwrap();
        if n == 2000 {
            // One insert at the front: most rules keep their positions.
            let before = t.positions(0).to_vec();
            t.edit(0, &[Edit::Insert(0, random_rule(&mut rng))])
                .unwrap();
            let after = &t.positions(0)[1..];
            let kept = before.iter().zip(after).filter(|(a, b)| a == b).count();
            assert!(
                kept + 64 >= n,
                "an insert at the front moved {} rules",
                n - kept
            );
            t.edit(0, &[Edit::Delete(0)]).unwrap();
        }
        for step in 0..30 {
            let edits = random_batch(&mut rng, &mut rules, &mut counts, true);
            t.edit(0, &edits).unwrap();
            edits_done += edits.len() as u64;
            let pos = t.positions(0);
            assert_eq!(pos.len(), rules.len(), "case {case} step {step}");
            let mut distinct = pos.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), pos.len(), "positions shared");
            let mut ids = t.counter_ids(0).to_vec();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), rules.len(), "counter ids shared");
            if rules.is_empty() {
                continue;
            }
            for _ in 0..40 {
                let f = packet_for(&mut rng, &rules);
                let p = parse_packet(&f);
                if p.status != Status::Ip as u8 {
                    continue;
                }
                let ct = rng.random_range(0..4u8);
                let (got, logged) = by_index(&t, &p, ct);
                let (want, want_logged) = linear(&rules, ACT_DROP, &p, ct);
                assert_eq!(got, want, "case {case} step {step} after {edits:?}: {p:?}");
                assert_eq!(
                    logged, want_logged,
                    "case {case} step {step}: LOG rules met"
                );
                checked += 1;
            }
        }
    }
    common::tally("property: firewall edits applied", edits_done);
    assert!(checked > 5000, "{checked} packets checked");
}

/// The kernel after each batch of edits written into the inactive generation and switched
/// to: every verdict as the rule list read directly, and every rule's packet count follows
/// its rule through inserts, deletes, updates and the moves they cause. (Case 5 of this
/// seed once failed: a generation's image took a wild set it had not written, for a field
/// without one, to hold what was wanted; when the field had a wild set again, the kernel
/// kept an old rule in it and dropped what no rule matched.)
#[test]
fn kernel_follows_edits_with_counters() {
    let mut bed = bed();
    let mut rng = StdRng::seed_from_u64(0xed_1000);
    let mut t = Tables::new(BITSETS);
    let mut sent = 0u64;
    for case in 0..soak_cases(6) {
        let n = [300usize, 40, 1][case as usize % 3];
        let mut rules: Vec<Rule> = (0..n)
            .map(|_| Rule {
                ct: None,
                ..random_rule(&mut rng)
            })
            .collect();
        let mut counts = vec![0u64; n];
        let chains = chain0(&rules, ACT_ACCEPT);
        t.set_chains(&chains, &[(0, vec![None; n])]).unwrap();
        t.write(&mut bed).unwrap();
        let base = fw_counts(&mut bed, &t, rules.len());
        for step in 0..25 {
            let edits = random_batch(&mut rng, &mut rules, &mut counts, false);
            t.edit(0, &edits).unwrap();
            t.write(&mut bed).unwrap();
            if rules.is_empty() {
                continue;
            }
            for _ in 0..30 {
                let f = packet_for(&mut rng, &rules);
                let p = parse_packet(&f);
                let (want, logged) = linear(&rules, ACT_ACCEPT, &p, statewall_common::ct::NEW);
                let want = match p.status {
                    s if s == statewall_common::parse::Status::NonIp as u8 => FwVerdict::Pass,
                    _ => want,
                };
                assert_eq!(
                    bed.run_tc(PROG_FW_INGRESS, &f),
                    code(want),
                    "case {case} step {step} after {edits:?}: {p:?}"
                );
                sent += 1;
                for i in logged {
                    counts[i] += 1;
                }
                if let FwVerdict::Rule(i, _) = want {
                    counts[i as usize] += 1;
                }
                let _: Vec<FwLog> = drain_ring(bed.map(MAP_FW_LOG));
            }
            let got = fw_counts(&mut bed, &t, rules.len());
            let got: Vec<u64> = if step == 0 && base.len() == got.len() {
                got.iter().zip(&base).map(|(g, b)| g - b).collect()
            } else {
                got
            };
            assert_eq!(
                got, counts,
                "case {case} step {step}: counters after {edits:?}"
            );
        }
    }
    common::tally("property: frames after firewall edits", sent);
}

/// Chains of up to `LINEAR_MAX` rules are read rule by rule, longer ones through the sets:
/// a chain edited back and forth across the bound says which way the kernel reads it
/// (`ChainConf::linear` of the active generation), and decides and counts as the rule list
/// read directly either way.
#[test]
fn small_chains_are_read_rule_by_rule_on_both_sides_of_the_bound() {
    use statewall_common::firewall::{ChainConf, LINEAR_MAX, MAP_FW_CHAINS, MAP_FW_CTL};
    let mut bed = bed();
    let mut rng = StdRng::seed_from_u64(0x11_0ea2);
    let mut t = Tables::new(BITSETS);
    let start = LINEAR_MAX - 3;
    let mut rules: Vec<Rule> = (0..start)
        .map(|_| Rule {
            ct: None,
            ..random_rule(&mut rng)
        })
        .collect();
    t.set_chains(&chain0(&rules, ACT_DROP), &[(0, vec![None; start])])
        .unwrap();
    t.write(&mut bed).unwrap();
    let mut counts = fw_counts(&mut bed, &t, rules.len());
    let mut seen = [false; 2];
    for step in 0..40 {
        // Up past the bound, then down below it, then up again.
        let grow = (step / 8) % 2 == 0;
        let rule = Rule {
            ct: None,
            ..random_rule(&mut rng)
        };
        let edit = if grow || rules.len() <= 1 {
            let i = rng.random_range(0..=rules.len());
            rules.insert(i, rule.clone());
            counts.insert(i, 0);
            Edit::Insert(i, rule)
        } else {
            let i = rng.random_range(0..rules.len());
            rules.remove(i);
            counts.remove(i);
            Edit::Delete(i)
        };
        t.edit(0, &[edit]).unwrap();
        t.write(&mut bed).unwrap();
        let g = {
            let a: Array<&MapData, u32> = (&*bed.map(MAP_FW_CTL)).try_into().unwrap();
            a.get(&0, 0).unwrap() & 1
        };
        let conf: ChainConf = {
            let a: Array<&MapData, ChainConf> = (&*bed.map(MAP_FW_CHAINS)).try_into().unwrap();
            a.get(&(g * 8), 0).unwrap()
        };
        let small = rules.len() <= LINEAR_MAX;
        assert_eq!(
            conf.linear as usize,
            if small { rules.len() + 1 } else { 0 },
            "step {step}: {} rules",
            rules.len()
        );
        seen[small as usize] = true;
        for _ in 0..40 {
            let f = packet_for(&mut rng, &rules);
            let p = parse_packet(&f);
            let (want, logged) = linear(&rules, ACT_DROP, &p, statewall_common::ct::NEW);
            if p.status == statewall_common::parse::Status::NonIp as u8 {
                continue;
            }
            assert_eq!(
                bed.run_tc(PROG_FW_INGRESS, &f),
                code(want),
                "step {step}, {} rules: {p:?}",
                rules.len()
            );
            for i in logged {
                counts[i] += 1;
            }
            if let FwVerdict::Rule(i, _) = want {
                counts[i as usize] += 1;
            }
            let _: Vec<FwLog> = drain_ring(bed.map(MAP_FW_LOG));
        }
        assert_eq!(fw_counts(&mut bed, &t, rules.len()), counts, "step {step}");
    }
    assert_eq!(seen, [true, true], "both sides of the bound");
}

/// Packets counted for each rule of chain 0, in rule order.
fn fw_counts(bed: &mut TestBed, t: &Tables, n: usize) -> Vec<u64> {
    let a: PerCpuArray<&MapData, RuleStats> = (&*bed.map(MAP_FW_STATS)).try_into().unwrap();
    t.counter_ids(0)[..n]
        .iter()
        .map(|id| {
            a.get(&stats_slot(0, *id), 0)
                .unwrap()
                .iter()
                .map(|s| s.packets)
                .sum()
        })
        .collect()
}

/// An edit that finds no room for its sets (a bitset table sized to the chain) is refused
/// and changes nothing: the tables decide as before, and once room is made (a rule
/// deleted from a table with room) edits go on.
#[test]
fn an_edit_without_room_changes_nothing() {
    use statewall_common::parse::Status;
    let mut rng = StdRng::seed_from_u64(0xed_2000);
    let rules: Vec<Rule> = (0..60).map(|_| random_rule(&mut rng)).collect();
    let chains = chain0(&rules, ACT_DROP);
    let mut probe = Tables::new(1 << 16);
    probe.set_chains(&chains, &[]).unwrap();
    let cap = statewall_common::firewall::WILD_SETS + probe.sets_in_use() as u32 + 1;
    let mut t = Tables::new(cap);
    t.set_chains(&chains, &[]).unwrap();
    let before = t.positions(0).to_vec();
    let mut refused = 0;
    for _ in 0..20 {
        let e = Edit::Insert(rng.random_range(0..=rules.len()), random_rule(&mut rng));
        match t.edit(0, &[e]) {
            Err(err) => {
                assert!(err.to_string().contains("bitsets_max"), "{err}");
                refused += 1;
            }
            Ok(()) => {
                // Room for this one: take it back out.
                let i = (0..=rules.len())
                    .find(|i| t.positions(0).get(*i) != before.get(*i))
                    .unwrap_or(rules.len());
                t.edit(0, &[Edit::Delete(i)]).unwrap();
            }
        }
        assert_eq!(
            t.positions(0),
            &before[..],
            "positions after a refused edit"
        );
        for _ in 0..30 {
            let f = packet_for(&mut rng, &rules);
            let p = parse_packet(&f);
            if p.status != Status::Ip as u8 {
                continue;
            }
            let got = by_index(&t, &p, statewall_common::ct::NEW).0;
            assert_eq!(
                got,
                linear(&rules, ACT_DROP, &p, statewall_common::ct::NEW).0
            );
        }
    }
    assert!(refused > 10, "{refused} of 20 edits refused");
}

/// Rules of the shape users write by the thousand: a /24 source, a protocol and a
/// destination port each.
fn host_rule(rng: &mut StdRng) -> Rule {
    let port = rng.random_range(1..=65535u16);
    Rule {
        src: Some((
            mask(IpAddr::from([10, rng.random(), rng.random(), 0]), 24),
            24,
        )),
        dst: None,
        proto: Some([6, 17][rng.random_range(0..2)]),
        sport: None,
        dport: Some((port, port)),
        tcpflags: None,
        ct: None,
        action: [ACT_DROP, ACT_ACCEPT][rng.random_range(0..2)],
    }
}

/// The default configuration's bitset table holds 10,000 such rules (most of their sets
/// hold one rule, named by its id, and take no room in the table), and the kernel, its
/// table sized as the default sizes it, decides as the rule list, also after inserts at the
/// front and deletes. Prints the kernel memory the sets take per 1,000 rules.
#[test]
fn the_default_table_holds_ten_thousand_rules() {
    use statewall_common::{firewall::Bitset, parse::Status};
    let cap = statewall::firewall::config::FirewallConfig::default().bitsets_max;
    let mut rng = StdRng::seed_from_u64(0x10_000);
    let mut rules: Vec<Rule> = (0..10_000).map(|_| host_rule(&mut rng)).collect();
    let chains = chain0(&rules, ACT_ACCEPT);
    let mut t = Tables::new(cap);
    t.set_chains(&chains, &[]).unwrap();
    let sets = t.sets_in_use();
    eprintln!(
        "10,000 rules of the /24-protocol-port shape: {sets} sets in the table of {cap}, {} KB of kernel memory per 1,000 rules",
        sets * std::mem::size_of::<Bitset>() / 10 / 1024
    );
    let mut bed = TestBed::with_sizes(&[(MAP_FW_BITSETS, cap)]);
    bed.fw_iface(1, 0);
    let g = t.write(&mut bed).unwrap();
    let (blocks, direct, fallen) = t.v4_use(g);
    eprintln!(
        "their sources in the default IPv4 direct table: {}",
        if direct > 0 {
            format!("{blocks} KiB a generation ({direct} fields, {fallen} without room)")
        } else {
            "no room, read through the prefix trie".into()
        }
    );
    let mut sent = 0u64;
    for step in 0..6 {
        if step > 0 {
            let e = if step % 2 == 1 {
                let r = host_rule(&mut rng);
                rules.insert(0, r.clone());
                Edit::Insert(0, r)
            } else {
                let i = rng.random_range(0..rules.len());
                rules.remove(i);
                Edit::Delete(i)
            };
            t.edit(0, &[e]).unwrap();
            t.write(&mut bed).unwrap();
        }
        for _ in 0..soak_cases(300) {
            let f = packet_for(&mut rng, &rules);
            let p = parse_packet(&f);
            if p.status != Status::Ip as u8 {
                continue;
            }
            let want = linear(&rules, ACT_ACCEPT, &p, statewall_common::ct::NEW).0;
            assert_eq!(
                bed.run_tc(PROG_FW_INGRESS, &f),
                code(want),
                "step {step}: {p:?}"
            );
            if matches!(want, FwVerdict::Rule(..)) {
                sent += 1;
            }
        }
    }
    assert!(sent > 1000, "only {sent} packets matched a rule");
    common::tally("property: frames matching one of 10,000 rules", sent);
}

/// After a large change, the generation it retired is brought up to date without a
/// switch (`Tables::catch_up`): switched to by hand, it decides as the rule list does. A
/// change after that writes only itself into it, and both generations keep deciding alike.
/// (Without the catch-up, the retired generation still holds the first ruleset.)
#[test]
fn the_retired_generation_catches_up() {
    use statewall_common::firewall::MAP_FW_CTL;
    let mut bed = bed();
    let mut t = Tables::new(BITSETS);
    let mut rng = StdRng::seed_from_u64(0xca_7c40);
    let ruleset = |rng: &mut StdRng, n: usize| -> Vec<Rule> {
        (0..n)
            .map(|_| Rule {
                ct: None,
                ..random_rule(rng)
            })
            .collect()
    };
    let first = ruleset(&mut rng, 400);
    t.set_chains(&chain0(&first, ACT_DROP), &[]).unwrap();
    t.write(&mut bed).unwrap();
    let second = ruleset(&mut rng, 400);
    t.set_chains(&chain0(&second, ACT_ACCEPT), &[]).unwrap();
    t.write(&mut bed).unwrap();
    t.catch_up(&mut bed).unwrap();
    let flip = |bed: &mut TestBed| {
        let mut a: Array<&mut MapData, u32> = bed.map(MAP_FW_CTL).try_into().unwrap();
        let g = a.get(&0, 0).unwrap();
        a.set(0, g ^ 1, 0).unwrap();
    };
    let check = |bed: &mut TestBed, rng: &mut StdRng, rules: &[Rule], default: u8, what: &str| {
        let mut decided = 0;
        for i in 0..300 {
            let f = packet_for(rng, rules);
            let p = parse_packet(&f);
            if p.status != statewall_common::parse::Status::Ip as u8 {
                continue;
            }
            let (want, _) = linear(rules, default, &p, statewall_common::ct::NEW);
            let got = bed.run_tc(PROG_FW_INGRESS, &f);
            assert_eq!(got, code(want), "{what}, packet {i}: {p:?}");
            decided += matches!(want, FwVerdict::Rule(..)) as u32;
        }
        assert!(decided > 100, "{what}: {decided} packets matched a rule");
    };
    check(&mut bed, &mut rng, &second, ACT_ACCEPT, "active generation");
    flip(&mut bed);
    check(
        &mut bed,
        &mut rng,
        &second,
        ACT_ACCEPT,
        "retired generation, caught up",
    );
    flip(&mut bed);
    // One rule in front, written the usual way (into the caught-up generation).
    let mut third = second.clone();
    third.insert(
        0,
        Rule {
            src: None,
            dst: None,
            proto: Some(17),
            sport: None,
            dport: None,
            tcpflags: None,
            ct: None,
            action: ACT_DROP,
        },
    );
    t.edit(0, &[Edit::Insert(0, third[0].clone())]).unwrap();
    t.write(&mut bed).unwrap();
    t.catch_up(&mut bed).unwrap();
    check(&mut bed, &mut rng, &third, ACT_ACCEPT, "after an insert");
    flip(&mut bed);
    check(
        &mut bed,
        &mut rng,
        &third,
        ACT_ACCEPT,
        "after an insert, the other generation",
    );
    flip(&mut bed);
    // An update that moves its rule leaves its old bits for the scrub (written into one
    // generation and switched to, as the daemon does after answering), then the catch-up:
    // both generations decide as the rule list.
    let mut fourth = third.clone();
    fourth[200] = Rule {
        ct: None,
        ..random_rule(&mut rng)
    };
    t.edit(0, &[Edit::Update(200, fourth[200].clone())])
        .unwrap();
    assert!(t.has_stale(), "the update was made in place");
    t.write(&mut bed).unwrap();
    check(&mut bed, &mut rng, &fourth, ACT_ACCEPT, "after an update");
    assert!(t.scrub_all().unwrap());
    t.write(&mut bed).unwrap();
    t.catch_up(&mut bed).unwrap();
    check(&mut bed, &mut rng, &fourth, ACT_ACCEPT, "after the scrub");
    flip(&mut bed);
    check(
        &mut bed,
        &mut rng,
        &fourth,
        ACT_ACCEPT,
        "after the scrub, the other generation",
    );
}

/// Adjacent rules whose positions are the other way round.
fn inversions(t: &Tables) -> usize {
    t.positions(0).windows(2).filter(|w| w[0] > w[1]).count()
}

/// Rules (by their counter id) whose position changed.
fn moved(before: &[(u32, u32)], t: &Tables) -> usize {
    let now: BTreeMap<u32, u32> = t
        .counter_ids(0)
        .iter()
        .copied()
        .zip(t.positions(0).iter().copied())
        .collect();
    before
        .iter()
        .filter(|(id, p)| now.get(id).is_some_and(|q| q != p))
        .count()
}

/// In a chain of 10,000 rules (the positions nearly all taken: no free one between most
/// neighbours), an insert or an update takes a free position past rules it shares no
/// packet with instead of moving rules, and the tables still decide as the rule list read
/// directly, for packets drawn from the rules around each edit. Broad rules (a /8 source,
/// no port) among them force the other ways: a free position between the rules it can share
/// a packet with, or a few rules moved. (With every two rules taken to share a packet,
/// most inserts move rules: the counts below fail.)
#[test]
fn edits_in_a_full_chain_pass_over_rules_they_share_no_packet_with() {
    use statewall_common::parse::Status;
    let mut rng = StdRng::seed_from_u64(0xf0_11ed);
    let broad = |rng: &mut StdRng| Rule {
        ct: None,
        ..random_rule(rng)
    };
    let mut rules: Vec<Rule> = (0..10_000)
        .map(|_| {
            if rng.random_bool(0.03) {
                broad(&mut rng)
            } else {
                host_rule(&mut rng)
            }
        })
        .collect();
    let mut t = Tables::new(1 << 16);
    t.set_chains(&chain0(&rules, ACT_DROP), &[]).unwrap();
    let (mut inserts, mut still, mut checked) = (0, 0, 0u64);
    let mut out_of_order = 0;
    for step in 0..soak_cases(200) {
        let before: Vec<(u32, u32)> = t
            .counter_ids(0)
            .iter()
            .copied()
            .zip(t.positions(0).iter().copied())
            .collect();
        let n = rules.len();
        let i = rng.random_range(0..n);
        let r = if rng.random_bool(0.1) {
            broad(&mut rng)
        } else {
            host_rule(&mut rng)
        };
        // (The chain stays near 10,000 rules: past 10,050, only deletes.)
        let k = if n > 10_050 {
            2
        } else {
            rng.random_range(0..10)
        };
        let e = match k {
            0 | 1 => {
                rules[i] = r.clone();
                Edit::Update(i, r)
            }
            2 => {
                rules.remove(i);
                Edit::Delete(i)
            }
            _ => {
                rules.insert(i, r.clone());
                Edit::Insert(i, r)
            }
        };
        t.edit(0, std::slice::from_ref(&e)).unwrap();
        if matches!(e, Edit::Insert(..)) {
            inserts += 1;
            still += (moved(&before, &t) == 0) as usize;
        }
        out_of_order = out_of_order.max(inversions(&t));
        let near = &rules[i.saturating_sub(8)..(i + 8).min(rules.len())];
        for _ in 0..20 {
            let f = packet_for(&mut rng, near);
            let p = parse_packet(&f);
            if p.status != Status::Ip as u8 {
                continue;
            }
            let ct = statewall_common::ct::NEW;
            let (got, logged) = by_index(&t, &p, ct);
            let (want, want_logged) = linear(&rules, ACT_DROP, &p, ct);
            assert_eq!(got, want, "step {step} after {e:?}: {p:?}");
            assert_eq!(logged, want_logged, "step {step}: LOG rules met");
            checked += 1;
        }
    }
    eprintln!(
        "{still} of {inserts} inserts moved no rule; at most {out_of_order} neighbours out of position order"
    );
    assert!(
        still * 10 >= inserts * 8,
        "only {still} of {inserts} inserts moved no rule"
    );
    assert!(out_of_order > 0, "no rule ever passed over another");
    assert!(checked > 1000, "{checked} packets checked");
    common::tally("property: edits in a full chain", inserts as u64);
}

/// Rules placed out of position order (inserts at the front, past rules they share no
/// packet with, once the room before the first rule is used up) are decided in the kernel
/// as the rule list reads, count their own packets, and a later process that adopts the
/// kernel's tables learns each position's rule from its rank (`SW_FW_RANK`): the counter
/// ids come back in rule order, as the process that wrote them held them. (By position
/// order instead they would not: the check fails.)
#[test]
fn adopted_tables_read_the_rule_order_back_from_the_ranks() {
    use statewall_common::parse::Status;
    let mut bed = bed();
    let mut rng = StdRng::seed_from_u64(0xad_0b7);
    let mut rules: Vec<Rule> = (0..300).map(|_| host_rule(&mut rng)).collect();
    let mut t = Tables::new(BITSETS);
    t.set_chains(&chain0(&rules, ACT_DROP), &[]).unwrap();
    t.write(&mut bed).unwrap();
    for _ in 0..60 {
        let i = rng.random_range(0..3);
        let r = host_rule(&mut rng);
        rules.insert(i, r.clone());
        t.edit(0, &[Edit::Insert(i, r)]).unwrap();
        t.write(&mut bed).unwrap();
    }
    assert!(inversions(&t) > 0, "every rule still in position order");
    let mut counts = vec![0u64; rules.len()];
    let base = fw_counts(&mut bed, &t, rules.len());
    for _ in 0..400 {
        let f = packet_for(&mut rng, &rules[..70]);
        let p = parse_packet(&f);
        if p.status != Status::Ip as u8 {
            continue;
        }
        let (want, _) = linear(&rules, ACT_DROP, &p, statewall_common::ct::NEW);
        assert_eq!(bed.run_tc(PROG_FW_INGRESS, &f), code(want), "{p:?}");
        if let FwVerdict::Rule(i, _) = want {
            counts[i as usize] += 1;
        }
    }
    let got: Vec<u64> = fw_counts(&mut bed, &t, rules.len())
        .iter()
        .zip(&base)
        .map(|(g, b)| g - b)
        .collect();
    assert_eq!(got, counts, "counters");
    assert!(counts.iter().filter(|c| **c > 0).count() > 20);
    let mut again = Tables::new(BITSETS);
    again.adopt(&mut bed).unwrap();
    again.set_chains(&chain0(&rules, ACT_DROP), &[]).unwrap();
    assert_eq!(
        again.counter_ids(0),
        t.counter_ids(0),
        "counter ids adopted"
    );
}

/// The guard that tells user space when no classification reads a retired generation
/// (`SW_FW_GUARD`) leaves each classification with an atomic add, or where the CPU keeps
/// stores after the loads before them (x86, the loader's choice) a plain one: both
/// programs decide as the reference, and after their runs every CPU has left as often as
/// it entered.
#[test]
fn the_guard_balances_with_a_plain_or_an_atomic_exit() {
    use statewall::engine::ebpf::loader_ordered;
    use statewall_common::firewall::{FwGuard, MAP_FW_GUARD};
    let mut sizes = Vec::new();
    for ordered in [false, true] {
        let mut bed = TestBed::with_loader(loader_ordered(ordered), &[(MAP_FW_BITSETS, BITSETS)]);
        bed.fw_iface(1, 0);
        let mut t = Tables::new(BITSETS);
        scenario(0x9a_0000 + ordered as u64, 50, 200, &mut bed, &mut t, false);
        let g: PerCpuArray<&MapData, FwGuard> = (&*bed.map(MAP_FW_GUARD)).try_into().unwrap();
        let per_cpu: Vec<FwGuard> = g.get(&0, 0).unwrap().iter().copied().collect();
        let entered: u64 = per_cpu.iter().map(|c| c.enter).sum();
        assert!(
            entered >= 200,
            "ordered {ordered}: {entered} classifications entered"
        );
        for (cpu, c) in per_cpu.iter().enumerate() {
            assert_eq!(
                c.enter, c.exit,
                "ordered {ordered}, CPU {cpu}: entered {}, left {}",
                c.enter, c.exit
            );
        }
        // The loader's value took: the verifier kept another branch of the exit.
        let prog = bed
            .ebpf
            .program(PROG_FW_INGRESS)
            .expect("the ingress program");
        sizes.push(prog.info().unwrap().size_translated());
    }
    assert!(
        sizes[0].is_some() && sizes[0] != sizes[1],
        "the same program with either exit: {sizes:?} bytes"
    );
}
