//! The subcommands of `statewall`, one file each, and what they share: the paths of a
//! daemon (`--bpffs-root`, `--state-dir`, `--socket`), API calls, JSON files, host names.

pub mod bench;
pub mod check_config;
pub mod cluster;
pub mod completions;
pub mod daemon;
pub mod demo;
pub mod detect;
pub mod door;
pub mod dynmon;
pub mod firewall;
pub mod gate;
pub mod import;
pub mod knock;
pub mod learn;
pub mod manpages;
pub mod monitor;
pub mod reload;
pub mod spa;
pub mod status;
pub mod teardown;
pub mod top;
pub mod xfsm;

/// What every subcommand file imports.
pub mod prelude;

use anyhow::Context;
use clap::Args;
use statewall::client;
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct Paths {
    /// bpffs directory holding statewall's pins.
    #[arg(long, global = true, env = "STATEWALL_BPFFS_ROOT")]
    pub bpffs_root: Option<PathBuf>,
    /// Directory for durable state (replay cache, used one-time sequences).
    #[arg(long, global = true, env = "STATEWALL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The daemon's API socket.
    #[arg(long, global = true, env = "STATEWALL_SOCKET")]
    pub socket: Option<PathBuf>,
}

impl Paths {
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| "/run/statewall/api.sock".into())
    }
}

/// One API call: the JSON answer, or an error with the API's message.
pub async fn api_call(
    socket: &std::path::Path,
    method: &'static str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let r = client::request(socket, method, path, body.map(|b| b.to_string())).await?;
    if r.status >= 400 {
        let msg = r
            .json()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| r.body.clone());
        anyhow::bail!("{method} {path}: {msg}");
    }
    r.json()
}

/// A JSON file, with the file named in errors.
pub fn read_json(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))
}

/// Resolves a host name or address, honouring -4 / -6.
pub fn resolve(host: &str, v4: bool, v6: bool) -> anyhow::Result<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::IpAddr> = (host, 0)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .map(|a| a.ip())
        .collect();
    addrs
        .into_iter()
        .find(|a| (!v4 || a.is_ipv4()) && (!v6 || a.is_ipv6()))
        .ok_or_else(|| {
            anyhow::anyhow!("{host} has no {} address", if v6 { "IPv6" } else { "IPv4" })
        })
}
