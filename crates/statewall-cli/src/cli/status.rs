//! `statewall status`: hooks, programs in run order, links and map fill levels.

use super::prelude::*;

/// Runs the subcommand.
pub async fn run(paths: Paths, json: bool) -> anyhow::Result<i32> {
    let r = client::request(&paths.socket(), "GET", "/api/v1/status", None)
        .await?
        .ok()?;
    let v = r.json()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_status(&v);
    }
    Ok(0)
}

fn print_status(v: &serde_json::Value) {
    println!(
        "statewall {} (object {}), pins under {}",
        v["version"].as_str().unwrap_or("?"),
        v["object_id"].as_str().unwrap_or("?"),
        v["bpffs_root"].as_str().unwrap_or("?")
    );
    println!(
        "programs {}",
        if v["adopted"].as_bool() == Some(true) {
            "adopted from pins"
        } else {
            "loaded at start"
        }
    );
    if let Some(c) = v["cluster"].as_object() {
        let link = if c["up"].as_bool() == Some(true) {
            let out: Vec<&str> = c["members_out"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str())
                .collect();
            if out.is_empty() {
                "etcd reachable".to_string()
            } else {
                format!(
                    "etcd reachable (member refusing connections: {})",
                    out.join(", ")
                )
            }
        } else {
            format!(
                "etcd UNREACHABLE ({}); enforcing what is installed, SPA: {}",
                c["error"].as_str().unwrap_or("?"),
                c["on_cluster_down"].as_str().unwrap_or("?")
            )
        };
        println!(
            "cluster: node {} of group {}: {link}; revision {}, {} waiting to be written",
            c["node"].as_str().unwrap_or("?"),
            c["group"].as_str().unwrap_or("?"),
            c["revision"],
            c["pending"]
        );
        let keys = |v: &serde_json::Value, f: &dyn Fn(&serde_json::Value) -> String| {
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, r)| format!("{k}@{}", f(r)))
                .collect::<Vec<_>>()
        };
        let applied = keys(&c["policy"], &|r| r.to_string());
        if !applied.is_empty() {
            println!("cluster policy in force: {}", applied.join(", "));
        }
        let refused = keys(&c["refused"], &|r| {
            format!("{}: {}", r["revision"], r["reason"].as_str().unwrap_or("?"))
        });
        if !refused.is_empty() {
            println!("cluster policy REFUSED: {}", refused.join("; "));
        }
    }
    println!("\nhooks (programs in the order the kernel runs them):");
    for h in v["hooks"].as_array().into_iter().flatten() {
        let ns = h["netns"]
            .as_str()
            .map(|n| format!(" (netns {n})"))
            .unwrap_or_default();
        let progs: Vec<String> = h["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}#{}", p[0].as_str().unwrap_or("?"), p[1]))
            .collect();
        println!(
            "  {}{} {}: {}",
            h["ifname"].as_str().unwrap_or("?"),
            ns,
            h["hook"].as_str().unwrap_or("?"),
            if progs.is_empty() {
                "-".into()
            } else {
                progs.join(" -> ")
            }
        );
    }
    for o in v["names_against_the_rule"].as_array().into_iter().flatten() {
        println!(
            "warning: {} {:?} was named before the naming rule (1 to 64 of [A-Za-z0-9_.-], not starting with '.' or '-'): it keeps working; make it again under a new name",
            o["kind"].as_str().unwrap_or("?"),
            o["name"].as_str().unwrap_or("?")
        );
    }
    println!("\nmaps:");
    println!(
        "  {:<20} {:>6} {:<14} {:>10} {:>10}",
        "name", "id", "type", "entries", "max"
    );
    for m in v["maps"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} {:>6} {:<14} {:>10} {:>10}",
            m["name"].as_str().unwrap_or("?"),
            m["id"],
            m["kind"].as_str().unwrap_or("?"),
            m["entries"],
            m["max_entries"]
        );
    }
}
