//! The ICMP port unreachable the gate sends back for a refused UDP packet to a port whose
//! style is `GATE_UNREACH` (instead of dropping it silently), as a host answers for a
//! closed port: IPv4 ICMP type 3 code 3, IPv6 ICMPv6 type 1 code 4, from the packet's
//! destination to its source, quoting the packet's IP header and the first 8 bytes after
//! it (its UDP header). Both checksums are computed here.
//!
//! Only packets whose UDP header follows the IP header directly are answered (IPv4
//! without options, IPv6 without extension headers); others are dropped as before.

use crate::parse::proto;
use crate::parse::PacketInfo;

/// Internal gate verdict: refuse with an ICMP port unreachable.
pub const VERDICT_UNREACH: i32 = 101;

/// Bytes quoted from an IPv4 packet (its header and 8 bytes).
pub const QUOTE_V4: u32 = 28;
/// Bytes quoted from an IPv6 packet.
pub const QUOTE_V6: u32 = 48;

/// The headers of an answer: IP (`l3_len` bytes of `l3` used) and ICMP; the quote follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreach {
    /// IPv4 (20 bytes) or IPv6 (40 bytes) header.
    pub l3: [u8; 40],
    /// 20 or 40.
    pub l3_len: u32,
    /// ICMP header (type, code, checksum, 4 unused bytes).
    pub icmp: [u8; 8],
    /// Bytes of the quote: [`QUOTE_V4`] or [`QUOTE_V6`].
    pub quote_len: u32,
}

#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[inline(always)]
fn sum_words(b: &[u8], n: usize) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < n {
        s += ((b[i] as u64) << 8) | b[i + 1] as u64;
        i += 2;
    }
    s
}

/// Builds the answer to the UDP packet `p`, whose first bytes from its IP header on are
/// `quote` (`None` when it is not a packet this module answers).
#[inline(always)]
pub fn build(p: &PacketInfo, quote: &[u8; 48]) -> Option<Unreach> {
    if p.l4proto != proto::UDP {
        return None;
    }
    let v6 = p.family == 6;
    let l3_len: u32 = if v6 { 40 } else { 20 };
    if p.l4_off as u32 != p.l3_off as u32 + l3_len {
        return None;
    }
    let quote_len = if v6 { QUOTE_V6 } else { QUOTE_V4 };
    let icmp_len = 8 + quote_len;
    let mut u = Unreach {
        l3: [0; 40],
        l3_len,
        icmp: [0; 8],
        quote_len,
    };
    let alen = if v6 { 16 } else { 4 };
    let mut s = sum_words(quote, quote_len as usize);
    if v6 {
        u.icmp[0] = 1; // destination unreachable
        u.icmp[1] = 4; // port unreachable
        s += sum_words(&p.daddr, alen) + sum_words(&p.saddr, alen);
        s += icmp_len as u64 + proto::ICMPV6 as u64;
    } else {
        u.icmp[0] = 3;
        u.icmp[1] = 3;
    }
    s += ((u.icmp[0] as u64) << 8) | u.icmp[1] as u64;
    let c = fold(s);
    u.icmp[2..4].copy_from_slice(&c.to_be_bytes());
    if v6 {
        u.l3[0] = 0x60;
        u.l3[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
        u.l3[6] = proto::ICMPV6;
        u.l3[7] = 64;
        u.l3[8..24].copy_from_slice(&p.daddr);
        u.l3[24..40].copy_from_slice(&p.saddr);
    } else {
        u.l3[0] = 0x45;
        u.l3[1] = 0xc0; // internetwork control, as hosts send ICMP errors
        u.l3[2..4].copy_from_slice(&((20 + icmp_len) as u16).to_be_bytes());
        u.l3[8] = 64;
        u.l3[9] = proto::ICMP;
        u.l3[12..16].copy_from_slice(&p.daddr[..4]);
        u.l3[16..20].copy_from_slice(&p.saddr[..4]);
        let c = fold(sum_words(&u.l3, 20));
        u.l3[10..12].copy_from_slice(&c.to_be_bytes());
    }
    Some(u)
}
