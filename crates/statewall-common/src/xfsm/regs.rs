//! Registers, conditions and update functions of extended machines (after OPP and
//! FlowBlaze): the compiled form the kernel reads, and the arithmetic of the updates.
//! Reading a packet's fields into operands, and so evaluating conditions and running
//! updates, is the parent module's ([`super::conditions`], [`super::run_updates`]): it
//! needs the parser's packet, and this module needs nothing else of the crate.
//!
//! A machine with registers has [`FLOW_REGS`] 64-bit registers per flow (per update key,
//! in [`MAP_REGS`]) and [`GLOBAL_REGS`] per machine ([`MAP_GLOBALS`]). Up to
//! [`MAX_CONDS`] conditions ([`CondSet`], per machine and generation) each compare two
//! [`Operand`]s as unsigned 64-bit values; their results form a bit vector that is part of
//! the transition key ([`super::TransKey::conds`]): user space expands a transition's
//! don't-cares into every vector it covers, in declaration order, so the first declared
//! transition whose conditions hold is the one found. A transition may carry up to
//! [`MAX_UPDATES`] updates ([`UpdSet`], [`super::Trans::upd`]).
//!
//! Conditions read the lookup key's registers as they are when the packet arrives (one
//! 64-bit load each, so a condition sees a whole value); the updates of one transition
//! then run together under the update key's entry lock and the machine's global lock
//! (taken in that order), so no other CPU sees or makes a change half-way. Between the two,
//! another CPU may update the same registers: a condition and the updates that follow it
//! are not one atomic step.
//!
//! Arithmetic: `add` saturates at `u64::MAX`, `sub` at 0; `ewma` is
//! `r - (r >> k) + (x >> k)` (no overflow: the result is at most `max(r, x)`); `hash`
//! sets the register to FNV-1a 64 over the fields named by its operand mask, in network
//! byte order.

/// Per-flow registers.
pub const FLOW_REGS: usize = 4;
/// Global registers per machine.
pub const GLOBAL_REGS: usize = 8;
/// Conditions per machine.
pub const MAX_CONDS: usize = 8;
/// Updates per transition.
pub const MAX_UPDATES: usize = 5;
/// Update sets per generation ([`super::Trans::upd`] is 1 + an index, 0 = none).
pub const MAX_UPD_SETS: u32 = 255;
/// Per-flow register entries (all machines together).
pub const REGS_ENTRIES: u32 = 16384;

/// Map: condition sets, per (generation, machine).
pub const MAP_CONDS: &str = "SW_XFSM_CONDS";
/// Map: update sets, per generation.
pub const MAP_UPDATES: &str = "SW_XFSM_UPD";
/// Map: per-flow registers ([`super::StateKey`] of the update key -> [`FlowRegs`]).
pub const MAP_REGS: &str = "SW_XFSM_REGS";
/// Map: per-flow registers of machines with `table = "fixed"` (preallocated hash).
pub const MAP_FIXED_REGS: &str = "SW_XFSM_FREGS";
/// Map: global registers, per machine ([`GlobalRegs`]).
pub const MAP_GLOBALS: &str = "SW_XFSM_GLOBALS";

/// Operand kinds.
pub mod opnd {
    /// None (reads 0).
    pub const NONE: u8 = 0;
    /// The constant [`super::Operand::k`].
    pub const CONST: u8 = 1;
    /// Per-flow register `idx`.
    pub const REG: u8 = 2;
    /// Global register `idx`.
    pub const GLOBAL: u8 = 3;
    /// Bytes in the frame.
    pub const PKT_LEN: u8 = 4;
    /// Source port.
    pub const SPORT: u8 = 5;
    /// Destination port.
    pub const DPORT: u8 = 6;
    /// L4 protocol.
    pub const PROTO: u8 = 7;
    /// TCP flags.
    pub const TCP_FLAGS: u8 = 8;
    /// Nanoseconds since the time held in per-flow register `idx` (0 if that is later).
    pub const SINCE: u8 = 9;
    /// The kernel clock, in nanoseconds.
    pub const NOW: u8 = 10;
    /// FNV-1a 64 of the fields in the mask `k` ([`super::hash_field`]).
    pub const HASH: u8 = 11;
    /// Nanoseconds since the time held in global register `idx`.
    pub const GSINCE: u8 = 12;
    /// The packet's metadata: 64 bits that machines pass on to the machines after them
    /// (0 when a packet arrives); an update may write it.
    pub const META: u8 = 13;
    /// Index of the interface the packet is on (the port a switch frame came in on).
    pub const IN_PORT: u8 = 14;
    /// The `table_full` condition (a condition whose left operand is this holds when the
    /// packet's flow is new to a fixed table that has no room: [`super::with_table_full`]).
    pub const TABLE_FULL: u8 = 15;
    /// Highest kind.
    pub const LAST: u8 = 15;
}

/// Fields a hash operand can cover (bits of [`Operand::k`]), hashed in this order.
pub mod hash_field {
    /// Source address (4 or 16 bytes).
    pub const SRC_IP: u64 = 1;
    /// Destination address.
    pub const DST_IP: u64 = 2;
    /// L4 protocol (1 byte).
    pub const PROTO: u64 = 4;
    /// Source port (2 bytes, network order).
    pub const SPORT: u64 = 8;
    /// Destination port.
    pub const DPORT: u64 = 16;
}

/// Comparison operators.
pub mod cmp {
    /// `<`
    pub const LT: u8 = 1;
    /// `<=`
    pub const LE: u8 = 2;
    /// `==`
    pub const EQ: u8 = 3;
    /// `!=`
    pub const NE: u8 = 4;
    /// `>=`
    pub const GE: u8 = 5;
    /// `>`
    pub const GT: u8 = 6;
}

/// Update operations: `dst = f(dst, src)`.
pub mod upd {
    /// `dst = src`
    pub const SET: u8 = 1;
    /// `dst = dst + src`, saturating.
    pub const ADD: u8 = 2;
    /// `dst = dst - src`, saturating at 0.
    pub const SUB: u8 = 3;
    /// `dst = min(dst, src)`
    pub const MIN: u8 = 4;
    /// `dst = max(dst, src)`
    pub const MAX: u8 = 5;
    /// `dst = dst - (dst >> k) + (src >> k)`
    pub const EWMA: u8 = 6;
}

/// One operand.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Operand {
    /// [`opnd`] kind.
    pub kind: u8,
    /// Register index (for register kinds).
    pub idx: u8,
    /// Right shift applied to the value (0 to 63).
    pub shr: u8,
    /// Explicit padding.
    pub _pad: [u8; 5],
    /// Constant, or the field mask of a hash.
    pub k: u64,
}

/// One condition: `a op b`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cond {
    /// [`cmp`] operator.
    pub op: u8,
    /// Explicit padding.
    pub _pad: [u8; 7],
    /// Left operand.
    pub a: Operand,
    /// Right operand.
    pub b: Operand,
}

/// A machine's conditions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CondSet {
    /// Conditions in use.
    pub n: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The conditions; bit `i` of the vector is `c[i]`'s result.
    pub c: [Cond; MAX_CONDS],
}

/// One update: `dst = op(dst, src)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// [`upd`] operation.
    pub op: u8,
    /// [`opnd::REG`], [`opnd::GLOBAL`] or [`opnd::META`].
    pub dst_kind: u8,
    /// Register index.
    pub dst: u8,
    /// EWMA weight shift.
    pub shift: u8,
    /// Explicit padding.
    pub _pad: [u8; 4],
    /// Source operand.
    pub src: Operand,
}

/// A transition's updates, run in order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdSet {
    /// Updates in use.
    pub n: u32,
    /// Non-zero when an update reads or writes a global register (the global lock is
    /// taken only then).
    pub globals: u32,
    /// The updates.
    pub u: [Update; MAX_UPDATES],
}

/// Per-flow registers, with the entry's lock word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRegs {
    /// 0 = free, 1 = held (compare-and-swap; see the module doc).
    pub lock: u64,
    /// The registers.
    pub r: [u64; FLOW_REGS],
}

/// A machine's global registers, with their lock word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalRegs {
    /// 0 = free, 1 = held.
    pub lock: u64,
    /// The registers.
    pub g: [u64; GLOBAL_REGS],
}

/// The condition vector `cv` with each `table_full` condition set to `full`.
#[inline(always)]
pub fn with_table_full(cs: &CondSet, mut cv: u8, full: bool) -> u8 {
    let mut i = 0;
    while i < MAX_CONDS {
        if (i as u32) < cs.n && cs.c[i].a.kind == opnd::TABLE_FULL {
            cv = (cv & !(1 << i)) | ((full as u8) << i);
        }
        i += 1;
    }
    cv
}

/// `op(d, x)` with shift `k`.
#[inline(always)]
pub fn apply(op: u8, d: u64, x: u64, k: u8) -> u64 {
    match op {
        upd::SET => x,
        upd::ADD => d.saturating_add(x),
        upd::SUB => d.saturating_sub(x),
        upd::MIN => {
            if x < d {
                x
            } else {
                d
            }
        }
        upd::MAX => {
            if x > d {
                x
            } else {
                d
            }
        }
        upd::EWMA => {
            let k = (k & 63) as u32;
            d - (d >> k) + (x >> k)
        }
        _ => d,
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::CondSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UpdSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowRegs {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GlobalRegs {}
}
