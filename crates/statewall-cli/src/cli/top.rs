//! `statewall top`: a terminal dashboard refreshed from the daemon's API.
//!
//! It shows knock doors (sources part-way through, open, locked out), live grants with
//! their time left, the detect stage's mitigations (detector, target, dropped, time left)
//! and its learned classifier's and mining detector's windows,
//! firewall rules with their hits and hit rates, monitors with their
//! counters and the busiest sessions of their last window, drop counters, and with
//! `[cluster]` the link to etcd (reachable or not, what waits to be written, claims and
//! replays, grants installed from other hosts, the pushed policy in force). It only
//! reads: nothing it does takes a monitor's window or changes state. `q` or Esc quits.

use super::prelude::*;
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use ratatui::{
    crossterm::{
        event::{self, Event, KeyCode},
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph},
    Terminal,
};
use serde_json::Value;

/// One snapshot of the daemon.
#[derive(Default)]
pub struct Snapshot {
    /// Text lines per panel.
    pub doors: Vec<String>,
    /// Grants.
    pub grants: Vec<String>,
    /// Mitigations in force (detect).
    pub mitigations: Vec<String>,
    /// Firewall rules.
    pub rules: Vec<String>,
    /// Monitors.
    pub monitors: Vec<String>,
    /// Drop counters.
    pub drops: Vec<String>,
    /// The cluster link (none without `[cluster]`).
    pub cluster: Vec<String>,
    /// An error reaching the daemon.
    pub error: Option<String>,
}

fn get(socket: &std::path::Path, path: &str) -> Result<Value, String> {
    let r = statewall::client::request_blocking(socket, "GET", path, None)
        .map_err(|e| format!("{path}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{path}: HTTP {}: {}", r.status, r.body));
    }
    serde_json::from_str(&r.body).map_err(|e| format!("{path}: {e}"))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn secs(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.0}s"))
        .unwrap_or_else(|| "-".into())
}

/// Rule hit counters of the previous snapshot, for rates.
#[derive(Default)]
pub struct Rates {
    prev: std::collections::BTreeMap<String, (u64, Instant)>,
}

/// Reads everything `top` shows.
pub fn snapshot(socket: &std::path::Path, rates: &mut Rates) -> Snapshot {
    let mut out = Snapshot::default();
    let r = (|| -> Result<(), String> {
        for d in get(socket, "/api/v1/doors")?
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = s(&d["name"]);
            let mut line = |source: &Value, state: &str, time: String| {
                out.doors
                    .push(format!("{name:<12} {:<24} {state:<14} {time}", s(source)));
            };
            for p in d["in_progress"].as_array().into_iter().flatten() {
                line(&p["source"], &s(&p["state"]), secs(&p["idle_left"]));
            }
            for o in d["open"].as_array().into_iter().flatten() {
                line(&o["source"], "open", format!("(by {})", s(&o["by"])));
            }
            for l in d["locked_out"].as_array().into_iter().flatten() {
                line(&l["source"], "locked out", secs(&l["seconds_left"]));
            }
        }
        for g in get(socket, "/api/v1/gate/grants")?
            .as_array()
            .into_iter()
            .flatten()
        {
            out.grants.push(format!(
                "{:<24} {}/{:<6} {} left",
                s(&g["addr"]),
                s(&g["proto"]),
                s(&g["port"]),
                secs(&g["seconds_left"])
            ));
        }
        let detect = get(socket, "/api/v1/detect")?;
        for (name, c) in [
            ("classifier", &detect["classifier"]),
            ("mining", &detect["mining"]),
        ] {
            if !c.is_object() {
                continue;
            }
            let st = &c["stats"];
            out.mitigations.push(format!(
                "{name} ({} model, {}s windows): {} windows, {} flows in the last, {} attacks \
                 of {} samples, {} of {} blocks held, {} flows unclassified ({} packets)",
                s(&c["model"]),
                s(&c["window_s"]),
                s(&st["windows"]),
                s(&st["last_flows"]),
                s(&st["attacks"]),
                s(&st["samples"]),
                s(&c["held"]),
                s(&c["max_blocks"]),
                s(&st["unclassified_flows"]),
                s(&st["unclassified_packets"]),
            ));
        }
        for m in detect["mitigations"].as_array().into_iter().flatten() {
            out.mitigations.push(format!(
                "{:<11} {:<24} {} dropped, {} left: {}",
                s(&m["detector"]),
                s(&m["target"]),
                s(&m["dropped"]),
                secs(&m["left_s"]),
                s(&m["reason"])
            ));
        }
        out.cluster = cluster_lines(&get(socket, "/api/v1/status")?["cluster"]);
        let gate = get(socket, "/api/v1/gate")?;
        let c = &gate["counters"];
        out.drops.push(format!(
            "gate: {} dropped, {} granted, {} malformed",
            s(&c["dropped"]),
            s(&c["granted"]),
            s(&c["malformed"])
        ));
        if let Ok(x) = get(socket, "/api/v1/xfsm") {
            let c = &x["counters"];
            if c.is_object() {
                out.drops.push(format!(
                    "xfsm: {} dropped, {} lockouts, {} locked packets",
                    s(&c["dropped"]),
                    s(&c["lockouts"]),
                    s(&c["locked_packets"])
                ));
            }
        }
        let now = Instant::now();
        let mut fw_drops = 0u64;
        for f in get(socket, "/api/v1/firewall")?
            .as_array()
            .into_iter()
            .flatten()
        {
            let fw = s(&f["name"]);
            for chain in ["INGRESS", "EGRESS"] {
                let base = format!("/api/v1/firewall/{fw}/chain/{chain}");
                let rules = get(socket, &base)?;
                let stats = get(socket, &format!("{base}/stats"))?;
                for st in stats.as_array().into_iter().flatten() {
                    let id = st["id"].as_u64().unwrap_or(0);
                    let pkts = st["pkts"].as_u64().unwrap_or(0);
                    let action = s(&rules["rule"][id as usize]["action"]);
                    if action.eq_ignore_ascii_case("drop") {
                        fw_drops += pkts;
                    }
                    let key = format!("{fw}/{chain}/{id}");
                    let rate = match rates.prev.get(&key) {
                        Some((p, t)) if now > *t => {
                            pkts.saturating_sub(*p) as f64 / (now - *t).as_secs_f64()
                        }
                        _ => 0.0,
                    };
                    rates.prev.insert(key, (pkts, now));
                    out.rules.push(format!(
                        "{fw:<10} {chain:<8} rule {id:<4} {action:<7} {pkts:>10} pkts {rate:>9.1}/s  {}",
                        s(&st["description"])
                    ));
                }
            }
        }
        out.drops
            .push(format!("firewall: {fw_drops} dropped by DROP rules"));
        for m in get(socket, "/api/v1/monitor")?
            .as_array()
            .into_iter()
            .flatten()
        {
            let c = &m["counters"];
            out.monitors.push(format!(
                "{} ({}): {} packets, {} sessions in the last window, {} windows",
                s(&m["name"]),
                s(&m["kind"]),
                s(&c["packets"]),
                s(&m["last_sessions"]),
                s(&m["windows"])
            ));
            for t in m["top_sessions"].as_array().into_iter().flatten().take(5) {
                out.monitors.push(format!(
                    "  {}:{} -> {}:{} proto {}: {} packets",
                    s(&t["src"]),
                    s(&t["sport"]),
                    s(&t["dst"]),
                    s(&t["dport"]),
                    s(&t["proto"]),
                    s(&t["packets"])
                ));
            }
        }
        Ok(())
    })();
    out.error = r.err();
    out
}

/// The cluster link of `GET /api/v1/status` (null without `[cluster]`).
fn cluster_lines(c: &Value) -> Vec<String> {
    if !c.is_object() {
        return Vec::new();
    }
    let link = if c["up"] == true {
        match c["members_out"].as_array().map_or(0, |a| a.len()) {
            0 => "etcd reachable".to_string(),
            n => format!("etcd reachable, {n} member(s) refusing connections"),
        }
    } else {
        format!(
            "etcd UNREACHABLE ({}), SPA: {}",
            s(&c["error"]),
            s(&c["on_cluster_down"])
        )
    };
    let n = &c["counts"];
    let keys = |v: &Value| -> String {
        let v: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, r)| format!("{k}@{}", r["revision"].as_i64().or(r.as_i64()).unwrap_or(0)))
            .collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(", ")
        }
    };
    vec![
        format!(
            "node {} of group {}: {link}; revision {}, {} waiting to be written",
            s(&c["node"]),
            s(&c["group"]),
            s(&c["revision"]),
            s(&c["pending"])
        ),
        format!(
            "claims {}, replays refused {}, published {}, installed from other hosts {}, revoked {}",
            s(&n["claims"]),
            s(&n["replays"]),
            s(&n["published"]),
            s(&n["installed"]),
            s(&n["revoked"])
        ),
        format!(
            "pushed policy in force: {}; refused: {}",
            keys(&c["policy"]),
            keys(&c["refused"])
        ),
    ]
}

fn panel<'a>(title: &'a str, lines: &'a [String], empty: &'a str) -> Paragraph<'a> {
    let body: Vec<Line> = if lines.is_empty() {
        vec![Line::from(empty)]
    } else {
        lines.iter().map(|l| Line::from(l.as_str())).collect()
    };
    Paragraph::new(body).block(Block::default().borders(Borders::ALL).title(title))
}

/// Runs the dashboard until `q` or Esc.
pub fn dashboard(socket: PathBuf, interval: Duration) -> anyhow::Result<()> {
    enable_raw_mode()?;
    let mut stdout = std::io::stdout();
    execute!(stdout, EnterAlternateScreen)?;
    let mut term = Terminal::new(ratatui::backend::CrosstermBackend::new(stdout))?;
    let result = (|| -> anyhow::Result<()> {
        let mut rates = Rates::default();
        loop {
            let snap = snapshot(&socket, &mut rates);
            let at = chrono_now();
            term.draw(|f| {
                let rows = Layout::vertical([
                    Constraint::Length(1),
                    Constraint::Min(4),
                    Constraint::Min(3),
                    Constraint::Min(3),
                    Constraint::Min(4),
                    Constraint::Min(4),
                    Constraint::Length(5),
                    Constraint::Length(if snap.cluster.is_empty() { 0 } else { 5 }),
                ])
                .split(f.area());
                let head = match &snap.error {
                    Some(e) => format!("statewall top: {e}"),
                    None => format!(
                        "statewall top: {} at {at}, every {:.1}s (q quits)",
                        socket.display(),
                        interval.as_secs_f64()
                    ),
                };
                f.render_widget(
                    Paragraph::new(head).style(Style::default().add_modifier(Modifier::BOLD)),
                    rows[0],
                );
                f.render_widget(
                    panel(
                        "Doors: source, state, time left",
                        &snap.doors,
                        "no knock in progress",
                    ),
                    rows[1],
                );
                f.render_widget(panel("Grants", &snap.grants, "no grant"), rows[2]);
                f.render_widget(
                    panel("Mitigations (detect)", &snap.mitigations, "no mitigation"),
                    rows[3],
                );
                f.render_widget(panel("Firewall rules", &snap.rules, "no firewall"), rows[4]);
                f.render_widget(panel("Monitors", &snap.monitors, "no monitor"), rows[5]);
                f.render_widget(panel("Drops", &snap.drops, "-"), rows[6]);
                if !snap.cluster.is_empty() {
                    f.render_widget(panel("Cluster (etcd)", &snap.cluster, "-"), rows[7]);
                }
            })?;
            let until = Instant::now() + interval;
            while Instant::now() < until {
                if event::poll(until.saturating_duration_since(Instant::now()))? {
                    if let Event::Key(k) = event::read()? {
                        if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    })();
    disable_raw_mode()?;
    execute!(term.backend_mut(), LeaveAlternateScreen)?;
    result
}

/// Wall-clock time of day (UTC), HH:MM:SS.
fn chrono_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60, t % 60)
}

/// Runs the subcommand.
pub async fn command(interval: f64, paths: Paths) -> anyhow::Result<i32> {
    if !(0.1..=3600.0).contains(&interval) {
        anyhow::bail!("--interval: from 0.1 to 3600 seconds");
    }
    let socket = paths.socket();
    // A thread of its own, outside the runtime: the API client blocks.
    std::thread::spawn(move || dashboard(socket, std::time::Duration::from_secs_f64(interval)))
        .join()
        .map_err(|_| anyhow::anyhow!("statewall top panicked"))??;
    Ok(0)
}
