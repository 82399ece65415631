//! `statewall bench`: runs the bench's groups (`statewall_harness::bench`), each between
//! two probes of the empty tc program and again while they differ, then prints the report
//! and writes it as JSON (`statewall_harness::bench::report`).

use std::path::Path;

use super::prelude::*;
use statewall_harness::{
    bench::{
        cluster, detect, dynmon, firewall, fwchange, fwnft, goodput, monitor, open, perpacket,
        plot,
        report::{
            self, kernel_release, machine, utc, Attempt, Failed, Report, Row, ATTEMPTS, STEADY,
        },
        spa,
    },
    testrun::TestBed,
};

/// `statewall bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// Test-run repetitions per measurement.
    #[arg(long, default_value_t = report::REPEAT)]
    repeat: u32,
    /// Only the groups that need no namespaces and no real traffic (skips time-to-open,
    /// the cluster, firewall changes, SPA-to-open, the nftables and iperf3 rows and
    /// goodput).
    #[arg(long)]
    testrun_only: bool,
    /// Only this group: open, spa-open, cluster, testrun, detect, firewall,
    /// firewall-changes, monitor, dynmon, spa-verify, firewall-nft, monitor-iperf, goodput.
    #[arg(long)]
    only: Option<String>,
    /// Measure nothing: draw the figures again from the JSON report at --out.
    #[arg(long)]
    redraw: bool,
}

/// Runs the subcommand.
pub async fn run(a: BenchArgs) -> anyhow::Result<i32> {
    let BenchArgs {
        out,
        repeat,
        testrun_only,
        only,
        redraw,
    } = a;
    if redraw {
        let text =
            std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
        let report: Report =
            serde_json::from_str(&text).with_context(|| format!("in {}", out.display()))?;
        let dir = out.parent().unwrap_or(std::path::Path::new("."));
        for f in plot::draw(&report, dir)? {
            println!("figure: {}", f.display());
        }
        return Ok(0);
    }
    let report =
        tokio::task::spawn_blocking(move || measure(&out, repeat, !testrun_only, only.as_deref()))
            .await??;
    report::print(&report);
    let mut rc = 0;
    if !report.failed.is_empty() {
        let groups: Vec<&str> = report.failed.iter().map(|f| f.group.as_str()).collect();
        eprintln!("\nnot measured: {}", groups.join(", "));
        rc = 1;
    }
    if report.rows.iter().any(|r| r.met == Some(false)) {
        eprintln!("\nsome targets were MISSED");
        rc = 1;
    }
    Ok(rc)
}

/// The groups of measurements, in the order they run. The time-to-open groups come first:
/// freeing the firewall bench's large maps keeps the machine busy for a while, which showed
/// in the SPA-to-open figure (about 1 to 2 ms instead of 0.8).
const GROUPS: [&str; 13] = [
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
const NETNS_GROUPS: [&str; 7] = [
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
        "open" => open::rows(),
        "spa-open" => spa::open_rows(),
        "cluster" => cluster::rows(),
        "testrun" => Ok(perpacket::testrun_rows(repeat)),
        "detect" => detect::rows(repeat),
        "firewall" => firewall::rows(repeat),
        "firewall-changes" => fwchange::rows(),
        "monitor" => monitor::rows(repeat),
        "dynmon" => dynmon::rows(),
        "spa-verify" => spa::verify_rows(),
        "firewall-nft" => fwnft::rows(),
        "monitor-iperf" => monitor::iperf_rows(),
        "goodput" => goodput::rows(),
        _ => anyhow::bail!("no benchmark group {group:?}"),
    }
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
/// [`ATTEMPTS`] in all. A group that fails is recorded as not measured ([`Report::failed`])
/// and the others run. Writes JSON to `out`; returns the report.
fn measure(out: &Path, repeat: u32, open: bool, only: Option<&str>) -> anyhow::Result<Report> {
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
            || perpacket::probe(&mut bed, repeat),
        );
        record(&mut report, group, tries);
    }
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    let dir = out.parent().unwrap_or(Path::new("."));
    for f in plot::draw(&report, dir)? {
        println!("figure: {}", f.display());
    }
    Ok(report)
}

/// Adds a group's attempts to the report: its last attempt's rows, or, when it failed, the
/// group as not measured, with every cause.
fn record(report: &mut Report, group: &str, tries: anyhow::Result<Vec<Attempt>>) {
    match tries {
        Ok(tries) => {
            report
                .rows
                .extend(tries.last().map(|a| a.rows.clone()).unwrap_or_default());
            report.attempts.extend(tries);
        }
        Err(e) => {
            eprintln!("{group}: not measured: {e:#}");
            report.failed.push(Failed {
                group: group.into(),
                error: format!("{e:#}"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statewall_harness::bench::report::row;

    fn one_row(target_met: bool) -> Row {
        let mut r = row("x", "empty", &[10.0], vec![50.0], 1, Some(4.0));
        r.met = Some(target_met);
        r
    }

    #[test]
    fn a_failed_group_is_recorded_with_its_causes_and_the_next_is_kept() {
        let mut report = Report::default();
        let mut probes = [30.0, 31.0].into_iter();
        let failing = attempts(
            "g1",
            || Err(anyhow::anyhow!("EPERM").context("live frames")),
            || probes.next().unwrap(),
        );
        record(&mut report, "g1", failing);
        let mut probes = [30.0, 31.0].into_iter();
        let ok = attempts("g2", || Ok(vec![one_row(true)]), || probes.next().unwrap());
        record(&mut report, "g2", ok);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].group, "g1");
        assert_eq!(report.failed[0].error, "live frames: EPERM");
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.attempts.len(), 1);
        assert_eq!(report.attempts[0].group, "g2");
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
}
