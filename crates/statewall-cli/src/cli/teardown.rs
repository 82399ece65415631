//! `statewall teardown`: detach every program and remove every pin.

use super::prelude::*;

/// Runs the subcommand.
pub async fn run(paths: Paths, force: bool) -> anyhow::Result<i32> {
    let root = paths
        .bpffs_root
        .clone()
        .unwrap_or_else(|| statewall::engine::pins::DEFAULT_ROOT.into());
    if std::os::unix::net::UnixStream::connect(paths.socket()).is_ok() && !force {
        anyhow::bail!(
            "a daemon still answers on {}: stop it first (it would attach again and start with empty tables), or pass --force",
            paths.socket().display()
        );
    }
    let n = statewall::engine::teardown(&statewall::engine::pins::Pins::new(&root))
        .with_context(|| format!("tearing down {}", root.display()))?;
    println!("detached {n} link(s), removed {}", root.display());
    Ok(0)
}
