//! The `spa` stage: SPA candidates (pkd knocks, fwknop packets) are rate-limited per
//! source, queued for user space by ring buffer, and dropped. Same rules as
//! `statewall_common::spa`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use statewall_common::{
    parse::PacketInfo,
    spa::{
        gcra,
        packet::{classify, rate_key, Class},
        RateKey, SpaBig, SpaConf, SpaCounter, SpaHeader, SpaSmall, KIND_FWKNOP, KIND_PKD, PKD_LEN,
        SPA_COUNTERS, SPA_MAX, SPA_TAGS_MAX,
    },
};

use crate::clock::now_ns;

#[map(name = "SW_SPA_CONF")]
static SW_SPA_CONF: Array<SpaConf> = Array::with_max_entries(1, 0);
#[map(name = "SW_SPA_TAGS")]
static SW_SPA_TAGS: HashMap<u32, u8> = HashMap::with_max_entries(SPA_TAGS_MAX, 0);
/// LRU: a flood from many sources evicts idle limiter entries (an evicted source starts
/// with a fresh burst), never blocks.
#[map(name = "SW_SPA_RATE")]
static SW_SPA_RATE: LruHashMap<RateKey, u64> = LruHashMap::with_max_entries(65536, 0);
#[map(name = "SW_SPA_EVENTS")]
static SW_SPA_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);
#[map(name = "SW_SPA_STATS")]
static SW_SPA_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SPA_COUNTERS, 0);

#[inline(always)]
fn count(c: SpaCounter) {
    if let Some(v) = SW_SPA_STATS.get_ptr_mut(c as u32) {
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn header(p: &PacketInfo, kind: u8, now: u64) -> SpaHeader {
    SpaHeader {
        time_ns: now,
        saddr: p.saddr,
        daddr: p.daddr,
        family: p.family,
        kind,
        len: p.payload_len,
        sport: p.sport,
        dport: p.dport,
    }
}

/// Runs the stage: true = not a candidate (on to the next stage), false = a candidate
/// (queued or not, it is dropped). `load(dst, off, len, max)` copies `len` payload bytes
/// (1..=max, `max` the room at `dst`) of the packet from `off`.
#[inline(always)]
pub fn run<L: Fn(*mut u8, u32, u32, u32) -> bool>(p: &PacketInfo, load: L) -> bool {
    let Some(conf) = SW_SPA_CONF.get(0) else {
        return true;
    };
    let kind = match classify(p, conf) {
        Class::Other => return true,
        Class::Fwknop => KIND_FWKNOP,
        Class::MaybePkd => {
            let mut tag = 0u32;
            if !load(&mut tag as *mut u32 as *mut u8, p.payload_off as u32, 4, 4) {
                return true;
            }
            if unsafe { SW_SPA_TAGS.get(&tag) }.is_none() {
                return true;
            }
            KIND_PKD
        }
    };
    count(SpaCounter::Candidates);
    let now = now_ns();
    if !admitted(p, conf, now) {
        count(SpaCounter::RateLimited);
        return false;
    }
    let len = p.payload_len as u32;
    if kind == KIND_PKD {
        let Some(mut e) = SW_SPA_EVENTS.reserve::<SpaSmall>(0) else {
            count(SpaCounter::RingFull);
            return false;
        };
        let r = e.as_mut_ptr();
        unsafe { (*r).h = header(p, kind, now) };
        let (dst, n) = (unsafe { (*r).data.as_mut_ptr() }, PKD_LEN as u32);
        if load(dst, p.payload_off as u32, n, n) {
            e.submit(0);
            count(SpaCounter::Queued);
        } else {
            e.discard(0);
            count(SpaCounter::Oversized);
        }
        return false;
    }
    if len == 0 || len as usize > SPA_MAX {
        count(SpaCounter::Oversized);
        return false;
    }
    let Some(mut e) = SW_SPA_EVENTS.reserve::<SpaBig>(0) else {
        count(SpaCounter::RingFull);
        return false;
    };
    let r = e.as_mut_ptr();
    unsafe { (*r).h = header(p, kind, now) };
    if load(
        unsafe { (*r).data.as_mut_ptr() },
        p.payload_off as u32,
        len,
        SPA_MAX as u32,
    ) {
        e.submit(0);
        count(SpaCounter::Queued);
    } else {
        e.discard(0);
        count(SpaCounter::Oversized);
    }
    false
}

/// The per-source rate limit of SPA candidates (GCRA): true when the packet is within it.
/// A function of its own: only candidates get here, and its key's stack stays off the
/// deepest call chain of the programs that inline the stage.
#[inline(never)]
fn admitted(p: &PacketInfo, conf: &SpaConf, now: u64) -> bool {
    let key = rate_key(p);
    let tat = match unsafe { SW_SPA_RATE.get(&key) } {
        Some(t) => *t,
        None => 0,
    };
    match gcra(tat, now, conf) {
        Some(t) => {
            let _ = SW_SPA_RATE.insert(&key, &t, 0);
            true
        }
        None => false,
    }
}
