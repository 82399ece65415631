//! The `cluster` room: what a fleet of hosts shares through etcd.
//!
//! - **Replay claims**: before an SPA packet earns a grant, its digest is claimed once for
//!   the whole cluster by a create-if-absent transaction (`{prefix}/replay/{digest}`),
//!   under a lease that outlives the packet's acceptance window; a digest another host
//!   claimed first is a replay.
//! - **Shared grants**: a grant made on one host is written under the group's prefix
//!   (`{prefix}/groups/{group}/grants/{address}-{proto}-{port}`) with its absolute expiry
//!   in the value ([`grants::SharedGrant`]); every host of the group installs it from a
//!   watch, with that expiry. Its lease only cleans up; deleting the key before its expiry
//!   revokes the grant everywhere.
//!
//! - **Shared blocks**: a source or prefix the detection stage blocks on one host (by
//!   hand or by the learned classifier) is written under `{prefix}/groups/{group}/blocks/`
//!   with its absolute expiry ([`blocks::SharedBlock`]) and blocked on every host of the
//!   group until then; a release deletes it everywhere.
//! - **Policy**: `statewall cluster push` stores a firewall instance's chains under
//!   `{prefix}/groups/{group}/policy/firewall/{name}`, and the `[[knock]]`, `[[xfsm]]`,
//!   `[spa]` and `[detect]` sections under `policy/knock`, `policy/xfsm`, `policy/spa`,
//!   `policy/detect`
//!   ([`sections`]: a host runs its file with the pushed sections in place of its own);
//!   every host applies the newest revision atomically, or keeps the last good one and reports why it refused it, in its
//!   report under `{prefix}/groups/{group}/nodes/{node}` ([`NodeReport`]).
//!
//! The store ([`store::Store`]) speaks etcd's v3 API through the `etcd-client` crate; the
//! daemon's task (`daemon::cluster`) keeps the watch, resynchronises from a full read after
//! a gap, and keeps what it could not write for when etcd returns.
//!
//! Owns the `[cluster]` section and the keys under the prefix. May import: `types`,
//! `engine` (its clock, durable file writes); the grant keys are the common crate's
//! (`statewall_common::maps::key_for`).

pub mod blocks;
pub mod grants;
pub mod link;
pub mod sections;
pub mod store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::Dur;

/// What SPA does while etcd cannot be reached.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// Refuse every SPA packet (counted as `cluster_down`): no replay can slip through.
    #[default]
    Refuse,
    /// Check the local replay cache only, grant, and claim the digest and share the grant
    /// once etcd is back.
    Local,
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd's client URLs, `http://` or `https://`.
    pub endpoints: Vec<String>,
    /// Every key statewall writes starts with this (`/statewall`).
    pub prefix: String,
    /// This host's name in the fleet (default: the host name).
    pub node: String,
    /// Hosts of one group share grants (and, later, policy); replay claims are
    /// cluster-wide.
    pub group: String,
    /// CA certificate (PEM) that etcd's server certificate must chain to (`https://`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name etcd's certificate is checked against (default: the endpoint's host).
    pub server_name: Option<String>,
    /// How long a connection to an endpoint may take.
    pub connect_timeout: Dur,
    /// How long one request may take before etcd counts as unreachable.
    pub request_timeout: Dur,
    /// SPA while etcd is unreachable: `refuse` (default) or `local`.
    pub on_cluster_down: OnDown,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            endpoints: Vec::new(),
            prefix: "/statewall".into(),
            node: String::new(),
            group: "default".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            connect_timeout: Dur(std::time::Duration::from_secs(2)),
            request_timeout: Dur(std::time::Duration::from_secs(2)),
            on_cluster_down: OnDown::Refuse,
        }
    }
}

/// A `[cluster]` value that makes no sense: the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("[cluster] {key}: {msg}")]
pub struct ClusterConfigError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

fn bad(key: &str, msg: impl Into<String>) -> ClusterConfigError {
    ClusterConfigError {
        key: key.into(),
        msg: msg.into(),
    }
}

/// A name that may stand in a key: letters, digits, `-`, `_`, `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

impl ClusterConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        if self.endpoints.is_empty() {
            return Err(bad("endpoints", "at least one etcd client URL"));
        }
        let mut tls = None;
        for (i, e) in self.endpoints.iter().enumerate() {
            let (rest, this) = if let Some(r) = e.strip_prefix("https://") {
                (r, true)
            } else if let Some(r) = e.strip_prefix("http://") {
                (r, false)
            } else {
                return Err(bad(
                    &format!("endpoints[{i}]"),
                    format!("{e:?} is not an http:// or https:// URL"),
                ));
            };
            if tls.is_some_and(|t| t != this) {
                return Err(bad("endpoints", "all http:// or all https://"));
            }
            tls = Some(this);
            let hostport = rest.trim_end_matches('/');
            let port_ok = hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok || hostport.contains('/') {
                return Err(bad(
                    &format!("endpoints[{i}]"),
                    format!("{e:?}: expected scheme://host:port"),
                ));
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.len() < 2 {
            return Err(bad(
                "prefix",
                format!("{:?}: starts with '/', does not end with one", self.prefix),
            ));
        }
        if !self.node.is_empty() && !is_name(&self.node) {
            return Err(bad(
                "node",
                format!("{:?}: 1-64 letters, digits, '-', '_', '.'", self.node),
            ));
        }
        if !is_name(&self.group) {
            return Err(bad(
                "group",
                format!("{:?}: 1-64 letters, digits, '-', '_', '.'", self.group),
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(bad("cert_file", "cert_file and key_file go together"));
        }
        if tls != Some(true)
            && (self.ca_file.is_some() || self.cert_file.is_some() || self.server_name.is_some())
        {
            return Err(bad(
                "ca_file",
                "TLS options need https:// endpoints (the endpoints are http://)",
            ));
        }
        for (key, d) in [
            ("connect_timeout", &self.connect_timeout),
            ("request_timeout", &self.request_timeout),
        ] {
            if d.0 < std::time::Duration::from_millis(10)
                || d.0 > std::time::Duration::from_secs(60)
            {
                return Err(bad(key, format!("{d} is outside 10ms..=60s")));
            }
        }
        Ok(())
    }

    /// The node name in force: `node`, or the host name.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| is_name(h))
            .unwrap_or_else(|| "localhost".into())
    }

    /// Whether the endpoints use TLS.
    pub fn tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// `{prefix}/replay/`.
    pub fn replay_prefix(&self) -> String {
        format!("{}/replay/", self.prefix)
    }

    /// `{prefix}/groups/{group}/grants/`.
    pub fn grants_prefix(&self) -> String {
        format!("{}/groups/{}/grants/", self.prefix, self.group)
    }

    /// `{prefix}/groups/{group}/blocks/`: the detection stage's blocks, shared.
    pub fn blocks_prefix(&self) -> String {
        format!("{}/groups/{}/blocks/", self.prefix, self.group)
    }

    /// `{prefix}/groups/{group}/policy/`: what `statewall cluster push` stores
    /// (`firewall/{name}`: a firewall instance's chains; `knock`, `xfsm`, `spa`, `detect`:
    /// config sections).
    pub fn policy_prefix(&self) -> String {
        format!("{}/groups/{}/policy/", self.prefix, self.group)
    }

    /// `{prefix}/groups/{group}/nodes/`: each host's report (`{node}`: the policy
    /// revisions it applied and those it refused).
    pub fn nodes_prefix(&self) -> String {
        format!("{}/groups/{}/nodes/", self.prefix, self.group)
    }
}

/// Two expiries closer than this (ms) are the same grant's or block's, read through the
/// clocks of two hosts.
pub const SAME_MS: u64 = 100;

/// Whether the delete of a shared grant or block whose value said `expires_ms` (0: for
/// good) is a revocation: made before the end. A lease, which outlives its value, deletes
/// after the end, when every kernel has already let it lapse.
pub fn revoked_early(expires_ms: u64) -> bool {
    expires_ms == 0 || expires_ms > crate::engine::clock::unix_ms() + 500
}

/// A host's report: the policy it runs and what it refused.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct NodeReport {
    /// The host.
    pub node: String,
    /// When it wrote this (Unix seconds; hosts rewrite it every few seconds).
    pub time: u64,
    /// Policy in force: key under the policy prefix (`firewall/web`) to the revision.
    pub applied: std::collections::BTreeMap<String, i64>,
    /// Policy refused: key to the revision and the reason.
    pub refused: std::collections::BTreeMap<String, Refused>,
}

/// A pushed policy a host refused.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Refused {
    /// The revision refused.
    pub revision: i64,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ClusterConfig {
        ClusterConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            node: "a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(ok().validate().is_ok());
        type Case = (&'static str, fn(&mut ClusterConfig));
        let cases: [Case; 9] = [
            ("endpoints", |c| c.endpoints.clear()),
            ("endpoints[0]", |c| {
                c.endpoints = vec!["127.0.0.1:2379".into()]
            }),
            ("endpoints[0]", |c| c.endpoints = vec!["http://host".into()]),
            ("endpoints", |c| {
                c.endpoints = vec!["http://a:1".into(), "https://b:2".into()]
            }),
            ("prefix", |c| c.prefix = "statewall".into()),
            ("node", |c| c.node = "a/b".into()),
            ("group", |c| c.group = String::new()),
            ("cert_file", |c| {
                c.endpoints = vec!["https://a:1".into()];
                c.cert_file = Some("c.pem".into())
            }),
            ("ca_file", |c| c.ca_file = Some("ca.pem".into())),
        ];
        for (key, f) in cases {
            let mut c = ok();
            f(&mut c);
            assert_eq!(c.validate().unwrap_err().key, key, "{c:?}");
        }
        let mut c = ok();
        c.request_timeout = Dur(std::time::Duration::from_millis(1));
        assert_eq!(c.validate().unwrap_err().key, "request_timeout");
    }

    #[test]
    fn keys_sit_under_the_prefix_and_group() {
        let mut c = ok();
        c.group = "edge".into();
        assert_eq!(c.replay_prefix(), "/statewall/replay/");
        assert_eq!(c.grants_prefix(), "/statewall/groups/edge/grants/");
        assert_eq!(c.node_name(), "a");
        c.node.clear();
        assert!(is_name(&c.node_name()));
    }
}
