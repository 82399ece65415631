//! The `xfsm` stage: an OpenState/BEBA extended finite state machine per packet.
//!
//! Tables (all in the kernel, written by user space):
//! - **machines** ([`Machine`], up to [`MAX_MACHINES`] per generation): lookup and update
//!   scopes, lockout parameters.
//! - **transitions** ([`TransKey`] -> [`Trans`]): match on (machine, state, L4 protocol, dst
//!   port) with wildcards (protocol 0 = any, port 0 = any), searched most specific first:
//!   (proto, port), (proto, any), (any, any). An entry also requires
//!   `tcp_flags & flags_mask == flags_value` for TCP; when that fails the next, less specific,
//!   key is tried.
//! - **port prefilter**: per destination port, the machines with a transition on it
//!   (TCP in the low byte, UDP in the high byte), so that a packet no machine cares about
//!   costs one array lookup.
//! - **grant sets** ([`GrantSet`]): the (protocol, port)s a transition opens in the gate.
//!
//! Tables come in two generations; user space writes the inactive one and switches
//! [`CTL_GEN`] with one array update, so no packet sees half a table.
//!
//! State (not replaced on a switch): the **state table** ([`StateKey`] -> [`StateVal`], LRU:
//! an evicted entry is a source back in DEFAULT), the **lock table** ([`LockKey`] ->
//! [`LockVal`], preallocated: a full table refuses new records and, while full, sources
//! without a record cannot leave DEFAULT: fail closed), and the **activity filter**: per
//! bucket of key hashes, the time until which a non-default state may live there, so that a
//! packet from a source with no state costs no hash lookup.
//!
//! [`step`] is the reference: the kernel program does the same, and tests compare them.

pub mod acts;
#[cfg(feature = "user")]
pub mod interp;
pub mod payload;
#[cfg(feature = "user")]
pub mod raw;
pub mod regs;

pub use payload::{Payload, MAX_PAYLOADS, PAYLOAD_MAX, PAYLOAD_NONE};

use self::regs::{
    apply, cmp, hash_field, opnd, CondSet, Operand, UpdSet, FLOW_REGS, GLOBAL_REGS, MAX_CONDS,
    MAX_UPDATES,
};
use crate::maps::{GrantKey, FAMILY_V4, FAMILY_V6};
use crate::parse::proto;
use crate::parse::{PacketInfo, FLAG_L4, FLAG_NONFIRST_FRAG};

/// Machines per generation.
pub const MAX_MACHINES: usize = 8;
/// The state every key is in until a transition moves it.
pub const STATE_DEFAULT: u8 = 0;
/// `next_state` value: stay in the current state.
pub const NEXT_STAY: u8 = 0xff;
/// Protected (protocol, port) pairs one grant set can open.
pub const GRANT_SET_PORTS: usize = 8;
/// Grant sets per generation.
pub const MAX_GRANT_SETS: u32 = 64;
/// Buckets of the activity filter.
pub const ACTIVE_BUCKETS: u32 = 4096;
/// Per-transition counters.
pub const MAX_TRANS_COUNTERS: u32 = 4096;
/// Entries of the port prefilter per generation (every port).
pub const PORTS_PER_GEN: u32 = 65536;

/// Map names.
pub const MAP_MACHINES: &str = "SW_XFSM_MACH";
/// Transition table.
pub const MAP_TRANS: &str = "SW_XFSM_TRANS";
/// Port prefilter.
pub const MAP_PORTS: &str = "SW_XFSM_PORTS";
/// Grant sets.
pub const MAP_GRANT_SETS: &str = "SW_XFSM_GSETS";
/// Control words ([`CTL_GEN`], [`CTL_LOCK_FULL`]).
pub const MAP_CTL: &str = "SW_XFSM_CTL";
/// State table.
pub const MAP_STATES: &str = "SW_XFSM_STATES";
/// Lock table.
pub const MAP_LOCKS: &str = "SW_XFSM_LOCKS";
/// Activity filter.
pub const MAP_ACTIVE: &str = "SW_XFSM_ACTIVE";
/// Address filter: per bucket of address hashes, the time until which a state keyed by
/// such an address may live (checked once per packet, before any machine runs).
pub const MAP_ADDR_ACTIVE: &str = "SW_XFSM_AACT";
/// Stage counters ([`Counter`]).
pub const MAP_STATS: &str = "SW_XFSM_STATS";
/// Per-transition counters.
pub const MAP_TCOUNT: &str = "SW_XFSM_TCOUNT";
/// Events ring buffer ([`Event`]).
pub const MAP_EVENTS: &str = "SW_XFSM_EVENTS";
/// Unused one-time sequences: a preallocated `HASH` of `u64` key -> `u8`. A transition with
/// [`E_ONCE`] deletes its key; the delete succeeds for one packet only (atomic in the map),
/// so a one-time sequence opens at most once, across CPUs and table generations.
pub const MAP_ONCE: &str = "SW_XFSM_ONCE";
/// Payload patterns ([`Payload`], [`MAX_PAYLOADS`] per generation).
pub const MAP_PAYLOADS: &str = "SW_XFSM_PAYLD";
/// Per-CPU scratch of the xfsm programs (kernel-private, never pinned): a [`Work`], which
/// also holds the UDP payload of the packet being processed when a transition may need it.
pub const MAP_XFSM_WORK: &str = "SW_XFSM_WORK";
/// Capacity of [`MAP_ONCE`].
pub const ONCE_MAX: u32 = 4096;

/// Index in the control array: the active generation (bit 0), [`CTL_SLOW`], and the bit set
/// of its enabled machines (bits 8..16), switched together by one update.
pub const CTL_GEN: u32 = 0;
/// Index in the control array: non-zero while the lock table is full.
pub const CTL_LOCK_FULL: u32 = 1;
/// Index in the control array: the machines not run for a source on the `detect`
/// allowlist, bits 0 to 7 for generation 0 and 8 to 15 for generation 1 (read only when
/// the [`CTL_GEN`] word has [`CTL_HAS_EXEMPT`]).
pub const CTL_EXEMPT: u32 = 3;
/// Control words.
pub const CTL_LEN: u32 = 4;
/// [`CTL_GEN`] bit: some machine of the generation is exempt for allowlisted sources
/// ([`CTL_EXEMPT`]).
pub const CTL_HAS_EXEMPT: u32 = 8;
/// [`CTL_GEN`] bit: some machine can act on any port of any protocol or keys no address,
/// so the per-packet fast path (port prefilter and address filter) cannot rule a packet
/// out.
pub const CTL_SLOW: u32 = 2;
/// [`CTL_GEN`] bit: as [`CTL_SLOW`], for TCP packets only (a machine acts on any TCP port).
pub const CTL_SLOW_TCP: u32 = 1 << 16;
/// [`CTL_GEN`] bit: as [`CTL_SLOW`], for UDP packets only.
pub const CTL_SLOW_UDP: u32 = 1 << 17;
/// [`CTL_GEN`] bit: as [`CTL_SLOW`], for packets of other protocols (ICMP, ...).
pub const CTL_SLOW_OTHER: u32 = 1 << 18;
/// [`CTL_GEN`] bit: as [`CTL_SLOW_TCP`], for TCP packets with SYN set only (a machine acts
/// on any TCP port, but only on SYNs: a flood detector).
pub const CTL_SLOW_TCP_SYN: u32 = 1 << 19;

/// The [`CTL_GEN`] bits that turn the fast path off for a packet of protocol `p` with TCP
/// flags `tcp_flags`.
#[inline(always)]
pub fn slow_bits(p: u8, tcp_flags: u8) -> u32 {
    if p == proto::TCP && tcp_flags & crate::parse::tcp::SYN != 0 {
        CTL_SLOW_TCP | CTL_SLOW_TCP_SYN
    } else {
        slow_bit(p)
    }
}

/// The [`CTL_GEN`] bit that turns the fast path off for packets of protocol `p`.
#[inline(always)]
pub fn slow_bit(p: u8) -> u32 {
    match p {
        proto::TCP => CTL_SLOW_TCP,
        proto::UDP => CTL_SLOW_UDP,
        _ => CTL_SLOW_OTHER,
    }
}
/// Shift of the switch machines' mask in the [`CTL_GEN`] word (bits 24 to 31): machines
/// that only `[[switch]]` ports run ([`begin_switch`]); the hooks' mask (bits 8 to 15)
/// leaves them out.
pub const CTL_SWITCH_SHIFT: u32 = 24;
/// Flag in the [`CTL_GEN`] word: some transition matches a UDP payload, so a UDP packet
/// to a port in the prefilter has its payload captured.
pub const CTL_PAYLOAD: u32 = 4;
/// Flag in the [`CTL_GEN`] word: some machine reads the clock as a value (an operand
/// `now`, `since`, `gsince`), so the packet's time comes from the precise clock. Without
/// it the time is the coarse clock's (its value at the last tick, 4 ms apart at 250 Hz):
/// enough for timeouts, lockout windows and event budgets, and without the TSC read that
/// costs a VM a fifth of a knock packet's time.
pub const CTL_PRECISE: u32 = 16;
/// Buckets of the address filter.
pub const ADDR_BUCKETS: u32 = 4096;

/// Scope fields. A scope is a list of them; the i-th address field of a scope goes to
/// `addrs[i]` of the [`StateKey`], the i-th port field to `ports[i]` (see [`Scope::compile`]).
pub mod field {
    /// Source address.
    pub const SRC_IP: u8 = 1;
    /// Destination address.
    pub const DST_IP: u8 = 2;
    /// L4 protocol.
    pub const PROTO: u8 = 3;
    /// Source port.
    pub const SRC_PORT: u8 = 4;
    /// Destination port.
    pub const DST_PORT: u8 = 5;
    /// Source MAC address (takes an address slot: its 6 bytes, then zeros).
    pub const SRC_MAC: u8 = 6;
    /// Destination MAC address.
    pub const DST_MAC: u8 = 7;
}

/// A scope compiled to masks, so that building a key has no branches (the verifier
/// would otherwise walk every combination of fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// `addrs[i]` takes the source address where `a_src[i]` is 0xff ...
    pub a_src: [u8; 2],
    /// ... and the destination address where `a_dst[i]` is 0xff.
    pub a_dst: [u8; 2],
    /// 0xff when the protocol is in scope.
    pub proto: u8,
    /// 0xff when an address is in scope (the family goes into the key).
    pub family: u8,
    /// Non-zero for a bidirectional key: the two (address, port) ends are put in order
    /// (the smaller first), so both directions of a connection find one entry.
    pub bidir: u8,
    /// Ethernet fields: bit `i` set when `addrs[i]` takes the source MAC, bit `2 + i`
    /// when it takes the destination MAC (instead of an IP address). Bit 4
    /// ([`SCOPE_FIXED`]): the keys live in the fixed tables ([`StateKey::table`]).
    pub l2: u8,
    /// `ports[i]` takes the source port where `p_src[i]` is 0xffff ...
    pub p_src: [u16; 2],
    /// ... and the destination port where `p_dst[i]` is 0xffff.
    pub p_dst: [u16; 2],
}

impl Scope {
    /// Compiles a list of [`field`] ids. Returns `None` for an unknown id, more than two
    /// address or port fields, or a field listed twice.
    pub fn compile(fields: &[u8]) -> Option<Scope> {
        let mut s = Scope::default();
        let (mut na, mut np, mut seen) = (0usize, 0usize, 0u8);
        for &f in fields {
            if f == 0 || f > 7 || seen & (1 << f) != 0 {
                return None;
            }
            seen |= 1 << f;
            match f {
                field::SRC_MAC | field::DST_MAC => {
                    if na == 2 {
                        return None;
                    }
                    s.l2 |= if f == field::SRC_MAC { 1 } else { 4 } << na;
                    na += 1;
                }
                field::SRC_IP | field::DST_IP => {
                    if na == 2 {
                        return None;
                    }
                    if f == field::SRC_IP {
                        s.a_src[na] = 0xff;
                    } else {
                        s.a_dst[na] = 0xff;
                    }
                    s.family = 0xff;
                    na += 1;
                }
                field::SRC_PORT | field::DST_PORT => {
                    if np == 2 {
                        return None;
                    }
                    if f == field::SRC_PORT {
                        s.p_src[np] = 0xffff;
                    } else {
                        s.p_dst[np] = 0xffff;
                    }
                    np += 1;
                }
                _ => s.proto = 0xff,
            }
        }
        Some(s)
    }

    /// (address fields, port fields, protocol) counts: two scopes give keys of the same
    /// shape when these are equal.
    pub fn shape(&self) -> (u8, u8, bool) {
        let a = (0..2)
            .filter(|&i| self.a_src[i] | self.a_dst[i] != 0 || self.l2 & (5 << i) != 0)
            .count() as u8;
        let p = (0..2)
            .filter(|&i| self.p_src[i] | self.p_dst[i] != 0)
            .count() as u8;
        (a, p, self.proto != 0)
    }
}

/// Machine flag: some DEFAULT-state transition matches any port, so the port prefilter
/// cannot rule the machine out.
pub const M_ANY_PORT: u8 = 1;
/// [`Machine::any_protos`] bit: TCP packets (with [`ANY_TCP_SYN`]: those with SYN set).
pub const ANY_TCP: u8 = 1;
/// [`Machine::any_protos`] bit: UDP packets.
pub const ANY_UDP: u8 = 2;
/// [`Machine::any_protos`] bit: packets of other protocols (ICMP, ICMPv6, ...).
pub const ANY_OTHER: u8 = 4;
/// [`Machine::any_protos`] bit: every any-port TCP transition needs SYN set, so a TCP
/// packet without SYN is none of their business.
pub const ANY_TCP_SYN: u8 = 8;

/// True when a machine's any-port DEFAULT transitions (`any_protos`) could match a packet
/// of protocol `l4proto` with TCP flags `tcp_flags`.
#[inline(always)]
pub fn any_port_wants(any_protos: u8, l4proto: u8, tcp_flags: u8) -> bool {
    if any_protos == 0 {
        return true;
    }
    match l4proto {
        proto::TCP => {
            any_protos & ANY_TCP != 0
                && (any_protos & ANY_TCP_SYN == 0 || tcp_flags & crate::parse::tcp::SYN != 0)
        }
        proto::UDP => any_protos & ANY_UDP != 0,
        _ => any_protos & ANY_OTHER != 0,
    }
}

/// A door's OPEN state (doors compile to machines whose states are DEFAULT, OPEN, then
/// the steps part-way through their sequences): with DEFAULT, the states a failure sends a
/// source back to.
pub const DOOR_OPEN: u8 = 1;

/// Machine flag: some non-default state has no hard timeout, so the activity filter cannot
/// rule a key out (every interesting packet looks the state up).
pub const M_UNBOUNDED: u8 = 2;
/// Machine flag: the machine has conditions or updates ([`regs`]): its condition vector is
/// computed before the transition lookup, and its transitions' updates run once the
/// transition is found (at the lookup key) or on commit (at another update key).
pub const M_EXT: u8 = 4;
/// Machine flag: the machine has per-flow registers. Without them no per-flow register
/// entry is read or created (a machine with global registers only, as a flood detector,
/// costs one table entry per flow less).
pub const M_FLOW_REGS: u8 = 16;
/// Machine flag: no transition leads to a state other than DEFAULT (a policer or a
/// counter, whose memory is its registers): no flow ever has a state entry, so none is
/// looked up, written or deleted, and the activity filter is not asked.
pub const M_STATELESS: u8 = 32;

/// One machine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// The lookup key's scope.
    pub lookup: Scope,
    /// The update key's scope (same shape as `lookup`).
    pub update: Scope,
    /// Non-zero when the machine runs.
    pub enabled: u8,
    /// `M_*` flags.
    pub flags: u8,
    /// With [`M_ANY_PORT`]: the packets its any-port DEFAULT transitions can match,
    /// `ANY_*` bits (0: every packet, as a table written before this field had).
    pub any_protos: u8,
    /// The transition keys the machine has, `LEVEL_*` bits: the lookups of a key the
    /// machine has none of are skipped (0: try every one, as a table written before this
    /// field had).
    pub levels: u8,
    /// Failures within `fail_window_ns` that lock a source out; 0 = no lockout.
    pub fail_max: u32,
    /// Window for counting failures.
    pub fail_window_ns: u64,
    /// How long a lockout lasts.
    pub lock_ns: u64,
}

/// Transition key. `proto` 0 = any protocol (then `port` is 0), `port` 0 = any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransKey {
    /// Table generation.
    pub generation: u8,
    /// Machine.
    pub machine: u8,
    /// State the key is in.
    pub state: u8,
    /// L4 protocol, 0 = any.
    pub proto: u8,
    /// Destination port, 0 = any.
    pub port: u16,
    /// Direction the packet travels: [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub dir: u8,
    /// The machine's condition vector ([`conditions`]; 0 for a machine without
    /// conditions).
    pub conds: u8,
}

impl TransKey {
    /// The key as one 64-bit word.
    #[inline(always)]
    fn word(&self) -> u64 {
        let port = self.port.to_ne_bytes();
        u64::from_ne_bytes([
            self.generation,
            self.machine,
            self.state,
            self.proto,
            port[0],
            port[1],
            self.dir,
            self.conds,
        ])
    }

    /// `*self = k` as one 64-bit store: the kernel hashes the key a 32-bit word at a time,
    /// and a load that spans narrower stores just made waits for them to reach the cache.
    #[inline(always)]
    fn store(&mut self, k: TransKey) {
        // SAFETY: a `TransKey` is 8 bytes (unaligned store).
        unsafe { core::ptr::write_unaligned(self as *mut TransKey as *mut u64, k.word()) }
    }

    /// Sets the protocol and port, as one 64-bit store of the whole key.
    #[inline(always)]
    fn set_level(&mut self, proto: u8, port: u16) {
        self.store(TransKey {
            proto,
            port,
            ..*self
        });
    }
}

const _: () = assert!(core::mem::size_of::<TransKey>() == 8);

/// Direction: a packet arriving on the interface (tcx ingress, XDP).
pub const DIR_INGRESS: u8 = 0;
/// Direction: a packet leaving through the interface (tcx egress).
pub const DIR_EGRESS: u8 = 1;

/// Action: hand the packet on to the next stage.
pub const ACT_NEXT: u8 = 0;
/// Action: drop the packet.
pub const ACT_DROP: u8 = 1;

/// Effect: open the transition's grant set for the packet's source.
pub const E_GRANT: u8 = 1;
/// Effect: revoke the grant set for the packet's source.
pub const E_REVOKE: u8 = 2;
/// Effect: count a failure for the source (lockout).
pub const E_FAIL: u8 = 4;
/// Effect: keep the current hard deadline (the sequence's timer keeps running).
pub const E_KEEP_HARD: u8 = 8;
/// Effect: keep the current idle deadline (retransmissions do not extend the step timer).
pub const E_KEEP_IDLE: u8 = 16;
/// Effect: a one-time transition: taken only if its key ([`Trans::once`]) is still in
/// [`MAP_ONCE`] (and then removed from it); otherwise a failed attempt back to DEFAULT.
pub const E_ONCE: u8 = 32;

/// A transition.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trans {
    /// TCP flags that must be ...
    pub flags_mask: u8,
    /// ... equal to these (TCP packets only).
    pub flags_value: u8,
    /// `ACT_*`.
    pub action: u8,
    /// State to go to, or [`NEXT_STAY`].
    pub next_state: u8,
    /// `E_*` bits.
    pub effects: u8,
    /// Grant set for [`E_GRANT`] / [`E_REVOKE`].
    pub grant_set: u8,
    /// State after the idle timeout.
    pub idle_rollback: u8,
    /// State after the hard timeout.
    pub hard_rollback: u8,
    /// Idle timeout to arm (0 = none, unless kept).
    pub idle_ns: u64,
    /// Hard timeout to arm (0 = none, unless kept).
    pub hard_ns: u64,
    /// Key in [`MAP_ONCE`] for [`E_ONCE`].
    pub once: u64,
    /// Index of this transition's counter.
    pub counter: u32,
    /// UDP payload the packet must carry: pattern `payload - 1` in [`MAP_PAYLOADS`]
    /// (0 = any payload). A packet without it does not match, and the next, less specific,
    /// key is tried.
    pub payload: u8,
    /// Update set `upd - 1` of the generation ([`regs::MAP_UPDATES`]), 0 = none.
    pub upd: u8,
    /// Action set `act - 1` of the generation ([`acts::MAP_ACTS`]), 0 = none.
    pub act: u8,
    /// Explicit padding.
    pub _pad: u8,
}

/// What a grant set opens, and for how long.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantSet {
    /// Entries used.
    pub len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// How long the grants live.
    pub open_ns: u64,
    /// (protocol, port) pairs, `protos[i]` with `ports[i]`.
    pub protos: [u8; GRANT_SET_PORTS],
    /// Ports.
    pub ports: [u16; GRANT_SET_PORTS],
}

/// State table key: the scope fields of a packet, per machine.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// Machine.
    pub machine: u8,
    /// Address family of the address fields (0 if none).
    pub family: u8,
    /// L4 protocol, when in scope.
    pub proto: u8,
    /// The table the key lives in: 0 the LRU tables, [`TABLE_FIXED`] the preallocated ones
    /// (a machine with `table = "fixed"`, [`M_FIXED`]).
    pub table: u8,
    /// Port fields in scope order.
    pub ports: [u16; 2],
    /// Address fields in scope order.
    pub addrs: [[u8; 16]; 2],
}

/// [`StateKey::table`] of a machine with a fixed table.
pub const TABLE_FIXED: u8 = 1;
/// [`Scope::l2`] bit: the scope's keys live in the fixed tables.
pub const SCOPE_FIXED: u8 = 16;
/// Machine flag: the machine's states and registers live in the preallocated tables
/// ([`MAP_FIXED_STATES`], `regs::MAP_FIXED_REGS`): never evicted; a new flow that finds
/// no room is refused (and [`CTL_FIXED_FULL`] set).
pub const M_FIXED: u8 = 8;
/// Map: states of machines with a fixed table (preallocated hash).
pub const MAP_FIXED_STATES: &str = "SW_XFSM_FSTATES";
/// Index in the control array: non-zero since a fixed table refused a new entry, until
/// user space sees room again (the `table_full` condition reads it).
pub const CTL_FIXED_FULL: u32 = 2;

/// State table value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateVal {
    /// Current state.
    pub state: u8,
    /// State after the idle deadline.
    pub idle_rollback: u8,
    /// State after the hard deadline.
    pub hard_rollback: u8,
    /// Explicit padding.
    pub _pad: [u8; 5],
    /// Idle deadline (kernel clock), 0 = none.
    pub idle_deadline: u64,
    /// Hard deadline, 0 = none.
    pub hard_deadline: u64,
}

/// Lock table key (4-aligned: it is written a 32-bit word at a time; 20 bytes, as before).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey {
    /// Machine.
    pub machine: u8,
    /// Address family.
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// Source address.
    pub addr: [u8; 16],
}

/// Lock table value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockVal {
    /// Failures in the current window.
    pub fails: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Start of the current window.
    pub window_start: u64,
    /// Locked until this time (0 = not locked).
    pub locked_until: u64,
}

/// Why an event was sent.
pub mod reason {
    /// A transition changed the state.
    pub const TRANSITION: u8 = 1;
    /// The idle timeout rolled the state back.
    pub const IDLE_TIMEOUT: u8 = 2;
    /// The hard timeout rolled the state back.
    pub const HARD_TIMEOUT: u8 = 3;
    /// The source was locked out.
    pub const LOCKOUT: u8 = 4;
    /// A grant was refused because the grant table is full.
    pub const GRANT_REFUSED: u8 = 5;
    /// A grant set was opened.
    pub const GRANTED: u8 = 6;
    /// A grant set was revoked.
    pub const REVOKED: u8 = 7;
    /// A transition's `event` action (the state may be unchanged).
    pub const ACTION: u8 = 8;
}

/// An event, sent to user space by ring buffer on state changes (never per packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Kernel clock.
    pub time_ns: u64,
    /// Source address of the packet.
    pub addr: [u8; 16],
    /// Address family.
    pub family: u8,
    /// Machine.
    pub machine: u8,
    /// State before.
    pub old_state: u8,
    /// State after.
    pub new_state: u8,
    /// [`reason`] code.
    pub reason: u8,
    /// L4 protocol of the packet.
    pub proto: u8,
    /// Destination port of the packet.
    pub port: u16,
    /// Grant set (for grant events).
    pub grant_set: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// A transition event of an extended machine: the lookup key's per-flow registers as
    /// the packet found them (before the transition's updates); zeros otherwise.
    pub regs: [u64; FLOW_REGS],
}

/// Stage counters (index into [`MAP_STATS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets the stage looked at.
    Seen = 0,
    /// State table lookups made (the activity filter saved the others).
    Lookups = 1,
    /// Transitions taken.
    Transitions = 2,
    /// Failures counted (wrong knocks in strict mode).
    Failures = 3,
    /// Sources locked out.
    Lockouts = 4,
    /// Packets ignored because their source is locked out.
    LockedPackets = 5,
    /// Grants opened.
    Grants = 6,
    /// Grants refused: grant table full.
    GrantsRefused = 7,
    /// Lock table full (fail closed): failure records refused, and knocks that would start
    /// a sequence from a source without a record turned away.
    LockTableFull = 8,
    /// Events lost: ring buffer full.
    EventsLost = 9,
    /// Packets dropped by a transition's action.
    Dropped = 10,
    /// Timeout rollbacks.
    Timeouts = 11,
    /// One-time sequences knocked again after their use (refused, counted as failures).
    OnceRefused = 12,
    /// Grants not written for another reason than a full table (an error of the map
    /// update other than `E2BIG`).
    GrantsFailed = 13,
    /// Register updates not made: the per-flow register table is full.
    RegsFull = 14,
    /// Register updates not made: an entry's or the machine's register lock stayed taken.
    RegsBusy = 15,
    /// A new flow of a fixed-table machine found no room.
    TableFull = 16,
}

/// Number of stage counters.
pub const COUNTERS: u32 = 17;
/// Counter names, in index order.
pub const COUNTER_NAMES: [&str; COUNTERS as usize] = [
    "seen",
    "lookups",
    "transitions",
    "failures",
    "lockouts",
    "locked_packets",
    "grants",
    "grants_refused",
    "lock_table_full",
    "events_lost",
    "dropped",
    "timeouts",
    "once_refused",
    "grants_failed",
    "regs_full",
    "regs_busy",
    "table_full",
];

/// What writing a grant came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Written (inserted, or an existing grant extended).
    Granted,
    /// Refused: the grant table is full (the kernel's `E2BIG`).
    Full,
    /// Not written for another reason.
    Failed,
}

/// Builds the key of `scope` for packet `p` and machine `m`.
pub fn build_key(scope: &Scope, p: &PacketInfo, m: u8) -> StateKey {
    let mut k = StateKey {
        machine: 0,
        family: 0,
        proto: 0,
        table: 0,
        ports: [0; 2],
        addrs: [[0; 16]; 2],
    };
    build_key_into(scope, p, m, &mut k);
    k
}

/// Word `i` (0 or 1) of a MAC address padded with zeros to 8 bytes (loads, no copies:
/// the key builder's frame stays small).
#[inline(always)]
fn mac_word(a: &[u8; 6], i: usize) -> u32 {
    let p = a.as_ptr();
    // SAFETY: 4 bytes at 0 and 2 bytes at 4 lie within the 6.
    unsafe {
        if i == 0 {
            core::ptr::read_unaligned(p as *const u32)
        } else {
            let h = core::ptr::read_unaligned(p.add(4) as *const u16) as u32;
            if cfg!(target_endian = "little") {
                h
            } else {
                h << 16
            }
        }
    }
}

#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}

// The key builder reads the packet's addresses a 32-bit word at a time
// (`crate::mem::addr_word`; the packet's are asserted in `crate::parse`) and writes the
// key, and the activity filter reads it, a 64-bit word at a time: five words, 8-aligned.
const _: () = assert!(
    core::mem::align_of::<StateKey>() >= 8
        && core::mem::size_of::<StateKey>() == 40
        && core::mem::offset_of!(StateKey, addrs) == 8
);

/// Word `i` (0 to 3) of an address of `PacketInfo` or `StateKey`.
#[inline(always)]
fn aligned_word(a: &[u8; 16], i: usize) -> u32 {
    // SAFETY: both types hold their addresses 4-aligned (asserted above and in `parse`).
    unsafe { crate::mem::addr_word(a, i) }
}

/// Two 32-bit words as the 64-bit word that holds them in this order in memory.
#[inline(always)]
fn words(w: [u32; 2]) -> u64 {
    let (a, b) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
    u64::from_ne_bytes([a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]])
}

/// Fills `k` with the key of `scope` for packet `p` and machine `m`, with no branches (the
/// masks select the fields).
#[inline(always)]
pub fn build_key_into(scope: &Scope, p: &PacketInfo, m: u8, k: &mut StateKey) {
    // The key is written a 64-bit word at a time: the kernel's hash reads it a 32-bit word
    // at a time and the activity filter's a 64-bit word at a time, and a load that spans
    // several narrower stores just made waits until they reach the cache (some 5 ns a
    // lookup, in `perf` of the knock row); one contained in a wider store does not.
    let kw = k as *mut StateKey as *mut u64;
    let mut a = 0;
    while a < 2 {
        let ms = (scope.a_src[a] as u32).wrapping_mul(0x0101_0101);
        let md = (scope.a_dst[a] as u32).wrapping_mul(0x0101_0101);
        let mut pair = [0u32; 2];
        let mut i = 0;
        while i < 4 {
            let mut w = (aligned_word(&p.saddr, i) & ms) | (aligned_word(&p.daddr, i) & md);
            if i < 2 {
                // A MAC in this slot: its 6 bytes, then zeros.
                let l2s = 0u32.wrapping_sub(((scope.l2 >> a) & 1) as u32);
                let l2d = 0u32.wrapping_sub(((scope.l2 >> (a + 2)) & 1) as u32);
                w |= (mac_word(&p.smac, i) & l2s) | (mac_word(&p.dmac, i) & l2d);
            }
            pair[i & 1] = w;
            if i & 1 == 1 {
                // SAFETY: words 1 to 4 of the key are its addresses (8-aligned: asserted
                // above).
                unsafe { core::ptr::write(kw.add(1 + 2 * a + i / 2), words(pair)) };
            }
            i += 1;
        }
        a += 1;
    }
    // Machine, family, protocol and table (the fixed one when the scope says so), then
    // the ports.
    let p0 = ((p.sport & scope.p_src[0]) | (p.dport & scope.p_dst[0])).to_ne_bytes();
    let p1 = ((p.sport & scope.p_src[1]) | (p.dport & scope.p_dst[1])).to_ne_bytes();
    let head = [
        m,
        p.family & scope.family,
        p.l4proto & scope.proto,
        (scope.l2 & SCOPE_FIXED) >> 4,
    ];
    let ports = [p0[0], p0[1], p1[0], p1[1]];
    // SAFETY: word 0 of the key: the four bytes above and the two ports.
    unsafe {
        core::ptr::write(
            kw,
            words([u32::from_ne_bytes(head), u32::from_ne_bytes(ports)]),
        )
    };
    if scope.bidir != 0 {
        order_ends(k);
    }
}

/// [`bucket`] of a key.
#[inline(always)]
fn bucket_of(k: &StateKey) -> u32 {
    bucket(k)
}

/// Puts a bidirectional key's two (address, port) ends in order: the smaller first,
/// addresses compared as bytes in order, then ports. Word by word and in place, so that
/// it needs (almost) no BPF stack of its own; a function of its own, so that the key
/// builder's frame does not grow.
#[inline(never)]
fn order_ends(k: &mut StateKey) {
    // The addresses as four 64-bit words (they start 8 bytes into the key): in byte
    // order, a big-endian comparison of the words is the comparison of the bytes.
    let w = k.addrs.as_mut_ptr() as *mut u64;
    // SAFETY: `addrs` is 32 bytes (unaligned reads: a key on the stack is 2-aligned).
    let (a0, a1, b0, b1) = unsafe {
        (
            core::ptr::read_unaligned(w),
            core::ptr::read_unaligned(w.add(1)),
            core::ptr::read_unaligned(w.add(2)),
            core::ptr::read_unaligned(w.add(3)),
        )
    };
    let (x0, x1, y0, y1) = (
        u64::from_be(a0),
        u64::from_be(a1),
        u64::from_be(b0),
        u64::from_be(b1),
    );
    let swap = if x0 != y0 {
        y0 < x0
    } else if x1 != y1 {
        y1 < x1
    } else {
        k.ports[1] < k.ports[0]
    };
    if swap {
        // SAFETY: as above.
        unsafe {
            core::ptr::write_unaligned(w, b0);
            core::ptr::write_unaligned(w.add(1), b1);
            core::ptr::write_unaligned(w.add(2), a0);
            core::ptr::write_unaligned(w.add(3), a1);
        }
        k.ports.swap(0, 1);
    }
}

/// Address-filter bucket of an address.
#[inline(always)]
pub fn addr_bucket(a: &[u8; 16]) -> u32 {
    let mut h: u32 = 0x2545_f491;
    let mut i = 0;
    while i < 4 {
        h = (h ^ word(a, i)).wrapping_mul(0x9e37_79b1);
        i += 1;
    }
    (h >> 16) % ADDR_BUCKETS
}

/// [`Work::kbucket`] when the lookup key's bucket was not computed.
pub const NO_BUCKET: u32 = u32::MAX;

/// Activity-filter bucket of a key: its five 64-bit words, each multiplied by a constant
/// of its own, summed, then mixed. The products do not wait for each other: a chain of ten
/// dependent multiplies (the filter's hash before) was a tenth of a knock packet's time.
/// The buckets of pinned filters written with that hash are rebuilt from the state tables
/// when the stage is written (each entry's [`active_until`]).
#[inline(always)]
pub fn bucket(k: &StateKey) -> u32 {
    let w = k as *const StateKey as *const u64;
    let mut h: u64 = 0;
    let mut i = 0;
    while i < 5 {
        // SAFETY: a key is five 64-bit words, 8-aligned (asserted above).
        let x = unsafe { core::ptr::read(w.add(i)) };
        let c =
            0x9e37_79b9_7f4a_7c15u64.wrapping_add((i as u64).wrapping_mul(0x6a09_e667_f3bc_c908));
        h = h.wrapping_add(x.wrapping_mul(c));
        i += 1;
    }
    h ^= h >> 31;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((h >> 40) as u32) % ACTIVE_BUCKETS
}

/// Writes the lock key of a packet's source for machine `m` into `k`, a 32-bit store a
/// word (its 20 bytes hold no 64-bit words; see [`build_key_into`] for why whole words).
#[inline(always)]
pub fn lock_key_into(p: &PacketInfo, m: u8, k: &mut LockKey) {
    let w = k as *mut LockKey as *mut u32;
    // SAFETY: five 32-bit words: machine, family and padding, then the address (a
    // `LockKey` is 20 bytes, 4-aligned: one store each, where unaligned stores were four
    // byte stores each in BPF).
    unsafe {
        core::ptr::write(w, u32::from_ne_bytes([m, p.family, 0, 0]));
        let mut i = 0;
        while i < 4 {
            core::ptr::write(w.add(1 + i), aligned_word(&p.saddr, i));
            i += 1;
        }
    }
}

const _: () =
    assert!(core::mem::size_of::<LockKey>() == 20 && core::mem::offset_of!(LockKey, addr) == 4);

/// Prefilter bit of machine `m` for an L4 protocol.
pub fn port_bit(l4proto: u8, m: usize) -> u16 {
    match l4proto {
        proto::TCP => 1 << m,
        proto::UDP => 1 << (m + 8),
        _ => 0,
    }
}

/// Everything [`step`] reads and writes. User space implements it over plain maps for the
/// reference model; the kernel program does the same things on BPF maps.
pub trait Tables {
    /// Control word.
    fn ctl(&self, idx: u32) -> u32;
    /// Sets a control word.
    fn set_ctl(&mut self, idx: u32, v: u32);
    /// Machine `m` of a generation.
    fn machine(&self, generation: u32, m: usize) -> Machine;
    /// [`Tables::machine`] into `out` (the kernel copies the map value a word at a time,
    /// without a copy on the stack between).
    #[inline(always)]
    fn machine_into(&self, generation: u32, m: usize, out: &mut Machine) {
        *out = self.machine(generation, m);
    }
    /// Prefilter bits of a port in a generation.
    fn ports(&self, generation: u32, port: u16) -> u16;
    /// A transition.
    fn trans(&self, k: &TransKey) -> Option<Trans>;
    /// [`Tables::trans`] into `out`; false when there is none (`out` unchanged).
    #[inline(always)]
    fn trans_into(&self, k: &TransKey, out: &mut Trans) -> bool {
        match self.trans(k) {
            Some(t) => {
                *out = t;
                true
            }
            None => false,
        }
    }
    /// A grant set.
    fn grant_set(&self, generation: u32, set: u8) -> GrantSet;
    /// Activity filter bucket.
    fn active(&self, b: u32) -> u64;
    /// Sets an activity filter bucket.
    fn set_active(&mut self, b: u32, until: u64);
    /// Address filter bucket.
    fn addr_active(&self, b: u32) -> u64;
    /// Sets an address filter bucket.
    fn set_addr_active(&mut self, b: u32, until: u64);
    /// State lookup.
    fn state(&mut self, k: &StateKey) -> Option<StateVal>;
    /// State lookup into `out`; false (and `out` unchanged) when there is none.
    #[inline(always)]
    fn state_into(&mut self, k: &StateKey, out: &mut StateVal) -> bool {
        match self.state(k) {
            Some(v) => {
                *out = v;
                true
            }
            None => false,
        }
    }
    /// State write.
    fn put_state(&mut self, k: &StateKey, v: &StateVal);
    /// State delete.
    fn del_state(&mut self, k: &StateKey);
    /// Lock record.
    fn lock(&self, k: &LockKey) -> Option<LockVal>;
    /// Writes a lock record; false when the table is full (a new record refused).
    fn put_lock(&mut self, k: &LockKey, v: &LockVal) -> bool;
    /// Inserts or extends a grant (an existing grant's later expiry is kept). A full table
    /// refuses a new grant ([`GrantOutcome::Full`]).
    fn grant(&mut self, k: &GrantKey, expires_ns: u64) -> GrantOutcome;
    /// Deletes a grant.
    fn revoke(&mut self, k: &GrantKey);
    /// True when the packet's captured payload equals pattern `idx - 1` of the generation
    /// (called only for a packet whose payload was captured: [`Ctx::snap`]).
    fn payload_matches(&self, generation: u32, idx: u8) -> bool;
    /// Removes a one-time key; true when it was there (this packet used it).
    fn take_once(&mut self, key: u64) -> bool;
    /// True when the packet's source is on the `detect` allowlist
    /// ([`crate::detect::MAP_ALLOW`]); asked only when some machine is exempt.
    #[inline(always)]
    fn allowed(&mut self, _p: &PacketInfo) -> bool {
        false
    }
    /// Adds one to a stage counter.
    fn count(&mut self, c: Counter);
    /// Adds one to a transition counter.
    fn count_trans(&mut self, idx: u32);
    /// Sends an event: `fill` writes it in place (zeroed first), so that the kernel never
    /// holds one on its stack.
    fn event<F: FnOnce(&mut Event)>(&mut self, fill: F);
    /// Machine `m`'s conditions of a generation, read where they are (the kernel's map
    /// value: no copy per packet).
    fn conds(&self, generation: u32, m: usize) -> Option<&CondSet>;
    /// Copies action set `idx` of a generation into `out`.
    fn act_set_into(&self, generation: u32, idx: u32, out: &mut acts::ActSet);
    /// True when machine `m` may send another event at `now`, an action's or an extended
    /// machine's transition event (at most
    /// [`acts::EVENTS_PER_SEC`] per second; the kernel counts per CPU), counting it.
    fn event_allowed(&mut self, m: usize, now: u64) -> bool;
    /// The per-flow registers at key `k` (0s when there is no entry). An implementation
    /// may keep the entry it found for an [`Tables::update_regs`] told `kept`.
    fn flow_regs(&self, k: &StateKey, out: &mut [u64; FLOW_REGS]);
    /// Machine `m`'s global registers.
    fn global_regs(&self, m: usize, out: &mut [u64; GLOBAL_REGS]);
    /// Runs `f` on update set `set` of a generation (read where it is), the registers at
    /// key `k` (created as 0s if absent) and machine `m`'s global registers, holding both
    /// locks; the result says whether it ran (a set that does not exist runs nothing).
    /// `flow` false (a machine without per-flow registers): no entry is looked up or
    /// created, and `f` gets zeros it must leave alone. The global lock is taken only when
    /// the set touches global registers ([`UpdSet::globals`]; `f` must otherwise leave
    /// them alone). `kept`: `k` is the key whose registers [`Tables::flow_regs`] read last,
    /// in this machine's run, and the entry it found (if it kept one) may be used without
    /// a second lookup.
    #[allow(clippy::too_many_arguments)]
    fn update_regs<F: FnOnce(&UpdSet, &mut [u64; FLOW_REGS], &mut [u64; GLOBAL_REGS])>(
        &mut self,
        k: &StateKey,
        kept: bool,
        m: usize,
        flow: bool,
        generation: u32,
        set: u32,
        f: F,
    ) -> RegsOutcome;
}

/// What [`Tables::update_regs`] came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegsOutcome {
    /// The updates ran.
    Done,
    /// No room for a new per-flow entry.
    Full,
    /// A lock stayed taken.
    Busy,
}

/// Per-packet context handed to [`run_machine`] (BPF calls take at most 5 arguments).
pub struct Ctx<'a> {
    /// The packet.
    pub p: &'a PacketInfo,
    /// Kernel time.
    pub now: u64,
    /// Active table generation.
    pub generation: u32,
    /// Port prefilter bits of the packet's destination port.
    pub pbits: u16,
    /// Enabled machines.
    pub mask: u32,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub dir: u8,
    /// The packet's UDP payload was captured (see [`wants_payload`]).
    pub snap: bool,
}

/// Packed form of a context's tables part (generation, direction, capture, prefilter bits,
/// machines) for the kernel's loop, whose calls take at most five arguments.
impl Ctx<'_> {
    /// Packs everything but the packet and the time.
    pub fn pack(&self) -> u64 {
        self.generation as u64 & 1
            | (self.dir as u64 & 1) << 1
            | (self.snap as u64) << 2
            | (self.pbits as u64) << 8
            | (self.mask as u64) << 32
    }

    /// The inverse of [`Ctx::pack`].
    pub fn unpack(p: &PacketInfo, now: u64, packed: u64) -> Ctx<'_> {
        Ctx {
            p,
            now,
            generation: (packed & 1) as u32,
            dir: ((packed >> 1) & 1) as u8,
            snap: (packed >> 2) & 1 != 0,
            pbits: (packed >> 8) as u16,
            mask: (packed >> 32) as u32,
        }
    }
}

/// True when the packet's UDP payload must be captured before the machines run: some
/// transition of the generation matches a payload (`ctl_gen` has [`CTL_PAYLOAD`]), the
/// packet is UDP to a port some machine has a transition on, and the payload is at most
/// [`PAYLOAD_MAX`] bytes (a longer one matches no pattern).
#[inline(always)]
pub fn wants_payload(ctl_gen: u32, c: &Ctx<'_>) -> bool {
    ctl_gen & CTL_PAYLOAD != 0
        && c.p.l4proto == proto::UDP
        && c.pbits >> 8 != 0
        && c.p.payload_len as usize <= PAYLOAD_MAX
}

/// [`Machine::levels`] bit: some transition names a protocol and a port.
pub const LEVEL_PORT: u8 = 1;
/// ... a protocol and any port.
pub const LEVEL_PROTO: u8 = 2;
/// ... any protocol.
pub const LEVEL_ANY: u8 = 4;

/// The transition for the packet, most specific key first (protocol and port, then the
/// protocol, then any), skipping the kinds of key machine `levels` says do not exist.
#[inline(always)]
fn find_trans<T: Tables>(t: &T, c: &Ctx<'_>, levels: u8, k: &mut TransKey, tr: &mut Trans) -> bool {
    let p = c.p;
    let mut i = 0;
    while i < 3 {
        if levels != 0 && levels & (1 << i) == 0 {
            i += 1;
            continue;
        }
        // `k` holds generation, machine, state, direction and conditions (kept in the
        // caller's working memory: the BPF stack has no room for more registers here).
        k.set_level(
            if i < 2 { p.l4proto } else { 0 },
            if i == 0 { p.dport } else { 0 },
        );
        if t.trans_into(k, tr) {
            let flags_ok = p.l4proto != proto::TCP || p.tcp_flags & tr.flags_mask == tr.flags_value;
            let payload_ok =
                tr.payload == 0 || (c.snap && t.payload_matches(c.generation, tr.payload));
            if flags_ok && payload_ok {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Sends an event; `what` packs machine, old state, new state and reason, one byte each.
#[inline(never)]
fn emit<T: Tables>(t: &mut T, c: &Ctx<'_>, what: u32, set: u32, regs: Option<&[u64; FLOW_REGS]>) {
    t.event(|e| {
        e.time_ns = c.now;
        crate::mem::copy_bytes(&mut e.addr, &c.p.saddr);
        e.family = c.p.family;
        e.machine = what as u8;
        e.old_state = (what >> 8) as u8;
        e.new_state = (what >> 16) as u8;
        e.reason = (what >> 24) as u8;
        e.proto = c.p.l4proto;
        e.port = c.p.dport;
        e.grant_set = set;
        if let Some(r) = regs {
            crate::mem::copy_words(&mut e.regs, r);
        }
    });
}

fn what(m: u8, old: u8, new: u8, reason: u8) -> u32 {
    m as u32 | (old as u32) << 8 | (new as u32) << 16 | (reason as u32) << 24
}

/// Grant key for a packet's source and one entry of a grant set.
pub fn grant_key(p: &PacketInfo, proto: u8, port: u16) -> GrantKey {
    let family = if p.family == 6 { FAMILY_V6 } else { FAMILY_V4 };
    GrantKey {
        addr: p.saddr,
        family,
        proto,
        port,
    }
}

/// Records a failure for `w.lk`; returns true when the source is now locked out.
#[inline(never)]
fn record_failure<T: Tables>(t: &mut T, w: &mut Work, now: u64) -> bool {
    t.count(Counter::Failures);
    w.lock = t.lock(&w.lk).unwrap_or_default();
    if w.lock.fails == 0 || now.saturating_sub(w.lock.window_start) > w.mach.fail_window_ns {
        w.lock.fails = 0;
        w.lock.window_start = now;
    }
    w.lock.fails += 1;
    let locked = w.lock.fails >= w.mach.fail_max;
    if locked {
        w.lock.locked_until = now + w.mach.lock_ns;
        w.lock.fails = 0;
    }
    if !t.put_lock(&w.lk, &w.lock) {
        t.count(Counter::LockTableFull);
        t.set_ctl(CTL_LOCK_FULL, 1);
        return false;
    }
    if locked {
        t.count(Counter::Lockouts);
    }
    locked
}

/// Opens or revokes a grant set for the packet's source; returns the event reason.
#[inline(never)]
fn apply_grants<T: Tables>(t: &mut T, c: &Ctx<'_>, set: u8, revoke: bool) -> u8 {
    let gs = t.grant_set(c.generation, set);
    let mut refused = false;
    let mut i = 0usize;
    while i < GRANT_SET_PORTS {
        if i as u32 >= gs.len {
            break;
        }
        let gk = grant_key(c.p, gs.protos[i], gs.ports[i]);
        if revoke {
            t.revoke(&gk);
        } else {
            match t.grant(&gk, c.now + gs.open_ns) {
                GrantOutcome::Granted => t.count(Counter::Grants),
                GrantOutcome::Full => {
                    t.count(Counter::GrantsRefused);
                    refused = true;
                }
                GrantOutcome::Failed => {
                    t.count(Counter::GrantsFailed);
                    refused = true;
                }
            }
        }
        i += 1;
    }
    if revoke {
        reason::REVOKED
    } else if refused {
        reason::GRANT_REFUSED
    } else {
        reason::GRANTED
    }
}

/// Working memory of one machine step. The kernel keeps it in a per-CPU map slot (the
/// BPF stack is 512 bytes for the whole call chain), the reference on its stack.
/// [`run_machine`] decides and fills it, and runs the updates at the lookup key;
/// [`commit_machine`] writes the state it holds and runs the updates at another update key
/// (two calls, so that the kernel's call chain never holds both).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// The machine.
    pub mach: Machine,
    /// Lookup key.
    pub key: StateKey,
    /// Update key (built by the commit).
    pub ukey: StateKey,
    /// Lock key.
    pub lk: LockKey,
    /// Non-zero when the commit has something to write.
    pub write: u8,
    /// Non-zero when an entry exists at the lookup key.
    pub exists: u8,
    /// Non-zero when there is a lock record for the source.
    pub has_lock: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// The entry looked up (zero if none).
    pub val: StateVal,
    /// The state to write.
    pub nv: StateVal,
    /// The transition taken.
    pub tr: Trans,
    /// A lock record.
    pub lock: LockVal,
    /// The packet's time (the updates read it).
    pub now: u64,
    /// The lookup key's per-flow registers (extended machines).
    pub regs: [u64; FLOW_REGS],
    /// The machine's global registers.
    pub glob: [u64; GLOBAL_REGS],
    /// The transition key being searched.
    pub tk: TransKey,
    /// The packet's metadata ([`regs::opnd::META`]): 0 when the packet arrives (the stage
    /// resets it before its first machine), then what the machines before wrote.
    pub meta: u64,
    /// Always zero: the kernel inserts a new flow's registers from here (not the stack).
    pub zero: regs::FlowRegs,
    /// Non-zero when the lookup key has no state entry (a new flow).
    pub fresh: u32,
    /// The lookup key's activity bucket, or [`NO_BUCKET`] when it was not needed (the
    /// commit reuses it when the update key is the lookup key).
    pub kbucket: u32,
    /// The packet's actions so far ([`acts::act`] bits; reset with `meta`).
    pub fx: u32,
    /// Mark to set ([`acts::act::MARK`]).
    pub mark: u32,
    /// Interface to forward to, 0 = flood ([`acts::act::FWD`]).
    pub fwd: u32,
    /// DSCP to set ([`acts::act::DSCP`]).
    pub dscp: u32,
    /// The transition's action set.
    pub acts: acts::ActSet,
    /// The packet's UDP payload, when a transition may need it (kernel only: its own
    /// field, so that the programs need no map of their own for it).
    pub snap: Payload,
}

// Operands read from the packet, conditions and updates (`regs` holds their compiled
// form and the arithmetic).

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
fn fnv(mut h: u64, b: u8) -> u64 {
    h ^= b as u64;
    h.wrapping_mul(FNV_PRIME)
}

/// FNV-1a 64 over the packet fields in `mask` ([`hash_field`]), in network byte order.
#[inline(always)]
pub fn hash_fields(p: &PacketInfo, mask: u64) -> u64 {
    let mut h = FNV_OFFSET;
    let alen = if p.family == 6 { 16 } else { 4 };
    let mut i = 0;
    while i < 16 {
        if mask & hash_field::SRC_IP != 0 && i < alen {
            h = fnv(h, p.saddr[i]);
        }
        i += 1;
    }
    i = 0;
    while i < 16 {
        if mask & hash_field::DST_IP != 0 && i < alen {
            h = fnv(h, p.daddr[i]);
        }
        i += 1;
    }
    if mask & hash_field::PROTO != 0 {
        h = fnv(h, p.l4proto);
    }
    if mask & hash_field::SPORT != 0 {
        h = fnv(h, (p.sport >> 8) as u8);
        h = fnv(h, p.sport as u8);
    }
    if mask & hash_field::DPORT != 0 {
        h = fnv(h, (p.dport >> 8) as u8);
        h = fnv(h, p.dport as u8);
    }
    h
}

/// The value of an operand.
#[inline(always)]
pub fn value(
    o: &Operand,
    p: &PacketInfo,
    now: u64,
    r: &[u64; FLOW_REGS],
    g: &[u64; GLOBAL_REGS],
    meta: u64,
) -> u64 {
    raw_value(o, p, now, r, g, meta) >> (o.shr & 63)
}

#[inline(always)]
fn raw_value(
    o: &Operand,
    p: &PacketInfo,
    now: u64,
    r: &[u64; FLOW_REGS],
    g: &[u64; GLOBAL_REGS],
    meta: u64,
) -> u64 {
    let i = o.idx as usize;
    match o.kind {
        opnd::CONST => o.k,
        opnd::REG => r[i & (FLOW_REGS - 1)],
        opnd::GLOBAL => g[i & (GLOBAL_REGS - 1)],
        opnd::PKT_LEN => p.pkt_len as u64,
        opnd::SPORT => p.sport as u64,
        opnd::DPORT => p.dport as u64,
        opnd::PROTO => p.l4proto as u64,
        opnd::TCP_FLAGS => p.tcp_flags as u64,
        opnd::SINCE => now.saturating_sub(r[i & (FLOW_REGS - 1)]),
        opnd::GSINCE => now.saturating_sub(g[i & (GLOBAL_REGS - 1)]),
        opnd::NOW => now,
        opnd::HASH => hash_fields(p, o.k),
        opnd::META => meta,
        opnd::IN_PORT => p.ifindex as u64,
        _ => 0,
    }
}

/// The condition vector: bit `i` set when condition `i` holds.
#[inline(always)]
pub fn conditions(
    cs: &CondSet,
    p: &PacketInfo,
    now: u64,
    r: &[u64; FLOW_REGS],
    g: &[u64; GLOBAL_REGS],
    meta: u64,
) -> u8 {
    let mut v = 0u8;
    let mut i = 0;
    while i < MAX_CONDS {
        if (i as u32) < cs.n {
            let c = &cs.c[i];
            let a = value(&c.a, p, now, r, g, meta);
            let b = value(&c.b, p, now, r, g, meta);
            let holds = match c.op {
                cmp::LT => a < b,
                cmp::LE => a <= b,
                cmp::EQ => a == b,
                cmp::NE => a != b,
                cmp::GE => a >= b,
                cmp::GT => a > b,
                _ => false,
            };
            v |= (holds as u8) << i;
        }
        i += 1;
    }
    v
}

/// Runs a transition's updates on the registers, in order (each sees the ones before it).
#[inline(always)]
pub fn run_updates(
    us: &UpdSet,
    p: &PacketInfo,
    now: u64,
    r: &mut [u64; FLOW_REGS],
    g: &mut [u64; GLOBAL_REGS],
    meta: &mut u64,
) {
    let mut i = 0;
    while i < MAX_UPDATES {
        if (i as u32) < us.n {
            let u = &us.u[i];
            let x = value(&u.src, p, now, r, g, *meta);
            let d = (u.dst as usize) & 7;
            if u.dst_kind == opnd::META {
                *meta = apply(u.op, *meta, x, u.shift);
            } else if u.dst_kind == opnd::GLOBAL {
                g[d] = apply(u.op, g[d], x, u.shift);
            } else {
                let d = d & (FLOW_REGS - 1);
                r[d] = apply(u.op, r[d], x, u.shift);
            }
        }
        i += 1;
    }
}

/// The condition vector of an extended machine, from the lookup key's registers (read
/// into `w`).
#[inline(always)]
fn eval_conds<T: Tables>(t: &T, c: &Ctx<'_>, m: usize, w: &mut Work) -> u8 {
    // (`w.regs` is zero for a machine without per-flow registers.)
    if w.mach.flags & M_FLOW_REGS != 0 {
        t.flow_regs(&w.key, &mut w.regs);
    }
    t.global_regs(m, &mut w.glob);
    let Some(cs) = t.conds(c.generation, m) else {
        return 0;
    };
    let cv = conditions(cs, c.p, c.now, &w.regs, &w.glob, w.meta);
    if w.mach.flags & M_FIXED == 0 {
        return cv;
    }
    // A flow with no entry, while the fixed tables are full: it would find no room.
    let full = w.fresh != 0 && t.ctl(CTL_FIXED_FULL) != 0;
    regs::with_table_full(cs, cv, full)
}

/// Finds machine `m`'s transition from `state` into `w.tr`; false when there is none. An
/// extended machine's condition vector is computed first, from the lookup key's registers
/// (read into `w`).
#[inline(always)]
fn lookup_trans<T: Tables>(t: &T, c: &Ctx<'_>, m: usize, state: u8, w: &mut Work) -> bool {
    let cv = if w.mach.flags & M_EXT != 0 {
        eval_conds(t, c, m, w)
    } else {
        0
    };
    w.tk.store(TransKey {
        generation: c.generation as u8,
        machine: m as u8,
        state,
        proto: 0,
        port: 0,
        dir: c.dir,
        conds: cv,
    });
    // Read straight into the working memory; a transition that was read and refused
    // (flags, payload) must leave no update for the commit.
    if find_trans(t, c, w.mach.levels, &mut w.tk, &mut w.tr) {
        return true;
    }
    w.tr.upd = 0;
    false
}

/// Records the transition's action set in the packet's working memory (see [`acts`]).
#[inline(always)]
fn take_acts<T: Tables>(t: &T, c: &Ctx<'_>, w: &mut Work) {
    use acts::act;
    t.act_set_into(c.generation, w.tr.act as u32 - 1, &mut w.acts);
    let f = w.acts.flags;
    if f & act::MARK != 0 {
        w.mark = w.acts.mark;
    }
    if f & act::DSCP != 0 {
        w.dscp = w.acts.dscp as u32;
    }
    if f & act::FWD_REG != 0 {
        // The lookup key's register (read by the conditions: forwarding needs registers,
        // which make the machine extended).
        w.fwd = w.regs[w.acts.reg as usize & (FLOW_REGS - 1)] as u32;
    } else if f & act::FLOOD != 0 {
        w.fwd = 0;
    }
    w.fx |= (f & (act::MARK | act::DSCP)) as u32;
    if f & (act::FWD_REG | act::FLOOD) != 0 {
        w.fx |= act::FWD as u32;
    }
}

/// `run_machine` result bits: drop the packet.
pub const RUN_DROP: u64 = 1;
/// A grant set is to be opened (set id in bits 8..16, event `what` in bits 32..).
pub const RUN_GRANT: u64 = 2;
/// ... revoked rather than opened.
pub const RUN_REVOKE: u64 = 4;

/// Runs machine `m` on the packet; returns `RUN_*` bits. The machine must be enabled
/// (`c.mask`); callers loop over them in index order and call [`commit_machine`] after each.
#[inline(always)]
pub fn run_machine<T: Tables>(t: &mut T, c: &Ctx<'_>, m: usize, w: &mut Work) -> u64 {
    w.write = 0;
    w.tr.upd = 0;
    // Events of machines without registers carry zeros.
    crate::mem::zero_words(&mut w.regs);
    let p = c.p;
    let now = c.now;
    let mm = m as u8;
    t.machine_into(c.generation, m, &mut w.mach);
    build_key_into(&w.mach.lookup, p, mm, &mut w.key);
    let interested = c.pbits & port_bit(p.l4proto, m) != 0
        || (w.mach.flags & M_ANY_PORT != 0
            && any_port_wants(w.mach.any_protos, p.l4proto, p.tcp_flags));
    w.kbucket = NO_BUCKET;
    let stateless = w.mach.flags & M_STATELESS != 0;
    let maybe_active = !stateless
        && (w.mach.flags & M_UNBOUNDED != 0 || {
            w.kbucket = bucket_of(&w.key);
            t.active(w.kbucket) > now
        });
    if !interested && !maybe_active {
        return 0;
    }
    lock_key_into(p, mm, &mut w.lk);
    w.has_lock = 0;
    let mut found = false;
    crate::mem::zero_words(&mut w.val);
    if maybe_active {
        t.count(Counter::Lookups);
        found = t.state_into(&w.key, &mut w.val);
    }
    let mut state = STATE_DEFAULT;
    let mut expired = 0u8;
    w.fresh = !found as u32;
    if found {
        let old = w.val.state;
        state = old;
        if w.val.hard_deadline != 0 && now >= w.val.hard_deadline {
            state = w.val.hard_rollback;
            expired = reason::HARD_TIMEOUT;
        } else if w.val.idle_deadline != 0 && now >= w.val.idle_deadline {
            state = w.val.idle_rollback;
            expired = reason::IDLE_TIMEOUT;
        }
        if expired != 0 {
            t.count(Counter::Timeouts);
            emit(t, c, what(mm, old, state, expired), 0, None);
            // The idle rollback keeps the hard deadline (it still bounds the state rolled
            // back to); the hard rollback ends both.
            w.val.idle_deadline = 0;
            if expired == reason::HARD_TIMEOUT {
                w.val.hard_deadline = 0;
            }
            // The expired entry rolls back in place.
            if state == STATE_DEFAULT {
                t.del_state(&w.key);
            } else {
                w.val.state = state;
                t.put_state(&w.key, &w.val);
            }
        }
    }
    // Lockout (doors only): a source in a root state (DEFAULT, or the door's OPEN) may be
    // locked out. One part-way through a sequence cannot be: the failure that locks a
    // source also sends it back to its root, and a locked source takes no step; so its
    // lock record is not looked up (a hash lookup less for every knock after the first).
    if w.mach.fail_max > 0 && state <= DOOR_OPEN {
        if let Some(l) = t.lock(&w.lk) {
            w.has_lock = 1;
            if l.locked_until > now {
                t.count(Counter::LockedPackets);
                return 0;
            }
        }
    }
    if !lookup_trans(t, c, m, state, w) {
        return 0;
    }
    w.now = now;
    // Fail closed while the lock table is full: no new sequences from unknown sources
    // (each knock turned away is counted).
    if state == STATE_DEFAULT && w.mach.fail_max > 0 && w.has_lock == 0 && t.ctl(CTL_LOCK_FULL) != 0
    {
        t.count(Counter::LockTableFull);
        w.tr.upd = 0;
        return 0;
    }
    t.count(Counter::Transitions);
    t.count_trans(w.tr.counter);
    if w.tr.effects & E_ONCE != 0 && !t.take_once(w.tr.once) {
        // Used already (by anyone): a failed attempt, back to DEFAULT.
        t.count(Counter::OnceRefused);
        w.tr.upd = 0;
        w.tr.effects = E_FAIL;
        w.tr.next_state = STATE_DEFAULT;
        // (Volatile: two adjacent zero stores become a `memset` call otherwise.)
        // SAFETY: plain stores to fields of `w`.
        unsafe {
            core::ptr::write_volatile(&mut w.tr.idle_ns, 0);
            core::ptr::write_volatile(&mut w.tr.hard_ns, 0);
        }
    }
    let new_state = if w.tr.next_state == NEXT_STAY {
        state
    } else {
        w.tr.next_state
    };
    let mut out = 0;
    if w.tr.action == ACT_DROP {
        out |= RUN_DROP;
        t.count(Counter::Dropped);
    }
    if w.tr.act != 0 {
        take_acts(t, c, w);
    }
    if w.tr.effects & E_FAIL != 0 && w.mach.fail_max > 0 && record_failure(t, w, now) {
        emit(
            t,
            c,
            what(mm, state, STATE_DEFAULT, reason::LOCKOUT),
            0,
            None,
        );
    }
    if w.tr.effects & (E_GRANT | E_REVOKE) != 0 {
        // Applied by `finish` after the machine loop (keeps each machine's body small for
        // the verifier): grant set, revoke flag, states for the event.
        out |= RUN_GRANT
            | ((w.tr.effects & E_REVOKE != 0) as u64 * RUN_REVOKE)
            | (w.tr.grant_set as u64) << 8
            | (what(mm, state, new_state, 0) as u64) << 32;
    } else if new_state != state {
        // An extended machine's transition events share its action events' budget (a
        // flood must not become an event per packet); a door reports every transition.
        if w.mach.flags & M_EXT == 0 || t.event_allowed(m, now) {
            emit(
                t,
                c,
                what(mm, state, new_state, reason::TRANSITION),
                0,
                Some(&w.regs),
            );
        }
    } else if w.tr.act != 0 && w.acts.flags & acts::act::EVENT != 0 && t.event_allowed(m, now) {
        emit(
            t,
            c,
            what(mm, state, new_state, reason::ACTION),
            0,
            Some(&w.regs),
        );
    }
    // Timers: armed by the transition, or kept.
    // Cleared word by word, then filled (a struct literal's zeroes become a byte-loop
    // `memset` call in BPF: see `crate::mem`).
    crate::mem::zero_words(&mut w.nv);
    w.nv.state = new_state;
    w.nv.idle_rollback = w.tr.idle_rollback;
    w.nv.hard_rollback = w.tr.hard_rollback;
    if w.tr.effects & E_KEEP_IDLE != 0 {
        w.nv.idle_deadline = w.val.idle_deadline;
        w.nv.idle_rollback = w.val.idle_rollback;
    } else if w.tr.idle_ns != 0 {
        w.nv.idle_deadline = now + w.tr.idle_ns;
    }
    if w.tr.effects & E_KEEP_HARD != 0 {
        w.nv.hard_deadline = w.val.hard_deadline;
        w.nv.hard_rollback = w.val.hard_rollback;
    } else if w.tr.hard_ns != 0 {
        w.nv.hard_deadline = now + w.tr.hard_ns;
    }
    // Nothing to write for a DEFAULT -> DEFAULT transition with no entry, nor for one that
    // stays and keeps both timers (the entry, if any, is already what it would write).
    let keeps_all = w.tr.next_state == NEXT_STAY
        && w.tr.effects & (E_KEEP_HARD | E_KEEP_IDLE) == E_KEEP_HARD | E_KEEP_IDLE;
    if !keeps_all
        && !stateless
        && (new_state != STATE_DEFAULT || found || w.mach.update != w.mach.lookup)
    {
        // An entry exists at the lookup key unless there was none or it expired to DEFAULT.
        w.exists = (found && (expired == 0 || state != STATE_DEFAULT)) as u8;
        w.write = 1;
    }
    // Updates at the lookup key run here, where the conditions just read that key's
    // registers (the kernel keeps the entry it found: one lookup per packet); updates at
    // another key wait for the commit.
    if w.tr.upd != 0 && w.mach.update == w.mach.lookup {
        apply_updates(t, c, m, w, true);
    }
    out
}

/// Runs the transition's update set on the registers at the lookup key (`at_lookup`) or at
/// the update key, and clears it from `w.tr`.
#[inline(always)]
fn apply_updates<T: Tables>(t: &mut T, c: &Ctx<'_>, m: usize, w: &mut Work, at_lookup: bool) {
    let set = w.tr.upd as u32 - 1;
    w.tr.upd = 0;
    let flow = w.mach.flags & M_FLOW_REGS != 0;
    let (generation, p, now, meta) = (w.tk.generation as u32, c.p, w.now, &mut w.meta);
    let k = if at_lookup { &w.key } else { &w.ukey };
    // At the lookup key, the conditions read it in this run (`flow_regs`).
    match t.update_regs(
        k,
        at_lookup,
        m,
        flow,
        generation,
        set,
        #[inline(always)]
        |us, r, g| run_updates(us, p, now, r, g, meta),
    ) {
        RegsOutcome::Done => {}
        RegsOutcome::Full => t.count(Counter::RegsFull),
        RegsOutcome::Busy => t.count(Counter::RegsBusy),
    }
}

/// Writes the state [`run_machine`] decided for machine `m` (held in `w`).
#[inline(never)]
pub fn commit_machine<T: Tables>(t: &mut T, c: &Ctx<'_>, m: usize, w: &mut Work) {
    if w.tr.upd == 0 && w.write == 0 {
        return;
    }
    // The same scope builds the same key: copied rather than built again.
    let same = w.mach.update == w.mach.lookup;
    if same {
        crate::mem::copy_words(&mut w.ukey, &w.key);
    } else {
        build_key_into(&w.mach.update, c.p, m as u8, &mut w.ukey);
    }
    if w.tr.upd != 0 {
        apply_updates(t, c, m, w, false);
    }
    if w.write == 0 {
        return;
    }
    if w.nv.state == STATE_DEFAULT {
        if w.exists != 0 || !same {
            t.del_state(&w.ukey);
        }
        return;
    }
    t.put_state(&w.ukey, &w.nv);
    // The entry is non-default at most until the first deadline that rolls it back to
    // DEFAULT (a later packet that extends it marks the filters again).
    let mut until = active_until(&w.nv);
    if w.mach.flags & M_UNBOUNDED != 0 {
        until = u64::MAX;
    }
    let ub = if same && w.kbucket != NO_BUCKET {
        w.kbucket
    } else {
        bucket_of(&w.ukey)
    };
    if t.active(ub) < until {
        t.set_active(ub, until);
    }
    // Mark the key's addresses in the address filter.
    let mut i = 0;
    while i < 2 {
        if w.mach.update.a_src[i] | w.mach.update.a_dst[i] != 0 {
            let ab = addr_bucket(&w.ukey.addrs[i]);
            if t.addr_active(ab) < until {
                t.set_addr_active(ab, until);
            }
        }
        i += 1;
    }
}

/// Until when an entry keeps its key's activity bucket marked: the first deadline that
/// rolls it back to DEFAULT, or for good when none does.
#[inline(always)]
pub fn active_until(v: &StateVal) -> u64 {
    let mut until = u64::MAX;
    if v.idle_deadline != 0 && v.idle_rollback == STATE_DEFAULT {
        until = v.idle_deadline;
    }
    if v.hard_deadline != 0 && v.hard_rollback == STATE_DEFAULT && v.hard_deadline < until {
        until = v.hard_deadline;
    }
    until
}

/// Starts a packet travelling in direction `dir`: counts it and returns the context, or
/// `None` when no machine can care about it (not L4, a non-first fragment, no machine
/// enabled, or the fast path rules it out). The clock is read only when needed (`now`,
/// told whether the precise clock is needed: [`CTL_PRECISE`]).
/// [`Ctx::snap`] says whether the caller must capture the UDP payload ([`wants_payload`]).
#[inline(always)]
pub fn begin<'a, T: Tables, F: FnOnce(bool) -> u64>(
    t: &mut T,
    p: &'a PacketInfo,
    dir: u8,
    now: F,
) -> Option<Ctx<'a>> {
    t.count(Counter::Seen);
    if !p.is_ip() || p.flags & FLAG_L4 == 0 || p.flags & FLAG_NONFIRST_FRAG != 0 {
        return None;
    }
    let g = t.ctl(CTL_GEN);
    let generation = g & 1;
    let mut mask = (g >> 8) & 0xff;
    if mask == 0 {
        return None;
    }
    let pbits = t.ports(generation, p.dport);
    // Fast path: no machine has a transition on this (protocol, port) from DEFAULT and no
    // state can exist for the packet's addresses: nothing to look up.
    let proto_bits = match p.l4proto {
        proto::TCP => pbits as u32 & 0xff,
        proto::UDP => (pbits >> 8) as u32,
        _ => 0,
    };
    let now = if g & (CTL_SLOW | slow_bits(p.l4proto, p.tcp_flags)) == 0 && proto_bits & mask == 0 {
        // (A bucket never marked is 0: no clock read needed.)
        let a = t.addr_active(addr_bucket(&p.saddr));
        let b = t.addr_active(addr_bucket(&p.daddr));
        if a == 0 && b == 0 {
            return None;
        }
        let now = now(g & CTL_PRECISE != 0);
        if a <= now && b <= now {
            return None;
        }
        now
    } else {
        now(g & CTL_PRECISE != 0)
    };
    // Machines exempt for an allowlisted source (the `detect` stage's detectors, which act
    // on ingress): asked once the fast path has not ruled the packet out.
    if g & CTL_HAS_EXEMPT != 0 && dir == DIR_INGRESS {
        let exempt = (t.ctl(CTL_EXEMPT) >> (8 * generation)) & mask;
        if exempt != 0 && t.allowed(p) {
            mask &= !exempt;
            if mask == 0 {
                return None;
            }
        }
    }
    let mut c = Ctx {
        p,
        now,
        generation,
        pbits,
        mask,
        dir,
        snap: false,
    };
    c.snap = wants_payload(g, &c);
    Some(c)
}

/// Ends a packet: applies the pending grant action (`grant`: the last machine's
/// [`RUN_GRANT`] result, or 0), so that at most one grant set changes per packet.
#[inline(never)]
pub fn finish<T: Tables>(t: &mut T, c: &Ctx<'_>, grant: u64) {
    if grant & RUN_GRANT == 0 {
        return;
    }
    let set = (grant >> 8) as u8;
    let r = apply_grants(t, c, set, grant & RUN_REVOKE != 0);
    emit(
        t,
        c,
        (grant >> 32) as u32 | (r as u32) << 24,
        set as u32,
        None,
    );
}

/// Starts a frame that arrived on a port of switch `sw`: every frame, IP or not (ARP),
/// runs the switch's machines of the active generation (ingress); `None` when it has none.
#[inline(always)]
pub fn begin_switch<'a, T: Tables, F: FnOnce(bool) -> u64>(
    t: &mut T,
    p: &'a PacketInfo,
    sw: &acts::SwitchDef,
    now: F,
) -> Option<Ctx<'a>> {
    t.count(Counter::Seen);
    let g = t.ctl(CTL_GEN);
    let generation = g & 1;
    let mask = (g >> CTL_SWITCH_SHIFT) & 0xff & sw.masks[generation as usize];
    if mask == 0 {
        return None;
    }
    let pbits = if p.flags & FLAG_L4 != 0 {
        t.ports(generation, p.dport)
    } else {
        0
    };
    Some(Ctx {
        p,
        now: now(g & CTL_PRECISE != 0),
        generation,
        pbits,
        mask,
        dir: DIR_INGRESS,
        snap: false,
    })
}

/// What the machines made of one packet: pass or drop, and the actions they took
/// ([`acts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Hand the packet on (else drop it).
    pub pass: bool,
    /// [`acts::act`] bits taken.
    pub fx: u32,
    /// Mark ([`acts::act::MARK`]).
    pub mark: u32,
    /// DSCP ([`acts::act::DSCP`]).
    pub dscp: u32,
    /// Interface to forward to, 0 = flood ([`acts::act::FWD`]).
    pub fwd: u32,
}

fn run_all<T: Tables>(t: &mut T, c: &Ctx<'_>) -> Verdict {
    let mut pass = true;
    let mut grant = 0u64;
    // (A packet's metadata and actions start empty: a new working memory per packet.)
    let mut w = Work::default();
    for m in 0..MAX_MACHINES {
        if c.mask & (1 << m) != 0 {
            let r = run_machine(t, c, m, &mut w);
            commit_machine(t, c, m, &mut w);
            if r & RUN_DROP != 0 {
                pass = false;
            }
            if r & RUN_GRANT != 0 {
                grant = r;
            }
        }
    }
    finish(t, c, grant);
    Verdict {
        pass,
        fx: w.fx,
        mark: w.mark,
        dscp: w.dscp,
        fwd: w.fwd,
    }
}

/// Runs the stage on one parsed packet travelling in direction `dir` at kernel time `now`.
/// The tables hold the packet's payload for [`Tables::payload_matches`]. (The kernel runs
/// the same pieces, each machine's run and commit a global function of its own.)
pub fn step_verdict<T: Tables>(t: &mut T, p: &PacketInfo, dir: u8, now: u64) -> Verdict {
    match begin(t, p, dir, |_| now) {
        Some(c) => run_all(t, &c),
        None => Verdict {
            pass: true,
            ..Default::default()
        },
    }
}

/// [`step_verdict`]'s pass (`true`) or drop.
pub fn step<T: Tables>(t: &mut T, p: &PacketInfo, dir: u8, now: u64) -> bool {
    step_verdict(t, p, dir, now).pass
}

/// The same for a frame arriving on a port of switch `sw` ([`begin_switch`]).
pub fn step_switch<T: Tables>(
    t: &mut T,
    p: &PacketInfo,
    sw: &acts::SwitchDef,
    now: u64,
) -> Verdict {
    match begin_switch(t, p, sw, |_| now) {
        Some(c) => run_all(t, &c),
        None => Verdict {
            pass: true,
            ..Default::default()
        },
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::Machine {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TransKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Trans {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GrantSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StateKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StateVal {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LockVal {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Work {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Payload {}
}
