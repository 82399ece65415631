//! User side of the `xfsm` stage: compiling knock doors into OpenState tables, writing
//! tables into the kernel (shadow generation, then one switch), and [`RefTables`], the
//! plain-map implementation of [`Tables`] that runs the reference model in tests.
//!
//! A knock door with sequence s1..sn compiles to one machine keyed by source address:
//! DEFAULT --s1--> 1 --s2--> ... --sn--> OPEN, where the last step opens the door's grant set
//! in the gate. The first step arms the sequence timer (`seq_timeout`, kept by later
//! steps), every step arms the step timer (`step_timeout`); both roll back to DEFAULT.
//! OPEN lasts `open_for`. A repeated packet of the step just taken (a retransmitted SYN)
//! keeps the state and its timers. In strict mode, any other knock-like packet (UDP, or
//! TCP with the door's flags) from a source part-way through resets it and counts a failure.

use std::collections::{BTreeMap, HashMap};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use statewall_common::{
    maps::GrantKey,
    proto,
    xfsm::{
        field, Counter, Event, GrantSet, LockKey, LockVal, Machine, Scope, StateKey, StateVal,
        Tables, Trans, TransKey, ACT_NEXT, COUNTERS, CTL_GEN, CTL_LEN, CTL_MASK_BASE, E_FAIL,
        E_GRANT, E_KEEP_HARD, E_KEEP_IDLE, GRANT_SET_PORTS, MAP_CTL, MAP_GRANT_SETS, MAP_MACHINES,
        MAP_PORTS, MAP_TRANS, MAX_GRANT_SETS, MAX_MACHINES, NEXT_STAY, PORTS_PER_GEN,
        STATE_DEFAULT,
    },
};

/// One knock door.
#[derive(Clone, Debug, PartialEq)]
pub struct KnockDoor {
    /// Name (config section).
    pub name: String,
    /// Steps: (protocol, port).
    pub sequence: Vec<(u8, u16)>,
    /// Protected (protocol, port)s the door opens.
    pub protected: Vec<(u8, u16)>,
    /// TCP flags that must be set ...
    pub tcp_mask: u8,
    /// ... to these values (default SYN without ACK: mask SYN|ACK, value SYN).
    pub tcp_value: u8,
    /// Time allowed between consecutive knocks.
    pub step_timeout_ns: u64,
    /// Time allowed for the whole sequence from its first knock.
    pub seq_timeout_ns: u64,
    /// How long the door stays open.
    pub open_for_ns: u64,
    /// Reset on any other knock-like packet while part-way through.
    pub strict: bool,
    /// Lockout: (failures, within ns, lock ns); `None` = off.
    pub lockout: Option<(u32, u64, u64)>,
}

/// Compiled tables for one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// Machines by index.
    pub machines: Vec<Machine>,
    /// Transitions, keyed without the generation.
    pub trans: BTreeMap<(u8, u8, u8, u16), Trans>,
    /// Port prefilter bits (only non-zero ports).
    pub ports: BTreeMap<u16, u16>,
    /// Grant sets by index.
    pub grant_sets: Vec<GrantSet>,
    /// Human names of the transition counters, by index.
    pub counter_names: Vec<String>,
}

impl Compiled {
    /// The transitions with their full keys in generation `generation`.
    pub fn trans_entries(&self, generation: u32) -> impl Iterator<Item = (TransKey, Trans)> + '_ {
        self.trans
            .iter()
            .map(move |(&(machine, state, proto, port), t)| {
                (
                    TransKey {
                        generation: generation as u8,
                        machine,
                        state,
                        proto,
                        port,
                        _pad: 0,
                    },
                    *t,
                )
            })
    }

    /// Bit set of enabled machines.
    pub fn mask(&self) -> u32 {
        self.machines
            .iter()
            .enumerate()
            .filter(|(_, m)| m.enabled != 0)
            .fold(0, |a, (i, _)| a | 1 << i)
    }
}

/// State id of a door's OPEN state.
pub fn open_state(door: &KnockDoor) -> u8 {
    door.sequence.len() as u8
}

/// Compiles doors (at most [`MAX_MACHINES`], sequences of 1..=32 steps).
pub fn compile(doors: &[KnockDoor]) -> Result<Compiled, String> {
    if doors.len() > MAX_MACHINES {
        return Err(format!("{} doors: at most {MAX_MACHINES}", doors.len()));
    }
    let src = Scope::compile(&[field::SRC_IP]).unwrap();
    let mut c = Compiled::default();
    for (mi, d) in doors.iter().enumerate() {
        let n = d.sequence.len();
        if n == 0 || n > 32 {
            return Err(format!("door {}: the sequence needs 1 to 32 steps", d.name));
        }
        if d.protected.is_empty() || d.protected.len() > GRANT_SET_PORTS {
            return Err(format!(
                "door {}: 1 to {GRANT_SET_PORTS} protected ports",
                d.name
            ));
        }
        let m = mi as u8;
        let (fail_max, fail_window_ns, lock_ns) = d.lockout.unwrap_or((0, 0, 0));
        c.machines.push(Machine {
            lookup: src,
            update: src,
            enabled: 1,
            flags: 0,
            _pad: [0; 2],
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
        let open = open_state(d);
        let flags = |p: u8| {
            if p == proto::TCP {
                (d.tcp_mask, d.tcp_value)
            } else {
                (0, 0)
            }
        };
        let add = |c: &mut Compiled, state: u8, p: u8, port: u16, mut t: Trans, name: String| {
            let (fm, fv) = flags(p);
            t.flags_mask = fm;
            t.flags_value = fv;
            t.counter = c.counter_names.len() as u32;
            c.counter_names.push(name);
            c.trans.insert((m, state, p, port), t);
        };
        for k in 0..n {
            let (p, port) = d.sequence[k];
            *c.ports.entry(port).or_default() |= statewall_common::xfsm::port_bit(p, mi);
            let last = k + 1 == n;
            let t = if last {
                Trans {
                    next_state: open,
                    effects: E_GRANT,
                    grant_set: mi as u8,
                    hard_ns: d.open_for_ns,
                    ..Default::default()
                }
            } else {
                Trans {
                    next_state: (k + 1) as u8,
                    effects: if k == 0 { 0 } else { E_KEEP_HARD },
                    idle_ns: d.step_timeout_ns,
                    hard_ns: if k == 0 { d.seq_timeout_ns } else { 0 },
                    ..Default::default()
                }
            };
            let name = format!(
                "{}: step {} ({}/{})",
                d.name,
                k + 1,
                if p == proto::UDP { "udp" } else { "tcp" },
                port
            );
            add(&mut c, k as u8, p, port, t, name.clone());
            if k == 0 {
                // Knocking the sequence again while open starts it over (the door stays open
                // until its grant ends).
                add(&mut c, open, p, port, t, format!("{name} (while open)"));
            }
        }
        // Retransmissions of the step just taken keep the state and its timers.
        for k in 1..=n {
            let (p, port) = d.sequence[k - 1];
            let state = if k == n { open } else { k as u8 };
            if c.trans.contains_key(&(m, state, p, port)) {
                continue; // the next step uses the same port: it takes precedence
            }
            let t = Trans {
                next_state: NEXT_STAY,
                effects: E_KEEP_HARD | E_KEEP_IDLE,
                ..Default::default()
            };
            add(
                &mut c,
                state,
                p,
                port,
                t,
                format!("{}: repeat of step {k}", d.name),
            );
        }
        if d.strict {
            for k in 1..n {
                for p in [proto::TCP, proto::UDP] {
                    let t = Trans {
                        next_state: STATE_DEFAULT,
                        effects: E_FAIL,
                        action: ACT_NEXT,
                        ..Default::default()
                    };
                    add(
                        &mut c,
                        k as u8,
                        p,
                        0,
                        t,
                        format!("{}: wrong knock after step {k}", d.name),
                    );
                }
            }
        }
    }
    Ok(c)
}

/// Access to the xfsm maps by name (a [`crate::testrun::TestBed`] or the daemon's engine).
pub trait MapAccess {
    /// The map called `name`.
    fn map_mut(&mut self, name: &str) -> &mut Map;
}

impl MapAccess for crate::testrun::TestBed {
    fn map_mut(&mut self, name: &str) -> &mut Map {
        self.map(name)
    }
}

fn merr(name: &str, e: impl std::fmt::Display) -> String {
    format!("map {name}: {e}")
}

/// Writes `c` into the inactive generation and switches to it with one array update.
/// `known_ports` lists the ports with non-zero prefilter bits in the inactive generation
/// (`None`: unknown, every port is written).
pub fn write_tables(
    acc: &mut dyn MapAccess,
    c: &Compiled,
    known_ports: Option<&[u16]>,
) -> Result<u32, String> {
    let cur = {
        let a: Array<&MapData, u32> =
            Array::try_from(&*acc.map_mut(MAP_CTL)).map_err(|e| merr(MAP_CTL, e))?;
        a.get(&CTL_GEN, 0).map_err(|e| merr(MAP_CTL, e))? & 1
    };
    let new = cur ^ 1;
    {
        let mut a: Array<&mut MapData, Machine> =
            Array::try_from(acc.map_mut(MAP_MACHINES)).map_err(|e| merr(MAP_MACHINES, e))?;
        for i in 0..MAX_MACHINES {
            let m = c.machines.get(i).copied().unwrap_or_default();
            a.set(new * MAX_MACHINES as u32 + i as u32, m, 0)
                .map_err(|e| merr(MAP_MACHINES, e))?;
        }
    }
    {
        let mut a: Array<&mut MapData, GrantSet> =
            Array::try_from(acc.map_mut(MAP_GRANT_SETS)).map_err(|e| merr(MAP_GRANT_SETS, e))?;
        for (i, g) in c
            .grant_sets
            .iter()
            .enumerate()
            .take(MAX_GRANT_SETS as usize)
        {
            a.set(new * MAX_GRANT_SETS + i as u32, *g, 0)
                .map_err(|e| merr(MAP_GRANT_SETS, e))?;
        }
    }
    {
        let mut a: Array<&mut MapData, u16> =
            Array::try_from(acc.map_mut(MAP_PORTS)).map_err(|e| merr(MAP_PORTS, e))?;
        let base = new * PORTS_PER_GEN;
        match known_ports {
            Some(ports) => {
                for p in ports {
                    if !c.ports.contains_key(p) {
                        a.set(base + *p as u32, 0, 0)
                            .map_err(|e| merr(MAP_PORTS, e))?;
                    }
                }
                for (p, v) in &c.ports {
                    a.set(base + *p as u32, *v, 0)
                        .map_err(|e| merr(MAP_PORTS, e))?;
                }
            }
            None => {
                for p in 0..PORTS_PER_GEN {
                    let v = c.ports.get(&(p as u16)).copied().unwrap_or(0);
                    a.set(base + p, v, 0).map_err(|e| merr(MAP_PORTS, e))?;
                }
            }
        }
    }
    {
        let mut h: BpfHashMap<&mut MapData, TransKey, Trans> =
            BpfHashMap::try_from(acc.map_mut(MAP_TRANS)).map_err(|e| merr(MAP_TRANS, e))?;
        let stale: Vec<TransKey> = h
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.generation as u32 == new)
            .collect();
        for k in stale {
            h.remove(&k).map_err(|e| merr(MAP_TRANS, e))?;
        }
        for (k, t) in c.trans_entries(new) {
            h.insert(k, t, 0).map_err(|e| merr(MAP_TRANS, e))?;
        }
    }
    let mut a: Array<&mut MapData, u32> =
        Array::try_from(acc.map_mut(MAP_CTL)).map_err(|e| merr(MAP_CTL, e))?;
    a.set(CTL_MASK_BASE + new, c.mask(), 0)
        .map_err(|e| merr(MAP_CTL, e))?;
    // The switch: one array update.
    a.set(CTL_GEN, new, 0).map_err(|e| merr(MAP_CTL, e))?;
    Ok(new)
}

/// The reference model's tables: plain maps with the kernel's capacities where tests can
/// reach them (locks, grants).
#[derive(Clone, Debug, Default)]
pub struct RefTables {
    /// Control words.
    pub ctl: [u32; CTL_LEN as usize],
    /// Machines per generation.
    pub machines: HashMap<(u32, usize), Machine>,
    /// Prefilter per generation.
    pub ports: HashMap<(u32, u16), u16>,
    /// Transitions.
    pub trans: HashMap<TransKey, Trans>,
    /// Grant sets per generation.
    pub grant_sets: HashMap<(u32, u8), GrantSet>,
    /// Activity filter.
    pub active: HashMap<u32, u64>,
    /// States.
    pub states: HashMap<StateKey, StateVal>,
    /// Locks and their capacity.
    pub locks: HashMap<LockKey, LockVal>,
    /// Lock table capacity.
    pub lock_cap: usize,
    /// Grants (expiry) and their capacity.
    pub grants: HashMap<GrantKey, u64>,
    /// Grant table capacity.
    pub grant_cap: usize,
    /// Stage counters.
    pub counters: [u64; COUNTERS as usize],
    /// Transition counters.
    pub tcount: HashMap<u32, u64>,
    /// Events in order.
    pub events: Vec<Event>,
}

impl RefTables {
    /// Empty tables with capacities.
    pub fn new(lock_cap: usize, grant_cap: usize) -> Self {
        RefTables {
            lock_cap,
            grant_cap,
            ..Default::default()
        }
    }

    /// Loads compiled tables into the inactive generation and switches, like [`write_tables`].
    pub fn load(&mut self, c: &Compiled) {
        let new = (self.ctl[CTL_GEN as usize] & 1) ^ 1;
        for i in 0..MAX_MACHINES {
            self.machines
                .insert((new, i), c.machines.get(i).copied().unwrap_or_default());
        }
        for (i, g) in c.grant_sets.iter().enumerate() {
            self.grant_sets.insert((new, i as u8), *g);
        }
        self.ports.retain(|(g, _), _| *g != new);
        for (p, v) in &c.ports {
            self.ports.insert((new, *p), *v);
        }
        self.trans.retain(|k, _| k.generation as u32 != new);
        self.trans.extend(c.trans_entries(new));
        self.ctl[(CTL_MASK_BASE + new) as usize] = c.mask();
        self.ctl[CTL_GEN as usize] = new;
    }
}

impl Tables for RefTables {
    fn ctl(&self, idx: u32) -> u32 {
        self.ctl.get(idx as usize).copied().unwrap_or(0)
    }
    fn set_ctl(&mut self, idx: u32, v: u32) {
        if let Some(c) = self.ctl.get_mut(idx as usize) {
            *c = v;
        }
    }
    fn machine(&self, generation: u32, m: usize) -> Machine {
        self.machines
            .get(&(generation, m))
            .copied()
            .unwrap_or_default()
    }
    fn ports(&self, generation: u32, port: u16) -> u16 {
        self.ports.get(&(generation, port)).copied().unwrap_or(0)
    }
    fn trans(&self, k: &TransKey) -> Option<Trans> {
        self.trans.get(k).copied()
    }
    fn grant_set(&self, generation: u32, set: u8) -> GrantSet {
        self.grant_sets
            .get(&(generation, set))
            .copied()
            .unwrap_or_default()
    }
    fn active(&self, b: u32) -> u64 {
        self.active.get(&b).copied().unwrap_or(0)
    }
    fn set_active(&mut self, b: u32, until: u64) {
        self.active.insert(b, until);
    }
    fn state(&mut self, k: &StateKey) -> Option<StateVal> {
        self.states.get(k).copied()
    }
    fn put_state(&mut self, k: &StateKey, v: &StateVal) {
        self.states.insert(*k, *v);
    }
    fn del_state(&mut self, k: &StateKey) {
        self.states.remove(k);
    }
    fn lock(&self, k: &LockKey) -> Option<LockVal> {
        self.locks.get(k).copied()
    }
    fn put_lock(&mut self, k: &LockKey, v: &LockVal) -> bool {
        if !self.locks.contains_key(k) && self.locks.len() >= self.lock_cap {
            return false;
        }
        self.locks.insert(*k, *v);
        true
    }
    fn grant(&mut self, k: &GrantKey, expires_ns: u64) -> bool {
        if let Some(cur) = self.grants.get_mut(k) {
            *cur = (*cur).max(expires_ns);
            return true;
        }
        if self.grants.len() >= self.grant_cap {
            return false;
        }
        self.grants.insert(*k, expires_ns);
        true
    }
    fn revoke(&mut self, k: &GrantKey) {
        self.grants.remove(k);
    }
    fn count(&mut self, c: Counter) {
        self.counters[c as usize] += 1;
    }
    fn count_trans(&mut self, idx: u32) {
        *self.tcount.entry(idx).or_default() += 1;
    }
    fn event(&mut self, e: &Event) {
        self.events.push(*e);
    }
}
