//! The monitors' view of a parsed packet: its session key, its server side, whether a
//! monitor records it and the record it makes. The kernel's monitor program and user
//! space's reference extractor (captures, tests) both run these; the parent module holds
//! the tables' layouts, which need no packet.

use super::*;
use crate::parse::PacketInfo;

/// Why a packet the monitor does not record was ignored: [`CNT_IGNORED_NOT_IP`],
/// [`CNT_IGNORED_MALFORMED`] or [`CNT_IGNORED_PROTOCOL`].
#[inline(always)]
pub fn ignored_cause(p: &PacketInfo) -> u32 {
    if p.status == crate::parse::Status::NonIp as u8 {
        CNT_IGNORED_NOT_IP
    } else if p.status == crate::parse::Status::Malformed as u8 {
        CNT_IGNORED_MALFORMED
    } else {
        CNT_IGNORED_PROTOCOL
    }
}

/// Whether the packet's source is the key's `saddr`.
#[inline(always)]
pub fn src_is_first(p: &PacketInfo) -> bool {
    // SAFETY: `PacketInfo`'s addresses are 4-aligned (asserted in `crate::parse`).
    if unsafe { crate::mem::same_addr(&p.saddr, &p.daddr) } {
        return p.sport <= p.dport;
    }
    !addr_lower(p.family, &p.daddr, &p.saddr)
}

// The session key's addresses are written a 32-bit word at a time (`crate::mem::copy_addr`):
// the key holds them 4-aligned (the packet's are asserted in `crate::parse`).
const _: () = assert!(
    core::mem::align_of::<SessKey>() >= 4
        && core::mem::offset_of!(SessKey, saddr).is_multiple_of(4)
        && core::mem::offset_of!(SessKey, daddr).is_multiple_of(4)
);

/// Writes the packet's session key into `k`; returns [`src_is_first`] (which
/// [`crypto_add_from`] takes, so that the kernel compares the addresses once).
#[inline(always)]
pub fn key_into(p: &PacketInfo, k: &mut SessKey) -> bool {
    use crate::mem::copy_addr;
    let first = src_is_first(p);
    let (a, b, pa, pb) = if first {
        (&p.saddr, &p.daddr, p.sport, p.dport)
    } else {
        (&p.daddr, &p.saddr, p.dport, p.sport)
    };
    // Whole words, as in `key4_into`.
    let w = core::ptr::addr_of_mut!(k.sport) as *mut u32;
    // SAFETY: both types hold their addresses 4-aligned (asserted above and in
    // `crate::parse`); the ports and the (protocol, family, padding) word are the key's
    // last two 4-aligned words (asserted below).
    unsafe {
        copy_addr(&mut k.saddr, a);
        copy_addr(&mut k.daddr, b);
        core::ptr::write(w, ports_word(pa, pb));
        core::ptr::write(w.add(1), tail_word(p));
    }
    first
}

/// The word after a session key's ports: (protocol, family, two zero bytes), in memory
/// order.
#[inline(always)]
fn tail_word(p: &PacketInfo) -> u32 {
    u32::from_ne_bytes([p.l4proto, p.family, 0, 0])
}

/// The ports' word of a session key: `pa` then `pb`, in memory order.
#[inline(always)]
fn ports_word(pa: u16, pb: u16) -> u32 {
    let (a, b) = (pa.to_ne_bytes(), pb.to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

/// Writes an IPv4 packet's session key into `k` (the packet's family must be 4); returns
/// [`src_is_first`]. `SessKey::from` it is what [`key_into`] writes.
#[inline(always)]
pub fn key4_into(p: &PacketInfo, k: &mut SessKey4) -> bool {
    let first = src_is_first(p);
    let (a, b, pa, pb) = if first {
        (&p.saddr, &p.daddr, p.sport, p.dport)
    } else {
        (&p.daddr, &p.saddr, p.dport, p.sport)
    };
    // Written a 32-bit word at a time: the table's hash reads the key in words, and a word
    // load that spans several narrower stores just made waits for them to reach the cache
    // (on x86, a failed store forward: a tenth of a recorded packet's time).
    let w = k as *mut SessKey4 as *mut u32;
    // SAFETY: the key is 16 bytes, 4-aligned (asserted below): four words; the packet's
    // addresses are 4-aligned (asserted in `crate::parse`).
    unsafe {
        core::ptr::write(w, crate::mem::addr_word(a, 0));
        core::ptr::write(w.add(1), crate::mem::addr_word(b, 0));
        core::ptr::write(w.add(2), ports_word(pa, pb));
        core::ptr::write(w.add(3), tail_word(p));
    }
    first
}

const _: () = assert!(
    core::mem::size_of::<SessKey4>() == 16
        && core::mem::align_of::<SessKey4>() >= 4
        && core::mem::offset_of!(SessKey4, sport) == 8
        && core::mem::offset_of!(SessKey4, proto) == 12
        && core::mem::offset_of!(SessKey, sport) == 32
        && core::mem::offset_of!(SessKey, proto) == 36
);

/// The server of a new session: (the destination is the server, method). First rule that
/// applies: a TCP SYN makes the destination the server (the source with ACK); an ICMP
/// echo request the destination, an echo reply the source; a destination port below 1024
/// the destination; a source port below 1024 the source; else the lower port (the
/// destination on a tie).
#[inline(always)]
pub fn server_of(p: &PacketInfo) -> (bool, u8) {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    if p.l4proto == crate::parse::proto::TCP && p.tcp_flags & SYN != 0 {
        return (p.tcp_flags & ACK == 0, METHOD_SYN);
    }
    if p.l4proto == crate::parse::proto::ICMP || p.l4proto == crate::parse::proto::ICMPV6 {
        let (req, rep) = if p.l4proto == crate::parse::proto::ICMP {
            (8, 0)
        } else {
            (128, 129)
        };
        if p.icmp_type == req {
            return (true, METHOD_SYN);
        }
        if p.icmp_type == rep {
            return (false, METHOD_SYN);
        }
    }
    if p.dport < 1024 {
        return (true, METHOD_WELL_KNOWN);
    }
    if p.sport < 1024 {
        return (false, METHOD_WELL_KNOWN);
    }
    (p.dport <= p.sport, METHOD_LOWEST)
}

/// The server's address for [`server_of`].
#[inline(always)]
pub fn server_addr(p: &PacketInfo) -> &[u8; 16] {
    if server_of(p).0 {
        &p.daddr
    } else {
        &p.saddr
    }
}

/// Whether the ddos monitor records this packet's protocol (TCP, UDP, ICMP, ICMPv6).
#[inline(always)]
pub fn ddos_wants(p: &PacketInfo) -> bool {
    p.status == crate::parse::Status::Ip as u8
        && matches!(
            p.l4proto,
            crate::parse::proto::TCP
                | crate::parse::proto::UDP
                | crate::parse::proto::ICMP
                | crate::parse::proto::ICMPV6
        )
}

/// Whether the crypto monitor records it (TCP, UDP).
#[inline(always)]
pub fn crypto_wants(p: &PacketInfo) -> bool {
    p.status == crate::parse::Status::Ip as u8
        && matches!(
            p.l4proto,
            crate::parse::proto::TCP | crate::parse::proto::UDP
        )
}

/// The kernel's record of a captured packet (the session's number, the features).
#[inline(always)]
pub fn fill_slot(p: &PacketInfo, ts: u64, r: &mut PktSlot) {
    r.ts = ts;
    r.ip_flags_frag = p.ip_flags_frag;
    r.tcp_flags = p.tcp_flags;
    r.tcp_win = p.tcp_win;
    r.udp_size = if p.l4proto == crate::parse::proto::UDP && p.udp_len >= 8 {
        p.udp_len - 8
    } else {
        0
    };
    r.icmp_type = p.icmp_type;
    r.pkt_len = if p.pkt_len > 0xffff {
        0xffff
    } else {
        p.pkt_len as u16
    };
    r.tcp_payload = if p.l4proto == crate::parse::proto::TCP {
        p.payload_len
    } else {
        0
    };
    r.tcp_ack = p.tcp_ack;
}

/// The packet record of a ddos capture (key written separately): [`fill_slot`]'s features.
pub fn fill_rec(p: &PacketInfo, ts: u64, r: &mut PktRec) {
    let mut slot = PktSlot::default();
    fill_slot(p, ts, &mut slot);
    *r = PktRec::from_slot(r.key, &slot);
}

/// Adds one packet to a crypto session value (this CPU's), creating it when `v` is fresh
/// (`start_ts == 0`).
#[inline(always)]
pub fn crypto_add(p: &PacketInfo, ts: u64, v: &mut CryptoVal) {
    crypto_add_from(p, src_is_first(p), ts, v)
}

/// [`crypto_add`] of a packet whose [`src_is_first`] is `first` (as [`key_into`] returned).
#[inline(always)]
pub fn crypto_add_from(p: &PacketInfo, first: bool, ts: u64, v: &mut CryptoVal) {
    if v.start_ts == 0 {
        let (dst, m) = server_of(p);
        crate::mem::copy_bytes(&mut v.server, if dst { &p.daddr } else { &p.saddr });
        v.method = m;
        v.start_ts = ts;
    }
    let bytes = p.ip_len as u64;
    if first {
        v.n_packets += 1;
        v.n_bytes += bytes;
    } else {
        v.n_packets_reverse += 1;
        v.n_bytes_reverse += bytes;
    }
    // The latest time seen: the kernel times a CPU's first packet of a session by the
    // precise clock and the next by the coarse one, which may be behind it by a tick.
    if ts > v.alive_ts {
        v.alive_ts = ts;
    }
}
