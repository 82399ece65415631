//! The `detect` stage's drops, first on ingress: a source on the allowlist goes on, a
//! blocked one is dropped and counted in its block (see `statewall_common::detect`).

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, LpmTrie, PerCpuArray},
};
use statewall_common::{
    detect::{self, Block, COUNTERS, C_ALLOWED, C_BLOCKED, C_EXPIRED, MAX_PREFIXES},
    parse::PacketInfo,
};

/// Allowlisted prefixes (no flags: the LPM trie needs BPF_F_NO_PREALLOC).
#[map(name = "SW_DETECT_ALLOW")]
static SW_DETECT_ALLOW: LpmTrie<[u8; 20], u8> = LpmTrie::with_max_entries(MAX_PREFIXES, 1);
/// Blocked sources.
#[map(name = "SW_DETECT_BLOCK")]
static SW_DETECT_BLOCK: LpmTrie<[u8; 20], Block> = LpmTrie::with_max_entries(MAX_PREFIXES, 1);
#[map(name = "SW_DETECT_COUNT")]
static SW_DETECT_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

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
