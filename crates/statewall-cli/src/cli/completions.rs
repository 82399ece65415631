//! `statewall completions` (hidden): shell completions from the command line's definition.

use super::prelude::*;
use crate::Cli;

/// Runs the subcommand.
pub async fn run(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut c = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut c, "statewall", &mut buf);
    use std::io::Write;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(&buf);
    Ok(0)
}
