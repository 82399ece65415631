//! A shared grant as it is kept in etcd: the key names the source and the port
//! (`{grants prefix}{address}-{proto}-{port}`, `tcp`/`udp` by name), the value is JSON with
//! the absolute expiry (Unix milliseconds) every host installs, who granted it and where.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use statewall_common::maps::GrantKey;

use statewall_common::maps::{key_addr, key_for};

/// The value of a shared grant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedGrant {
    /// The source the grant opens for.
    pub source: IpAddr,
    /// IP protocol number (6 or 17).
    pub proto: u8,
    /// Destination port.
    pub port: u16,
    /// When the grant ends, Unix time in milliseconds (the same instant on every host).
    pub expires_ms: u64,
    /// What made it: `spa`, `knock` or `api`.
    pub by: String,
    /// The door, action or stanza (empty for a grant by hand).
    #[serde(default)]
    pub name: String,
    /// The host that made it.
    pub node: String,
}

/// Why a key or value under the grants prefix does not read.
#[derive(Debug, thiserror::Error)]
#[error("shared grant {key:?}: {msg}")]
pub struct GrantFormatError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

impl SharedGrant {
    /// The gate key the grant installs.
    pub fn key(&self) -> GrantKey {
        key_for(self.source, self.proto, self.port)
    }

    /// The key's last part, `{address}-{proto}-{port}`.
    pub fn key_suffix(&self) -> String {
        suffix(&self.key())
    }

    /// Reads a value found under `key`; the value must name the same source and port as
    /// the key (a value copied under another key is refused).
    pub fn decode(key: &str, value: &[u8]) -> Result<SharedGrant, GrantFormatError> {
        let bad = |msg: String| GrantFormatError {
            key: key.to_string(),
            msg,
        };
        let g: SharedGrant = serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
        if !matches!(g.proto, 6 | 17) || g.port == 0 {
            return Err(bad(format!("protocol {} port {}", g.proto, g.port)));
        }
        let want = g.key_suffix();
        if !key.ends_with(&format!("/{want}")) {
            return Err(bad(format!("the value is for {want}")));
        }
        Ok(g)
    }

    /// The JSON value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `{address}-{proto}-{port}` of a gate key (IPv6 addresses in their usual text form:
/// no `/` in it).
pub fn suffix(k: &GrantKey) -> String {
    format!(
        "{}-{}-{}",
        key_addr(k),
        crate::types::proto_name(k.proto),
        k.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> SharedGrant {
        SharedGrant {
            source: "10.77.0.1".parse().unwrap(),
            proto: 6,
            port: 22,
            expires_ms: 1_800_000_000_123,
            by: "spa".into(),
            name: "ssh".into(),
            node: "a".into(),
        }
    }

    #[test]
    fn a_grant_reads_back_under_its_own_key_only() {
        let g = g();
        let key = format!("/statewall/groups/x/grants/{}", g.key_suffix());
        assert_eq!(key, "/statewall/groups/x/grants/10.77.0.1-tcp-22");
        assert_eq!(SharedGrant::decode(&key, &g.encode()).unwrap(), g);
        // The same value under another source's key is refused.
        let other = "/statewall/groups/x/grants/10.77.0.9-tcp-22";
        assert!(SharedGrant::decode(other, &g.encode()).is_err());
        assert!(SharedGrant::decode(&key, b"{}").is_err());
        let mut v6 = g.clone();
        v6.source = "fd00:77::1".parse().unwrap();
        v6.proto = 17;
        assert_eq!(v6.key_suffix(), "fd00:77::1-udp-22");
        let mut icmp = g;
        icmp.proto = 1;
        let key = format!("/p/{}", icmp.key_suffix());
        assert!(SharedGrant::decode(&key, &icmp.encode()).is_err());
    }

    #[test]
    fn an_ipv4_mapped_source_is_the_ipv4_host() {
        let mut g = g();
        g.source = "::ffff:10.77.0.1".parse().unwrap();
        assert_eq!(g.key_suffix(), "10.77.0.1-tcp-22");
    }
}
