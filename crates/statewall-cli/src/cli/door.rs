//! `statewall door`: knock doors (open, close, events).

use super::prelude::*;

#[derive(Subcommand)]
pub enum DoorCmd {
    /// Doors, open sources, sources part-way through, lockouts.
    List,
    /// Open DOOR for ADDR (its protected ports, for `open_for` or --for seconds).
    Open {
        /// Door name.
        door: String,
        /// Source address.
        addr: std::net::IpAddr,
        /// How long, in seconds (default: the door's open_for).
        #[arg(long = "for")]
        seconds: Option<u64>,
    },
    /// Close DOOR for ADDR (revoke its grants, run the stop command).
    Close {
        /// Door name.
        door: String,
        /// Source address.
        addr: std::net::IpAddr,
    },
    /// Follow door events (server-sent events) until interrupted.
    Events,
}

/// Runs the subcommand.
pub async fn run(cmd: DoorCmd, paths: Paths) -> anyhow::Result<i32> {
    let s = paths.socket();
    match cmd {
        DoorCmd::List => {
            let v = client::request(&s, "GET", "/api/v1/doors", None)
                .await?
                .ok()?
                .json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DoorCmd::Open {
            door,
            addr,
            seconds,
        } => {
            let body = serde_json::json!({"source": addr, "seconds": seconds});
            let v = client::request(
                &s,
                "POST",
                &format!("/api/v1/doors/{door}/open"),
                Some(body.to_string()),
            )
            .await?
            .ok()?
            .json()?;
            println!("door {door} open for {addr} ({}s)", v["seconds"]);
        }
        DoorCmd::Close { door, addr } => {
            let body = serde_json::json!({ "source": addr });
            client::request(
                &s,
                "POST",
                &format!("/api/v1/doors/{door}/close"),
                Some(body.to_string()),
            )
            .await?
            .ok()?;
            println!("door {door} closed for {addr}");
        }
        DoorCmd::Events => {
            client::stream_lines(&s, "/api/v1/xfsm/events", |line| {
                if let Some(d) = line.strip_prefix("data: ") {
                    println!("{d}");
                }
            })
            .await?;
        }
    }
    Ok(0)
}
