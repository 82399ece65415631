//! `statewall demo`.

/// Runs the subcommand.
pub async fn run(keep: bool) -> anyhow::Result<i32> {
    tokio::task::spawn_blocking(move || statewall_harness::demo::run(keep)).await??;
    Ok(0)
}
