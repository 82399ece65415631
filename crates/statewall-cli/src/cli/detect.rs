//! `statewall detect list|block|release`: the daemon's mitigations in force and blocks
//! (`detect train` and `detect eval`, which need no daemon, are `super::learn`'s).

use super::prelude::*;

#[derive(Subcommand)]
pub enum DetectCmd {
    /// Mitigations in force: detector, target, why, packets dropped, time left.
    List {
        /// The whole `GET /api/v1/detect` answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop every packet from a source or prefix.
    Block {
        /// `198.51.100.7` or `198.51.100.0/24`.
        prefix: String,
        /// How long, in seconds (default: until released).
        #[arg(long = "for")]
        seconds: Option<u64>,
    },
    /// Lift a block, or the detectors' mitigation of a destination.
    Release {
        /// The blocked prefix, or the destination address.
        addr: String,
    },
}

/// Runs the subcommand.
pub async fn run(cmd: DetectCmd, paths: Paths) -> anyhow::Result<i32> {
    let s = paths.socket();
    match cmd {
        DetectCmd::List { json } => {
            let v = client::request(&s, "GET", "/api/v1/detect", None)
                .await?
                .ok()?
                .json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            println!(
                "mode: {}",
                v["mode"]
                    .as_str()
                    .unwrap_or("off ([detect] not configured)")
            );
            let list = v["mitigations"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no mitigation in force");
            }
            for m in list {
                let left = match m["left_s"].as_f64() {
                    Some(l) => format!("{l:.0}s left"),
                    None => "until released".into(),
                };
                println!(
                    "{:<11} {:<8} {:<24} dropped {:<10} {left}: {}",
                    m["detector"].as_str().unwrap_or("?"),
                    m["scope"].as_str().unwrap_or("?"),
                    m["target"].as_str().unwrap_or("?"),
                    m["dropped"],
                    m["reason"].as_str().unwrap_or("")
                );
            }
        }
        DetectCmd::Block { prefix, seconds } => {
            let body = serde_json::json!({"prefix": prefix, "seconds": seconds});
            client::request(&s, "POST", "/api/v1/detect/blocks", Some(body.to_string()))
                .await?
                .ok()?;
            match seconds {
                Some(n) => println!("blocked {prefix} for {n}s"),
                None => println!("blocked {prefix} until released"),
            }
        }
        DetectCmd::Release { addr } => {
            client::request(&s, "DELETE", &format!("/api/v1/detect/{addr}"), None)
                .await?
                .ok()?;
            println!("released {addr}");
        }
    }
    Ok(0)
}
