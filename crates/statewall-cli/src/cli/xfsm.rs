//! `statewall xfsm`: hand-written machines (`[[xfsm]]`), their flows and registers.

use super::prelude::*;

#[derive(Subcommand)]
pub enum XfsmCmd {
    /// Counters, per-transition counters, machines and their live states.
    List,
    /// One machine: its flows (update key, state, timers, registers by name) and its
    /// global registers.
    Show {
        /// Machine name (`[[xfsm]] name`).
        name: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the subcommand.
pub async fn run(cmd: XfsmCmd, paths: Paths) -> anyhow::Result<i32> {
    let s = paths.socket();
    match cmd {
        XfsmCmd::List => {
            let v = client::request(&s, "GET", "/api/v1/xfsm", None)
                .await?
                .ok()?
                .json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        XfsmCmd::Show { name, json } => {
            let v = client::request(&s, "GET", &format!("/api/v1/xfsm/machines/{name}"), None)
                .await?
                .ok()?
                .json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            print!("{}", table(&v));
        }
    }
    Ok(0)
}

/// The machine as text: one line per flow, then the global registers.
fn table(v: &serde_json::Value) -> String {
    let mut out = format!("machine {}\n", v["name"].as_str().unwrap_or("?"));
    let flows = v["flows"].as_array().cloned().unwrap_or_default();
    out += &format!("{} flows\n", flows.len());
    for f in flows {
        let mut key: Vec<String> = Vec::new();
        for a in f["addrs"].as_array().into_iter().flatten() {
            key.push(a.as_str().unwrap_or("?").to_string());
        }
        for p in f["ports"].as_array().into_iter().flatten() {
            key.push(format!("port {p}"));
        }
        if let Some(p) = f["proto"].as_u64() {
            key.push(format!("proto {p}"));
        }
        let mut line = format!(
            "  {:<40} {}",
            key.join(" "),
            f["state"].as_str().unwrap_or("?")
        );
        for t in ["idle_left", "hard_left"] {
            if let Some(x) = f[t].as_f64() {
                line += &format!(" {t}={x:.1}s");
            }
        }
        for (n, r) in f["registers"].as_object().into_iter().flatten() {
            line += &format!(" {n}={r}");
        }
        out += &line;
        out.push('\n');
    }
    let globals = v["globals"].as_object().cloned().unwrap_or_default();
    if !globals.is_empty() {
        let g: Vec<String> = globals.iter().map(|(n, r)| format!("{n}={r}")).collect();
        out += &format!("globals {}\n", g.join(" "));
    }
    out
}
