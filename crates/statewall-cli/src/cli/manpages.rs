//! `statewall manpages` (hidden): the manual pages.

use super::prelude::*;

/// Runs the subcommand on the command line's definition `c` (the binary's root has it).
pub async fn run(c: clap::Command, dir: PathBuf) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(c, &dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    Ok(0)
}
