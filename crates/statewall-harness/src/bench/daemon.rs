//! A `statewall daemon` of this build for the benchmarks that need the whole daemon: its
//! own config, state directory, socket and pins, all removed when it is dropped. And the
//! time from an SPA packet to an open port, which the `spa` and `cluster` groups measure
//! (one host, and a fleet).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::netns::Pair;
use statewall::spa::client::{self as spa, FwknopMessage};

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

/// The port SPA opens.
pub const PORT: u16 = 2222;

/// A port left open (the floor of a connect).
pub const OPEN_PORT: u16 = 2223;

/// A daemon on `pair` with one fwknop stanza for tcp/[`PORT`] and `extra` config text.
pub fn start_daemon(
    pair: &Pair,
    k: &str,
    h: &str,
    tag: &str,
    extra: &str,
) -> anyhow::Result<Daemon> {
    let conf = format!(
        "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[[spa.fwknop]]\nsource = [\"ANY\"]\nopen_ports = [\"tcp/{PORT}\"]\nkey_base64 = \"{k}\"\nhmac_key_base64 = \"{h}\"\n{extra}",
        pair.server_if, pair.server.name
    );
    Daemon::start(tag, &conf)
}

/// A fresh fwknop packet (now's timestamp, a new random nonce) by which `client` asks for
/// tcp/[`PORT`], under the keys `k` and `h`.
pub fn open_packet(client: Ipv4Addr, (k, h): (&[u8; 32], &[u8; 64])) -> anyhow::Result<String> {
    let m = FwknopMessage {
        user: "bench".into(),
        ts: statewall::engine::clock::unix_secs(),
        allow: client.into(),
        access: vec![(6, PORT)],
        timeout: None,
    };
    Ok(spa::fwknop_packet(&m, k, h, 256)?)
}

/// `n` times: the time from sending a fresh fwknop packet until tcp/[`PORT`] answers (µs),
/// and before it the time a connect to an open port takes (the namespaces' floor). The
/// grant is revoked before each run. Between two connect attempts the client waits
/// `pause` (zero: it tries again at once, and keeps a CPU busy doing so).
pub fn spa_to_open(
    pair: &Pair,
    d: &Daemon,
    (k, h): (&[u8; 32], &[u8; 64]),
    n: usize,
    pause: Duration,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let sv = pair.server_v4;
    let sock = d.socket.clone();
    let to = SocketAddr::from((sv, PORT));
    let open = SocketAddr::from((sv, OPEN_PORT));
    let cv = pair.client_v4;
    let mut runs = Vec::new();
    let mut base = Vec::new();
    for _ in 0..n {
        // One SPA packet per source per rate_interval (200 ms) after a burst of 5.
        std::thread::sleep(Duration::from_millis(250));
        let _ = statewall::client::request_blocking(
            &sock,
            "DELETE",
            &format!("/api/v1/gate/grants?addr={cv}&proto=tcp&port={PORT}"),
            None,
        );
        let pkt = open_packet(cv, (k, h))?;
        let r = pair.client.run(|| -> anyhow::Result<(f64, f64)> {
            if crate::netns::try_connect(to) {
                bail!("tcp/{PORT} answers before SPA: the gate is not working");
            }
            let t0 = Instant::now();
            while !crate::netns::try_connect(open) {
                if t0.elapsed() > Duration::from_secs(3) {
                    bail!("no answer from the open port");
                }
            }
            let b = t0.elapsed().as_nanos() as f64 / 1e3;
            let t0 = Instant::now();
            spa::send_udp(SocketAddr::from((sv, 62201)), pkt.as_bytes())?;
            loop {
                if crate::netns::try_connect(to) {
                    return Ok((t0.elapsed().as_nanos() as f64 / 1e3, b));
                }
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                if t0.elapsed() > Duration::from_secs(3) {
                    let log = std::fs::read_to_string(d.dir.join("daemon.log")).unwrap_or_default();
                    bail!("no answer within 3 s of the SPA packet; daemon log:\n{log}");
                }
            }
        })?;
        runs.push(r.0);
        base.push(r.1);
    }
    Ok((runs, base))
}
