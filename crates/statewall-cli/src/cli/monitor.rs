//! `statewall monitor`: traffic monitors and their windows.

use super::prelude::*;

#[derive(Subcommand)]
pub enum MonitorCmd {
    /// Every monitor with its counters.
    List,
    /// One monitor (JSON).
    Show {
        /// Monitor name.
        name: String,
    },
    /// Take one window and print it (JSON).
    Read {
        /// Monitor name.
        name: String,
    },
    /// Take a window every INTERVAL seconds and write it into files.
    Extract {
        /// Monitor name.
        name: String,
        /// Seconds between windows.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Directory for the files.
        #[arg(long)]
        output: PathBuf,
        /// Compat format: JSON files (`result_{n}.json`) instead of CSV.
        #[arg(long)]
        json: bool,
        /// compat: the original monitors' files; tidy: one CSV row per packet or session.
        #[arg(long, value_enum, default_value = "compat")]
        format: statewall::monitor::files::Format,
        /// Stop after this many windows (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Runs the subcommand.
pub async fn run(cmd: MonitorCmd, paths: Paths) -> anyhow::Result<i32> {
    let s = paths.socket();
    match cmd {
        MonitorCmd::List => {
            let v = api_call(&s, "GET", "/api/v1/monitor", None).await?;
            for m in v.as_array().into_iter().flatten() {
                let c = &m["counters"];
                println!(
                    "{} {} on {} ({}): {} packets, {} captured, {} sessions, {} turned away, {} windows",
                    m["name"].as_str().unwrap_or("?"),
                    m["kind"].as_str().unwrap_or("?"),
                    m["interfaces"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    m["direction"].as_str().unwrap_or("?"),
                    c["packets"],
                    c["captured"],
                    c["sessions"],
                    c["turned_away"],
                    m["windows"]
                );
            }
        }
        MonitorCmd::Show { name } => {
            let v = api_call(&s, "GET", &format!("/api/v1/monitor/{name}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        MonitorCmd::Read { name } => {
            let v = api_call(&s, "POST", &format!("/api/v1/monitor/{name}/read"), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        MonitorCmd::Extract {
            name,
            interval,
            output,
            json,
            format,
            count,
        } => {
            anyhow::ensure!(
                interval > 0.0 && interval.is_finite(),
                "--interval: a number of seconds above 0"
            );
            let mut tick = tokio::time::interval(std::time::Duration::from_secs_f64(interval));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut iter = 0u64;
            while count.is_none_or(|c| iter < c) {
                tick.tick().await;
                let w = api_call(&s, "POST", &format!("/api/v1/monitor/{name}/read"), None).await?;
                let files =
                    statewall::monitor::files::write_window(&output, &w, iter, format, json)?;
                eprintln!(
                    "window {}: {} sessions, {} packet records, {} files",
                    w["window"],
                    w["sessions"].as_array().map_or(0, |a| a.len()),
                    w["packets"].as_array().map_or(0, |a| a.len()),
                    files.len()
                );
                iter += 1;
            }
        }
    }
    Ok(0)
}
