//! The xfsm stage in the kernel: compiling doors and machines into the inactive
//! generation and switching to it, the switches' masks and ports, one-time and derived
//! sequences, lock records, events and counters. Written through the [`Engine`]; what was written last is kept beside it
//! ([`Installed`]).

use std::collections::BTreeSet;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};

use crate::engine::{drain_ring, map_err, Engine, EngineError, Result};
use statewall_common::xfsm::acts::{SwitchDef, MAP_SWITCH, MAP_SWITCH_IF, MAX_SWITCHES};

use crate::xfsm::{
    config::{KnockConfig, XfsmInput},
    sequences::Once,
    tables::Compiled,
    write::write_tables,
};

/// What the xfsm stage wrote last (kept in the engine: [`Engine::stage`]).
#[derive(Default)]
pub struct Installed {
    /// The tables written last (None until [`Engine::apply_xfsm`]).
    pub compiled: Option<Compiled>,
    /// Ports with prefilter bits in each generation (None = unknown).
    ports: [Option<Vec<u16>>; 2],
    /// Per door: (signature without its sequences, full signature) of the last write. A
    /// door whose signature changes loses its sources' states; unknown signatures (a start
    /// that could not read the saved ones) lose all. The daemon keeps them in
    /// `STATE_DIR/xfsm-doors.json` so that a restart keeps knocks in progress.
    pub door_sigs: Vec<(String, String)>,
    /// One-time sequences in force (see [`crate::xfsm::sequences`]).
    pub once_live: Vec<Once>,
    /// Time counters in force, per time-based door.
    pub time_counters: Vec<(String, u64)>,
}

impl Engine {
    /// The xfsm tables written last.
    pub fn xfsm_compiled(&self) -> Option<&Compiled> {
        self.stage_ref::<Installed>()?.compiled.as_ref()
    }

    /// Compiles the config's doors and writes them into the inactive xfsm generation, then
    /// switches to it (one array update: no packet sees half a table).
    pub fn apply_xfsm(&mut self, cfg: &XfsmInput) -> Result<()> {
        let exp = self.expand_sequences(cfg)?;
        let doors = &exp.doors;
        let raws = crate::xfsm::config::raw_machines(cfg.machines)
            .map_err(|(at, msg)| EngineError::Doors(format!("{at}: {msg}")))?;
        let mut compiled = crate::xfsm::compile::compile(doors, &raws)
            .map_err(|e| EngineError::Doors(e.to_string()))?;
        let switch_masks = crate::xfsm::switch::masks(cfg.switches, cfg.machines, doors.len());
        compiled.switch_mask = switch_masks.iter().fold(0, |a, m| a | m);
        compiled.exempt_mask = crate::xfsm::config::exempt_mask(cfg.machines, doors.len());
        // A machine whose door changed (or whose previous door is unknown: the first write
        // of this process) starts with no states: an old state id means nothing in the new
        // machine. When only its sequences changed (a one-time sequence used, a new time
        // window), OPEN states stay and only part-way states go. Lock records stay (they
        // are per source and door index).
        let sigs: Vec<(String, String)> = doors
            .iter()
            .map(|d| {
                let mut bare = d.clone();
                bare.sequences.clear();
                bare.once.clear();
                (format!("{bare:?}"), format!("{d:?}"))
            })
            .chain(raws.iter().map(|r| (format!("{r:?}"), format!("{r:?}"))))
            .collect();
        let mut flush = [None::<u8>; statewall_common::xfsm::MAX_MACHINES];
        for (m, f) in flush.iter_mut().enumerate() {
            let (old, new) = (self.stage::<Installed>().door_sigs.get(m), sigs.get(m));
            if old.map(|s| &s.0) != new.map(|s| &s.0) {
                *f = Some(0); // every state
            } else if old != new {
                *f = Some(2); // states from 2 on: the part-way ones
            }
        }
        let ctl: Array<&MapData, u32> =
            Array::try_from(self.map_checked(statewall_common::xfsm::MAP_CTL)?)
                .map_err(|e| map_err(statewall_common::xfsm::MAP_CTL, e))?;
        let cur = ctl.get(&statewall_common::xfsm::CTL_GEN, 0).unwrap_or(0) & 1;
        let shadow = (cur ^ 1) as usize;
        // Switches: interfaces resolved first (an error changes nothing), the new
        // generation's machine masks before the table switch, ports after it.
        let switch_defs =
            crate::xfsm::switch::switch_defs(cfg.switches, &switch_masks, shadow as u32)?;
        self.write_switch_masks(&switch_defs, shadow as u32)?;
        let known = self.stage::<Installed>().ports[shadow].take();
        let new =
            write_tables(self, &compiled, known.as_deref()).map_err(|e| EngineError::Map {
                map: "xfsm tables".into(),
                msg: e.to_string(),
            })?;
        self.write_switch_ports(&switch_defs)?;
        let st = self.stage::<Installed>();
        st.ports[new as usize] = Some(compiled.ports.keys().copied().collect());
        st.compiled = Some(compiled);
        st.door_sigs = sigs;
        st.once_live = exp.once;
        st.time_counters = exp.time_counters;
        if flush.iter().any(Option::is_some) {
            use statewall_common::xfsm::{StateKey, StateVal, MAP_FIXED_STATES, MAP_STATES};
            for map in [MAP_STATES, MAP_FIXED_STATES] {
                let mut h: BpfHashMap<&mut MapData, StateKey, StateVal> =
                    BpfHashMap::try_from(self.map_mut_checked(map)?)
                        .map_err(|e| map_err(map, e))?;
                let keys: Vec<StateKey> = h
                    .iter()
                    .filter_map(|r| r.ok())
                    .filter(|(k, v)| {
                        matches!(flush.get(k.machine as usize), Some(Some(from)) if v.state >= *from)
                    })
                    .map(|(k, _)| k)
                    .collect();
                for k in keys {
                    let _ = h.remove(&k);
                }
            }
            // A machine that starts over starts with its registers at 0 too: the index may
            // now be another machine's, whose registers mean something else.
            use statewall_common::xfsm::regs::{
                FlowRegs, GlobalRegs, MAP_FIXED_REGS, MAP_GLOBALS, MAP_REGS,
            };
            let restart = |m: usize| matches!(flush.get(m), Some(Some(0)));
            for map in [MAP_REGS, MAP_FIXED_REGS] {
                let mut h: BpfHashMap<&mut MapData, StateKey, FlowRegs> =
                    BpfHashMap::try_from(self.map_mut_checked(map)?)
                        .map_err(|e| map_err(map, e))?;
                let keys: Vec<StateKey> = h
                    .keys()
                    .filter_map(|r| r.ok())
                    .filter(|k| restart(k.machine as usize))
                    .collect();
                for k in keys {
                    let _ = h.remove(&k);
                }
            }
            let mut g: Array<&mut MapData, GlobalRegs> =
                Array::try_from(self.map_mut_checked(MAP_GLOBALS)?)
                    .map_err(|e| map_err(MAP_GLOBALS, e))?;
            for m in (0..flush.len()).filter(|m| restart(*m)) {
                g.set(m as u32, GlobalRegs::default(), 0)
                    .map_err(|e| map_err(MAP_GLOBALS, e))?;
            }
        }
        self.mark_active()
    }

    /// Marks every state entry's activity bucket, as the kernel does when it writes one:
    /// pinned filters written by a release that hashed keys into buckets otherwise would
    /// send a part-way knock, after an upgrade, to a bucket that says its source has no
    /// state. Buckets only rise (the kernel writes them meanwhile).
    fn mark_active(&mut self) -> Result<()> {
        use statewall_common::xfsm::{active_until, bucket, MAP_ACTIVE};
        let states = self.xfsm_states()?;
        if states.is_empty() {
            return Ok(());
        }
        let mut a: Array<&mut MapData, u64> = Array::try_from(self.map_mut_checked(MAP_ACTIVE)?)
            .map_err(|e| map_err(MAP_ACTIVE, e))?;
        for (k, v) in &states {
            let (b, until) = (bucket(k), active_until(v));
            if a.get(&b, 0).unwrap_or(0) < until {
                a.set(b, until, 0).map_err(|e| map_err(MAP_ACTIVE, e))?;
            }
        }
        Ok(())
    }

    /// The doors with every sequence in force, after recording the one-time sequences the
    /// kernel has used (their keys gone from `SW_XFSM_ONCE`) and issuing keys for new ones.
    fn expand_sequences(&mut self, cfg: &XfsmInput) -> Result<crate::xfsm::sequences::Expansion> {
        use crate::xfsm::sequences::{self as seqs, SENTINEL};
        use statewall_common::xfsm::MAP_ONCE;
        let now = crate::engine::clock::unix_secs();
        let derr = |e: crate::xfsm::error::XfsmError| EngineError::Doors(e.to_string());
        let mut exp = seqs::expand(cfg.knocks, cfg.state_dir, now).map_err(derr)?;
        if exp.once.is_empty() {
            return Ok(exp);
        }
        let dir = cfg.state_dir.to_path_buf();
        let mut h: BpfHashMap<&mut MapData, u64, u8> =
            BpfHashMap::try_from(self.map_mut_checked(MAP_ONCE)?)
                .map_err(|e| map_err(MAP_ONCE, e))?;
        let mut issued = if h.get(&SENTINEL, 0).is_err() {
            // A new map (first start, or pins gone after a reboot): keys issued before mean
            // nothing now.
            crate::engine::sys::write_synced(&seqs::issued_path(&dir), b"")
                .map_err(|e| EngineError::Doors(e.to_string()))?;
            h.insert(SENTINEL, 1, 0).map_err(|e| map_err(MAP_ONCE, e))?;
            BTreeSet::new()
        } else {
            seqs::read_issued(&dir).map_err(derr)?
        };
        let mut used = BTreeSet::new();
        for _ in 0..8 {
            let fresh: Vec<seqs::Once> = exp
                .once
                .iter()
                .filter(|o| {
                    !used.contains(&o.key) && issued.contains(&o.key) && h.get(&o.key, 0).is_err()
                })
                .cloned()
                .collect();
            if fresh.is_empty() {
                break;
            }
            for o in &fresh {
                match seqs::consume(&dir, o) {
                    Ok(()) => {
                        tracing::info!(door = %o.door, origin = ?o.origin, "one-time sequence used")
                    }
                    Err(e) => tracing::warn!(door = %o.door, "one-time sequence used: {e}"),
                }
                used.insert(o.key);
            }
            exp = seqs::expand(cfg.knocks, cfg.state_dir, now).map_err(derr)?;
        }
        // Sequences used but still read (a line that could not be marked) stay out.
        for d in &mut exp.doors {
            let mut i = 0;
            while i < d.sequences.len() {
                if d.once.get(i).is_some_and(|k| used.contains(k)) {
                    d.sequences.remove(i);
                    d.once.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        exp.once.retain(|o| !used.contains(&o.key));
        // Keys no longer in force (used, counters passed, lines or doors gone) leave the
        // map and the list, so neither fills up.
        let live: BTreeSet<u64> = exp.once.iter().map(|o| o.key).collect();
        let gone: Vec<u64> = issued.difference(&live).copied().collect();
        for k in &gone {
            let _ = h.remove(k);
        }
        let new: Vec<u64> = live.difference(&issued).copied().collect();
        if !gone.is_empty() {
            issued.retain(|k| live.contains(k));
            seqs::write_issued(&dir, &issued).map_err(derr)?;
        }
        if !new.is_empty() {
            // Listed (and synced) before they exist in the map: a crash in between leaves a
            // listed key missing, which reads as used (fail closed).
            seqs::append_issued(&dir, &new).map_err(derr)?;
            for k in &new {
                if let Err(e) = h.insert(k, 1, 0) {
                    // Not in the map: take it off the list again, so that it does not read
                    // as used, and fail the update.
                    issued.extend(new.iter().copied());
                    issued.remove(k);
                    let _ = seqs::write_issued(&dir, &issued);
                    return Err(map_err(MAP_ONCE, e));
                }
                issued.insert(*k);
            }
        }
        Ok(exp)
    }

    /// Recompiles the doors when a one-time sequence was used or a time window turned
    /// (the daemon calls it every second); true when it did.
    pub fn refresh_sequences(&mut self, cfg: &XfsmInput) -> Result<bool> {
        use statewall_common::xfsm::MAP_ONCE;
        let now = crate::engine::clock::unix_secs();
        let st = self.stage::<Installed>();
        let (time_counters, once_live) = (st.time_counters.clone(), st.once_live.clone());
        let turned = time_counters.iter().any(|(door, c)| {
            cfg.knocks.iter().any(|k| {
                k.name == *door
                    && crate::xfsm::knockclient::time_counter(now, k.time_period.0.as_secs().max(1))
                        != *c
            })
        });
        let used = !once_live.is_empty() && {
            let h: BpfHashMap<&MapData, u64, u8> =
                BpfHashMap::try_from(self.map_checked(MAP_ONCE)?)
                    .map_err(|e| map_err(MAP_ONCE, e))?;
            once_live.iter().any(|o| h.get(&o.key, 0).is_err())
        };
        if turned || used {
            self.apply_xfsm(cfg)?;
        }
        Ok(turned || used)
    }

    /// Takes the xfsm events waiting in the ring buffer (tools and tests; the daemon reads
    /// them asynchronously from its own handle).
    pub fn drain_events(&mut self) -> Vec<statewall_common::xfsm::Event> {
        use statewall_common::xfsm::{Event, MAP_EVENTS};
        let Some(m) = self.maps.get_mut(MAP_EVENTS) else {
            return Vec::new();
        };
        drain_ring::<Event>(m)
    }

    /// xfsm stage counters summed over CPUs, by name.
    pub fn xfsm_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        use statewall_common::xfsm::{COUNTERS, COUNTER_NAMES, MAP_STATS};
        let sums = self.percpu_sums(MAP_STATS, COUNTERS)?;
        Ok(COUNTER_NAMES.into_iter().zip(sums).collect())
    }

    /// Per-transition counters of the current tables: (name, packets).
    pub fn xfsm_transition_counters(&self) -> Result<Vec<(String, u64)>> {
        use statewall_common::xfsm::MAP_TCOUNT;
        let Some(c) = self.xfsm_compiled() else {
            return Ok(Vec::new());
        };
        let sums = self.percpu_sums(MAP_TCOUNT, c.counter_names.len() as u32)?;
        Ok(c.counter_names.iter().cloned().zip(sums).collect())
    }

    /// The xfsm state entries: (machine, source, state, idle deadline, hard deadline).
    pub fn xfsm_states(
        &self,
    ) -> Result<
        Vec<(
            statewall_common::xfsm::StateKey,
            statewall_common::xfsm::StateVal,
        )>,
    > {
        let mut v = self.hash_entries(statewall_common::xfsm::MAP_STATES)?;
        v.extend(self.hash_entries(statewall_common::xfsm::MAP_FIXED_STATES)?);
        Ok(v)
    }

    /// Per-flow registers: (update key, registers).
    pub fn xfsm_flow_regs(
        &self,
    ) -> Result<
        Vec<(
            statewall_common::xfsm::StateKey,
            statewall_common::xfsm::regs::FlowRegs,
        )>,
    > {
        let mut v = self.hash_entries(statewall_common::xfsm::regs::MAP_REGS)?;
        v.extend(self.hash_entries(statewall_common::xfsm::regs::MAP_FIXED_REGS)?);
        Ok(v)
    }

    /// Global registers of machine `m`.
    pub fn xfsm_globals(
        &self,
        m: usize,
    ) -> Result<[u64; statewall_common::xfsm::regs::GLOBAL_REGS]> {
        use statewall_common::xfsm::regs::{GlobalRegs, MAP_GLOBALS};
        let a: aya::maps::Array<&aya::maps::MapData, GlobalRegs> =
            aya::maps::Array::try_from(self.pinned(MAP_GLOBALS)?)
                .map_err(|e| crate::engine::error::map_err(MAP_GLOBALS, e))?;
        Ok(a.get(&(m as u32), 0)
            .map_err(|e| crate::engine::error::map_err(MAP_GLOBALS, e))?
            .g)
    }

    /// Lock records: (key, value).
    pub fn xfsm_locks(
        &self,
    ) -> Result<
        Vec<(
            statewall_common::xfsm::LockKey,
            statewall_common::xfsm::LockVal,
        )>,
    > {
        self.hash_entries(statewall_common::xfsm::MAP_LOCKS)
    }

    /// Removes lock records whose lockout and failure window are over (so that a full lock
    /// table drains), and clears the table-full flag when there is room again; returns how
    /// many records went.
    pub fn sweep_locks(&mut self, knocks: &[KnockConfig]) -> Result<usize> {
        use statewall_common::xfsm::{LockKey, LockVal, CTL_LOCK_FULL, MAP_LOCKS};
        let now = self.kernel_now();
        let windows: Vec<u64> = knocks
            .iter()
            .map(|k| k.lockout.as_ref().map(|l| l.within.ns()).unwrap_or(0))
            .collect();
        let locks = self.xfsm_locks()?;
        let total = locks.len();
        let dead: Vec<LockKey> = locks
            .into_iter()
            .filter(|(k, v)| {
                let w = windows.get(k.machine as usize).copied().unwrap_or(0);
                v.locked_until <= now && v.window_start.saturating_add(w) <= now
            })
            .map(|(k, _)| k)
            .collect();
        self.remove_and_clear::<LockKey, LockVal>(MAP_LOCKS, &dead, total, CTL_LOCK_FULL)
    }

    /// Removes entries of the fixed state table whose deadline has sent them back to
    /// DEFAULT (the kernel leaves such an entry until a packet looks it up), and clears
    /// the table-full flag when there is room again; returns how many went.
    pub fn sweep_fixed(&mut self) -> Result<usize> {
        use statewall_common::xfsm::{
            StateKey, StateVal, CTL_FIXED_FULL, MAP_FIXED_STATES, STATE_DEFAULT,
        };
        let now = self.kernel_now();
        let entries: Vec<(StateKey, StateVal)> = self.hash_entries(MAP_FIXED_STATES)?;
        let total = entries.len();
        let due = |t: u64| t != 0 && t <= now;
        let dead: Vec<StateKey> = entries
            .into_iter()
            .filter(|(_, v)| {
                (due(v.hard_deadline) && v.hard_rollback == STATE_DEFAULT)
                    || (!due(v.hard_deadline)
                        && due(v.idle_deadline)
                        && v.idle_rollback == STATE_DEFAULT)
            })
            .map(|(k, _)| k)
            .collect();
        self.remove_and_clear::<StateKey, StateVal>(MAP_FIXED_STATES, &dead, total, CTL_FIXED_FULL)
    }

    /// Removes `dead` from hash map `map` (of `total` entries before) and, when that
    /// leaves room, clears the table-full flag `ctl_flag` the kernel set; returns how many
    /// went. (The sweeps of the lock table and of the fixed state table.)
    fn remove_and_clear<K: aya::Pod, V: aya::Pod>(
        &mut self,
        map: &str,
        dead: &[K],
        total: usize,
        ctl_flag: u32,
    ) -> Result<usize> {
        use statewall_common::xfsm::MAP_CTL;
        let cap = {
            use aya::maps::IterableMap;
            let mut h: BpfHashMap<&mut MapData, K, V> =
                BpfHashMap::try_from(self.map_mut_checked(map)?).map_err(|e| map_err(map, e))?;
            for k in dead {
                let _ = h.remove(k);
            }
            h.map().info().map(|i| i.max_entries()).unwrap_or(0) as usize
        };
        if total - dead.len() < cap {
            let mut ctl: Array<&mut MapData, u32> =
                Array::try_from(self.map_mut_checked(MAP_CTL)?).map_err(|e| map_err(MAP_CTL, e))?;
            if ctl.get(&ctl_flag, 0).unwrap_or(0) != 0 {
                ctl.set(ctl_flag, 0, 0).map_err(|e| map_err(MAP_CTL, e))?;
            }
        }
        Ok(dead.len())
    }
}

impl Engine {
    /// Before a table switch: the switches' machine masks of generation `shadow` (the one
    /// the switch makes active); ports and the active generation's masks stay.
    pub fn write_switch_masks(&mut self, defs: &[SwitchDef], shadow: u32) -> Result<()> {
        let g = shadow as usize & 1;
        let mut a: Array<&mut MapData, SwitchDef> =
            Array::try_from(self.map_mut_checked(MAP_SWITCH)?)
                .map_err(|e| map_err(MAP_SWITCH, e))?;
        for i in 0..MAX_SWITCHES {
            let mut d = a.get(&i, 0).unwrap_or_default();
            d.masks[g] = defs.get(i as usize).map(|x| x.masks[g]).unwrap_or(0);
            a.set(i, d, 0).map_err(|e| map_err(MAP_SWITCH, e))?;
        }
        Ok(())
    }

    /// After the table switch: the switches' ports and the interface map (ports that left
    /// a switch removed); the masks stay as written.
    pub fn write_switch_ports(&mut self, defs: &[SwitchDef]) -> Result<()> {
        let mut a: Array<&mut MapData, SwitchDef> =
            Array::try_from(self.map_mut_checked(MAP_SWITCH)?)
                .map_err(|e| map_err(MAP_SWITCH, e))?;
        for i in 0..MAX_SWITCHES {
            let old = a.get(&i, 0).unwrap_or_default();
            let mut d = defs.get(i as usize).copied().unwrap_or_default();
            d.masks = old.masks;
            a.set(i, d, 0).map_err(|e| map_err(MAP_SWITCH, e))?;
        }
        let mut h: BpfHashMap<&mut MapData, u32, u32> =
            BpfHashMap::try_from(self.map_mut_checked(MAP_SWITCH_IF)?)
                .map_err(|e| map_err(MAP_SWITCH_IF, e))?;
        let want: Vec<(u32, u32)> = defs
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.ports[..d.n as usize].iter().map(move |&p| (p, i as u32)))
            .collect();
        let stale: Vec<u32> = h
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !want.iter().any(|(p, _)| p == k))
            .collect();
        for k in stale {
            h.remove(&k).map_err(|e| map_err(MAP_SWITCH_IF, e))?;
        }
        for (p, i) in want {
            h.insert(p, i, 0).map_err(|e| map_err(MAP_SWITCH_IF, e))?;
        }
        Ok(())
    }
}
