//! Knock doors and written machines compiled into the OpenState tables the kernel reads
//! ([`Compiled`]), checked against the tables' sizes: no kernel needed (the config's
//! checks compile what they check). How a door becomes a machine: see the stage's doc.

use crate::xfsm::error::XfsmError;
use std::collections::{BTreeMap, BTreeSet};

use statewall_common::{
    parse::proto,
    xfsm::acts::MAX_ACT_SETS,
    xfsm::raw::{Opd, Reg, UpdOp},
    xfsm::regs::{CondSet, FLOW_REGS, GLOBAL_REGS, MAX_CONDS, MAX_UPDATES, MAX_UPD_SETS},
    xfsm::{
        field, GrantSet, Machine, Payload, Scope, Trans, ACT_DROP, ACT_NEXT, DIR_EGRESS,
        DIR_INGRESS, E_FAIL, E_GRANT, E_KEEP_HARD, E_KEEP_IDLE, E_ONCE, E_REVOKE, GRANT_SET_PORTS,
        MAX_MACHINES, MAX_PAYLOADS, M_ANY_PORT, M_EXT, M_FIXED, M_FLOW_REGS, M_STATELESS,
        M_UNBOUNDED, NEXT_STAY, PAYLOAD_MAX, SCOPE_FIXED, STATE_DEFAULT,
    },
};

use crate::xfsm::{
    door::KnockDoor,
    encode,
    tables::{Compiled, TKey},
};
use statewall_common::xfsm::raw::{RawMachine, RawTrans};

/// Transition table entries one generation may use (the kernel's table holds both).
pub const TRANS_PER_GEN: usize = 4096;

/// State id of every door's OPEN state.
pub const OPEN: u8 = statewall_common::xfsm::DOOR_OPEN;

fn step_name((p, port): (u8, u16)) -> String {
    format!("{}/{port}", if p == proto::UDP { "udp" } else { "tcp" })
}

/// Builds one door's machine.
struct DoorBuilder<'a> {
    c: &'a mut Compiled,
    d: &'a KnockDoor,
    m: u8,
    names: Vec<String>,
    /// The state each path state's path started from (DEFAULT, or OPEN for a toggle close
    /// path), by state id.
    roots: Vec<u8>,
    /// Edges that lead to an intermediate state (trie), by (from, proto, port).
    inner: BTreeMap<(u8, u8, u16), u8>,
}

/// How a path ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    Open,
    Close,
}

impl DoorBuilder<'_> {
    fn add(&mut self, state: u8, p: u8, port: u16, mut t: Trans, name: String) {
        if p == proto::TCP {
            t.flags_mask = self.d.tcp_mask;
            t.flags_value = self.d.tcp_value;
        }
        if p == proto::UDP {
            if let Some(pl) = self.d.payloads.get(&port).or(self.d.payload_all.as_ref()) {
                t.payload = self.c.payload_id(pl);
            }
        }
        t.counter = self.c.counter_names.len() as u32;
        self.c.counter_names.push(name);
        self.c
            .trans
            .insert((self.m, state, DIR_INGRESS, p, port), t);
        if port != 0 {
            *self.c.ports.entry(port).or_default() |=
                statewall_common::xfsm::port_bit(p, self.m as usize);
        }
    }

    fn new_state(&mut self, name: String, root: u8) -> Result<u8, XfsmError> {
        if self.names.len() >= 254 {
            return Err(XfsmError::Compile(format!(
                "door {}: more than 253 states (too many or too long sequences)",
                self.d.name
            )));
        }
        self.names.push(name);
        self.roots.push(root);
        Ok((self.names.len() - 1) as u8)
    }

    /// Adds a path from `root` (DEFAULT or OPEN).
    fn path(
        &mut self,
        root: u8,
        seq: &[(u8, u16)],
        end: End,
        label: &str,
        once: u64,
    ) -> Result<(), XfsmError> {
        let d = self.d;
        let (n, m) = (seq.len(), self.m);
        let mut cur = root;
        for (k, &(p, port)) in seq.iter().enumerate() {
            let name = format!(
                "{}: {label} step {} ({})",
                d.name,
                k + 1,
                step_name((p, port))
            );
            let taken = self.c.trans.contains_key(&(m, cur, DIR_INGRESS, p, port));
            if k + 1 == n {
                if taken {
                    return Err(XfsmError::Compile(format!(
                        "door {}: {label} {} is a prefix of, or equal to, another sequence",
                        d.name,
                        seq_text(seq)
                    )));
                }
                let t = match end {
                    End::Open => Trans {
                        next_state: OPEN,
                        effects: if once != 0 { E_GRANT | E_ONCE } else { E_GRANT },
                        grant_set: m,
                        hard_ns: d.open_for_ns,
                        once,
                        ..Default::default()
                    },
                    End::Close => Trans {
                        next_state: STATE_DEFAULT,
                        effects: E_REVOKE,
                        grant_set: m,
                        ..Default::default()
                    },
                };
                self.add(cur, p, port, t, name);
                return Ok(());
            }
            if let Some(&next) = self.inner.get(&(cur, p, port)) {
                cur = next;
                continue;
            }
            if taken {
                return Err(XfsmError::Compile(format!(
                    "door {}: another sequence ends where {label} {} goes on",
                    d.name,
                    seq_text(seq)
                )));
            }
            let next = self.new_state(format!("{label} {}/{n}", k + 1), root)?;
            let t = if root == OPEN {
                // Toggle close path: the OPEN deadline keeps running; a step timeout goes
                // back to OPEN.
                Trans {
                    next_state: next,
                    effects: E_KEEP_HARD,
                    idle_ns: d.step_timeout_ns,
                    idle_rollback: OPEN,
                    ..Default::default()
                }
            } else if cur == root {
                Trans {
                    next_state: next,
                    idle_ns: d.step_timeout_ns,
                    hard_ns: d.seq_timeout_ns,
                    ..Default::default()
                }
            } else {
                Trans {
                    next_state: next,
                    effects: E_KEEP_HARD,
                    idle_ns: d.step_timeout_ns,
                    ..Default::default()
                }
            };
            self.add(cur, p, port, t, name);
            self.inner.insert((cur, p, port), next);
            cur = next;
        }
        Ok(())
    }
}

fn seq_text(seq: &[(u8, u16)]) -> String {
    seq.iter()
        .map(|s| step_name(*s))
        .collect::<Vec<_>>()
        .join(",")
}

/// Compiles doors and raw machines into machines 0.. (doors first; at most
/// [`MAX_MACHINES`] in all; at most 253 states per door).
pub fn compile(doors: &[KnockDoor], raws: &[RawMachine]) -> Result<Compiled, XfsmError> {
    if doors.len() + raws.len() > MAX_MACHINES {
        return Err(XfsmError::Compile(format!(
            "{} doors and {} [[xfsm]] machines: at most {MAX_MACHINES} in all",
            doors.len(),
            raws.len()
        )));
    }
    let src = Scope::compile(&[field::SRC_IP]).unwrap();
    let mut c = Compiled::default();
    for (mi, d) in doors.iter().enumerate() {
        check_door(d)?;
        let m = mi as u8;
        let (fail_max, fail_window_ns, lock_ns) = d.lockout.unwrap_or((0, 0, 0));
        c.machines.push(Machine {
            lookup: src,
            update: src,
            enabled: 1,
            flags: 0,
            any_protos: 0,
            levels: 0,
            fail_max,
            fail_window_ns,
            lock_ns,
        });
        let mut gs = GrantSet {
            len: d.protected.len() as u32,
            open_ns: d.open_for_ns,
            ..Default::default()
        };
        for (i, (p, port)) in d.protected.iter().enumerate() {
            gs.protos[i] = *p;
            gs.ports[i] = *port;
        }
        c.grant_sets.push(gs);
        let mut b = DoorBuilder {
            c: &mut c,
            d,
            m,
            names: vec!["DEFAULT".into(), "OPEN".into()],
            roots: vec![STATE_DEFAULT, STATE_DEFAULT],
            inner: BTreeMap::new(),
        };
        for (i, seq) in d.sequences.iter().enumerate() {
            let label = if d.sequences.len() > 1 {
                format!("open#{}", i + 1)
            } else {
                "open".into()
            };
            let once = d.once.get(i).copied().unwrap_or(0);
            b.path(STATE_DEFAULT, seq, End::Open, &label, once)?;
        }
        for (i, seq) in d.close.iter().enumerate() {
            b.path(
                STATE_DEFAULT,
                seq,
                End::Close,
                &format!("close#{}", i + 1),
                0,
            )?;
        }
        if d.toggle {
            for (i, seq) in d.sequences.iter().enumerate() {
                b.path(OPEN, seq, End::Close, &format!("toggle#{}", i + 1), 0)?;
            }
        } else {
            // From OPEN, the first steps work as from DEFAULT: knocking again while open
            // starts over (the door stays open until its grant ends).
            let firsts: Vec<(TKey, Trans)> =
                b.c.trans
                    .range((m, STATE_DEFAULT, 0, 0, 0)..=(m, STATE_DEFAULT, 0, u8::MAX, u16::MAX))
                    .map(|(k, t)| (*k, *t))
                    .collect();
            for ((_, _, _, p, port), t) in firsts {
                let name = format!("{}: {} from OPEN", d.name, step_name((p, port)));
                b.add(OPEN, p, port, t, name);
                if let Some(&next) = b.inner.get(&(STATE_DEFAULT, p, port)) {
                    b.inner.insert((OPEN, p, port), next);
                }
            }
        }
        // Retransmissions of the step just taken keep the state and its timers.
        let edges: Vec<(TKey, Trans)> =
            b.c.trans
                .range((m, 0, 0, 0, 0)..=(m, u8::MAX, u8::MAX, u8::MAX, u16::MAX))
                .map(|(k, t)| (*k, *t))
                .collect();
        for ((_, _, _, p, port), t) in edges {
            if t.next_state == STATE_DEFAULT || t.next_state == NEXT_STAY || port == 0 {
                continue;
            }
            let to = t.next_state;
            if b.c.trans.contains_key(&(m, to, DIR_INGRESS, p, port)) {
                continue; // the next step uses the same port: it takes precedence
            }
            let keep = Trans {
                next_state: NEXT_STAY,
                effects: E_KEEP_HARD | E_KEEP_IDLE,
                ..Default::default()
            };
            let name = format!(
                "{}: repeat of {} in {}",
                d.name,
                step_name((p, port)),
                b.names[to as usize]
            );
            b.add(to, p, port, keep, name);
        }
        if d.strict {
            for st in 2..b.names.len() as u8 {
                // A wrong knock resets to where the path started: DEFAULT, or OPEN on a
                // toggle close path (whose deadline keeps running).
                let root = b.roots[st as usize];
                for p in [proto::TCP, proto::UDP] {
                    let t = Trans {
                        next_state: root,
                        effects: E_FAIL | if root == OPEN { E_KEEP_HARD } else { 0 },
                        action: ACT_NEXT,
                        ..Default::default()
                    };
                    let name = format!(
                        "{}: wrong knock in {} ({})",
                        d.name,
                        b.names[st as usize],
                        crate::types::proto_name(p)
                    );
                    b.add(st, p, 0, t, name);
                }
            }
        }
        let names = std::mem::take(&mut b.names);
        c.state_names.push(names);
    }
    for r in raws {
        compile_raw(&mut c, r)?;
    }
    check_compiled(&c)?;
    c.mark_levels();
    Ok(c)
}

/// Limits that hold for the tables as a whole.
fn check_compiled(c: &Compiled) -> Result<(), XfsmError> {
    if c.payloads.len() > MAX_PAYLOADS as usize {
        return Err(XfsmError::Compile(format!(
            "{} different UDP payloads: at most {MAX_PAYLOADS}",
            c.payloads.len()
        )));
    }
    // Both generations share the kernel's transition table.
    let entries = c.trans.len() + c.cond_trans.len();
    if entries > TRANS_PER_GEN {
        return Err(XfsmError::Compile(format!(
            "{entries} transition table entries (each transition of a machine with n conditions takes one per condition vector it covers, up to 2^n): at most {TRANS_PER_GEN}"
        )));
    }
    // Transition counters become metric series: each name must be its own.
    let mut seen = BTreeSet::new();
    if let Some(dup) = c.counter_names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(XfsmError::Compile(format!(
            "two transitions are both named {dup:?} (their counters would be one series)"
        )));
    }
    Ok(())
}

/// A door's sequences have 1 to 32 steps (none at all is allowed: a door whose one-time
/// sequences are all used opens only by hand), and it protects 1 to
/// [`GRANT_SET_PORTS`] ports.
fn check_door(d: &KnockDoor) -> Result<(), XfsmError> {
    if d.sequences
        .iter()
        .chain(&d.close)
        .any(|s| s.is_empty() || s.len() > 32)
    {
        return Err(XfsmError::Compile(format!(
            "door {}: every sequence needs 1 to 32 steps",
            d.name
        )));
    }
    if d.protected.is_empty() || d.protected.len() > GRANT_SET_PORTS {
        return Err(XfsmError::Compile(format!(
            "door {}: 1 to {GRANT_SET_PORTS} protected ports",
            d.name
        )));
    }
    Ok(())
}

/// A transition's update set and action set ([`Trans::upd`], [`Trans::act`]: 0 = none),
/// added to the generation's.
fn trans_sets(
    c: &mut Compiled,
    t: &RawTrans,
    err: impl Fn(String) -> XfsmError,
) -> Result<(u8, u8), XfsmError> {
    let mut upd = 0;
    if !t.updates.is_empty() {
        if c.upd_sets.len() >= MAX_UPD_SETS as usize {
            return Err(err(format!(
                "more than {MAX_UPD_SETS} transitions with updates in all machines"
            )));
        }
        c.upd_sets.push(encode::updates(&t.updates));
        upd = c.upd_sets.len() as u8;
    }
    let mut act = 0;
    if !t.acts.is_empty() {
        act = c.act_id(encode::acts(&t.acts)).ok_or_else(|| {
            err(format!(
                "more than {MAX_ACT_SETS} different action sets in all machines"
            ))
        })?;
    }
    Ok((upd, act))
}

/// The grant set of a machine written by hand (`grant`, `open_for`).
fn raw_grant_set(r: &RawMachine, err: impl Fn(String) -> XfsmError) -> Result<GrantSet, XfsmError> {
    if r.grant.0.len() > GRANT_SET_PORTS {
        return Err(err(format!(
            "{} granted ports: at most {GRANT_SET_PORTS}",
            r.grant.0.len()
        )));
    }
    let mut gs = GrantSet {
        len: r.grant.0.len() as u32,
        open_ns: r.grant.1,
        ..Default::default()
    };
    for (i, (p, port)) in r.grant.0.iter().enumerate() {
        gs.protos[i] = *p;
        gs.ports[i] = *port;
    }
    Ok(gs)
}

/// The lookup and update scopes of a machine written by hand, with its key options
/// (bidirectional, fixed table).
fn raw_scopes(
    r: &RawMachine,
    err: impl Fn(String) -> XfsmError,
) -> Result<(Scope, Scope), XfsmError> {
    let mut lookup = Scope::compile(&r.lookup).ok_or_else(|| err("bad lookup scope".into()))?;
    let mut update = Scope::compile(&r.update).ok_or_else(|| err("bad update scope".into()))?;
    if r.bidirectional {
        let (a, p, _) = lookup.shape();
        if a != 2 || p == 1 {
            return Err(err(
                "a bidirectional key needs two addresses and no or two ports".into(),
            ));
        }
        lookup.bidir = 1;
        update.bidir = 1;
    }
    if r.fixed {
        lookup.l2 |= SCOPE_FIXED;
        update.l2 |= SCOPE_FIXED;
    }
    if lookup.shape() != update.shape() {
        return Err(err(
            "lookup and update scopes give keys of different shapes".into(),
        ));
    }
    Ok((lookup, update))
}

/// Compiles one machine as the next machine of `c`.
fn compile_raw(c: &mut Compiled, r: &RawMachine) -> Result<(), XfsmError> {
    let m = c.machines.len() as u8;
    let err = |msg: String| XfsmError::Compile(format!("[[xfsm]] {}: {msg}", r.name));
    let (lookup, update) = raw_scopes(r, err)?;
    if r.states.is_empty() || r.states.len() > 255 {
        return Err(err(format!("{} states: 1 to 255", r.states.len())));
    }
    check_ext(r)?;
    let mut flags = if r.extended() { M_EXT } else { 0 };
    if r.fixed {
        flags |= M_FIXED;
    }
    if !r.flow_regs.is_empty() {
        flags |= M_FLOW_REGS;
    }
    if r.transitions
        .iter()
        .all(|t| matches!(t.next, None | Some(STATE_DEFAULT)))
    {
        flags |= M_STATELESS;
    }
    c.conds.resize(m as usize, CondSet::default());
    c.conds.push(encode::conds(&r.conds));
    for t in &r.transitions {
        if t.state == STATE_DEFAULT && t.port == 0 {
            flags |= M_ANY_PORT;
        }
        // A state that no deadline sends back to DEFAULT: the activity filter cannot bound
        // it, so the machine looks every interesting packet up.
        let lives_on = matches!(t.next, Some(n) if n != STATE_DEFAULT)
            && t.idle.0 == 0
            && t.hard.0 == 0
            && t.keep == 0;
        if lives_on || t.idle.1 != STATE_DEFAULT || t.hard.1 != STATE_DEFAULT {
            flags |= M_UNBOUNDED;
        }
    }
    c.machines.push(Machine {
        lookup,
        update,
        enabled: 1,
        flags,
        any_protos: encode::any_protos(r),
        levels: 0,
        fail_max: 0,
        fail_window_ns: 0,
        lock_ns: 0,
    });
    // Machines index grant sets by machine (empty when the machine grants nothing).
    let gs = raw_grant_set(r, err)?;
    c.grant_sets.push(gs);
    for (i, t) in r.transitions.iter().enumerate() {
        let mut tr = Trans {
            action: if t.drop { ACT_DROP } else { ACT_NEXT },
            next_state: t.next.unwrap_or(NEXT_STAY),
            effects: if t.next.is_none() {
                E_KEEP_HARD | E_KEEP_IDLE
            } else {
                t.keep & (E_KEEP_HARD | E_KEEP_IDLE)
            },
            idle_ns: t.idle.0,
            idle_rollback: t.idle.1,
            hard_ns: t.hard.0,
            hard_rollback: t.hard.1,
            ..Default::default()
        };
        if t.proto == proto::TCP {
            (tr.flags_mask, tr.flags_value) = t.tcp_flags;
        }
        if let Some(open) = t.grant {
            tr.effects |= if open { E_GRANT } else { E_REVOKE };
            tr.grant_set = m;
        }
        if let Some(p) = &t.payload {
            let pl = Payload::from_bytes(p).ok_or_else(|| {
                err(format!(
                    "transition {}: a payload of {} bytes (at most {PAYLOAD_MAX})",
                    i + 1,
                    p.len()
                ))
            })?;
            tr.payload = c.payload_id(&pl);
        }
        (tr.upd, tr.act) = trans_sets(c, t, err)?;
        // The condition vectors this transition covers.
        let (mask, value) = t.when.iter().fold((0u8, 0u8), |(m, v), &(i, b)| {
            (m | 1 << i, v | (b as u8) << i)
        });
        let vectors: Vec<u8> = (0..1u16 << r.conds.len())
            .map(|v| v as u8)
            .filter(|v| v & mask == value)
            .collect();
        for &dir in &t.dirs {
            let key = (m, t.state, dir, t.proto, t.port);
            if r.conds.is_empty() {
                if c.trans.contains_key(&key) {
                    return Err(err(format!(
                        "transition #{} matches the same state, direction, protocol and port as an earlier one",
                        i + 1
                    )));
                }
            } else {
                // Earlier transitions keep the vectors they cover (first declared wins).
                let free: Vec<u8> = vectors
                    .iter()
                    .copied()
                    .filter(|v| !c.cond_trans.contains_key(&(key, *v)))
                    .collect();
                if free.is_empty() {
                    return Err(err(format!(
                        "transition #{} is never taken: earlier transitions with the same state, direction, protocol and port cover every outcome of its conditions",
                        i + 1
                    )));
                }
                tr.counter = c.counter_names.len() as u32;
                for v in free {
                    c.cond_trans.insert((key, v), tr);
                }
            }
            tr.counter = c.counter_names.len() as u32;
            let dname = if dir == DIR_EGRESS {
                "egress"
            } else {
                "ingress"
            };
            c.counter_names.push(format!(
                "{}: #{} {} {dname} {}",
                r.name,
                i + 1,
                r.states[t.state as usize],
                if t.proto == 0 {
                    "any".to_string()
                } else {
                    format!("{}/{}", crate::types::proto_name(t.proto), t.port)
                }
            ));
            if r.conds.is_empty() {
                c.trans.insert(key, tr);
            }
            if t.port != 0 {
                *c.ports.entry(t.port).or_default() |=
                    statewall_common::xfsm::port_bit(t.proto, m as usize);
            }
        }
    }
    c.state_names.push(r.states.clone());
    c.reg_names.resize(m as usize, Default::default());
    c.reg_names.push((r.flow_regs.clone(), r.globals.clone()));
    Ok(())
}

/// Checks a machine's registers, conditions and updates against the kernel's maxima.
fn check_ext(r: &RawMachine) -> Result<(), XfsmError> {
    let err = |m: String| XfsmError::Compile(format!("[[xfsm]] {}: {m}", r.name));
    if r.flow_regs.len() > FLOW_REGS {
        return Err(err(format!(
            "{} per-flow registers: at most {FLOW_REGS}",
            r.flow_regs.len()
        )));
    }
    if r.globals.len() > GLOBAL_REGS {
        return Err(err(format!(
            "{} global registers: at most {GLOBAL_REGS}",
            r.globals.len()
        )));
    }
    if r.conds.len() > MAX_CONDS {
        return Err(err(format!(
            "{} conditions: at most {MAX_CONDS}",
            r.conds.len()
        )));
    }
    for (i, t) in r.transitions.iter().enumerate() {
        if t.updates.len() > MAX_UPDATES {
            return Err(err(format!(
                "transition #{}: {} updates, at most {MAX_UPDATES}",
                i + 1,
                t.updates.len()
            )));
        }
        if t.when.iter().any(|&(c, _)| c as usize >= r.conds.len()) {
            return Err(err(format!("transition #{}: no such condition", i + 1)));
        }
    }
    let opnd_ok = |o: &Opd| match *o {
        Opd::Flow(i) | Opd::Since(i) => (i as usize) < r.flow_regs.len(),
        Opd::Global(i) | Opd::GlobalSince(i) => (i as usize) < r.globals.len(),
        _ => true,
    };
    if let Some(i) = r
        .conds
        .iter()
        .position(|c| !opnd_ok(&c.a) || !opnd_ok(&c.b) || c.shr.iter().any(|k| *k > 63))
    {
        return Err(err(format!(
            "condition #{}: a register index out of range or a shift above 63",
            i + 1
        )));
    }
    for (i, t) in r.transitions.iter().enumerate() {
        let bad = t.updates.iter().any(|u| {
            !opnd_ok(&u.src)
                || u.shr > 63
                || match u.dst {
                    Reg::Flow(i) => i as usize >= r.flow_regs.len(),
                    Reg::Global(i) => i as usize >= r.globals.len(),
                    Reg::Meta => false,
                }
                || matches!(u.op, UpdOp::Ewma(k) if k > 63)
        });
        if bad {
            return Err(err(format!(
                "transition #{}: an update's register index out of range or a shift above 63",
                i + 1
            )));
        }
    }
    Ok(())
}
