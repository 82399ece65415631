//! The gate stage under BPF_PROG_TEST_RUN: every branch, grant expiry by moving the kernel
//! clock (no sleeping), and random packets drawn from the config compared with the
//! reference decision in `statewall_common::gate`.

mod common;

use common::soak_cases;
use std::{collections::HashMap, net::IpAddr, time::Duration};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use proptest::prelude::*;
use statewall::{ebpf::PROG_GATE, ebpf::PROG_XDP_INGRESS, packet::Packet, testrun::TestBed};
use statewall_common::{
    gate::{decide, GateVerdict},
    maps::*,
    parse::parse_packet,
    TCX_NEXT, TC_ACT_SHOT, XDP_DROP, XDP_PASS,
};

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
    statewall::api::grant_key(addr, if proto == 17 { "udp" } else { "tcp" }, port).unwrap()
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
    let arp = statewall::packet::non_ip(0x0806);

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

/// The config under test: a few protected ports and grants; packets are drawn mostly from
/// them so that most exercise a rule.
#[derive(Debug, Clone)]
struct Scenario {
    ports: Vec<(u8, u16)>,
    sources: Vec<IpAddr>,
    grants: Vec<(usize, usize, i64)>, // (source, port index, seconds from now, maybe past)
    packets: Vec<(usize, usize, u8, bool, bool)>, // (source, port idx, tcp flags, fragment, mangle)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(
            (prop_oneof![Just(GATE_TCP), Just(GATE_UDP)], 1u16..2000),
            1..6,
        ),
        proptest::collection::vec(
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from)
            ],
            1..5,
        ),
    )
        .prop_flat_map(|(ports, sources)| {
            let (np, ns) = (ports.len(), sources.len());
            (
                Just(ports),
                Just(sources),
                proptest::collection::vec((0..ns, 0..np + 1, -10i64..60), 0..6),
                proptest::collection::vec(
                    (
                        0..ns,
                        0..np + 1,
                        any::<u8>(),
                        proptest::bool::weighted(0.1),
                        proptest::bool::weighted(0.05),
                    ),
                    1..40,
                ),
            )
        })
        .prop_map(|(ports, sources, grants, packets)| Scenario {
            ports,
            sources,
            grants,
            packets,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: soak_cases(200), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn kernel_gate_equals_reference(sc in scenario()) {
        let mut bed = TestBed::new();
        protect(&mut bed, &sc.ports);
        let now = bed.kernel_now();
        let port_of = |i: usize| sc.ports.get(i).map(|p| p.1).unwrap_or(4242);
        let mut grants: HashMap<GrantKey, u64> = HashMap::new();
        for &(si, pi, secs) in &sc.grants {
            let proto = if sc.ports.get(pi).map(|p| p.0) == Some(GATE_UDP) { 17 } else { 6 };
            let k = key(sc.sources[si], proto, port_of(pi));
            let exp = (now as i64 + secs * 1_000_000_000) as u64;
            grant(&mut bed, k, exp);
            grants.insert(k, exp);
        }
        let mut table = vec![0u8; 65536];
        for &(b, p) in &sc.ports { table[p as usize] |= b; }
        let summary = table.iter().fold(0, |a, b| a | b);
        let server = |src: &IpAddr| if src.is_ipv4() { ip("192.0.2.1") } else { ip("2001:db8::1") };
        for &(si, pi, flags, frag, mangle) in &sc.packets {
            let src = sc.sources[si];
            let udp = sc.ports.get(pi).map(|p| p.0) == Some(GATE_UDP);
            let mut p = if udp {
                Packet::udp(src, server(&src), 1234, port_of(pi))
            } else {
                Packet::tcp(src, server(&src), 1234, port_of(pi), flags)
            };
            if frag { p = p.fragment(3, false); }
            let mut f = p.build();
            if mangle { let n = f.len(); f[n / 2] ^= 0xff; f.truncate(n - 3); }
            let info = parse_packet(&f);
            let t = bed.kernel_now();
            let want = decide(&info, t, |b| summary & b != 0, |port| table[port as usize], |k| grants.get(k).copied());
            let got = bed.run_tc(PROG_GATE, &f);
            let want_code = match want { GateVerdict::Next | GateVerdict::Granted => TCX_NEXT, _ => TC_ACT_SHOT };
            prop_assert_eq!(got, want_code, "packet {:?} -> reference {:?}", info, want);
        }
    }
}
