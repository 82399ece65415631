//! The TCP reset the gate sends back for a refused SYN to a port whose style is `reset`
//! (instead of dropping it silently): the same frame turned around, trimmed to the IP and
//! TCP headers, with RST|ACK, `seq` 0 and `ack` = the SYN's sequence + 1 + its payload
//! (RFC 9293, reset for a segment without ACK), and both checksums computed here.
//!
//! Only frames whose TCP header follows the IP header directly are answered (IPv4 without
//! options, IPv6 without extension headers); others are dropped as before.

use crate::parse::proto;
use crate::parse::PacketInfo;

/// Internal gate verdict: refuse with a reset (the program then answers and redirects).
pub const VERDICT_RESET: i32 = 100;

/// The headers of a reset: IP (`l3_len` bytes of `l3` used) and TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rst {
    /// IPv4 (20 bytes) or IPv6 (40 bytes) header.
    pub l3: [u8; 40],
    /// 20 or 40.
    pub l3_len: u32,
    /// TCP header.
    pub tcp: [u8; 20],
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

/// Builds the reset for the SYN `p` (`None` when the frame is not one this module answers).
#[inline(always)]
pub fn build(p: &PacketInfo) -> Option<Rst> {
    if p.l4proto != proto::TCP {
        return None;
    }
    let v6 = p.family == 6;
    let l3_len: u32 = if v6 { 40 } else { 20 };
    if p.l4_off as u32 != p.l3_off as u32 + l3_len {
        return None;
    }
    let mut r = Rst {
        l3: [0; 40],
        l3_len,
        tcp: [0; 20],
    };
    let alen = if v6 { 16 } else { 4 };
    // TCP: ports swapped, seq 0, ack = SYN's seq + 1 + payload, RST|ACK, doff 5.
    let ack = p.tcp_seq.wrapping_add(1).wrapping_add(p.payload_len as u32);
    r.tcp[0..2].copy_from_slice(&p.dport.to_be_bytes());
    r.tcp[2..4].copy_from_slice(&p.sport.to_be_bytes());
    r.tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    r.tcp[12] = 5 << 4;
    r.tcp[13] = 0x14; // RST | ACK
    let mut s = sum_words(&r.tcp, 20) + proto::TCP as u64 + 20;
    s += sum_words(&p.daddr, alen) + sum_words(&p.saddr, alen);
    let c = fold(s);
    r.tcp[16..18].copy_from_slice(&c.to_be_bytes());
    if v6 {
        r.l3[0] = 0x60;
        r.l3[5] = 20; // payload length
        r.l3[6] = proto::TCP;
        r.l3[7] = 64;
        r.l3[8..24].copy_from_slice(&p.daddr);
        r.l3[24..40].copy_from_slice(&p.saddr);
    } else {
        r.l3[0] = 0x45;
        r.l3[3] = 40; // total length
        r.l3[6] = 0x40; // DF
        r.l3[8] = 64;
        r.l3[9] = proto::TCP;
        r.l3[12..16].copy_from_slice(&p.daddr[..4]);
        r.l3[16..20].copy_from_slice(&p.saddr[..4]);
        let c = fold(sum_words(&r.l3, 20));
        r.l3[10..12].copy_from_slice(&c.to_be_bytes());
    }
    Some(r)
}
