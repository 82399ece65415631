//! A firewall rule and chain as the classifier sees them (resolved: prefixes masked, ports
//! as ranges), and what is asked of single rules: which fields they constrain, whether two
//! can match one packet, the kernel's linear form of a short chain. Imports only value
//! types.

use std::net::IpAddr;

use statewall_common::firewall::{field, Bitset, LinChain, LinRule, LINEAR_MAX, LIN_ANY_CT};

pub use crate::types::PKey;

/// One rule, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Source prefix (address masked to its length), `None` = any.
    pub src: Option<(IpAddr, u8)>,
    /// Destination prefix.
    pub dst: Option<(IpAddr, u8)>,
    /// L4 protocol number, `None` = any.
    pub proto: Option<u8>,
    /// Source port range (inclusive, from 1).
    pub sport: Option<(u16, u16)>,
    /// Destination port range.
    pub dport: Option<(u16, u16)>,
    /// TCP flags: (mask, value); only TCP packets match.
    pub tcpflags: Option<(u8, u8)>,
    /// Connection state (`statewall_common::ct::NEW` ...), `None` = any.
    pub ct: Option<u8>,
    /// `statewall_common::firewall::ACT_*`.
    pub action: u8,
}

/// A chain's rules and default action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Rules in order (first match wins).
    pub rules: Vec<Rule>,
    /// Default action.
    pub default_action: u8,
    /// Packets of known connections are accepted before the rules.
    pub accept_established: bool,
}

pub use crate::types::mask;

fn family(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        4
    } else {
        6
    }
}

fn addr16(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            b
        }
        IpAddr::V6(v) => v.octets(),
    }
}

/// The rules of a chain as the kernel reads them one by one (`pos` and `ids`: each rule's
/// position and counter id), or `None` when the chain has more than [`LINEAR_MAX`].
pub fn linear_chain<R: std::borrow::Borrow<Rule>>(
    rules: &[R],
    pos: &[u32],
    ids: &[u32],
) -> Option<LinChain> {
    if rules.len() > LINEAR_MAX {
        return None;
    }
    // An address and its mask as the kernel's words (the packet's bytes, in order).
    let words = |n: Option<(IpAddr, u8)>| -> ([u32; 4], [u32; 4]) {
        let Some((a, len)) = n else {
            return ([0; 4], [0; 4]);
        };
        // The mask: the all-ones address of the family cut to the length.
        let ones = if a.is_ipv4() {
            IpAddr::from([0xff; 4])
        } else {
            IpAddr::from([0xff; 16])
        };
        let (a, m) = (addr16(&a), addr16(&mask(ones, len)));
        let w = |b: &[u8; 16], i: usize| {
            u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        };
        (
            std::array::from_fn(|i| w(&a, i) & w(&m, i)),
            std::array::from_fn(|i| w(&m, i)),
        )
    };
    let mut lin = LinChain {
        n: rules.len() as u32,
        ..LinChain::default()
    };
    for (i, r) in rules.iter().map(|r| r.borrow()).enumerate() {
        let (src, smask) = words(r.src);
        let (dst, dmask) = words(r.dst);
        let fams: Vec<u8> = [r.src, r.dst]
            .iter()
            .flatten()
            .map(|n| family(&n.0))
            .collect();
        let range = |p: Option<(u16, u16)>| p.map_or([0, u16::MAX], |(lo, hi)| [lo, hi]);
        let (flags_mask, flags_value) = r.tcpflags.unwrap_or((0, 0));
        lin.rules[i] = LinRule {
            src,
            smask,
            dst,
            dmask,
            sport: range(r.sport),
            dport: range(r.dport),
            // Prefixes of two families: no packet has both (0xff is no family).
            family: match fams.as_slice() {
                [] => 0,
                [f] => *f,
                [a, b] if a == b => *a,
                _ => 0xff,
            },
            proto: r.proto.unwrap_or(0),
            has_proto: r.proto.is_some() as u8,
            has_flags: r.tcpflags.is_some() as u8,
            flags_mask,
            flags_value,
            ct: r.ct.unwrap_or(LIN_ANY_CT),
            action: r.action,
            pos: pos[i],
            id: ids[i],
        };
    }
    Some(lin)
}

/// The prefix of an address field of a rule, as a [`PKey`].
pub fn pkey(n: (IpAddr, u8)) -> PKey {
    (family(&n.0), addr16(&n.0), n.1)
}

/// The address of a [`PKey`].
fn pkey_ip(k: &PKey) -> IpAddr {
    if k.0 == 4 {
        IpAddr::from([k.1[0], k.1[1], k.1[2], k.1[3]])
    } else {
        IpAddr::from(k.1)
    }
}

/// `k` cut to `len` bits.
pub fn shorten(k: &PKey, len: u8) -> PKey {
    pkey((mask(pkey_ip(k), len), len))
}

/// True when prefix `inner` lies inside `outer` (same family, at least as long, same bits).
pub fn inside(inner: &PKey, outer: &PKey) -> bool {
    inner.0 == outer.0 && inner.2 >= outer.2 && shorten(inner, outer.2) == *outer
}

/// The default routes: the tries of a used address field always hold them.
pub const DEFAULT_ROUTES: [PKey; 2] = [(4, [0; 16], 0), (6, [0; 16], 0)];

/// The field an index of a chain's small-value table belongs to: protocols (0..256), TCP
/// flags (256 values, then "not TCP"), connection states.
pub fn small_field(i: usize) -> u8 {
    let flags = statewall_common::firewall::flags_index(None) as usize;
    match i {
        0..=255 => field::PROTO,
        _ if i <= flags => field::FLAGS,
        _ => field::CT,
    }
}

/// Whether `r` accepts the value at index `i` of the small-value table.
pub fn small_accepts(r: &Rule, i: usize) -> bool {
    let flags = statewall_common::firewall::flags_index(None) as usize;
    match i {
        0..=255 => r.proto.is_none_or(|p| p as usize == i),
        _ if i < flags => r.tcpflags.is_none_or(|(m, v)| (i - 256) as u8 & m == v),
        _ if i == flags => r.tcpflags.is_none(),
        _ => {
            r.ct.is_none_or(|st| statewall_common::firewall::ct_index(st) as usize == i)
        }
    }
}

/// Whether a port constraint accepts port `port` (0 stands for packets without ports,
/// which only rules without a port constraint accept).
pub fn port_accepts(range: Option<(u16, u16)>, port: usize) -> bool {
    range.is_none_or(|(lo, hi)| lo as usize <= port && port <= hi as usize)
}

/// No packet can match both rules: some field's values are disjoint (prefixes of which
/// neither holds the other, or of two families; protocols; port ranges; TCP flags that
/// disagree on a bit both test, or flags beside a protocol other than TCP; connection
/// states). The order of two such rules decides nothing, so positions need not keep it.
/// `false` when unsure.
pub fn disjoint(a: &Rule, b: &Rule) -> bool {
    let nets = |x: Option<(IpAddr, u8)>, y: Option<(IpAddr, u8)>| match (x, y) {
        (Some(x), Some(y)) => {
            let (x, y) = (pkey(x), pkey(y));
            !inside(&x, &y) && !inside(&y, &x)
        }
        _ => false,
    };
    let family = |r: &Rule| r.src.or(r.dst).map(|n| family(&n.0));
    let ranges = |x: Option<(u16, u16)>, y: Option<(u16, u16)>| {
        x.zip(y).is_some_and(|(x, y)| x.1 < y.0 || y.1 < x.0)
    };
    let differ = |x: Option<u8>, y: Option<u8>| x.zip(y).is_some_and(|(x, y)| x != y);
    let flags_not_tcp = |x: &Rule, y: &Rule| {
        x.tcpflags.is_some()
            && y.proto
                .is_some_and(|p| p != statewall_common::parse::proto::TCP)
    };
    nets(a.src, b.src)
        || nets(a.dst, b.dst)
        || differ(family(a), family(b))
        || differ(a.proto, b.proto)
        || ranges(a.sport, b.sport)
        || ranges(a.dport, b.dport)
        || a.tcpflags
            .zip(b.tcpflags)
            .is_some_and(|((m1, v1), (m2, v2))| (v1 ^ v2) & m1 & m2 != 0)
        || flags_not_tcp(a, b)
        || flags_not_tcp(b, a)
        || differ(a.ct, b.ct)
}

/// The [`field`] bits a rule constrains.
pub fn fields(r: &Rule) -> u8 {
    let bit = |on: bool, f: u8| if on { f } else { 0 };
    bit(r.src.is_some(), field::SRC)
        | bit(r.dst.is_some(), field::DST)
        | bit(r.proto.is_some(), field::PROTO)
        | bit(r.sport.is_some(), field::SPORT)
        | bit(r.dport.is_some(), field::DPORT)
        | bit(r.tcpflags.is_some(), field::FLAGS)
        | bit(r.ct.is_some(), field::CT)
}

/// Takes position `r` out of a set.
pub fn unset(b: &mut Bitset, r: usize) {
    b.words[r / 64] &= !(1u64 << (r % 64));
    if b.words[r / 64] == 0 {
        b.summary[r / 64 / 64] &= !(1u64 << ((r / 64) % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words the kernel compares for prefix `n`, against addresses just inside and
    /// just outside it (held to `IpAddr` arithmetic, not to the builder's own masks), at
    /// every IPv4 length and the IPv6 lengths around each word's edge; a rule of two
    /// families matches no packet.
    #[test]
    fn rule_lists_hold_the_prefixes_they_were_given() {
        let words = |a: IpAddr| -> [u32; 4] {
            let b = addr16(&a);
            core::array::from_fn(|i| {
                u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            })
        };
        let inside = |r: &LinRule, a: IpAddr| {
            let w = words(a);
            (0..4).all(|i| w[i] & r.smask[i] == r.src[i])
        };
        let any = Rule::default();
        let cases: Vec<(IpAddr, u8)> = (0..=32)
            .map(|l| ("203.0.113.77".parse().unwrap(), l))
            .chain(
                [0u8, 1, 31, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128]
                    .into_iter()
                    .map(|l| ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff".parse().unwrap(), l)),
            )
            .collect();
        for (a, len) in cases {
            let net = mask(a, len);
            let lin = linear_chain(
                &[Rule {
                    src: Some((net, len)),
                    ..any.clone()
                }],
                &[7],
                &[3],
            )
            .unwrap();
            let r = &lin.rules[0];
            assert_eq!((lin.n, r.pos, r.id), (1, 7, 3));
            assert_eq!(r.family, if a.is_ipv4() { 4 } else { 6 });
            // The last address of the prefix, and the one after it (when there is one).
            let bits = if a.is_ipv4() { 32 } else { 128 };
            let host = if len == bits {
                0
            } else {
                u128::MAX >> (128 - (bits - len) as u32)
            };
            let (last, next) = match net {
                IpAddr::V4(v) => {
                    let x = u32::from(v) as u128 | host;
                    (
                        IpAddr::from(std::net::Ipv4Addr::from(x as u32)),
                        (x < u32::MAX as u128)
                            .then(|| IpAddr::from(std::net::Ipv4Addr::from(x as u32 + 1))),
                    )
                }
                IpAddr::V6(v) => {
                    let x = u128::from(v) | host;
                    (
                        IpAddr::from(std::net::Ipv6Addr::from(x)),
                        x.checked_add(1)
                            .map(|y| IpAddr::from(std::net::Ipv6Addr::from(y))),
                    )
                }
            };
            assert!(
                inside(r, net) && inside(r, a) && inside(r, last),
                "/{len} of {a}"
            );
            if let Some(n) = next {
                assert!(!inside(r, n), "/{len} of {a}: {n} is outside");
            }
        }
        // Addresses of two families: no packet has both.
        let mixed = Rule {
            src: Some(("10.0.0.0".parse().unwrap(), 8)),
            dst: Some(("2001:db8::".parse().unwrap(), 32)),
            ..any.clone()
        };
        let lin = linear_chain(&[mixed], &[0], &[0]).unwrap();
        assert_eq!(lin.rules[0].family, 0xff);
        // Past 16 rules, no list.
        let many = vec![any; LINEAR_MAX + 1];
        assert!(linear_chain(&many, &[0; LINEAR_MAX + 1], &[0; LINEAR_MAX + 1]).is_none());
    }
}
