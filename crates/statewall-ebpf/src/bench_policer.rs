//! A token-bucket policer per source address written by hand (never attached): the
//! benchmark's yardstick for `examples/efsm/policer.toml`, which does the same job as an
//! xfsm machine (one byte of credit every 1,024 ns, bursts of 30,000 bytes, a new source
//! starts with a full bucket; UDP only). Buckets are updated in place under the same
//! compare-and-swap lock word the machines' registers use.

use aya_ebpf::{macros::map, maps::LruHashMap};
use statewall_common::{parse::proto, parse::PacketInfo};

use crate::bench_synguard::addr_word;

/// Bucket of one source.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Bucket {
    lock: u64,
    tokens: u64,
    stamp: u64,
}

/// Buckets by (family, address).
#[map(name = "SW_BENCH_BUCKETS")]
static SW_BENCH_BUCKETS: LruHashMap<[u32; 5], Bucket> = LruHashMap::with_max_entries(16384, 0);

const BURST: u64 = 30_000;

/// True when the packet is let through.
#[inline(always)]
pub fn run(p: &PacketInfo, now: u64) -> bool {
    if !p.is_ip() || p.l4proto != proto::UDP {
        return true;
    }
    let key = [
        p.family as u32,
        addr_word(p, 0),
        addr_word(p, 1),
        addr_word(p, 2),
        addr_word(p, 3),
    ];
    let len = p.pkt_len as u64;
    let Some(b) = SW_BENCH_BUCKETS.get_ptr_mut(&key) else {
        let b = Bucket {
            lock: 0,
            tokens: BURST.saturating_sub(len),
            stamp: now,
        };
        let _ = SW_BENCH_BUCKETS.insert(&key, &b, 0);
        return true;
    };
    let lock = unsafe { &raw mut (*b).lock };
    if !crate::xfsm::lock(lock) {
        return true;
    }
    let b = unsafe { &mut *b };
    let mut t = b.tokens.saturating_add(now.saturating_sub(b.stamp) >> 10);
    if t > BURST {
        t = BURST;
    }
    b.stamp = now;
    let pass = t >= len;
    b.tokens = if pass { t - len } else { t };
    crate::xfsm::unlock(lock);
    pass
}
