//! `statewall bench` (and `make bench`): every figure is the median of several runs, shown
//! beside a baseline measured in the same run, with its target marked MET or MISSED.
//! The table is printed and written as JSON to `target/bench/latest.json`; the command
//! exits non-zero when a target is missed.
//!
//! Per-packet costs come from BPF_PROG_TEST_RUN (the kernel's own mean over `repeat` runs),
//! so they measure the program, not the machine's scheduling.

pub mod cluster;
pub mod daemon;
pub mod detect;
pub mod dynmon;
pub mod firewall;
pub mod fwchange;
pub mod fwnft;
pub mod goodput;
pub mod http;
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
    /// What one run is (how many repetitions it takes the figure over).
    #[serde(default)]
    pub each: String,
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

/// One attempt at a group: the probe (the empty tc program's test-run cost) measured just
/// before and just after it, and the rows it gave.
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct Attempt {
    /// The group.
    pub group: String,
    /// 1 for the first attempt, up to [`ATTEMPTS`].
    pub attempt: usize,
    /// The probe before the group, ns per packet.
    pub probe_before: f64,
    /// The probe after the group, ns per packet.
    pub probe_after: f64,
    /// Whether the two probes are within [`STEADY`] of each other.
    pub steady: bool,
    /// The rows of this attempt.
    pub rows: Vec<Row>,
}

/// The report.
#[derive(Serialize, serde::Deserialize, Debug, Default)]
pub struct Report {
    /// Rows in order: each group's last attempt.
    pub rows: Vec<Row>,
    /// Every attempt of every group, the re-run ones included.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// When the run started (UTC).
    #[serde(default)]
    pub date: String,
    /// The CPU model.
    #[serde(default)]
    pub machine: String,
    /// Kernel release.
    pub kernel: String,
    /// CPUs.
    pub cpus: usize,
}

/// A group is run again (at most `ATTEMPTS - 1` times) when the probe measured before and
/// after it differs by more than this fraction: the machine changed speed under it. A
/// missed target never causes a re-run.
pub const STEADY: f64 = 0.10;
/// Attempts at a group, the first included.
pub const ATTEMPTS: usize = 3;

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
pub(crate) type Subject<'a> = (bool, &'a str, &'a [u8]);

fn time(bed: &mut TestBed, (xdp, prog, frame): Subject<'_>, repeat: u32) -> f64 {
    if xdp {
        ns(bed.time_xdp(prog, frame, repeat))
    } else {
        ns(bed.time_tc(prog, frame, repeat))
    }
}

/// Interleaves runs of a baseline and a subject; returns (baseline runs, subject runs).
pub(crate) fn interleave(
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

/// A row: the median of `runs` (each run being `each`) beside a baseline figure, with an
/// optional bound on their ratio.
pub(crate) fn ratio_row(
    name: &str,
    unit: &str,
    runs: Vec<f64>,
    each: String,
    base_name: &str,
    base: f64,
    max_ratio: Option<f64>,
) -> Row {
    let value = median(&runs);
    let ratio = value / base;
    Row {
        name: name.into(),
        unit: unit.into(),
        value,
        runs,
        each,
        baseline: base_name.into(),
        baseline_value: base,
        ratio,
        delta: value - base,
        target: max_ratio.map(|t| format!("<= {t}x")),
        met: max_ratio.map(|t| ratio <= t),
    }
}

/// A per-packet row from test runs of `repeat` repetitions: medians of the subject's and
/// the baseline's runs, with an optional bound on their ratio.
pub(crate) fn row(
    name: &str,
    base_name: &str,
    b: &[f64],
    s: Vec<f64>,
    repeat: u32,
    max_ratio: Option<f64>,
) -> Row {
    ratio_row(
        name,
        "ns/packet",
        s,
        format!("{repeat} test runs"),
        base_name,
        median(b),
        max_ratio,
    )
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

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The CPU model, from `/proc/cpuinfo`.
fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM` (UTC; days to a civil date after
/// H. Hinnant's algorithm).
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A figure with three decimals below 1 (0.194 ms), two below 10 and one above, so that a
/// sub-millisecond median is not printed as "0.2".
fn figure(v: f64, signed: bool) -> String {
    let a = v.abs();
    let places = if a > 0.0 && a < 1.0 {
        3
    } else if a < 10.0 {
        2
    } else {
        1
    };
    if signed {
        format!("{v:+.places$}")
    } else {
        format!("{v:.places$}")
    }
}

/// A ratio with two decimals, four below 0.1 (so that 0.0504 against a target of 0.05x
/// does not read as 0.05 and MISSED).
fn ratio_text(r: f64) -> String {
    if r.abs() < 0.1 && r != 0.0 {
        format!("{r:.4}")
    } else {
        format!("{r:.2}")
    }
}

/// Prints the table as Markdown, then every group that was run again and why.
pub fn print(report: &Report) {
    println!(
        "statewall bench, {} UTC: {}, {} CPUs, kernel {}; each figure is the median of {RUNS} runs unless its row says otherwise",
        report.date, report.machine, report.cpus, report.kernel
    );
    println!();
    println!(
        "| measurement | median | each run | baseline | ratio | above baseline | target | result |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &report.rows {
        println!(
            "| {} | {} {} | {} | {}: {} | {} | {} | {} | {} |",
            r.name,
            figure(r.value, false),
            r.unit,
            if r.each.is_empty() { "-" } else { &r.each },
            r.baseline,
            figure(r.baseline_value, false),
            ratio_text(r.ratio),
            figure(r.delta, true),
            r.target.as_deref().unwrap_or("-"),
            match r.met {
                Some(true) => "MET",
                Some(false) => "MISSED",
                None => "-",
            }
        );
    }
    println!();
    let again: Vec<&Attempt> = report.attempts.iter().filter(|a| !a.steady).collect();
    if again.is_empty() {
        println!(
            "Every group ran once: the empty tc program's cost before and after each differed \
             by at most {:.0}%.",
            STEADY * 100.0
        );
    }
    for a in again {
        println!(
            "{} (attempt {} of at most {ATTEMPTS}): the empty tc program took {:.1} ns before \
             and {:.1} ns after ({:+.0}%){}",
            a.group,
            a.attempt,
            a.probe_before,
            a.probe_after,
            (a.probe_after / a.probe_before - 1.0) * 100.0,
            if a.attempt < ATTEMPTS {
                "; run again"
            } else {
                "; kept, as the last attempt"
            }
        );
    }
}

/// The groups of measurements, in the order they run. The time-to-open groups come first:
/// freeing the firewall bench's large maps keeps the machine busy for a while, which showed
/// in the SPA-to-open figure (about 1 to 2 ms instead of 0.8).
pub const GROUPS: [&str; 13] = [
    "open",
    "spa-open",
    "cluster",
    "testrun",
    "detect",
    "firewall",
    "firewall-changes",
    "monitor",
    "dynmon",
    "spa-verify",
    "firewall-nft",
    "monitor-iperf",
    "goodput",
];

/// The groups that need namespaces and real traffic (skipped by `--testrun-only`).
pub const NETNS_GROUPS: [&str; 7] = [
    "open",
    "cluster",
    "firewall-changes",
    "spa-open",
    "firewall-nft",
    "monitor-iperf",
    "goodput",
];

/// The rows of one group.
fn group_rows(group: &str, repeat: u32) -> anyhow::Result<Vec<Row>> {
    match group {
        "open" => crate::bench::open::rows(),
        "spa-open" => crate::bench::spa::open_rows(),
        "cluster" => crate::bench::cluster::rows(),
        "testrun" => Ok(testrun_rows(repeat)),
        "detect" => crate::bench::detect::rows(repeat),
        "firewall" => crate::bench::firewall::rows(repeat),
        "firewall-changes" => crate::bench::fwchange::rows(),
        "monitor" => crate::bench::monitor::rows(repeat),
        "dynmon" => crate::bench::dynmon::rows(),
        "spa-verify" => crate::bench::spa::verify_rows(),
        "firewall-nft" => crate::bench::fwnft::rows(),
        "monitor-iperf" => crate::bench::monitor::iperf_rows(),
        "goodput" => crate::bench::goodput::rows(),
        _ => anyhow::bail!("no benchmark group {group:?}"),
    }
}

/// The probe: the empty tc program's test-run cost, median of [`RUNS`] runs.
fn probe(bed: &mut TestBed, repeat: u32) -> f64 {
    let a = "10.1.0.1".parse().unwrap();
    let b = "10.1.0.2".parse().unwrap();
    let syn = Packet::tcp(a, b, 40000, 8080, 0x02).build();
    let runs: Vec<f64> = (0..RUNS)
        .map(|_| time(bed, (false, ebpf::PROG_EMPTY_TC, &syn), repeat))
        .collect();
    median(&runs)
}

/// Runs one group between two probes, and again (up to [`ATTEMPTS`] in all) while they
/// differ by more than [`STEADY`]; returns every attempt, the one to report last.
fn attempts(
    group: &str,
    mut rows: impl FnMut() -> anyhow::Result<Vec<Row>>,
    mut probe: impl FnMut() -> f64,
) -> anyhow::Result<Vec<Attempt>> {
    let mut out = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let probe_before = probe();
        let rows = rows()?;
        let probe_after = probe();
        let steady = (probe_after - probe_before).abs() <= STEADY * probe_before;
        out.push(Attempt {
            group: group.into(),
            attempt,
            probe_before,
            probe_after,
            steady,
            rows,
        });
        if steady {
            break;
        }
        if attempt < ATTEMPTS {
            eprintln!(
                "{group}: the empty tc program took {probe_before:.1} ns before and \
                 {probe_after:.1} ns after: running the group again"
            );
        }
    }
    Ok(out)
}

/// Runs every group (the netns ones only with `open`), or only the group `only`; a group
/// whose probe before and after differs by more than [`STEADY`] runs again, up to
/// [`ATTEMPTS`] in all. Writes JSON to `out`; returns the report.
pub fn run(out: &Path, repeat: u32, open: bool, only: Option<&str>) -> anyhow::Result<Report> {
    if let Some(o) = only {
        anyhow::ensure!(
            GROUPS.contains(&o),
            "no benchmark group {o:?} (groups: {})",
            GROUPS.join(", ")
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut report = Report {
        date: utc(now),
        machine: machine(),
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
    let mut bed = TestBed::new();
    for group in GROUPS.iter().copied().filter(|g| want(g)) {
        let tries = attempts(
            group,
            || group_rows(group, repeat),
            || probe(&mut bed, repeat),
        )?;
        report
            .rows
            .extend(tries.last().map(|a| a.rows.clone()).unwrap_or_default());
        report.attempts.extend(tries);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_three_digits_below_one_and_ratios_below_a_tenth() {
        assert_eq!(figure(0.194, false), "0.194");
        assert_eq!(figure(-3.21, true), "-3.21");
        assert_eq!(figure(1135.24, false), "1135.2");
        assert_eq!(figure(0.0, true), "+0.00");
        assert_eq!(ratio_text(0.0504), "0.0504");
        assert_eq!(ratio_text(0.0496), "0.0496");
        assert_eq!(ratio_text(1.2345), "1.23");
    }

    fn one_row(target_met: bool) -> Row {
        let mut r = row("x", "empty", &[10.0], vec![50.0], 1, Some(4.0));
        r.met = Some(target_met);
        r
    }

    #[test]
    fn a_group_runs_again_only_while_its_probes_differ() {
        // Steady at once: one attempt, even with a missed target.
        let mut probes = [30.0, 31.0].into_iter();
        let a = attempts("g", || Ok(vec![one_row(false)]), || probes.next().unwrap()).unwrap();
        assert_eq!(a.len(), 1);
        assert!(a[0].steady);
        // 20% apart, then steady: two attempts, both kept.
        let mut probes = [30.0, 36.0, 30.0, 32.9].into_iter();
        let mut n = 0;
        let a = attempts(
            "g",
            || {
                n += 1;
                Ok(vec![one_row(true)])
            },
            || probes.next().unwrap(),
        )
        .unwrap();
        assert_eq!((a.len(), n), (2, 2));
        assert!(!a[0].steady && a[1].steady);
        // Never steady: three attempts at most.
        let mut p = 10.0;
        let a = attempts(
            "g",
            || Ok(vec![]),
            || {
                p *= 1.5;
                p
            },
        )
        .unwrap();
        assert_eq!(a.len(), ATTEMPTS);
        assert!(a.iter().all(|a| !a.steady));
    }

    #[test]
    fn targets_are_ratios_to_the_baseline() {
        let r = row(
            "x",
            "empty tc program",
            &[20.0, 20.0],
            vec![79.0, 81.0],
            7,
            Some(4.0),
        );
        assert_eq!(
            (r.ratio, r.met, r.each.as_str()),
            (4.0, Some(true), "7 test runs")
        );
        let r = row("x", "empty tc program", &[20.0], vec![81.0], 7, Some(4.0));
        assert_eq!(r.met, Some(false));
        assert_eq!(r.target.as_deref(), Some("<= 4x"));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_868_740), "2000-02-29 23:59");
        assert_eq!(utc(1_796_281_500), "2026-12-03 07:05");
    }
}
