//! Fragments: later fragments of a datagram are classified as their datagram.
//!
//! A non-first fragment carries no L4 header, so on its own it has no ports. Every stage
//! program of the main object runs [`track`] after parsing: a first fragment (offset 0,
//! ports parsed) records its ports under (addresses, protocol, identification) in a small
//! LRU table ([`MAP_FRAGS`]); a later fragment that finds its datagram's entry gets those
//! ports and [`FLAG_FRAG_PORTS`]. The stages then judge it as they judged its first
//! fragment: the gate by the same grant, the firewall by the same rules and the same
//! connection (a fragment never changes a connection's state, it only reads it).
//!
//! An entry serves for [`FRAG_TTL_NS`] (30 seconds, as long as Linux keeps a datagram in
//! reassembly by default): an IPv4 identification comes round again after 65,536
//! datagrams, and a fragment of a later datagram must not take an old one's ports.
//!
//! A later fragment whose first fragment was not seen (reordered, the entry evicted or
//! older than that) keeps no ports: the gate drops it when any port of its protocol is protected, the
//! firewall matches it only by rules that name no port. Its datagram cannot be
//! reassembled without the first fragment, which the stages judge with its ports.
//!
//! Only TCP and UDP are tracked (the protocols with ports). An IPv6 datagram may carry
//! extension headers after its Fragment header (Destination Options, for one): its later
//! fragments then name the first of those, not the L4 protocol. So IPv6 entries are keyed
//! without the protocol (the 32-bit identification and the addresses tell datagrams
//! apart) and keep it: a later fragment takes its datagram's protocol with its ports. One
//! whose first fragment was not seen keeps the extension header as its protocol, and the
//! gate then judges it as a fragment of any protocol with ports.

use crate::parse::proto;
use crate::parse::{PacketInfo, Status, FLAG_FRAG, FLAG_FRAG_PORTS, FLAG_L4, FLAG_NONFIRST_FRAG};

/// The table, an `LRU_HASH` of [`FragKey`] -> [`FragPorts`] (kernel-private, never pinned).
pub const MAP_FRAGS: &str = "SW_FRAGS";
/// Entries in [`MAP_FRAGS`]: datagrams in reassembly at once.
pub const FRAGS_MAX: u32 = 8192;

/// How long a first fragment's ports serve its later fragments.
pub const FRAG_TTL_NS: u64 = 30_000_000_000;

/// A datagram: addresses, protocol, family and identification.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragKey {
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Identification.
    pub id: u32,
    /// L4 protocol.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// The ports of a datagram's first fragment, and when it was seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The datagram's L4 protocol.
    pub proto: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
    /// The stage clock when the first fragment was seen.
    pub seen_ns: u64,
}

/// The table as [`track`] sees it.
pub trait FragTable {
    /// The ports recorded for a datagram.
    fn get(&self, k: &FragKey) -> Option<FragPorts>;
    /// Records them.
    fn put(&mut self, k: &FragKey, v: &FragPorts);
}

/// Records a first fragment's ports, or gives a later fragment the ports of its first
/// when that was seen at most [`FRAG_TTL_NS`] before `now`.
#[inline(always)]
pub fn track<T: FragTable>(p: &mut PacketInfo, t: &mut T, k: &mut FragKey, now: u64) {
    let ported = p.l4proto == proto::TCP || p.l4proto == proto::UDP;
    let later = p.flags & FLAG_NONFIRST_FRAG != 0;
    let v6 = p.family == 6;
    if p.status != Status::Ip as u8
        || p.flags & FLAG_FRAG == 0
        || !(ported || (later && v6 && crate::parse::is_ipv6_ext(p.l4proto)))
    {
        return;
    }
    k.saddr = p.saddr;
    k.daddr = p.daddr;
    k.id = p.frag_id;
    k.proto = if v6 { 0 } else { p.l4proto };
    k.family = p.family;
    k._pad = [0; 2];
    if p.flags & FLAG_NONFIRST_FRAG == 0 {
        if p.flags & FLAG_L4 != 0 {
            t.put(
                k,
                &FragPorts {
                    sport: p.sport,
                    dport: p.dport,
                    proto: p.l4proto,
                    _pad: [0; 3],
                    seen_ns: now,
                },
            );
        }
    } else if let Some(v) = t.get(k) {
        if now.wrapping_sub(v.seen_ns) > FRAG_TTL_NS {
            return;
        }
        p.l4proto = v.proto;
        p.sport = v.sport;
        p.dport = v.dport;
        p.flags |= FLAG_FRAG_PORTS;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragPorts {}
}
