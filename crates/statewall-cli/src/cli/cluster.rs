//! `statewall cluster`: the fleet's shared policy in etcd, reached with the `[cluster]`
//! section of a daemon's config (no daemon needed): `push` stores a firewall instance's
//! chains, or a `[[knock]]`, `[[xfsm]]`, `[spa]` or `[detect]` section, for every host of the group;
//! `withdraw` deletes what was pushed (hosts go back to their own); `status` lists the
//! hosts with the policy revisions they run and what they refused.

use super::prelude::*;
use statewall::{
    cluster::{sections::read_section, store::Store, ClusterConfig, NodeReport},
    firewall::read_policy,
};

/// `statewall cluster ...`.
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Store policy for every host of the group; hosts apply it atomically, or keep what
    /// they run and report why they refused it.
    Push {
        #[command(subcommand)]
        what: PushWhat,
    },
    /// Delete pushed policy: a firewall instance keeps its chains and takes local changes
    /// again; a section gives way to each host's own.
    Withdraw {
        #[command(subcommand)]
        what: WithdrawWhat,
    },
    /// The group's hosts: when each last reported, the policy revisions it runs, what it
    /// refused; and the policy stored. A host reports every 5 s; one that stopped drops
    /// out of the list 30 to 40 s later.
    Status {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// What `push` stores.
#[derive(Subcommand, Debug)]
pub enum PushWhat {
    /// A firewall instance's chains: FILE holds the body of `POST
    /// /api/v1/firewall/NAME/apply` (`{"INGRESS": {"default", "rules"}, "EGRESS": ...}`),
    /// checked here first.
    Firewall {
        /// The instance (made on hosts that lack it).
        name: String,
        /// The chains (JSON).
        file: PathBuf,
    },
    /// The `[[knock]]` doors: FILE (TOML) holds `[[knock]]` tables only (none: no doors).
    Knock {
        /// The section (TOML).
        file: PathBuf,
    },
    /// The `[[xfsm]]` machines written by hand: FILE (TOML) holds `[[xfsm]]` tables only
    /// (none: no such machines; those of `[detect]` stay).
    Xfsm {
        /// The section (TOML).
        file: PathBuf,
    },
    /// The `[spa]` section (with its `[[spa.pkd]]` and `[[spa.fwknop]]` stanzas; keys
    /// travel in etcd: use TLS). Without `[spa]` in FILE: SPA off on every host.
    Spa {
        /// The section (TOML).
        file: PathBuf,
    },
    /// The `[detect]` section (without it in FILE: the stage off on every host).
    Detect {
        /// The section (TOML).
        file: PathBuf,
    },
}

/// What `withdraw` deletes.
#[derive(Subcommand, Debug)]
pub enum WithdrawWhat {
    /// A firewall instance's pushed chains.
    Firewall {
        /// The instance.
        name: String,
    },
    /// The pushed `[[knock]]` doors.
    Knock,
    /// The pushed `[[xfsm]]` machines.
    Xfsm,
    /// The pushed `[spa]`.
    Spa,
    /// The pushed `[detect]`.
    Detect,
}

/// A section's file checked as a host would read it, in a config of its own, except for
/// what lies on the hosts (`[spa] actions_dir`, read by each host): (key, text).
fn section(name: &str, file: &std::path::Path) -> anyhow::Result<(String, Vec<u8>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let value = read_section(name, &text).with_context(|| format!("{}", file.display()))?;
    let mut alone = toml::Table::new();
    if let Some(mut v) = value {
        if let Some(t) = v.as_table_mut().filter(|_| name == "spa") {
            t.remove("actions_dir");
        }
        alone.insert(name.to_string(), v);
    }
    // Type errors with the file's own lines first, then the checks of a whole config.
    toml::from_str::<statewall::config::Config>(&text)
        .with_context(|| format!("{}", file.display()))?;
    statewall::config::Config::parse(
        &toml::to_string(&alone).context("writing the section back")?,
        &file.display().to_string(),
    )?;
    Ok((name.to_string(), text.into_bytes()))
}

fn cluster_config(config: &std::path::Path) -> anyhow::Result<ClusterConfig> {
    let cfg = statewall::config::Config::load(config)?;
    cfg.cluster
        .with_context(|| format!("{}: no [cluster] section", config.display()))
}

/// Runs the subcommand.
pub async fn run(cmd: ClusterCmd, config: PathBuf) -> anyhow::Result<i32> {
    let c = cluster_config(&config)?;
    let store = Store::connect(&c).await?;
    match cmd {
        ClusterCmd::Push { what } => {
            let (key, text) = match what {
                PushWhat::Firewall { name, file } => {
                    statewall::types::check_name(&name)
                        .map_err(|e| anyhow::anyhow!("name: {e}"))?;
                    let text = std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    read_policy(&text).with_context(|| format!("{}", file.display()))?;
                    (format!("firewall/{name}"), text)
                }
                PushWhat::Knock { file } => section("knock", &file)?,
                PushWhat::Xfsm { file } => section("xfsm", &file)?,
                PushWhat::Spa { file } => section("spa", &file)?,
                PushWhat::Detect { file } => section("detect", &file)?,
            };
            let full = format!("{}{key}", c.policy_prefix());
            let rev = store.put(&full, text).await?;
            println!("pushed {key} as {full}, revision {rev}");
            Ok(0)
        }
        ClusterCmd::Withdraw { what } => {
            let key = match what {
                WithdrawWhat::Firewall { name } => {
                    statewall::types::check_name(&name)
                        .map_err(|e| anyhow::anyhow!("name: {e}"))?;
                    format!("firewall/{name}")
                }
                WithdrawWhat::Knock => "knock".into(),
                WithdrawWhat::Xfsm => "xfsm".into(),
                WithdrawWhat::Spa => "spa".into(),
                WithdrawWhat::Detect => "detect".into(),
            };
            let full = format!("{}{key}", c.policy_prefix());
            if !store.delete(&full).await? {
                anyhow::bail!("{full}: nothing pushed there");
            }
            println!("withdrew {full}");
            Ok(0)
        }
        ClusterCmd::Status { json } => {
            let (nodes, rev) = store.read_prefix(&c.nodes_prefix()).await?;
            let (policy, _) = store.read_prefix(&c.policy_prefix()).await?;
            let reports: Vec<NodeReport> = nodes
                .iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect();
            let stored: std::collections::BTreeMap<String, i64> = policy
                .iter()
                .map(|kv| (kv.key[c.policy_prefix().len()..].to_string(), kv.revision))
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "group": c.group, "revision": rev, "policy": stored, "nodes": reports
                    })
                );
                return Ok(0);
            }
            let now = statewall::engine::clock::unix_secs();
            println!("group {} (etcd revision {rev})", c.group);
            for (k, r) in &stored {
                println!("  policy {k}: revision {r}");
            }
            println!("{:<16} {:>10}  applied / refused", "node", "reported");
            for r in &reports {
                let applied: Vec<String> =
                    r.applied.iter().map(|(k, v)| format!("{k}@{v}")).collect();
                let refused: Vec<String> = r
                    .refused
                    .iter()
                    .map(|(k, v)| format!("{k}@{}: {}", v.revision, v.reason))
                    .collect();
                println!(
                    "{:<16} {:>8}s  {} {}",
                    r.node,
                    now.saturating_sub(r.time),
                    if applied.is_empty() {
                        "-".into()
                    } else {
                        applied.join(", ")
                    },
                    if refused.is_empty() {
                        String::new()
                    } else {
                        format!("/ refused {}", refused.join("; "))
                    }
                );
            }
            Ok(0)
        }
    }
}
