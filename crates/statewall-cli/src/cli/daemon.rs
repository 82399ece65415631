//! `statewall daemon`: the daemon's command-line overrides. The command line's root hands
//! them to `statewall::daemon::run`, so that this file sits below the daemon it starts.

use super::prelude::*;
use statewall::daemon::state::Overrides;

/// The subcommand's arguments as the daemon's overrides of its config's `[daemon]` keys.
pub fn overrides(
    paths: Paths,
    listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    no_auth: bool,
    metrics_listen: Option<SocketAddr>,
) -> Overrides {
    Overrides {
        bpffs_root: paths.bpffs_root,
        state_dir: paths.state_dir,
        socket: paths.socket,
        listen,
        token_file,
        no_auth,
        metrics_listen,
    }
}
