//! The `testrun` group: the per-packet cost of the empty programs, the gate and a knock
//! door from BPF_PROG_TEST_RUN, the example machines beside hand-written programs doing
//! the same job, and the probe each group is run between (the empty tc program).

use crate::{
    bench::report::{median, row, Row, RUNS},
    packet::Packet,
    testrun::{interleave, time, TestBed},
};
use statewall::engine::ebpf;

/// The test-run rows: empty programs and the gate.
pub fn testrun_rows(repeat: u32) -> Vec<Row> {
    use aya::maps::{Array, MapData};
    use statewall_common::maps::{GATE_SUMMARY_SLOT, GATE_TCP, MAP_GATE_PORTS};

    let mut bed = TestBed::new();
    let a = "10.1.0.1".parse().unwrap();
    let b = "10.1.0.2".parse().unwrap();
    let syn = Packet::tcp(a, b, 40000, 8080, 0x02).build();
    let to22 = Packet::tcp(a, b, 40000, 22, 0x02).build();
    let mut rows = Vec::new();

    // Baselines: the empty programs, XDP against tc.
    let (xdp, tc) = interleave(
        &mut bed,
        repeat,
        (true, ebpf::PROG_EMPTY_XDP, &syn),
        (false, ebpf::PROG_EMPTY_TC, &syn),
    );
    rows.push(row(
        "empty XDP program (test-run)",
        "empty XDP program",
        &xdp,
        xdp.clone(),
        repeat,
        None,
    ));
    rows.push(row(
        "empty tc program (test-run)",
        "empty XDP program",
        &xdp,
        tc,
        repeat,
        None,
    ));

    // The gate with one protected port: traffic to another port (the common case), then
    // a SYN to the protected port from a source without a grant.
    {
        let mut ports: Array<&mut MapData, u8> = bed.map(MAP_GATE_PORTS).try_into().unwrap();
        ports.set(22, GATE_TCP, 0).unwrap();
        ports.set(GATE_SUMMARY_SLOT, GATE_TCP, 0).unwrap();
    }
    let (base, gate) = interleave(
        &mut bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &syn),
        (false, ebpf::PROG_GATE, &syn),
    );
    rows.push(row(
        "gate, packet to an unprotected port",
        "empty tc program",
        &base,
        gate,
        repeat,
        Some(2.9),
    ));
    let (base, drop) = interleave(
        &mut bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &to22),
        (false, ebpf::PROG_GATE, &to22),
    );
    rows.push(row(
        "gate, SYN to a protected port, no grant",
        "empty tc program",
        &base,
        drop,
        repeat,
        Some(4.1),
    ));

    // xfsm with one knock door (7000, 8000/udp, 9000 -> tcp/22): a packet from a source with
    // no state to a port in no sequence, then a knock (the first step; repeated runs of it
    // take the "repeat" transition of the state it leads to).
    let mut door = statewall::xfsm::KnockDoor::new(
        "bench",
        vec![(6, 7000), (17, 8000), (6, 9000)],
        vec![(6, 22)],
    );
    door.lockout = Some((5, 60_000_000_000, 300_000_000_000));
    let compiled = statewall::xfsm::compile(&[door], &[]).expect("bench door");
    statewall::xfsm::write_tables(&mut bed, &compiled, Some(&[])).expect("write tables");
    let (base, x) = interleave(
        &mut bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &syn),
        (false, ebpf::PROG_XFSM, &syn),
    );
    rows.push(row(
        "xfsm, non-knock packet from a source with no state",
        "empty tc program",
        &base,
        x,
        repeat,
        Some(2.9),
    ));
    let knock = Packet::tcp(a, b, 40000, 7000, 0x02).build();
    let (base, x) = interleave(
        &mut bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &knock),
        (false, ebpf::PROG_XFSM, &knock),
    );
    rows.push(row(
        "xfsm, knock packet (state lookup and transition)",
        "empty tc program",
        &base,
        x,
        repeat,
        Some(6.0),
    ));
    rows.extend(policer_rows(&mut bed, repeat));
    rows.extend(syn_guard_rows(&mut bed, repeat));
    rows
}

/// The SYN-flood machine of examples/efsm/syn-flood.toml (global registers under their
/// lock, a per-flow state) beside the same guard written by hand, on a SYN during a
/// flood (both over their threshold: the flow alternates between dropped and admitted on
/// its "retransmission", the same path in both).
fn syn_guard_rows(bed: &mut TestBed, repeat: u32) -> Vec<Row> {
    const EXAMPLE: &str = include_str!("../../../../examples/efsm/syn-flood.toml");
    let cfg = statewall::config::Config::parse(EXAMPLE, "examples/efsm/syn-flood.toml")
        .expect("the SYN-flood example parses");
    let raws = cfg.raw_machines().expect("the SYN-flood example resolves");
    let compiled = statewall::xfsm::compile(&[], &raws).expect("the SYN-flood machine compiles");
    statewall::xfsm::write_tables(bed, &compiled, None).expect("write tables");
    let a = "10.1.0.7".parse().unwrap();
    let b = "10.1.0.2".parse().unwrap();
    let syn = Packet::tcp(a, b, 40000, 443, 0x02).build();
    // Both over the threshold before timing: 300 SYNs each, clock frozen in one window.
    let now = bed.kernel_now();
    bed.freeze(now);
    for _ in 0..300 {
        bed.run_tc(ebpf::PROG_XFSM, &syn);
        bed.run_tc(ebpf::PROG_BENCH_SYNGUARD, &syn);
    }
    let (hand, machine) = interleave(
        bed,
        repeat,
        (false, ebpf::PROG_BENCH_SYNGUARD, &syn),
        (false, ebpf::PROG_XFSM, &syn),
    );
    let rows = vec![row(
        "xfsm, SYN-flood machine (examples/efsm), SYN during a flood",
        "SYN guard written by hand",
        &hand,
        machine,
        repeat,
        Some(1.5),
    )];
    bed.freeze(0);
    rows
}

/// The extended machine of examples/efsm/policer.toml (registers, two conditions, updates
/// under the flow's lock) beside the same policer written by hand, on UDP from a source
/// that has a bucket; and a TCP packet the machine has no transition for.
fn policer_rows(bed: &mut TestBed, repeat: u32) -> Vec<Row> {
    const EXAMPLE: &str = include_str!("../../../../examples/efsm/policer.toml");
    let cfg = statewall::config::Config::parse(EXAMPLE, "examples/efsm/policer.toml")
        .expect("the policer example parses");
    let raws = cfg.raw_machines().expect("the policer example resolves");
    let compiled = statewall::xfsm::compile(&[], &raws).expect("the policer compiles");
    // The inactive generation holds the knock door's ports.
    let known: Vec<u16> = vec![7000, 8000, 9000];
    statewall::xfsm::write_tables(bed, &compiled, Some(&known)).expect("write tables");
    let a = "10.1.0.7".parse().unwrap();
    let b = "10.1.0.2".parse().unwrap();
    let udp = Packet::udp(a, b, 40000, 5201).payload(&[0x5a; 100]).build();
    let syn = Packet::tcp(a, b, 40000, 8080, 0x02).build();
    let mut rows = Vec::new();
    let (base, hand) = interleave(
        bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &udp),
        (false, ebpf::PROG_BENCH_POLICER, &udp),
    );
    rows.push(row(
        "policer written by hand (aya), UDP packet",
        "empty tc program",
        &base,
        hand.clone(),
        repeat,
        None,
    ));
    let (hand, machine) = interleave(
        bed,
        repeat,
        (false, ebpf::PROG_BENCH_POLICER, &udp),
        (false, ebpf::PROG_XFSM, &udp),
    );
    rows.push(row(
        "xfsm, policer machine (examples/efsm), UDP packet",
        "policer written by hand",
        &hand,
        machine,
        repeat,
        Some(1.5),
    ));
    let (base, x) = interleave(
        bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &syn),
        (false, ebpf::PROG_XFSM, &syn),
    );
    rows.push(row(
        "xfsm, policer machine, TCP packet it has no transition for",
        "empty tc program",
        &base,
        x,
        repeat,
        Some(2.9),
    ));
    rows
}

/// The probe: the empty tc program's test-run cost, median of [`RUNS`] runs.
pub fn probe(bed: &mut TestBed, repeat: u32) -> f64 {
    let a = "10.1.0.1".parse().unwrap();
    let b = "10.1.0.2".parse().unwrap();
    let syn = Packet::tcp(a, b, 40000, 8080, 0x02).build();
    let runs: Vec<f64> = (0..RUNS)
        .map(|_| time(bed, (false, ebpf::PROG_EMPTY_TC, &syn), repeat))
        .collect();
    median(&runs)
}
