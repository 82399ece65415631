//! The `detect` stage's kernel tables: an allowlist that no mitigation touches, and the
//! source blocks (addresses or prefixes) that are dropped first on ingress, each with its
//! expiry and its own drop counter (the stages behind no longer see what it drops).
//!
//! Both tables are LPM tries keyed by [`lpm_key`]: 4 bytes of family, then 16 bytes of
//! address, the prefix length counting the family's 32 bits. The flood detectors are
//! xfsm machines (see the user-side `detect` module); those of them marked exempt are not
//! run for an allowlisted source ([`crate::xfsm::CTL_EXEMPT`]).

/// Map: allowlisted prefixes (LPM trie, value 1).
pub const MAP_ALLOW: &str = "SW_DETECT_ALLOW";
/// Map: blocked sources (LPM trie, [`Block`] values).
pub const MAP_BLOCK: &str = "SW_DETECT_BLOCK";
/// Map: the stage's counters (per-CPU array, [`COUNTERS`] entries).
pub const MAP_COUNT: &str = "SW_DETECT_COUNT";
/// Entries of each LPM trie.
pub const MAX_PREFIXES: u32 = 16384;

/// Counter: packets from an allowlisted source.
pub const C_ALLOWED: u32 = 0;
/// Counter: packets dropped by a block.
pub const C_BLOCKED: u32 = 1;
/// Counter: packets that met an expired block (passed).
pub const C_EXPIRED: u32 = 2;
/// Counters.
pub const COUNTERS: u32 = 3;

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

/// What a block says of a packet at `now`: drop it (true) or not.
#[inline(always)]
pub fn blocks(b: &Block, now: u64) -> bool {
    b.expires_ns == 0 || now < b.expires_ns
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
}
