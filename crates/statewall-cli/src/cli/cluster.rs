//! `statewall cluster`: the fleet's shared policy in etcd, reached with the `[cluster]`
//! section of a daemon's config (no daemon needed): `push` stores a firewall instance's
//! chains for every host of the group, `status` lists the hosts with the policy
//! revisions they run and what they refused.

use super::prelude::*;
use statewall::{
    cluster::{store::Store, ClusterConfig, NodeReport},
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
    /// The group's hosts: when each last reported, the policy revisions it runs, what it
    /// refused; and the policy stored.
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
        ClusterCmd::Push {
            what: PushWhat::Firewall { name, file },
        } => {
            statewall::types::check_name(&name).map_err(|e| anyhow::anyhow!("name: {e}"))?;
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            read_policy(&text).with_context(|| format!("{}", file.display()))?;
            let key = format!("{}firewall/{name}", c.policy_prefix());
            let rev = store.put(&key, text).await?;
            println!("pushed firewall {name} as {key}, revision {rev}");
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
