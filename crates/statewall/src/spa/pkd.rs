//! pkd / nf-pkd: the action format, the packet (tag, timestamp, random bytes and a
//! SHA-256 digest keyed by the action's secret) and its check.

use super::policy::Reject;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// pkd payload length.
pub const PKD_LEN: usize = statewall_common::spa::PKD_LEN;

/// A pkd action (nf-pkd's `actions.d/*.json` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkdAction {
    /// Name.
    pub name: String,
    /// Port it opens.
    pub port: u16,
    /// Protocols it opens: 6, 17, or both.
    pub protos: Vec<u8>,
    /// Tag, 4 bytes (zero-padded).
    pub tag: [u8; 4],
    /// Key, zero-padded to 40 bytes.
    pub key: [u8; 40],
    /// Seconds the grant lasts.
    pub window: u64,
    /// Allowed clock skew in seconds; `None` = not checked (nf-pkd's -1).
    pub skew: Option<u64>,
    /// Refused SYNs get a reset rather than a silent drop.
    pub reset: bool,
    /// Seconds between two accepted knocks of one source for this action (0 = no limit).
    pub min_interval: u64,
}

/// The digest of a pkd knock (COMPAT.md section 1).
pub fn pkd_digest(
    dport: u16,
    tag: &[u8; 4],
    ts: u64,
    random: &[u8; 12],
    key: &[u8; 40],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(dport.to_be_bytes());
    h.update(dport.to_be_bytes());
    h.update(tag);
    h.update(ts.to_le_bytes());
    h.update(random);
    h.update(key);
    h.finalize().into()
}

/// Builds a pkd knock payload (what `nf-pkd-knock` sends).
pub fn pkd_packet(
    dport: u16,
    tag: &[u8; 4],
    key: &[u8; 40],
    ts: u64,
    random: &[u8; 12],
) -> [u8; PKD_LEN] {
    let mut p = [0u8; PKD_LEN];
    p[..4].copy_from_slice(tag);
    p[4..12].copy_from_slice(&ts.to_le_bytes());
    p[12..24].copy_from_slice(random);
    p[24..].copy_from_slice(&pkd_digest(dport, tag, ts, random, key));
    p
}

/// Parses a tag or key as nf-pkd does: `0x...` = hex, otherwise the bytes, zero-padded to
/// `N`; longer is an error.
pub fn pkd_bytes<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let raw = match s.strip_prefix("0x") {
        Some(h) => decode_hex(h).ok_or_else(|| format!("{s:?}: not hex"))?,
        None => s.as_bytes().to_vec(),
    };
    if raw.len() > N {
        return Err(format!("{s:?}: {} bytes, at most {N}", raw.len()));
    }
    let mut out = [0u8; N];
    out[..raw.len()].copy_from_slice(&raw);
    Ok(out)
}

pub(super) fn decode_hex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks a pkd knock sent to `dport` at Unix time `now`: the actions whose tag and key
/// verify (several may), or why none did. Returns the replay key (the digest) too.
pub fn pkd_check<'a>(
    payload: &[u8],
    dport: u16,
    now: u64,
    actions: &'a [PkdAction],
) -> Result<(Vec<&'a PkdAction>, [u8; 32]), Reject> {
    if payload.len() != PKD_LEN {
        return Err(Reject::Malformed);
    }
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&payload[..4]);
    let mut tsb = [0u8; 8];
    tsb.copy_from_slice(&payload[4..12]);
    let ts = u64::from_le_bytes(tsb);
    let mut random = [0u8; 12];
    random.copy_from_slice(&payload[12..24]);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&payload[24..]);
    let mut ok = Vec::new();
    let mut reason = Reject::NoMatch;
    for a in actions.iter().filter(|a| a.tag == tag) {
        let want = pkd_digest(dport, &tag, ts, &random, &a.key);
        if !bool::from(want.ct_eq(&digest)) {
            reason = Reject::BadDigest;
            continue;
        }
        if let Some(skew) = a.skew {
            if now.abs_diff(ts) > skew {
                reason = Reject::Stale;
                continue;
            }
        }
        ok.push(a);
    }
    if ok.is_empty() {
        return Err(reason);
    }
    Ok((ok, digest))
}
