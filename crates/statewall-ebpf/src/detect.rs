//! The `detect` stage's drops, first on ingress: a source on the allowlist goes on, a
//! blocked one is dropped and counted in its block; then a packet to a destination under
//! a mitigation is dropped, held to its rate, or (a SYN) held until it is sent again (see
//! `statewall_common::detect`).

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use statewall_common::{
    detect::{
        self, Block, DestKey, DestMit, SynKey, COUNT_SLOTS, C_ALLOWED, C_BLOCKED, C_DEST_DROPPED,
        C_DEST_PASSED, C_EXPIRED, DEST_LIMIT, DEST_VERIFY, MAX_DESTS, MAX_PREFIXES, MAX_SYNS,
        SLOT_DESTS, SYN_RETRY_MAX_NS, SYN_RETRY_MIN_NS,
    },
    parse::proto,
    parse::{tcp, PacketInfo},
};

/// Allowlisted prefixes (no flags: the LPM trie needs BPF_F_NO_PREALLOC).
#[map(name = "SW_DETECT_ALLOW")]
static SW_DETECT_ALLOW: LpmTrie<[u8; 20], u8> = LpmTrie::with_max_entries(MAX_PREFIXES, 1);
/// Blocked sources.
#[map(name = "SW_DETECT_BLOCK")]
static SW_DETECT_BLOCK: LpmTrie<[u8; 20], Block> = LpmTrie::with_max_entries(MAX_PREFIXES, 1);
#[map(name = "SW_DETECT_COUNT")]
static SW_DETECT_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_SLOTS, 0);
/// Destination mitigations (preallocated: a flood cannot evict one).
#[map(name = "SW_DETECT_DEST")]
static SW_DETECT_DEST: HashMap<DestKey, DestMit> = HashMap::with_max_entries(MAX_DESTS, 0);
/// SYNs held by verifying destinations (LRU: when full, the least recently held goes,
/// whoever sent it; `[maps] SW_DETECT_SYNS` sizes it for the floods expected).
#[map(name = "SW_DETECT_SYNS")]
static SW_DETECT_SYNS: LruHashMap<SynKey, u64> = LruHashMap::with_max_entries(MAX_SYNS, 0);

#[inline(always)]
fn count(c: u32) {
    if let Some(p) = SW_DETECT_COUNT.get_ptr_mut(c) {
        unsafe { *p += 1 };
    }
}

/// True when the packet's source is on the allowlist. Not inlined: its key stays out of
/// the callers' frames (the XDP program's stack holds every ingress stage).
#[inline(never)]
pub fn allowed(p: &PacketInfo) -> bool {
    if !p.is_ip() {
        return false;
    }
    let (len, data) = detect::lpm_key(p.family, &p.saddr, if p.family == 4 { 32 } else { 128 });
    SW_DETECT_ALLOW.get(&Key::new(len, data)).is_some()
}

/// The stage on a parsed packet: false when a block drops it.
#[inline(never)]
pub fn run(p: &PacketInfo) -> bool {
    if !p.is_ip() {
        return true;
    }
    let (len, data) = detect::lpm_key(p.family, &p.saddr, if p.family == 4 { 32 } else { 128 });
    let key = Key::new(len, data);
    let Some(b) = SW_DETECT_BLOCK.get(&key) else {
        return true;
    };
    if SW_DETECT_ALLOW.get(&key).is_some() {
        count(C_ALLOWED);
        return true;
    }
    if !detect::blocks(b, crate::clock::now_ns()) {
        count(C_EXPIRED);
        return true;
    }
    // (Map memory: written by every CPU, atomically.)
    crate::atomic::fetch_add(&b.dropped as *const u64 as *mut u64, 1);
    count(C_BLOCKED);
    false
}

/// The destination mitigations on a parsed IP packet whose source no block dropped: false
/// when one drops it.
#[inline(never)]
pub fn destination(p: &PacketInfo) -> bool {
    match SW_DETECT_COUNT.get(SLOT_DESTS) {
        Some(n) if *n != 0 => {}
        _ => return true,
    }
    let port = match p.l4proto {
        // TCP: SYNs only (an established connection's segments are never held).
        proto::TCP if p.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN => p.dport,
        proto::UDP => p.dport,
        proto::ICMP | proto::ICMPV6 if !detect::exempt_icmp(p.l4proto, p.icmp_type) => 0,
        _ => return true,
    };
    let mut k = DestKey {
        family: p.family,
        proto: p.l4proto,
        port,
        len: p.ip_len,
        _pad: 0,
        addr: p.daddr,
    };
    let m = match SW_DETECT_DEST.get_ptr_mut(&k) {
        Some(m) => m,
        None => {
            k.len = 0;
            match SW_DETECT_DEST.get_ptr_mut(&k) {
                Some(m) => m,
                None => return true,
            }
        }
    };
    // SAFETY: a value of the map, alive while the program runs; the words other CPUs
    // write are written atomically (or, `second`, with a benign race: a second's count
    // may start twice).
    let m = unsafe { &mut *m };
    let now = crate::clock::now_ns();
    if !detect::in_force(m.expires_ns, now) || allowed(p) {
        return true;
    }
    let admit = match m.mode {
        DEST_LIMIT => {
            let sec = now / 1_000_000_000;
            if m.second != sec {
                m.second = sec;
                m.passed = 0;
            }
            crate::atomic::fetch_add(&mut m.passed, 1) < m.limit as u64
        }
        DEST_VERIFY if p.l4proto == proto::TCP => verify(p, now, &mut m.passed),
        _ => false,
    };
    if admit {
        count(C_DEST_PASSED);
    } else {
        crate::atomic::fetch_add(&mut m.dropped, 1);
        count(C_DEST_DROPPED);
    }
    admit
}

/// A SYN to a verifying destination: admitted when it repeats one held
/// [`SYN_RETRY_MIN_NS`] to [`SYN_RETRY_MAX_NS`] ago (counted in `passed`), else held
/// (remembered from now, dropped).
#[inline(always)]
fn verify(p: &PacketInfo, now: u64, passed: &mut u64) -> bool {
    let k = SynKey {
        family: p.family,
        _pad: 0,
        sport: p.sport,
        dport: p.dport,
        _pad2: 0,
        saddr: p.saddr,
        daddr: p.daddr,
    };
    if let Some(seen) = unsafe { SW_DETECT_SYNS.get(&k) } {
        let gap = now.wrapping_sub(*seen);
        if (SYN_RETRY_MIN_NS..=SYN_RETRY_MAX_NS).contains(&gap) {
            let _ = SW_DETECT_SYNS.remove(&k);
            crate::atomic::fetch_add(passed, 1);
            return true;
        }
    }
    let _ = SW_DETECT_SYNS.insert(&k, &now, 0);
    false
}
