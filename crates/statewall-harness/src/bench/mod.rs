//! `statewall bench` (and `make bench`): every figure is the median of several runs, shown
//! beside a baseline measured in the same run, with its target marked MET or MISSED.
//! The table is printed and written as JSON to `target/bench/latest.json`; the command
//! exits non-zero when a target is missed.
//!
//! Per-packet costs come from BPF_PROG_TEST_RUN (the kernel's own mean over `repeat` runs),
//! so they measure the program, not the machine's scheduling.

pub mod dynmon;
pub mod firewall;
pub mod fwnft;
pub mod monitor;
pub mod open;
pub mod plot;
pub mod spa;

use std::{path::Path, time::Duration};

use serde::Serialize;

use crate::{packet::Packet, testrun::TestBed};
use statewall::engine::ebpf;

/// Runs of each measurement (the median is reported).
pub const RUNS: usize = 5;
/// Test-run repetitions inside the kernel per run.
pub const REPEAT: u32 = 1_000_000;

/// One row of the table.
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Unit of `value`.
    pub unit: String,
    /// Median.
    pub value: f64,
    /// Every run.
    pub runs: Vec<f64>,
    /// The baseline's name.
    pub baseline: String,
    /// The baseline's median, in the same unit.
    pub baseline_value: f64,
    /// `value / baseline_value`.
    pub ratio: f64,
    /// Extra figure compared with the target, e.g. ns above the baseline.
    pub delta: f64,
    /// The target, in words.
    pub target: Option<String>,
    /// Whether the target was met (None when there is no target).
    pub met: Option<bool>,
}

/// The report.
#[derive(Serialize, serde::Deserialize, Debug, Default)]
pub struct Report {
    /// Rows in order.
    pub rows: Vec<Row>,
    /// Kernel release.
    pub kernel: String,
    /// CPUs.
    pub cpus: usize,
}

/// Median of a slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// A program to time: tc or XDP, its name, the frame.
type Subject<'a> = (bool, &'a str, &'a [u8]);

fn time(bed: &mut TestBed, (xdp, prog, frame): Subject<'_>, repeat: u32) -> f64 {
    if xdp {
        ns(bed.time_xdp(prog, frame, repeat))
    } else {
        ns(bed.time_tc(prog, frame, repeat))
    }
}

/// Interleaves runs of a baseline and a subject; returns (baseline runs, subject runs).
fn interleave(
    bed: &mut TestBed,
    repeat: u32,
    base: Subject<'_>,
    subj: Subject<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        b.push(time(bed, base, repeat));
        s.push(time(bed, subj, repeat));
    }
    (b, s)
}

/// A per-packet row: medians of the subject's and the baseline's runs, with an optional
/// bound on the difference.
pub(crate) fn row(
    name: &str,
    base_name: &str,
    b: &[f64],
    s: Vec<f64>,
    max_delta: Option<f64>,
) -> Row {
    let (bm, sm) = (median(b), median(&s));
    let delta = sm - bm;
    Row {
        name: name.into(),
        unit: "ns/packet".into(),
        value: sm,
        runs: s,
        baseline: base_name.into(),
        baseline_value: bm,
        ratio: sm / bm,
        delta,
        target: max_delta.map(|t| format!("<= {t} ns above {base_name}")),
        met: max_delta.map(|t| delta <= t),
    }
}

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
        None,
    ));
    rows.push(row(
        "empty tc program (test-run)",
        "empty XDP program",
        &xdp,
        tc,
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
        Some(60.0),
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
        Some(100.0),
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
        Some(60.0),
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
        None,
    ));
    rows
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Prints the table as Markdown.
pub fn print(report: &Report) {
    println!(
        "statewall bench: kernel {}, {} CPUs, median of {RUNS} runs",
        report.kernel, report.cpus
    );
    println!();
    println!("| measurement | median | baseline | ratio | above baseline | target | result |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &report.rows {
        println!(
            "| {} | {:.1} {} | {}: {:.1} | {:.2} | {:+.1} | {} | {} |",
            r.name,
            r.value,
            r.unit,
            r.baseline,
            r.baseline_value,
            r.ratio,
            r.delta,
            r.target.as_deref().unwrap_or("-"),
            match r.met {
                Some(true) => "MET",
                Some(false) => "MISSED",
                None => "-",
            }
        );
    }
}

/// The groups of measurements, in the order they run. The time-to-open groups come first:
/// freeing the firewall bench's large maps keeps the machine busy for a while, which showed
/// in the SPA-to-open figure (about 1 to 2 ms instead of 0.8).
pub const GROUPS: [&str; 9] = [
    "open",
    "spa-open",
    "testrun",
    "firewall",
    "monitor",
    "dynmon",
    "spa-verify",
    "firewall-nft",
    "monitor-iperf",
];

/// The groups that need namespaces and real traffic (skipped by `--testrun-only`).
pub const NETNS_GROUPS: [&str; 4] = ["open", "spa-open", "firewall-nft", "monitor-iperf"];

/// Runs every group (the netns ones only with `open`), or only the group `only`; writes
/// JSON to `out`; returns the report.
pub fn run(out: &Path, repeat: u32, open: bool, only: Option<&str>) -> anyhow::Result<Report> {
    if let Some(o) = only {
        anyhow::ensure!(
            GROUPS.contains(&o),
            "no benchmark group {o:?} (groups: {})",
            GROUPS.join(", ")
        );
    }
    let mut report = Report {
        kernel: kernel_release(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ..Default::default()
    };
    let want = |g: &str| match only {
        Some(o) => o == g,
        None => open || !NETNS_GROUPS.contains(&g),
    };
    if want("open") {
        report.rows.extend(crate::bench::open::rows()?);
    }
    if want("spa-open") {
        report.rows.extend(crate::bench::spa::open_rows()?);
    }
    if want("testrun") {
        report.rows.extend(testrun_rows(repeat));
    }
    if want("firewall") {
        report.rows.extend(crate::bench::firewall::rows(repeat)?);
    }
    if want("monitor") {
        report.rows.extend(crate::bench::monitor::rows(repeat)?);
    }
    if want("dynmon") {
        report.rows.extend(crate::bench::dynmon::rows()?);
    }
    if want("spa-verify") {
        report.rows.extend(crate::bench::spa::verify_rows()?);
    }
    if want("firewall-nft") {
        report.rows.extend(crate::bench::fwnft::rows()?);
    }
    if want("monitor-iperf") {
        report.rows.extend(crate::bench::monitor::iperf_rows()?);
    }
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    let dir = out.parent().unwrap_or(Path::new("."));
    for f in crate::bench::plot::draw(&report, dir)? {
        println!("figure: {}", f.display());
    }
    Ok(report)
}
