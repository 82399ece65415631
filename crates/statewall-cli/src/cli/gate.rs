//! `statewall gate`: protected ports and grants.

use super::prelude::*;

#[derive(Subcommand)]
pub enum GateCmd {
    /// Protected ports and counters.
    Show,
    /// List live grants.
    Grants,
    /// Let ADDR open new connections to PROTO/PORT for SECONDS.
    Grant {
        /// Source address.
        addr: std::net::IpAddr,
        /// `tcp/22` or `udp/9922`.
        port: statewall::config::PortSpec,
        /// How long, in seconds.
        #[arg(long = "for", default_value_t = 30)]
        seconds: u64,
    },
    /// Remove a grant.
    Revoke {
        /// Source address.
        addr: std::net::IpAddr,
        /// `tcp/22` or `udp/9922`.
        port: statewall::config::PortSpec,
    },
}

/// Runs the subcommand.
pub async fn run(cmd: GateCmd, paths: Paths) -> anyhow::Result<i32> {
    let s = paths.socket();
    match cmd {
        GateCmd::Show => {
            let v = client::request(&s, "GET", "/api/v1/gate", None)
                .await?
                .ok()?
                .json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        GateCmd::Grants => {
            let v = client::request(&s, "GET", "/api/v1/gate/grants", None)
                .await?
                .ok()?
                .json()?;
            for g in v.as_array().into_iter().flatten() {
                println!(
                    "{} {}/{} {:.0}s left",
                    g["addr"].as_str().unwrap_or("?"),
                    g["proto"].as_str().unwrap_or("?"),
                    g["port"],
                    g["seconds_left"].as_f64().unwrap_or(0.0)
                );
            }
        }
        GateCmd::Grant {
            addr,
            port,
            seconds,
        } => {
            let body = serde_json::json!({"addr": addr, "proto": proto_name(port.proto), "port": port.port, "seconds": seconds});
            client::request(&s, "POST", "/api/v1/gate/grants", Some(body.to_string()))
                .await?
                .ok()?;
            println!("granted {addr} {port} for {seconds}s");
        }
        GateCmd::Revoke { addr, port } => {
            let q = format!(
                "/api/v1/gate/grants?addr={addr}&proto={}&port={}",
                proto_name(port.proto),
                port.port
            );
            client::request(&s, "DELETE", &q, None).await?.ok()?;
            println!("revoked {addr} {port}");
        }
    }
    Ok(0)
}
