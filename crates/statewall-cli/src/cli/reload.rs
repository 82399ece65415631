//! `statewall reload`: ask the daemon to re-read its config.

use super::prelude::*;

/// Runs the subcommand.
pub async fn run(paths: Paths) -> anyhow::Result<i32> {
    client::request(&paths.socket(), "POST", "/api/v1/reload", None)
        .await?
        .ok()?;
    println!("reloaded");
    Ok(0)
}
