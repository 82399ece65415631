//! The classifier's tables kept in user space, changed rule by rule.
//!
//! A rule's bit (its *position*) is not its index in the chain: positions keep the order
//! of any two rules that can match one packet, with gaps between them, so an insert takes
//! a free position near its neighbours (`place`; only when there is none do the
//! nearest few rules move by one) and changes only the sets that hold the rules it
//! touches; a delete or an update changes only the sets that hold its rule.
//! A rule's counters have a slot of their own (its *counter id*, found from its position
//! through `SW_FW_RULEID`), so they stay with the rule whatever moves. Sets are shared by
//! both generations and copied on write: a set some generation refers to is never
//! rewritten, and one nothing refers to any more is free again. [`super::write`] brings
//! the inactive generation to what the chains are now and switches to it.

use std::collections::{BTreeMap, HashMap};

use statewall_common::firewall::{
    packet::FwTables, ChainConf, LpmKey, ACT_ACCEPT, MAX_CHAINS, MAX_RULES, SMALL_PER_CHAIN,
    WILD_SETS,
};

use super::change::{remap_chain, Change, Dirty};
use super::place::{insert_rank, spread_ranks, Place, Slots};
use super::rule::{fields, pkey, shorten, Chain, PKey, Rule, DEFAULT_ROUTES};
use super::rules::build;
use super::sets::RulesError;
use super::sets::{ChainKernel, Pool, NONE};

/// Operations of one batch applied one by one; a longer batch lays the chain out again.
pub const EDITS_MAX: usize = 32;

/// One operation on a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// A new rule at this index.
    Insert(usize, Rule),
    /// The rule at this index goes.
    Delete(usize),
    /// The rule at this index becomes this one (its counters stay).
    Update(usize, Rule),
}

/// A chain as it is now.
#[derive(Clone)]
pub(super) struct ChainModel {
    /// The rules by index, each boxed: an insert or a delete in the middle of 10,000 moves
    /// pointers, not the rules (measured: a one-rule change at 10,000 rules took 20 to
    /// 40 us less).
    #[allow(clippy::vec_box)]
    pub(super) rules: Vec<Box<Rule>>,
    pub(super) pos: Vec<u32>,
    pub(super) ids: Vec<u32>,
    /// Rank by index: rises with the index, gaps between ([`statewall_common::firewall::MAP_FW_RANK`]).
    pub(super) rank: Vec<u32>,
    /// Rules naming each prefix, by (destination, prefix).
    pub(super) named: HashMap<(bool, PKey), u32>,
    pub(super) k: ChainKernel,
    /// Rules an update replaced whose bits are still in the field sets (their position is
    /// out of the all-rules set, so they match nothing): cleared by [`Tables::scrub`],
    /// which every edit runs first.
    #[allow(clippy::vec_box)]
    pub(super) stale: Vec<(u32, Box<Rule>)>,
}

/// The rules themselves, to lay a chain out again.
fn unboxed(rules: &[Box<Rule>]) -> Vec<Rule> {
    rules.iter().map(|r| (**r).clone()).collect()
}

impl ChainModel {
    pub(super) fn slots(&self) -> Slots<'_> {
        Slots {
            pos: &self.pos,
            rules: &self.rules,
            actions: &self.k.actions,
        }
    }
}

/// How to undo one applied edit: the index, the rule and counter id it replaced or
/// removed (none: it inserted), and whether it was an update.
type Undo = (usize, Option<(Rule, u32)>, bool);

/// Positions of `n` rules laid out evenly, the spare positions shared out as `n + 1` equal
/// gaps: between the rules, before the first and after the last (while there are two spare
/// positions or more), so that an insert at the front or an append takes a free position
/// without moving any rule, however full the chain.
pub fn spread(n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i + 1) * MAX_RULES / (n + 1)) as u32)
        .map(|p| p.min(MAX_RULES as u32 - 1))
        .collect()
}

/// The chains' tables, what each generation holds, and the sets they share.
pub struct Tables {
    pub(super) pool: Pool,
    pub(super) chains: BTreeMap<u32, ChainModel>,
    /// Per generation, per chain: what the kernel holds (`None`: not known).
    pub(super) images: [Vec<Option<ChainKernel>>; 2],
    /// Per generation: no stale prefix entry of an earlier process is left in the tries.
    pub(super) known: [bool; 2],
    /// Per generation: chains changed since it was last written.
    pub(super) dirty: [BTreeMap<u32, Dirty>; 2],
    /// Per generation: its half of the IPv4 direct table.
    pub(super) v4: [super::direct::V4Half; 2],
    /// The generation [`Tables::write`] last switched to.
    pub(super) switched: u32,
    /// Per chain, per counter id: references (the chain as it is, each generation).
    cref: Vec<Vec<u8>>,
    /// Per chain, per counter id: a rule of the chain as it is holds it.
    dref: Vec<Vec<bool>>,
    /// Counters to zero before the next write (ids given to new rules).
    pub(super) zero: Vec<(u32, u32)>,
    /// Counter ids, in rule order, of the chains the kernel held when the tables were
    /// opened.
    pub(super) adopted: BTreeMap<u32, Vec<u32>>,
    /// The arrays mapped into memory for writing.
    pub(super) mapped: crate::engine::sys::Mappings,
}

impl Tables {
    /// Empty tables over a bitset table of `capacity` sets.
    pub fn new(capacity: u32) -> Tables {
        Tables {
            pool: Pool::new(capacity),
            chains: BTreeMap::new(),
            images: [
                vec![None; MAX_CHAINS as usize],
                vec![None; MAX_CHAINS as usize],
            ],
            known: [false; 2],
            dirty: Default::default(),
            v4: Default::default(),
            switched: 0,
            cref: vec![vec![0; MAX_RULES]; MAX_CHAINS as usize],
            dref: vec![vec![false; MAX_RULES]; MAX_CHAINS as usize],
            zero: Vec::new(),
            adopted: BTreeMap::new(),
            mapped: Default::default(),
        }
    }

    /// Generation `g`'s half of the IPv4 direct table: blocks in use, fields read through
    /// it and fields that found no room (read through their tries).
    pub fn v4_use(&self, g: u32) -> (usize, usize, usize) {
        let h = &self.v4[g as usize & 1];
        let (direct, fallen) = h.fields();
        (h.blocks_in_use(), direct, fallen)
    }

    /// [`Tables::v4_use`] of the generation last switched to.
    pub fn v4_in_force(&self) -> (usize, usize, usize) {
        self.v4_use(self.switched)
    }

    /// Sets in use (by the chains or by what either generation still holds).
    pub fn sets_in_use(&self) -> usize {
        self.pool.in_use()
    }

    /// Counter ids of a chain's rules, in rule order.
    pub fn counter_ids(&self, chain: u32) -> &[u32] {
        self.chains.get(&chain).map_or(&[], |c| &c.ids)
    }

    /// Positions of a chain's rules, in rule order.
    pub fn positions(&self, chain: u32) -> &[u32] {
        self.chains.get(&chain).map_or(&[], |c| &c.pos)
    }

    /// Zeroes the counters of `chain`'s rules at the next write (or
    /// [`Tables::zero_counters`]).
    pub fn reset_counters(&mut self, chain: u32) {
        let ids = self
            .chains
            .get(&chain)
            .map(|m| m.ids.clone())
            .unwrap_or_default();
        self.zero.extend(ids.into_iter().map(|id| (chain, id)));
    }

    /// The index of the rule holding counter id `id` in `chain`.
    pub fn index_of(&self, chain: u32, id: u32) -> Option<usize> {
        self.chains.get(&chain)?.ids.iter().position(|i| *i == id)
    }

    pub(super) fn counter_ref(&mut self, chain: u32, id: u32, up: bool) {
        if id == NONE {
            return;
        }
        let c = &mut self.cref[chain as usize][id as usize];
        *c = if up {
            c.saturating_add(1)
        } else {
            c.saturating_sub(1)
        };
    }

    /// A counter id for a new rule of `chain`: one nothing refers to (its counters are
    /// zeroed before the next write); failing that, one only a generation's old tables
    /// still refer to (packets those tables classify in their last moments may count to
    /// the new rule).
    fn new_counter(&mut self, chain: u32) -> Result<u32, RulesError> {
        let c = chain as usize;
        let id = (0..MAX_RULES)
            .find(|&i| self.cref[c][i] == 0)
            .or_else(|| (0..MAX_RULES).find(|&i| !self.dref[c][i]))
            .ok_or(RulesError::Counters {
                chain,
                max: MAX_RULES,
            })? as u32;
        self.dref[c][id as usize] = true;
        self.counter_ref(chain, id, true);
        self.zero.push((chain, id));
        Ok(id)
    }

    fn drop_counter(&mut self, chain: u32, id: u32) {
        if id as usize >= MAX_RULES {
            return;
        }
        self.dref[chain as usize][id as usize] = false;
        self.counter_ref(chain, id, false);
    }

    fn mark(&mut self, chain: u32) {
        let full = Dirty {
            full: true,
            ..Dirty::default()
        };
        self.mark_keys(chain, &full);
    }

    /// Notes entries of `chain` changed, for both generations.
    pub(super) fn mark_keys(&mut self, chain: u32, d: &Dirty) {
        for g in &mut self.dirty {
            g.entry(chain).or_default().add(d);
        }
    }

    /// Makes the tables hold `chains` (by chain number). A chain whose rules are the same
    /// keeps its tables (only its configuration follows); the others are laid out again.
    /// `origin`: per chain, for each new rule the index of the old rule it is (its
    /// counters go with it) or `None`; a chain without one keeps the counters of the
    /// rules equal to the old rule at their index (a chain new to these tables: the
    /// counters the kernel held for it, when their number matches).
    pub fn set_chains(
        &mut self,
        chains: &BTreeMap<u32, Chain>,
        origin: &[(u32, Vec<Option<usize>>)],
    ) -> Result<(), RulesError> {
        if let Some(&chain) = chains.keys().find(|c| **c >= MAX_CHAINS) {
            return Err(RulesError::Chain {
                chain,
                max: MAX_CHAINS,
            });
        }
        let gone: Vec<u32> = self
            .chains
            .keys()
            .filter(|c| !chains.contains_key(c))
            .copied()
            .collect();
        for ch in gone {
            if let Some(m) = self.chains.remove(&ch) {
                m.k.each_set(|id| self.pool.dec(id));
                m.ids.iter().for_each(|id| self.drop_counter(ch, *id));
            }
            self.mark(ch);
        }
        for (&ch, chain) in chains {
            let from = origin.iter().find(|o| o.0 == ch).map(|o| &o.1);
            let same = self
                .chains
                .get(&ch)
                .is_some_and(|m| m.rules.iter().map(|r| &**r).eq(&chain.rules));
            if same && from.is_none_or(|f| f.iter().enumerate().all(|(i, o)| *o == Some(i))) {
                let m = self.chains.get_mut(&ch).expect("checked");
                m.k.conf.default_action = chain.default_action;
                m.k.conf.accept_established = chain.accept_established as u8;
                self.mark(ch);
                continue;
            }
            let keep: Vec<Option<u32>> = match (self.chains.get(&ch), from) {
                (Some(m), Some(f)) => f.iter().map(|o| o.map(|o| m.ids[o])).collect(),
                (Some(m), None) => (0..chain.rules.len())
                    .map(|i| {
                        (m.rules.get(i).map(|r| &**r) == Some(&chain.rules[i])).then(|| m.ids[i])
                    })
                    .collect(),
                (None, _) => match self.adopted.remove(&ch) {
                    Some(a) if a.len() == chain.rules.len() => a.into_iter().map(Some).collect(),
                    _ => (0..chain.rules.len() as u32).map(Some).collect(),
                },
            };
            if let Err(e) = self.relayout(ch, chain.clone(), keep) {
                self.pool.sweep();
                return Err(e);
            }
        }
        self.retrack();
        self.pool.sweep();
        Ok(())
    }

    /// Lays chain `ch` out again from scratch: positions spread evenly, counter ids kept
    /// where `keep` says (new ones elsewhere). On an error nothing changed.
    pub(super) fn relayout(
        &mut self,
        ch: u32,
        chain: Chain,
        keep: Vec<Option<u32>>,
    ) -> Result<(), RulesError> {
        if chain.rules.len() > MAX_RULES {
            return Err(RulesError::Rules {
                rules: chain.rules.len(),
                max: MAX_RULES,
            });
        }
        let c = ch as usize;
        let pos = spread(chain.rules.len());
        let mut taken = vec![false; MAX_RULES];
        let mut ids: Vec<Option<u32>> = Vec::with_capacity(keep.len());
        for k in keep {
            ids.push(k.filter(|id| {
                (*id as usize) < MAX_RULES && !std::mem::replace(&mut taken[*id as usize], true)
            }));
        }
        // New counters: ones nothing refers to first, then any the chain will not hold.
        let mut spare = (0..MAX_RULES as u32)
            .filter(|i| self.cref[c][*i as usize] == 0 && !taken[*i as usize])
            .chain(
                (0..MAX_RULES as u32)
                    .filter(|i| self.cref[c][*i as usize] != 0 && !taken[*i as usize]),
            )
            .collect::<Vec<u32>>()
            .into_iter();
        let mut new = Vec::new();
        for id in ids.iter_mut().filter(|i| i.is_none()) {
            let s = spare.next().ok_or(RulesError::Counters {
                chain: ch,
                max: MAX_RULES,
            })?;
            taken[s as usize] = true;
            new.push(s);
            *id = Some(s);
        }
        let ids: Vec<u32> = ids.into_iter().map(|i| i.unwrap_or(NONE)).collect();
        let wild = self.pool.wild_free();
        let rank = spread_ranks(pos.len());
        let k = build(&mut self.pool, &chain, &pos, &ids, &rank, wild)?;
        k.each_set(|id| self.pool.inc(id));
        let old_ids = self
            .chains
            .get(&ch)
            .map(|m| m.ids.clone())
            .unwrap_or_default();
        for id in old_ids.into_iter().filter(|id| !taken[*id as usize]) {
            self.drop_counter(ch, id);
        }
        for &id in &ids {
            if !self.dref[c][id as usize] {
                self.dref[c][id as usize] = true;
                self.counter_ref(ch, id, true);
            }
        }
        self.zero.extend(new.into_iter().map(|id| (ch, id)));
        let mut named = HashMap::new();
        for r in &chain.rules {
            for (dst, n) in [(false, r.src), (true, r.dst)] {
                if let Some(n) = n {
                    *named.entry((dst, pkey(n))).or_insert(0) += 1;
                }
            }
        }
        let model = ChainModel {
            rules: chain.rules.into_iter().map(Box::new).collect(),
            pos,
            ids,
            rank,
            named,
            k,
            stale: Vec::new(),
        };
        if let Some(old) = self.chains.insert(ch, model) {
            old.k.each_set(|id| self.pool.dec(id));
        }
        self.mark(ch);
        Ok(())
    }

    /// Both chains of an instance (2k, 2k+1) track connections when either needs their
    /// state.
    fn retrack(&mut self) {
        let needs = |m: &ChainModel| {
            m.k.conf.used & statewall_common::firewall::field::CT != 0
                || m.k.conf.accept_established != 0
        };
        let mut changed = Vec::new();
        for inst in 0..MAX_CHAINS / 2 {
            let t = [2 * inst, 2 * inst + 1]
                .iter()
                .any(|c| self.chains.get(c).is_some_and(needs)) as u8;
            for c in [2 * inst, 2 * inst + 1] {
                if let Some(m) = self.chains.get_mut(&c) {
                    if m.k.conf.track != t {
                        m.k.conf.track = t;
                        changed.push(c);
                    }
                }
            }
        }
        changed.into_iter().for_each(|c| self.mark(c));
    }

    /// Applies `edits` to chain `ch` in order, rewriting only what they change (a long
    /// batch, or an edit that needs room or a field the chain has not used, lays the chain
    /// out again). On an error the chain is as it was.
    pub fn edit(&mut self, ch: u32, edits: &[Edit]) -> Result<(), RulesError> {
        let Some(m) = self.chains.get(&ch) else {
            return Err(RulesError::Chain {
                chain: ch,
                max: MAX_CHAINS,
            });
        };
        let conf = m.k.conf;
        // What an update left to clear, before anything else is placed.
        self.scrub(ch)?;
        if let [e] = edits {
            match self.edit_alone(ch, e) {
                Ok(true) => {
                    self.retrack();
                    self.pool.sweep();
                    return Ok(());
                }
                Ok(false) => {}
                // (Nothing changed: the usual way below, with its error handling.)
                Err(_) => self.pool.sweep(),
            }
        }
        // What each edit applied undoes it (the error path lays the chain out from there).
        let mut undo: Vec<Undo> = Vec::new();
        let r = if edits.len() > EDITS_MAX {
            self.edit_by_relayout(ch, edits)
        } else {
            edits.iter().try_for_each(|e| {
                let m = &self.chains[&ch];
                let u = match e {
                    Edit::Insert(i, _) => (*i, None, false),
                    Edit::Delete(i) => (*i, Some(((*m.rules[*i]).clone(), m.ids[*i])), false),
                    Edit::Update(i, _) => (*i, Some(((*m.rules[*i]).clone(), m.ids[*i])), true),
                };
                self.edit_one(ch, e)?;
                undo.push(u);
                Ok(())
            })
        };
        if let Err(e) = r {
            self.pool.sweep();
            if undo.is_empty() {
                // The edit that failed changed nothing (a layout from scratch either, on
                // an error), and none came before it.
                return Err(e);
            }
            // Back to the rules as they were (a layout from scratch).
            let m = &self.chains[&ch];
            let (mut rules, mut ids) = (unboxed(&m.rules), m.ids.clone());
            for (i, old, update) in undo.into_iter().rev() {
                match (old, update) {
                    (None, _) => {
                        rules.remove(i);
                        ids.remove(i);
                    }
                    (Some((r, _)), true) => rules[i] = r,
                    (Some((r, id)), false) => {
                        rules.insert(i, r);
                        ids.insert(i, id);
                    }
                }
            }
            let chain = Chain {
                rules,
                default_action: conf.default_action,
                accept_established: conf.accept_established != 0,
            };
            self.relayout(ch, chain, ids.into_iter().map(Some).collect())?;
            self.pool.sweep();
            return Err(e);
        }
        self.retrack();
        self.pool.sweep();
        Ok(())
    }

    /// `edits` applied to the rule list, then the chain laid out again (counters follow
    /// their rules).
    pub(super) fn edit_by_relayout(&mut self, ch: u32, edits: &[Edit]) -> Result<(), RulesError> {
        let m = &self.chains[&ch];
        let mut rules = unboxed(&m.rules);
        let mut ids: Vec<Option<u32>> = m.ids.iter().copied().map(Some).collect();
        for e in edits {
            match e {
                Edit::Insert(i, r) => {
                    rules.insert(*i, r.clone());
                    ids.insert(*i, None);
                }
                Edit::Delete(i) => {
                    rules.remove(*i);
                    ids.remove(*i);
                }
                Edit::Update(i, r) => rules[*i] = r.clone(),
            }
        }
        let chain = Chain {
            rules,
            default_action: m.k.conf.default_action,
            accept_established: m.k.conf.accept_established != 0,
        };
        self.relayout(ch, chain, ids)
    }

    /// The chain's rules with `e` applied to a copy, laid out again.
    fn edit_one_by_relayout(&mut self, ch: u32, e: &Edit) -> Result<(), RulesError> {
        self.edit_by_relayout(ch, std::slice::from_ref(e))
    }

    fn edit_one(&mut self, ch: u32, e: &Edit) -> Result<(), RulesError> {
        let m = &self.chains[&ch];
        let n = m.rules.len();
        let (used, wild) = (m.k.conf.used, m.k.conf.wild);
        match e {
            Edit::Insert(i, r) => {
                if n >= MAX_RULES {
                    return Err(RulesError::Rules {
                        rules: n + 1,
                        max: MAX_RULES,
                    });
                }
                if self.needs_relayout(used, wild, r) {
                    return self.edit_one_by_relayout(ch, e);
                }
                let (p, shift) = match m.slots().place(r, *i, None, true) {
                    Some(Place::Free(p)) => (p, None),
                    Some(Place::Shift(p, run)) => (p, Some(run)),
                    None => return self.edit_one_by_relayout(ch, e),
                };
                let run: Vec<usize> = shift.map_or(Vec::new(), |(lo, hi, _)| {
                    (0..n).filter(|j| (lo..=hi).contains(&m.pos[*j])).collect()
                });
                let moved: Vec<Rule> = run.iter().map(|j| (*m.rules[*j]).clone()).collect();
                let id = self.new_counter(ch)?;
                let mut c = Change::new(shift, None, Some(p));
                if let Err(e) = self.remap(ch, &mut c, Some(r), &moved) {
                    self.drop_counter(ch, id);
                    self.zero.pop();
                    return Err(e);
                }
                let m = self.chains.get_mut(&ch).expect("checked");
                if let Some((_, _, by)) = shift {
                    for &j in &run {
                        m.k.vacate(m.pos[j]);
                        c.d.positions.push(m.pos[j]);
                    }
                    for &j in &run {
                        m.pos[j] = (m.pos[j] as i64 + by as i64) as u32;
                        m.k.occupy(m.pos[j], m.rules[j].action, m.ids[j], m.rank[j]);
                        c.d.positions.push(m.pos[j]);
                    }
                }
                c.d.positions.push(p);
                m.pos.insert(*i, p);
                m.ids.insert(*i, id);
                m.rules.insert(*i, Box::new(r.clone()));
                // (Ranks spread out again around it are written with their positions.)
                for j in insert_rank(&mut m.rank, *i).filter(|j| j != i) {
                    m.k.ranks[m.pos[j] as usize] = m.rank[j];
                    c.d.positions.push(m.pos[j]);
                }
                m.k.occupy(p, r.action, id, m.rank[*i]);
                m.k.conf.rules += 1;
                self.name(ch, r, 1, &mut c.d);
                self.mark_keys(ch, &c.d);
            }
            Edit::Delete(i) => {
                let q = m.pos[*i];
                let old = [(*m.rules[*i]).clone()];
                let mut c = Change::new(None, Some(q), None);
                self.remap(ch, &mut c, None, &old)?;
                let m = self.chains.get_mut(&ch).expect("checked");
                let r = m.rules.remove(*i);
                let id = m.ids.remove(*i);
                m.pos.remove(*i);
                m.rank.remove(*i);
                m.k.vacate(q);
                m.k.conf.rules -= 1;
                self.drop_counter(ch, id);
                self.name(ch, &r, -1, &mut c.d);
                c.d.positions.push(q);
                self.mark_keys(ch, &c.d);
            }
            Edit::Update(i, r) => {
                if self.needs_relayout(used, wild, r) {
                    return self.edit_one_by_relayout(ch, e);
                }
                // The rule stays where it is unless that puts it out of order with a rule
                // it can now share a packet with.
                let q = m.pos[*i];
                let p = if m.slots().fits(r, *i, q, Some(*i)) {
                    q
                } else {
                    match m.slots().place(r, *i, Some(*i), false) {
                        Some(Place::Free(p)) => p,
                        _ => return self.edit_one_by_relayout(ch, e),
                    }
                };
                let before = [(*m.rules[*i]).clone()];
                let mut c = Change::new(None, Some(q), Some(p));
                self.remap(ch, &mut c, Some(r), &before)?;
                let old = self.put_updated(ch, *i, r, p, &mut c);
                self.name(ch, &old, -1, &mut c.d);
                self.mark_keys(ch, &c.d);
            }
        }
        Ok(())
    }

    /// Rule `i` of chain `ch` replaced by `r` at position `p` (its own, or a free one it
    /// moves to), after the remap `c`: the model's positions, counter id and rank, the
    /// new rule's prefixes named, the positions noted in `c`. Returns the old rule, whose
    /// prefixes the caller still names.
    pub(super) fn put_updated(
        &mut self,
        ch: u32,
        i: usize,
        r: &Rule,
        p: u32,
        c: &mut Change,
    ) -> Box<Rule> {
        let m = self.chains.get_mut(&ch).expect("checked");
        let q = m.pos[i];
        let old = std::mem::replace(&mut m.rules[i], Box::new(r.clone()));
        if p != q {
            m.k.vacate(q);
            m.pos[i] = p;
            c.d.positions.push(p);
        }
        m.k.occupy(p, r.action, m.ids[i], m.rank[i]);
        c.d.positions.push(q);
        self.name(ch, r, 1, &mut c.d);
        old
    }

    /// A rule that constrains a field the chain does not look up, or leaves unconstrained
    /// a field without a wild set (which would change every set of the field), is better
    /// added by a layout from scratch (which gives the field its wild set).
    pub(super) fn needs_relayout(&self, used: u8, wild: u8, r: &Rule) -> bool {
        fields(r) & !used != 0 || (self.pool.wild_free() && used & !fields(r) & !wild != 0)
    }

    /// Counts the prefixes `r` names up or down; a prefix no rule names any more leaves
    /// its trie (its set is its parent's, which the trie gives without it).
    pub(super) fn name(&mut self, ch: u32, r: &Rule, by: i32, d: &mut Dirty) {
        let m = self.chains.get_mut(&ch).expect("chain");
        for (dst, n) in [(false, r.src), (true, r.dst)] {
            let Some(n) = n else { continue };
            let k = (dst, pkey(n));
            let c = m.named.entry(k).or_insert(0);
            *c = (*c as i32 + by).max(0) as u32;
            if *c == 0 {
                m.named.remove(&k);
                if !DEFAULT_ROUTES.contains(&k.1) {
                    let t = if dst { &mut m.k.dst } else { &mut m.k.src };
                    if let Some(id) = t.remove(&k.1) {
                        self.pool.dec(id);
                        if dst { &mut d.dst } else { &mut d.src }.push(k.1);
                    }
                }
            }
        }
    }

    /// Moves every entry of chain `ch` to its set after change `c`; `r`: the rule that
    /// joins (accepting the values it matches). New prefixes of `r` get their entries.
    pub(super) fn remap(
        &mut self,
        ch: u32,
        c: &mut Change,
        r: Option<&Rule>,
        involved: &[Rule],
    ) -> Result<(), RulesError> {
        let mut m = self.chains.remove(&ch).expect("chain");
        let res = remap_chain(&mut self.pool, &mut m.k, c, r, involved);
        self.chains.insert(ch, m);
        res?;
        c.incs.iter().for_each(|id| self.pool.inc(*id));
        c.decs.iter().for_each(|id| self.pool.dec(*id));
        Ok(())
    }
}

/// The reference's view of the tables (the chains as they are, as generation 0).
impl FwTables for Tables {
    fn generation(&self) -> u32 {
        0
    }
    fn chain(&self, _generation: u32, chain: u32) -> ChainConf {
        self.chains
            .get(&chain)
            .map(|m| m.k.conf)
            .unwrap_or_default()
    }
    fn prefix(&self, dst: bool, k: &LpmKey) -> Option<u32> {
        let m = self.chains.get(&(k.chain as u32))?;
        let t = if dst { &m.k.dst } else { &m.k.src };
        let full = (k.family, k.addr, (k.prefixlen - 32) as u8);
        (0..=full.2)
            .rev()
            .find_map(|len| t.get(&shorten(&full, len)).copied())
    }
    fn port(&self, dst: bool, slot: u32) -> u32 {
        let chain = (slot / 65536) % MAX_CHAINS;
        self.chains
            .get(&chain)
            .and_then(|m| if dst { &m.k.dport } else { &m.k.sport }.get((slot % 65536) as usize))
            .map_or(0, |id| if *id == NONE { 0 } else { *id })
    }
    fn small(&self, slot: u32) -> u32 {
        let chain = (slot / SMALL_PER_CHAIN) % MAX_CHAINS;
        self.chains
            .get(&chain)
            .and_then(|m| m.k.small.get((slot % SMALL_PER_CHAIN) as usize))
            .map_or(0, |id| if *id == NONE { 0 } else { *id })
    }
    fn word(&self, id: u32, summary: bool, w: usize) -> u64 {
        let set = if id < WILD_SETS {
            let chain = (id / 8) % MAX_CHAINS;
            self.chains
                .get(&chain)
                .and_then(|m| m.k.wild.get((id % 8) as usize))
        } else {
            self.pool.sets.get(id as usize)
        };
        match set {
            Some(b) if summary => b.summary.get(w).copied().unwrap_or(0),
            Some(b) => b.words.get(w).copied().unwrap_or(0),
            None => 0,
        }
    }
    fn action(&self, slot: u32) -> u8 {
        let chain = (slot / MAX_RULES as u32) % MAX_CHAINS;
        self.chains
            .get(&chain)
            .and_then(|m| m.k.actions.get((slot % MAX_RULES as u32) as usize).copied())
            .unwrap_or(ACT_ACCEPT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions rise, stay in range, and leave the front and the end free while two
    /// positions or more are spare.
    #[test]
    fn spread_leaves_room_at_both_ends() {
        for n in [
            1,
            2,
            3,
            10,
            100,
            1000,
            5000,
            10_000,
            MAX_RULES - 2,
            MAX_RULES - 1,
            MAX_RULES,
        ] {
            let p = spread(n);
            assert_eq!(p.len(), n);
            assert!(p.windows(2).all(|w| w[0] < w[1]), "{n}: not rising");
            assert!(p[n - 1] < MAX_RULES as u32, "{n}: out of range");
            if n <= MAX_RULES - 2 {
                assert!(
                    p[0] > 0 && p[n - 1] < MAX_RULES as u32 - 1,
                    "{n}: {:?}",
                    (p[0], p[n - 1])
                );
            }
        }
    }
}
