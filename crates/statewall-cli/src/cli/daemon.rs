//! `statewall daemon`: run the daemon.

use super::prelude::*;
use statewall::daemon;

/// Runs the subcommand.
pub async fn run(
    config: Option<PathBuf>,
    paths: Paths,
    listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    no_auth: bool,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<i32> {
    let ov = daemon::Overrides {
        bpffs_root: paths.bpffs_root,
        state_dir: paths.state_dir,
        socket: paths.socket,
        listen,
        token_file,
        no_auth,
        metrics_listen,
    };
    daemon::run(config, ov).await?;
    Ok(0)
}
