//! `statewall teardown`: detach every program, remove every pin, and remove the state
//! the configuration and the API made (the reuse protection stays unless `--purge`).

use super::prelude::*;

/// Runs the subcommand.
pub async fn run(paths: Paths, force: bool, purge: bool) -> anyhow::Result<i32> {
    let root = paths
        .bpffs_root
        .clone()
        .unwrap_or_else(|| statewall::engine::pins::DEFAULT_ROOT.into());
    let state_dir = paths
        .state_dir
        .clone()
        .unwrap_or_else(|| statewall::config::DaemonConfig::default().state_dir);
    if std::os::unix::net::UnixStream::connect(paths.socket()).is_ok() && !force {
        anyhow::bail!(
            "a daemon still answers on {}: stop it first (it would attach again and start with empty tables), or pass --force",
            paths.socket().display()
        );
    }
    let n = statewall::engine::teardown(&statewall::engine::pins::Pins::new(&root))
        .with_context(|| format!("tearing down {}", root.display()))?;
    println!("detached {n} link(s), removed {}", root.display());
    let cleared = statewall::daemon::durable::clear(&state_dir, purge)
        .with_context(|| format!("clearing {}", state_dir.display()))?;
    for i in &cleared.removed {
        println!("removed {} ({})", state_dir.join(&i.file).display(), i.what);
    }
    for i in &cleared.kept {
        println!(
            "kept {} ({}; --purge removes it)",
            state_dir.join(&i.file).display(),
            i.what
        );
    }
    Ok(0)
}
