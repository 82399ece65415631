//! The gate stage under BPF_PROG_TEST_RUN: every branch, grant expiry by moving the kernel
//! clock (no sleeping), and random packets drawn from the config compared with the
//! reference decision in `statewall_common::gate`, flow table included.

mod common;

use common::soak_cases;
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use proptest::prelude::*;
use statewall::{engine::ebpf::PROG_GATE, engine::ebpf::PROG_XDP_INGRESS};
use statewall_common::{
    gate::{decide, GateTables, GateVerdict},
    maps::GATE_RESET,
    maps::*,
    parse::parse_packet,
    TCX_NEXT, TC_ACT_SHOT, XDP_DROP, XDP_PASS,
};
use statewall_harness::{packet::Packet, testrun::TestBed};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn protect(bed: &mut TestBed, ports: &[(u8, u16)]) {
    let mut a: Array<&mut MapData, u8> = bed.map(MAP_GATE_PORTS).try_into().unwrap();
    let mut summary = 0;
    for &(bit, port) in ports {
        let cur = a.get(&(port as u32), 0).unwrap();
        a.set(port as u32, cur | bit, 0).unwrap();
        summary |= bit;
    }
    a.set(GATE_SUMMARY_SLOT, summary, 0).unwrap();
}

fn key(addr: IpAddr, proto: u8, port: u16) -> GrantKey {
    statewall::daemon::api::grant_key(addr, if proto == 17 { "udp" } else { "tcp" }, port).unwrap()
}

fn grant(bed: &mut TestBed, k: GrantKey, expires_ns: u64) {
    let mut h: BpfHashMap<&mut MapData, GrantKey, GrantValue> =
        bed.map(MAP_GATE_GRANTS).try_into().unwrap();
    h.insert(
        k,
        GrantValue {
            expires_ns,
            origin: GRANT_BY_API,
            _pad: 0,
        },
        0,
    )
    .unwrap();
}

fn counter(bed: &mut TestBed, c: GateCounter) -> u64 {
    let a: PerCpuArray<&MapData, u64> = (&*bed.map(MAP_GATE_STATS)).try_into().unwrap();
    a.get(&(c as u32), 0).unwrap().iter().sum()
}

#[test]
fn protected_ports_need_a_grant_that_expires() {
    let mut bed = TestBed::new();
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let syn22 = Packet::tcp(c, s, 40000, 22, 0x02).build();
    let udp22 = Packet::udp(c, s, 40000, 22).build();
    let syn80 = Packet::tcp(c, s, 40000, 80, 0x02).build();

    // Nothing protected: everything goes on.
    assert_eq!(bed.run_tc(PROG_GATE, &syn22), TCX_NEXT);
    protect(&mut bed, &[(GATE_TCP, 22)]);
    assert_eq!(
        bed.run_tc(PROG_GATE, &syn22),
        TC_ACT_SHOT,
        "protected TCP port without grant"
    );
    assert_eq!(
        bed.run_tc(PROG_GATE, &udp22),
        TCX_NEXT,
        "UDP 22 is not protected"
    );
    assert_eq!(
        bed.run_tc(PROG_GATE, &syn80),
        TCX_NEXT,
        "port 80 is not protected"
    );
    assert_eq!(bed.run_xdp(PROG_XDP_INGRESS, &syn22), XDP_DROP);
    assert_eq!(bed.run_xdp(PROG_XDP_INGRESS, &syn80), XDP_PASS);

    let now = bed.kernel_now();
    grant(&mut bed, key(c, 6, 22), now + 30_000_000_000);
    assert_eq!(bed.run_tc(PROG_GATE, &syn22), TCX_NEXT, "granted source");
    assert_eq!(bed.run_xdp(PROG_XDP_INGRESS, &syn22), XDP_PASS);
    let other = Packet::tcp(ip("10.0.0.9"), s, 40000, 22, 0x02).build();
    assert_eq!(
        bed.run_tc(PROG_GATE, &other),
        TC_ACT_SHOT,
        "a grant is per source"
    );

    bed.advance(Duration::from_secs(29));
    assert_eq!(
        bed.run_tc(PROG_GATE, &syn22),
        TCX_NEXT,
        "one second before expiry"
    );
    bed.advance(Duration::from_secs(2));
    assert_eq!(bed.run_tc(PROG_GATE, &syn22), TC_ACT_SHOT, "expired grant");
    assert!(counter(&mut bed, GateCounter::Granted) >= 3);
    assert!(counter(&mut bed, GateCounter::Dropped) >= 4);
}

#[test]
fn fragments_malformed_and_ipv6() {
    let mut bed = TestBed::new();
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let (c6, s6) = (ip("fd00::1"), ip("fd00::2"));
    let frag = Packet::udp(c, s, 1, 9922)
        .payload(&[0; 16])
        .fragment(2, false)
        .build();
    let frag_tcp = Packet::tcp(c, s, 1, 9922, 0)
        .payload(&[0; 16])
        .fragment(2, false)
        .build();
    let mut bad = Packet::udp(c, s, 1, 9922).build();
    bad[14] = 0x44; // IHL 4
    let arp = statewall_harness::packet::non_ip(0x0806);

    // Before anything is protected, the gate is inert.
    for f in [&frag, &bad, &arp] {
        assert_eq!(bed.run_tc(PROG_GATE, f), TCX_NEXT);
    }
    protect(&mut bed, &[(GATE_UDP, 9922)]);
    assert_eq!(
        bed.run_tc(PROG_GATE, &frag),
        TC_ACT_SHOT,
        "UDP non-first fragment while a UDP port is protected"
    );
    assert_eq!(
        bed.run_tc(PROG_GATE, &frag_tcp),
        TCX_NEXT,
        "TCP fragments: no TCP port protected"
    );
    assert_eq!(
        bed.run_tc(PROG_GATE, &bad),
        TC_ACT_SHOT,
        "malformed IP while something is protected"
    );
    assert_eq!(bed.run_tc(PROG_GATE, &arp), TCX_NEXT, "non-IP passes");
    assert!(counter(&mut bed, GateCounter::Malformed) >= 1);

    let u6 = Packet::udp(c6, s6, 5, 9922).ipv6_ext(0, 0).build();
    assert_eq!(bed.run_tc(PROG_GATE, &u6), TC_ACT_SHOT);
    let now = bed.kernel_now();
    grant(&mut bed, key(c6, 17, 9922), now + 5_000_000_000);
    assert_eq!(bed.run_tc(PROG_GATE, &u6), TCX_NEXT, "IPv6 grant");
    let v4 = Packet::udp(c, s, 5, 9922).build();
    assert_eq!(
        bed.run_tc(PROG_GATE, &v4),
        TC_ACT_SHOT,
        "the IPv6 grant does not cover IPv4"
    );
}

fn set_conf(bed: &mut TestBed, c: GateConf) {
    let mut a: Array<&mut MapData, GateConf> = bed.map(MAP_GATE_CONF).try_into().unwrap();
    a.set(0, c, 0).unwrap();
}

fn kernel_flows(bed: &mut TestBed) -> BTreeMap<FlowKey, FlowValue> {
    let h: BpfHashMap<&MapData, FlowKey, FlowValue> =
        (&*bed.map(MAP_GATE_FLOWS)).try_into().unwrap();
    h.iter().map(|r| r.unwrap()).collect()
}

const SECOND: u64 = 1_000_000_000;

fn conf(tcp: u64, closing: u64, udp: u64) -> GateConf {
    GateConf {
        tcp_idle_ns: tcp * SECOND,
        tcp_closing_ns: closing * SECOND,
        udp_idle_ns: udp * SECOND,
    }
}

/// A connection opened under a grant outlives it until idle; a new connection needs a
/// grant; FIN shortens the idle timeout; with tracking off, connections die with the grant.
#[test]
fn flows_opened_under_a_grant_outlive_it() {
    let mut bed = TestBed::new();
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    protect(&mut bed, &[(GATE_TCP, 22), (GATE_UDP, 53)]);
    set_conf(&mut bed, conf(100, 5, 20));
    let syn = Packet::tcp(c, s, 40000, 22, 0x02).build();
    let ack = Packet::tcp(c, s, 40000, 22, 0x10).build();
    let syn_other = Packet::tcp(c, s, 40001, 22, 0x02).build();
    let ack_other = Packet::tcp(c, s, 40001, 22, 0x10).build();
    let fin = Packet::tcp(c, s, 40000, 22, 0x11).build();
    let udp = Packet::udp(c, s, 5000, 53).build();
    let t0 = bed.kernel_now();
    bed.freeze(t0);
    grant(&mut bed, key(c, 6, 22), t0 + 10 * SECOND);
    grant(&mut bed, key(c, 17, 53), t0 + 10 * SECOND);
    assert_eq!(bed.run_tc(PROG_GATE, &syn), TCX_NEXT, "granted SYN");
    assert_eq!(bed.run_tc(PROG_GATE, &udp), TCX_NEXT, "granted UDP");
    assert_eq!(kernel_flows(&mut bed).len(), 2, "both flows recorded");

    // The grant has ended: the connection goes on, a new one is refused.
    bed.freeze(t0 + 60 * SECOND);
    assert_eq!(bed.run_tc(PROG_GATE, &ack), TCX_NEXT, "established flow");
    assert_eq!(
        bed.run_tc(PROG_GATE, &ack_other),
        TC_ACT_SHOT,
        "unknown flow"
    );
    assert_eq!(
        bed.run_tc(PROG_GATE, &syn_other),
        TC_ACT_SHOT,
        "new connection"
    );
    assert_eq!(
        bed.run_tc(PROG_GATE, &syn),
        TC_ACT_SHOT,
        "a SYN on the flow's 5-tuple"
    );
    assert_eq!(
        bed.run_tc(PROG_GATE, &udp),
        TC_ACT_SHOT,
        "UDP idled out after 20 s"
    );
    assert_eq!(counter(&mut bed, GateCounter::Flow), 1);

    // Each packet pushes the expiry: 90 s later still alive (idle 100 s).
    bed.freeze(t0 + 150 * SECOND);
    assert_eq!(bed.run_tc(PROG_GATE, &ack), TCX_NEXT, "90 s idle < 100 s");
    // FIN: the closing timeout (5 s) applies from now on.
    assert_eq!(bed.run_tc(PROG_GATE, &fin), TCX_NEXT, "FIN of the flow");
    bed.freeze(t0 + 154 * SECOND);
    assert_eq!(bed.run_tc(PROG_GATE, &ack), TCX_NEXT, "last ACK within 5 s");
    bed.freeze(t0 + 160 * SECOND);
    assert_eq!(
        bed.run_tc(PROG_GATE, &ack),
        TC_ACT_SHOT,
        "closed flow idled out"
    );
    assert!(
        kernel_flows(&mut bed).len() <= 1,
        "the idle TCP flow was deleted on sight"
    );

    // Tracking off: a connection lives only as long as its grant.
    set_conf(&mut bed, conf(0, 0, 0));
    grant(&mut bed, key(c, 6, 22), t0 + 170 * SECOND);
    assert_eq!(bed.run_tc(PROG_GATE, &syn_other), TCX_NEXT);
    bed.freeze(t0 + 171 * SECOND);
    assert_eq!(
        bed.run_tc(PROG_GATE, &ack_other),
        TC_ACT_SHOT,
        "no tracking"
    );
}

/// A full flow table: the granted connection opens, is counted, and dies with its grant;
/// recorded flows are never evicted.
#[test]
fn full_flow_table_fails_closed() {
    let mut bed = TestBed::with_sizes(&[(MAP_GATE_FLOWS, 2)]);
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    protect(&mut bed, &[(GATE_TCP, 22)]);
    set_conf(&mut bed, conf(100, 5, 20));
    let t0 = bed.kernel_now();
    bed.freeze(t0);
    grant(&mut bed, key(c, 6, 22), t0 + 10 * SECOND);
    for sport in [1000, 1001, 1002] {
        let syn = Packet::tcp(c, s, sport, 22, 0x02).build();
        assert_eq!(bed.run_tc(PROG_GATE, &syn), TCX_NEXT, "granted SYN {sport}");
    }
    assert_eq!(counter(&mut bed, GateCounter::FlowsFull), 1);
    bed.freeze(t0 + 30 * SECOND);
    for (sport, want) in [(1000, TCX_NEXT), (1001, TCX_NEXT), (1002, TC_ACT_SHOT)] {
        let ack = Packet::tcp(c, s, sport, 22, 0x10).build();
        assert_eq!(bed.run_tc(PROG_GATE, &ack), want, "flow from port {sport}");
    }
}

/// The reference's tables over plain maps.
struct Ref<'a> {
    summary: u8,
    table: &'a [u8],
    grants: &'a HashMap<GrantKey, u64>,
    conf: GateConf,
    flows: BTreeMap<FlowKey, FlowValue>,
    cap: usize,
}

impl GateTables for Ref<'_> {
    fn any_protected(&self, bits: u8) -> bool {
        self.summary & bits != 0
    }
    fn port_bits(&self, port: u16) -> u8 {
        self.table[port as usize]
    }
    fn grant_expiry(&self, k: &GrantKey) -> Option<u64> {
        self.grants.get(k).copied()
    }
    fn conf(&self) -> GateConf {
        self.conf
    }
    fn flow(&self, k: &FlowKey) -> Option<FlowValue> {
        self.flows.get(k).copied()
    }
    fn put_flow(&mut self, k: &FlowKey, v: &FlowValue) -> bool {
        if !self.flows.contains_key(k) && self.flows.len() >= self.cap {
            return false;
        }
        self.flows.insert(*k, *v);
        true
    }
    fn del_flow(&mut self, k: &FlowKey) {
        self.flows.remove(k);
    }
}

/// One packet of a scenario (see [`Scenario::packets`]).
type ScPacket = (usize, usize, u16, u8, bool, Option<u64>, u64, Shape);

/// What a packet is sent to and how: most are plain; the others are never answered.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Plain,
    /// IPv4 options or an IPv6 destination-options header before the L4 header.
    Options,
    /// To the multicast address 224.0.0.251 or ff02::fb.
    Multicast,
    /// To the limited broadcast 255.255.255.255 (IPv6: ff02::1).
    Broadcast,
    /// To a group MAC (the address is the server's).
    GroupMac,
}

/// The config under test: a few protected ports and grants; packets are drawn mostly from
/// them so that most exercise a rule.
#[derive(Debug, Clone)]
struct Scenario {
    ports: Vec<(u8, u16)>,
    sources: Vec<IpAddr>,
    grants: Vec<(usize, usize, i64)>, // (source, port index, seconds from now, maybe past)
    /// Flow timeouts (TCP idle, closing, UDP idle), seconds; 0 = off.
    timeouts: (u64, u64, u64),
    /// (source, port idx, source port, tcp flags, fragment, damage by the malformed-frame
    /// generator with this seed, seconds before it, shape)
    packets: Vec<ScPacket>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(
            (
                prop_oneof![Just(GATE_TCP), Just(GATE_UDP), Just(GATE_TCP | GATE_RESET), Just(GATE_UDP | GATE_UNREACH)],
                1u16..2000,
            ),
            1..6,
        ),
        proptest::collection::vec(
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from)
            ],
            1..4,
        ),
        prop_oneof![
            1 => Just((0u64, 0u64, 0u64)),
            4 => (1u64..40, 1u64..10, 0u64..30)
        ],
    )
        .prop_flat_map(|(ports, sources, timeouts)| {
            let (np, ns) = (ports.len(), sources.len());
            (
                Just(ports),
                Just(sources),
                proptest::collection::vec((0..ns, 0..np + 1, prop_oneof![-10i64..60, 5i64..30]), 0..10),
                Just(timeouts),
                proptest::collection::vec(
                    (
                        0..ns,
                        0..np + 1,
                        1234u16..1237,
                        prop_oneof![2 => Just(0x02u8), 4 => Just(0x10), 1 => Just(0x11), 1 => Just(0x14), 1 => any::<u8>()],
                        proptest::bool::weighted(0.1),
                        proptest::option::weighted(0.08, any::<u64>()),
                        prop_oneof![Just(0u64), 0u64..3, 0u64..20],
                        prop_oneof![
                            12 => Just(Shape::Plain),
                            1 => Just(Shape::Options),
                            1 => Just(Shape::Multicast),
                            1 => Just(Shape::Broadcast),
                            1 => Just(Shape::GroupMac),
                        ],
                    ),
                    10..80,
                ),
            )
        })
        .prop_map(|(ports, sources, grants, timeouts, packets)| Scenario {
            ports,
            sources,
            grants,
            timeouts,
            packets,
        })
}

/// A small flow table, so that scenarios fill it.
const FLOWS_CAP: u32 = 3;

/// Verdict kinds seen over all cases: the test fails unless each was hit.
static SEEN: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
/// Packets of each [`Shape`] over all cases.
static SHAPES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Refusals of a reset or unreachable port that were not answered, by shape.
static UNANSWERED: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Frames damaged by each kind of the malformed-frame generator, over all cases.
static DAMAGE: [AtomicU64; statewall_harness::packet::MALFORM_KINDS.len()] =
    [const { AtomicU64::new(0) }; statewall_harness::packet::MALFORM_KINDS.len()];

#[test]
fn kernel_gate_equals_reference() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: soak_cases(200),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner.run(&scenario(), check).unwrap();
    let seen: Vec<u64> = SEEN.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    eprintln!(
        "verdicts (next, granted, untracked, flow, drop, malformed, reset, unreachable): {seen:?}"
    );
    common::tally(
        "property: gate frames, kernel = reference",
        seen.iter().sum(),
    );
    assert!(seen.iter().all(|&n| n > 0), "every verdict hit: {seen:?}");
    let shapes: Vec<u64> = SHAPES.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let unanswered: Vec<u64> = UNANSWERED
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    eprintln!("shapes (plain, options, multicast, broadcast, group MAC): {shapes:?}, refusals of an answering port left unanswered: {unanswered:?}");
    assert!(
        unanswered[1..].iter().all(|&n| n > 0),
        "each shape that is never answered was refused on an answering port: {unanswered:?}"
    );
    let damage: Vec<u64> = DAMAGE.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    common::tally("property: malformed frames among them", damage.iter().sum());
    // (The frames carry no payload to empty: no "zero-length payload".)
    let zero = statewall_harness::packet::MALFORM_KINDS
        .iter()
        .position(|k| *k == "zero-length payload");
    assert!(
        damage
            .iter()
            .enumerate()
            .all(|(i, &n)| n > 0 || Some(i) == zero),
        "every kind of damage {:?} tried: {damage:?}",
        statewall_harness::packet::MALFORM_KINDS
    );
}

fn check(sc: Scenario) -> Result<(), TestCaseError> {
    // One bed for every case, emptied before each: its program stays verified.
    thread_local!(static BED: std::cell::RefCell<TestBed> =
        std::cell::RefCell::new(TestBed::with_sizes(&[(MAP_GATE_FLOWS, FLOWS_CAP)])));
    BED.with(|b| -> Result<(), TestCaseError> {
        let mut guard = b.borrow_mut();
        let bed: &mut TestBed = &mut guard;
        bed.reset();
        protect(bed, &sc.ports);
        let (tcp, closing, udp) = sc.timeouts;
        set_conf(bed, conf(tcp, closing, udp));
        let mut now = bed.kernel_now();
        bed.freeze(now);
        let port_of = |i: usize| sc.ports.get(i).map(|p| p.1).unwrap_or(4242);
        let mut grants: HashMap<GrantKey, u64> = HashMap::new();
        for &(si, pi, secs) in &sc.grants {
            let proto = if sc.ports.get(pi).is_some_and(|p| p.0 & GATE_UDP != 0) {
                17
            } else {
                6
            };
            let k = key(sc.sources[si], proto, port_of(pi));
            let exp = (now as i64 + secs * 1_000_000_000) as u64;
            grant(bed, k, exp);
            grants.insert(k, exp);
        }
        let mut table = vec![0u8; 65536];
        for &(b, p) in &sc.ports {
            table[p as usize] |= b;
        }
        let summary = table.iter().fold(0, |a, b| a | b);
        let mut r = Ref {
            summary,
            table: &table,
            grants: &grants,
            conf: conf(tcp, closing, udp),
            flows: BTreeMap::new(),
            cap: FLOWS_CAP as usize,
        };
        let server = |src: &IpAddr| {
            if src.is_ipv4() {
                ip("192.0.2.1")
            } else {
                ip("2001:db8::1")
            }
        };
        for &(si, pi, sport, flags, frag, mangle, dt, shape) in &sc.packets {
            now += dt * SECOND;
            bed.freeze(now);
            let src = sc.sources[si];
            let udp = sc.ports.get(pi).is_some_and(|p| p.0 & GATE_UDP != 0);
            let dst = match (shape, src.is_ipv4()) {
                (Shape::Multicast, true) => ip("224.0.0.251"),
                (Shape::Multicast, false) => ip("ff02::fb"),
                (Shape::Broadcast, true) => ip("255.255.255.255"),
                (Shape::Broadcast, false) => ip("ff02::1"),
                _ => server(&src),
            };
            let mut p = if udp {
                Packet::udp(src, dst, sport, port_of(pi))
            } else {
                Packet::tcp(src, dst, sport, port_of(pi), flags)
            };
            if let Shape::Options = shape {
                p = if src.is_ipv4() {
                    p.ipv4_options(&[1, 1, 1, 0])
                } else {
                    p.ipv6_ext(60, 0)
                };
            }
            if frag {
                p = p.fragment(3, false);
            }
            let mut f = p.build();
            if let Shape::GroupMac = shape {
                f[0] |= 1;
            }
            SHAPES[shape as usize].fetch_add(1, Ordering::Relaxed);
            if let Some(r) = mangle {
                let (kind, g) = statewall_harness::packet::malform(&f, r);
                let k = statewall_harness::packet::MALFORM_KINDS
                    .iter()
                    .position(|k| *k == kind);
                DAMAGE[k.unwrap()].fetch_add(1, Ordering::Relaxed);
                f = g;
            }
            let info = parse_packet(&f);
            let want = decide(&info, now, &mut r);
            let answering = if udp { GATE_UNREACH } else { GATE_RESET };
            if want == GateVerdict::Drop
                && info.flags & statewall_common::parse::FLAG_L4 != 0
                && table[info.dport as usize] & answering != 0
                && (udp || statewall_common::gate::opens_connection(6, info.tcp_flags))
            {
                UNANSWERED[shape as usize].fetch_add(1, Ordering::Relaxed);
            }
            if info.status == statewall_common::parse::Status::Malformed as u8 {
                // As documented: a gate that protects ports drops malformed IP (fail closed).
                prop_assert_eq!(want, GateVerdict::DropMalformed);
            }
            let (got, out) = bed.run_out(PROG_GATE, false, &f);
            let want_code = match want {
                GateVerdict::Next
                | GateVerdict::Granted
                | GateVerdict::GrantedUntracked
                | GateVerdict::Flow => TCX_NEXT,
                GateVerdict::Reset | GateVerdict::Unreachable => TC_ACT_REDIRECT,
                _ => TC_ACT_SHOT,
            };
            if got == TC_ACT_REDIRECT {
                if want == GateVerdict::Unreachable {
                    check_unreach(&f, &out);
                } else {
                    check_reset(&f, &out);
                }
            }
            SEEN[match want {
                GateVerdict::Next => 0,
                GateVerdict::Granted => 1,
                GateVerdict::GrantedUntracked => 2,
                GateVerdict::Flow => 3,
                GateVerdict::Drop => 4,
                GateVerdict::DropMalformed => 5,
                GateVerdict::Reset => 6,
                GateVerdict::Unreachable => 7,
            }]
            .fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!(got, want_code, "packet {:?} -> reference {:?}", info, want);
            prop_assert_eq!(&kernel_flows(bed), &r.flows, "flow table after {:?}", info);
        }
        Ok(())
    })
}

/// tc verdict of `bpf_redirect`.
const TC_ACT_REDIRECT: i32 = 7;

/// Internet checksum of `b` plus `extra` (16-bit words, big-endian): 0 when valid.
fn csum(b: &[u8], extra: u64) -> u16 {
    let mut s = extra;
    for c in b.chunks(2) {
        s += (c[0] as u64) << 8 | *c.get(1).unwrap_or(&0) as u64;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The frame the gate sent back for a refused SYN is its reset, checked field by field
/// with the twin parser and checksums computed here.
fn check_reset(syn: &[u8], out: &[u8]) {
    let s = parse_packet(syn);
    let r = parse_packet(out);
    assert_eq!(
        &out[0..6],
        &syn[6..12],
        "destination MAC = the SYN's source"
    );
    assert_eq!(&out[6..12], &syn[0..6]);
    assert_eq!((r.saddr, r.daddr), (s.daddr, s.saddr), "addresses swapped");
    assert_eq!((r.sport, r.dport), (s.dport, s.sport), "ports swapped");
    assert_eq!(r.l4proto, 6);
    assert_eq!(r.tcp_flags, 0x14, "RST|ACK");
    assert_eq!(r.tcp_seq, 0);
    assert_eq!(r.tcp_ack, s.tcp_seq.wrapping_add(1 + s.payload_len as u32));
    assert_eq!(r.payload_len, 0);
    assert_eq!(out.len(), r.l4_off as usize + 20, "trimmed to the headers");
    let (l3, l4) = (r.l3_off as usize, r.l4_off as usize);
    let alen = if r.family == 6 { 16 } else { 4 };
    let mut pseudo = 6u64 + 20;
    for a in [&r.saddr[..alen], &r.daddr[..alen]] {
        for c in a.chunks(2) {
            pseudo += (c[0] as u64) << 8 | c[1] as u64;
        }
    }
    assert_eq!(csum(&out[l4..l4 + 20], pseudo), 0, "TCP checksum");
    if r.family != 6 {
        assert_eq!(csum(&out[l3..l3 + 20], 0), 0, "IPv4 header checksum");
    }
}

/// The frame the gate sent back for a refused UDP packet is an ICMP (ICMPv6) port
/// unreachable quoting it, checked field by field with checksums computed here.
fn check_unreach(udp: &[u8], out: &[u8]) {
    let s = parse_packet(udp);
    let r = parse_packet(out);
    assert_eq!(
        &out[0..6],
        &udp[6..12],
        "destination MAC = the packet's source"
    );
    assert_eq!(&out[6..12], &udp[0..6]);
    assert_eq!((r.saddr, r.daddr), (s.daddr, s.saddr), "addresses swapped");
    let v6 = r.family == 6;
    assert_eq!(r.l4proto, if v6 { 58 } else { 1 });
    assert_eq!(
        (r.icmp_type, r.icmp_code),
        if v6 { (1, 4) } else { (3, 3) },
        "port unreachable"
    );
    let (l3, l4) = (r.l3_off as usize, r.l4_off as usize);
    let quote = if v6 { 48 } else { 28 };
    assert_eq!(out.len(), l4 + 8 + quote, "headers and the quote");
    assert_eq!(
        &out[l4 + 8..],
        &udp[s.l3_off as usize..s.l3_off as usize + quote],
        "the quote is the packet's IP header and UDP header"
    );
    let mut pseudo = 0u64;
    if v6 {
        pseudo = 58 + (8 + quote) as u64;
        for a in [&r.saddr[..], &r.daddr[..]] {
            for c in a.chunks(2) {
                pseudo += (c[0] as u64) << 8 | c[1] as u64;
            }
        }
    } else {
        assert_eq!(csum(&out[l3..l3 + 20], 0), 0, "IPv4 header checksum");
    }
    assert_eq!(csum(&out[l4..], pseudo), 0, "ICMP checksum");
}

/// A refused UDP packet to a port whose style is unreachable is answered with an ICMP
/// port unreachable (tc and XDP, IPv4 and IPv6); a port without the style drops; answers
/// stop when the ICMP bucket is empty (counted) and start again as time refills it.
#[test]
fn refused_udp_gets_a_port_unreachable_within_its_bucket() {
    let mut bed = TestBed::new();
    protect(&mut bed, &[(GATE_UDP | GATE_UNREACH, 53), (GATE_UDP, 54)]);
    let xdp_tx = 3;
    for (c, s) in [
        (ip("10.0.0.1"), ip("10.0.0.2")),
        (ip("2001:db8::1"), ip("2001:db8::2")),
    ] {
        let pkt = Packet::udp(c, s, 40000, 53).payload(b"a question").build();
        let (v, out) = bed.run_out(PROG_GATE, false, &pkt);
        assert_eq!(v, TC_ACT_REDIRECT, "{c}");
        check_unreach(&pkt, &out);
        let (v, out) = bed.run_out(statewall::engine::ebpf::PROG_XDP_INGRESS, true, &pkt);
        assert_eq!(v, xdp_tx, "{c}");
        check_unreach(&pkt, &out);
        let other = Packet::udp(c, s, 40000, 54).build();
        assert_eq!(bed.run_tc(PROG_GATE, &other), TC_ACT_SHOT);
    }
    // A bucket of 3 answers, one more per millisecond of kernel time.
    let now = bed.kernel_now();
    bed.freeze(now);
    {
        let mut a: Array<&mut MapData, GateLimits> = bed.map(MAP_GATE_LIMITS).try_into().unwrap();
        let l = GateLimits {
            icmp_interval_ns: 1_000_000,
            icmp_burst: 3,
            ..GateLimits::default()
        };
        a.set(0, l, 0).unwrap();
    }
    let pkt = Packet::udp(ip("10.0.0.1"), ip("10.0.0.2"), 40000, 53).build();
    let answered = |bed: &mut TestBed, n: usize| {
        (0..n)
            .filter(|_| bed.run_tc(PROG_GATE, &pkt) == TC_ACT_REDIRECT)
            .count()
    };
    assert_eq!(answered(&mut bed, 10), 3, "the burst, then drops");
    let limited = counter(&mut bed, GateCounter::UnreachableLimited);
    assert_eq!(limited, 7);
    bed.freeze(now + 2_000_000);
    assert_eq!(answered(&mut bed, 10), 2, "two more after two milliseconds");
    bed.freeze(now + 1_000_000_000);
    assert_eq!(answered(&mut bed, 10), 3, "never more than the burst");
}

/// A refused SYN to a port whose style is reset is answered (tc: redirected back out of
/// the interface; XDP: XDP_TX) over IPv4 and IPv6, options trimmed; a port without the
/// style still drops, and a frame with IPv4 options is dropped rather than answered.
#[test]
fn refused_syn_gets_a_reset_on_tc_and_xdp() {
    let mut bed = TestBed::new();
    protect(&mut bed, &[(GATE_TCP | GATE_RESET, 22), (GATE_TCP, 23)]);
    let xdp_tx = 3;
    for (c, s) in [
        (ip("10.0.0.1"), ip("10.0.0.2")),
        (ip("2001:db8::1"), ip("2001:db8::2")),
    ] {
        let syn = Packet::tcp(c, s, 40000, 22, 0x02).payload(b"data").build();
        let (v, out) = bed.run_out(PROG_GATE, false, &syn);
        assert_eq!(v, TC_ACT_REDIRECT, "{c}");
        check_reset(&syn, &out);
        let (v, out) = bed.run_out(statewall::engine::ebpf::PROG_XDP_INGRESS, true, &syn);
        assert_eq!(v, xdp_tx, "{c}");
        check_reset(&syn, &out);
        let other = Packet::tcp(c, s, 40000, 23, 0x02).build();
        assert_eq!(bed.run_tc(PROG_GATE, &other), TC_ACT_SHOT);
        // Not a SYN: no reset, a drop.
        let ack = Packet::tcp(c, s, 40000, 22, 0x10).build();
        assert_eq!(bed.run_tc(PROG_GATE, &ack), TC_ACT_SHOT);
    }
    let opts = Packet::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 40000, 22, 0x02)
        .ipv4_options(&[1, 1, 1, 1])
        .build();
    assert_eq!(bed.run_tc(PROG_GATE, &opts), TC_ACT_SHOT);
}
