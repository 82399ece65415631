//! Extended machines (registers, conditions, updates): the kernel program (BPF_PROG_TEST_RUN,
//! real BPF maps, the tables `compile` and `write_tables` produce) against the interpreter
//! of `statewall_common::xfsm::interp`, which reads the machine definitions themselves.
//! Random machines use every comparison, update function and operand kind, with constants
//! at the boundaries (0, 1, the maximum) so that saturation and the EWMA's rounding are
//! reached; up to three machines pass the packet's metadata on; packets are drawn from the
//! machines' ports; the frozen clock moves so that
//! timeouts fire and `since()` grows. Every verdict, and at checkpoints the state and
//! register tables and the global registers, must be equal.

mod common;

use std::net::IpAddr;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use common::soak_cases;
use rand::{rngs::StdRng, Rng, SeedableRng};
use statewall::xfsm::{compile, write_tables, RawMachine, RawTrans};
use statewall_common::{
    parse::proto,
    parse::{parse_packet, tcp},
    xfsm::{
        field,
        interp::{Acts, Cmp, CondDef, Entry, Interp, Opd, Reg, UpdDef, UpdOp},
        regs::{FlowRegs, GlobalRegs, MAP_GLOBALS, MAP_REGS},
        StateKey, StateVal, DIR_EGRESS, DIR_INGRESS, MAP_STATES,
    },
    TCX_NEXT,
};
use statewall_harness::{packet::Packet, testrun::TestBed};

const SEC: u64 = 1_000_000_000;
const PORTS: [u16; 3] = [9100, 9101, 9102];

fn constant(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..8) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX - 1,
        4 => 1 << 63,
        5 => rng.random_range(0..2000),
        6 => rng.random_range(1..5) * SEC,
        _ => rng.random(),
    }
}

fn operand(rng: &mut StdRng, nf: u8, ng: u8) -> Opd {
    loop {
        let o = match rng.random_range(0..15) {
            0 | 1 => Opd::Const(constant(rng)),
            2 | 3 => Opd::Flow(rng.random_range(0..nf)),
            4 if ng > 0 => Opd::Global(rng.random_range(0..ng)),
            5 => Opd::PktLen,
            6 => Opd::SrcPort,
            7 => Opd::DstPort,
            8 => [Opd::Proto, Opd::TcpFlags][rng.random_range(0..2)],
            9 => Opd::Since(rng.random_range(0..nf)),
            10 if ng > 0 => Opd::GlobalSince(rng.random_range(0..ng)),
            11 => Opd::Now,
            12 => Opd::Hash(rng.random_range(1..32)),
            13 => Opd::Meta,
            14 => Opd::InPort,
            _ => continue,
        };
        return o;
    }
}

/// Mostly no shift, sometimes one, sometimes the largest.
fn shift(rng: &mut StdRng) -> u8 {
    match rng.random_range(0..6) {
        0 => rng.random_range(1..63),
        1 => 63,
        _ => 0,
    }
}

fn update(rng: &mut StdRng, nf: u8, ng: u8) -> UpdDef {
    let dst = if rng.random_bool(0.15) {
        // The metadata the machines after this one read.
        Reg::Meta
    } else if ng > 0 && rng.random_bool(0.3) {
        Reg::Global(rng.random_range(0..ng))
    } else {
        Reg::Flow(rng.random_range(0..nf))
    };
    let op = match rng.random_range(0..6) {
        0 => UpdOp::Set,
        1 => UpdOp::Add,
        2 => UpdOp::Sub,
        3 => UpdOp::Min,
        4 => UpdOp::Max,
        _ => UpdOp::Ewma(rng.random_range(0..64)),
    };
    UpdDef {
        dst,
        op,
        src: operand(rng, nf, ng),
        shr: shift(rng),
    }
}

/// A random extended machine; every transition is reachable for some condition vector.
fn random_machine(rng: &mut StdRng, n: usize) -> RawMachine {
    let conn: &[u8] = &[
        field::SRC_IP,
        field::DST_IP,
        field::SRC_PORT,
        field::DST_PORT,
    ];
    let scopes: [(&[u8], &[u8], bool); 5] = [
        (&[field::SRC_IP], &[field::SRC_IP], false),
        (&[field::DST_IP], &[field::SRC_IP], false),
        (
            &[field::SRC_IP, field::DST_PORT],
            &[field::SRC_IP, field::DST_PORT],
            false,
        ),
        // Both directions of a connection: one flow.
        (conn, conn, true),
        (
            &[field::DST_IP, field::SRC_IP],
            &[field::SRC_IP, field::DST_IP],
            true,
        ),
    ];
    let (lookup, update_scope, bidirectional) = scopes[rng.random_range(0..scopes.len())];
    let nf = rng.random_range(1..=4u8);
    let ng = rng.random_range(0..=8u8);
    let nc = rng.random_range(1..=8usize);
    let conds: Vec<CondDef> = (0..nc)
        .map(|i| CondDef {
            name: format!("c{i}"),
            a: operand(rng, nf, ng),
            cmp: [Cmp::Lt, Cmp::Le, Cmp::Eq, Cmp::Ne, Cmp::Ge, Cmp::Gt][rng.random_range(0..6)],
            b: operand(rng, nf, ng),
            shr: [shift(rng), shift(rng)],
        })
        .collect();
    // A fixed table (a third of the machines): no timers (an entry leaves only by a
    // transition to DEFAULT, as in the interpreter), and transitions on `table_full`.
    let fixed = rng.random_bool(0.35);
    let mut conds = conds;
    if fixed && conds.len() < 8 {
        conds.push(CondDef {
            name: "table_full".into(),
            a: Opd::TableFull,
            cmp: Cmp::Eq,
            b: Opd::Const(1),
            shr: [0, 0],
        });
    }
    let nc = conds.len();
    let mut m = RawMachine {
        name: format!("ext{n}"),
        lookup: lookup.to_vec(),
        update: update_scope.to_vec(),
        bidirectional,
        states: vec!["DEFAULT".into(), "A".into(), "B".into()],
        flow_regs: (0..nf).map(|i| format!("r{i}")).collect(),
        globals: (0..ng).map(|i| format!("g{i}")).collect(),
        conds,
        transitions: Vec::new(),
        grant: (Vec::new(), 0),
        fixed,
    };
    for _ in 0..rng.random_range(4..=14) {
        let proto = [proto::TCP, proto::UDP, 0][rng.random_range(0..3)];
        let port = if proto == 0 || rng.random_bool(0.3) {
            0
        } else {
            PORTS[rng.random_range(0..PORTS.len())]
        };
        let mut when = Vec::new();
        for c in 0..nc as u8 {
            if rng.random_bool(0.3) {
                when.push((c, rng.random_bool(0.5)));
            }
        }
        let next = if rng.random_bool(0.3) {
            None
        } else {
            Some(rng.random_range(0..3u8))
        };
        let timer = |rng: &mut StdRng| {
            if next.is_some() && !fixed && rng.random_bool(0.4) {
                (rng.random_range(1..=3) * SEC, rng.random_range(0..3u8))
            } else {
                (0, 0)
            }
        };
        let (idle, hard) = (timer(rng), timer(rng));
        m.transitions.push(RawTrans {
            state: rng.random_range(0..3u8),
            dirs: match rng.random_range(0..4) {
                0 => vec![DIR_EGRESS],
                1 => vec![DIR_INGRESS, DIR_EGRESS],
                _ => vec![DIR_INGRESS],
            },
            proto,
            port,
            tcp_flags: if proto == proto::TCP && rng.random_bool(0.3) {
                (tcp::SYN | tcp::ACK, tcp::SYN)
            } else {
                (0, 0)
            },
            drop: rng.random_bool(0.3),
            next,
            idle,
            hard,
            when,
            updates: (0..rng.random_range(0..=5))
                .map(|_| update(rng, nf, ng))
                .collect(),
            acts: Acts {
                mark: rng.random_bool(0.3).then(|| rng.random()),
                dscp: rng.random_bool(0.3).then(|| rng.random_range(0..64)),
                forward: None,
                // (Events are not compared: the kernel's path runs all the same.)
                event: rng.random_bool(0.2),
            },
            ..Default::default()
        });
        // A transition that earlier ones shadow completely is a compile error: drop it.
        if compile(&[], std::slice::from_ref(&m)).is_err() {
            m.transitions.pop();
        }
    }
    m
}

/// The interpreter's key for a kernel state key of machine `m`.
fn flow_key(k: &StateKey, m: &RawMachine, first: usize) -> statewall_common::xfsm::interp::FlowKey {
    let na = m
        .update
        .iter()
        .filter(|f| **f == field::SRC_IP || **f == field::DST_IP)
        .count();
    let np = m
        .update
        .iter()
        .filter(|f| **f == field::SRC_PORT || **f == field::DST_PORT)
        .count();
    let has_proto = m.update.contains(&field::PROTO);
    let _ = first;
    (
        k.machine as usize,
        k.family,
        k.addrs[..na].to_vec(),
        k.ports[..np].to_vec(),
        has_proto.then_some(k.proto),
    )
}

fn entry(v: &StateVal) -> Entry {
    Entry {
        state: v.state,
        idle: (v.idle_deadline, v.idle_rollback),
        hard: (v.hard_deadline, v.hard_rollback),
    }
}

/// True when an entry is DEFAULT at `now`: a deadline passed that rolls it back there.
/// The kernel leaves such an entry in place until a packet looks it up, and skips the
/// lookup once the activity filter says no state can live there; the interpreter looks
/// every packet up and removes it at the next packet of its flow. Either is DEFAULT.
fn expired_to_default(e: &Entry, now: u64) -> bool {
    let due = |t: u64| t != 0 && now >= t;
    let to = if due(e.hard.0) {
        Some(e.hard.1)
    } else if due(e.idle.0) {
        Some(e.idle.1)
    } else {
        None
    };
    to == Some(0)
}

/// Kernel and interpreter tables are equal.
fn same_tables(bed: &mut TestBed, it: &Interp, seed: u64, at: usize, now: u64) {
    let machine = |i: u8| &it.machines[i as usize - it.first];
    // Both tables: the LRU one and the fixed one (keys of fixed machines, only there).
    let mut ks = Vec::new();
    for map in [MAP_STATES, statewall_common::xfsm::MAP_FIXED_STATES] {
        let s: BpfHashMap<&MapData, StateKey, StateVal> = (&*bed.map(map)).try_into().unwrap();
        for (k, v) in s.iter().map(|r| r.unwrap()) {
            let m = machine(k.machine);
            assert_eq!(k.table, m.fixed as u8, "seed {seed}: {k:?} in {map}");
            ks.push((flow_key(&k, m, it.first), entry(&v)));
        }
    }
    ks.retain(|(_, e)| !expired_to_default(e, now));
    ks.sort();
    let is: Vec<_> = it
        .flows
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .filter(|(_, e)| !expired_to_default(e, now))
        .collect();
    assert_eq!(ks, is, "seed {seed} packet {at}: state tables differ");
    let mut kr = Vec::new();
    for map in [MAP_REGS, statewall_common::xfsm::regs::MAP_FIXED_REGS] {
        let r: BpfHashMap<&MapData, StateKey, FlowRegs> = (&*bed.map(map)).try_into().unwrap();
        for (k, v) in r.iter().map(|r| r.unwrap()) {
            assert_eq!(v.lock, 0, "a register lock left taken");
            kr.push((flow_key(&k, machine(k.machine), it.first), v.r));
        }
    }
    kr.sort();
    let ir: Vec<_> = it.regs.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(kr, ir, "seed {seed} packet {at}: per-flow registers differ");
    let g: Array<&MapData, GlobalRegs> = (&*bed.map(MAP_GLOBALS)).try_into().unwrap();
    for (i, want) in it.globals.iter().enumerate() {
        let got = g.get(&((it.first + i) as u32), 0).unwrap();
        assert_eq!(got.lock, 0);
        assert_eq!(
            got.g, *want,
            "seed {seed} packet {at}: global registers of machine {i} differ"
        );
    }
}

/// What the random runs reached, over all scenarios.
#[derive(Default, Debug)]
struct Reach {
    table_full: u64,
    marked: u64,
    dscp_set: u64,
    saturated_high: u64,
    zero_after_sub: u64,
    transitions: u64,
    drops: u64,
    timeouts_crossed: u64,
}

fn scenario(bed: &mut TestBed, seed: u64, packets: usize, reach: &mut Reach) {
    let mut rng = StdRng::seed_from_u64(seed);
    let machines: Vec<RawMachine> = (0..rng.random_range(1..=3))
        .map(|n| random_machine(&mut rng, n))
        .collect();
    let compiled = compile(&[], &machines).unwrap();
    // The bed of the scenario before, emptied: its programs stay verified.
    bed.reset();
    write_tables(bed, &compiled, Some(&[])).unwrap();
    let mut it = Interp::new(machines.clone(), 0);
    it.fixed_cap = 4;
    // Enough sources to fill the fixed table (4 entries).
    let sources: [IpAddr; 7] = [
        "10.19.0.1".parse().unwrap(),
        "10.19.0.2".parse().unwrap(),
        "fd00:19::3".parse().unwrap(),
        "10.19.0.4".parse().unwrap(),
        "10.19.0.5".parse().unwrap(),
        "fd00:19::6".parse().unwrap(),
        "10.19.0.7".parse().unwrap(),
    ];
    let server = |s: &IpAddr| -> IpAddr {
        if s.is_ipv4() {
            "10.19.0.100".parse().unwrap()
        } else {
            "fd00:19::100".parse().unwrap()
        }
    };
    let mut now = 1_000 * SEC;
    for i in 0..packets {
        let step = match rng.random_range(0..10) {
            0 => rng.random_range(1..5) * SEC,
            1..=3 => rng.random_range(1..1500) * 1_000_000,
            _ => rng.random_range(0..50) * 1_000_000,
        };
        if step >= SEC {
            reach.timeouts_crossed += 1;
        }
        now += step;
        let si = rng.random_range(0..sources.len());
        let src = sources[si];
        let p = if rng.random_bool(0.5) {
            proto::TCP
        } else {
            proto::UDP
        };
        let port = if rng.random_bool(0.8) {
            PORTS[rng.random_range(0..PORTS.len())]
        } else {
            rng.random_range(1..65535)
        };
        let egress = rng.random_bool(0.25);
        let (a, b, sport, dport) = if egress {
            (server(&src), src, port, 40000 + si as u16)
        } else {
            (src, server(&src), 40000 + si as u16, port)
        };
        let frame = if p == proto::TCP {
            let flags = if rng.random_bool(0.7) {
                tcp::SYN
            } else {
                rng.random()
            };
            Packet::tcp(a, b, sport, dport, flags).build()
        } else {
            let len = [0, 1, 64, 200, 1400][rng.random_range(0..5)];
            Packet::udp(a, b, sport, dport)
                .payload(&vec![0x5a; len])
                .build()
        };
        bed.freeze(now);
        let (prog, dir) = if egress {
            (statewall::engine::ebpf::PROG_XFSM_EGRESS, DIR_EGRESS)
        } else {
            (statewall::engine::ebpf::PROG_XFSM, DIR_INGRESS)
        };
        // On loopback (index 1): the `in_port` operand reads it.
        let (got, mark, out) = bed.run_skb(prog, &frame, 1);
        let mut info = parse_packet(&frame);
        info.ifindex = 1;
        let off = info.payload_off as usize;
        let payload = &frame[off..off + info.payload_len as usize];
        let want = it.step_outcome(&info, dir, now, payload);
        assert_eq!(
            got == TCX_NEXT,
            want.pass,
            "seed {seed} packet {i}: verdict differs"
        );
        reach.drops += !want.pass as u64;
        if want.pass {
            // The actions: the mark as set, the DSCP read back from the frame as it left
            // (the builder sends 0), the rest of the frame as it came (IPv4 checksum
            // checked by the parser of the rewritten frame).
            assert_eq!(mark, want.mark.unwrap_or(0), "seed {seed} packet {i}: mark");
            let l3 = info.l3_off as usize;
            let dscp = if info.family == 4 {
                out[l3 + 1] >> 2
            } else {
                (out[l3] & 0x0f) << 2 | out[l3 + 1] >> 6
            };
            assert_eq!(dscp, want.dscp.unwrap_or(0), "seed {seed} packet {i}: DSCP");
            if info.family == 4 {
                assert!(
                    ipv4_checksum_ok(&out[l3..l3 + 20]),
                    "seed {seed} packet {i}"
                );
            }
            reach.marked += want.mark.is_some() as u64;
            reach.dscp_set += want.dscp.is_some() as u64;
        }
        if i % 100 == 99 || i + 1 == packets {
            same_tables(bed, &it, seed, i, now);
        }
    }
    let st: aya::maps::PerCpuArray<&MapData, u64> = (&*bed.map(statewall_common::xfsm::MAP_STATS))
        .try_into()
        .unwrap();
    let refused = st
        .get(&(statewall_common::xfsm::Counter::TableFull as u32), 0)
        .unwrap()
        .iter()
        .sum::<u64>();
    reach.table_full += refused;
    assert_eq!(refused > 0, it.fixed_full, "seed {seed}: table full flag");
    let t: aya::maps::PerCpuArray<&MapData, u64> = (&*bed.map(statewall_common::xfsm::MAP_TCOUNT))
        .try_into()
        .unwrap();
    reach.transitions += (0..compiled.counter_names.len() as u32)
        .map(|i| t.get(&i, 0).unwrap().iter().sum::<u64>())
        .sum::<u64>();
    for r in it
        .regs
        .values()
        .flatten()
        .chain(it.globals.iter().flatten())
    {
        reach.saturated_high += (*r == u64::MAX) as u64;
        reach.zero_after_sub += (*r == 0) as u64;
    }
}

/// True when an IPv4 header's checksum holds.
fn ipv4_checksum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[test]
fn kernel_registers_equal_the_interpreter_on_random_machines() {
    let cases = soak_cases(50) as u64;
    let mut reach = Reach::default();
    // A fixed table of 4 entries, which the random flows fill.
    let mut bed = TestBed::with_sizes(&[(statewall_common::xfsm::MAP_FIXED_STATES, 4)]);
    for seed in 0..cases {
        scenario(&mut bed, 0xe65_0000 + seed, 2000, &mut reach);
    }
    common::tally(
        "property: extended-machine packets, kernel = interpreter",
        cases * 2000,
    );
    assert!(
        reach.transitions > cases * 200,
        "{} transitions",
        reach.transitions
    );
    assert!(reach.drops > 0 && reach.timeouts_crossed > 0);
    assert!(reach.marked > 0 && reach.dscp_set > 0, "{reach:?}");
    assert!(reach.table_full > 0, "no fixed table filled up: {reach:?}");
    assert!(reach.saturated_high > 0, "no register reached the maximum");
    assert!(reach.zero_after_sub > 0);
}

/// The time a machine reads as a value (`now`) comes from the precise clock: each of a
/// flow's packets stores `now` in a register, and the stored time lies between the clock
/// read just before and just after the test run (within 20 us). A hook whose machines read no time (knock
/// doors: timeouts only) uses the coarse clock, whose value is the last tick's (up to 4 ms
/// earlier): with it here, the time stored lags the read before the run, and this fails.
#[test]
fn a_machine_that_reads_the_clock_gets_the_precise_one() {
    let m = RawMachine {
        name: "stamp".into(),
        lookup: vec![field::SRC_IP],
        update: vec![field::SRC_IP],
        states: vec!["DEFAULT".into()],
        flow_regs: vec!["t".into()],
        transitions: vec![RawTrans {
            state: 0,
            dirs: vec![DIR_INGRESS],
            proto: proto::UDP,
            port: PORTS[0],
            updates: vec![UpdDef {
                dst: Reg::Flow(0),
                op: UpdOp::Set,
                src: Opd::Now,
                shr: 0,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let compiled = compile(&[], &[m]).unwrap();
    assert!(compiled.reads_clock());
    let mut bed = TestBed::new();
    write_tables(&mut bed, &compiled, None).unwrap();
    bed.freeze(0);
    let a: IpAddr = "10.1.0.7".parse().unwrap();
    let b: IpAddr = "10.1.0.2".parse().unwrap();
    let frame = Packet::udp(a, b, 40000, PORTS[0]).payload(&[1; 8]).build();
    let stored = |bed: &mut TestBed| {
        let r: BpfHashMap<&MapData, StateKey, FlowRegs> = (&*bed.map(MAP_REGS)).try_into().unwrap();
        let v: Vec<FlowRegs> = r.iter().map(|e| e.unwrap().1).collect();
        assert_eq!(v.len(), 1);
        v[0].r[0]
    };
    for round in 0..5 {
        let before = bed.kernel_now();
        assert_eq!(
            bed.run_tc(statewall::engine::ebpf::PROG_XFSM, &frame),
            TCX_NEXT
        );
        let after = bed.kernel_now();
        let t = stored(&mut bed);
        // (20 us of slack: the kernel's fast accessor and user space's clock may differ by
        // a little around a timekeeping update; the coarse clock lags by up to 4 ms.)
        assert!(
            t + 20_000 >= before && t <= after + 20_000,
            "round {round}: stored {t}, clock {before} before the run and {after} after"
        );
        // A few hundred microseconds apart: more than a TSC read, less than a tick.
        while bed.kernel_now() < after + 300_000 {
            std::hint::spin_loop();
        }
    }
}
