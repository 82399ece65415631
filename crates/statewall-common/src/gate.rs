//! Reference logic of the `gate` stage.
//!
//! The gate enforces protected ports: a packet to a protected (protocol, port) passes only
//! when a live grant exists for (source address, protocol, port). Everything else goes on to
//! the next stage. Grants come from the API, knock doors and (later) SPA; connections opened
//! under a grant are tracked so that they outlive it (see [`decide`]).

use crate::maps::{FlowKey, FlowValue, GateConf, GrantKey, GATE_RESET, GATE_TCP, GATE_UDP};
use crate::parse::proto;
use crate::parse::{PacketInfo, Status};

/// What the gate decides for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Not the gate's business (non-IP, not protected): next stage.
    Next,
    /// Protected and granted: next stage.
    Granted,
    /// Protected and granted, but the flow table was full: next stage, the flow lives only
    /// as long as the grant.
    GrantedUntracked,
    /// Protected, no live grant, but part of a flow opened under one: next stage.
    Flow,
    /// Protected and not granted: drop.
    Drop,
    /// Malformed IP: drop (fail closed, it could be aimed at a protected port).
    DropMalformed,
    /// Refused SYN answered with a TCP reset ([`crate::reset`]).
    Reset,
    /// Refused UDP packet answered with an ICMP port unreachable ([`crate::unreach`]).
    Unreachable,
}

/// Port-table bit for an L4 protocol, or 0 when the protocol has no protected ports.
pub fn port_bit(l4proto: u8) -> u8 {
    match l4proto {
        proto::TCP => GATE_TCP,
        proto::UDP => GATE_UDP,
        _ => 0,
    }
}

/// Builds the grant key a packet would need.
pub fn grant_key(p: &PacketInfo) -> GrantKey {
    GrantKey {
        addr: p.saddr,
        family: p.family,
        proto: p.l4proto,
        port: p.dport,
    }
}

/// TCP flag bits the gate looks at.
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Builds the flow key of a packet.
pub fn flow_key(p: &PacketInfo) -> FlowKey {
    FlowKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        family: p.family,
        proto: p.l4proto,
        _pad: [0; 2],
    }
}

/// True for a TCP packet that starts a connection (SYN without ACK): it needs a live
/// grant, a flow entry is not enough (the 5-tuple may be reused after the flow closed).
pub fn opens_connection(l4proto: u8, tcp_flags: u8) -> bool {
    l4proto == proto::TCP && tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN
}

/// True for a TCP packet that closes its connection (FIN or RST).
pub fn closes_connection(l4proto: u8, tcp_flags: u8) -> bool {
    l4proto == proto::TCP && tcp_flags & (tcp::FIN | tcp::RST) != 0
}

/// Idle timeout of a flow of the packet's protocol, closing or not; 0 = not tracked.
pub fn flow_idle(c: &GateConf, l4proto: u8, closing: bool) -> u64 {
    if l4proto == proto::UDP {
        c.udp_idle_ns
    } else if c.tcp_idle_ns == 0 {
        0
    } else if closing {
        c.tcp_closing_ns
    } else {
        c.tcp_idle_ns
    }
}

/// Everything [`decide`] reads and writes: the reference implements it over plain maps;
/// the kernel program does the same on BPF maps.
pub trait GateTables {
    /// Whether any port of the protocols in `bits` is protected (the summary slot
    /// [`crate::maps::GATE_SUMMARY_SLOT`] of the port table).
    fn any_protected(&self, bits: u8) -> bool;
    /// Protected-port bits of a port.
    fn port_bits(&self, port: u16) -> u8;
    /// Expiry of a grant, if one exists.
    fn grant_expiry(&self, k: &GrantKey) -> Option<u64>;
    /// Flow timeouts.
    fn conf(&self) -> GateConf;
    /// A flow.
    fn flow(&self, k: &FlowKey) -> Option<FlowValue>;
    /// Writes a flow; false when the table is full and the flow is new.
    fn put_flow(&mut self, k: &FlowKey, v: &FlowValue) -> bool;
    /// Deletes a flow.
    fn del_flow(&mut self, k: &FlowKey);
}

/// Decides one packet at kernel time `now`.
///
/// Non-first fragments carry no ports: those whose first fragment was seen are judged with
/// its ports (`frag`); the others cannot be told where they go, so they are dropped when
/// any port of their protocol is protected. Malformed IP packets are dropped
/// when any port at all is protected.
///
/// A packet to a protected port passes with a live grant for (source, protocol, port), and
/// records its flow (5-tuple) unless tracking is off for the protocol. Without a grant, a
/// packet of a recorded flow that has not idled out passes too, except a TCP SYN without
/// ACK: connections opened while the grant lived outlast it, new ones need a grant. Each
/// packet of a flow pushes its expiry forward; a FIN or RST shortens it to the closing
/// timeout. An idle flow met by a packet is deleted.
///
/// A refused UDP packet to a port whose style is `GATE_UNREACH` is answered with an ICMP
/// port unreachable, as from a closed port. (The kernel drops instead when its answer
/// bucket is empty; this model has no buckets.) Only packets a host would answer are
/// answered (see [`answers`]); the others are dropped.
pub fn decide<T: GateTables>(p: &PacketInfo, now: u64, t: &mut T) -> GateVerdict {
    let v = decide_refusing(p, now, t);
    if v == GateVerdict::Drop
        && p.l4proto == proto::UDP
        && crate::parse::has_ports(p)
        && p.flags & crate::parse::FLAG_NONFIRST_FRAG == 0
        && t.port_bits(p.dport) & crate::maps::GATE_UNREACH != 0
        && answers(p)
    {
        return GateVerdict::Unreachable;
    }
    if v == GateVerdict::Reset && !answers(p) {
        return GateVerdict::Drop;
    }
    v
}

/// Whether a refused packet gets an answer: it came to a unicast MAC, its L4 header
/// follows a bare IP header (IPv4 without options, IPv6 without extension headers), it is
/// no later fragment, its source is a unicast address other than 0.0.0.0/8 or `::`, and
/// its destination is neither multicast nor broadcast (IPv4 240.0.0.0/4 included) nor
/// unspecified. (RFC 1122 3.2.2 and RFC 4443 2.4 (e) name the packets a host never answers
/// with an ICMP error; a reset follows the same rule.)
pub fn answers(p: &PacketInfo) -> bool {
    use crate::parse::{FLAG_L2_GROUP, FLAG_NONFIRST_FRAG};
    use core::net::{Ipv4Addr, Ipv6Addr};
    if p.flags & FLAG_L2_GROUP != 0 || p.flags & FLAG_NONFIRST_FRAG != 0 {
        return false;
    }
    match p.family {
        4 => {
            let at = |a: &[u8; 16]| Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let (s, d) = (at(&p.saddr), at(&p.daddr));
            let never = |a: Ipv4Addr| a.is_multicast() || a.is_broadcast() || a.octets()[0] >= 240;
            u32::from(p.l4_off) == u32::from(p.l3_off) + 20
                && s.octets()[0] != 0
                && !never(s)
                && !d.is_unspecified()
                && !never(d)
        }
        6 => {
            let (s, d) = (Ipv6Addr::from(p.saddr), Ipv6Addr::from(p.daddr));
            u32::from(p.l4_off) == u32::from(p.l3_off) + 40
                && !s.is_unspecified()
                && !s.is_multicast()
                && !d.is_multicast()
        }
        _ => false,
    }
}

fn decide_refusing<T: GateTables>(p: &PacketInfo, now: u64, t: &mut T) -> GateVerdict {
    if p.status == Status::NonIp as u8 {
        return GateVerdict::Next;
    }
    if p.status == Status::Malformed as u8 {
        // Fail closed, but only when the gate protects something at all.
        return if t.any_protected(GATE_TCP | GATE_UDP) {
            GateVerdict::DropMalformed
        } else {
            GateVerdict::Next
        };
    }
    let mut bit = port_bit(p.l4proto);
    if p.family == 6
        && p.flags & crate::parse::FLAG_NONFIRST_FRAG != 0
        && crate::parse::is_ipv6_ext(p.l4proto)
    {
        // A later IPv6 fragment whose first was not seen, naming an extension header:
        // its protocol is unknown, so it may be any protocol with ports.
        bit = GATE_TCP | GATE_UDP;
    }
    if bit == 0 {
        return GateVerdict::Next;
    }
    if !crate::parse::has_ports(p) {
        return if t.any_protected(bit) {
            GateVerdict::Drop
        } else {
            GateVerdict::Next
        };
    }
    if t.port_bits(p.dport) & bit == 0 {
        return GateVerdict::Next;
    }
    let granted = matches!(t.grant_expiry(&grant_key(p)), Some(exp) if exp > now);
    if !granted && opens_connection(p.l4proto, p.tcp_flags) {
        // A new connection needs a grant, whatever flows exist (the SYN-flood path: one
        // lookup). Ports whose style is `reset` answer it with one.
        if t.port_bits(p.dport) & GATE_RESET != 0 {
            return GateVerdict::Reset;
        }
        return GateVerdict::Drop;
    }
    let conf = t.conf();
    if flow_idle(&conf, p.l4proto, false) == 0 {
        return if granted {
            GateVerdict::Granted
        } else {
            GateVerdict::Drop
        };
    }
    let fk = flow_key(p);
    let closes = closes_connection(p.l4proto, p.tcp_flags);
    match t.flow(&fk) {
        Some(mut v) if v.expires_ns > now => {
            if opens_connection(p.l4proto, p.tcp_flags) {
                // A new connection on a reused 5-tuple (granted): not closing any more.
                v.closing = 0;
            }
            v.closing |= closes as u8;
            v.expires_ns = now + flow_idle(&conf, p.l4proto, v.closing != 0);
            t.put_flow(&fk, &v);
            if granted {
                GateVerdict::Granted
            } else {
                GateVerdict::Flow
            }
        }
        found => {
            if found.is_some() {
                t.del_flow(&fk);
            }
            if !granted {
                return GateVerdict::Drop;
            }
            let v = FlowValue {
                expires_ns: now + flow_idle(&conf, p.l4proto, closes),
                closing: closes as u8,
                _pad: [0; 7],
            };
            if t.put_flow(&fk, &v) {
                GateVerdict::Granted
            } else {
                GateVerdict::GrantedUntracked
            }
        }
    }
}
