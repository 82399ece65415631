//! `statewall manpages` (hidden): the manual pages.

use super::prelude::*;
use crate::Cli;

/// Runs the subcommand.
pub async fn run(dir: PathBuf) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    Ok(0)
}
