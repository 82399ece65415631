//! The classifier's sets and one chain's tables as the kernel holds them: the bitset table
//! ([`Pool`]: each set once, counted, copied on write) and [`ChainKernel`].

use std::collections::BTreeMap;

use statewall_common::firewall::{
    single_id, Bitset, ChainConf, LinChain, MAX_RULES, SINGLE, SMALL_PER_CHAIN, WILD_SETS,
};

pub use crate::types::PKey;

/// Why chains cannot be compiled or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// A chain number past the table.
    #[error("chain {chain}: at most {max}")]
    Chain {
        /// The chain.
        chain: u32,
        /// Chains the table has.
        max: u32,
    },
    /// A chain longer than the classifier takes.
    #[error("{rules} rules: at most {max} per chain")]
    Rules {
        /// Rules in the chain.
        rules: usize,
        /// The most a chain may have.
        max: usize,
    },
    /// More distinct rule sets than the bitset table holds.
    #[error("more than {capacity} distinct rule sets (those in use and those still held by the previous tables): the bitset table holds {capacity} ([firewall] bitsets_max)")]
    NoRoom {
        /// Rule sets the table holds.
        capacity: u32,
    },
    /// No counter slot is free in the chain.
    #[error("chain {chain}: no free counter slot ({max} per chain)")]
    Counters {
        /// The chain.
        chain: u32,
        /// Slots per chain.
        max: usize,
    },
    /// Writing a table failed.
    #[error("map {map}: {msg}")]
    Map {
        /// The map.
        map: String,
        /// The error.
        msg: String,
    },
}

/// An entry that names no set (a field no rule of the chain constrains) or no counter (a
/// free position).
pub const NONE: u32 = u32::MAX;

/// One chain's tables as the kernel holds them (bitset ids are the table's own).
#[derive(Clone, Debug, PartialEq)]
pub struct ChainKernel {
    /// The configuration (`all` is a bitset id).
    pub conf: ChainConf,
    /// Source ports' sets (65,536, or none when no rule constrains the field).
    pub sport: Vec<u32>,
    /// Destination ports' sets.
    pub dport: Vec<u32>,
    /// Protocols', flags' and connection states' sets ([`NONE`] for unused fields).
    pub small: Vec<u32>,
    /// Source prefixes' sets.
    pub src: BTreeMap<PKey, u32>,
    /// Destination prefixes' sets.
    pub dst: BTreeMap<PKey, u32>,
    /// Action by position (0: no rule there).
    pub actions: Vec<u8>,
    /// Counter id by position ([`NONE`]: no rule there).
    pub ruleids: Vec<u32>,
    /// Rank by position (0: no rule there): rises with the rule's index in the chain.
    pub ranks: Vec<u32>,
    /// The wild sets, by field index (`ChainConf::wild`; empty where a field has none).
    /// They are the generation's own (at fixed ids), not shared.
    pub wild: Vec<Bitset>,
    /// The rules read one by one (`ChainConf::linear`): in an image, what the kernel holds
    /// (`None`: not known, or not written); in the tables, `None`.
    pub linear: Option<LinChain>,
}

impl ChainKernel {
    /// A chain that does not exist.
    pub fn empty() -> ChainKernel {
        ChainKernel {
            conf: ChainConf::default(),
            sport: Vec::new(),
            dport: Vec::new(),
            small: vec![NONE; SMALL_PER_CHAIN as usize],
            src: BTreeMap::new(),
            dst: BTreeMap::new(),
            actions: vec![0; MAX_RULES],
            ruleids: vec![NONE; MAX_RULES],
            ranks: vec![0; MAX_RULES],
            wild: vec![Bitset::default(); 7],
            linear: None,
        }
    }

    /// Position `p` holds a rule: its action, counter id and rank.
    pub fn occupy(&mut self, p: u32, action: u8, id: u32, rank: u32) {
        let p = p as usize;
        (self.actions[p], self.ruleids[p], self.ranks[p]) = (action, id, rank);
    }

    /// Position `p` holds no rule.
    pub fn vacate(&mut self, p: u32) {
        self.occupy(p, 0, NONE, 0);
    }

    /// Calls `f` with every set id it refers to (repeats included).
    pub fn each_set(&self, mut f: impl FnMut(u32)) {
        if self.conf.enabled != 0 {
            f(self.conf.all);
        }
        for v in [&self.sport, &self.dport, &self.small] {
            v.iter().filter(|id| **id != NONE).for_each(|id| f(*id));
        }
        for m in [&self.src, &self.dst] {
            m.values().for_each(|id| f(*id));
        }
    }
}

pub use crate::types::{FastMap, WordHasher};

/// Set hash -> id. Keyed by the hash alone (the set's words are in `Pool::sets`): growing
/// or cleaning the map moves 12 bytes an entry, not a copy of each set. Two sets of one
/// hash are both kept, the second without an entry (a duplicate costs an id, never a
/// wrong answer: contents are compared before an id is shared).
type WordMap = FastMap<u64, u32>;

/// The hash of a set's words: the non-zero ones (its summary names them) with their
/// indexes, so that a set of a few rules costs a few steps, not 160.
fn hash_words(b: &Bitset) -> u64 {
    use std::hash::Hasher;
    let mut h = WordHasher::default();
    for (si, s) in b.summary.iter().enumerate() {
        let mut m = *s;
        while m != 0 {
            let w = si * 64 + m.trailing_zeros() as usize;
            m &= m - 1;
            h.write_u64(w as u64);
            h.write_u64(b.words.get(w).copied().unwrap_or(0));
        }
    }
    h.finish()
}

/// The one position of `b`, when it holds exactly one.
fn only(b: &Bitset) -> Option<u32> {
    let mut sw = b.summary.iter().enumerate().filter(|(_, x)| **x != 0);
    let (si, s) = sw.next()?;
    if sw.next().is_some() || s.count_ones() != 1 {
        return None;
    }
    let w = si * 64 + s.trailing_zeros() as usize;
    let x = b.words[w];
    (x.count_ones() == 1).then(|| (w * 64) as u32 + x.trailing_zeros())
}

/// The bitset table: each set once, with the number of entries (of the chains as they are
/// and of what each generation holds) that refer to it. A set of one position takes no
/// room: its id says which ([`SINGLE`]), and counting its references is moot.
#[derive(Default)]
pub struct Pool {
    pub(super) sets: Vec<Bitset>,
    refs: Vec<u32>,
    /// Per id: interned (in `ids`), with its hash (a set let go is not hashed again).
    interned: Vec<Option<u64>>,
    ids: WordMap,
    free: Vec<u32>,
    capacity: u32,
    /// Sets made since the last write: the kernel's copy is written before any entry
    /// refers to them.
    pub(super) fresh: Vec<u32>,
}

/// Asks for transparent huge pages under the room of `v` (where the system leaves it to
/// the program, `madvise`): a batch of 10,000 rules makes some 20,000 sets, 26 MB of
/// fresh memory, which in 4 KiB pages costs as many faults as pages.
fn huge_pages<T>(v: &Vec<T>) {
    const PAGE: usize = 4096;
    let start = v.as_ptr() as usize;
    let end = start + v.capacity() * std::mem::size_of::<T>();
    let (from, to) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
    if to > from {
        // SAFETY: advice on pages inside the vector's own allocation; it changes no
        // contents. A refusal (no THP) leaves the small pages.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

impl Pool {
    /// A table of `capacity` sets (the first [`WILD_SETS`] are the wild sets, never
    /// handed out).
    pub fn new(capacity: u32) -> Pool {
        let w = WILD_SETS as usize;
        let capacity = capacity.min(SINGLE);
        // Room for every set at once: growing would copy them all (and touch every page
        // again); memory is taken only as sets are made.
        let mut sets: Vec<Bitset> = Vec::with_capacity(capacity as usize);
        huge_pages(&sets);
        sets.resize(w, Bitset::default());
        Pool {
            capacity,
            sets,
            refs: vec![0; w],
            interned: vec![None; w],
            ..Pool::default()
        }
    }

    /// No earlier process's table refers to a wild set's id (they can be written).
    pub fn wild_free(&self) -> bool {
        self.refs[..WILD_SETS as usize].iter().all(|r| *r == 0)
    }

    /// The id of set `b`: an equal set's, or a new one.
    pub fn intern(&mut self, b: &Bitset) -> Result<u32, RulesError> {
        if let Some(r) = only(b) {
            return Ok(single_id(r));
        }
        let h = hash_words(b);
        let known = self.ids.get(&h).copied();
        if let Some(i) = known.filter(|i| self.sets[*i as usize].words == b.words) {
            return Ok(i);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None if (self.sets.len() as u32) < self.capacity => {
                self.sets.push(Bitset::default());
                self.refs.push(0);
                self.interned.push(None);
                self.sets.len() as u32 - 1
            }
            None => {
                return Err(RulesError::NoRoom {
                    capacity: self.capacity,
                })
            }
        };
        self.sets[i as usize] = *b;
        self.refs[i as usize] = 0;
        self.interned[i as usize] = Some(h);
        if known.is_none() {
            // Room to spare: a map near full cleans itself of deleted entries often.
            if self.ids.len() * 2 >= self.ids.capacity() {
                self.ids.reserve(self.ids.len().max(64));
            }
            self.ids.insert(h, i);
        }
        self.fresh.push(i);
        Ok(i)
    }

    /// Set `id`.
    pub fn set(&self, id: u32) -> Bitset {
        match id.checked_sub(SINGLE) {
            Some(r) => {
                let mut b = Bitset::default();
                b.set(r as usize);
                b
            }
            None => self.sets[id as usize],
        }
    }

    /// True when `id` holds a set (interned, not free).
    pub fn live(&self, id: u32) -> bool {
        self.interned.get(id as usize).is_some_and(|h| h.is_some())
    }

    /// Takes `id` out of the interned sets (it is free).
    fn release(&mut self, id: u32) {
        if let Some(h) = self.interned.get_mut(id as usize).and_then(|h| h.take()) {
            if self.ids.get(&h) == Some(&id) {
                self.ids.remove(&h);
            }
        }
        if id >= WILD_SETS {
            self.free.push(id);
        }
    }

    /// One more entry refers to `id`.
    pub fn inc(&mut self, id: u32) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r += 1;
        }
    }

    /// One entry less refers to `id`; at none, it is free.
    pub fn dec(&mut self, id: u32) {
        let Some(r) = self.refs.get_mut(id as usize) else {
            return;
        };
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.release(id);
        }
    }

    /// Sets made since the last write that nothing refers to (an edit replaced them, or
    /// failed half way) are free again.
    pub fn sweep(&mut self) {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_unstable();
        fresh.dedup();
        for &id in &fresh {
            if self.refs[id as usize] == 0 && self.live(id) {
                self.release(id);
            }
        }
        fresh.retain(|id| self.live(*id));
        self.fresh = fresh;
    }

    /// Ids an earlier process's tables refer to (contents unknown here): held until the
    /// generation that refers to them is rewritten. Only on an empty table.
    pub fn hold(&mut self, held: &[u32]) {
        let held: Vec<u32> = held.iter().copied().filter(|id| *id < SINGLE).collect();
        let top = held.iter().copied().max().map_or(0, |m| m + 1);
        let top = top.min(self.capacity).max(WILD_SETS);
        self.sets.resize(top as usize, Bitset::default());
        self.refs.resize(top as usize, 0);
        self.interned.resize(top as usize, None);
        for &id in held.iter().filter(|id| **id < top) {
            self.refs[id as usize] += 1;
        }
        self.free = (WILD_SETS..top)
            .rev()
            .filter(|id| self.refs[*id as usize] == 0)
            .collect();
    }

    /// Sets in use (wild sets apart).
    pub fn in_use(&self) -> usize {
        self.sets.len() - self.free.len() - WILD_SETS as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(rules: &[usize]) -> Bitset {
        let mut b = Bitset::default();
        rules.iter().for_each(|r| b.set(*r));
        b
    }

    #[test]
    fn one_rule_sets_take_no_room_and_equal_sets_share_an_id() {
        let mut p = Pool::new(WILD_SETS + 2);
        for r in [0, 63, 64, 4095, 4096, MAX_RULES - 1] {
            let id = p.intern(&of(&[r])).unwrap();
            assert_eq!(id, single_id(r as u32));
            assert_eq!(p.set(id), of(&[r]));
        }
        assert_eq!(p.in_use(), 0);
        let a = p.intern(&of(&[1, 2])).unwrap();
        assert!((WILD_SETS..SINGLE).contains(&a));
        assert_eq!(p.intern(&of(&[1, 2])).unwrap(), a);
        let b = p.intern(&of(&[1, 3])).unwrap();
        assert_ne!(a, b);
        // Full: a third set is refused, a known one is still found.
        assert!(matches!(
            p.intern(&of(&[2, 3])),
            Err(RulesError::NoRoom { .. })
        ));
        assert_eq!(p.intern(&of(&[1, 3])).unwrap(), b);
        // Freed, the id holds the next set, found by its contents.
        p.inc(a);
        p.dec(a);
        assert!(!p.live(a));
        let c = p.intern(&of(&[2, 3])).unwrap();
        assert_eq!(c, a);
        assert_eq!(p.intern(&of(&[2, 3])).unwrap(), c);
        assert_eq!(p.set(c), of(&[2, 3]));
        // Counting a one-rule set's references is moot.
        p.inc(single_id(7));
        p.dec(single_id(7));
        assert_eq!(p.in_use(), 2);
    }
}
