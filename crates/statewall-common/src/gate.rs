//! Reference logic of the `gate` stage.
//!
//! The gate enforces protected ports: a packet to a protected (protocol, port) passes only
//! when a live grant exists for (source address, protocol, port). Everything else goes on to
//! the next stage. Grants come from the API today, and from knock doors and SPA later.

use crate::maps::{GrantKey, GATE_TCP, GATE_UDP};
use crate::parse::{PacketInfo, Status, FLAG_L4, FLAG_NONFIRST_FRAG};
use crate::proto;

/// What the gate decides for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Not the gate's business (non-IP, not protected): next stage.
    Next,
    /// Protected and granted: next stage.
    Granted,
    /// Protected and not granted: drop.
    Drop,
    /// Malformed IP: drop (fail closed, it could be aimed at a protected port).
    DropMalformed,
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

/// Decides one packet. `port_bits(port)` reads the protected-port table;
/// `grant_expiry(key)` returns the expiry of a grant if one exists; `now` is the kernel clock.
///
/// `any_protected(bits)` tells whether any port of the protocols in `bits` is protected
/// (the summary slot [`crate::maps::GATE_SUMMARY_SLOT`] of the port table).
/// Non-first fragments carry no ports: the gate cannot tell where they go, so they are
/// dropped when any port of their protocol is protected. Malformed IP packets are dropped
/// when any port at all is protected.
pub fn decide(
    p: &PacketInfo,
    now: u64,
    any_protected: impl Fn(u8) -> bool,
    port_bits: impl Fn(u16) -> u8,
    grant_expiry: impl Fn(&GrantKey) -> Option<u64>,
) -> GateVerdict {
    if p.status == Status::NonIp as u8 {
        return GateVerdict::Next;
    }
    if p.status == Status::Malformed as u8 {
        // Fail closed, but only when the gate protects something at all.
        return if any_protected(GATE_TCP | GATE_UDP) {
            GateVerdict::DropMalformed
        } else {
            GateVerdict::Next
        };
    }
    let bit = port_bit(p.l4proto);
    if bit == 0 {
        return GateVerdict::Next;
    }
    if p.flags & FLAG_NONFIRST_FRAG != 0 || p.flags & FLAG_L4 == 0 {
        return if any_protected(bit) {
            GateVerdict::Drop
        } else {
            GateVerdict::Next
        };
    }
    if port_bits(p.dport) & bit == 0 {
        return GateVerdict::Next;
    }
    match grant_expiry(&grant_key(p)) {
        Some(exp) if exp > now => GateVerdict::Granted,
        _ => GateVerdict::Drop,
    }
}
