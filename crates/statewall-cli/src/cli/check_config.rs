//! `statewall check-config`: check a config file without running anything.

use super::prelude::*;

/// Runs the subcommand.
pub async fn run(file: PathBuf) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let cfg = statewall::config::Config::parse(&text, &file.display().to_string())?;
    println!(
        "{}: ok ({} interfaces, {} knock doors, {} monitors)",
        file.display(),
        cfg.interfaces.len(),
        cfg.knocks.len(),
        cfg.monitors.len()
    );
    Ok(0)
}
