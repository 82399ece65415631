//! Connection tracking for the firewall: one entry per connection (both directions map to
//! the same key), the state a packet is in for rule matching (NEW, ESTABLISHED, INVALID;
//! RELATED), and the entry after an accepted packet.
//!
//! - TCP follows the handshake: a SYN without ACK opens (NEW, entry SYN_SENT); the other
//!   side's SYN-ACK is ESTABLISHED (SYN_RECV), the opener's ACK completes it; a FIN moves it
//!   to closing, a RST ends it. A TCP packet without an entry that is not an opening SYN is
//!   INVALID (no mid-stream pickup).
//! - UDP and ICMP/ICMPv6 echo: the first packet is NEW, and so are later ones in the same
//!   direction until the other side answers; the answer and everything after it is
//!   ESTABLISHED. Other ICMP and other protocols are NEW, untracked.
//! - An ICMP or ICMPv6 error (unreachable, time exceeded, parameter problem, packet too
//!   big, source quench) quoting a packet of a known connection is RELATED.
//! - Malformed IP is INVALID.
//! - A later fragment that took its first fragment's ports (`frag`) has its datagram's
//!   connection and state and never changes the entry; one without is untracked.
//!
//! Entries expire after a per-state idle timeout ([`CtConf`]); the table is an LRU hash, so
//! when it is full the least recently seen connections go first (an active one is seen on
//! every packet).

use crate::parse::proto;
use crate::parse::{PacketInfo, Status, FLAG_L4, FLAG_NONFIRST_FRAG};

/// The table (`LRU_HASH` of [`CtKey`] -> [`CtVal`]).
pub const MAP_CT: &str = "SW_FW_CT";
/// Timeouts, an `ARRAY` with one [`CtConf`].
pub const MAP_CT_CONF: &str = "SW_FW_CT_CONF";

pub use crate::ct_state::{ESTABLISHED, INVALID, NEW, RELATED};

/// TCP entry states.
pub mod tcp_state {
    /// SYN seen.
    pub const SYN_SENT: u8 = 1;
    /// SYN-ACK seen.
    pub const SYN_RECV: u8 = 2;
    /// Handshake done.
    pub const ESTABLISHED: u8 = 3;
    /// FIN seen.
    pub const CLOSING: u8 = 4;
}

/// Connection key: the lower (address, port) first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    /// Lower address.
    pub a0: [u8; 16],
    /// Higher address.
    pub a1: [u8; 16],
    /// Port of `a0` (ICMP echo: the identifier).
    pub p0: u16,
    /// Port of `a1`.
    pub p1: u16,
    /// L4 protocol.
    pub proto: u8,
    /// Address family.
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// Connection entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtVal {
    /// Expiry (kernel clock).
    pub expires_ns: u64,
    /// TCP: [`tcp_state`]; others 0.
    pub state: u8,
    /// Direction (0: from `a0`) of the connection's first packet.
    pub orig_dir: u8,
    /// Non-zero once the other side has sent.
    pub seen_reply: u8,
    /// Explicit padding.
    pub _pad: [u8; 5],
}

/// Idle timeouts, ns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtConf {
    /// TCP during the handshake.
    pub tcp_syn_ns: u64,
    /// TCP established.
    pub tcp_est_ns: u64,
    /// TCP after a FIN.
    pub tcp_close_ns: u64,
    /// UDP and ICMP.
    pub udp_ns: u64,
}

impl Default for CtConf {
    fn default() -> Self {
        CtConf {
            tcp_syn_ns: 60_000_000_000,
            tcp_est_ns: 86_400_000_000_000,
            tcp_close_ns: 10_000_000_000,
            udp_ns: 60_000_000_000,
        }
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// The key and the packet's direction (0: from `a0`), or `None` for untracked packets.
#[inline(always)]
pub fn key(p: &PacketInfo) -> Option<(CtKey, u8)> {
    let mut k = CtKey::default();
    key_into(p, &mut k).map(|d| (k, d))
}

/// [`key`] written into `out` (the kernel keeps it off its short stack); returns the
/// direction.
#[inline(always)]
pub fn key_into(p: &PacketInfo, out: &mut CtKey) -> Option<u8> {
    let (sp, dp) = match p.l4proto {
        // Later fragments with their first fragment's ports belong to its connection.
        proto::TCP | proto::UDP if crate::parse::has_ports(p) => (p.sport, p.dport),
        _ if p.flags & FLAG_L4 == 0 || p.flags & FLAG_NONFIRST_FRAG != 0 => return None,
        // Echo request/reply: the identifier on both sides.
        proto::ICMP if p.icmp_type == 8 || p.icmp_type == 0 => (p.icmp_id, p.icmp_id),
        proto::ICMPV6 if p.icmp_type == 128 || p.icmp_type == 129 => (p.icmp_id, p.icmp_id),
        _ => return None,
    };
    Some(fill_key(
        out,
        &p.saddr,
        &p.daddr,
        16,
        (sp, dp),
        (p.l4proto, p.family),
    ))
}

/// Writes the key of a packet from (`a`, ports.0) to (`b`, ports.1) into `out`: the lower
/// address (the first `alen` bytes compared), then the lower port, first. Returns the
/// packet's direction (1 when it goes from the higher side). `proto_family` is (L4
/// protocol, address family).
#[inline(always)]
fn fill_key(
    out: &mut CtKey,
    a: &[u8],
    b: &[u8],
    alen: usize,
    (sp, dp): (u16, u16),
    (proto, family): (u8, u8),
) -> u8 {
    let mut swap = false;
    let mut decided = false;
    let mut i = 0;
    while i < 16 {
        if i < alen && !decided && a[i] != b[i] {
            swap = a[i] > b[i];
            decided = true;
        }
        i += 1;
    }
    if !decided {
        swap = sp > dp;
    }
    let (lo, hi, plo, phi) = if swap { (b, a, dp, sp) } else { (a, b, sp, dp) };
    let mut i = 0;
    while i < 16 {
        // Volatile stores: LLVM would turn the loop into a `memmove` call, a byte loop of
        // its own in BPF (see `crate::mem`).
        let (l, h) = if i < alen { (lo[i], hi[i]) } else { (0, 0) };
        // SAFETY: `i < 16`, inside both arrays.
        unsafe {
            core::ptr::write_volatile(out.a0.as_mut_ptr().add(i), l);
            core::ptr::write_volatile(out.a1.as_mut_ptr().add(i), h);
        }
        i += 1;
    }
    out.p0 = plo;
    out.p1 = phi;
    out.proto = proto;
    out.family = family;
    out._pad = [0; 2];
    swap as u8
}

/// True for an ICMP/ICMPv6 error message (it quotes the packet it is about).
#[inline(always)]
pub fn is_error(p: &PacketInfo) -> bool {
    p.flags & FLAG_L4 != 0
        && match p.l4proto {
            proto::ICMP => matches!(p.icmp_type, 3 | 4 | 5 | 11 | 12),
            proto::ICMPV6 => matches!(p.icmp_type, 1..=4),
            _ => false,
        }
}

/// Bytes of the quoted packet [`related_key`] reads (IPv6 header + 8).
pub const QUOTE_LEN: usize = 48;

/// Offset of the quoted packet in an ICMP error, from the packet's `payload_off`.
pub const QUOTE_OFF: u16 = 4;

/// The connection key of the packet an ICMP error quotes (`q`: the quote's first bytes,
/// `n` of them valid), written into `out`: IPv4 without options or IPv6 without extension
/// headers, then TCP, UDP or ICMP echo. False when it is not one of those. (No copy of
/// the packet on the stack: the kernel's is short.)
#[inline(always)]
pub fn related_key(family: u8, q: &[u8; QUOTE_LEN], n: usize, out: &mut CtKey) -> bool {
    let (l4, proto, src, alen) = if family == 6 {
        if n < 48 || q[0] >> 4 != 6 {
            return false;
        }
        (40usize, q[6], 8usize, 16usize)
    } else {
        if n < 28 || q[0] != 0x45 {
            return false;
        }
        (20usize, q[9], 12usize, 4usize)
    };
    let be = |i: usize| (q[i] as u16) << 8 | q[i + 1] as u16;
    let ports = match proto {
        proto::TCP | proto::UDP => (be(l4), be(l4 + 2)),
        proto::ICMP if q[l4] == 8 || q[l4] == 0 => (be(l4 + 4), be(l4 + 4)),
        proto::ICMPV6 if q[l4] == 128 || q[l4] == 129 => (be(l4 + 4), be(l4 + 4)),
        _ => return false,
    };
    // The same key as [`key`] gives the quoted packet.
    fill_key(
        out,
        &q[src..src + 16],
        &q[src + alen..src + alen + 16],
        alen,
        ports,
        (proto, family),
    );
    true
}

/// The packet's state given its connection's entry (`None`: none, or expired).
#[inline(always)]
pub fn state(p: &PacketInfo, e: Option<&CtVal>, dir: u8) -> u8 {
    if p.status == Status::Malformed as u8 {
        return INVALID;
    }
    let f = p.tcp_flags;
    match e {
        None => {
            if p.l4proto == proto::TCP && p.flags & FLAG_L4 != 0 && f & (SYN | ACK | RST) != SYN {
                INVALID
            } else {
                NEW
            }
        }
        Some(e) => {
            if p.l4proto == proto::TCP {
                if e.state == tcp_state::SYN_SENT {
                    if dir == e.orig_dir {
                        if f & (SYN | ACK) == SYN {
                            NEW
                        } else {
                            INVALID
                        }
                    } else if f & (SYN | ACK) == SYN | ACK || f & RST != 0 {
                        ESTABLISHED
                    } else {
                        INVALID
                    }
                } else {
                    ESTABLISHED
                }
            } else if e.seen_reply != 0 || dir != e.orig_dir {
                ESTABLISHED
            } else {
                NEW
            }
        }
    }
}

/// The entry after an accepted packet in state `st` (`None`: delete it).
#[inline(always)]
pub fn next(
    p: &PacketInfo,
    e: Option<&CtVal>,
    dir: u8,
    st: u8,
    now: u64,
    c: &CtConf,
) -> Option<CtVal> {
    // A later fragment reads its connection's state and changes nothing (its TCP flags
    // are not in it).
    if st == INVALID || p.flags & FLAG_NONFIRST_FRAG != 0 {
        return e.copied();
    }
    let f = p.tcp_flags;
    let mut v = match e {
        Some(e) => *e,
        None => CtVal {
            expires_ns: 0,
            state: if p.l4proto == proto::TCP {
                tcp_state::SYN_SENT
            } else {
                0
            },
            orig_dir: dir,
            seen_reply: 0,
            _pad: [0; 5],
        },
    };
    if dir != v.orig_dir {
        v.seen_reply = 1;
    }
    let idle = if p.l4proto == proto::TCP {
        if f & RST != 0 {
            return None;
        }
        if v.state == tcp_state::SYN_SENT && dir != v.orig_dir && f & (SYN | ACK) == SYN | ACK {
            v.state = tcp_state::SYN_RECV;
        } else if v.state == tcp_state::SYN_RECV && dir == v.orig_dir && f & ACK != 0 {
            v.state = tcp_state::ESTABLISHED;
        }
        if f & FIN != 0 {
            v.state = tcp_state::CLOSING;
        }
        match v.state {
            tcp_state::ESTABLISHED => c.tcp_est_ns,
            tcp_state::CLOSING => c.tcp_close_ns,
            _ => c.tcp_syn_ns,
        }
    } else {
        c.udp_ns
    };
    v.expires_ns = now + idle;
    Some(v)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtVal {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtConf {}
}
