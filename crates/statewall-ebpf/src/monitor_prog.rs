//! The monitor program's code, built into two objects: `statewall-monitor` (`monitor.rs`,
//! the one statewall loads) and `statewall-monitor-held` (`monitor_held.rs`, for tests
//! only), which differ only in `crate::hold_ns`.

use crate::atomic::{cmpxchg, fetch_add};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns, bpf_loop},
    },
    macros::{classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use statewall_common::{
    mem::copy_bytes,
    monitor::{
        crypto_value_index,
        packet::{
            crypto_add_from, crypto_wants, ddos_wants, fill_slot, ignored_cause, key4_into,
            key_into, server_addr,
        },
        slot_in, slot_word, AwayRegs, CryptoVal, DdosSess, PktSlot, SessKey, SessKey4, AWAY_BITS,
        CNT_PACKETS, CNT_SESSIONS, CNT_SESSION_FULL, CNT_TABLE_FULL, CNT_TURNED_AWAY, COUNTERS,
        CTL_ACTIVE, CTL_EPOCH, CTL_SESS, CTL_SLOTS, CTL_USED, CTL_V6, DDOS_PER_SESSION,
        DDOS_SESSIONS, KIND_DDOS,
    },
    parse::PacketInfo,
    TCX_NEXT,
};

/// What this instance extracts (set by the loader).
#[no_mangle]
static SW_MON_KIND: u32 = KIND_DDOS;
/// ddos: packets captured per session and window (set by the loader).
#[no_mangle]
static SW_MON_PER_SESSION: u32 = DDOS_PER_SESSION;
/// ddos: packets captured per window, the packet table's size (set by the loader).
#[no_mangle]
static SW_MON_TOTAL: u32 = DDOS_SESSIONS * DDOS_PER_SESSION;

/// Packet tables are mapped into the reader's memory (no copy through syscalls).
use statewall_common::maps::BPF_F_MMAPABLE;

#[map(name = "SW_MON_CTL")]
static SW_MON_CTL: Array<u64> = Array::with_max_entries(CTL_SLOTS, 0);
#[map(name = "SW_MON_STATS")]
static SW_MON_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);
#[map(name = "SW_DDOS_SESS0")]
static SW_DDOS_SESS0: HashMap<SessKey, DdosSess> = HashMap::with_max_entries(DDOS_SESSIONS, 0);
#[map(name = "SW_DDOS_SESS1")]
static SW_DDOS_SESS1: HashMap<SessKey, DdosSess> = HashMap::with_max_entries(DDOS_SESSIONS, 0);
#[map(name = "SW_DDOS_SESS4_0")]
static SW_DDOS_SESS4_0: HashMap<SessKey4, DdosSess> = HashMap::with_max_entries(DDOS_SESSIONS, 0);
#[map(name = "SW_DDOS_SESS4_1")]
static SW_DDOS_SESS4_1: HashMap<SessKey4, DdosSess> = HashMap::with_max_entries(DDOS_SESSIONS, 0);
#[map(name = "SW_DDOS_PKTS0")]
static SW_DDOS_PKTS0: Array<PktSlot> =
    Array::with_max_entries(DDOS_SESSIONS * DDOS_PER_SESSION, BPF_F_MMAPABLE);
#[map(name = "SW_DDOS_PKTS1")]
static SW_DDOS_PKTS1: Array<PktSlot> =
    Array::with_max_entries(DDOS_SESSIONS * DDOS_PER_SESSION, BPF_F_MMAPABLE);
#[map(name = "SW_CRYPTO_IDX")]
static SW_CRYPTO_IDX: LruHashMap<SessKey, u64> = LruHashMap::with_max_entries(1, 0);
#[map(name = "SW_CRYPTO_IDX4")]
static SW_CRYPTO_IDX4: LruHashMap<SessKey4, u64> = LruHashMap::with_max_entries(1, 0);
#[map(name = "SW_CRYPTO_KEYS")]
static SW_CRYPTO_KEYS: Array<SessKey> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "SW_CRYPTO_VALS")]
static SW_CRYPTO_VALS: Array<CryptoVal> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// crypto: sessions per window (set by the loader).
#[no_mangle]
static SW_MON_SESSIONS: u32 = 1;
/// crypto: one more than the highest possible CPU id (set by the loader).
#[no_mangle]
static SW_MON_NCPU: u32 = 1;

/// Per-CPU working memory: the session key of either family (both monitors).
#[repr(C)]
struct Work {
    key: SessKey,
    key4: SessKey4,
}

#[map(name = "SW_MON_WORK")]
static SW_MON_WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "SW_MON_AWAY")]
static SW_MON_AWAY: PerCpuArray<AwayRegs> = PerCpuArray::with_max_entries(2, 0);

/// A packet of session `key` turned away in buffer `b`: counted, and its session noted in
/// the buffer's sketch ([`statewall_common::monitor::MAP_MON_AWAY`]). The key's 32-bit
/// words are mixed into 64 bits (multiply and fold per word, then a finalizer); the top
/// [`AWAY_BITS`] pick a register, which keeps the largest rank (leading zeros + 1) of the
/// bits below.
#[inline(always)]
fn turned_away<K>(key: &K, b: u32) {
    bump(CNT_TURNED_AWAY);
    let words = key as *const K as *const u32;
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..core::mem::size_of::<K>() / 4 {
        // SAFETY: the key is 4-aligned and a whole number of words long.
        let w = unsafe { *words.add(i) } as u64;
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let i = (h >> (64 - AWAY_BITS)) as usize;
    let rank = ((h << AWAY_BITS) | (1 << (AWAY_BITS - 1))).leading_zeros() as u8 + 1;
    let Some(regs) = SW_MON_AWAY.get_ptr_mut(b) else {
        return;
    };
    // SAFETY: this CPU's sketch; `i` is below 2^AWAY_BITS, the array's length.
    let r = unsafe { &mut (*regs)[i & ((1 << AWAY_BITS) - 1)] };
    if *r < rank {
        *r = rank;
    }
}

#[inline(always)]
fn bump(i: u32) {
    if let Some(c) = SW_MON_STATS.get_ptr_mut(i) {
        unsafe { *c += 1 };
    }
}

extern "C" fn spin_cb(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the deadline on the caller's stack.
    let until = unsafe { *(ctx as *const u64) };
    (unsafe { bpf_ktime_get_ns() } >= until) as i64
}

/// Busy-waits `ns` (the held object only, see `crate::hold_ns`).
#[inline(never)]
fn spin(ns: u64) {
    let mut until = unsafe { bpf_ktime_get_ns() } + ns;
    unsafe {
        bpf_loop(
            1 << 20,
            spin_cb as *mut c_void,
            &mut until as *mut u64 as *mut c_void,
            0,
        )
    };
}

/// ddos: counts a session the packet made in buffer `b`, and notes an IPv6 one ([`CTL_V6`]).
#[inline(always)]
fn session_made(p: &PacketInfo, b: u32) {
    bump(CNT_SESSIONS);
    if p.family != 4 {
        if let Some(f) = SW_MON_CTL.get_ptr_mut(CTL_V6 + b) {
            unsafe { core::ptr::write_volatile(f, 1) };
        }
    }
}

#[inline(always)]
fn global(v: &'static u32) -> u32 {
    unsafe { core::ptr::read_volatile(v) }
}

// (The body in line, as for the main object's programs: see `main.rs`.)
#[classifier]
#[inline(always)]
pub fn sw_monitor(ctx: TcContext) -> i32 {
    let Some(p) = crate::pkt::scratch() else {
        return TCX_NEXT;
    };
    crate::pkt::parse_tc(&ctx, p);
    bump(CNT_PACKETS);
    let window = SW_MON_CTL.get(CTL_ACTIVE).copied().unwrap_or(0) as u32;
    let b = window & 1;
    let Some(w) = SW_MON_WORK.get_ptr_mut(0) else {
        return TCX_NEXT;
    };
    // SAFETY: this CPU's working memory.
    let w = unsafe { &mut *w };
    if global(&SW_MON_KIND) == KIND_DDOS {
        ddos(p, w, b);
    } else {
        crypto(p, w, window);
    }
    TCX_NEXT
}

/// Unix time in ns: the monotonic clock (`coarse`: its time at the last tick, 4 ms apart at
/// 250 Hz, without the TSC read that costs a VM a quarter of a crypto packet's time) plus
/// the offset user space wrote.
#[inline(always)]
fn now(coarse: bool) -> u64 {
    let epoch = SW_MON_CTL.get(CTL_EPOCH).copied().unwrap_or(0);
    let t = if coarse {
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        unsafe { bpf_ktime_get_ns() }
    };
    t.wrapping_add(epoch)
}

#[inline(always)]
fn ddos(p: &PacketInfo, w: &mut Work, b: u32) {
    if !ddos_wants(p) {
        bump(ignored_cause(p));
        return;
    }
    // (Keys in the per-CPU working memory: a key zeroed on the stack is a `memset` call.)
    if p.family == 4 {
        key4_into(p, &mut w.key4);
        let sess = if b == 0 {
            &SW_DDOS_SESS4_0
        } else {
            &SW_DDOS_SESS4_1
        };
        ddos_in(p, sess, &w.key4, b)
    } else {
        key_into(p, &mut w.key);
        let sess = if b == 0 {
            &SW_DDOS_SESS0
        } else {
            &SW_DDOS_SESS1
        };
        ddos_in(p, sess, &w.key, b)
    }
}

/// The ddos monitor on a packet of session `key` in table `sess` (of buffer `b`).
#[inline(always)]
fn ddos_in<K>(p: &PacketInfo, sess: &HashMap<K, DdosSess>, key: &K, b: u32) {
    let s = match sess.get_ptr_mut(key) {
        Some(s) => s,
        None => {
            let Some(ids) = SW_MON_CTL.get_ptr_mut(CTL_SESS + b) else {
                return;
            };
            let mut v = DdosSess {
                server: [0; 16],
                n_packets: 0,
                id: fetch_add(ids, 1) as u32,
                _pad: 0,
            };
            copy_bytes(&mut v.server, server_addr(p));
            // NOEXIST: another CPU may have made it in the meantime; then use theirs.
            if sess.insert(key, &v, BPF_NOEXIST as u64).is_ok() {
                session_made(p, b);
            }
            match sess.get_ptr_mut(key) {
                Some(s) => s,
                None => {
                    // Full: the session waits for the next window.
                    turned_away(key, b);
                    return;
                }
            }
        }
    };
    // Atomics: other CPUs count into the same session and claim slots of the same table.
    // A claim past a limit is given back, so `n_packets` ends as the packets recorded.
    let n = unsafe { core::ptr::addr_of_mut!((*s).n_packets) };
    let cap = global(&SW_MON_PER_SESSION) as u64;
    // A session that has its share costs no atomic (the common case in a flood).
    if unsafe { core::ptr::read_volatile(n) } >= cap {
        bump(CNT_SESSION_FULL);
        return;
    }
    if fetch_add(n, 1) >= cap {
        fetch_add(n, u64::MAX);
        bump(CNT_SESSION_FULL);
        return;
    }
    let Some(used) = SW_MON_CTL.get_ptr_mut(CTL_USED + b) else {
        return;
    };
    let slot = fetch_add(used, 1);
    if slot >= global(&SW_MON_TOTAL) as u64 {
        fetch_add(n, u64::MAX);
        bump(CNT_TABLE_FULL);
        return;
    }
    let pkts = if b == 0 {
        &SW_DDOS_PKTS0
    } else {
        &SW_DDOS_PKTS1
    };
    let Some(r) = pkts.get_ptr_mut(slot as u32) else {
        return;
    };
    // SAFETY: the slot is this packet's alone (claimed above).
    let r = unsafe { &mut *r };
    // SAFETY: `s` is the session's value, found above.
    r.sess = unsafe { (*s).id };
    // The clock is read only for packets that are recorded, and records keep it raw
    // (monotonic): the reader adds the Unix offset.
    fill_slot(p, unsafe { bpf_ktime_get_ns() }, r);
    r._pad = [0; 4];
}

#[inline(always)]
fn crypto(p: &PacketInfo, w: &mut Work, window: u32) {
    if !crypto_wants(p) {
        bump(ignored_cause(p));
        return;
    }
    if p.family == 4 {
        let first = key4_into(p, &mut w.key4);
        crypto_in(p, &SW_CRYPTO_IDX4, &w.key4, first, window)
    } else {
        let first = key_into(p, &mut w.key);
        crypto_in(p, &SW_CRYPTO_IDX, &w.key, first, window)
    }
}

/// A session key as the keys' table holds it.
trait SlotKey {
    /// Writes the key into `dst`, or with `void` a key of family 0 (a slot given up).
    fn store(&self, dst: *mut SessKey, void: bool);
}

impl SlotKey for SessKey4 {
    #[inline(always)]
    fn store(&self, dst: *mut SessKey, void: bool) {
        let s = self as *const SessKey4 as *const u32;
        let d = dst as *mut u32;
        // SAFETY: both 4-aligned; SessKey4 is 4 words (addresses, ports, tail), SessKey
        // 10 (two 4-word addresses, ports, tail).
        unsafe {
            core::ptr::write(d, *s);
            core::ptr::write(d.add(1), 0);
            core::ptr::write(d.add(2), 0);
            core::ptr::write(d.add(3), 0);
            core::ptr::write(d.add(4), *s.add(1));
            core::ptr::write(d.add(5), 0);
            core::ptr::write(d.add(6), 0);
            core::ptr::write(d.add(7), 0);
            core::ptr::write(d.add(8), *s.add(2));
            core::ptr::write(d.add(9), if void { 0 } else { *s.add(3) });
        }
    }
}

impl SlotKey for SessKey {
    #[inline(always)]
    fn store(&self, dst: *mut SessKey, void: bool) {
        let s = self as *const SessKey as *const u32;
        let d = dst as *mut u32;
        // SAFETY: both SessKey, 4-aligned, 10 words; the tail word is the last.
        unsafe {
            for i in 0..9 {
                core::ptr::write(d.add(i), *s.add(i));
            }
            core::ptr::write(d.add(9), if void { 0 } else { *s.add(9) });
        }
    }
}

/// The slot of session `key` in `window`, taking one if its index entry is missing or
/// stale; `None` when the window's slots are all taken (the session is turned away).
///
/// A new slot is claimed by a fetch-and-add on the buffer's count, the index entry made
/// (`NOEXIST`) or renewed (compare-and-swap from the stale entry), then the slot's key
/// written. A program that loses that race to another CPU gives its slot up (its key's
/// family 0) and uses the winner's. An entry of another window is stale, a later one too
/// (a program still running in the window before a switch): renewing that costs the
/// session a second slot in the later window, which the read merges.
#[inline(always)]
fn crypto_slot<K: SlotKey>(idx: &LruHashMap<K, u64>, key: &K, window: u32) -> Option<u32> {
    let b = window & 1;
    let cap = global(&SW_MON_SESSIONS);
    // The stale entry and what it holds, or null and 0. Both defined on every path: with an
    // `Option` of the pair, LLVM spilled the unset half on the `None` path, and the
    // verifier refuses reading a register that was never written.
    let (e, old) = match idx.get_ptr_mut(key) {
        Some(e) => {
            // SAFETY: the entry's value, a u64 written whole.
            let v = unsafe { core::ptr::read_volatile(e) };
            if let Some(s) = slot_in(v, window) {
                return Some(s);
            }
            (e, v)
        }
        None => (core::ptr::null_mut(), 0),
    };
    let count = SW_MON_CTL.get_ptr_mut(CTL_SESS + b)?;
    // A full window costs a read, not an atomic (the common case in a flood).
    if unsafe { core::ptr::read_volatile(count) } >= cap as u64 {
        turned_away(key, b);
        return None;
    }
    let s = fetch_add(count, 1);
    if s >= cap as u64 {
        turned_away(key, b);
        return None;
    }
    let s = s as u32;
    let k = SW_CRYPTO_KEYS.get_ptr_mut(b * cap + s)?;
    let mine = slot_word(window, s);
    let won = if e.is_null() {
        idx.insert(key, mine, BPF_NOEXIST as u64).is_ok()
    } else {
        cmpxchg(e, old, mine) == old
    };
    if !won {
        // Another CPU made or renewed the entry first: its slot, if it is this window's
        // (this one given up); else (evicted again, or a later window's) this slot stays
        // the packet's, unpublished, and the read merges it with the session's other.
        if let Some(e) = idx.get_ptr_mut(key) {
            // SAFETY: as above.
            if let Some(theirs) = slot_in(unsafe { core::ptr::read_volatile(e) }, window) {
                key.store(k, true);
                return Some(theirs);
            }
        }
    }
    key.store(k, false);
    // (Not `session_made`: both families share the slots, and no read looks for IPv6.)
    bump(CNT_SESSIONS);
    Some(s)
}

/// The crypto monitor on a packet of session `key` (index `idx`); `first` as [`key_into`]
/// returned; `window` the window's number.
///
/// A CPU's first packet of a session is timed by the precise clock, the others by the
/// coarse one: the merge of a session's per-CPU values takes the server from the CPU that
/// saw it first, which two first packets in one tick would tie on (a SYN's CPU and a
/// later packet's); its last time is kept to a tick (`crypto_add` keeps the latest).
#[inline(always)]
fn crypto_in<K: SlotKey>(
    p: &PacketInfo,
    idx: &LruHashMap<K, u64>,
    key: &K,
    first: bool,
    window: u32,
) {
    let Some(s) = crypto_slot(idx, key, window) else {
        return;
    };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let ncpu = global(&SW_MON_NCPU);
    if cpu >= ncpu {
        return;
    }
    let i = crypto_value_index(window & 1, cpu, ncpu, global(&SW_MON_SESSIONS), s);
    let Some(v) = SW_CRYPTO_VALS.get_ptr_mut(i) else {
        return;
    };
    // SAFETY: this CPU's value of the session (no other CPU writes it).
    let v = unsafe { &mut *v };
    let d = crate::hold_ns();
    if d != 0
        && SW_MON_STATS
            .get(CNT_PACKETS)
            .is_some_and(|n| *n & 1023 == 0)
    {
        spin(d as u64);
    }
    let ts = now(v.start_ts != 0);
    crypto_add_from(p, first, ts, v);
}
