//! A `statewall daemon` of this build for the benchmarks that need the whole daemon: its
//! own config, state directory, socket and pins, all removed when it is dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// A running daemon.
pub struct Daemon {
    child: Child,
    root: String,
    /// Its scratch directory (config, state, socket, `daemon.log`).
    pub dir: PathBuf,
    /// Its API socket.
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = statewall::engine::teardown(&statewall::engine::pins::Pins::new(&self.root));
        if std::env::var_os("KEEP_BENCH_DAEMON").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Daemon {
    /// Starts the daemon with `config` (TOML) and waits (at most 60 s) until it answers.
    pub fn start(tag: &str, config: &str) -> anyhow::Result<Daemon> {
        let id = format!("{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("statewall-bench-{id}"));
        std::fs::create_dir_all(&dir)?;
        let root = format!("/sys/fs/bpf/statewall-bench-{id}");
        let cfg = dir.join("statewall.toml");
        std::fs::write(&cfg, config)?;
        let socket = dir.join("api.sock");
        let child = Command::new(std::env::current_exe()?)
            .arg("daemon")
            .arg("--config")
            .arg(&cfg)
            .arg("--bpffs-root")
            .arg(&root)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log"))?)
            .spawn()
            .context("starting the daemon")?;
        let d = Daemon {
            child,
            root,
            dir,
            socket,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(r) =
                statewall::client::request_blocking(&d.socket, "GET", "/api/v1/status", None)
            {
                if r.status == 200 {
                    return Ok(d);
                }
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the daemon did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One request; fails unless the answer is 2xx.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<statewall::client::Reply> {
        statewall::client::request_blocking(&self.socket, method, path, Some(body.to_string()))?
            .ok()
            .with_context(|| format!("{method} {path}"))
    }
}
