//! `statewall bench`.

use super::prelude::*;

/// Runs the subcommand.
pub async fn run(
    out: PathBuf,
    repeat: u32,
    testrun_only: bool,
    only: Option<String>,
    redraw: bool,
) -> anyhow::Result<i32> {
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
