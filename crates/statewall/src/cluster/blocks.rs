//! A shared block (the detection stage's mitigation of a source or prefix) as it is kept
//! in etcd: the key names the prefix (`{blocks prefix}{address}_{length}`), the value is
//! JSON with the absolute expiry every host installs (0: until released), who blocked it
//! and why.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The value of a shared block.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedBlock {
    /// The prefix blocked, `ADDR/LEN`.
    pub prefix: String,
    /// When the block ends, Unix milliseconds; 0: until released.
    pub expires_ms: u64,
    /// What made it: `api` or `classifier`.
    pub by: String,
    /// Why (the detection that triggered it).
    #[serde(default)]
    pub reason: String,
    /// The host that made it.
    pub node: String,
}

/// Why a key or value under the blocks prefix does not read.
#[derive(Debug, thiserror::Error)]
#[error("shared block {key:?}: {msg}")]
pub struct BlockFormatError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

/// `ADDR/LEN` as a key's last part: `ADDR_LEN`.
pub fn suffix(prefix: &str) -> String {
    prefix.replace('/', "_")
}

impl SharedBlock {
    /// The key's last part.
    pub fn key_suffix(&self) -> String {
        suffix(&self.prefix)
    }

    /// Reads a value found under `key`: the prefix must read (an address and a length
    /// that fits it) and be the key's.
    pub fn decode(key: &str, value: &[u8]) -> Result<SharedBlock, BlockFormatError> {
        let bad = |msg: String| BlockFormatError {
            key: key.to_string(),
            msg,
        };
        let b: SharedBlock = serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
        let ok = b.prefix.split_once('/').is_some_and(|(a, l)| {
            let max = match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            l.parse::<u8>().is_ok_and(|l| l <= max)
        });
        if !ok {
            return Err(bad(format!("{:?} is not ADDR/LEN", b.prefix)));
        }
        if !key.ends_with(&format!("/{}", b.key_suffix())) {
            return Err(bad(format!("the value is for {}", b.prefix)));
        }
        Ok(b)
    }

    /// The JSON value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_reads_back_under_its_own_key_only() {
        let b = SharedBlock {
            prefix: "10.66.0.0/16".into(),
            expires_ms: 0,
            by: "api".into(),
            reason: String::new(),
            node: "a".into(),
        };
        let key = format!("/statewall/groups/g/blocks/{}", b.key_suffix());
        assert_eq!(key, "/statewall/groups/g/blocks/10.66.0.0_16");
        assert_eq!(SharedBlock::decode(&key, &b.encode()).unwrap(), b);
        assert!(SharedBlock::decode("/p/10.66.0.0_24", &b.encode()).is_err());
        for p in ["10.66.0.0", "10.66.0.0/33", "x/8", "fd00::/129"] {
            let mut c = b.clone();
            c.prefix = p.into();
            let key = format!("/p/{}", c.key_suffix());
            assert!(SharedBlock::decode(&key, &c.encode()).is_err(), "{p}");
        }
        let mut v6 = b;
        v6.prefix = "fd00:66::/64".into();
        let key = format!("/p/{}", v6.key_suffix());
        assert_eq!(SharedBlock::decode(&key, &v6.encode()).unwrap(), v6);
    }
}
