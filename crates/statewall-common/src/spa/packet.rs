//! The stage's view of a parsed packet: whether it is a candidate, and its limiter key.
//! The parent module holds the tables' layouts and the limiter, which need no packet.

use super::{RateKey, SpaConf, PKD_LEN};
use crate::parse::proto;
use crate::parse::{PacketInfo, FLAG_FRAG, FLAG_L4};

/// What a packet is to the stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Not a candidate: on to the next stage.
    Other,
    /// A UDP packet of pkd length: a candidate if its first four payload bytes are a tag.
    MaybePkd,
    /// A fwknop candidate.
    Fwknop,
}

/// Classifies a parsed packet (the tag check needs the payload: [`Class::MaybePkd`]).
/// Only whole datagrams are candidates: a first fragment's payload is a part of one,
/// which no verifier would accept (and a 56-byte part must not pass for a pkd packet).
#[inline(always)]
pub fn classify(p: &PacketInfo, c: &SpaConf) -> Class {
    if !p.is_ip() || p.l4proto != proto::UDP || p.flags & FLAG_L4 == 0 || p.flags & FLAG_FRAG != 0 {
        return Class::Other;
    }
    if c.fwknop_port != 0 && p.dport == c.fwknop_port {
        return Class::Fwknop;
    }
    if c.pkd != 0 && p.payload_len as usize == PKD_LEN {
        return Class::MaybePkd;
    }
    Class::Other
}

/// Limiter key of a packet's source.
#[inline(always)]
pub fn rate_key(p: &PacketInfo) -> RateKey {
    RateKey {
        addr: p.saddr,
        family: p.family,
        _pad: [0; 3],
    }
}
