//! The `firewall` stage's classifier: first matching rule of a chain, at a cost that hardly
//! grows with the number of rules.
//!
//! Linear bit vector search with summary bitmaps. Each field a rule can constrain (source
//! and destination prefix, L4 protocol, source and destination port, TCP flags) has a
//! lookup giving the id of a [`Bitset`]: the rules that accept the packet's value of that
//! field (rules that do not constrain it are in every bitset of that field). The rule is
//! the lowest bit set in the AND of the packet's bitsets. Each bitset carries a summary
//! with one bit per non-empty 64-rule word, so the AND runs over the summaries first and
//! then only over the words every field has something in, lowest first; the first non-zero
//! word gives the rule. Fields no rule of the chain constrains are not looked up at all
//! ([`ChainConf::used`]).
//!
//! Tables come in two generations, as in `xfsm`: user space writes the inactive one and
//! switches with one array update ([`MAP_FW_CTL`]).
//!
//! [`packet::classify`] is the reference; the kernel program runs the same steps over BPF
//! maps. This module holds the tables' layouts, which need no packet.

pub mod packet;

/// Rules per chain at most, and rule positions per chain (bits of a [`Bitset`]).
pub const MAX_RULES: usize = 10240;
/// 64-rule words of a bitset.
pub const WORDS: usize = MAX_RULES / 64;
/// Summary words (one bit per word).
pub const SUMMARY: usize = WORDS.div_ceil(64);
/// Chains: (instance, direction) pairs, `instance * 2 + dir`.
pub const MAX_CHAINS: u32 = 8;
/// Firewall instances.
pub const MAX_INSTANCES: u32 = MAX_CHAINS / 2;

/// Chain direction: ingress.
pub const CHAIN_INGRESS: u32 = 0;
/// Chain direction: egress.
pub const CHAIN_EGRESS: u32 = 1;

/// Control: word 0 = active generation.
pub const MAP_FW_CTL: &str = "SW_FW_CTL";
/// Per (generation, chain): [`ChainConf`].
pub const MAP_FW_CHAINS: &str = "SW_FW_CHAINS";
/// Interface index -> instance (a `HASH` of u32 -> u32), with [`IFACE_XDP`] set when the
/// instance's ingress chain runs in XDP on that interface.
pub const MAP_FW_IFACES: &str = "SW_FW_IFACES";
/// Bit of an [`MAP_FW_IFACES`] value: the ingress chain runs in XDP (`sw_fw_xdp`, or the
/// XDP ingress program after the gates), and the tc ingress program lets the packet go on
/// unclassified (it was classified already). Egress chains always run on tc.
pub const IFACE_XDP: u32 = 1 << 16;
/// The instance of an [`MAP_FW_IFACES`] value.
pub const IFACE_INSTANCE: u32 = 0xffff;
/// The same entries as [`MAP_FW_IFACES`] for interface indexes below [`IFIDX_SLOTS`], in
/// an `ARRAY` of u32 indexed by the interface index, each entry with [`IFACE_PRESENT`] set
/// (0: no firewall there). The programs read an interface below [`IFIDX_SLOTS`] here, with
/// no hash (about 25 ns a packet on this machine kind), and any other in the hash.
pub const MAP_FW_IFIDX: &str = "SW_FW_IFIDX";
/// Interface indexes that [`MAP_FW_IFIDX`] holds (0 to this, exclusive).
pub const IFIDX_SLOTS: u32 = 4096;
/// Bit of an [`MAP_FW_IFIDX`] entry: an instance is there.
pub const IFACE_PRESENT: u32 = 1 << 31;

/// Where the programs look interface `ifindex` up: its [`MAP_FW_IFIDX`] slot, or `None`
/// for the hash ([`MAP_FW_IFACES`]).
#[inline(always)]
pub fn ifidx_slot(ifindex: u32) -> Option<u32> {
    if ifindex < IFIDX_SLOTS {
        Some(ifindex)
    } else {
        None
    }
}
/// Bitsets ([`Bitset`]), ids handed out per generation by user space.
pub const MAP_FW_BITSETS: &str = "SW_FW_BITSETS";
/// Source prefixes: `LPM_TRIE` of [`LpmKey`] -> bitset id (u32).
pub const MAP_FW_SRC: &str = "SW_FW_SRC";
/// Destination prefixes, as [`MAP_FW_SRC`].
pub const MAP_FW_DST: &str = "SW_FW_DST";
/// IPv4 prefixes read directly (a multibit trie: 16 bits, then 8 at a time), beside the
/// tries. `ARRAY` of [`V4Block`]s:
/// - blocks 0 and 1: which root each chain's field reads in generation 0 and 1
///   ([`v4root_slot`]): the root's first block (0: the field reads its trie);
/// - then each generation's half ([`v4_half`]): [`v4_roots`] roots of [`V4_ROOT_BLOCKS`]
///   blocks (the 65,536 values of the address's top 16 bits), then single blocks for the
///   next [`V4_STRIDE`] bits.
///
/// An entry holds the set of the longest prefix of its level that covers its addresses
/// ([`V4_VALUE`] bits: [`v4_entry`]) and the block of the next bits (above
/// [`V4_CHILD_SHIFT`], 0: none). The reader keeps the last value found on its way down, so
/// a prefix is written only in its own level (its change touches one root row or block).
pub const MAP_FW_V4: &str = "SW_FW_V4";
/// Address bits a block below a root reads.
pub const V4_STRIDE: u32 = 8;
/// Entries of a block of [`MAP_FW_V4`].
pub const V4_BLOCK: usize = 1 << V4_STRIDE;
/// Levels of blocks below a root (the address's last 16 bits).
pub const V4_LEVELS: u32 = 16 / V4_STRIDE;
/// A block of [`MAP_FW_V4`].
pub type V4Block = [u32; V4_BLOCK];
/// Blocks of a root (65,536 entries).
pub const V4_ROOT_BLOCKS: u32 = 65536 / V4_BLOCK as u32;
/// Roots of the default table's halves (a chain's sources and destinations).
pub const V4_ROOTS: u32 = 2;
/// The value bits of an entry (a set id + 1; 0: no prefix of the level covers it).
pub const V4_VALUE: u32 = (1 << 17) - 1;
/// The block of the next bits of an entry: `entry >> V4_CHILD_SHIFT` (0: none).
pub const V4_CHILD_SHIFT: u32 = 17;
/// Most blocks the map may have (a block's index fits above [`V4_CHILD_SHIFT`]).
pub const V4_MAX_BLOCKS: u32 = 1 << (32 - V4_CHILD_SHIFT);
/// Default size of [`MAP_FW_V4`] in blocks: the root slots, then per generation its roots
/// and 2 MiB of blocks (5 MiB in all).
pub const V4_DEFAULT_BLOCKS: u32 =
    2 + 2 * (V4_ROOTS * V4_ROOT_BLOCKS + (2 << 20) / (4 * V4_BLOCK as u32));

/// Where a chain's field finds its root in its generation's block of root slots (block
/// `generation & 1` of [`MAP_FW_V4`]).
#[inline(always)]
pub fn v4root_slot(chain: u32, dst: bool) -> usize {
    ((chain * 2 + dst as u32) & (2 * MAX_CHAINS - 1)) as usize
}

/// Roots in a half of `n` blocks: a fifth of it (at least one when it holds one, at most
/// one per chain and field).
pub fn v4_roots(n: u32) -> u32 {
    (n / 5 / V4_ROOT_BLOCKS)
        .clamp(1, 2 * MAX_CHAINS)
        .min(n / V4_ROOT_BLOCKS)
}

/// The first block and the size of generation `g`'s half of a [`MAP_FW_V4`] of `blocks`
/// blocks (its roots first).
pub fn v4_half(blocks: u32, g: u32) -> (u32, u32) {
    let half = blocks.saturating_sub(2) / 2;
    (2 + (g & 1) * half, half)
}

/// The value bits of an entry for set `id` (0: none).
#[inline(always)]
pub fn v4_entry(id: Option<u32>) -> u32 {
    id.map_or(0, |i| i + 1)
}

/// Source ports: `ARRAY` of u16 bitset ids, [`port_slot`].
pub const MAP_FW_SPORT: &str = "SW_FW_SPORT";
/// Destination ports, as [`MAP_FW_SPORT`].
pub const MAP_FW_DPORT: &str = "SW_FW_DPORT";
/// L4 protocol (and TCP flags): `ARRAY` of u16 bitset ids, [`small_slot`].
pub const MAP_FW_SMALL: &str = "SW_FW_SMALL";
/// Rule actions: `ARRAY` of u8 by rule position, [`rule_slot`] (0: no rule there).
pub const MAP_FW_ACTIONS: &str = "SW_FW_ACTIONS";
/// Counter ids: `ARRAY` of u16 by rule position, [`rule_slot`]: the slot of the rule's
/// counters in [`MAP_FW_STATS`] ([`stats_slot`]). A rule keeps its counter id for its life,
/// whatever position the rules around it make it take.
pub const MAP_FW_RULEID: &str = "SW_FW_RULEID";
/// Rule order: `ARRAY` of u32 by rule position, [`rule_slot`]: a number that rises with
/// the rule's index in its chain (gaps between). No program reads it: the first match is
/// the lowest position, and positions keep the order of any two rules that can match one
/// packet, not of every two. User space reads it back to learn which rule each position
/// holds when it adopts the tables of an earlier process.
pub const MAP_FW_RANK: &str = "SW_FW_RANK";
/// Per-rule counters: `PERCPU_ARRAY` of [`RuleStats`], indexed by [`stats_slot`] of the
/// rule's counter id.
pub const MAP_FW_STATS: &str = "SW_FW_STATS";
/// Classifications entered and left: `PERCPU_ARRAY` of one [`FwGuard`]. After switching
/// generations, user space waits until every CPU that was inside a classification has
/// left it (usually none was): then nothing reads the retired generation any more.
pub const MAP_FW_GUARD: &str = "SW_FW_GUARD";
/// Global set by the loader: non-zero when classifications leave [`MAP_FW_GUARD`] with a
/// plain add (the CPU keeps a store after the loads before it, and no classification can
/// be preempted by another on its CPU), else with an atomic one.
pub const GLOBAL_FW_STORES_ORDERED: &str = "SW_FW_STORES_ORDERED";
/// LOG rule hits: `RINGBUF` of [`FwLog`].
pub const MAP_FW_LOG: &str = "SW_FW_LOG";
/// Stage counters: `PERCPU_ARRAY` of u64, [`COUNTER_NAMES`] order.
pub const MAP_FW_COUNTERS: &str = "SW_FW_COUNTERS";
/// Per-CPU scratch of the firewall programs (kernel-private, never pinned).
pub const MAP_FW_WORK: &str = "SW_FW_WORK";
/// Per-CPU state of the firewall's rule walk (kernel-private, never pinned).
pub const MAP_FW_WALK: &str = "SW_FW_WALK";
/// Counter: LOG events queued.
pub const CNT_LOG_QUEUED: u32 = 0;
/// Counter: LOG events lost (ring full).
pub const CNT_LOG_LOST: u32 = 1;
/// Counter: connections entered in the conntrack table (an LRU: the ones created beyond
/// the live entries expired, ended or were evicted).
pub const CNT_CT_CREATED: u32 = 2;
/// Number of stage counters.
pub const COUNTERS: u32 = 3;
/// Their names.
pub const COUNTER_NAMES: [&str; COUNTERS as usize] = ["log_queued", "log_lost", "ct_created"];

/// A packet that hit a LOG rule (the rule counts it and the chain goes on).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwLog {
    /// Source address (IPv4: first 4 bytes).
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Frame length.
    pub len: u32,
    /// The rule's counter id ([`MAP_FW_RULEID`]; user space knows which rule holds it).
    pub rule: u32,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Chain number (`2 * instance + direction`).
    pub chain: u8,
    /// 4 or 6.
    pub family: u8,
    /// L4 protocol.
    pub proto: u8,
    /// Connection state the rules saw (`ct::NEW`...).
    pub ct: u8,
    /// TCP flags.
    pub tcp_flags: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// Field bits of [`ChainConf::used`].
pub mod field {
    /// Source prefix.
    pub const SRC: u8 = 1;
    /// Destination prefix.
    pub const DST: u8 = 2;
    /// L4 protocol.
    pub const PROTO: u8 = 4;
    /// Source port.
    pub const SPORT: u8 = 8;
    /// Destination port.
    pub const DPORT: u8 = 16;
    /// TCP flags.
    pub const FLAGS: u8 = 32;
    /// Connection-tracking state.
    pub const CT: u8 = 64;
}

/// Action: drop.
pub const ACT_DROP: u8 = 1;
/// Action: accept (the packet goes on to the next stage).
pub const ACT_ACCEPT: u8 = 2;
/// Action: count and emit, then go on to the next rule.
pub const ACT_LOG: u8 = 3;

/// A chain's configuration in one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainConf {
    /// Non-zero when the chain exists (else: accept, nothing looked up).
    pub enabled: u8,
    /// Default action ([`ACT_DROP`] / [`ACT_ACCEPT`]).
    pub default_action: u8,
    /// [`field`] bits of the fields some rule constrains.
    pub used: u8,
    /// Non-zero: packets of known connections (ESTABLISHED, RELATED) are accepted before
    /// any rule (`accept-established`).
    pub accept_established: u8,
    /// Rules in the chain.
    pub rules: u32,
    /// Bitset of every rule (the start of the AND).
    pub all: u32,
    /// Non-zero when the instance tracks connections (some rule of its chains matches on
    /// the state, or a chain accepts established connections): otherwise no lookup, every
    /// packet is NEW and nothing is recorded.
    pub track: u8,
    /// [`field`] bits of the fields whose unconstrained rules are kept in a set of their
    /// own, the field's *wild set* ([`wild_id`]), instead of in every set of the field: the
    /// packet's set of such a field is (its value's set OR the wild set). A rule without
    /// a constraint on the field then changes one set, not all of them.
    pub wild: u8,
    /// Non-zero when the chain has at most [`LINEAR_MAX`] rules: the kernel then reads its
    /// rules one by one from [`MAP_FW_LINEAR`] (the rule count + 1) instead of looking its
    /// fields up and ANDing their sets, which costs more than a few rules do.
    pub linear: u8,
    /// Explicit padding.
    pub _pad2: u8,
}

/// Chains of at most this many rules are matched rule by rule ([`ChainConf::linear`]).
pub const LINEAR_MAX: usize = 16;
/// Per (generation, chain), [`rule_slot`]'s order of the two: an `ARRAY` of [`LinChain`],
/// the rules of a chain of at most [`LINEAR_MAX`] rules in order.
pub const MAP_FW_LINEAR: &str = "SW_FW_LINEAR";

/// A rule as the rule-by-rule match reads it. Prefixes are four address words and four
/// mask words (in network byte order as the packet has them; IPv4 in the first word).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinRule {
    /// Source address words, masked.
    pub src: [u32; 4],
    /// Source mask words (all zero: any source).
    pub smask: [u32; 4],
    /// Destination address words, masked.
    pub dst: [u32; 4],
    /// Destination mask words.
    pub dmask: [u32; 4],
    /// Source port range, inclusive (0 to 65535: any; a packet without ports has port 0,
    /// which no rule's range holds).
    pub sport: [u16; 2],
    /// Destination port range.
    pub dport: [u16; 2],
    /// The family of the rule's prefixes (0: no prefix).
    pub family: u8,
    /// L4 protocol, when [`LinRule::has_proto`].
    pub proto: u8,
    /// Non-zero: the protocol must be `proto`.
    pub has_proto: u8,
    /// Non-zero: only TCP packets (whole, or first fragments) with `flags & mask == value`.
    pub has_flags: u8,
    /// TCP flags mask.
    pub flags_mask: u8,
    /// TCP flags value.
    pub flags_value: u8,
    /// Connection state the rule wants, [`LIN_ANY_CT`] for any.
    pub ct: u8,
    /// [`ACT_DROP`], [`ACT_ACCEPT`] or [`ACT_LOG`].
    pub action: u8,
    /// The rule's position (its bit in the sets: what a match returns).
    pub pos: u32,
    /// The rule's counter id ([`MAP_FW_RULEID`] at its position).
    pub id: u32,
}

/// [`LinRule::ct`] of a rule without a connection state.
pub const LIN_ANY_CT: u8 = 0xff;

/// The rules of a chain read one by one, in order (`n` of them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinChain {
    /// Rules in use.
    pub n: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The rules, first match wins.
    pub rules: [LinRule; LINEAR_MAX],
}

impl Default for LinChain {
    fn default() -> Self {
        LinChain {
            n: 0,
            _pad: 0,
            rules: [LinRule::default(); LINEAR_MAX],
        }
    }
}

/// Bitset ids below this are wild sets, one per (generation, chain, field): [`wild_id`].
pub const WILD_SETS: u32 = 2 * MAX_CHAINS * 8;

/// No set ([`Selection::wild`] of a field without a wild set).
pub const NO_SET: u32 = u32::MAX;

/// The wild set of field index `fi` (the bit number of its [`field`] bit) of a chain in a
/// generation.
#[inline(always)]
pub fn wild_id(generation: u32, chain: u32, fi: u32) -> u32 {
    ((generation & 1) * MAX_CHAINS + chain) * 8 + (fi & 7)
}

/// Bitset ids from this one on (the top [`MAX_RULES`] of the 16-bit ids) name the set of one
/// rule position (`id - SINGLE`), computed where it is read, never stored: most values of a
/// large ruleset are accepted by one rule only (a source address of its own, a port of its
/// own), and such a set would otherwise take a whole [`Bitset`] of the table. The table's
/// own ids stay below it.
pub const SINGLE: u32 = (1 << 16) - MAX_RULES as u32;

/// The id of the set holding rule position `r` only.
#[inline(always)]
pub fn single_id(r: u32) -> u32 {
    SINGLE + r
}

/// Word `w` of a one-position set's summary (`summary` true) or rule words, or `None` when
/// `id` is not such a set ([`SINGLE`]).
#[inline(always)]
pub fn single_word(id: u32, summary: bool, w: usize) -> Option<u64> {
    let r = id.wrapping_sub(SINGLE) as usize;
    if r >= MAX_RULES {
        return None;
    }
    let (at, bit) = if summary {
        (r / 64 / 64, (r / 64) % 64)
    } else {
        (r / 64, r % 64)
    };
    Some(if at == w { 1 << bit } else { 0 })
}

/// A set of rules, with its summary.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitset {
    /// Bit `w` set when word `w` is non-zero.
    pub summary: [u64; SUMMARY],
    /// Bit `r % 64` of word `r / 64`: rule `r`.
    pub words: [u64; WORDS],
}

impl Default for Bitset {
    fn default() -> Self {
        Bitset {
            summary: [0; SUMMARY],
            words: [0; WORDS],
        }
    }
}

impl Bitset {
    /// Adds rule `r`.
    pub fn set(&mut self, r: usize) {
        self.words[r / 64] |= 1 << (r % 64);
        self.summary[r / 64 / 64] |= 1 << ((r / 64) % 64);
    }

    /// True when rule `r` is in.
    pub fn has(&self, r: usize) -> bool {
        self.words[r / 64] & (1 << (r % 64)) != 0
    }
}

/// Key of the prefix tries: 32 bits of (generation, chain, family, pad) then the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LpmKey {
    /// 32 + the prefix length.
    pub prefixlen: u32,
    /// Generation.
    pub generation: u8,
    /// Chain.
    pub chain: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Address bytes (IPv4 in the first 4).
    pub addr: [u8; 16],
}

/// One CPU's classifications: entered, left (each added to atomically, a full barrier:
/// entered before the generation is read, left after the last table read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwGuard {
    /// Classifications entered.
    pub enter: u64,
    /// Classifications left.
    pub exit: u64,
}

/// Per-rule counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Slot of a port in [`MAP_FW_SPORT`] / [`MAP_FW_DPORT`].
#[inline(always)]
pub fn port_slot(generation: u32, chain: u32, port: u16) -> u32 {
    ((generation & 1) * MAX_CHAINS + chain) * 65536 + port as u32
}

/// Entries of [`MAP_FW_SMALL`] per chain: 256 protocols, 256 TCP flag values, 1 for
/// packets that are not TCP (flags field), 4 connection states.
pub const SMALL_PER_CHAIN: u32 = 256 + 257 + 4;

/// [`small_slot`] index of connection state `st` (`crate::ct_state::NEW` ...).
#[inline(always)]
pub fn ct_index(st: u8) -> u32 {
    256 + 257 + (st as u32 & 3)
}

/// Slot of the protocol `p` in [`MAP_FW_SMALL`].
#[inline(always)]
pub fn small_slot(generation: u32, chain: u32, i: u32) -> u32 {
    ((generation & 1) * MAX_CHAINS + chain) * SMALL_PER_CHAIN + i
}

/// [`small_slot`] index of TCP flags `f` (`None`: not TCP).
#[inline(always)]
pub fn flags_index(f: Option<u8>) -> u32 {
    match f {
        Some(f) => 256 + f as u32,
        None => 256 + 256,
    }
}

/// Slot of the rule at position `r` of a chain in [`MAP_FW_ACTIONS`], [`MAP_FW_RULEID`]
/// and [`MAP_FW_RANK`]. The first match is the lowest position: positions keep the order
/// of any two rules that can match one packet, and leave gaps, so that a rule can be
/// inserted without moving the others.
#[inline(always)]
pub fn rule_slot(generation: u32, chain: u32, r: u32) -> u32 {
    ((generation & 1) * MAX_CHAINS + chain) * MAX_RULES as u32 + r
}

/// Slot of counter id `id` of a chain in [`MAP_FW_STATS`] (not per generation).
#[inline(always)]
pub fn stats_slot(chain: u32, id: u32) -> u32 {
    chain * MAX_RULES as u32 + id
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::ChainConf {}
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::FwLog {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Bitset {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LpmKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FwGuard {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LinChain {}
}
