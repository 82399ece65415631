//! Machines as written ([`RawMachine`]: the `[[xfsm]]` section resolved to ids), and an
//! interpreter that runs them directly: the reference for extended machines.
//!
//! The interpreter reads the definition, not the compiled tables the kernel reads: it
//! searches the transitions in declaration order and evaluates conditions and updates
//! with its own code (wide arithmetic, division for the EWMA shift), keys flows by its own
//! tuple and keeps states in a sorted map. Tests run it beside the kernel program on the
//! same packets; what the two share is only this definition. Not modelled: grants,
//! lockouts and one-time keys (knock doors have their own reference), events, and table
//! capacities.

extern crate std;

use std::{collections::BTreeMap, vec::Vec};

use super::{E_KEEP_HARD, E_KEEP_IDLE, STATE_DEFAULT};
use crate::parse::{PacketInfo, FLAG_L4, FLAG_NONFIRST_FRAG};

pub use super::raw::{Acts, Cmp, CondDef, Forward, Opd, RawMachine, RawTrans, Reg, UpdDef, UpdOp};

/// What the interpreter made of one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Handed on (else dropped).
    pub pass: bool,
    /// The last mark set, if any.
    pub mark: Option<u32>,
    /// The last DSCP set, if any.
    pub dscp: Option<u8>,
    /// The last forwarding decision: `Some(0)` = flood, `Some(i)` = interface `i`.
    pub fwd: Option<u32>,
}

/// A flow key as the interpreter sees it: machine, family (when an address is in scope),
/// addresses in scope order, ports in scope order, protocol (when in scope).
pub type FlowKey = (usize, u8, Vec<[u8; 16]>, Vec<u16>, Option<u8>);

/// A flow's state entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// State.
    pub state: u8,
    /// Idle deadline (0 = none) and rollback.
    pub idle: (u64, u8),
    /// Hard deadline (0 = none) and rollback.
    pub hard: (u64, u8),
}

/// The interpreter: machines in order, with their flows and registers.
#[derive(Clone, Debug, Default)]
pub struct Interp {
    /// The machines (index = machine id, as the kernel numbers them after any doors:
    /// [`Interp::first`] + position).
    pub machines: Vec<RawMachine>,
    /// Kernel id of `machines[0]`.
    pub first: usize,
    /// State entries.
    pub flows: BTreeMap<FlowKey, Entry>,
    /// Per-flow registers.
    pub regs: BTreeMap<FlowKey, [u64; 4]>,
    /// Global registers per machine.
    pub globals: Vec<[u64; 8]>,
    /// Entries the fixed state table holds at most (all fixed machines together).
    pub fixed_cap: usize,
    /// Set when the fixed state table refused a new flow (the kernel's `CTL_FIXED_FULL`;
    /// user space clears it, the interpreter never does).
    pub fixed_full: bool,
}

fn key_of(scope: &[u8], p: &PacketInfo, m: usize, bidirectional: bool) -> FlowKey {
    use super::field::*;
    let (mut addrs, mut ports, mut proto) = (Vec::new(), Vec::new(), None);
    let mut macs = 0;
    for &f in scope {
        match f {
            SRC_IP => addrs.push(p.saddr),
            DST_IP => addrs.push(p.daddr),
            SRC_MAC | DST_MAC => {
                let mac = if f == SRC_MAC { p.smac } else { p.dmac };
                let mut a = [0u8; 16];
                a[..6].copy_from_slice(&mac);
                macs += 1;
                addrs.push(a);
            }
            SRC_PORT => ports.push(p.sport),
            DST_PORT => ports.push(p.dport),
            PROTO => proto = Some(p.l4proto),
            _ => {}
        }
    }
    // The family is in the key when an IP address is.
    let family = if addrs.len() > macs { p.family } else { 0 };
    if bidirectional {
        // The ends as (address, port) pairs, the smaller first.
        let end = |i: usize| (addrs[i], ports.get(i).copied().unwrap_or(0));
        if end(1) < end(0) {
            addrs.swap(0, 1);
            if ports.len() == 2 {
                ports.swap(0, 1);
            }
        }
    }
    (m, family, addrs, ports, proto)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn hash_of(p: &PacketInfo, fields: u64) -> u64 {
    let alen = if p.family == 6 { 16 } else { 4 };
    let mut bytes = Vec::new();
    if fields & 1 != 0 {
        bytes.extend_from_slice(&p.saddr[..alen]);
    }
    if fields & 2 != 0 {
        bytes.extend_from_slice(&p.daddr[..alen]);
    }
    if fields & 4 != 0 {
        bytes.push(p.l4proto);
    }
    if fields & 8 != 0 {
        bytes.extend_from_slice(&p.sport.to_be_bytes());
    }
    if fields & 16 != 0 {
        bytes.extend_from_slice(&p.dport.to_be_bytes());
    }
    fnv1a(&bytes)
}

fn eval(o: &Opd, p: &PacketInfo, now: u64, r: &[u64; 4], g: &[u64; 8], meta: u64) -> u64 {
    match *o {
        Opd::Const(k) => k,
        Opd::Flow(i) => r[i as usize],
        Opd::Global(i) => g[i as usize],
        Opd::PktLen => p.pkt_len.into(),
        Opd::SrcPort => p.sport.into(),
        Opd::DstPort => p.dport.into(),
        Opd::Proto => p.l4proto.into(),
        Opd::TcpFlags => p.tcp_flags.into(),
        Opd::Since(i) => (now as i128 - r[i as usize] as i128).max(0) as u64,
        Opd::GlobalSince(i) => (now as i128 - g[i as usize] as i128).max(0) as u64,
        Opd::Now => now,
        Opd::Hash(f) => hash_of(p, f),
        Opd::Meta => meta,
        Opd::InPort => p.ifindex.into(),
        // (Set by the caller: see `Interp::machine`.)
        Opd::TableFull => 0,
    }
}

/// The result of an update function, computed in 128 bits.
pub fn update_value(op: UpdOp, d: u64, x: u64) -> u64 {
    let (d, x) = (d as u128, x as u128);
    let r = match op {
        UpdOp::Set => x,
        UpdOp::Add => (d + x).min(u64::MAX as u128),
        UpdOp::Sub => (d as i128 - x as i128).max(0) as u128,
        UpdOp::Min => d.min(x),
        UpdOp::Max => d.max(x),
        UpdOp::Ewma(k) => {
            let w = 1u128 << k;
            d - d / w + x / w
        }
    };
    r as u64
}

fn holds(c: &CondDef, p: &PacketInfo, now: u64, r: &[u64; 4], g: &[u64; 8], meta: u64) -> bool {
    let a = eval(&c.a, p, now, r, g, meta) / (1u128 << c.shr[0]) as u64;
    let b = eval(&c.b, p, now, r, g, meta) / (1u128 << c.shr[1]) as u64;
    match c.cmp {
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Ge => a >= b,
        Cmp::Gt => a > b,
    }
}

impl Interp {
    /// Entries of fixed-table machines.
    fn fixed_len(&self) -> usize {
        self.flows
            .keys()
            .filter(|k| self.machines[k.0 - self.first].fixed)
            .count()
    }

    /// An interpreter for machines numbered from `first` (the doors' count).
    pub fn new(machines: Vec<RawMachine>, first: usize) -> Interp {
        let n = machines.len();
        Interp {
            machines,
            first,
            globals: std::vec![[0; 8]; n],
            fixed_cap: usize::MAX,
            ..Default::default()
        }
    }

    /// One packet travelling in direction `dir` at time `now`; `payload` is its UDP
    /// payload. Returns true when the packet is handed on.
    pub fn step(&mut self, p: &PacketInfo, dir: u8, now: u64, payload: &[u8]) -> bool {
        self.step_outcome(p, dir, now, payload).pass
    }

    /// The same, with the actions taken.
    pub fn step_outcome(&mut self, p: &PacketInfo, dir: u8, now: u64, payload: &[u8]) -> Outcome {
        if !p.is_ip() || p.flags & FLAG_L4 == 0 || p.flags & FLAG_NONFIRST_FRAG != 0 {
            return Outcome {
                pass: true,
                ..Default::default()
            };
        }
        self.run(p, dir, now, payload)
    }

    /// A frame (IP or not) arriving on a switch port whose machines are these.
    pub fn step_switch(&mut self, p: &PacketInfo, now: u64) -> Outcome {
        self.run(p, super::DIR_INGRESS, now, &[])
    }

    fn run(&mut self, p: &PacketInfo, dir: u8, now: u64, payload: &[u8]) -> Outcome {
        let mut out = Outcome {
            pass: true,
            ..Default::default()
        };
        let mut meta = 0u64;
        for mi in 0..self.machines.len() {
            if !self.machine(mi, p, (dir, now), payload, &mut meta, &mut out) {
                out.pass = false;
            }
        }
        out
    }

    fn machine(
        &mut self,
        mi: usize,
        p: &PacketInfo,
        (dir, now): (u8, u64),
        payload: &[u8],
        meta: &mut u64,
        out: &mut Outcome,
    ) -> bool {
        let id = self.first + mi;
        let m = &self.machines[mi];
        let lk = key_of(&m.lookup, p, id, m.bidirectional);
        let uk = key_of(&m.update, p, id, m.bidirectional);
        // Timeouts.
        let mut cur = self.flows.get(&lk).copied();
        let mut state = STATE_DEFAULT;
        if let Some(e) = cur.as_mut() {
            state = e.state;
            let rolled = if e.hard.0 != 0 && now >= e.hard.0 {
                e.hard.0 = 0;
                Some(e.hard.1)
            } else if e.idle.0 != 0 && now >= e.idle.0 {
                Some(e.idle.1)
            } else {
                None
            };
            if let Some(to) = rolled {
                e.idle.0 = 0;
                state = to;
                e.state = to;
                if to == STATE_DEFAULT {
                    self.flows.remove(&lk);
                } else {
                    self.flows.insert(lk.clone(), *e);
                }
            }
        }
        // Conditions on the lookup key's registers.
        let r = self.regs.get(&lk).copied().unwrap_or([0; 4]);
        let g = self.globals[mi];
        let fresh = cur.is_none();
        let results: Vec<bool> = m
            .conds
            .iter()
            .map(|c| match c.a {
                Opd::TableFull => m.fixed && fresh && self.fixed_full,
                _ => holds(c, p, now, &r, &g, *meta),
            })
            .collect();
        // The most specific level first; at each level the first transition declared.
        let levels = [(p.l4proto, p.dport), (p.l4proto, 0), (0, 0)];
        let mut taken = None;
        for (proto, port) in levels {
            let cand = m.transitions.iter().find(|t| {
                t.state == state
                    && t.dirs.contains(&dir)
                    && t.proto == proto
                    && t.port == port
                    && t.when.iter().all(|&(i, v)| results[i as usize] == v)
            });
            if let Some(t) = cand {
                let flags_ok = p.l4proto != crate::parse::proto::TCP
                    || p.tcp_flags & t.tcp_flags.0 == t.tcp_flags.1;
                let payload_ok = match &t.payload {
                    None => true,
                    Some(pl) => payload == pl.as_slice(),
                };
                if flags_ok && payload_ok {
                    taken = Some(t.clone());
                    break;
                }
            }
        }
        let Some(t) = taken else {
            return true;
        };
        if let Some(k) = t.acts.mark {
            out.mark = Some(k);
        }
        if let Some(d) = t.acts.dscp {
            out.dscp = Some(d);
        }
        match t.acts.forward {
            // The lookup key's register, as the packet found it.
            Some(Forward::Reg(i)) => out.fwd = Some(r[i as usize] as u32),
            Some(Forward::Flood) => out.fwd = Some(0),
            None => {}
        }
        if !t.updates.is_empty() {
            let mut r = self.regs.get(&uk).copied().unwrap_or([0; 4]);
            let mut g = self.globals[mi];
            for u in &t.updates {
                let x = eval(&u.src, p, now, &r, &g, *meta) / (1u128 << u.shr) as u64;
                match u.dst {
                    Reg::Flow(i) => r[i as usize] = update_value(u.op, r[i as usize], x),
                    Reg::Global(i) => g[i as usize] = update_value(u.op, g[i as usize], x),
                    Reg::Meta => *meta = update_value(u.op, *meta, x),
                }
            }
            self.regs.insert(uk.clone(), r);
            self.globals[mi] = g;
        }
        // The state written.
        if let Some(next) = t.next {
            let old = cur.unwrap_or_default();
            let mut e = Entry {
                state: next,
                idle: (0, t.idle.1),
                hard: (0, t.hard.1),
            };
            if t.keep & E_KEEP_IDLE != 0 {
                e.idle = old.idle;
            } else if t.idle.0 != 0 {
                e.idle.0 = now + t.idle.0;
            }
            if t.keep & E_KEEP_HARD != 0 {
                e.hard = old.hard;
            } else if t.hard.0 != 0 {
                e.hard.0 = now + t.hard.0;
            }
            if next == STATE_DEFAULT {
                self.flows.remove(&uk);
            } else if m.fixed && !self.flows.contains_key(&uk) && self.fixed_len() >= self.fixed_cap
            {
                self.fixed_full = true;
            } else {
                self.flows.insert(uk, e);
            }
        }
        !t.drop
    }
}
