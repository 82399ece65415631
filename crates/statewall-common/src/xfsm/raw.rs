//! Machines as written, resolved to ids ([`RawMachine`]: what the `[[xfsm]]` sections
//! become), with their conditions and updates: the definition both the compiler of the
//! kernel's tables and the reference interpreter (`super::interp`) read.

extern crate std;

use std::{string::String, vec::Vec};

/// An operand as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opd {
    /// A constant.
    Const(u64),
    /// Per-flow register.
    Flow(u8),
    /// Global register.
    Global(u8),
    /// Bytes in the frame.
    PktLen,
    /// Source port.
    SrcPort,
    /// Destination port.
    DstPort,
    /// L4 protocol.
    Proto,
    /// TCP flags.
    TcpFlags,
    /// Time since the timestamp in a per-flow register (0 if it lies ahead).
    Since(u8),
    /// Time since the timestamp in a global register.
    GlobalSince(u8),
    /// The clock.
    Now,
    /// FNV-1a 64 over fields (`super::regs::hash_field` bits), in that module's order.
    Hash(u64),
    /// The packet's metadata (0 on arrival, then what earlier machines wrote).
    Meta,
    /// The interface the packet is on.
    InPort,
    /// `table_full`: the flow is new to a fixed table that has no room (only as the left
    /// operand of `== 1`, the compiled form of a `when = ["table_full"]`).
    TableFull,
}

/// Comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

/// A condition: `a cmp b`, unsigned 64-bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondDef {
    /// Name (config).
    pub name: String,
    /// Left operand.
    pub a: Opd,
    /// Comparison.
    pub cmp: Cmp,
    /// Right operand.
    pub b: Opd,
    /// Right shifts applied to `a` and `b` (`X >> K`).
    pub shr: [u8; 2],
}

/// A register an update writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// Per-flow register.
    Flow(u8),
    /// Global register.
    Global(u8),
    /// The packet's metadata.
    Meta,
}

/// An update function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdOp {
    /// `r = x`
    Set,
    /// `r = r + x`, saturating at the maximum.
    Add,
    /// `r = r - x`, saturating at 0.
    Sub,
    /// `r = min(r, x)`
    Min,
    /// `r = max(r, x)`
    Max,
    /// `r = r - r / 2^k + x / 2^k` (integer divisions)
    Ewma(u8),
}

/// An update: `dst = op(dst, src)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdDef {
    /// Register written.
    pub dst: Reg,
    /// Function.
    pub op: UpdOp,
    /// Operand.
    pub src: Opd,
    /// Right shift applied to the operand (`X >> K`).
    pub shr: u8,
}

/// A machine written by hand, resolved (state names to ids, scopes to field ids).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RawMachine {
    /// Name (events, counters).
    pub name: String,
    /// Lookup scope: `super::field` ids.
    pub lookup: Vec<u8>,
    /// Update scope (same shape as `lookup`).
    pub update: Vec<u8>,
    /// Both keys are bidirectional: two addresses (and zero or two ports), their ends
    /// ordered so that both directions of a connection are one flow.
    pub bidirectional: bool,
    /// State names by id; `states[0]` is DEFAULT.
    pub states: Vec<String>,
    /// Per-flow register names by index.
    pub flow_regs: Vec<String>,
    /// Global register names by index.
    pub globals: Vec<String>,
    /// Conditions, by index (bit of the condition vector).
    pub conds: Vec<CondDef>,
    /// Transitions.
    pub transitions: Vec<RawTrans>,
    /// What a transition with [`RawTrans::grant`] opens in the gate for the packet's
    /// source: (protocol, port) pairs, and for how long (ns).
    pub grant: (Vec<(u8, u16)>, u64),
    /// States and registers in the preallocated tables (`table = "fixed"`): never evicted,
    /// a new flow that finds no room stays DEFAULT.
    pub fixed: bool,
}

/// One transition of a [`RawMachine`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RawTrans {
    /// State it leaves.
    pub state: u8,
    /// Directions it matches (`DIR_INGRESS`, `DIR_EGRESS`).
    pub dirs: Vec<u8>,
    /// L4 protocol, 0 = any.
    pub proto: u8,
    /// Destination port, 0 = any.
    pub port: u16,
    /// TCP flags (mask, value).
    pub tcp_flags: (u8, u8),
    /// UDP payload the packet must carry: its bytes, at most
    /// `super::payload::PAYLOAD_MAX`.
    pub payload: Option<Vec<u8>>,
    /// Drop the packet (else hand it on).
    pub drop: bool,
    /// State to go to; `None` = stay, keeping the timers.
    pub next: Option<u8>,
    /// Idle timeout to arm (0 = none) and the state it rolls back to.
    pub idle: (u64, u8),
    /// Hard timeout to arm (0 = none) and the state it rolls back to.
    pub hard: (u64, u8),
    /// `E_KEEP_HARD` / `E_KEEP_IDLE`: the state gone to keeps the current deadline (and
    /// its rollback) instead of arming one.
    pub keep: u8,
    /// Conditions that must hold (`true`) or not hold (`false`), by index; the others do
    /// not matter.
    pub when: Vec<(u8, bool)>,
    /// Updates, run in order.
    pub updates: Vec<UpdDef>,
    /// Actions besides pass and drop.
    pub acts: Acts,
    /// Opens (`Some(true)`) or revokes (`Some(false)`) the machine's grant for the
    /// packet's source (not modelled by the interpreter).
    pub grant: Option<bool>,
}

/// Where a transition forwards a frame (switch ports only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// To the interface whose index the lookup key's per-flow register holds (flooded
    /// when it is 0).
    Reg(u8),
    /// To every other port of the switch.
    Flood,
}

/// A transition's actions besides pass and drop (see `super::acts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acts {
    /// Set the packet mark.
    pub mark: Option<u32>,
    /// Set the DSCP.
    pub dscp: Option<u8>,
    /// Forward.
    pub forward: Option<Forward>,
    /// Send an event (rate-limited; not modelled by the interpreter).
    pub event: bool,
}

impl Acts {
    /// True when the transition has none.
    pub fn is_empty(&self) -> bool {
        *self == Acts::default()
    }
}

impl RawMachine {
    /// True when the machine uses registers, conditions or updates.
    pub fn extended(&self) -> bool {
        !self.conds.is_empty()
            || !self.flow_regs.is_empty()
            || !self.globals.is_empty()
            || self.transitions.iter().any(|t| !t.updates.is_empty())
    }
}
