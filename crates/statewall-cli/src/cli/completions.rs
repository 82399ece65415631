//! `statewall completions` (hidden): shell completions from the command line's definition.

/// Runs the subcommand on the command line's definition `c` (the binary's root has it).
pub async fn run(mut c: clap::Command, shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut c, "statewall", &mut buf);
    use std::io::Write;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(&buf);
    Ok(0)
}
