//! `statewall bench`.

use super::prelude::*;

/// `statewall bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// Test-run repetitions per measurement.
    #[arg(long, default_value_t = statewall_harness::bench::REPEAT)]
    repeat: u32,
    /// Only the per-packet test-run figures (skips time-to-open, which starts knockd).
    #[arg(long)]
    testrun_only: bool,
    /// Only this group: open, spa-open, testrun, firewall, monitor, dynmon, spa-verify,
    /// firewall-nft, monitor-iperf.
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
        let report: statewall_harness::bench::Report =
            serde_json::from_str(&text).with_context(|| format!("in {}", out.display()))?;
        let dir = out.parent().unwrap_or(std::path::Path::new("."));
        for f in statewall_harness::bench::plot::draw(&report, dir)? {
            println!("figure: {}", f.display());
        }
        return Ok(0);
    }
    let report = tokio::task::spawn_blocking(move || {
        statewall_harness::bench::run(&out, repeat, !testrun_only, only.as_deref())
    })
    .await??;
    statewall_harness::bench::print(&report);
    if report.rows.iter().any(|r| r.met == Some(false)) {
        eprintln!("\nsome targets were MISSED");
        return Ok(1);
    }
    Ok(0)
}
