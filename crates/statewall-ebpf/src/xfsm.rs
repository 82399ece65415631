//! The `xfsm` stage: runs `statewall_common::xfsm::step` (the same code the tests use as the
//! reference) over the BPF maps below.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use statewall_common::{
    maps::{GrantKey, GrantValue, GRANT_BY_XFSM},
    mem::{copy_words, zero_words},
    parse::PacketInfo,
    xfsm::{
        acts::{ActSet, SwitchDef, EVENTS_PER_SEC, MAX_ACT_SETS, MAX_SWITCHES},
        begin, begin_switch, commit_machine, finish,
        regs::{
            CondSet, FlowRegs, GlobalRegs, UpdSet, FLOW_REGS, GLOBAL_REGS, MAX_UPD_SETS,
            REGS_ENTRIES,
        },
        run_machine, Counter, Ctx, Event, GrantOutcome, GrantSet, LockKey, LockVal, Machine,
        Payload, RegsOutcome, StateKey, StateVal, Tables, Trans, TransKey, Work, ACTIVE_BUCKETS,
        ADDR_BUCKETS, COUNTERS, CTL_FIXED_FULL, CTL_LEN, MAX_GRANT_SETS, MAX_MACHINES,
        MAX_PAYLOADS, MAX_TRANS_COUNTERS, ONCE_MAX, PAYLOAD_MAX, PAYLOAD_NONE, PORTS_PER_GEN,
        RUN_DROP, RUN_GRANT, TABLE_FIXED,
    },
};

use crate::gate::SW_GATE_GRANTS;

#[map(name = "SW_XFSM_MACH")]
static SW_XFSM_MACH: Array<Machine> = Array::with_max_entries(2 * MAX_MACHINES as u32, 0);
#[map(name = "SW_XFSM_TRANS")]
static SW_XFSM_TRANS: HashMap<TransKey, Trans> = HashMap::with_max_entries(8192, 0);
#[map(name = "SW_XFSM_PORTS")]
static SW_XFSM_PORTS: Array<u16> = Array::with_max_entries(2 * PORTS_PER_GEN, 0);
#[map(name = "SW_XFSM_GSETS")]
static SW_XFSM_GSETS: Array<GrantSet> = Array::with_max_entries(2 * MAX_GRANT_SETS, 0);
#[map(name = "SW_XFSM_CTL")]
static SW_XFSM_CTL: Array<u32> = Array::with_max_entries(CTL_LEN, 0);
/// LRU: eviction sends a source back to DEFAULT (a knock in progress starts over).
#[map(name = "SW_XFSM_STATES")]
static SW_XFSM_STATES: LruHashMap<StateKey, StateVal> = LruHashMap::with_max_entries(65536, 0);
/// States of machines with `table = "fixed"`: preallocated, never evicted.
#[map(name = "SW_XFSM_FSTATES")]
static SW_XFSM_FSTATES: HashMap<StateKey, StateVal> = HashMap::with_max_entries(16384, 0);
/// Registers of machines with `table = "fixed"`.
#[map(name = "SW_XFSM_FREGS")]
static SW_XFSM_FREGS: HashMap<StateKey, FlowRegs> = HashMap::with_max_entries(16384, 0);
/// Preallocated, not LRU: a flood cannot evict a lockout.
#[map(name = "SW_XFSM_LOCKS")]
static SW_XFSM_LOCKS: HashMap<LockKey, LockVal> = HashMap::with_max_entries(16384, 0);
#[map(name = "SW_XFSM_ONCE")]
static SW_XFSM_ONCE: HashMap<u64, u8> = HashMap::with_max_entries(ONCE_MAX, 0);
#[map(name = "SW_XFSM_ACTIVE")]
static SW_XFSM_ACTIVE: Array<u64> = Array::with_max_entries(ACTIVE_BUCKETS, 0);
#[map(name = "SW_XFSM_AACT")]
static SW_XFSM_AACT: Array<u64> = Array::with_max_entries(ADDR_BUCKETS, 0);
#[map(name = "SW_XFSM_STATS")]
static SW_XFSM_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);
#[map(name = "SW_XFSM_TCOUNT")]
static SW_XFSM_TCOUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_TRANS_COUNTERS, 0);
#[map(name = "SW_XFSM_PAYLD")]
static SW_XFSM_PAYLD: Array<Payload> = Array::with_max_entries(2 * MAX_PAYLOADS, 0);
/// Conditions per (generation, machine).
#[map(name = "SW_XFSM_CONDS")]
static SW_XFSM_CONDS: Array<CondSet> = Array::with_max_entries(2 * MAX_MACHINES as u32, 0);
/// Update sets per generation.
#[map(name = "SW_XFSM_UPD")]
static SW_XFSM_UPD: Array<UpdSet> = Array::with_max_entries(2 * MAX_UPD_SETS, 0);
/// Per-flow registers. LRU: an evicted flow's registers start over at 0.
#[map(name = "SW_XFSM_REGS")]
static SW_XFSM_REGS: LruHashMap<StateKey, FlowRegs> = LruHashMap::with_max_entries(REGS_ENTRIES, 0);
/// Global registers per machine (not per generation: they live across reloads).
#[map(name = "SW_XFSM_GLOBALS")]
static SW_XFSM_GLOBALS: Array<GlobalRegs> = Array::with_max_entries(MAX_MACHINES as u32, 0);
/// Action sets per generation.
#[map(name = "SW_XFSM_ACTS")]
static SW_XFSM_ACTS: Array<ActSet> = Array::with_max_entries(2 * MAX_ACT_SETS, 0);
/// Per CPU and machine: (second, action events sent in it).
#[map(name = "SW_XFSM_EVRATE")]
static SW_XFSM_EVRATE: PerCpuArray<[u64; 2]> =
    PerCpuArray::with_max_entries(MAX_MACHINES as u32, 0);
/// Switch definitions.
#[map(name = "SW_SWITCH")]
pub(crate) static SW_SWITCH: Array<SwitchDef> = Array::with_max_entries(MAX_SWITCHES, 0);
/// Interface index -> switch id.
#[map(name = "SW_SWITCH_IF")]
pub(crate) static SW_SWITCH_IF: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);
#[map(name = "SW_XFSM_EVENTS")]
static SW_XFSM_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

const E2BIG: i32 = 7;
const BPF_NOEXIST: u64 = 1;
/// Attempts at a register lock before the update is given up (counted `regs_busy`).
const LOCK_TRIES: u32 = 128;

/// Takes a lock word (0 -> 1 by compare-and-swap); false when it stayed taken.
#[inline(always)]
pub(crate) fn lock(p: *mut u64) -> bool {
    let mut i = 0;
    while i < LOCK_TRIES {
        let mut old: u64 = 0;
        // SAFETY: `p` points at a lock word in a map value.
        unsafe {
            core::arch::asm!(
                "r0 = cmpxchg_64({p} + 0, r0, {new})",
                p = in(reg) p,
                new = in(reg) 1u64,
                inout("r0") old,
            );
        }
        if old == 0 {
            return true;
        }
        i += 1;
    }
    false
}

/// Releases a lock word taken by [`lock`].
#[inline(always)]
pub(crate) fn unlock(p: *mut u64) {
    let mut z: u64 = 0;
    // SAFETY: as for `lock`.
    unsafe {
        core::arch::asm!(
            "{z} = xchg_64({p} + 0, {z})",
            p = in(reg) p,
            z = inout(reg) z,
        );
    }
    let _ = z;
}

/// The kernel's tables. `regs`: the per-flow register entry [`Tables::flow_regs`] found in
/// this machine's run (null if none), for the update that follows at the same key. A
/// `Maps` lives for one global function's call (one machine's run or commit), so what it
/// keeps never outlives the RCU section of the program. As with any map value held
/// between a lookup and a write, an LRU eviction on another CPU in between can hand the
/// entry to another flow (which then gets this packet's updates); keeping it from the
/// conditions to the updates widens that window by the transition's own work.
struct Maps {
    regs: core::cell::Cell<*mut FlowRegs>,
}

impl Maps {
    #[inline(always)]
    fn new() -> Self {
        Maps {
            regs: core::cell::Cell::new(core::ptr::null_mut()),
        }
    }
}

#[inline(always)]
fn arr<T: Copy + Default>(a: &Array<T>, i: u32) -> T {
    match a.get(i) {
        Some(v) => *v,
        None => T::default(),
    }
}

impl Tables for Maps {
    #[inline(always)]
    fn ctl(&self, idx: u32) -> u32 {
        arr(&SW_XFSM_CTL, idx)
    }
    #[inline(always)]
    fn set_ctl(&mut self, idx: u32, v: u32) {
        if let Some(p) = SW_XFSM_CTL.get_ptr_mut(idx) {
            unsafe { *p = v };
        }
    }
    #[inline(always)]
    fn machine(&self, generation: u32, m: usize) -> Machine {
        arr(&SW_XFSM_MACH, generation * MAX_MACHINES as u32 + m as u32)
    }
    #[inline(always)]
    fn machine_into(&self, generation: u32, m: usize, out: &mut Machine) {
        match SW_XFSM_MACH.get(generation * MAX_MACHINES as u32 + m as u32) {
            Some(v) => copy_words(out, v),
            None => zero_words(out),
        }
    }
    #[inline(always)]
    fn trans_into(&self, k: &TransKey, out: &mut Trans) -> bool {
        match unsafe { SW_XFSM_TRANS.get(k) } {
            Some(v) => {
                copy_words(out, v);
                true
            }
            None => false,
        }
    }
    #[inline(always)]
    fn ports(&self, generation: u32, port: u16) -> u16 {
        arr(&SW_XFSM_PORTS, generation * PORTS_PER_GEN + port as u32)
    }
    #[inline(always)]
    fn trans(&self, k: &TransKey) -> Option<Trans> {
        unsafe { SW_XFSM_TRANS.get(k) }.copied()
    }
    #[inline(always)]
    fn grant_set(&self, generation: u32, set: u8) -> GrantSet {
        arr(&SW_XFSM_GSETS, generation * MAX_GRANT_SETS + set as u32)
    }
    #[inline(always)]
    fn active(&self, b: u32) -> u64 {
        arr(&SW_XFSM_ACTIVE, b)
    }
    #[inline(always)]
    fn set_active(&mut self, b: u32, until: u64) {
        if let Some(p) = SW_XFSM_ACTIVE.get_ptr_mut(b) {
            unsafe { *p = until };
        }
    }
    #[inline(always)]
    fn addr_active(&self, b: u32) -> u64 {
        arr(&SW_XFSM_AACT, b)
    }
    #[inline(always)]
    fn set_addr_active(&mut self, b: u32, until: u64) {
        if let Some(p) = SW_XFSM_AACT.get_ptr_mut(b) {
            unsafe { *p = until };
        }
    }
    #[inline(always)]
    fn state(&mut self, k: &StateKey) -> Option<StateVal> {
        if k.table == TABLE_FIXED {
            return unsafe { SW_XFSM_FSTATES.get(k) }.copied();
        }
        unsafe { SW_XFSM_STATES.get(k) }.copied()
    }
    #[inline(always)]
    fn state_into(&mut self, k: &StateKey, out: &mut StateVal) -> bool {
        let v = if k.table == TABLE_FIXED {
            unsafe { SW_XFSM_FSTATES.get(k) }
        } else {
            unsafe { SW_XFSM_STATES.get(k) }
        };
        match v {
            Some(v) => {
                copy_words(out, v);
                true
            }
            None => false,
        }
    }
    #[inline(always)]
    fn put_state(&mut self, k: &StateKey, v: &StateVal) {
        if k.table != TABLE_FIXED {
            let _ = SW_XFSM_STATES.insert(k, v, 0);
        } else if SW_XFSM_FSTATES.insert(k, v, 0).is_err() {
            // No room: the new flow stays DEFAULT, and `table_full` holds for new flows
            // until user space sees room again.
            self.count(Counter::TableFull);
            self.set_ctl(CTL_FIXED_FULL, 1);
        }
    }
    #[inline(always)]
    fn del_state(&mut self, k: &StateKey) {
        if k.table == TABLE_FIXED {
            let _ = SW_XFSM_FSTATES.remove(k);
        } else {
            let _ = SW_XFSM_STATES.remove(k);
        }
    }
    #[inline(always)]
    fn lock(&self, k: &LockKey) -> Option<LockVal> {
        unsafe { SW_XFSM_LOCKS.get(k) }.copied()
    }
    #[inline(always)]
    fn put_lock(&mut self, k: &LockKey, v: &LockVal) -> bool {
        SW_XFSM_LOCKS.insert(k, v, 0).is_ok()
    }
    #[inline(always)]
    fn payload_matches(&self, generation: u32, idx: u8) -> bool {
        let i = generation * MAX_PAYLOADS + (idx as u32).wrapping_sub(1) % MAX_PAYLOADS;
        match (SW_XFSM_PAYLD.get(i), SW_XFSM_WORK.get(0)) {
            (Some(pat), Some(w)) => pat.same(&w.snap),
            _ => false,
        }
    }
    #[inline(always)]
    fn take_once(&mut self, key: u64) -> bool {
        SW_XFSM_ONCE.remove(&key).is_ok()
    }
    #[inline(always)]
    fn grant(&mut self, k: &GrantKey, expires_ns: u64) -> GrantOutcome {
        let mut exp = expires_ns;
        if let Some(cur) = unsafe { SW_GATE_GRANTS.get(k) } {
            if cur.expires_ns > exp {
                exp = cur.expires_ns;
            }
        }
        let v = GrantValue {
            expires_ns: exp,
            origin: GRANT_BY_XFSM,
            _pad: 0,
        };
        match SW_GATE_GRANTS.insert(k, &v, 0) {
            Ok(()) => GrantOutcome::Granted,
            Err(e) if e == -E2BIG => GrantOutcome::Full,
            Err(_) => GrantOutcome::Failed,
        }
    }
    #[inline(always)]
    fn revoke(&mut self, k: &GrantKey) {
        let _ = SW_GATE_GRANTS.remove(k);
    }
    #[inline(always)]
    fn allowed(&mut self, p: &PacketInfo) -> bool {
        crate::detect::allowed(p)
    }
    #[inline(always)]
    fn count(&mut self, c: Counter) {
        if let Some(p) = SW_XFSM_STATS.get_ptr_mut(c as u32) {
            unsafe { *p += 1 };
        }
    }
    #[inline(always)]
    fn count_trans(&mut self, idx: u32) {
        if let Some(p) = SW_XFSM_TCOUNT.get_ptr_mut(idx) {
            unsafe { *p += 1 };
        }
    }
    #[inline(always)]
    fn event<F: FnOnce(&mut Event)>(&mut self, fill: F) {
        match SW_XFSM_EVENTS.reserve_bytes(core::mem::size_of::<Event>(), 0) {
            Some(mut entry) => {
                let e = entry.as_mut_ptr() as *mut Event;
                // SAFETY: the reservation holds one Event (8-byte aligned by the ring).
                unsafe {
                    zero_words(&mut *e);
                    fill(&mut *e);
                }
                entry.submit(0);
            }
            None => self.count(Counter::EventsLost),
        }
    }
    #[inline(always)]
    fn conds(&self, generation: u32, m: usize) -> Option<&CondSet> {
        SW_XFSM_CONDS.get(generation * MAX_MACHINES as u32 + m as u32)
    }
    #[inline(always)]
    fn act_set_into(&self, generation: u32, idx: u32, out: &mut ActSet) {
        match SW_XFSM_ACTS.get(generation * MAX_ACT_SETS + idx) {
            Some(a) => *out = *a,
            None => out.flags = 0,
        }
    }
    #[inline(always)]
    fn event_allowed(&mut self, m: usize, now: u64) -> bool {
        let Some(e) = SW_XFSM_EVRATE.get_ptr_mut(m as u32) else {
            return false;
        };
        let e = unsafe { &mut *e };
        let sec = now / 1_000_000_000;
        if e[0] != sec {
            e[0] = sec;
            e[1] = 0;
        }
        e[1] += 1;
        e[1] <= EVENTS_PER_SEC
    }
    #[inline(always)]
    fn flow_regs(&self, k: &StateKey, out: &mut [u64; FLOW_REGS]) {
        let v = if k.table == TABLE_FIXED {
            SW_XFSM_FREGS.get_ptr_mut(k)
        } else {
            SW_XFSM_REGS.get_ptr_mut(k)
        };
        match v {
            Some(v) => {
                self.regs.set(v);
                let mut i = 0;
                while i < FLOW_REGS {
                    // One 64-bit load each: a register is never seen half-written.
                    out[i] = unsafe { core::ptr::read_volatile(&(*v).r[i]) };
                    i += 1;
                }
            }
            None => {
                self.regs.set(core::ptr::null_mut());
                zero_words(out)
            }
        }
    }
    #[inline(always)]
    fn global_regs(&self, m: usize, out: &mut [u64; GLOBAL_REGS]) {
        match SW_XFSM_GLOBALS.get(m as u32) {
            Some(v) => {
                let mut i = 0;
                while i < GLOBAL_REGS {
                    out[i] = unsafe { core::ptr::read_volatile(&v.g[i]) };
                    i += 1;
                }
            }
            None => zero_words(out),
        }
    }
    #[inline(always)]
    fn update_regs<F: FnOnce(&UpdSet, &mut [u64; FLOW_REGS], &mut [u64; GLOBAL_REGS])>(
        &mut self,
        k: &StateKey,
        kept: bool,
        m: usize,
        flow: bool,
        generation: u32,
        set: u32,
        f: F,
    ) -> RegsOutcome {
        let Some(us) = SW_XFSM_UPD.get(generation * MAX_UPD_SETS + set) else {
            return RegsOutcome::Done;
        };
        let globals = us.globals != 0;
        // The per-CPU work slot's `zero` (nothing writes it): the zeroes a new flow's entry
        // is created from, not taken from the stack, which the combined XDP program has no
        // room left on; and the registers of a machine without per-flow ones.
        let Some(w) = SW_XFSM_WORK.get_ptr_mut(0) else {
            return RegsOutcome::Full;
        };
        let zero = unsafe { &raw mut (*w).zero };
        let p = if flow {
            let fixed = k.table == TABLE_FIXED;
            let get = |k: &StateKey| {
                if fixed {
                    SW_XFSM_FREGS.get_ptr_mut(k)
                } else {
                    SW_XFSM_REGS.get_ptr_mut(k)
                }
            };
            // The entry the conditions found, else a lookup.
            let kept = if kept {
                self.regs.replace(core::ptr::null_mut())
            } else {
                core::ptr::null_mut()
            };
            let mut p = if kept.is_null() { get(k) } else { Some(kept) };
            if p.is_none() {
                // A race with another CPU's insert is fine: the lookup below finds it.
                let z = unsafe { &*zero };
                let _ = if fixed {
                    SW_XFSM_FREGS.insert(k, z, BPF_NOEXIST)
                } else {
                    SW_XFSM_REGS.insert(k, z, BPF_NOEXIST)
                };
                p = get(k);
            }
            let Some(p) = p else {
                return RegsOutcome::Full;
            };
            p
        } else {
            zero
        };
        let Some(g) = SW_XFSM_GLOBALS.get_ptr_mut(m as u32) else {
            return RegsOutcome::Busy;
        };
        let (pl, gl) = unsafe { (&raw mut (*p).lock, &raw mut (*g).lock) };
        if flow && !lock(pl) {
            return RegsOutcome::Busy;
        }
        if globals && !lock(gl) {
            if flow {
                unlock(pl);
            }
            return RegsOutcome::Busy;
        }
        unsafe { f(us, &mut (*p).r, &mut (*g).g) };
        if globals {
            unlock(gl);
        }
        if flow {
            unlock(pl);
        }
        RegsOutcome::Done
    }
}

/// Per-CPU working memory of a machine step (kept off the stack).
#[map(name = "SW_XFSM_WORK")]
static SW_XFSM_WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);

fn ctx_of(p: &PacketInfo, now: u64, packed: u64) -> Ctx<'_> {
    Ctx::unpack(p, now, packed)
}

/// Captures the packet's UDP payload into the per-CPU work slot's `snap` with `load(dst, offset,
/// len, max)`, which copies `len` bytes (1..=max) of the packet from `offset`.
/// Returns false when that fails (the payload then matches no pattern).
#[inline(always)]
fn capture<L: FnOnce(*mut u8, u32, u32, u32) -> bool>(p: &PacketInfo, load: L) -> bool {
    let Some(w) = SW_XFSM_WORK.get_ptr_mut(0) else {
        return false;
    };
    let snap = unsafe { &mut (*w).snap };
    let mut i = 0;
    while i < PAYLOAD_MAX / 8 {
        unsafe { core::ptr::write_volatile(&mut snap.words[i], 0) };
        i += 1;
    }
    let len = p.payload_len as u32;
    snap.len = PAYLOAD_NONE;
    if len as usize > PAYLOAD_MAX {
        return false;
    }
    if len > 0
        && !load(
            snap.words.as_mut_ptr() as *mut u8,
            p.payload_off as u32,
            len,
            PAYLOAD_MAX as u32,
        )
    {
        return false;
    }
    snap.len = len;
    true
}

/// One machine, as a BPF global function: the verifier checks its body once, on its own,
/// instead of inside every path of its caller (which exceeded the 1M-instruction budget).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sw_xfsm_machine(
    p: *const PacketInfo,
    now: u64,
    packed: u64,
    m: u64,
    w: *mut Work,
) -> u64 {
    if p.is_null() || w.is_null() {
        return 0;
    }
    let c = ctx_of(unsafe { &*p }, now, packed);
    run_machine(
        &mut Maps::new(),
        &c,
        (m & (MAX_MACHINES as u64 - 1)) as usize,
        unsafe { &mut *w },
    )
}

/// The state write of one machine, as a global function of its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sw_xfsm_commit(p: *const PacketInfo, m: u64, w: *mut Work) -> u64 {
    if p.is_null() || w.is_null() {
        return 0;
    }
    // Only the packet is read: the machine, deadlines and keys are in `w`.
    let c = ctx_of(unsafe { &*p }, 0, 0);
    commit_machine(
        &mut Maps::new(),
        &c,
        (m & (MAX_MACHINES as u64 - 1)) as usize,
        unsafe { &mut *w },
    );
    0
}

/// [`run`]'s result bit: a machine dropped the packet. Otherwise the result is the
/// actions' `act` bits (0: none; [`actions`] has their values).
pub const DROPPED: u32 = 1 << 31;

/// Runs the machines of `packed` on the packet `p` (in the per-CPU scratch slot) and ends
/// it: [`DROPPED`], or the actions taken.
#[inline(always)]
fn run_machines(p: &PacketInfo, now: u64, packed: u64) -> u32 {
    let Some(w) = SW_XFSM_WORK.get_ptr_mut(0) else {
        return 0;
    };
    // `p` is the per-CPU scratch slot (every caller's), the map value the global functions
    // below take.
    let pp = p as *const PacketInfo;
    // A packet's metadata and actions start empty (the per-CPU working memory holds the
    // last packet's).
    unsafe {
        (*w).meta = 0;
        (*w).fx = 0;
    }
    // The enabled machines in order, each a call of the global functions below: a plain
    // loop rather than `bpf_loop`, whose callback was one call and return more per machine
    // (each return costs the CPU's return-stack mitigation where it has one).
    let mask = (packed >> 32) & 0xff;
    let (mut drop, mut grant) = (0u64, 0u64);
    let mut m = 0u64;
    while m < MAX_MACHINES as u64 && mask >> m != 0 {
        if mask & (1 << m) != 0 {
            let r = sw_xfsm_machine(pp, now, packed, m, w);
            // (The commit's own first test, without the call: most packets leave nothing
            // to write.)
            if unsafe { (*w).write != 0 || (*w).tr.upd != 0 } {
                sw_xfsm_commit(pp, m, w);
            }
            drop |= r & RUN_DROP;
            if r & RUN_GRANT != 0 {
                grant = r;
            }
        }
        m += 1;
    }
    // (The test `finish` makes first, here: a call less for the packets that open nothing.)
    if grant & RUN_GRANT != 0 {
        finish(&mut Maps::new(), &ctx_of(p, now, packed), grant);
    }
    if drop != 0 {
        return DROPPED;
    }
    unsafe { (*w).fx & !DROPPED }
}

/// The values of the actions [`run`] returned: (mark, DSCP, forward interface (0 =
/// flood)).
#[inline(always)]
pub fn actions() -> (u32, u32, u32) {
    match SW_XFSM_WORK.get(0) {
        Some(w) => (w.mark, w.dscp, w.fwd),
        None => (0, 0, 0),
    }
}

/// Runs the stage on the packet in the scratch slot, travelling in direction `dir`:
/// [`DROPPED`], or the actions to take (0 = none: hand it on). Same pieces as
/// `statewall_common::xfsm::step`, with a global function for each machine's run and
/// commit; `load` copies payload bytes when a transition needs them.
#[inline(always)]
pub fn run<L: FnOnce(*mut u8, u32, u32, u32) -> bool>(p: &PacketInfo, dir: u8, load: L) -> u32 {
    let (packed, now) = match begin(&mut Maps::new(), p, dir, crate::clock::now_ns_of) {
        Some(mut c) => {
            if c.snap {
                c.snap = capture(p, load);
            }
            (c.pack(), c.now)
        }
        None => return 0,
    };
    run_machines(p, now, packed)
}

/// Runs switch `sw`'s machines on a frame that arrived on one of its ports (IP or not):
/// as [`run`].
#[inline(always)]
pub fn run_switch(p: &PacketInfo, sw: &SwitchDef) -> u32 {
    let (packed, now) = match begin_switch(&mut Maps::new(), p, sw, crate::clock::now_ns_of) {
        Some(c) => (c.pack(), c.now),
        None => return 0,
    };
    run_machines(p, now, packed)
}
