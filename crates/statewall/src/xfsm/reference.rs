//! [`RefTables`]: the xfsm tables as plain maps, over which `statewall_common::xfsm::step`
//! runs as the reference model of the knock doors in tests.

use std::collections::HashMap;

use statewall_common::{
    maps::GrantKey,
    xfsm::regs::{CondSet, UpdSet, FLOW_REGS, GLOBAL_REGS},
    xfsm::{
        Counter, Event, GrantOutcome, GrantSet, LockKey, LockVal, Machine, Payload, StateKey,
        StateVal, Tables, Trans, TransKey, COUNTERS, CTL_GEN, CTL_LEN, MAX_MACHINES,
    },
};

use super::Compiled;

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
    /// Address filter.
    pub addr_active: HashMap<u32, u64>,
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
    /// Unused one-time keys.
    pub once: std::collections::BTreeSet<u64>,
    /// Payload patterns per generation.
    pub payloads: HashMap<(u32, u8), Payload>,
    /// The payload of the packet being stepped (set by the caller before [`statewall_common::xfsm::step`]).
    pub snap: Payload,
    /// Conditions per (generation, machine).
    pub conds: HashMap<(u32, usize), CondSet>,
    /// Update sets per (generation, index).
    pub upd_sets: HashMap<(u32, u32), UpdSet>,
    /// Action events per machine: (second, sent in it).
    pub evrate: HashMap<usize, (u64, u64)>,
    /// Action sets per (generation, index).
    pub act_sets: HashMap<(u32, u32), statewall_common::xfsm::acts::ActSet>,
    /// Per-flow registers.
    pub regs: HashMap<StateKey, [u64; FLOW_REGS]>,
    /// Global registers per machine.
    pub globals: [[u64; GLOBAL_REGS]; MAX_MACHINES],
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

    /// Loads compiled tables into the inactive generation and switches, like [`write_tables`](super::write_tables).
    pub fn load(&mut self, c: &Compiled) {
        let new = (self.ctl[CTL_GEN as usize] & 1) ^ 1;
        for i in 0..MAX_MACHINES {
            self.machines
                .insert((new, i), c.machines.get(i).copied().unwrap_or_default());
        }
        for (i, g) in c.grant_sets.iter().enumerate() {
            self.grant_sets.insert((new, i as u8), *g);
        }
        for (i, p) in c.payloads.iter().enumerate() {
            self.payloads.insert((new, i as u8 + 1), *p);
        }
        self.ports.retain(|(g, _), _| *g != new);
        for (p, v) in &c.ports {
            self.ports.insert((new, *p), *v);
        }
        self.trans.retain(|k, _| k.generation as u32 != new);
        self.trans.extend(c.trans_entries(new));
        for i in 0..MAX_MACHINES {
            self.conds
                .insert((new, i), c.conds.get(i).copied().unwrap_or_default());
        }
        for (i, us) in c.upd_sets.iter().enumerate() {
            self.upd_sets.insert((new, i as u32), *us);
        }
        for (i, a) in c.act_sets.iter().enumerate() {
            self.act_sets.insert((new, i as u32), *a);
        }
        self.ctl[CTL_GEN as usize] = c.ctl_word(new);
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
    fn addr_active(&self, b: u32) -> u64 {
        self.addr_active.get(&b).copied().unwrap_or(0)
    }
    fn set_addr_active(&mut self, b: u32, until: u64) {
        self.addr_active.insert(b, until);
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
    fn grant(&mut self, k: &GrantKey, expires_ns: u64) -> GrantOutcome {
        if let Some(cur) = self.grants.get_mut(k) {
            *cur = (*cur).max(expires_ns);
            return GrantOutcome::Granted;
        }
        if self.grants.len() >= self.grant_cap {
            return GrantOutcome::Full;
        }
        self.grants.insert(*k, expires_ns);
        GrantOutcome::Granted
    }
    fn take_once(&mut self, key: u64) -> bool {
        self.once.remove(&key)
    }
    fn payload_matches(&self, generation: u32, idx: u8) -> bool {
        self.payloads
            .get(&(generation, idx))
            .is_some_and(|p| p.same(&self.snap))
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
    fn event_allowed(&mut self, m: usize, now: u64) -> bool {
        let e = self.evrate.entry(m).or_default();
        let sec = now / 1_000_000_000;
        if e.0 != sec {
            *e = (sec, 0);
        }
        e.1 += 1;
        e.1 <= statewall_common::xfsm::acts::EVENTS_PER_SEC
    }
    fn event<F: FnOnce(&mut Event)>(&mut self, fill: F) {
        let mut e = Event::default();
        fill(&mut e);
        self.events.push(e);
    }
    fn conds(&self, generation: u32, m: usize) -> Option<&CondSet> {
        self.conds.get(&(generation, m))
    }
    fn act_set_into(
        &self,
        generation: u32,
        idx: u32,
        out: &mut statewall_common::xfsm::acts::ActSet,
    ) {
        *out = self
            .act_sets
            .get(&(generation, idx))
            .copied()
            .unwrap_or_default();
    }
    fn flow_regs(&self, k: &StateKey, out: &mut [u64; FLOW_REGS]) {
        *out = self.regs.get(k).copied().unwrap_or_default();
    }
    fn global_regs(&self, m: usize, out: &mut [u64; GLOBAL_REGS]) {
        *out = self.globals[m];
    }
    fn update_regs<F: FnOnce(&UpdSet, &mut [u64; FLOW_REGS], &mut [u64; GLOBAL_REGS])>(
        &mut self,
        k: &StateKey,
        _kept: bool,
        m: usize,
        flow: bool,
        generation: u32,
        set: u32,
        f: F,
    ) -> statewall_common::xfsm::RegsOutcome {
        let Some(us) = self.upd_sets.get(&(generation, set)) else {
            return statewall_common::xfsm::RegsOutcome::Done;
        };
        if flow {
            f(us, self.regs.entry(*k).or_default(), &mut self.globals[m]);
        } else {
            f(us, &mut [0; FLOW_REGS], &mut self.globals[m]);
        }
        statewall_common::xfsm::RegsOutcome::Done
    }
}
