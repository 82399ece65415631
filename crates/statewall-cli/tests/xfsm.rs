//! The xfsm kernel programs (BPF_PROG_TEST_RUN, real BPF maps) against the reference model
//! (`statewall_common::xfsm::step` over plain maps) on random knock doors (some needing UDP
//! payloads) and raw machines (distinct lookup and update scopes, ingress and egress
//! transitions), with packet streams drawn from them: every verdict, and at the end the
//! state, lock and grant tables, the counters and the events, must be equal. Time is a
//! frozen kernel clock that both sides read, moved forward between packets so that
//! timeouts fire.

mod common;

use std::{collections::HashSet, net::IpAddr};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use common::soak_cases;
use rand::{rngs::StdRng, Rng, SeedableRng};
use statewall::xfsm::{
    compile, reference::RefTables, write_tables, KnockDoor, RawMachine, RawTrans,
};
use statewall_common::{
    maps::{GrantKey, GrantValue, MAP_GATE_GRANTS},
    parse::proto,
    parse::{parse_packet, tcp},
    xfsm::{
        field, step, Counter, Event, LockKey, LockVal, Payload, StateKey, StateVal, COUNTERS,
        DIR_EGRESS, DIR_INGRESS, E_KEEP_HARD, MAP_EVENTS, MAP_LOCKS, MAP_ONCE, MAP_STATES,
        MAP_STATS, MAP_TCOUNT,
    },
    TCX_NEXT,
};
use statewall_harness::{packet::Packet, testrun::TestBed};

const SEC: u64 = 1_000_000_000;

fn random_doors(rng: &mut StdRng) -> Vec<KnockDoor> {
    let n = rng.random_range(1..=3);
    (0..n)
        .map(|i| {
            let seq = |rng: &mut StdRng| -> Vec<(u8, u16)> {
                let len = rng.random_range(1..=4);
                (0..len)
                    .map(|_| {
                        (
                            if rng.random_bool(0.7) {
                                proto::TCP
                            } else {
                                proto::UDP
                            },
                            7000 + rng.random_range(0..6) as u16,
                        )
                    })
                    .collect()
            };
            let open = seq(rng);
            // A close sequence (different from the open one, neither a prefix of the other),
            // or toggle mode, or neither.
            let (close, toggle) = match rng.random_range(0..3) {
                0 => {
                    let mut c = seq(rng);
                    c.insert(0, (proto::UDP, 7100 + i as u16));
                    (vec![c], false)
                }
                1 => (vec![], true),
                _ => (vec![], false),
            };
            // Some doors' sequence is a one-time sequence.
            let once = if rng.random_bool(0.3) {
                vec![rng.random_range(1..u64::MAX)]
            } else {
                vec![]
            };
            KnockDoor {
                name: format!("door{i}"),
                sequences: vec![open],
                once,
                close,
                toggle,
                protected: vec![(proto::TCP, 22 + i as u16)],
                tcp_mask: tcp::SYN | tcp::ACK,
                tcp_value: tcp::SYN,
                step_timeout_ns: rng.random_range(1..=4) * SEC,
                seq_timeout_ns: rng.random_range(3..=10) * SEC,
                open_for_ns: rng.random_range(2..=20) * SEC,
                strict: rng.random_bool(0.8),
                lockout: if rng.random_bool(0.5) {
                    Some((rng.random_range(2..=3), 30 * SEC, 10 * SEC))
                } else {
                    None
                },
                payload_all: None,
                payloads: Default::default(),
            }
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|mut d| {
            // Some doors need payloads on their UDP knocks: all of them, or one port.
            match rng.random_range(0..4) {
                0 => d.payload_all = Payload::from_bytes(PAYLOADS[0]),
                1 => {
                    if let Some(&(_, port)) = d.sequences[0].iter().find(|(p, _)| *p == proto::UDP)
                    {
                        d.payloads
                            .insert(port, Payload::from_bytes(PAYLOADS[1]).unwrap());
                    }
                }
                _ => {}
            }
            d
        })
        .collect()
}

/// Payloads the doors and machines match, and the packets carry.
const PAYLOADS: [&[u8]; 3] = [b"statewall-knock", b"open sesame", b"x"];

/// A raw machine: random scopes (often the lookup and update pair of a return-traffic
/// filter), three states, transitions on both directions, some needing a payload.
fn random_raw(rng: &mut StdRng, n: usize) -> RawMachine {
    let scopes: [(&[u8], &[u8]); 4] = [
        (&[field::SRC_IP], &[field::SRC_IP]),
        (
            &[field::SRC_IP, field::DST_IP],
            &[field::DST_IP, field::SRC_IP],
        ),
        (
            &[field::SRC_IP, field::SRC_PORT],
            &[field::DST_IP, field::DST_PORT],
        ),
        (
            &[
                field::SRC_IP,
                field::DST_IP,
                field::PROTO,
                field::SRC_PORT,
                field::DST_PORT,
            ],
            &[
                field::DST_IP,
                field::SRC_IP,
                field::PROTO,
                field::DST_PORT,
                field::SRC_PORT,
            ],
        ),
    ];
    let (lookup, update) = scopes[rng.random_range(0..scopes.len())];
    let mut transitions: Vec<RawTrans> = Vec::new();
    let mut keys = HashSet::new();
    for _ in 0..rng.random_range(3..=9) {
        let proto = [proto::TCP, proto::UDP, proto::UDP, 0][rng.random_range(0..4)];
        let port = if proto == 0 || rng.random_bool(0.3) {
            0
        } else {
            9000 + rng.random_range(0..3) as u16
        };
        let dirs = match rng.random_range(0..3) {
            0 => vec![DIR_INGRESS],
            1 => vec![DIR_EGRESS],
            _ => vec![DIR_INGRESS, DIR_EGRESS],
        };
        let state = rng.random_range(0..3u8);
        if dirs.iter().any(|d| !keys.insert((state, *d, proto, port))) {
            continue;
        }
        let timer = |rng: &mut StdRng| {
            if rng.random_bool(0.5) {
                (rng.random_range(1..=4) * SEC, rng.random_range(0..3u8))
            } else {
                (0, 0)
            }
        };
        let next = if rng.random_bool(0.3) {
            None
        } else {
            Some(rng.random_range(0..3u8))
        };
        let (idle, hard) = if next.is_some() {
            (timer(rng), timer(rng))
        } else {
            ((0, 0), (0, 0))
        };
        transitions.push(RawTrans {
            state,
            dirs,
            proto,
            port,
            tcp_flags: if proto == proto::TCP && rng.random_bool(0.5) {
                (tcp::SYN | tcp::ACK, tcp::SYN)
            } else {
                (0, 0)
            },
            payload: if proto == proto::UDP && port != 0 && rng.random_bool(0.5) {
                Some(PAYLOADS[rng.random_range(0..PAYLOADS.len())].to_vec())
            } else {
                None
            },
            drop: rng.random_bool(0.3),
            keep: match next {
                Some(_) if idle.0 == 0 && hard.0 == 0 && rng.random_bool(0.5) => {
                    rng.random_range(1..=3) * E_KEEP_HARD
                }
                _ => 0,
            },
            next,
            idle,
            hard,
            ..Default::default()
        });
    }
    RawMachine {
        name: format!("raw{n}"),
        lookup: lookup.to_vec(),
        update: update.to_vec(),
        states: vec!["DEFAULT".into(), "A".into(), "B".into()],
        transitions,
        ..Default::default()
    }
}

struct Dump {
    states: Vec<(StateKey, StateVal)>,
    locks: Vec<(LockKey, LockVal)>,
    grants: Vec<(GrantKey, u64)>,
    counters: Vec<u64>,
    tcount: Vec<u64>,
}

fn kernel_dump(bed: &mut TestBed, ntrans: usize) -> Dump {
    let s: BpfHashMap<&MapData, StateKey, StateVal> = (&*bed.map(MAP_STATES)).try_into().unwrap();
    let mut states: Vec<_> = s.iter().map(|r| r.unwrap()).collect();
    states.sort_by_key(|(k, _)| *k);
    let l: BpfHashMap<&MapData, LockKey, LockVal> = (&*bed.map(MAP_LOCKS)).try_into().unwrap();
    let mut locks: Vec<_> = l.iter().map(|r| r.unwrap()).collect();
    locks.sort_by_key(|(k, _)| *k);
    let g: BpfHashMap<&MapData, GrantKey, GrantValue> =
        (&*bed.map(MAP_GATE_GRANTS)).try_into().unwrap();
    let mut grants: Vec<_> = g
        .iter()
        .map(|r| r.unwrap())
        .map(|(k, v)| (k, v.expires_ns))
        .collect();
    grants.sort_by_key(|(k, _)| *k);
    let c: PerCpuArray<&MapData, u64> = (&*bed.map(MAP_STATS)).try_into().unwrap();
    let counters = (0..COUNTERS)
        .map(|i| c.get(&i, 0).unwrap().iter().sum())
        .collect();
    let t: PerCpuArray<&MapData, u64> = (&*bed.map(MAP_TCOUNT)).try_into().unwrap();
    let tcount = (0..ntrans as u32)
        .map(|i| t.get(&i, 0).unwrap().iter().sum())
        .collect();
    Dump {
        states,
        locks,
        grants,
        counters,
        tcount,
    }
}

fn kernel_events(bed: &mut TestBed) -> Vec<Event> {
    let mut rb: RingBuf<&mut MapData> = bed.map(MAP_EVENTS).try_into().unwrap();
    let mut v = Vec::new();
    while let Some(item) = rb.next() {
        assert_eq!(item.len(), std::mem::size_of::<Event>());
        // SAFETY: the kernel wrote exactly one Event.
        v.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) });
    }
    v
}

/// Runs one random scenario; returns the names of the transitions taken.
fn scenario(bed: &mut TestBed, seed: u64, packets: usize) -> (usize, HashSet<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cut = 0usize;
    let mut malformed_kinds = std::collections::BTreeSet::new();
    let doors = random_doors(&mut rng);
    let raws: Vec<RawMachine> = (0..rng.random_range(0..=2))
        .map(|n| random_raw(&mut rng, n))
        .collect();
    let compiled = compile(&doors, &raws).unwrap();
    // The bed of the scenario before, emptied: its programs stay verified.
    bed.reset();
    write_tables(bed, &compiled, Some(&[])).unwrap();
    let mut r = RefTables::new(16384, 4096);
    r.load(&compiled);
    {
        let mut once: BpfHashMap<&mut MapData, u64, u8> = bed.map(MAP_ONCE).try_into().unwrap();
        for k in doors.iter().flat_map(|d| &d.once) {
            once.insert(k, 1, 0).unwrap();
            r.once.insert(*k);
        }
    }

    let sources: Vec<IpAddr> = vec![
        "10.9.0.1".parse().unwrap(),
        "10.9.0.2".parse().unwrap(),
        "fd00:9::3".parse().unwrap(),
    ];
    let server = |s: &IpAddr| -> IpAddr {
        if s.is_ipv4() {
            "10.9.0.100".parse().unwrap()
        } else {
            "fd00:9::100".parse().unwrap()
        }
    };
    // Each source walks a door's sequence (open or close), with mistakes, repeats and
    // pauses.
    let mut walk: Vec<(usize, usize, usize)> = sources.iter().map(|_| (0, 0, 0)).collect();
    let mut now = 1_000 * SEC;
    let mut events_ref = 0usize;
    let mut kernel_events_all = Vec::new();
    for i in 0..packets {
        now += match rng.random_range(0..10) {
            0 => rng.random_range(1..12) * SEC,
            1..=3 => rng.random_range(1..1500) * 1_000_000,
            _ => rng.random_range(0..50) * 1_000_000,
        };
        let si = rng.random_range(0..sources.len());
        let src = sources[si];
        let (ref mut door, ref mut which, ref mut pos) = walk[si];
        let d = &doors[*door];
        let sq = if *which == 1 && !d.close.is_empty() {
            &d.close[0]
        } else {
            &d.sequences[0]
        };
        let (p, port) = match rng.random_range(0..20) {
            0..=12 => {
                let st = sq[(*pos).min(sq.len() - 1)];
                *pos += 1;
                if *pos > sq.len() || rng.random_bool(0.1) {
                    *pos = 0;
                    *door = rng.random_range(0..doors.len());
                    *which = rng.random_range(0..2);
                }
                st
            }
            13 => sq[(*pos).saturating_sub(1).min(sq.len() - 1)], // a repeat
            14..=15 => d.protected[0],
            16 => (proto::TCP, 7000 + rng.random_range(0..6) as u16),
            17 => (
                [proto::TCP, proto::UDP][rng.random_range(0..2)],
                9000 + rng.random_range(0..3) as u16,
            ),
            _ => (
                if rng.random_bool(0.5) {
                    proto::TCP
                } else {
                    proto::UDP
                },
                rng.random_range(1..65535),
            ),
        };
        let flags = if rng.random_bool(0.85) {
            tcp::SYN
        } else {
            rng.random()
        };
        // UDP payloads: the right one for the port (the door's, or a machine's), another
        // pattern, a byte off, none, or one too long to match.
        let right: &[u8] = d
            .payloads
            .get(&port)
            .or(d.payload_all.as_ref())
            .map(|p| {
                PAYLOADS
                    .iter()
                    .find(|b| Payload::from_bytes(b).as_ref() == Some(p))
            })
            .and_then(|b| b.copied())
            .unwrap_or(PAYLOADS[rng.random_range(0..PAYLOADS.len())]);
        let mut body = match rng.random_range(0..10) {
            0..=5 => right.to_vec(),
            6 => PAYLOADS[rng.random_range(0..PAYLOADS.len())].to_vec(),
            7 => {
                let mut b = right.to_vec();
                let i = rng.random_range(0..b.len());
                b[i] ^= 1;
                b
            }
            8 => Vec::new(),
            _ => vec![b'a'; rng.random_range(60..80)],
        };
        if p == proto::TCP {
            body.clear();
        }
        // With raw machines, some packets leave the server for the source (egress).
        let egress = !raws.is_empty() && rng.random_bool(0.3);
        let (a, b) = if egress {
            (server(&src), src)
        } else {
            (src, server(&src))
        };
        let (sport, dport) = if egress {
            (port, 40000 + si as u16)
        } else {
            (40000 + si as u16, port)
        };
        // An egress packet to the source's port (the reply direction) or to the port
        // itself: the machines key on either.
        let dport = if egress && rng.random_bool(0.5) {
            sport
        } else {
            dport
        };
        let frame = if p == proto::TCP {
            Packet::tcp(a, b, sport, dport, flags)
        } else {
            Packet::udp(a, b, sport, dport).payload(&body)
        }
        .build();
        // Now and then damaged by the malformed-frame generator (cut short, bad IHL or
        // lengths, TCP data offset < 5, extension-header chains and VLAN stacks past the
        // parser's bounds, later fragments, a flipped header byte): the kernel must agree
        // with the reference, and a frame the reference calls malformed moves nothing.
        // (test-run refuses frames shorter than an IPv6 header after Ethernet; the cuts
        // below that go over the wire in tests/bad_packets.rs.)
        let (frame, bad) = if rng.random_bool(0.08) {
            let (kind, f) = statewall_harness::packet::malform(&frame, rng.random());
            malformed_kinds.insert(kind);
            DAMAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let bad = parse_packet(&f).status == statewall_common::parse::Status::Malformed as u8;
            cut += bad as usize;
            (f, bad)
        } else {
            (frame, false)
        };
        let snapshot = |r: &RefTables| {
            (
                r.tcount.clone(),
                r.grants.clone(),
                r.states.clone(),
                r.locks.clone(),
                r.events.len(),
                r.counters,
            )
        };
        let before = bad.then(|| snapshot(&r));
        bed.freeze(now);
        let (prog, dir) = if egress {
            (statewall::engine::ebpf::PROG_XFSM_EGRESS, DIR_EGRESS)
        } else {
            (statewall::engine::ebpf::PROG_XFSM, DIR_INGRESS)
        };
        let got = bed.run_tc(prog, &frame);
        // The payload the reference sees is the frame's (damage may have emptied it).
        let info = parse_packet(&frame);
        let off = (info.payload_off as usize).min(frame.len());
        let end = (off + info.payload_len as usize).min(frame.len());
        r.snap = Payload::from_bytes(&frame[off..end]).unwrap_or_default();
        let want = step(&mut r, &info, dir, now);
        assert_eq!(
            got == TCX_NEXT,
            want,
            "seed {seed} packet {i}: verdict differs"
        );
        if let Some(before) = before {
            let after = snapshot(&r);
            // Only the "seen" and "lookups" counters may move.
            let (mut b, mut a) = (before, after);
            b.5[0] = 0;
            a.5[0] = 0;
            b.5[1] = 0;
            a.5[1] = 0;
            assert!(
                b == a,
                "seed {seed} packet {i}: a malformed frame moved a door"
            );
        }
        if i % 64 == 0 {
            kernel_events_all.extend(kernel_events(bed));
        }
        events_ref = r.events.len();
    }
    kernel_events_all.extend(kernel_events(bed));
    let k = kernel_dump(bed, compiled.counter_names.len());
    let mut states: Vec<_> = r.states.iter().map(|(k, v)| (*k, *v)).collect();
    states.sort_by_key(|(k, _)| *k);
    let mut locks: Vec<_> = r.locks.iter().map(|(k, v)| (*k, *v)).collect();
    locks.sort_by_key(|(k, _)| *k);
    let mut grants: Vec<_> = r.grants.iter().map(|(k, v)| (*k, *v)).collect();
    grants.sort_by_key(|(k, _)| *k);
    assert_eq!(k.states, states, "seed {seed}: state tables differ");
    assert_eq!(k.locks, locks, "seed {seed}: lock tables differ");
    assert_eq!(k.grants, grants, "seed {seed}: grants differ");
    assert_eq!(
        k.counters,
        r.counters.to_vec(),
        "seed {seed}: counters differ"
    );
    let tref: Vec<u64> = (0..compiled.counter_names.len() as u32)
        .map(|i| r.tcount.get(&i).copied().unwrap_or(0))
        .collect();
    assert_eq!(k.tcount, tref, "seed {seed}: transition counters differ");
    assert_eq!(
        kernel_events_all.len(),
        events_ref,
        "seed {seed}: event counts differ"
    );
    assert_eq!(kernel_events_all, r.events, "seed {seed}: events differ");
    let once: BpfHashMap<&MapData, u64, u8> = (&*bed.map(MAP_ONCE)).try_into().unwrap();
    let once: std::collections::BTreeSet<u64> = once.keys().map(|k| k.unwrap()).collect();
    assert_eq!(once, r.once, "seed {seed}: unused one-time keys differ");
    let mut hit: HashSet<String> = tref
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, _)| {
            // The kind: the name without the door, the step's port and the digits.
            let n = &compiled.counter_names[i];
            let n = n.split_once(": ").map(|x| x.1).unwrap_or(n);
            let n = n.split(" (").next().unwrap();
            n.chars()
                .map(|c| if c.is_ascii_digit() { 'N' } else { c })
                .collect::<String>()
        })
        .collect();
    if r.counters[Counter::OnceRefused as usize] > 0 {
        hit.insert("one-time sequence refused".into());
    }
    if cut > 0 {
        hit.insert("malformed frame".into());
    }
    hit.extend(malformed_kinds.into_iter().map(|k| format!("damage: {k}")));
    for ((_, _, dir, _, _), t) in &compiled.trans {
        if tref[t.counter as usize] > 0 {
            if t.payload != 0 {
                hit.insert("payload matched".into());
            }
            if *dir == DIR_EGRESS {
                hit.insert("egress".into());
            }
        }
    }
    (packets, hit)
}

/// Frames damaged by the malformed-frame generator, over all scenarios.
static DAMAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[test]
fn kernel_engine_equals_reference_on_random_doors() {
    let cases = soak_cases(100) as u64;
    let mut total = 0;
    let mut kinds = HashSet::new();
    let mut bed = TestBed::new();
    for seed in 0..cases {
        let (n, hit) = scenario(&mut bed, 0x5eed_0000 + seed, 1000);
        total += n;
        kinds.extend(hit);
    }
    assert!(total >= 100_000, "only {total} packets");
    common::tally("property: xfsm frames, kernel = reference", total as u64);
    common::tally(
        "property: malformed frames among them",
        DAMAGED.load(std::sync::atomic::Ordering::Relaxed),
    );
    // Every kind of damage the generator does reached the kernel and the reference.
    for k in statewall_harness::packet::MALFORM_KINDS {
        assert!(
            kinds.contains(&format!("damage: {k}")),
            "no '{k}' frame: {kinds:?}"
        );
    }
    // Every kind of transition the compiler emits was taken somewhere.
    for k in [
        "open step N",
        "close#N step N",
        "toggle#N step N",
        "repeat of",
        "wrong knock in open",
        "wrong knock in close",
        "wrong knock in toggle",
        "from OPEN",
        "one-time sequence refused",
        "payload matched",
        "egress",
        "malformed frame",
    ] {
        assert!(
            kinds.iter().any(|h| h.contains(k)),
            "no '{k}' transition taken: {kinds:?}"
        );
    }
}

/// A full grant table: a door opened by more sources than the table holds. The kernel (a
/// grant table of 2) and the reference (capacity 2) both grant the first two sources and
/// refuse the rest, count the refusals as `grants_refused` (not `grants_failed`) and report
/// them in a `GRANT_REFUSED` event.
#[test]
fn a_full_grant_table_refuses_counts_and_reports() {
    let cfg = statewall::config::Config::parse(
        "[[knock]]\nname = \"ssh\"\nsequence = \"7000\"\nprotected = [\"tcp/22\"]\n",
        "test",
    )
    .unwrap();
    let compiled = compile(&cfg.doors(), &[]).unwrap();
    let mut bed = TestBed::with_sizes(&[(MAP_GATE_GRANTS, 2)]);
    write_tables(&mut bed, &compiled, Some(&[])).unwrap();
    let mut r = RefTables::new(16384, 2);
    r.load(&compiled);
    let server: IpAddr = "10.9.0.100".parse().unwrap();
    let now = 1_000 * SEC;
    bed.freeze(now);
    for i in 1..=5u8 {
        let src: IpAddr = format!("10.9.1.{i}").parse().unwrap();
        let frame = Packet::tcp(src, server, 40000, 7000, tcp::SYN).build();
        let got = bed.run_tc(statewall::engine::ebpf::PROG_XFSM, &frame);
        let want = step(&mut r, &parse_packet(&frame), DIR_INGRESS, now);
        assert_eq!(got == TCX_NEXT, want, "source {i}");
    }
    let k = kernel_dump(&mut bed, compiled.counter_names.len());
    assert_eq!(k.counters, r.counters.to_vec(), "counters differ");
    assert_eq!(k.grants.len(), 2, "kernel grants: {:?}", k.grants);
    assert_eq!(r.grants.len(), 2);
    let c = |n: Counter| k.counters[n as usize];
    assert_eq!(
        (
            c(Counter::Grants),
            c(Counter::GrantsRefused),
            c(Counter::GrantsFailed)
        ),
        (2, 3, 0)
    );
    let events = kernel_events(&mut bed);
    assert_eq!(events, r.events, "events differ");
    let refused = events
        .iter()
        .filter(|e| e.reason == statewall_common::xfsm::reason::GRANT_REFUSED)
        .count();
    assert_eq!(refused, 3, "{events:?}");
}

/// The stage runs every machine up to the highest enabled one, whichever that is: with
/// 1 to 8 machines, only the last drops UDP to port 9999 (the others have transitions on
/// other ports), and a packet to 9999 is dropped; one to another port passes.
#[test]
fn the_highest_machine_runs_at_every_count() {
    let a: IpAddr = "10.9.0.1".parse().unwrap();
    let b: IpAddr = "10.9.0.100".parse().unwrap();
    let hit = Packet::udp(a, b, 40000, 9999).build();
    let miss = Packet::udp(a, b, 40000, 9998).build();
    let mut bed = TestBed::new();
    for n in 1..=8u16 {
        let mut text = String::new();
        for i in 0..n {
            let port = if i + 1 == n { 9999 } else { 1000 + i };
            text += &format!(
                "[[xfsm]]\nname = \"m{i}\"\nlookup = [\"src_ip\"]\n\
                 [[xfsm.transition]]\nproto = \"udp\"\nport = {port}\naction = \"drop\"\n"
            );
        }
        let cfg = statewall::config::Config::parse(&text, "machines.toml").unwrap();
        let compiled = compile(&[], &cfg.raw_machines().unwrap()).unwrap();
        assert_eq!(compiled.machines.len(), n as usize);
        write_tables(&mut bed, &compiled, Some(&[])).unwrap();
        assert_eq!(
            bed.run_tc(statewall::engine::ebpf::PROG_XFSM, &hit),
            statewall_common::TC_ACT_SHOT,
            "{n} machines: the last one's drop"
        );
        assert_eq!(
            bed.run_tc(statewall::engine::ebpf::PROG_XFSM, &miss),
            statewall_common::TCX_NEXT,
            "{n} machines: a port none has"
        );
    }
}

/// A source locked out while its door is open (toggle mode, strict, failures on the close
/// path) cannot close it: the lockout holds in a door's root states, DEFAULT and OPEN. The
/// kernel skips the lock lookup only part-way through a sequence, where a source cannot be
/// locked (the failure that locks it sends it back to its root); a check in DEFAULT alone
/// lets the close sequence through here.
#[test]
fn a_source_locked_out_while_open_cannot_close_the_door() {
    let mut door = KnockDoor::new("t", vec![(6, 7000), (6, 8000), (6, 9000)], vec![(6, 22)]);
    door.toggle = true;
    door.strict = true;
    door.lockout = Some((2, 60 * SEC, 300 * SEC));
    let compiled = compile(&[door], &[]).unwrap();
    let mut bed = TestBed::new();
    write_tables(&mut bed, &compiled, Some(&[])).unwrap();
    let (src, server): (IpAddr, IpAddr) =
        ("10.9.2.1".parse().unwrap(), "10.9.0.100".parse().unwrap());
    let now = std::cell::Cell::new(1_000 * SEC);
    let knock = |bed: &mut TestBed, port: u16| {
        now.set(now.get() + SEC / 10);
        bed.freeze(now.get());
        let frame = Packet::tcp(src, server, 40000, port, tcp::SYN).build();
        bed.run_tc(statewall::engine::ebpf::PROG_XFSM, &frame);
    };
    let open = |bed: &mut TestBed| {
        !kernel_dump(bed, compiled.counter_names.len())
            .grants
            .is_empty()
    };
    for port in [7000, 8000, 9000] {
        knock(&mut bed, port);
    }
    assert!(open(&mut bed), "the sequence opened the door");
    // Two failures on the close path (a step, then a wrong knock back to OPEN): locked.
    for port in [7000, 7777, 7000, 7777] {
        knock(&mut bed, port);
    }
    let d = kernel_dump(&mut bed, compiled.counter_names.len());
    assert!(
        d.locks.iter().any(|(_, l)| l.locked_until > now.get()),
        "locked out: {:?}",
        d.locks
    );
    assert_eq!(d.states.len(), 1);
    assert_eq!(
        d.states[0].1.state,
        statewall_common::xfsm::DOOR_OPEN,
        "back in OPEN"
    );
    // The close sequence while locked: refused, the door stays open.
    for port in [7000, 8000, 9000] {
        knock(&mut bed, port);
    }
    let d = kernel_dump(&mut bed, compiled.counter_names.len());
    assert!(open(&mut bed), "a locked source closed the door");
    assert_eq!(
        d.counters[Counter::LockedPackets as usize],
        3,
        "{:?}",
        d.counters
    );
    bed.freeze(0);
}
