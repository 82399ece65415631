//! The `firewall` stage: the first matching rule of the packet's chain (instance of the
//! interface, direction of the hook) decides; same steps as `statewall_common::firewall`, with
//! `bpf_loop` walking the candidate words.

use aya_ebpf::{
    cty::c_void,
    helpers::generated::bpf_loop,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use statewall_common::{
    ct::{self, CtConf, CtKey, CtVal},
    firewall::{
        packet::{and_word, ports_of, select, tcp_flags_of, FwTables, Selection},
        rule_slot, stats_slot, Bitset, ChainConf, FwGuard, FwLog, LinChain, LinRule, LpmKey,
        RuleStats, ACT_DROP, ACT_LOG, CNT_CT_CREATED, CNT_LOG_LOST, CNT_LOG_QUEUED, COUNTERS,
        IFACE_INSTANCE, IFACE_PRESENT, IFACE_XDP, IFIDX_SLOTS, LINEAR_MAX, LIN_ANY_CT, MAX_CHAINS,
        MAX_RULES, NO_SET, SINGLE, SMALL_PER_CHAIN, SUMMARY, V4_BLOCK, V4_CHILD_SHIFT,
        V4_DEFAULT_BLOCKS, V4_LEVELS, V4_STRIDE, V4_VALUE, WORDS,
    },
    maps::BPF_F_MMAPABLE,
    mem::{addr_word, copy_bytes},
    parse::{PacketInfo, Status},
    TCX_NEXT, TC_ACT_SHOT,
};

#[map(name = "SW_FW_CTL")]
static SW_FW_CTL: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "SW_FW_CHAINS")]
static SW_FW_CHAINS: Array<ChainConf> = Array::with_max_entries(2 * MAX_CHAINS, 0);
#[map(name = "SW_FW_IFACES")]
static SW_FW_IFACES: HashMap<u32, u32> = HashMap::with_max_entries(256, 0);
#[map(name = "SW_FW_IFIDX")]
static SW_FW_IFIDX: Array<u32> = Array::with_max_entries(IFIDX_SLOTS, 0);

/// The entry of interface `ifindex` (instance and flags), if a firewall instance is there:
/// an array read for most interfaces, a hash lookup for the others.
#[inline(always)]
fn iface(ifindex: u32) -> Option<u32> {
    match statewall_common::firewall::ifidx_slot(ifindex) {
        Some(slot) => {
            let v = SW_FW_IFIDX.get(slot).copied().unwrap_or(0);
            if v & IFACE_PRESENT != 0 {
                Some(v)
            } else {
                None
            }
        }
        None => unsafe { SW_FW_IFACES.get(&ifindex) }.copied(),
    }
}
/// Sized by the loader (`[firewall] bitsets_max`). It and the port tables are mappable: user
/// space writes a batch of thousands of entries through a memory map.
#[map(name = "SW_FW_BITSETS")]
static SW_FW_BITSETS: Array<Bitset> = Array::with_max_entries(1024, BPF_F_MMAPABLE);
#[map(name = "SW_FW_SRC")]
static SW_FW_SRC: LpmTrie<[u8; 20], u32> = LpmTrie::with_max_entries(65536, 1);
#[map(name = "SW_FW_DST")]
static SW_FW_DST: LpmTrie<[u8; 20], u32> = LpmTrie::with_max_entries(65536, 1);
#[map(name = "SW_FW_V4")]
static SW_FW_V4: Array<statewall_common::firewall::V4Block> =
    Array::with_max_entries(V4_DEFAULT_BLOCKS, BPF_F_MMAPABLE);
#[map(name = "SW_FW_SPORT")]
static SW_FW_SPORT: Array<u16> = Array::with_max_entries(2 * MAX_CHAINS * 65536, BPF_F_MMAPABLE);
#[map(name = "SW_FW_DPORT")]
static SW_FW_DPORT: Array<u16> = Array::with_max_entries(2 * MAX_CHAINS * 65536, BPF_F_MMAPABLE);
#[map(name = "SW_FW_SMALL")]
static SW_FW_SMALL: Array<u16> = Array::with_max_entries(2 * MAX_CHAINS * SMALL_PER_CHAIN, 0);
#[map(name = "SW_FW_ACTIONS")]
static SW_FW_ACTIONS: Array<u8> = Array::with_max_entries(2 * MAX_CHAINS * MAX_RULES as u32, 0);
#[map(name = "SW_FW_RULEID")]
static SW_FW_RULEID: Array<u16> = Array::with_max_entries(2 * MAX_CHAINS * MAX_RULES as u32, 0);
/// Written and read by user space only (no program reads it): the rules' order.
#[map(name = "SW_FW_RANK")]
static SW_FW_RANK: Array<u32> = Array::with_max_entries(2 * MAX_CHAINS * MAX_RULES as u32, 0);
/// The rules of small chains, read one by one.
#[map(name = "SW_FW_LINEAR")]
static SW_FW_LINEAR: Array<LinChain> = Array::with_max_entries(2 * MAX_CHAINS, 0);
/// LRU: when full, the least recently seen connections go first.
#[map(name = "SW_FW_CT")]
static SW_FW_CT: LruHashMap<CtKey, CtVal> = LruHashMap::with_max_entries(65536, 0);
#[map(name = "SW_FW_CT_CONF")]
static SW_FW_CT_CONF: Array<CtConf> = Array::with_max_entries(1, 0);
#[map(name = "SW_FW_STATS")]
static SW_FW_STATS: PerCpuArray<RuleStats> =
    PerCpuArray::with_max_entries(MAX_CHAINS * MAX_RULES as u32, 0);

/// LOG rule hits, for the daemon's log and event stream.
/// Classifications entered and left on each CPU ([`FwGuard`]).
#[map(name = "SW_FW_GUARD")]
static SW_FW_GUARD: PerCpuArray<FwGuard> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero when the guard's `exit` may be a plain add: the CPU never makes a store
/// visible before the loads that precede it (x86's total store order) and no
/// classification can be preempted by another on its CPU (not a PREEMPT_RT kernel). Set
/// by the loader (`statewall::engine::ebpf::loader`, from the running kernel); read-only,
/// so the verifier keeps only the branch it selects.
#[no_mangle]
static SW_FW_STORES_ORDERED: u32 = 0;

#[map(name = "SW_FW_LOG")]
static SW_FW_LOG: RingBuf = RingBuf::with_byte_size(1 << 18, 0);
#[map(name = "SW_FW_COUNTERS")]
static SW_FW_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

/// The tables; `DIRECT`: IPv4 prefixes are read through the direct table where their field
/// has a root (else, and in the program that carries every ingress stage in XDP, whose
/// maps are at the kernel's limit of 64 per program, through the tries, which hold every
/// prefix as well).
struct Maps<const DIRECT: bool>;

impl<const DIRECT: bool> FwTables for Maps<DIRECT> {
    #[inline(always)]
    fn generation(&self) -> u32 {
        SW_FW_CTL.get(0).copied().unwrap_or(0) & 1
    }
    #[inline(always)]
    fn chain(&self, generation: u32, chain: u32) -> ChainConf {
        SW_FW_CHAINS
            .get((generation & 1) * MAX_CHAINS + chain)
            .copied()
            .unwrap_or_default()
    }
    #[inline(always)]
    fn prefix(&self, dst: bool, k: &LpmKey) -> Option<u32> {
        if DIRECT && k.family == 4 {
            let slot = statewall_common::firewall::v4root_slot(k.chain as u32, dst);
            let root = SW_FW_V4
                .get(k.generation as u32 & 1)
                .map_or(0, |b| b[slot & (V4_BLOCK - 1)]);
            if root != 0 {
                return v4_lookup(root, &k.addr);
            }
        }
        // SAFETY: LpmKey is repr(C): 4 bytes of generation, chain, family, pad, then 16.
        let mut data = [0u8; 20];
        data[0] = k.generation;
        data[1] = k.chain;
        data[2] = k.family;
        data[4..].copy_from_slice(&k.addr);
        let key = Key::new(k.prefixlen, data);
        let t = if dst { &SW_FW_DST } else { &SW_FW_SRC };
        t.get(&key).copied()
    }
    #[inline(always)]
    fn port(&self, dst: bool, slot: u32) -> u32 {
        let a = if dst { &SW_FW_DPORT } else { &SW_FW_SPORT };
        a.get(slot).copied().unwrap_or(0) as u32
    }
    #[inline(always)]
    fn small(&self, slot: u32) -> u32 {
        SW_FW_SMALL.get(slot).copied().unwrap_or(0) as u32
    }
    #[inline(always)]
    fn word(&self, id: u32, summary: bool, w: usize) -> u64 {
        match SW_FW_BITSETS.get(id) {
            Some(b) => {
                if summary {
                    if w < SUMMARY {
                        b.summary[w]
                    } else {
                        0
                    }
                } else if w < WORDS {
                    b.words[w]
                } else {
                    0
                }
            }
            None => 0,
        }
    }
    #[inline(always)]
    fn action(&self, slot: u32) -> u8 {
        SW_FW_ACTIONS.get(slot).copied().unwrap_or(0)
    }
}

/// An IPv4 address's set in the direct table of the root whose first block is `root`:
/// its top 16 bits index the root, each further 8 bits a block, down to the last block on
/// its way; the deepest value found is the longest prefix's.
#[inline(always)]
fn v4_lookup(root: u32, addr: &[u8; 16]) -> Option<u32> {
    let a = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
    let top = a >> 16;
    let mut e = SW_FW_V4.get(root + (top >> V4_STRIDE))?[top as usize & (V4_BLOCK - 1)];
    let mut best = e & V4_VALUE;
    let mut i = 0;
    while i < V4_LEVELS {
        let child = e >> V4_CHILD_SHIFT;
        if child == 0 {
            break;
        }
        let at = (a >> (16 - V4_STRIDE * (i + 1))) as usize & (V4_BLOCK - 1);
        let Some(b) = SW_FW_V4.get(child) else {
            break;
        };
        e = b[at];
        if e & V4_VALUE != 0 {
            best = e & V4_VALUE;
        }
        i += 1;
    }
    best.checked_sub(1)
}

/// The summary words of set `id` (a one-rule set's come from its id). Three words, held in
/// registers: an array on the stack would be indexed by a variable or zeroed by a call.
#[inline(always)]
fn summary_of(id: u32) -> (u64, u64, u64) {
    const _: () = assert!(SUMMARY == 3);
    let r = id.wrapping_sub(SINGLE);
    if r < MAX_RULES as u32 {
        let (at, bit) = (r / 64 / 64, 1u64 << ((r / 64) % 64));
        let pick = |k: u32| if at == k { bit } else { 0 };
        return (pick(0), pick(1), pick(2));
    }
    match SW_FW_BITSETS.get(id) {
        Some(b) => (b.summary[0], b.summary[1], b.summary[2]),
        None => (0, 0, 0),
    }
}

/// The summary of the candidate rules: the words in which some rule may match, from each
/// selected field's set (with its wild set) read once for all summary words.
#[inline(always)]
fn summaries(sel: &Selection, all: u32) -> [u64; SUMMARY] {
    let (mut a0, mut a1, mut a2) = summary_of(all);
    // Read from memory: the verifier sees one unknown mask, not one path per combination.
    // SAFETY: a plain read of a field of a live reference.
    let fields = unsafe { core::ptr::read_volatile(&sel.fields) };
    let mut i = 0;
    while i < 7 {
        if fields & (1 << i) != 0 {
            let (mut f0, mut f1, mut f2) = summary_of(sel.ids[i]);
            if sel.wild[i] != NO_SET {
                let (w0, w1, w2) = summary_of(sel.wild[i]);
                (f0, f1, f2) = (f0 | w0, f1 | w1, f2 | w2);
            }
            (a0, a1, a2) = (a0 & f0, a1 & f1, a2 & f2);
        }
        i += 1;
    }
    [a0, a1, a2]
}

/// State of the word walk, in a per-CPU slot (the XDP ingress program runs the firewall
/// under the other stages' frames: the stack has no room for it), found again by the
/// `bpf_loop` callback (whose context may only point into the stack).
#[repr(C)]
struct Walk {
    sel: Selection,
    all: u32,
    generation: u32,
    chain: u32,
    /// Summary words still to visit (bits cleared as visited).
    acc: [u64; SUMMARY],
    /// The word in hand and its candidate rules not visited yet.
    word: u32,
    pending: u64,
    /// Result: rule + 1 (0 = none) and its action.
    rule: u32,
    action: u8,
    /// Connection state the rules see (for LOG events).
    st: u8,
    bytes: u64,
}

#[inline(always)]
fn bump(i: u32) {
    if let Some(c) = SW_FW_COUNTERS.get_ptr_mut(i) {
        unsafe { *c += 1 };
    }
}

/// Queues a LOG event for the rule of counter id `r` of `chain` about the packet being classified (the
/// per-CPU parsed packet: the callback cannot be handed a reference to it).
#[inline(always)]
fn log_event(chain: u32, r: u32, st: u8) {
    let Some(p) = crate::pkt::SW_SCRATCH.get(0) else {
        return;
    };
    let Some(mut e) = SW_FW_LOG.reserve::<FwLog>(0) else {
        bump(CNT_LOG_LOST);
        return;
    };
    let v = e.as_mut_ptr();
    // SAFETY: `v` is the reserved record, written field by field (no copy on the stack).
    unsafe {
        copy_bytes(&mut (*v).saddr, &p.saddr);
        copy_bytes(&mut (*v).daddr, &p.daddr);
        (*v).len = p.pkt_len;
        (*v).rule = r;
        (*v).sport = p.sport;
        (*v).dport = p.dport;
        (*v).chain = chain as u8;
        (*v).family = p.family;
        (*v).proto = p.l4proto;
        (*v).ct = st;
        (*v).tcp_flags = p.tcp_flags;
        (*v).icmp_type = p.icmp_type;
        (*v)._pad = [0; 2];
    }
    e.submit(0);
    bump(CNT_LOG_QUEUED);
}

/// The counter id of the rule at position `r` (its slot in `SW_FW_STATS`).
#[inline(always)]
fn counter_id(generation: u32, chain: u32, r: u32) -> u32 {
    SW_FW_RULEID
        .get(rule_slot(generation, chain, r))
        .copied()
        .unwrap_or(0) as u32
}

#[inline(always)]
fn count(chain: u32, id: u32, bytes: u64) {
    if let Some(s) = SW_FW_STATS.get_ptr_mut(stats_slot(chain, id)) {
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += bytes;
    }
}

/// `bpf_loop` callback, one step of the walk: the lowest candidate rule of the word in hand
/// (or of the next candidate word, lowest first). A LOG rule is counted and logged and the
/// walk goes on with the rest of its word at the next step (one LOG per step keeps the
/// callback free of loops the verifier would have to unroll); any other rule ends it.
extern "C" fn walk_cb(_i: u64, _ctx: *mut c_void) -> i64 {
    walk_step()
}

/// [`walk_cb`]'s step, also taken in line for the first candidate word (no call).
#[inline(always)]
fn walk_step() -> i64 {
    let Some(w) = SW_FW_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, used by one program at a time.
    let w = unsafe { &mut *w };
    let t = Maps::<false>;
    if w.pending == 0 {
        let mut sw = 0;
        while sw < SUMMARY && w.acc[sw] == 0 {
            sw += 1;
        }
        if sw >= SUMMARY {
            return 1;
        }
        let word = sw * 64 + w.acc[sw].trailing_zeros() as usize;
        w.acc[sw] &= w.acc[sw] - 1;
        w.word = word as u32;
        w.pending = and_word(&t, &w.sel, w.all, false, word);
        if w.pending == 0 {
            return 0;
        }
    }
    let r = w.word * 64 + w.pending.trailing_zeros();
    w.pending &= w.pending - 1;
    let a = t.action(rule_slot(w.generation, w.chain, r));
    if a == ACT_LOG {
        let id = counter_id(w.generation, w.chain, r);
        count(w.chain, id, w.bytes);
        log_event(w.chain, id, w.st);
        return 0;
    }
    w.rule = r + 1;
    w.action = a;
    1
}

/// Runs the chain of the packet's interface and direction: `TCX_NEXT` or `TC_ACT_SHOT`.
/// `xdp`: called from XDP. An ingress chain runs in the hook its interface's entry names
/// ([`IFACE_XDP`]); called from the other one, it lets the packet go on.
#[inline(always)]
pub fn run<const DIRECT: bool, L: Fn(*mut u8, u32, u32, u32) -> bool>(
    p: &PacketInfo,
    ifindex: u32,
    dir: u32,
    xdp: bool,
    load: L,
) -> i32 {
    let Some(inst) = iface(ifindex) else {
        return TCX_NEXT;
    };
    if dir & 1 == 0 && (inst & IFACE_XDP != 0) != xdp {
        return TCX_NEXT;
    }
    let chain = ((inst & IFACE_INSTANCE) * 2 + (dir & 1)) & (MAX_CHAINS - 1);
    // Entered and left, around every read of the tables: user space knows when no
    // classification that may have read the retired generation is still going on.
    let guard = SW_FW_GUARD.get_ptr_mut(0);
    if let Some(gp) = guard {
        // SAFETY: this CPU's slot; the atomic add is a full barrier (before ctl is read).
        crate::atomic::fetch_add(unsafe { &mut (*gp).enter }, 1);
    }
    let v = classify_chain::<DIRECT, L>(p, chain, &load);
    if let Some(gp) = guard {
        // SAFETY: as above (after the last table read).
        let e = unsafe { &raw mut (*gp).exit };
        if unsafe { core::ptr::read_volatile(&SW_FW_STORES_ORDERED) } != 0 {
            // A plain add, where the CPU keeps it after the table reads before it. Only
            // this CPU writes the slot, and only one classification at a time: a count
            // lost to two interleaved ones would leave `exit` behind `enter` for good,
            // and every later change would wait its second and an RCU grace period
            // (hence not on PREEMPT_RT, where a classification can be preempted).
            // The empty asm (no `nomem`) keeps the compiler from moving table reads
            // below the store, as the atomic's asm did.
            // SAFETY: an empty asm block; this CPU's slot.
            unsafe {
                core::arch::asm!("", options(nostack, preserves_flags));
                core::ptr::write_volatile(e, core::ptr::read_volatile(e).wrapping_add(1));
            }
        } else {
            // A full barrier: the reads before it complete first.
            crate::atomic::fetch_add(e, 1);
        }
    }
    v
}

/// [`run`] once the chain is known.
#[inline(always)]
fn classify_chain<const DIRECT: bool, L: Fn(*mut u8, u32, u32, u32) -> bool>(
    p: &PacketInfo,
    chain: u32,
    load: &L,
) -> i32 {
    let t = Maps::<DIRECT>;
    let g = t.generation();
    let c = t.chain(g, chain);
    if c.enabled == 0 || p.status == Status::NonIp as u8 {
        return TCX_NEXT;
    }
    let verdict = |a: u8| if a == ACT_DROP { TC_ACT_SHOT } else { TCX_NEXT };
    if p.status == Status::Malformed as u8 {
        return verdict(c.default_action);
    }
    // Connection state, worked out in a per-CPU slot (the stack is short), only when the
    // instance tracks connections.
    let cw = if c.track != 0 {
        SW_FW_WORK.get_ptr_mut(0)
    } else {
        None
    };
    let st = match cw {
        Some(cw) => {
            let cw = unsafe { &mut *cw };
            let st = ct_state(p, cw);
            if cw.tracked == 0 && ct::is_error(p) {
                related(p, cw, load)
            } else {
                st
            }
        }
        None => ct::NEW,
    };
    if c.accept_established != 0 && (st == ct::ESTABLISHED || st == ct::RELATED) {
        if let Some(cw) = cw {
            track(p, unsafe { &mut *cw });
        }
        return TCX_NEXT;
    }
    // The first matching rule: its counter id + 1 (0: none) and its action.
    let (rule, found) = if c.linear != 0 {
        match SW_FW_LINEAR.get((g & 1) * MAX_CHAINS + chain) {
            Some(lin) => linear(lin, p, chain, st),
            None => (0, 0),
        }
    } else {
        match walk(&t, p, g, chain, &c, st) {
            (0, a) => (0, a),
            (r, a) => (counter_id(g, chain, r - 1) + 1, a),
        }
    };
    let action = if rule == 0 {
        c.default_action
    } else {
        count(chain, rule - 1, p.pkt_len as u64);
        found
    };
    if action != ACT_DROP {
        if let Some(cw) = cw {
            track(p, unsafe { &mut *cw });
        }
    }
    verdict(action)
}

/// The chain's sets walked for the packet: the first matching rule's position + 1 (0:
/// none) and its action.
#[inline(always)]
fn walk<const DIRECT: bool>(
    t: &Maps<DIRECT>,
    p: &PacketInfo,
    g: u32,
    chain: u32,
    c: &ChainConf,
    st: u8,
) -> (u32, u8) {
    let Some(wp) = SW_FW_WALK.get_ptr_mut(0) else {
        return (0, 0);
    };
    {
        // SAFETY: this CPU's slot, used by one program at a time; the reference ends
        // before `walk_cb` takes the slot again.
        let w = unsafe { &mut *wp };
        w.sel = select(t, p, g, chain, c.used, c.wild, c.all, st);
        w.all = c.all;
        w.generation = g;
        w.chain = chain;
        w.word = 0;
        w.pending = 0;
        w.rule = 0;
        w.action = 0;
        w.st = st;
        w.bytes = p.pkt_len as u64;
        w.acc = summaries(&w.sel, w.all);
    }
    // The first step in line: most packets end in their first candidate word, with no
    // LOG rule on the way, and need no loop.
    if walk_step() == 0 {
        unsafe {
            // One step per candidate word and per LOG rule, and the last.
            bpf_loop(
                (WORDS + MAX_RULES) as u32 + 1,
                walk_cb as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
    }
    // SAFETY: the slot, read after the walk that wrote it.
    unsafe { ((*wp).rule, (*wp).action) }
}

/// Does rule `r` match the packet (`ports` and `flags` as the rules see them,
/// `statewall_common::firewall::packet::ports_of` and `tcp_flags_of`; `st`: its
/// connection state)?
#[inline(always)]
fn lin_match(r: &LinRule, p: &PacketInfo, (sp, dp): (u16, u16), flags: Option<u8>, st: u8) -> bool {
    if r.family != 0 && r.family != p.family {
        return false;
    }
    let mut i = 0;
    while i < 4 {
        // SAFETY: `PacketInfo`'s addresses are 4-aligned (asserted in `parse`).
        let (s, d) = unsafe { (addr_word(&p.saddr, i), addr_word(&p.daddr, i)) };
        if s & r.smask[i] != r.src[i] || d & r.dmask[i] != r.dst[i] {
            return false;
        }
        i += 1;
    }
    (r.has_proto == 0 || r.proto == p.l4proto)
        && r.sport[0] <= sp
        && sp <= r.sport[1]
        && r.dport[0] <= dp
        && dp <= r.dport[1]
        && (r.has_flags == 0 || flags.is_some_and(|f| f & r.flags_mask == r.flags_value))
        && (r.ct == LIN_ANY_CT || r.ct == st)
}

/// The first rule of a small chain that matches the packet, read rule by rule: (its
/// counter id + 1, or 0 for none; its action). LOG rules met are counted and logged.
#[inline(always)]
fn linear(lin: &LinChain, p: &PacketInfo, chain: u32, st: u8) -> (u32, u8) {
    let (ports, flags) = (ports_of(p), tcp_flags_of(p));
    let n = lin.n as usize;
    let mut i = 0;
    while i < LINEAR_MAX {
        if i >= n {
            break;
        }
        let r = &lin.rules[i];
        if lin_match(r, p, ports, flags, st) {
            if r.action != ACT_LOG {
                return (r.id + 1, r.action);
            }
            count(chain, r.id, p.pkt_len as u64);
            log_event(chain, r.id, st);
        }
        i += 1;
    }
    (0, 0)
}

/// Per-CPU working memory of the connection lookup.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CtWork {
    key: CtKey,
    entry: CtVal,
    now: u64,
    tracked: u8,
    has_entry: u8,
    dir: u8,
    st: u8,
    _pad: [u8; 4],
    inner: [u8; ct::QUOTE_LEN],
}

#[map(name = "SW_FW_WORK")]
static SW_FW_WORK: PerCpuArray<CtWork> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SW_FW_WALK")]
static SW_FW_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Looks the packet's connection up and returns its state (the lookup stays in `w`).
#[inline(never)]
fn ct_state(p: &PacketInfo, w: &mut CtWork) -> u8 {
    w.now = crate::clock::now_ns();
    w.tracked = 0;
    w.has_entry = 0;
    w.dir = 0;
    if let Some(d) = ct::key_into(p, &mut w.key) {
        w.dir = d;
        w.tracked = 1;
        if let Some(e) = unsafe { SW_FW_CT.get(&w.key) } {
            if e.expires_ns > w.now {
                statewall_common::mem::copy_words(&mut w.entry, e);
                w.has_entry = 1;
            }
        }
    }
    let e = if w.has_entry != 0 {
        Some(&w.entry)
    } else {
        None
    };
    w.st = ct::state(p, e, w.dir);
    w.st
}

/// The state of an ICMP error: RELATED when the packet it quotes belongs to a live
/// connection, else what [`ct_state`] said (NEW).
#[inline(always)]
fn related<L: Fn(*mut u8, u32, u32, u32) -> bool>(p: &PacketInfo, w: &mut CtWork, load: &L) -> u8 {
    let avail = (p.payload_len as u32).saturating_sub(ct::QUOTE_OFF as u32);
    let n = if avail > ct::QUOTE_LEN as u32 {
        ct::QUOTE_LEN as u32
    } else {
        avail
    };
    let mut i = 0;
    while i < ct::QUOTE_LEN {
        w.inner[i] = 0;
        i += 1;
    }
    if n < 28
        || !load(
            w.inner.as_mut_ptr(),
            (p.payload_off + ct::QUOTE_OFF) as u32,
            n,
            ct::QUOTE_LEN as u32,
        )
    {
        return w.st;
    }
    if ct::related_key(p.family, &w.inner, n as usize, &mut w.key) {
        if let Some(e) = unsafe { SW_FW_CT.get(&w.key) } {
            if e.expires_ns > w.now {
                w.st = ct::RELATED;
            }
        }
    }
    w.st
}

/// Records an accepted packet in the connection table.
#[inline(never)]
fn track(p: &PacketInfo, w: &mut CtWork) {
    if w.tracked == 0 {
        return;
    }
    let mut conf = SW_FW_CT_CONF.get(0).copied().unwrap_or_default();
    if conf.udp_ns == 0 {
        // Not written yet: the defaults.
        conf = CtConf::default();
    }
    let e = if w.has_entry != 0 {
        Some(&w.entry)
    } else {
        None
    };
    match ct::next(p, e, w.dir, w.st, w.now, &conf) {
        Some(v) => {
            if e == Some(&v) {
                return;
            }
            // A live entry is rewritten where it is (an update of the LRU table takes its
            // bucket lock and a fresh element: most of a tracked packet's cost); a new
            // connection, or one that went in the meantime, is inserted.
            if e.is_some() {
                if let Some(at) = SW_FW_CT.get_ptr_mut(&w.key) {
                    // SAFETY: the table's value for this key; another CPU's packet of the
                    // same connection may write it too, with the same kind of value.
                    unsafe { *at = v };
                    return;
                }
            }
            if SW_FW_CT.insert(&w.key, &v, 0).is_ok() && e.is_none() {
                bump(CNT_CT_CREATED);
            }
        }
        None => {
            let _ = SW_FW_CT.remove(&w.key);
        }
    }
}
