//! The `monitor` stage: per-session feature extraction for DDoS and crypto-mining
//! detection, shared by the kernel program (`statewall-ebpf`'s monitor object) and by
//! user space, which uses these functions as the reference extractor in tests.
//!
//! A session is the 5-tuple with the lower address first (IPv4 addresses compared as the
//! little-endian u32 of their 4 packet bytes, as the original monitors did; IPv6 addresses
//! byte by byte), ports following their address. The server side is found once, when a
//! session is first seen ([`server_of`]).
//!
//! Each monitor instance is its own load of the monitor object, with its sizes set by the
//! loader; every table exists twice (buffer 0 and 1) and [`MonCtl::active`] says which one
//! the programs write. A read flips it, waits a grace period and reads the other one.

use crate::parse::PacketInfo;

/// Control array of u64: [`CTL_ACTIVE`], [`CTL_EPOCH`], [`CTL_USED`] + buffer.
pub const MAP_MON_CTL: &str = "SW_MON_CTL";
/// ddos sessions, buffer 0 / 1: `HASH` of [`SessKey`] -> [`DdosSess`].
pub const MAP_DDOS_SESS: [&str; 2] = ["SW_DDOS_SESS0", "SW_DDOS_SESS1"];
/// ddos packet records, buffer 0 / 1: `ARRAY` of [`PktSlot`], filled from slot 0 on
/// (slot [`CTL_USED`] + buffer of [`MAP_MON_CTL`] counts the slots taken).
pub const MAP_DDOS_PKTS: [&str; 2] = ["SW_DDOS_PKTS0", "SW_DDOS_PKTS1"];
/// crypto sessions, buffer 0 / 1: `PERCPU_HASH` of [`SessKey`] -> [`CryptoVal`].
pub const MAP_CRYPTO: [&str; 2] = ["SW_CRYPTO0", "SW_CRYPTO1"];
/// Counters: `PERCPU_ARRAY` of u64, [`COUNTER_NAMES`] order.
pub const MAP_MON_STATS: &str = "SW_MON_STATS";
/// Per-CPU scratch of the monitor program (kernel-private).
pub const MAP_MON_WORK: &str = "SW_MON_WORK";

/// Global set by the loader: what this instance extracts ([`KIND_DDOS`] or [`KIND_CRYPTO`]).
pub const GLOBAL_KIND: &str = "SW_MON_KIND";
/// Global set by the loader: packets captured per session and window (ddos).
pub const GLOBAL_PER_SESSION: &str = "SW_MON_PER_SESSION";
/// Global set by the loader: packets captured per window (ddos; the packet table's size).
pub const GLOBAL_TOTAL: &str = "SW_MON_TOTAL";

/// Global, tests only: ns a crypto packet waits between finding its session and counting.
pub const GLOBAL_TEST_DELAY: &str = "SW_MON_TEST_DELAY_NS";

/// Instance kind: ddos.
pub const KIND_DDOS: u32 = 1;
/// Instance kind: crypto.
pub const KIND_CRYPTO: u32 = 2;

/// Defaults (COMPAT.md section 5).
pub const DDOS_SESSIONS: u32 = 1024;
/// Packets per session and window.
pub const DDOS_PER_SESSION: u32 = 100;
/// crypto sessions per window.
pub const CRYPTO_SESSIONS: u32 = 10000;

/// Counter: packets seen.
pub const CNT_PACKETS: u32 = 0;
/// Counter: packets recorded (ddos: a packet record written; crypto: a session updated).
/// Not counted by the kernel: user space derives it from the others (one counter less per
/// packet).
pub const CNT_CAPTURED: u32 = 1;
/// Counter: sessions started.
pub const CNT_SESSIONS: u32 = 2;
/// Counter: new sessions turned away because the session table was full.
pub const CNT_TURNED_AWAY: u32 = 3;
/// Counter: packets not recorded because their session had its share (ddos).
pub const CNT_SESSION_FULL: u32 = 4;
/// Counter: packets not recorded because the packet table was full (ddos).
pub const CNT_TABLE_FULL: u32 = 5;
/// Counter: packets not recorded, the sum of the three causes below. Not counted by the
/// kernel: user space adds them up.
pub const CNT_IGNORED: u32 = 6;
/// Counter: packets ignored because they are not IP (ARP, LLDP, ...).
pub const CNT_IGNORED_NOT_IP: u32 = 7;
/// Counter: packets ignored because their IP or L4 header is malformed.
pub const CNT_IGNORED_MALFORMED: u32 = 8;
/// Counter: packets ignored because the monitor does not track their protocol (ddos:
/// not TCP, UDP, ICMP or ICMPv6; crypto: not TCP or UDP).
pub const CNT_IGNORED_PROTOCOL: u32 = 9;
/// Number of counters.
pub const COUNTERS: u32 = 10;
/// Counter names.
pub const COUNTER_NAMES: [&str; COUNTERS as usize] = [
    "packets",
    "captured",
    "sessions",
    "turned_away",
    "session_full",
    "table_full",
    "ignored",
    "ignored_not_ip",
    "ignored_malformed",
    "ignored_protocol",
];

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

/// [`MAP_MON_CTL`] slot: the buffer the programs write (0 or 1).
pub const CTL_ACTIVE: u32 = 0;
/// Slot: added to the monotonic clock to give Unix time in ns (written by user space).
pub const CTL_EPOCH: u32 = 1;
/// Slots `CTL_USED + b`: packet-table slots taken in buffer `b` (may run past the size:
/// only the first `size` slots hold records). Separate slots, so that user space writing
/// one never races with programs adding to another.
pub const CTL_USED: u32 = 2;
/// Slots `CTL_SESS + b`: session numbers handed out in buffer `b`.
pub const CTL_SESS: u32 = 4;
/// Slots in [`MAP_MON_CTL`].
pub const CTL_SLOTS: u32 = 6;

/// A session (5-tuple, lower address first). 4-aligned: its addresses are copied a word
/// at a time ([`key_into`]).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessKey {
    /// Lower address (IPv4: first 4 bytes, rest zero).
    pub saddr: [u8; 16],
    /// Higher address.
    pub daddr: [u8; 16],
    /// Port of `saddr`.
    pub sport: u16,
    /// Port of `daddr`.
    pub dport: u16,
    /// L4 protocol.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// A ddos session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DdosSess {
    /// The server's address.
    pub server: [u8; 16],
    /// Packets recorded in this window (at most the per-session share).
    pub n_packets: u64,
    /// The session's number in this window (unique within the window; packet records
    /// name their session by it).
    pub id: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// One captured packet as the kernel writes it (ddos): 32 bytes, the session by its number
/// in the window ([`DdosSess::id`]) rather than its 40-byte key, so that recording a packet
/// writes half a cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PktSlot {
    /// Monotonic ns (`bpf_ktime_get_ns`); the reader adds the Unix offset.
    pub ts: u64,
    /// The session's [`DdosSess::id`].
    pub sess: u32,
    /// TCP acknowledgement number.
    pub tcp_ack: u32,
    /// IPv4 flags and fragment offset (IPv6: the fragment header's offset/M field).
    pub ip_flags_frag: u16,
    /// TCP window.
    pub tcp_win: u16,
    /// UDP length field minus 8 (0 when not UDP or shorter).
    pub udp_size: u16,
    /// Frame length.
    pub pkt_len: u16,
    /// TCP payload length.
    pub tcp_payload: u16,
    /// TCP flags.
    pub tcp_flags: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// Explicit padding.
    pub _pad: [u8; 4],
}

/// One captured packet with its session (what a read returns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PktRec {
    /// Its session.
    pub key: SessKey,
    /// Unix time, ns.
    pub ts: u64,
    /// TCP acknowledgement number.
    pub tcp_ack: u32,
    /// IPv4 flags and fragment offset (IPv6: the fragment header's offset/M field).
    pub ip_flags_frag: u16,
    /// TCP window.
    pub tcp_win: u16,
    /// UDP length field minus 8 (0 when not UDP or shorter).
    pub udp_size: u16,
    /// Frame length.
    pub pkt_len: u16,
    /// TCP payload length.
    pub tcp_payload: u16,
    /// TCP flags.
    pub tcp_flags: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// A crypto session, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptoVal {
    /// Packets from the key's `saddr`.
    pub n_packets: u64,
    /// Packets from the key's `daddr`.
    pub n_packets_reverse: u64,
    /// Bytes (IP length) from `saddr`.
    pub n_bytes: u64,
    /// Bytes from `daddr`.
    pub n_bytes_reverse: u64,
    /// Unix ns of the first packet (on this CPU).
    pub start_ts: u64,
    /// Unix ns of the latest packet (on this CPU).
    pub alive_ts: u64,
    /// The server's address.
    pub server: [u8; 16],
    /// How the server was found: [`METHOD_SYN`], [`METHOD_WELL_KNOWN`], [`METHOD_LOWEST`]
    /// (0 on CPUs that never saw the session).
    pub method: u8,
    /// Explicit padding.
    pub _pad: [u8; 7],
}

/// Server found by a TCP SYN (or an ICMP echo).
pub const METHOD_SYN: u8 = 1;
/// Server found by a port below 1024.
pub const METHOD_WELL_KNOWN: u8 = 2;
/// Server found as the side with the lower port.
pub const METHOD_LOWEST: u8 = 3;

/// Whether `a` sorts before `b` as session ends: IPv4 by the little-endian u32 of the
/// packet bytes, IPv6 byte by byte.
#[inline(always)]
pub fn addr_lower(family: u8, a: &[u8; 16], b: &[u8; 16]) -> bool {
    if family == 4 {
        let x = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        let y = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        x < y
    } else {
        let mut i = 0;
        while i < 16 {
            if a[i] != b[i] {
                return a[i] < b[i];
            }
            i += 1;
        }
        false
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

/// Writes the packet's session key into `k`.
#[inline(always)]
pub fn key_into(p: &PacketInfo, k: &mut SessKey) {
    use crate::mem::copy_addr;
    // SAFETY (each copy): both types hold their addresses 4-aligned (asserted above and in
    // `crate::parse`).
    if src_is_first(p) {
        unsafe {
            copy_addr(&mut k.saddr, &p.saddr);
            copy_addr(&mut k.daddr, &p.daddr);
        }
        k.sport = p.sport;
        k.dport = p.dport;
    } else {
        unsafe {
            copy_addr(&mut k.saddr, &p.daddr);
            copy_addr(&mut k.daddr, &p.saddr);
        }
        k.sport = p.dport;
        k.dport = p.sport;
    }
    k.proto = p.l4proto;
    k.family = p.family;
    k._pad = [0; 2];
}

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

impl PktRec {
    /// The record of a kernel slot whose session is `key`.
    pub fn from_slot(key: SessKey, r: &PktSlot) -> PktRec {
        PktRec {
            key,
            ts: r.ts,
            tcp_ack: r.tcp_ack,
            ip_flags_frag: r.ip_flags_frag,
            tcp_win: r.tcp_win,
            udp_size: r.udp_size,
            pkt_len: r.pkt_len,
            tcp_payload: r.tcp_payload,
            tcp_flags: r.tcp_flags,
            icmp_type: r.icmp_type,
            _pad: [0; 2],
        }
    }
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
    if v.start_ts == 0 {
        let (dst, m) = server_of(p);
        crate::mem::copy_bytes(&mut v.server, if dst { &p.daddr } else { &p.saddr });
        v.method = m;
        v.start_ts = ts;
    }
    let bytes = p.ip_len as u64;
    if src_is_first(p) {
        v.n_packets += 1;
        v.n_bytes += bytes;
    } else {
        v.n_packets_reverse += 1;
        v.n_bytes_reverse += bytes;
    }
    v.alive_ts = ts;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::SessKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DdosSess {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PktRec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PktSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CryptoVal {}
}
