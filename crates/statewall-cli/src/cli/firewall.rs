//! `statewall firewall` (alias `fw`): firewall instances, chains, rules, counters, log.

use super::prelude::*;

#[derive(Subcommand)]
pub enum FwCmd {
    /// Every instance, or one with its rules.
    Show {
        /// Instance.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an instance.
    Create {
        /// Name.
        name: String,
    },
    /// Delete an instance (detaching it).
    Delete {
        /// Name.
        name: String,
    },
    /// Attach an instance to an interface.
    Attach {
        /// Instance.
        name: String,
        /// Interface.
        ifname: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Detach an instance from an interface.
    Detach {
        /// Instance.
        name: String,
        /// Interface.
        ifname: String,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Apply a batch file in Polycube's shape (`{"rules": [{"operation": ...}]}`).
    Batch {
        /// Instance.
        name: String,
        /// INGRESS or EGRESS.
        #[arg(long)]
        chain: String,
        /// The file.
        file: PathBuf,
    },
    /// One operation, polycubectl style: `rule fw1 INGRESS append l4proto=TCP dport=22
    /// action=accept`.
    Rule {
        /// Instance.
        name: String,
        /// INGRESS or EGRESS.
        chain: String,
        /// append, insert, update or delete.
        operation: String,
        /// Fields as key=value (id, src, dst, l4proto, sport, dport, tcpflags, conntrack,
        /// action, description).
        fields: Vec<String>,
    },
    /// Replace chains from FILE (`{"INGRESS": {"default": "DROP", "rules": [...]},
    /// "EGRESS": ...}`); with `--confirm 30s` it is reverted by itself unless `statewall fw
    /// confirm NAME` arrives in time (lockout safety for remote admins).
    Apply {
        /// Instance.
        name: String,
        /// The ruleset file.
        file: PathBuf,
        /// Revert unless confirmed within this long.
        #[arg(long)]
        confirm: Option<statewall::config::Dur>,
    },
    /// Keep what `apply --confirm` set.
    Confirm {
        /// Instance.
        name: String,
    },
    /// Set a chain's default action (DROP or ACCEPT).
    Default {
        /// Instance.
        name: String,
        /// INGRESS or EGRESS.
        chain: String,
        /// DROP or ACCEPT.
        action: String,
    },
    /// Tracked connections.
    Sessions {
        /// Instance.
        name: String,
    },
    /// Per-rule counters of both chains.
    Stats {
        /// Instance.
        name: String,
    },
    /// The latest LOG rule hits (kept by the daemon, at most 4096 across instances).
    Log {
        /// Instance.
        name: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the subcommand.
pub async fn run(cmd: FwCmd, paths: Paths) -> anyhow::Result<i32> {
    let s = paths.socket();
    let call = |method: &'static str, path: String, body: Option<serde_json::Value>| {
        let s = s.clone();
        async move { api_call(&s, method, &path, body).await }
    };
    let base = "/api/v1/firewall";
    // A chain batch (from a file or one `rule` operation), and the chain's new size.
    let batch = |name: String, chain: String, body: serde_json::Value| {
        let call = &call;
        async move {
            let v = call(
                "POST",
                format!("{base}/{name}/chain/{chain}/batch"),
                Some(body),
            )
            .await?;
            println!("{name} {chain}: {} rules", v["rules"]);
            anyhow::Ok(())
        }
    };
    let attaching = matches!(cmd, FwCmd::Attach { .. });
    match cmd {
        FwCmd::Show { name: None, json } => {
            let v = call("GET", base.into(), None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for i in v.as_array().into_iter().flatten() {
                    println!(
                        "{} ports {} ingress {} ({} rules) egress {} ({} rules)",
                        i["name"].as_str().unwrap_or("?"),
                        i["ports"],
                        i["chain"][0]["default"].as_str().unwrap_or("?"),
                        i["chain"][0]["rules"],
                        i["chain"][1]["default"].as_str().unwrap_or("?"),
                        i["chain"][1]["rules"],
                    );
                }
            }
        }
        FwCmd::Show {
            name: Some(n),
            json,
        } => {
            let mut out = serde_json::Map::new();
            for chain in ["INGRESS", "EGRESS"] {
                let v = call("GET", format!("{base}/{n}/chain/{chain}/rule"), None).await?;
                out.insert(chain.into(), v);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for (chain, rules) in &out {
                    println!("{chain}:");
                    for r in rules.as_array().into_iter().flatten() {
                        let mut line = format!("  {:>4}", r["id"]);
                        for k in [
                            "src",
                            "dst",
                            "l4proto",
                            "sport",
                            "dport",
                            "tcpflags",
                            "conntrack",
                            "action",
                            "description",
                        ] {
                            if let Some(v) = r.get(k) {
                                line.push_str(&format!(
                                    " {k}={}",
                                    v.as_str().map(str::to_string).unwrap_or(v.to_string())
                                ));
                            }
                        }
                        println!("{line}");
                    }
                }
            }
        }
        FwCmd::Create { name } => {
            call(
                "POST",
                format!("{base}/{name}"),
                Some(serde_json::json!({})),
            )
            .await?;
            println!("created {name}");
        }
        FwCmd::Delete { name } => {
            call("DELETE", format!("{base}/{name}"), None).await?;
            println!("deleted {name}");
        }
        FwCmd::Attach {
            name,
            ifname,
            netns,
        }
        | FwCmd::Detach {
            name,
            ifname,
            netns,
        } => {
            let what = if attaching { "attach" } else { "detach" };
            call(
                "POST",
                format!("{base}/{name}/{what}"),
                Some(serde_json::json!({"port": ifname, "netns": netns})),
            )
            .await?;
            println!("{what}ed {name} {ifname}");
        }
        FwCmd::Batch { name, chain, file } => {
            batch(name, chain, read_json(&file)?).await?;
        }
        FwCmd::Rule {
            name,
            chain,
            operation,
            fields,
        } => {
            let mut op = serde_json::Map::new();
            op.insert("operation".into(), operation.into());
            for f in fields {
                let (k, v) = f
                    .split_once('=')
                    .with_context(|| format!("{f:?}: write key=value"))?;
                let v = if k == "id" {
                    serde_json::Value::from(
                        v.parse::<u64>()
                            .with_context(|| format!("id={v}: a number"))?,
                    )
                } else {
                    serde_json::Value::from(v)
                };
                op.insert(k.into(), v);
            }
            batch(name, chain, serde_json::json!({"rules": [op]})).await?;
        }
        FwCmd::Apply {
            name,
            file,
            confirm,
        } => {
            let mut body = read_json(&file)?;
            if let Some(d) = confirm {
                body["confirm"] = d.0.as_secs().max(1).into();
            }
            call("POST", format!("{base}/{name}/apply"), Some(body)).await?;
            match confirm {
                Some(d) => println!(
                    "applied to {name}: confirm within {d} (statewall fw confirm {name}) or it is reverted"
                ),
                None => println!("applied to {name}"),
            }
        }
        FwCmd::Confirm { name } => {
            call("POST", format!("{base}/{name}/confirm"), None).await?;
            println!("confirmed {name}");
        }
        FwCmd::Default {
            name,
            chain,
            action,
        } => {
            call(
                "PATCH",
                format!("{base}/{name}/chain/{chain}"),
                Some(serde_json::json!({"default": action})),
            )
            .await?;
            println!("{name} {chain}: default {action}");
        }
        FwCmd::Log { name, since, json } => {
            let v = call("GET", format!("{base}/{name}/log?since={since}"), None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            for r in v.as_array().into_iter().flatten().filter(|_| !json) {
                println!(
                    "#{} {} rule {} {} {} {}:{} -> {}:{} {} len {}{}",
                    r["seq"],
                    r["chain"].as_str().unwrap_or("?"),
                    r["rule"],
                    r["conntrack"].as_str().unwrap_or("?"),
                    r["l4proto"].as_str().unwrap_or("?"),
                    r["src"].as_str().unwrap_or("?"),
                    r["sport"],
                    r["dst"].as_str().unwrap_or("?"),
                    r["dport"],
                    r["tcpflags"].as_str().unwrap_or(""),
                    r["len"],
                    r["description"]
                        .as_str()
                        .filter(|d| !d.is_empty())
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
            }
        }
        FwCmd::Sessions { name } => {
            let v = call("GET", format!("{base}/{name}/sessions"), None).await?;
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{} {}:{} -> {}:{} {} {}s",
                    r["l4proto"].as_str().unwrap_or("?"),
                    r["src"].as_str().unwrap_or("?"),
                    r["sport"],
                    r["dst"].as_str().unwrap_or("?"),
                    r["dport"],
                    r["state"].as_str().unwrap_or("?"),
                    r["eta"]
                );
            }
        }
        FwCmd::Stats { name } => {
            for chain in ["INGRESS", "EGRESS"] {
                let v = call("GET", format!("{base}/{name}/chain/{chain}/stats"), None).await?;
                for r in v.as_array().into_iter().flatten() {
                    println!(
                        "{chain} {:>4} pkts={} bytes={} {}",
                        r["id"],
                        r["pkts"],
                        r["bytes"],
                        r["description"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(0)
}
