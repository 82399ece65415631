//! The kernel packet parser, shared by every program.
//!
//! Pointer-based twin of `statewall_common::parse` (read that module's doc for the rules):
//! every header is reached through [`Cursor::hdr`], which checks `start + off + size` against
//! `data_end` before handing out a pointer, and every variable offset is bounded by
//! `MAX_HDR_OFF` first, so the verifier can follow it. The field assignments happen in the
//! same order as in the twin, so a malformed packet leaves the same partial result.

use statewall_common::mem::copy_bytes;
use statewall_common::parse::proto;
use statewall_common::parse::{
    is_ipv6_ext, PacketInfo, Status, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, FLAG_FRAG,
    FLAG_L2_GROUP, FLAG_L4, FLAG_NONFIRST_FRAG, MAX_HDR_OFF, MAX_IPV6_EXT, MAX_VLAN,
};

/// A packet's linear bytes `[start, end)` and its full length.
pub struct Cursor {
    pub start: usize,
    pub end: usize,
    /// Full packet length (skb->len for tc, the frame for XDP).
    pub len: usize,
    /// A VLAN tag the device took out of the frame before tc saw it (skb->vlan_tci, with
    /// bit 16 set when present): it counts as the outermost tag.
    pub offloaded_vlan: u32,
}

#[repr(C)]
struct Vlan {
    tci: [u8; 2],
    proto: [u8; 2],
}

#[repr(C)]
struct Ipv4 {
    vihl: u8,
    tos: u8,
    tot: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    proto: u8,
    csum: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6 {
    vtc: u8,
    flow: [u8; 3],
    plen: [u8; 2],
    nh: u8,
    hlim: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

#[repr(C)]
struct Ext {
    nh: u8,
    len: u8,
    frag: [u8; 2],
    rest: [u8; 4],
}

#[repr(C)]
struct Tcp {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    doff: u8,
    flags: u8,
    win: [u8; 2],
    csum: [u8; 2],
    urg: [u8; 2],
}

#[repr(C)]
struct Udp {
    sport: [u8; 2],
    dport: [u8; 2],
    len: [u8; 2],
    csum: [u8; 2],
}

#[repr(C)]
struct Icmp {
    ty: u8,
    code: u8,
    csum: [u8; 2],
}

#[repr(C)]
struct IcmpEcho {
    ty: u8,
    code: u8,
    csum: [u8; 2],
    id: [u8; 2],
    seq: [u8; 2],
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    ((b[0] as u16) << 8) | b[1] as u16
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    ((b[0] as u32) << 24) | ((b[1] as u32) << 16) | ((b[2] as u32) << 8) | b[3] as u32
}

impl Cursor {
    /// Pointer to a `T` at `off`, if all of it lies before `end`.
    #[inline(always)]
    fn hdr<T>(&self, off: usize) -> Option<*const T> {
        if off > MAX_HDR_OFF + 64 {
            return None;
        }
        let p = self.start + off;
        if p + core::mem::size_of::<T>() > self.end {
            return None;
        }
        Some(p as *const T)
    }
}

/// Parses the packet under `c` into `p` (which the caller zeroed).
#[inline(always)]
pub fn parse(c: &Cursor, p: &mut PacketInfo) {
    p.pkt_len = c.len as u32;
    if parse_into(c, p).is_none() {
        p.status = Status::Malformed as u8;
    }
}

#[inline(always)]
fn parse_into(c: &Cursor, p: &mut PacketInfo) -> Option<()> {
    let et: *const [u8; 2] = c.hdr(12)?;
    let mut eth_proto = be16(unsafe { *et });
    let dmac: *const [u8; 6] = c.hdr(0)?;
    let smac: *const [u8; 6] = c.hdr(6)?;
    unsafe {
        copy_bytes(&mut p.dmac, &*dmac);
        copy_bytes(&mut p.smac, &*smac);
    }
    let dst: *const u8 = c.hdr(0)?;
    if unsafe { *dst } & 1 != 0 {
        p.flags |= FLAG_L2_GROUP;
    }
    let mut off = 14usize;
    let mut i = 0usize;
    if c.offloaded_vlan != 0 {
        p.vlan[0] = c.offloaded_vlan as u16;
        i = 1;
        p.vlan_count = 1;
    }
    while i <= MAX_VLAN {
        if eth_proto != ETH_P_8021Q && eth_proto != ETH_P_8021AD {
            break;
        }
        if i == MAX_VLAN {
            return None;
        }
        let v: *const Vlan = c.hdr(off)?;
        let tci = be16(unsafe { (*v).tci });
        if i == 0 {
            p.vlan[0] = tci;
        } else {
            p.vlan[1] = tci;
        }
        eth_proto = be16(unsafe { (*v).proto });
        off += 4;
        i += 1;
        p.vlan_count = i as u8;
    }
    p.eth_proto = eth_proto;
    p.l3_off = off as u16;
    match eth_proto {
        ETH_P_IP => parse_ipv4(c, off, p),
        ETH_P_IPV6 => parse_ipv6(c, off, p),
        _ => {
            p.status = Status::NonIp as u8;
            Some(())
        }
    }
}

#[inline(always)]
fn parse_ipv4(c: &Cursor, off: usize, p: &mut PacketInfo) -> Option<()> {
    p.family = 4;
    let ip: *const Ipv4 = c.hdr(off)?;
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return None;
    }
    let hlen = ((ip.vihl & 0x0f) as usize) * 4;
    if hlen < 20 {
        return None;
    }
    // The whole header (options included) must be in the buffer.
    let _opts: *const u8 = c.hdr(off + hlen - 1)?;
    let tot = be16(ip.tot) as usize;
    if tot < hlen || c.len < off + tot {
        return None;
    }
    p.ip_len = tot as u16;
    p.ip_flags_frag = be16(ip.frag);
    p.ttl = ip.ttl;
    p.l4proto = ip.proto;
    p.saddr[..4].copy_from_slice(&ip.saddr);
    p.daddr[..4].copy_from_slice(&ip.daddr);
    let ip_end = off + tot;
    let l4 = off + hlen;
    p.l4_off = l4 as u16;
    if p.ip_flags_frag & 0x3fff != 0 {
        p.flags |= FLAG_FRAG;
        p.frag_id = be16(ip.id) as u32;
    }
    if p.ip_flags_frag & 0x1fff != 0 {
        p.flags |= FLAG_NONFIRST_FRAG;
        p.payload_off = l4 as u16;
        p.payload_len = (ip_end - l4) as u16;
        p.status = Status::Ip as u8;
        return Some(());
    }
    parse_l4(c, l4, ip_end, p)
}

#[inline(always)]
fn parse_ipv6(c: &Cursor, off: usize, p: &mut PacketInfo) -> Option<()> {
    p.family = 6;
    let ip: *const Ipv6 = c.hdr(off)?;
    let ip = unsafe { &*ip };
    if ip.vtc >> 4 != 6 {
        return None;
    }
    let plen = be16(ip.plen) as usize;
    if c.len < off + 40 + plen {
        return None;
    }
    p.ip_len = (plen + 40) as u16;
    let mut nh = ip.nh;
    p.ttl = ip.hlim;
    copy_bytes(&mut p.saddr, &ip.saddr);
    copy_bytes(&mut p.daddr, &ip.daddr);
    let ip_end = off + 40 + plen;
    let mut cur = off + 40;
    let mut n = 0usize;
    while n <= MAX_IPV6_EXT {
        if !is_ipv6_ext(nh) {
            break;
        }
        if n == MAX_IPV6_EXT || cur >= MAX_HDR_OFF || cur + 8 > ip_end {
            return None;
        }
        let e: *const Ext = c.hdr(cur)?;
        let e = unsafe { &*e };
        let next = e.nh;
        let len = match nh {
            51 => (e.len as usize + 2) * 4,
            44 => 8,
            _ => (e.len as usize + 1) * 8,
        };
        if cur + len > ip_end {
            return None;
        }
        n += 1;
        p.ext_count = n as u8;
        if nh == 44 {
            let fo = be16(e.frag);
            p.ip_flags_frag = fo;
            p.flags |= FLAG_FRAG;
            p.frag_id = be32(e.rest);
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
    parse_l4(c, cur, ip_end, p)
}

#[inline(always)]
fn parse_l4(c: &Cursor, l4: usize, ip_end: usize, p: &mut PacketInfo) -> Option<()> {
    if l4 >= MAX_HDR_OFF {
        return None;
    }
    let avail = ip_end - l4;
    match p.l4proto {
        proto::TCP => {
            if avail < 20 {
                return None;
            }
            let t: *const Tcp = c.hdr(l4)?;
            let t = unsafe { &*t };
            let doff = ((t.doff >> 4) as usize) * 4;
            if doff < 20 || doff > avail {
                return None;
            }
            p.sport = be16(t.sport);
            p.dport = be16(t.dport);
            p.tcp_seq = be32(t.seq);
            p.tcp_ack = be32(t.ack);
            p.tcp_flags = t.flags;
            p.tcp_win = be16(t.win);
            p.payload_off = (l4 + doff) as u16;
            p.payload_len = (avail - doff) as u16;
        }
        proto::UDP => {
            if avail < 8 {
                return None;
            }
            let u: *const Udp = c.hdr(l4)?;
            let u = unsafe { &*u };
            let ulen = be16(u.len);
            // A first fragment with more to follow: the length covers the whole datagram.
            let first_of_more = p.flags & (FLAG_FRAG | FLAG_NONFIRST_FRAG) == FLAG_FRAG
                && if p.family == 4 {
                    p.ip_flags_frag & 0x2000 != 0
                } else {
                    p.ip_flags_frag & 1 != 0
                };
            if (ulen as usize) < 8 || (ulen as usize > avail && !first_of_more) {
                return None;
            }
            p.sport = be16(u.sport);
            p.dport = be16(u.dport);
            p.udp_len = ulen;
            p.payload_off = (l4 + 8) as u16;
            p.payload_len = (avail - 8) as u16;
        }
        proto::ICMP | proto::ICMPV6 => {
            if avail < 4 {
                return None;
            }
            let h: *const Icmp = c.hdr(l4)?;
            let h = unsafe { &*h };
            let t = h.ty;
            p.icmp_type = t;
            p.icmp_code = h.code;
            let echo = if p.l4proto == proto::ICMP {
                t == 8 || t == 0
            } else {
                t == 128 || t == 129
            };
            if echo {
                if avail < 8 {
                    return None;
                }
                let e: *const IcmpEcho = c.hdr(l4)?;
                p.icmp_id = be16(unsafe { (*e).id });
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
