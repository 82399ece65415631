//! The packet parser, slice-based twin of the kernel's pointer-based parser
//! (`statewall-ebpf/src/parse.rs`).
//!
//! Both follow the same rules, which are the documentation of what every stage sees:
//!
//! - Ethernet, then up to [`MAX_VLAN`] 802.1Q (0x8100) / 802.1ad (0x88a8) tags. A further tag,
//!   or a truncated tag, makes the packet [`Status::Malformed`].
//! - Any ethertype other than IPv4/IPv6 is [`Status::NonIp`]: stages let it through.
//! - IPv4: version 4, IHL >= 5, the header and the total length within the packet, total
//!   length >= header length. Options are skipped. A fragment with a non-zero offset is a
//!   non-first fragment ([`FLAG_NONFIRST_FRAG`]): its L4 header is never read. The
//!   identification of a fragment is kept in `frag_id`.
//! - IPv6: version 6, the payload length within the packet; extension headers Hop-by-Hop,
//!   Routing, Destination Options, Mobility, HIP, Shim6 (`(len+1)*8` bytes), AH
//!   (`(len+2)*4`) and Fragment (8 bytes) are walked, at most [`MAX_IPV6_EXT`] of them; a
//!   longer chain is malformed. A fragment header with a non-zero offset ends the walk (its
//!   next header is the L4 protocol, not read). ESP and No Next Header end it too. The
//!   fragment header's identification is kept in `frag_id`.
//! - Every header must start within the first [`MAX_HDR_OFF`] bytes and end within the IP
//!   length: otherwise the packet is malformed.
//! - TCP: 20 bytes, data offset >= 5 and the options within the IP length (also in a first
//!   fragment: a TCP header split over fragments is malformed). UDP: 8 bytes and its length
//!   field in `8..=` the bytes left; in a first fragment with more to follow (IPv4 MF, IPv6
//!   M), whose length field covers the whole datagram, only `>= 8`. ICMP/ICMPv6: 4 bytes, 8 for echo request and
//!   reply (whose identifier is recorded). Other protocols are IP without an L4 header.
//! - Multi-byte fields are stored in host byte order; addresses as their packet bytes.

/// At most this many VLAN tags are parsed.
pub const MAX_VLAN: usize = 2;
/// At most this many IPv6 extension headers are walked.
pub const MAX_IPV6_EXT: usize = 8;
/// Every header must start below this offset from the start of the frame.
pub const MAX_HDR_OFF: usize = 512;

/// Ethertype IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Ethertype 802.1Q.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethertype 802.1ad.
pub const ETH_P_8021AD: u16 = 0x88a8;

/// The packet is a fragment (IPv4 MF or offset, or an IPv6 fragment header).
pub const FLAG_FRAG: u8 = 1;
/// The packet is a fragment other than the first: it has no L4 header.
pub const FLAG_NONFIRST_FRAG: u8 = 2;
/// An L4 header (TCP, UDP, ICMP, ICMPv6) was parsed: ports/type are valid.
pub const FLAG_L4: u8 = 4;
/// Set on a non-first fragment whose ports come from its first fragment
/// ([`crate::frag`]).
pub const FLAG_FRAG_PORTS: u8 = 8;
/// The frame's destination MAC is a group address (broadcast or multicast): a refusal is
/// never answered to it.
pub const FLAG_L2_GROUP: u8 = 16;

/// True when the packet's ports are known: its L4 header was parsed in this packet, or
/// it is a later fragment that took its first fragment's ports ([`crate::frag`]).
#[inline(always)]
pub fn has_ports(p: &PacketInfo) -> bool {
    (p.flags & FLAG_L4 != 0 && p.flags & FLAG_NONFIRST_FRAG == 0) || p.flags & FLAG_FRAG_PORTS != 0
}

/// TCP flag bits, as in the header's 13th byte.
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// What the parser made of a frame.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not IP (ARP, LLDP, ...): every stage hands it on.
    NonIp = 0,
    /// IPv4 or IPv6, parsed.
    Ip = 1,
    /// Broken or unparsable IP (or VLAN): stages treat it as INVALID.
    Malformed = 2,
}

/// Everything the stages need from a packet's headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketInfo {
    /// Source address (IPv4: first 4 bytes, rest zero).
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Bytes in the frame, from the Ethernet header on.
    pub pkt_len: u32,
    /// TCP sequence number.
    pub tcp_seq: u32,
    /// TCP acknowledgement number.
    pub tcp_ack: u32,
    /// A fragment's identification (IPv4: 16 bits; IPv6: the fragment header's 32), 0
    /// when not a fragment.
    pub frag_id: u32,
    /// IP length: IPv4 total length, or IPv6 payload length + 40.
    pub ip_len: u16,
    /// Ethertype after the VLAN tags.
    pub eth_proto: u16,
    /// Source port (TCP/UDP), 0 otherwise.
    pub sport: u16,
    /// Destination port (TCP/UDP), 0 otherwise.
    pub dport: u16,
    /// Offset of the IP header.
    pub l3_off: u16,
    /// Offset of the L4 header (after IPv6 extension headers).
    pub l4_off: u16,
    /// Offset of the L4 payload.
    pub payload_off: u16,
    /// L4 payload bytes, by the IP length.
    pub payload_len: u16,
    /// IPv4 flags and fragment offset field; for IPv6 the fragment header's offset/M field.
    pub ip_flags_frag: u16,
    /// TCP window.
    pub tcp_win: u16,
    /// UDP length field.
    pub udp_len: u16,
    /// VLAN TCIs, outer first.
    pub vlan: [u16; MAX_VLAN],
    /// ICMP/ICMPv6 echo identifier.
    pub icmp_id: u16,
    /// A [`Status`] value.
    pub status: u8,
    /// 0 (not IP), 4 or 6.
    pub family: u8,
    /// L4 protocol (IPv4 protocol or the last IPv6 next header).
    pub l4proto: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// TCP flags.
    pub tcp_flags: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Number of VLAN tags.
    pub vlan_count: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Number of IPv6 extension headers walked.
    pub ext_count: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// Destination MAC address.
    pub dmac: [u8; 6],
    /// Source MAC address.
    pub smac: [u8; 6],
    /// Interface the packet is on (set by the program that runs, not by the parser; 0
    /// when unknown).
    pub ifindex: u32,
}

// `crate::mem::addr_word` and its kin read and write the addresses a 32-bit word at a
// time: they are 4-aligned.
const _: () = assert!(
    core::mem::align_of::<PacketInfo>() >= 4
        && core::mem::offset_of!(PacketInfo, saddr).is_multiple_of(4)
        && core::mem::offset_of!(PacketInfo, daddr).is_multiple_of(4)
);

impl PacketInfo {
    /// True when `status` is [`Status::Ip`].
    pub fn is_ip(&self) -> bool {
        self.status == Status::Ip as u8
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(off)?,
        *b.get(off + 1)?,
        *b.get(off + 2)?,
        *b.get(off + 3)?,
    ]))
}

/// True for the IPv6 next-header values the parser walks as extension headers.
pub fn is_ipv6_ext(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140)
}

/// Parses a frame starting at its Ethernet header.
pub fn parse_packet(b: &[u8]) -> PacketInfo {
    let mut p = PacketInfo {
        pkt_len: b.len() as u32,
        ..Default::default()
    };
    match parse_into(b, &mut p) {
        Some(()) => {}
        None => p.status = Status::Malformed as u8,
    }
    p
}

/// Fills `p`; `None` means malformed. Fields parsed before the fault stay filled, as in the
/// kernel parser.
fn parse_into(b: &[u8], p: &mut PacketInfo) -> Option<()> {
    let mut off = 12usize;
    let mut eth_proto = be16(b, off)?;
    p.dmac.copy_from_slice(&b[..6]);
    p.smac.copy_from_slice(&b[6..12]);
    if b[0] & 1 == 1 {
        p.flags |= FLAG_L2_GROUP;
    }
    off += 2;
    let mut i = 0;
    while eth_proto == ETH_P_8021Q || eth_proto == ETH_P_8021AD {
        if i == MAX_VLAN {
            return None;
        }
        if b.len() < off + 4 {
            return None;
        }
        p.vlan[i] = be16(b, off)?;
        eth_proto = be16(b, off + 2)?;
        off += 4;
        i += 1;
        p.vlan_count = i as u8;
    }
    p.eth_proto = eth_proto;
    p.l3_off = off as u16;
    match eth_proto {
        ETH_P_IP => parse_ipv4(b, off, p),
        ETH_P_IPV6 => parse_ipv6(b, off, p),
        _ => {
            p.status = Status::NonIp as u8;
            Some(())
        }
    }
}

fn parse_ipv4(b: &[u8], off: usize, p: &mut PacketInfo) -> Option<()> {
    p.family = 4;
    if b.len() < off + 20 {
        return None;
    }
    let vihl = b[off];
    if vihl >> 4 != 4 {
        return None;
    }
    let hlen = ((vihl & 0x0f) as usize) * 4;
    if hlen < 20 || b.len() < off + hlen {
        return None;
    }
    let tot = be16(b, off + 2)? as usize;
    if tot < hlen || b.len() < off + tot {
        return None;
    }
    p.ip_len = tot as u16;
    p.ip_flags_frag = be16(b, off + 6)?;
    p.ttl = b[off + 8];
    p.l4proto = b[off + 9];
    p.saddr[..4].copy_from_slice(&b[off + 12..off + 16]);
    p.daddr[..4].copy_from_slice(&b[off + 16..off + 20]);
    let ip_end = off + tot;
    let l4 = off + hlen;
    p.l4_off = l4 as u16;
    if p.ip_flags_frag & 0x3fff != 0 {
        p.flags |= FLAG_FRAG;
        p.frag_id = be16(b, off + 4)? as u32;
    }
    if p.ip_flags_frag & 0x1fff != 0 {
        p.flags |= FLAG_NONFIRST_FRAG;
        p.payload_off = l4 as u16;
        p.payload_len = (ip_end - l4) as u16;
        p.status = Status::Ip as u8;
        return Some(());
    }
    parse_l4(b, l4, ip_end, p)
}

fn parse_ipv6(b: &[u8], off: usize, p: &mut PacketInfo) -> Option<()> {
    p.family = 6;
    if b.len() < off + 40 {
        return None;
    }
    if b[off] >> 4 != 6 {
        return None;
    }
    let plen = be16(b, off + 4)? as usize;
    if b.len() < off + 40 + plen {
        return None;
    }
    p.ip_len = (plen + 40) as u16;
    let mut nh = b[off + 6];
    p.ttl = b[off + 7];
    p.saddr.copy_from_slice(&b[off + 8..off + 24]);
    p.daddr.copy_from_slice(&b[off + 24..off + 40]);
    let ip_end = off + 40 + plen;
    let mut cur = off + 40;
    let mut n = 0;
    while is_ipv6_ext(nh) {
        if n == MAX_IPV6_EXT || cur >= MAX_HDR_OFF || cur + 8 > ip_end {
            return None;
        }
        let next = b[cur];
        let len = match nh {
            51 => (b[cur + 1] as usize + 2) * 4,
            44 => 8,
            _ => (b[cur + 1] as usize + 1) * 8,
        };
        if cur + len > ip_end {
            return None;
        }
        n += 1;
        p.ext_count = n as u8;
        if nh == 44 {
            let fo = be16(b, cur + 2)?;
            p.ip_flags_frag = fo;
            p.flags |= FLAG_FRAG;
            p.frag_id = be32(b, cur + 4)?;
            if fo & 0xfff8 != 0 {
                p.flags |= FLAG_NONFIRST_FRAG;
                p.l4proto = next;
                cur += len;
                p.l4_off = cur as u16;
                p.payload_off = cur as u16;
                p.payload_len = (ip_end - cur) as u16;
                p.status = Status::Ip as u8;
                return Some(());
            }
        }
        nh = next;
        cur += len;
    }
    p.l4proto = nh;
    p.l4_off = cur as u16;
    parse_l4(b, cur, ip_end, p)
}

/// True for a first fragment with more to follow: its UDP length covers the whole datagram,
/// not just the bytes here.
#[inline(always)]
pub fn more_fragments(p: &PacketInfo) -> bool {
    if p.flags & FLAG_FRAG == 0 || p.flags & FLAG_NONFIRST_FRAG != 0 {
        return false;
    }
    if p.family == 4 {
        p.ip_flags_frag & 0x2000 != 0
    } else {
        p.ip_flags_frag & 1 != 0
    }
}

fn parse_l4(b: &[u8], l4: usize, ip_end: usize, p: &mut PacketInfo) -> Option<()> {
    if l4 >= MAX_HDR_OFF {
        return None;
    }
    let avail = ip_end - l4;
    match p.l4proto {
        proto::TCP => {
            if avail < 20 {
                return None;
            }
            let doff = ((b[l4 + 12] >> 4) as usize) * 4;
            if doff < 20 || doff > avail {
                return None;
            }
            p.sport = be16(b, l4)?;
            p.dport = be16(b, l4 + 2)?;
            p.tcp_seq = be32(b, l4 + 4)?;
            p.tcp_ack = be32(b, l4 + 8)?;
            p.tcp_flags = b[l4 + 13];
            p.tcp_win = be16(b, l4 + 14)?;
            p.payload_off = (l4 + doff) as u16;
            p.payload_len = (avail - doff) as u16;
        }
        proto::UDP => {
            if avail < 8 {
                return None;
            }
            let ulen = be16(b, l4 + 4)?;
            if (ulen as usize) < 8 || (ulen as usize > avail && !more_fragments(p)) {
                return None;
            }
            p.sport = be16(b, l4)?;
            p.dport = be16(b, l4 + 2)?;
            p.udp_len = ulen;
            p.payload_off = (l4 + 8) as u16;
            p.payload_len = (avail - 8) as u16;
        }
        proto::ICMP | proto::ICMPV6 => {
            if avail < 4 {
                return None;
            }
            let t = b[l4];
            p.icmp_type = t;
            p.icmp_code = b[l4 + 1];
            let echo = if p.l4proto == proto::ICMP {
                t == 8 || t == 0
            } else {
                t == 128 || t == 129
            };
            if echo {
                if avail < 8 {
                    return None;
                }
                p.icmp_id = be16(b, l4 + 4)?;
            }
            p.payload_off = (l4 + 4) as u16;
            p.payload_len = (avail - 4) as u16;
        }
        _ => {
            p.payload_off = l4 as u16;
            p.payload_len = avail as u16;
            p.status = Status::Ip as u8;
            return Some(());
        }
    }
    p.flags |= FLAG_L4;
    p.status = Status::Ip as u8;
    Some(())
}

/// IP protocol numbers used throughout.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding, any bit pattern valid.
    unsafe impl aya::Pod for crate::parse::PacketInfo {}
}
