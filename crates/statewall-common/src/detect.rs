//! The `detect` stage's kernel tables: an allowlist that no mitigation touches, and the
//! source blocks (addresses or prefixes) that are dropped first on ingress, each with its
//! expiry and its own drop counter (the stages behind no longer see what it drops).
//!
//! Destination mitigations ([`DestKey`], [`DestMit`]) hold what per-source blocks cannot:
//! a flood from sources that change faster than a block follows them. They match the
//! packets to one (address, protocol, port, length) and drop them, hold them to a rate,
//! or (SYNs) admit only a retransmitted SYN.
//!
//! The allowlist and the blocks are LPM tries keyed by [`lpm_key`]: 4 bytes of family, then 16 bytes of
//! address, the prefix length counting the family's 32 bits. The flood detectors are
//! xfsm machines (see the user-side `detect` module); those of them marked exempt are not
//! run for an allowlisted source ([`crate::xfsm::CTL_EXEMPT`]).

/// Map: allowlisted prefixes (LPM trie, value 1).
pub const MAP_ALLOW: &str = "SW_DETECT_ALLOW";
/// Map: blocked sources (LPM trie, [`Block`] values).
pub const MAP_BLOCK: &str = "SW_DETECT_BLOCK";
/// Map: the stage's counters (per-CPU array, [`COUNTERS`] entries), then one control
/// word, [`SLOT_DESTS`] ([`COUNT_SLOTS`] entries in all).
pub const MAP_COUNT: &str = "SW_DETECT_COUNT";
/// Entries of each LPM trie.
pub const MAX_PREFIXES: u32 = 16384;

/// Counter: packets from an allowlisted source.
pub const C_ALLOWED: u32 = 0;
/// Counter: packets dropped by a block.
pub const C_BLOCKED: u32 = 1;
/// Counter: packets that met an expired block (passed).
pub const C_EXPIRED: u32 = 2;
/// Counter: packets a destination mitigation dropped (a verifying one: first SYNs held).
pub const C_DEST_DROPPED: u32 = 3;
/// Counter: packets a destination mitigation let through (under its rate; SYNs sent again).
pub const C_DEST_PASSED: u32 = 4;
/// Counters.
pub const COUNTERS: u32 = 5;
/// Control word after the counters, the same on every CPU (user space writes each, and
/// sets it again from the table every second): the entries of the destination table (0:
/// the kernel looks nothing up). A counter added later goes after it.
pub const SLOT_DESTS: u32 = 5;
/// Entries of [`MAP_COUNT`].
pub const COUNT_SLOTS: u32 = 6;
const _: () = assert!(SLOT_DESTS >= COUNTERS && SLOT_DESTS < COUNT_SLOTS);

/// A block: dropped until `expires_ns` (on the kernel's boot clock; 0 = never).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Block {
    /// When the block ends (boot-clock ns; 0: it does not).
    pub expires_ns: u64,
    /// Packets dropped under it (added atomically by the kernel).
    pub dropped: u64,
    /// When it was made (boot-clock ns).
    pub since_ns: u64,
}

/// Map: destination mitigations (hash, [`DestKey`] -> [`DestMit`], [`MAX_DESTS`]).
pub const MAP_DEST: &str = "SW_DETECT_DEST";
/// Map: SYNs held by a verifying destination mitigation (LRU hash, [`SynKey`] -> the
/// boot-clock ns the first was seen).
pub const MAP_SYNS: &str = "SW_DETECT_SYNS";
/// Entries of the destination table.
pub const MAX_DESTS: u32 = 1024;
/// Entries of the held-SYN table.
pub const MAX_SYNS: u32 = 65536;
/// A held SYN's retransmission is admitted when it comes at least this long after the
/// SYN held (Linux retransmits after 1 s, Windows after 3 s): a SYN sooner than that is
/// a tool repeating itself, and is held in its place.
pub const SYN_RETRY_MIN_NS: u64 = 500_000_000;
/// ... and at most this long after it (later, it is a first SYN again).
pub const SYN_RETRY_MAX_NS: u64 = 10_000_000_000;

/// A destination mitigation's mode: drop the packets it matches.
pub const DEST_DROP: u32 = 0;
/// ... let `limit` of them through per second (all CPUs together), drop the rest.
pub const DEST_LIMIT: u32 = 1;
/// ... TCP: drop the first SYN of each (source, port, destination, port) and admit its
/// retransmission, sent again 0.5 to 10 s later as a TCP stack does (a spoofed source
/// never sends one twice; a tool that repeats one four-tuple faster is held each time);
/// other segments go on.
pub const DEST_VERIFY: u32 = 2;

/// A destination mitigation's key: the packets sent to `addr` with protocol `proto` and
/// destination port `port` (0 for ICMP and ICMPv6) and, unless it is 0, IP length `len`
/// (IPv4 total length, IPv6 payload length + 40). The kernel looks up the packet's own
/// length first, then 0. TCP keys match SYNs only (no ACK); ICMP errors the network
/// needs ([`exempt_icmp`]) are never matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    /// 4 or 6.
    pub family: u8,
    /// L4 protocol.
    pub proto: u8,
    /// Destination port (0: none, ICMP).
    pub port: u16,
    /// IP length (0: any).
    pub len: u16,
    /// Explicit padding.
    pub _pad: u16,
    /// Destination address (IPv4: first 4 bytes).
    pub addr: [u8; 16],
}

/// A destination mitigation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestMit {
    /// When it ends (boot-clock ns; 0: it does not).
    pub expires_ns: u64,
    /// Packets dropped under it (added atomically by the kernel).
    pub dropped: u64,
    /// When it was made (boot-clock ns).
    pub since_ns: u64,
    /// [`DEST_DROP`], [`DEST_LIMIT`] or [`DEST_VERIFY`].
    pub mode: u32,
    /// [`DEST_LIMIT`]: packets per second let through.
    pub limit: u32,
    /// [`DEST_LIMIT`]: the second (boot clock) `passed` counts in.
    pub second: u64,
    /// Packets let through: in `second` ([`DEST_LIMIT`]); SYNs admitted on their
    /// retransmission ([`DEST_VERIFY`]).
    pub passed: u64,
}

/// A SYN held by a verifying destination: its four-tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynKey {
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Explicit padding.
    pub _pad2: u16,
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
}

/// True for the ICMP and ICMPv6 messages a destination mitigation never holds: IPv4
/// destination unreachable (path MTU discovery), ICMPv6 packet too big and neighbour
/// discovery (router and neighbour solicitations and advertisements, redirects).
#[inline(always)]
pub fn exempt_icmp(l4proto: u8, icmp_type: u8) -> bool {
    match l4proto {
        crate::parse::proto::ICMP => icmp_type == 3,
        crate::parse::proto::ICMPV6 => icmp_type == 2 || (133..=137).contains(&icmp_type),
        _ => false,
    }
}

/// The LPM key of an address (`family` 4 or 6, the address in the first 4 or 16 bytes
/// of `addr`, as [`crate::parse::PacketInfo`] holds it) under a prefix of `plen` bits:
/// (key prefix length, key data).
#[inline(always)]
pub fn lpm_key(family: u8, addr: &[u8; 16], plen: u32) -> (u32, [u8; 20]) {
    // Built from five words, each computed: a zeroed byte array written in part becomes
    // a byte-loop `memset` call in BPF (see `crate::mem`).
    let w = |i: usize| {
        u32::from_ne_bytes([
            addr[4 * i],
            addr[4 * i + 1],
            addr[4 * i + 2],
            addr[4 * i + 3],
        ])
    };
    let v6 = family != 4;
    let hi = |i: usize| if v6 { w(i) } else { 0 };
    let words: [u32; 5] = [
        u32::from_ne_bytes([family, 0, 0, 0]),
        w(0),
        hi(1),
        hi(2),
        hi(3),
    ];
    // SAFETY: [u32; 5] and [u8; 20] have the same size, and any bytes are a valid [u8; 20].
    (32 + plen, unsafe {
        core::mem::transmute::<[u32; 5], [u8; 20]>(words)
    })
}

/// Whether a mitigation that ends at `expires_ns` (0: never) is in force at `now`: a
/// block, a destination mitigation.
#[inline(always)]
pub fn in_force(expires_ns: u64, now: u64) -> bool {
    expires_ns == 0 || now < expires_ns
}

/// What a block says of a packet at `now`: drop it (true) or not.
#[inline(always)]
pub fn blocks(b: &Block, now: u64) -> bool {
    in_force(b.expires_ns, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_family_and_only_the_address_bytes_of_it() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 1, 2, 3]);
        a[4] = 0xee; // not part of an IPv4 address
        let (len, d) = lpm_key(4, &a, 24);
        assert_eq!(len, 56);
        assert_eq!(&d[..8], &[4, 0, 0, 0, 10, 1, 2, 3]);
        assert_eq!(d[8], 0);
        let (len, d) = lpm_key(6, &a, 128);
        assert_eq!((len, d[0], d[8]), (160, 6, 0xee));
    }

    #[test]
    fn the_network_s_own_icmp_errors_are_exempt() {
        assert!(exempt_icmp(crate::parse::proto::ICMP, 3));
        assert!(!exempt_icmp(crate::parse::proto::ICMP, 8));
        for t in [2, 133, 134, 135, 136, 137] {
            assert!(exempt_icmp(crate::parse::proto::ICMPV6, t), "{t}");
        }
        assert!(!exempt_icmp(crate::parse::proto::ICMPV6, 128));
        assert!(!exempt_icmp(crate::parse::proto::UDP, 3));
    }

    #[test]
    fn a_block_ends_at_its_expiry_and_zero_never_ends() {
        let b = Block {
            expires_ns: 100,
            ..Default::default()
        };
        assert!(blocks(&b, 99));
        assert!(!blocks(&b, 100));
        assert!(blocks(&Block::default(), u64::MAX));
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), no padding.
    unsafe impl aya::Pod for super::Block {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DestKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DestMit {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SynKey {}
}
