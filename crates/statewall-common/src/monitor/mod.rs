//! The `monitor` stage: per-session feature extraction for DDoS and crypto-mining
//! detection, shared by the kernel program (`statewall-ebpf`'s monitor object) and by
//! user space: the tables' layouts here, and in [`packet`] what is read from a parsed
//! packet (user space's reference extractor in tests and captures).
//!
//! A session is the 5-tuple with the lower address first (IPv4 addresses compared as the
//! little-endian u32 of their 4 packet bytes, as the original monitors did; IPv6 addresses
//! byte by byte), ports following their address. The server side is found once, when a
//! session is first seen ([`packet::server_of`]).
//!
//! Each monitor instance is its own load of the monitor object, with its sizes set by the
//! loader. Every table exists for two buffers (0 and 1): the ddos tables twice, crypto's
//! keys and counts with both buffers in one array each (its index is shared, its entries
//! naming their window); [`CTL_ACTIVE`] says which buffer the programs write. A read
//! switches it, waits a grace period and reads the other one.

pub mod packet;

/// Control array of u64: [`CTL_ACTIVE`], [`CTL_EPOCH`], [`CTL_USED`] + buffer.
pub const MAP_MON_CTL: &str = "SW_MON_CTL";
/// ddos sessions, buffer 0 / 1: `HASH` of [`SessKey`] -> [`DdosSess`] (IPv6 sessions).
pub const MAP_DDOS_SESS: [&str; 2] = ["SW_DDOS_SESS0", "SW_DDOS_SESS1"];
/// ddos sessions of IPv4, buffer 0 / 1: `HASH` of [`SessKey4`] -> [`DdosSess`]. The kernel
/// hashes a lookup's whole key: 16 bytes cost less than half of 40.
pub const MAP_DDOS_SESS4: [&str; 2] = ["SW_DDOS_SESS4_0", "SW_DDOS_SESS4_1"];
/// ddos packet records, buffer 0 / 1: `ARRAY` of [`PktSlot`], filled from slot 0 on
/// (slot [`CTL_USED`] + buffer of [`MAP_MON_CTL`] counts the slots taken).
pub const MAP_DDOS_PKTS: [&str; 2] = ["SW_DDOS_PKTS0", "SW_DDOS_PKTS1"];
/// crypto: where a session's slot is, `LRU_HASH` of [`SessKey`] -> [`slot_word`] (IPv6
/// sessions; [`CRYPTO_INDEX_PER_SESSION`] entries per session of a window). Both buffers
/// share it: an entry names the window it was made in, and one of an older window is
/// stale (its session gets a new slot when it is seen again). Never read by user space:
/// an entry evicted early only costs its session a second slot, which the reader merges.
pub const MAP_CRYPTO_INDEX: &str = "SW_CRYPTO_IDX";
/// crypto, IPv4 sessions: `LRU_HASH` of [`SessKey4`] -> [`slot_word`].
pub const MAP_CRYPTO_INDEX4: &str = "SW_CRYPTO_IDX4";
/// Entries of the index tables per session of a window: the current window's entries and
/// room for the stale ones of earlier windows, so that the LRU evicts those first.
pub const CRYPTO_INDEX_PER_SESSION: u32 = 2;
/// crypto: the sessions' keys, `ARRAY` of [`SessKey`] (mapped by the reader), slot `s` of
/// buffer `b` at `b * sessions + s`. A slot given up by the program that took it (another
/// CPU made the session's entry first) has family 0.
pub const MAP_CRYPTO_KEYS: &str = "SW_CRYPTO_KEYS";
/// crypto: the sessions' counts per CPU, `ARRAY` of [`CryptoVal`] (mapped by the reader),
/// at [`crypto_value_index`]. Each CPU writes its own values without atomics; the reader
/// zeroes a buffer's values after reading them, so a CPU's value that is all zero is one
/// that never saw the session.
pub const MAP_CRYPTO_VALS: &str = "SW_CRYPTO_VALS";
/// Global set by the loader: sessions per window (crypto: slots per buffer).
pub const GLOBAL_SESSIONS: &str = "SW_MON_SESSIONS";
/// Global set by the loader: one more than the highest possible CPU id (crypto: the values'
/// stride).
pub const GLOBAL_NCPU: &str = "SW_MON_NCPU";

/// An index entry: the window the session's slot belongs to (the high word) and the slot.
#[inline(always)]
pub fn slot_word(window: u32, slot: u32) -> u64 {
    ((window as u64) << 32) | slot as u64
}

/// The slot an index entry `word` names, if it was made in `window` (else it is stale).
#[inline(always)]
pub fn slot_in(word: u64, window: u32) -> Option<u32> {
    ((word >> 32) as u32 == window).then_some(word as u32)
}

/// Where CPU `cpu`'s counts of slot `slot` in buffer `b` are in [`MAP_CRYPTO_VALS`]: each
/// buffer and CPU has a run of `sessions` values (a CPU writes its own cache lines only).
#[inline(always)]
pub fn crypto_value_index(b: u32, cpu: u32, ncpu: u32, sessions: u32, slot: u32) -> u32 {
    (b * ncpu + cpu) * sessions + slot
}
/// Counters: `PERCPU_ARRAY` of u64, [`COUNTER_NAMES`] order.
pub const MAP_MON_STATS: &str = "SW_MON_STATS";
/// Sessions turned away, buffer 0 / 1 (the index): `PERCPU_ARRAY` of [`AwayRegs`], a
/// HyperLogLog sketch of the turned-away sessions' keys (user space merges the CPUs'
/// registers by their maximum and estimates how many distinct sessions a window turned
/// away: the flows it could not classify, counted once however many packets they sent).
pub const MAP_MON_AWAY: &str = "SW_MON_AWAY";
/// Index bits of [`MAP_MON_AWAY`]'s sketch: 2^10 registers, a standard error of about
/// 1.04 / 32 = 3.3 %.
pub const AWAY_BITS: u32 = 10;
/// Registers of the sketch.
pub const AWAY_REGS: usize = 1 << AWAY_BITS;
/// One buffer's sketch: register `i` holds the largest rank (leading zeros + 1 of the
/// hash's bits below the index) of the keys whose hash's top [`AWAY_BITS`] are `i`.
pub type AwayRegs = [u8; AWAY_REGS];

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
/// Counter: sessions started (crypto: slots taken, so a session whose index entry was
/// evicted within the window counts twice).
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

/// [`MAP_MON_CTL`] slot: the window's number; the programs write buffer `number & 1`, and
/// crypto's index entries name the window (its low 32 bits) they were made in.
pub const CTL_ACTIVE: u32 = 0;
/// Slot: added to the monotonic clock to give Unix time in ns (written by user space).
pub const CTL_EPOCH: u32 = 1;
/// Slots `CTL_USED + b`: packet-table slots taken in buffer `b` (may run past the size:
/// only the first `size` slots hold records). Separate slots, so that user space writing
/// one never races with programs adding to another.
pub const CTL_USED: u32 = 2;
/// Slots `CTL_SESS + b`: session numbers handed out in buffer `b` (crypto: the slots
/// taken; may run past the size, only the first `sessions` exist).
pub const CTL_SESS: u32 = 4;
/// Slots `CTL_V6 + b` (ddos): nonzero once buffer `b` has an IPv6 session (set by the programs,
/// cleared by the reader): a read skips the IPv6 table otherwise (reading an empty hash
/// table still walks its buckets).
pub const CTL_V6: u32 = 6;
/// Slots in [`MAP_MON_CTL`].
pub const CTL_SLOTS: u32 = 8;

/// A session (5-tuple, lower address first). 4-aligned: its addresses are copied a word
/// at a time ([`packet::key_into`]).
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

/// An IPv4 session as the kernel's IPv4 tables key it: [`SessKey`]'s fields with 4-byte
/// addresses (16 bytes in all).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessKey4 {
    /// Lower address.
    pub saddr: [u8; 4],
    /// Higher address.
    pub daddr: [u8; 4],
    /// Port of `saddr`.
    pub sport: u16,
    /// Port of `daddr`.
    pub dport: u16,
    /// L4 protocol.
    pub proto: u8,
    /// 4.
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// The session as the tables of both families name it (addresses' other bytes zero).
impl From<SessKey4> for SessKey {
    fn from(k4: SessKey4) -> SessKey {
        let mut k = SessKey {
            sport: k4.sport,
            dport: k4.dport,
            proto: k4.proto,
            family: k4.family,
            ..SessKey::default()
        };
        k.saddr[..4].copy_from_slice(&k4.saddr);
        k.daddr[..4].copy_from_slice(&k4.daddr);
        k
    }
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

/// A crypto session's counts on one CPU.
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
    /// Unix ns of the latest packet (on this CPU), to the kernel's tick: the packets after a
    /// CPU's first are timed by the coarse clock.
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::SessKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SessKey4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DdosSess {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PktRec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PktSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CryptoVal {}
}
