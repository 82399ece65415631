//! What every SPA verifier shares: the limits on grants, the reasons a candidate is
//! refused (also the counter names), and protocol/port and network matching.

use std::net::IpAddr;

/// The longest grant an fwknop client may ask for when a stanza sets no `max_fw_timeout`,
/// seconds.
pub const DEFAULT_MAX_FW_TIMEOUT: u64 = 300;

/// The longest grant any configuration may give, seconds (a year): every expiry computed
/// from it fits in the kernel clock's 64 bits.
pub const LONGEST_GRANT: u64 = 365 * 86400;

/// Why a candidate was refused (also the counter names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Wrong length, not base64, not the format.
    Malformed,
    /// No action or stanza for the tag / source.
    NoMatch,
    /// The digest or HMAC did not verify (forged, or a wrong key).
    BadDigest,
    /// Seen before (replay cache).
    Replay,
    /// Timestamp outside the allowed clock skew.
    Stale,
    /// The message asks for something the stanza does not allow (ports, a command, the
    /// source address, the user).
    NotAllowed,
    /// The replay cache is full of live entries: refused (fail closed).
    CacheFull,
    /// Valid, but the action's `min_interval` since this source's last accepted knock has
    /// not passed.
    RateLimited,
    /// The cluster's replay claim could not be made (etcd unreachable) and
    /// `[cluster] on_cluster_down = "refuse"`.
    ClusterDown,
}

impl Reject {
    /// Counter / event name.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::NoMatch => "no_match",
            Reject::BadDigest => "bad_digest",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
            Reject::NotAllowed => "not_allowed",
            Reject::CacheFull => "cache_full",
            Reject::RateLimited => "rate_limited",
            Reject::ClusterDown => "cluster_down",
        }
    }

    /// Every reason, in counter order.
    pub const ALL: [Reject; 9] = [
        Reject::Malformed,
        Reject::NoMatch,
        Reject::BadDigest,
        Reject::Replay,
        Reject::Stale,
        Reject::NotAllowed,
        Reject::CacheFull,
        Reject::RateLimited,
        Reject::ClusterDown,
    ];
}

/// Parses `proto/port`.
pub fn parse_proto_port(s: &str) -> Option<(u8, u16)> {
    let (p, n) = s.trim().split_once('/')?;
    let proto = match p.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        _ => return None,
    };
    let port: u16 = n.trim().parse().ok()?;
    (port != 0).then_some((proto, port))
}

pub(super) fn in_net(a: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}
