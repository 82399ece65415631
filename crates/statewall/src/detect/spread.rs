//! Destination mitigations from the flow classifier's detections.
//!
//! A block drops one source, from the window after the one that found it. A flood whose
//! sources change faster than that (spoofed, each source sending a few packets) outruns
//! every block. So when, in one window, the flows taken for attacks toward one
//! (destination, protocol, port) come from at least `destination_sources` sources, the
//! destination is mitigated instead, in the kernel (`statewall_common::detect::DestKey`):
//! - TCP: a SYN to it is admitted only when it is sent again within 3 s (a spoofed source
//!   never retransmits; a real client's first retransmission comes after 1 s), and only
//!   SYNs are held, so established connections go on;
//! - UDP, ICMP: when at least 9 in 10 of those flows' packets share one IP length (a flood
//!   tool's fixed size), the packets of that length are dropped and others go on; else the
//!   destination's packets of that protocol and port are held to `destination_limit` a
//!   second.
//!
//! Their sources are then not blocked one by one. Allowlisted sources are never held (the
//! kernel asks the allowlist before it drops).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use statewall_common::{
    detect::{DestKey, DEST_DROP, DEST_LIMIT, DEST_VERIFY},
    parse::proto,
};

use super::live::Detection;
use statewall_common::maps::addr_ip;

/// A destination mitigation to put in place.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What it matches.
    pub key: DestKey,
    /// `DEST_DROP`, `DEST_LIMIT` or `DEST_VERIFY`.
    pub mode: u32,
    /// Packets per second let through (`DEST_LIMIT`).
    pub limit: u32,
    /// Distinct sources of the attack flows it covers.
    pub sources: usize,
    /// Attack flows it covers.
    pub flows: usize,
}

/// Share of a group's packets one length must have for a length pattern, in tenths.
const SAME_LENGTH_TENTHS: usize = 9;

/// The key of (destination, protocol, port), length 0 (any).
fn key_of(dst: IpAddr, l4: u8, port: u16) -> DestKey {
    let mut addr = [0u8; 16];
    let family = match dst {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            addr.copy_from_slice(&a.octets());
            6
        }
    };
    let port = match l4 {
        proto::TCP | proto::UDP => port,
        _ => 0,
    };
    DestKey {
        family,
        proto: l4,
        port,
        len: 0,
        _pad: 0,
        addr,
    }
}

/// The destination mitigations a window's detections call for: one per (destination,
/// protocol, port) whose attack flows come from at least `min_sources` sources (0: none
/// ever). Protocols other than TCP, UDP, ICMP and ICMPv6 get none.
pub fn plans(found: &[Detection], min_sources: usize, limit: u32) -> Vec<Plan> {
    if min_sources == 0 {
        return Vec::new();
    }
    // (A BTreeMap: the plans come out in one order, run after run.)
    let mut groups: BTreeMap<DestKey, Vec<&Detection>> = BTreeMap::new();
    for d in found {
        if matches!(
            d.proto,
            proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6
        ) {
            groups
                .entry(key_of(d.destination, d.proto, d.port))
                .or_default()
                .push(d);
        }
    }
    let mut out = Vec::new();
    for (mut key, ds) in groups {
        let sources: BTreeSet<IpAddr> = ds.iter().map(|d| d.source).collect();
        if sources.len() < min_sources {
            continue;
        }
        let (mode, limit) = if key.proto == proto::TCP {
            (DEST_VERIFY, 0)
        } else {
            let mut by_len: HashMap<u16, usize> = HashMap::new();
            for d in &ds {
                for l in &d.lens {
                    *by_len.entry(*l).or_default() += 1;
                }
            }
            let all: usize = by_len.values().sum();
            // The most common length (the shortest of equals, so that the choice is one).
            let top = by_len
                .iter()
                .max_by_key(|(l, n)| (**n, std::cmp::Reverse(**l)))
                .map(|(l, n)| (*l, *n));
            // (Length 0: a record that cannot tell; it counts against every length.)
            match top {
                Some((l, n)) if l > 0 && n * 10 >= all * SAME_LENGTH_TENTHS => {
                    key.len = l;
                    (DEST_DROP, 0)
                }
                _ => (DEST_LIMIT, limit),
            }
        };
        out.push(Plan {
            key,
            mode,
            limit,
            sources: sources.len(),
            flows: ds.len(),
        });
    }
    out
}

/// True when `d` is one of the flows `p` covers.
pub fn covers(p: &Plan, d: &Detection) -> bool {
    let k = key_of(d.destination, d.proto, d.port);
    (k.family, k.proto, k.port, k.addr) == (p.key.family, p.key.proto, p.key.port, p.key.addr)
}

/// What a destination mitigation matches, as `10.0.0.2 udp/53, 92-byte packets`.
pub fn target(k: &DestKey) -> String {
    let addr = addr_ip(k.family, &k.addr);
    let what = match k.proto {
        proto::TCP => format!("tcp/{} SYNs", k.port),
        proto::UDP => format!("udp/{}", k.port),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        n => format!("protocol {n}"),
    };
    if k.len != 0 {
        format!("{addr} {what}, {}-byte packets", k.len)
    } else {
        format!("{addr} {what}")
    }
}

/// What a plan does, for its reason.
pub fn action(p: &Plan) -> String {
    match p.mode {
        DEST_VERIFY => "a SYN is admitted only when sent again".into(),
        DEST_DROP => format!("packets of {} bytes dropped", p.key.len),
        _ => format!("held to {} packets a second", p.limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(src: [u8; 4], l4: u8, port: u16, lens: &[u16]) -> Detection {
        Detection {
            source: IpAddr::from(src),
            destination: IpAddr::from([10, 77, 0, 2]),
            block: IpAddr::from(src),
            flow: String::new(),
            packets: lens.len(),
            proto: l4,
            port,
            lens: lens.to_vec(),
            key: Default::default(),
            known_miner: false,
            votes: (0, 0),
        }
    }

    #[test]
    fn many_sources_to_one_port_make_a_plan_and_few_do_not() {
        let mut found: Vec<Detection> = (0..16)
            .map(|i| det([10, 100, 0, i], proto::UDP, 9999, &[92; 10]))
            .collect();
        // The same source twice counts once.
        found.push(det([10, 100, 0, 0], proto::UDP, 9999, &[92]));
        // Another port: its own group, too few sources.
        found.push(det([10, 100, 1, 1], proto::UDP, 53, &[92]));
        let p = plans(&found, 16, 500);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].sources, p[0].flows), (16, 17));
        assert_eq!(
            (p[0].key.port, p[0].key.len, p[0].mode),
            (9999, 92, DEST_DROP)
        );
        assert!(plans(&found, 17, 500).is_empty());
        assert!(plans(&found, 0, 500).is_empty(), "0 turns it off");
        assert!(covers(&p[0], &found[3]) && !covers(&p[0], &found[17]));
        assert_eq!(target(&p[0].key), "10.77.0.2 udp/9999, 92-byte packets");
    }

    #[test]
    fn mixed_lengths_hold_to_a_rate_and_tcp_verifies() {
        // 8 in 10 of one length: under the bar, so a rate.
        let found: Vec<Detection> = (0..4)
            .map(|i| {
                det(
                    [10, 100, 0, i],
                    proto::UDP,
                    7,
                    &[60, 60, 60, 60, 60, 60, 60, 60, 70, 80],
                )
            })
            .collect();
        let p = plans(&found, 4, 500);
        assert_eq!((p[0].mode, p[0].limit, p[0].key.len), (DEST_LIMIT, 500, 0));
        let found: Vec<Detection> = (0..4)
            .map(|i| det([10, 100, 0, i], proto::TCP, 8080, &[40]))
            .collect();
        let p = plans(&found, 4, 500);
        assert_eq!((p[0].mode, p[0].key.len), (DEST_VERIFY, 0));
        assert_eq!(target(&p[0].key), "10.77.0.2 tcp/8080 SYNs");
        // ICMP has no port: flows to any "port" are one group.
        let found: Vec<Detection> = (0..4)
            .map(|i| det([10, 100, 0, i], proto::ICMP, i as u16, &[84; 3]))
            .collect();
        let p = plans(&found, 4, 500);
        assert_eq!((p[0].key.port, p[0].key.len, p[0].sources), (0, 84, 4));
        assert_eq!(target(&p[0].key), "10.77.0.2 icmp, 84-byte packets");
    }
}
