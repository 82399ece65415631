//! The kernel parser (tc and XDP flavours, run with BPF_PROG_TEST_RUN) against its
//! user-side twin: equal results on a corpus of crafted frames, on every truncation of each,
//! and on random frames and byte mutations.

mod common;

use common::soak_cases;
use std::net::IpAddr;

use proptest::prelude::*;
use statewall_common::parse::{
    parse_packet, PacketInfo, Status, FLAG_FRAG, FLAG_L4, FLAG_NONFIRST_FRAG, MAX_IPV6_EXT,
};
use statewall_harness::{
    packet::{fragments, non_ip, Packet, L4},
    testrun::TestBed,
};

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let (a, b) = (v4("192.0.2.1"), v4("198.51.100.7"));
    let (a6, b6) = (v4("2001:db8::1"), v4("2001:db8:1::2"));
    let mut c: Vec<(String, Vec<u8>)> = vec![
        ("tcp syn".into(), Packet::tcp(a, b, 40000, 22, 0x02).build()),
        (
            "tcp with payload".into(),
            Packet::tcp(a, b, 1, 80, 0x18)
                .payload(b"GET / HTTP/1.0\r\n")
                .build(),
        ),
        (
            "udp".into(),
            Packet::udp(a, b, 5353, 9922).payload(b"p1").build(),
        ),
        ("udp empty".into(), Packet::udp(a, b, 1, 2).build()),
        ("icmp echo".into(), Packet::echo_request(a, b, 77).build()),
        (
            "icmp unreachable".into(),
            Packet::new(
                a,
                b,
                L4::Icmp {
                    ty: 3,
                    code: 3,
                    id: 0,
                    seq: 0,
                },
            )
            .build(),
        ),
        (
            "gre".into(),
            Packet::new(a, b, L4::Raw(47)).payload(&[0; 12]).build(),
        ),
        (
            "ipv4 options".into(),
            Packet::tcp(a, b, 1, 22, 2)
                .ipv4_options(&[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0])
                .build(),
        ),
        (
            "ipv4 max options".into(),
            Packet::udp(a, b, 1, 22).ipv4_options(&[1; 40]).build(),
        ),
        (
            "ipv4 first fragment".into(),
            Packet::udp(a, b, 1, 9922)
                .payload(&[1; 30])
                .fragment(0, true)
                .build(),
        ),
        (
            "ipv4 non-first fragment".into(),
            Packet::udp(a, b, 1, 9922)
                .payload(&[1; 30])
                .fragment(3, false)
                .build(),
        ),
        (
            "vlan".into(),
            Packet::tcp(a, b, 1, 22, 2).vlan(0x8100, 100).build(),
        ),
        (
            "qinq".into(),
            Packet::tcp(a, b, 1, 22, 2)
                .vlan(0x88a8, 10)
                .vlan(0x8100, 20)
                .build(),
        ),
        (
            "three vlan tags".into(),
            Packet::tcp(a, b, 1, 22, 2)
                .vlan(0x88a8, 1)
                .vlan(0x8100, 2)
                .vlan(0x8100, 3)
                .build(),
        ),
        ("tcp6".into(), Packet::tcp(a6, b6, 1000, 22, 2).build()),
        (
            "udp6".into(),
            Packet::udp(a6, b6, 1000, 9922).payload(b"x").build(),
        ),
        ("icmp6 echo".into(), Packet::echo_request(a6, b6, 5).build()),
        (
            "icmp6 other".into(),
            Packet::new(
                a6,
                b6,
                L4::Icmp {
                    ty: 135,
                    code: 0,
                    id: 0,
                    seq: 0,
                },
            )
            .build(),
        ),
        (
            "ipv6 hop-by-hop + dest".into(),
            Packet::tcp(a6, b6, 1, 22, 2)
                .ipv6_ext(0, 0)
                .ipv6_ext(60, 1)
                .build(),
        ),
        (
            "ipv6 routing".into(),
            Packet::udp(a6, b6, 1, 53).ipv6_ext(43, 2).build(),
        ),
        (
            "ipv6 ah".into(),
            Packet::tcp(a6, b6, 1, 22, 2).ipv6_ext(51, 4).build(),
        ),
        (
            "ipv6 first fragment".into(),
            Packet::udp(a6, b6, 1, 9922).fragment(0, true).build(),
        ),
        (
            "ipv6 non-first fragment".into(),
            Packet::udp(a6, b6, 1, 9922)
                .payload(&[0; 20])
                .fragment(5, true)
                .build(),
        ),
        (
            "ipv6 ext then fragment".into(),
            Packet::tcp(a6, b6, 1, 22, 2)
                .ipv6_ext(0, 0)
                .fragment(2, false)
                .build(),
        ),
        (
            "vlan ipv6 ext".into(),
            Packet::udp(a6, b6, 1, 22)
                .vlan(0x8100, 5)
                .ipv6_ext(60, 0)
                .build(),
        ),
        ("arp".into(), non_ip(0x0806)),
        ("lldp".into(), non_ip(0x88cc)),
    ];
    // Extension chains at and beyond the bound.
    let mut at = Packet::udp(a6, b6, 1, 9);
    for _ in 0..MAX_IPV6_EXT {
        at = at.ipv6_ext(60, 0);
    }
    c.push(("ipv6 ext chain at the bound".into(), at.build()));
    let mut over = Packet::udp(a6, b6, 1, 9);
    for _ in 0..=MAX_IPV6_EXT {
        over = over.ipv6_ext(60, 0);
    }
    c.push(("ipv6 ext chain over the bound".into(), over.build()));
    let mut deep = Packet::udp(a6, b6, 1, 9);
    for _ in 0..3 {
        deep = deep.ipv6_ext(60, 30);
    }
    c.push(("ipv6 ext headers beyond 512 bytes".into(), deep.build()));
    // Hand-broken headers.
    let mut f = Packet::tcp(a, b, 1, 22, 2).build();
    f[14 + 20 + 12] = 4 << 4; // TCP data offset 4
    c.push(("tcp doff < 5".into(), f));
    let mut f = Packet::tcp(a, b, 1, 22, 2).build();
    f[14] = 0x44; // IHL 4
    c.push(("ipv4 ihl < 5".into(), f));
    let mut f = Packet::tcp(a, b, 1, 22, 2).build();
    f[14] = 0x65; // version 6 in an IPv4 ethertype
    c.push(("ipv4 wrong version".into(), f));
    let mut f = Packet::tcp(a, b, 1, 22, 2).build();
    f[14 + 2] = 0;
    f[14 + 3] = 10; // total length below the header
    c.push(("ipv4 total length < header".into(), f));
    let mut f = Packet::udp(a, b, 1, 22).build();
    f[14 + 20 + 5] = 4; // UDP length 4
    c.push(("udp length < 8".into(), f));
    let mut f = Packet::tcp(a, b, 1, 22, 2).payload(&[0; 10]).build();
    f.extend_from_slice(&[0xee; 6]); // Ethernet padding after the IP packet
    c.push(("ethernet padding".into(), f));
    let mut f = Packet::echo_request(a, b, 1).build();
    f.truncate(f.len() - 4);
    f[14 + 3] -= 4; // IP length says 4 bytes of ICMP: too short for an echo
    c.push(("icmp echo cut to 4 bytes".into(), f));
    c
}

/// BPF_PROG_TEST_RUN for tc refuses (EINVAL) an untagged IPv4/IPv6 frame shorter than the
/// minimal IP header: the stack never hands such a frame to tc either.
fn tc_refuses(frame: &[u8]) -> bool {
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    (et == 0x0800 && frame.len() < 34) || (et == 0x86dd && frame.len() < 54)
}

fn check(bed: &mut TestBed, name: &str, frame: &[u8]) -> PacketInfo {
    let twin = parse_packet(frame);
    match bed.try_run_tc(statewall::engine::ebpf::PROG_PARSE_TC, frame) {
        Ok(_) => {
            let tc = bed.parse_tc(frame);
            assert_eq!(
                tc,
                twin,
                "tc parser differs from the twin on {name} ({} bytes)",
                frame.len()
            );
        }
        Err(e) => {
            assert!(
                tc_refuses(frame),
                "test-run refused {name} ({} bytes): {e}",
                frame.len()
            );
            assert_eq!(twin.status, Status::Malformed as u8, "{name}");
        }
    }
    let xdp = bed.parse_xdp(frame);
    assert_eq!(
        xdp,
        twin,
        "XDP parser differs from the twin on {name} ({} bytes)",
        frame.len()
    );
    twin
}

#[test]
fn corpus_matches_twin_and_expectations() {
    let mut bed = TestBed::new();
    for (name, frame) in corpus() {
        let p = check(&mut bed, &name, &frame);
        let status = p.status;
        match name.as_str() {
            "arp" | "lldp" => assert_eq!(status, Status::NonIp as u8, "{name}"),
            "three vlan tags"
            | "ipv6 ext chain over the bound"
            | "ipv6 ext headers beyond 512 bytes"
            | "tcp doff < 5"
            | "ipv4 ihl < 5"
            | "ipv4 wrong version"
            | "ipv4 total length < header"
            | "udp length < 8"
            | "tcp protocol with a 14-byte segment"
            | "udp protocol with a 5-byte datagram"
            | "icmp echo cut to 4 bytes" => assert_eq!(status, Status::Malformed as u8, "{name}"),
            _ => assert_eq!(status, Status::Ip as u8, "{name}: {p:?}"),
        }
        if name.contains("non-first fragment") || name == "ipv6 ext then fragment" {
            assert_ne!(p.flags & FLAG_NONFIRST_FRAG, 0, "{name}");
            assert_eq!(
                p.flags & FLAG_L4,
                0,
                "{name}: L4 read from a non-first fragment"
            );
            assert_eq!((p.sport, p.dport), (0, 0), "{name}");
        }
        if name.contains("first fragment") && !name.contains("non-first") {
            assert_ne!(p.flags & FLAG_FRAG, 0, "{name}");
            assert_ne!(p.flags & FLAG_L4, 0, "{name}");
            assert_eq!(p.dport, 9922, "{name}");
        }
    }
    // Real fragments of datagrams above the MTU: the first one's UDP length covers the
    // whole datagram, more than the bytes in it, and is still a UDP header with ports.
    for (what, src, dst) in [
        ("ipv4", v4("192.0.2.1"), v4("198.51.100.7")),
        ("ipv6", v4("2001:db8::1"), v4("2001:db8:1::2")),
    ] {
        for size in [1473usize, 2000, 4000, 9000] {
            let whole = Packet::udp(src, dst, 40000, 5353)
                .payload(&vec![7; size])
                .build();
            let frags = fragments(&whole, 1500, 0x5eed);
            assert!(frags.len() >= 2, "{what} {size}: not fragmented");
            for (i, f) in frags.iter().enumerate() {
                let p = check(&mut bed, &format!("{what} {size} fragment {i}"), f);
                assert_eq!(p.status, Status::Ip as u8, "{what} {size} fragment {i}");
                assert_ne!(p.flags & FLAG_FRAG, 0);
                assert_eq!(p.frag_id, if what == "ipv4" { 0x1234 } else { 0x5eed });
                if i == 0 {
                    assert_ne!(p.flags & FLAG_L4, 0, "{what} {size}: first fragment");
                    assert_eq!((p.sport, p.dport), (40000, 5353));
                    assert_eq!(p.udp_len as usize, size + 8);
                } else {
                    assert_eq!(p.flags & (FLAG_L4 | FLAG_NONFIRST_FRAG), FLAG_NONFIRST_FRAG);
                }
            }
            // A UDP length beyond the bytes is malformed when no fragment follows.
            let mut last_only = frags[0].clone();
            if what == "ipv4" {
                last_only[14 + 6] &= !0x20;
            } else {
                last_only[14 + 40 + 3] &= !1;
            }
            let p = check(
                &mut bed,
                &format!("{what} {size} lone first fragment"),
                &last_only,
            );
            assert_eq!(p.status, Status::Malformed as u8, "{what} {size}");
        }
        // A TCP header cut by the fragment boundary stays malformed.
        let tcp = Packet::tcp(src, dst, 1, 22, 2).payload(&[0; 64]).build();
        let hl = if what == "ipv4" { 20 } else { 48 };
        let tiny = &fragments(&tcp, hl + 8, 1)[0];
        let p = check(&mut bed, &format!("{what} tcp header split"), tiny);
        assert_eq!(p.status, Status::Malformed as u8, "{what}: {p:?}");
    }
    // Spot checks of field values.
    let p = parse_packet(
        &Packet::tcp(v4("10.0.0.1"), v4("10.0.0.2"), 40000, 22, 0x12)
            .vlan(0x8100, 7)
            .build(),
    );
    assert_eq!(
        (p.sport, p.dport, p.tcp_flags, p.vlan_count, p.vlan[0]),
        (40000, 22, 0x12, 1, 7)
    );
    assert_eq!(&p.saddr[..4], &[10, 0, 0, 1]);
    let p = parse_packet(
        &Packet::tcp(v4("2001:db8::1"), v4("2001:db8::2"), 1, 22, 2)
            .ipv6_ext(0, 0)
            .ipv6_ext(43, 1)
            .build(),
    );
    assert_eq!((p.family, p.l4proto, p.ext_count, p.dport), (6, 6, 2, 22));
}

#[test]
fn every_truncation_matches_twin() {
    let mut bed = TestBed::new();
    let mut n = 0;
    for (name, frame) in corpus() {
        // test-run refuses frames shorter than an Ethernet header; the twin calls those
        // malformed, which the kernel never sees.
        for len in 14..frame.len() {
            let cut = &frame[..len];
            let p = check(&mut bed, &format!("{name} cut at {len}"), cut);
            n += 1;
            if p.is_ip() && p.flags & FLAG_L4 != 0 {
                assert!(
                    p.l4_off as usize + 4 <= len,
                    "{name} cut at {len}: L4 beyond the data"
                );
            }
        }
        assert_eq!(parse_packet(&frame[..13]).status, Status::Malformed as u8);
    }
    assert!(n > 1000, "only {n} truncations tried");
}

fn arb_addr(v6: bool) -> impl Strategy<Value = IpAddr> {
    if v6 {
        any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
    } else {
        any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
    }
}

fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    any::<bool>().prop_flat_map(|v6| {
        (
            arb_addr(v6),
            arb_addr(v6),
            0u8..5,
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec((0u8..4, 0u8..3), 0..4),
            proptest::option::of((0u16..8, any::<bool>())),
            0usize..3,
            0usize..12,
        )
            .prop_map(
                move |(a, b, kind, sp, dp, fl, payload, exts, frag, vlans, opts)| {
                    let l4 = match kind {
                        0 => L4::Tcp {
                            sport: sp,
                            dport: dp,
                            flags: fl,
                            seq: sp as u32,
                            ack: dp as u32,
                            win: sp,
                        },
                        1 => L4::Udp {
                            sport: sp,
                            dport: dp,
                        },
                        2 => L4::Icmp {
                            ty: fl % 4 * 4,
                            code: 0,
                            id: sp,
                            seq: dp,
                        },
                        3 => L4::Icmp {
                            ty: fl,
                            code: fl,
                            id: sp,
                            seq: dp,
                        },
                        _ => L4::Raw(fl),
                    };
                    let mut p = Packet::new(a, b, l4).payload(&payload);
                    for i in 0..vlans {
                        p = p.vlan(if i == 0 { 0x88a8 } else { 0x8100 }, sp);
                    }
                    if v6 {
                        for (k, units) in exts {
                            p = p.ipv6_ext([0, 43, 60, 51][k as usize], units);
                        }
                    } else if opts > 0 {
                        p = p.ipv4_options(&vec![1; opts * 3]);
                    }
                    if let Some((off, more)) = frag {
                        p = p.fragment(off, more);
                    }
                    p.build()
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: soak_cases(3000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_match_twin(frame in arb_packet(), cut in any::<proptest::sample::Index>(), flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..3)) {
        thread_local!(static BED: std::cell::RefCell<TestBed> = std::cell::RefCell::new(TestBed::new()));
        BED.with(|bed| {
            let mut bed = bed.borrow_mut();
            check(&mut bed, "random frame", &frame);
            // A random truncation and random byte flips of the same frame.
            let len = 14 + cut.index(frame.len() - 13);
            check(&mut bed, "random truncation", &frame[..len]);
            let mut m = frame.clone();
            for (i, v) in &flips {
                let i = i.index(m.len());
                m[i] ^= v;
            }
            check(&mut bed, "random mutation", &m);
        });
    }
}

/// The malformed-frame generator that the stage property tests use
/// (`statewall_harness::packet::malform`): both kernel parsers agree with the twin on what it
/// makes, and each kind of damage does what it says (the twin calls it malformed, or, for
/// later fragments, reads no ports).
#[test]
fn malformed_generator_matches_twin() {
    use statewall_harness::packet::{malform, MALFORM_KINDS};
    let mut bed = TestBed::new();
    let (a, b) = (v4("192.0.2.1"), v4("198.51.100.7"));
    let (a6, b6) = (v4("2001:db8::1"), v4("2001:db8:1::2"));
    let valid = [
        Packet::tcp(a, b, 40000, 22, 0x02).payload(&[1; 30]).build(),
        Packet::udp(a, b, 40000, 7000).payload(&[2; 60]).build(),
        Packet::tcp(a6, b6, 40000, 22, 0x18)
            .payload(&[3; 9])
            .build(),
        Packet::udp(a6, b6, 40000, 62201).payload(&[4; 80]).build(),
        Packet::udp(a, b, 40000, 2200)
            .vlan(0x8100, 5)
            .payload(&[5; 56])
            .build(),
        Packet::tcp(a6, b6, 1, 443, 0x10)
            .ipv6_ext(0, 0)
            .payload(&[6; 20])
            .build(),
    ];
    let mut kinds = std::collections::BTreeMap::<&str, u32>::new();
    for r in 0..soak_cases(3000) as u64 {
        let f = &valid[r as usize % valid.len()];
        let (kind, g) = malform(f, r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        *kinds.entry(kind).or_default() += 1;
        let p = check(&mut bed, &format!("{kind} (seed {r})"), &g);
        let malformed = p.status == Status::Malformed as u8;
        match kind {
            "bad ihl"
            | "tcp doff < 5"
            | "ipv6 ext chain past the bound"
            | "truncated"
            | "ip length"
            | "udp length" => {
                assert!(malformed, "{kind} (seed {r}): {p:?}")
            }
            "vlan stack past the bound" => assert!(malformed, "{kind}: {p:?}"),
            "later fragment" => {
                assert!(
                    malformed || p.flags & FLAG_NONFIRST_FRAG != 0,
                    "{kind}: {p:?}"
                );
                assert_eq!(
                    p.flags & FLAG_L4,
                    0,
                    "{kind}: L4 read from a later fragment"
                );
            }
            "zero-length payload" => {
                assert_eq!(
                    (p.status, p.payload_len),
                    (Status::Ip as u8, 0),
                    "{kind}: {p:?}"
                )
            }
            _ => {}
        }
    }
    for k in MALFORM_KINDS {
        assert!(
            kinds.get(k).is_some_and(|&n| n > 0),
            "{k} never made: {kinds:?}"
        );
    }
    common::tally(
        "property: generated malformed frames, kernel parsers = twin",
        kinds.values().map(|&n| n as u64).sum(),
    );
}
