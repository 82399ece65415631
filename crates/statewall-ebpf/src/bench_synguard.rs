//! `examples/efsm/syn-flood.toml` written by hand (never attached): the benchmark's
//! yardstick for that machine. SYNs are counted per second in two globals under a lock
//! word; from the 200th in a second on, a SYN passes only when its (source, source port,
//! destination port) was seen within 3 s (its retransmission), and is dropped and recorded
//! otherwise.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap},
};
use statewall_common::{
    parse::proto,
    parse::{tcp, PacketInfo},
};

/// Lock word, window start, SYNs in the window.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Window {
    lock: u64,
    start: u64,
    syns: u64,
}

#[map(name = "SW_BENCH_SYNWIN")]
static SW_BENCH_SYNWIN: Array<Window> = Array::with_max_entries(1, 0);

/// Probed flows: (family, source address, source port, destination port) -> until.
#[map(name = "SW_BENCH_PROBED")]
static SW_BENCH_PROBED: LruHashMap<[u32; 6], u64> = LruHashMap::with_max_entries(65536, 0);

const FLOOD: u64 = 200;
const SEC: u64 = 1_000_000_000;
const PROBE_NS: u64 = 3 * SEC;

/// True when the packet is let through.
#[inline(always)]
pub fn run(p: &PacketInfo, now: u64) -> bool {
    if !p.is_ip() || p.l4proto != proto::TCP || p.tcp_flags & (tcp::SYN | tcp::ACK) != tcp::SYN {
        return true;
    }
    let Some(w) = SW_BENCH_SYNWIN.get_ptr_mut(0) else {
        return true;
    };
    let lock = unsafe { &raw mut (*w).lock };
    if !crate::xfsm::lock(lock) {
        return true;
    }
    let w = unsafe { &mut *w };
    let flood = if now.saturating_sub(w.start) >= SEC {
        w.start = now;
        w.syns = 1;
        false
    } else {
        let f = w.syns >= FLOOD;
        w.syns = w.syns.saturating_add(1);
        f
    };
    crate::xfsm::unlock(lock);
    if !flood {
        return true;
    }
    // Words, not bytes: a byte array's zeroing is a byte-loop `memset` call in BPF.
    let key = [
        p.family as u32,
        p.sport as u32 | (p.dport as u32) << 16,
        addr_word(p, 0),
        addr_word(p, 1),
        addr_word(p, 2),
        addr_word(p, 3),
    ];
    match unsafe { SW_BENCH_PROBED.get(&key) } {
        Some(until) if *until > now => {
            let _ = SW_BENCH_PROBED.remove(&key);
            true
        }
        _ => {
            let _ = SW_BENCH_PROBED.insert(&key, &(now + PROBE_NS), 0);
            false
        }
    }
}

/// Word `i` of the packet's source address (4-aligned in `PacketInfo`).
#[inline(always)]
pub fn addr_word(p: &PacketInfo, i: usize) -> u32 {
    // SAFETY: `i & 3 < 4`; `saddr` starts a 4-aligned `PacketInfo`.
    unsafe { core::ptr::read(p.saddr.as_ptr().add(4 * (i & 3)) as *const u32) }
}
