//! `statewall teardown`: detach every program, remove every pin, and remove the state
//! the configuration and the API made (the reuse protection stays unless `--purge`).

use super::prelude::*;
use statewall::daemon::{load::load_config, state::Overrides};

/// Runs the subcommand. The paths are the daemon's: its config file's `[daemon]` section
/// with the command line's options over it, as `statewall daemon` resolves them.
pub async fn run(
    config: Option<PathBuf>,
    paths: Paths,
    force: bool,
    purge: bool,
) -> anyhow::Result<i32> {
    let ov = Overrides {
        bpffs_root: paths.bpffs_root,
        state_dir: paths.state_dir,
        socket: paths.socket,
        ..Default::default()
    };
    let d = load_config(config.as_deref(), &ov)?.daemon;
    let (root, state_dir, socket) = (d.bpffs_root, d.state_dir, d.socket);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() && !force {
        anyhow::bail!(
            "a daemon still answers on {}: stop it first (it would attach again and start with empty tables), or pass --force",
            socket.display()
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
