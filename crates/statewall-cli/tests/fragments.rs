//! Fragmented datagrams through the stages.
//!
//! - On the wire: UDP datagrams of 1,473, 2,000, 4,000 and 9,000 bytes (IPv4 and IPv6,
//!   fragmented by the sending kernel at the veth's 1,500-byte MTU) cross a server running
//!   every stage at once (a knock door, a protected port, an SPA action, a firewall whose
//!   default drops, both monitors). They arrive whole where the stages allow the port, and
//!   not at all where a rule or the gate refuses it; the monitors record every fragment.
//! - Under BPF_PROG_TEST_RUN: later fragments, in order, reordered or without their first,
//!   get the gate's verdict (tc and XDP) that a model of their own predicts: the verdict of
//!   their datagram when its first fragment was seen, a drop otherwise.

mod common;

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
};

use common::{soak_cases, Kernel};
use proptest::prelude::*;
use statewall::{
    config::Config,
    engine::ebpf::{PROG_GATE, PROG_XDP_INGRESS},
    firewall::{ChainState, FwState, Instance, Port, PortArg, RuleSpec},
    monitor::{Kind, Monitor, MonitorSpec},
};
use statewall_common::{
    maps::{GrantKey, GrantValue, GATE_SUMMARY_SLOT, GATE_UDP, MAP_GATE_GRANTS, MAP_GATE_PORTS},
    TCX_NEXT, TC_ACT_SHOT, XDP_DROP, XDP_PASS,
};
use statewall_harness::{
    netns::Pair,
    packet::{fragments, non_ip, Packet},
    testrun::TestBed,
};

const SIZES: [usize; 4] = [1473, 2000, 4000, 9000];
const OPEN: u16 = 5353;
const REFUSED_BY_RULE: u16 = 6000;
const PROTECTED: u16 = 9922;

fn rule(proto: &str, port: Option<u64>) -> Box<RuleSpec> {
    Box::new(RuleSpec {
        l4proto: Some(proto.into()),
        dport: port.map(PortArg::N),
        action: Some("ACCEPT".into()),
        ..Default::default()
    })
}

/// The payload of a datagram of `size` bytes: its size and a pattern, so that a datagram
/// reassembled from the wrong pieces shows.
fn payload(size: usize, tag: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ tag)
        .collect()
}

/// Sends one datagram and reports whether `srv` received exactly it.
fn arrives(from: &UdpSocket, srv: &UdpSocket, to: SocketAddr, msg: &[u8]) -> bool {
    let mut buf = vec![0u8; 65536];
    srv.set_nonblocking(true).unwrap();
    while srv.recv_from(&mut buf).is_ok() {}
    srv.set_nonblocking(false).unwrap();
    from.send_to(msg, to).unwrap();
    match srv.recv_from(&mut buf) {
        Ok((n, _)) => {
            assert_eq!(&buf[..n], msg, "a datagram arrived changed");
            true
        }
        Err(_) => false,
    }
}

#[test]
fn fragmented_udp_arrives_whole_where_the_stages_allow_it() {
    let pair = Pair::new("frag");
    let mut cfg = Config::parse(
        "[gate]\nprotected = [\"udp/9922\"]\n\n\
         [[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\n\n\
         [[spa.pkd]]\nname = \"pkd\"\nport = 2200\ntag = \"SSHK\"\nkey = \"test\"\nwindow = 60\n",
        "test",
    )
    .unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let mut k = Kernel::new("frag", &cfg);
    let mut fw = FwState::default();
    fw.instances.insert(
        "fw".into(),
        Instance {
            slot: 0,
            kind: "TC".into(),
            ports: vec![Port {
                netns: Some(pair.server.name.clone()),
                ifname: pair.server_if.clone(),
            }],
            ingress: ChainState {
                // Neighbour discovery, the open port and the protected one (the gate
                // decides there); the rest, 6000 included, meets the default drop.
                rules: vec![
                    rule("ICMPv6", None),
                    rule("UDP", Some(OPEN as u64)),
                    rule("UDP", Some(PROTECTED as u64)),
                ],
                default: "DROP".into(),
                accept_established: false,
            },
            egress: ChainState::default(),
        },
    );
    k.eng
        .apply_firewall(&cfg.firewall, &cfg.links(), &fw, &[])
        .unwrap();
    let monitors: Vec<Monitor> = [Kind::Crypto, Kind::Ddos]
        .into_iter()
        .map(|kind| {
            let mut spec = MonitorSpec::new("frag", kind, &[&pair.server_if]);
            spec.netns = Some(pair.server.name.clone());
            spec.sessions = Some(64);
            if kind == Kind::Ddos {
                spec.packets_per_session = Some(100);
            }
            Monitor::load(spec).unwrap()
        })
        .collect();

    let mut sent_frames = 0u64;
    let mut sent_bytes = 0u64;
    for (family, client, server) in [
        (
            "IPv4",
            IpAddr::from(pair.client_v4),
            IpAddr::from(pair.server_v4),
        ),
        (
            "IPv6",
            IpAddr::from(pair.client_v6),
            IpAddr::from(pair.server_v6),
        ),
    ] {
        let srv: HashMap<u16, UdpSocket> = [OPEN, REFUSED_BY_RULE, PROTECTED]
            .into_iter()
            .map(|p| (p, common::udp_in(&pair.server, SocketAddr::new(server, p))))
            .collect();
        let unspecified = if client.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let cl = common::udp_in(&pair.client, unspecified.parse().unwrap());
        let sport = cl.local_addr().unwrap().port();
        let mut check = |port: u16, size: usize, want: bool, what: &str| {
            let msg = payload(size, port as u8);
            let got = arrives(&cl, &srv[&port], SocketAddr::new(server, port), &msg);
            assert_eq!(got, want, "{family} {size} bytes to {port} ({what})");
            // What the capture has: the fragments the sending kernel made.
            let whole = Packet::udp(client, server, sport, port)
                .payload(&msg)
                .build();
            for f in fragments(&whole, 1500, 0) {
                sent_frames += 1;
                sent_bytes += (f.len() - 14) as u64;
            }
        };
        for size in SIZES {
            check(OPEN, size, true, "open");
            check(REFUSED_BY_RULE, size, false, "the firewall's default drop");
            check(PROTECTED, size, false, "protected, no grant");
        }
        let key: GrantKey = statewall::daemon::api::grant_key(client, "udp", PROTECTED).unwrap();
        k.eng.grant(key, 600, 0).unwrap();
        for size in SIZES {
            check(PROTECTED, size, true, "protected, granted");
        }
    }
    common::tally("fragmented datagrams", SIZES.len() as u64 * 8);

    // Item 8: the monitors saw every fragment, the first ones with their ports.
    let mut monitors = monitors;
    let crypto = monitors[0].read().unwrap();
    let (pk, by): (u64, u64) = crypto
        .crypto
        .iter()
        .filter(|s| s.key.proto == 17)
        .map(|s| {
            (
                s.total.n_packets + s.total.n_packets_reverse,
                s.total.n_bytes + s.total.n_bytes_reverse,
            )
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(
        (pk, by),
        (sent_frames, sent_bytes),
        "crypto monitor: UDP packets and bytes against what was sent"
    );
    let ddos = monitors[1].read().unwrap();
    for port in [OPEN, REFUSED_BY_RULE, PROTECTED] {
        let firsts = ddos
            .packets
            .iter()
            .filter(|r| {
                r.key.proto == 17
                    && (r.key.sport == port || r.key.dport == port)
                    && (r.ip_flags_frag & 0x2000 != 0 || r.ip_flags_frag & 1 != 0)
            })
            .count();
        // Each family: every size once (twice for the protected port: before and after
        // the grant), and each of those datagrams has one first fragment.
        let want = if port == PROTECTED { 16 } else { 8 };
        assert_eq!(firsts, want, "ddos first fragments to {port}");
    }
    let udp_records = ddos.packets.iter().filter(|r| r.key.proto == 17).count() as u64;
    assert_eq!(udp_records, sent_frames, "ddos records, one per fragment");
}

/// A datagram in the test-run property: its source (granted or not), destination port and
/// size, an id, and how its fragments go out.
#[derive(Clone, Debug)]
struct Datagram {
    granted: bool,
    v6: bool,
    dport: u16,
    size: usize,
    order: Order,
    /// Seconds the clock moves on after the first fragment (an entry is good for 30).
    gap: u64,
    /// IPv6: a Destination Options header after the Fragment header, so that the later
    /// fragments name it rather than UDP.
    opts: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Sequential,
    LastFirst,
    FirstLost,
}

fn datagram() -> impl Strategy<Value = Datagram> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(PROTECTED), Just(OPEN)],
        prop_oneof![Just(1473usize), Just(2000), Just(4000), Just(9000)],
        prop_oneof![
            3 => Just(Order::Sequential),
            1 => Just(Order::LastFirst),
            1 => Just(Order::FirstLost)
        ],
        prop_oneof![6 => Just(0u64), 1 => Just(30), 1 => Just(31), 1 => Just(3600)],
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(granted, v6, dport, size, order, gap, opts)| Datagram {
            granted,
            v6,
            dport,
            size,
            order,
            gap,
            opts,
        })
}

/// The model: the ports and time of the first fragments seen, by (source, destination,
/// id); a packet passes when its port is not protected or its source holds the grant; a
/// later fragment without a first seen in the last 30 seconds passes only when no UDP port
/// is protected (never here).
#[derive(Default)]
struct Model {
    firsts: HashMap<(IpAddr, IpAddr, u32), (u16, u64)>,
}

impl Model {
    fn passes(
        &mut self,
        d: &Datagram,
        (src, dst, id): (IpAddr, IpAddr, u32),
        first: bool,
        secs: u64,
    ) -> bool {
        let port = if first {
            self.firsts.insert((src, dst, id), (d.dport, secs));
            Some(d.dport)
        } else {
            match self.firsts.get(&(src, dst, id)) {
                Some(&(p, t)) if secs - t <= 30 => Some(p),
                _ => None,
            }
        };
        match port {
            Some(p) => p != PROTECTED || d.granted,
            None => false,
        }
    }
}

fn protect_and_grant(bed: &mut TestBed, granted: &[IpAddr]) {
    let mut a: aya::maps::Array<&mut aya::maps::MapData, u8> =
        bed.map(MAP_GATE_PORTS).try_into().unwrap();
    a.set(PROTECTED as u32, GATE_UDP, 0).unwrap();
    a.set(GATE_SUMMARY_SLOT, GATE_UDP, 0).unwrap();
    let mut g: aya::maps::HashMap<&mut aya::maps::MapData, GrantKey, GrantValue> =
        bed.map(MAP_GATE_GRANTS).try_into().unwrap();
    for &addr in granted {
        let k = statewall::daemon::api::grant_key(addr, "udp", PROTECTED).unwrap();
        let v = GrantValue {
            expires_ns: u64::MAX,
            origin: statewall_common::maps::GRANT_BY_API,
            _pad: 0,
        };
        g.insert(k, v, 0).unwrap();
    }
}

#[test]
fn later_fragments_take_their_datagrams_verdict() {
    let mut bed = TestBed::new();
    let addr = |s: &str| -> IpAddr { s.parse().unwrap() };
    let (a4, b4, dst4) = (addr("10.9.0.1"), addr("10.9.0.2"), addr("10.9.0.100"));
    let (a6, b6, dst6) = (addr("fd09::1"), addr("fd09::2"), addr("fd09::100"));
    protect_and_grant(&mut bed, &[a4, a6]);
    let bed = RefCell::new(bed);
    let model = RefCell::new(Model::default());
    let next_id = Cell::new(1u32);
    let ran = Cell::new(0u64);
    let later_passed = Cell::new(0u64);
    let stale = Cell::new(0u64);
    let with_opts = Cell::new(0u64);
    // The kernel's clock, frozen and moved by the test; the model counts whole seconds.
    let start = bed.borrow_mut().kernel_now();
    let secs = Cell::new(0u64);
    bed.borrow_mut().freeze(start);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: soak_cases(48),
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(datagram(), 1..6), |ds| {
            let (mut bed, mut model) = (bed.borrow_mut(), model.borrow_mut());
            for d in &ds {
                let (src, dst) = match (d.v6, d.granted) {
                    (false, true) => (a4, dst4),
                    (false, false) => (b4, dst4),
                    (true, true) => (a6, dst6),
                    (true, false) => (b6, dst6),
                };
                // IPv4 ids are 16 bits, and the builder writes 0x1234: patch it in.
                let id = next_id.get();
                next_id.set(id + 1);
                let mut whole =
                    Packet::udp(src, dst, 40000, d.dport).payload(&payload(d.size, id as u8));
                if d.v6 && d.opts {
                    whole = whole.ipv6_ext(60, 0);
                    with_opts.set(with_opts.get() + 1);
                }
                let whole = whole.build();
                let mut frags = fragments(&whole, 1500, id);
                if !d.v6 {
                    for f in &mut frags {
                        f[18..20].copy_from_slice(&(id as u16).to_be_bytes());
                    }
                }
                let mut order: Vec<usize> = (0..frags.len()).collect();
                match d.order {
                    Order::Sequential => {}
                    Order::LastFirst => order.rotate_right(1),
                    Order::FirstLost => {
                        order.remove(0);
                    }
                }
                for i in order {
                    let want = model.passes(d, (src, dst, id), i == 0, secs.get());
                    if i > 0
                        && !want
                        && d.order != Order::FirstLost
                        && d.gap > 30
                        && d.dport == OPEN
                    {
                        // An open port refused only because the first fragment is too old.
                        stale.set(stale.get() + 1);
                    }
                    let tc = bed.run_tc(PROG_GATE, &frags[i]);
                    let xdp = bed.run_xdp(PROG_XDP_INGRESS, &frags[i]);
                    let what = format!("{d:?} fragment {i}");
                    prop_assert_eq!(tc == TCX_NEXT, want, "tc: {}", &what);
                    prop_assert!(tc == TCX_NEXT || tc == TC_ACT_SHOT);
                    prop_assert_eq!(
                        xdp,
                        if want { XDP_PASS } else { XDP_DROP },
                        "xdp: {}",
                        &what
                    );
                    ran.set(ran.get() + 1);
                    later_passed.set(later_passed.get() + (i > 0 && want) as u64);
                    if i == 0 {
                        secs.set(secs.get() + d.gap);
                        bed.freeze(start + secs.get() * 1_000_000_000);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    common::tally("fragments judged", ran.get());
    // Not vacuous: later fragments passed by their first fragment's ports.
    let later_passed = later_passed.get();
    assert!(
        later_passed > 20,
        "only {later_passed} later fragments passed"
    );
    // Nor is the expiry: fragments of open ports came after their entry had gone stale.
    assert!(stale.get() > 0, "no later fragment came after 30 seconds");
    assert!(
        with_opts.get() > 0,
        "no IPv6 datagram with Destination Options after its Fragment header"
    );
}

#[test]
fn monitors_count_what_they_ignore_by_cause() {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    for kind in [Kind::Ddos, Kind::Crypto] {
        let mut m = Monitor::open(MonitorSpec::new("ign", kind, &["lo"])).unwrap();
        let mut malformed = Packet::udp(ip("10.1.0.1"), ip("10.1.0.2"), 1, 2).build();
        malformed[14] = 0x44; // IHL 4
        let gre = Packet::new(
            ip("10.1.0.1"),
            ip("10.1.0.2"),
            statewall_harness::packet::L4::Raw(47),
        )
        .payload(&[0; 12])
        .build();
        let first = fragments(
            &Packet::udp(ip("10.1.0.1"), ip("10.1.0.2"), 1, 2)
                .payload(&[1; 3000])
                .build(),
            1500,
            0,
        )[0]
        .clone();
        for (f, n) in [(non_ip(0x0806), 3), (malformed, 2), (gre, 5), (first, 1)] {
            for _ in 0..n {
                m.test_run(&f).unwrap();
            }
        }
        let c: HashMap<&str, u64> = m.counters().unwrap().into_iter().collect();
        assert_eq!(
            (
                c["ignored_not_ip"],
                c["ignored_malformed"],
                c["ignored_protocol"],
                c["ignored"],
                c["packets"]
            ),
            (3, 2, 5, 10, 11),
            "{kind:?}: {c:?}"
        );
        // The first fragment is recorded.
        assert_eq!(c["captured"], 1, "{kind:?}: {c:?}");
    }
}
