//! The `spa` stage's kernel part: picking SPA candidates out of the traffic cheaply,
//! rate-limiting them per source, and handing their payload to user space (which verifies
//! them and grants); the candidate packet itself is always dropped. The tables' layouts
//! and the limiter are here; which packet is a candidate is [`packet`]'s.
//!
//! A candidate is a UDP packet (first fragment or unfragmented) that is either
//! - a **pkd knock**: exactly [`PKD_LEN`] bytes of payload whose first four bytes are a
//!   configured tag (any destination port: nf-pkd's client picks a random one), or
//! - a **fwknop packet**: any UDP packet to the configured fwknop port.
//!
//! Per source address, a GCRA (virtual scheduling) limiter lets `burst` candidates through
//! at once and then one every `interval`; the rest are dropped and counted. Candidates that
//! pass go to user space by ring buffer ([`SpaRecord`]): the header and up to
//! [`PKD_LEN`] or [`SPA_MAX`] payload bytes.

pub mod packet;

/// Configuration, an `ARRAY` with one [`SpaConf`].
pub const MAP_SPA_CONF: &str = "SW_SPA_CONF";
/// pkd tags, a `HASH` of the tag's four bytes (as a native u32) -> 1.
pub const MAP_SPA_TAGS: &str = "SW_SPA_TAGS";
/// Per-source limiter state, an `LRU_HASH` of [`RateKey`] -> theoretical arrival time (ns).
pub const MAP_SPA_RATE: &str = "SW_SPA_RATE";
/// Candidates for user space, a `RINGBUF` of [`SpaRecord`]s.
pub const MAP_SPA_EVENTS: &str = "SW_SPA_EVENTS";
/// Per-CPU counters, a `PERCPU_ARRAY` of `u64` indexed by [`SpaCounter`].
pub const MAP_SPA_STATS: &str = "SW_SPA_STATS";
/// Capacity of [`MAP_SPA_TAGS`].
pub const SPA_TAGS_MAX: u32 = 256;

/// A pkd knock's payload length.
pub const PKD_LEN: usize = 56;
/// Longest fwknop payload handed to user space (fwknopd accepts up to 1500 bytes).
pub const SPA_MAX: usize = 1500;

/// Candidate kind: a pkd knock.
pub const KIND_PKD: u8 = 1;
/// Candidate kind: a fwknop packet.
pub const KIND_FWKNOP: u8 = 2;

/// The stage's configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaConf {
    /// Non-zero when pkd knocks are looked for.
    pub pkd: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// fwknop's UDP port (0 = no fwknop).
    pub fwknop_port: u16,
    /// Explicit padding.
    pub _pad2: u32,
    /// Limiter: one candidate per `interval_ns` per source ...
    pub interval_ns: u64,
    /// ... after a burst: `(burst - 1) * interval_ns`.
    pub tau_ns: u64,
}

/// Limiter key: a source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    /// Source address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Address family (4 or 6).
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
}

/// Header of a ring-buffer record; `len` payload bytes follow in `data`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaHeader {
    /// Kernel time.
    pub time_ns: u64,
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Address family.
    pub family: u8,
    /// [`KIND_PKD`] or [`KIND_FWKNOP`].
    pub kind: u8,
    /// Payload bytes in `data`.
    pub len: u16,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// A pkd record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SpaSmall {
    /// Header.
    pub h: SpaHeader,
    /// Payload.
    pub data: [u8; PKD_LEN],
}

/// A fwknop record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SpaBig {
    /// Header.
    pub h: SpaHeader,
    /// Payload.
    pub data: [u8; SPA_MAX],
}

/// Stage counters (index into [`MAP_SPA_STATS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaCounter {
    /// Candidates seen.
    Candidates = 0,
    /// Dropped by the per-source limiter.
    RateLimited = 1,
    /// Dropped: the ring buffer was full.
    RingFull = 2,
    /// Handed to user space.
    Queued = 3,
    /// Dropped: longer than [`SPA_MAX`] or the payload could not be read.
    Oversized = 4,
}

/// Number of counters.
pub const SPA_COUNTERS: u32 = 5;
/// Counter names, in index order.
pub const SPA_COUNTER_NAMES: [&str; SPA_COUNTERS as usize] = [
    "candidates",
    "rate_limited",
    "ring_full",
    "queued",
    "oversized",
];

/// The limiter: with theoretical arrival time `tat` (0 = none yet), may a candidate pass
/// at `now`? Returns the new `tat` when it may.
#[inline(always)]
pub fn gcra(tat: u64, now: u64, c: &SpaConf) -> Option<u64> {
    let t = if tat < now { now } else { tat };
    if t - now > c.tau_ns {
        return None;
    }
    Some(t + c.interval_ns)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::SpaConf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SpaHeader {}
}
