//! The classifier's tables into the kernel: the inactive generation brought from what it
//! holds to what the chains are now (only the entries that differ, arrays in batches),
//! then one array update switches to it. When the tables are opened, what the active
//! generation holds is read back ([`Tables::adopt`]): its sets stay untouched while
//! packets may read them, and its rules' counters stay theirs.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData};
use statewall_common::firewall::{
    field, port_slot, rule_slot, small_slot, stats_slot, wild_id, Bitset, ChainConf, RuleStats,
    V4Block, MAP_FW_ACTIONS, MAP_FW_BITSETS, MAP_FW_CHAINS, MAP_FW_CTL, MAP_FW_DPORT, MAP_FW_DST,
    MAP_FW_LINEAR, MAP_FW_RANK, MAP_FW_RULEID, MAP_FW_SMALL, MAP_FW_SPORT, MAP_FW_SRC,
    MAP_FW_STATS, MAP_FW_V4, MAX_CHAINS, MAX_RULES, SMALL_PER_CHAIN,
};

use super::change::Dirty;
use super::direct::V4Half;
use super::rules::{lpm_data, small_field, PKey, RulesError};
use super::sets::{ChainKernel, Pool, NONE};
use super::tables::Tables;
use crate::engine::{sys, MapAccess};
use std::collections::BTreeMap;

fn merr(name: &str, e: impl std::fmt::Display) -> RulesError {
    RulesError::Map {
        map: name.to_string(),
        msg: e.to_string(),
    }
}

fn fd(maps: &mut dyn MapAccess, name: &str) -> Result<RawFd, RulesError> {
    match maps.map_mut(name).map_err(|e| merr(name, e))? {
        Map::Array(d) | Map::PerCpuArray(d) | Map::LpmTrie(d) => Ok(d.fd().as_fd().as_raw_fd()),
        _ => Err(merr(name, "not an array or a trie")),
    }
}

/// The bytes of plain values (keys, ids, bitsets: `repr(C)`, no padding).
fn bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: T is plain old data here (integers, `Bitset`); the slice covers `v` exactly.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Blocks of the IPv4 direct table (0: this build's pins have none).
fn v4_size(maps: &mut dyn MapAccess) -> u32 {
    match maps.map_mut(MAP_FW_V4) {
        Ok(Map::Array(d)) => d.info().map_or(0, |i| i.max_entries()),
        _ => 0,
    }
}

/// Takes generation `g`'s half of the IPv4 direct table unless it is taken (the map's size
/// read only then); without the map, nothing.
fn prepare_v4_half(half: &mut V4Half, maps: &mut dyn MapAccess, g: u32) {
    if half.prepared() {
        return;
    }
    let size = v4_size(maps);
    if size > 0 {
        half.prepare(size, g);
    }
}

/// Writes entries `keys` -> `vals` in one batch.
fn put<K: Copy, V: Copy>(
    maps: &mut dyn MapAccess,
    name: &str,
    keys: &[K],
    vals: &[V],
) -> Result<(), RulesError> {
    if keys.is_empty() {
        return Ok(());
    }
    let fd = fd(maps, name)?;
    sys::update_batch(fd, bytes(keys), bytes(vals), keys.len()).map_err(|e| merr(name, e))
}

/// Writes array entries `keys` -> `vals`: through the array's memory map when it allows
/// one (`BPF_F_MMAPABLE`; an array pinned by an earlier release may not), else in one
/// batch.
fn put_array<V: Copy>(
    mapped: &mut sys::Mappings,
    maps: &mut dyn MapAccess,
    name: &str,
    keys: &[u32],
    vals: &[V],
) -> Result<(), RulesError> {
    if put_mapped(mapped, maps, name, keys, |i| vals[i])? {
        return Ok(());
    }
    put(maps, name, keys, vals)
}

/// The same, the value of `keys[i]` made by `val(i)` as it is written (through a map, no
/// copy of all the values is made first: 10,000 rules make some 29,000 sets of 1.3 KB).
fn put_array_by<V: Copy>(
    mapped: &mut sys::Mappings,
    maps: &mut dyn MapAccess,
    name: &str,
    keys: &[u32],
    val: impl Fn(usize) -> V,
) -> Result<(), RulesError> {
    if put_mapped(mapped, maps, name, keys, &val)? {
        return Ok(());
    }
    let vals: Vec<V> = (0..keys.len()).map(val).collect();
    put(maps, name, keys, &vals)
}

/// Writes the entries through the array's memory map (made on first use) when the array
/// allows one: false when it does not (nothing written).
fn put_mapped<V: Copy>(
    mapped: &mut sys::Mappings,
    maps: &mut dyn MapAccess,
    name: &str,
    keys: &[u32],
    val: impl Fn(usize) -> V,
) -> Result<bool, RulesError> {
    if keys.is_empty() {
        return Ok(true);
    }
    let Map::Array(d) = maps.map_mut(name).map_err(|e| merr(name, e))? else {
        return Ok(false);
    };
    let info = d.info().map_err(|e| merr(name, e))?;
    let Some(m) = mapped
        .writable(name, d, &info)
        .map_err(|e| merr(name, format!("mapping the array: {e}")))?
    else {
        return Ok(false);
    };
    // Elements 8-aligned in a page-aligned mapping: a `V` of alignment 8 or less fits.
    const { assert!(std::mem::align_of::<V>() <= 8) };
    if m.value_size != std::mem::size_of::<V>() || keys.iter().any(|k| *k >= m.entries) {
        return Ok(false);
    }
    for (i, k) in keys.iter().enumerate() {
        // SAFETY: `k` < max_entries, so the element lies inside the mapping, at an 8-byte
        // aligned offset that holds a `V` (its size is the value size, checked above).
        unsafe { (m.as_ptr().add(*k as usize * m.stride) as *mut V).write(val(i)) };
    }
    // The values before anything that makes them reachable (an entry, the generation
    // switch): those are syscalls, after this.
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    Ok(true)
}

/// A prefix trie's key as the kernel reads it: the prefix length (32 bits of generation,
/// chain, family and pad, then the address's), then [`lpm_data`].
#[repr(C)]
#[derive(Clone, Copy)]
struct TrieKey {
    prefixlen: u32,
    data: [u8; 20],
}

/// An id as the kernel's u16 tables hold it.
fn id16(id: u32) -> u16 {
    if id == NONE {
        0
    } else {
        id as u16
    }
}

/// The active generation.
fn active(maps: &mut dyn MapAccess) -> Result<u32, RulesError> {
    let a: Array<&MapData, u32> =
        Array::try_from(&*maps.map_mut(MAP_FW_CTL).map_err(|e| merr(MAP_FW_CTL, e))?)
            .map_err(|e| merr(MAP_FW_CTL, e))?;
    Ok(a.get(&0, 0).map_err(|e| merr(MAP_FW_CTL, e))? & 1)
}

/// `img` brought to `want` (set ids, counted): the (index, id) entries that differ, all
/// of them when `img` holds none.
fn diff_sets(pool: &mut Pool, want: &[u32], img: &mut Vec<u32>) -> Vec<(u32, u32)> {
    if want.is_empty() {
        img.iter().for_each(|id| pool.dec(*id));
        img.clear();
        return Vec::new();
    }
    if img.len() != want.len() {
        want.iter().for_each(|id| pool.inc(*id));
        img.iter().for_each(|id| pool.dec(*id));
        *img = want.to_vec();
        return (0..).zip(want.iter().copied()).collect();
    }
    let mut out = Vec::new();
    for (i, (w, h)) in want.iter().zip(img.iter_mut()).enumerate() {
        if w != h {
            pool.inc(*w);
            pool.dec(*h);
            *h = *w;
            out.push((i as u32, *w));
        }
    }
    out
}

/// `img` brought to `want` (plain values): the (index, old, new) entries that differ.
fn diff_plain<T: PartialEq + Copy>(want: &[T], img: &mut Vec<T>) -> Vec<(u32, Option<T>, T)> {
    if img.len() != want.len() {
        let old = std::mem::replace(img, want.to_vec());
        return (0..)
            .zip(want.iter())
            .map(|(i, w)| (i, old.get(i as usize).copied(), *w))
            .collect();
    }
    let mut out = Vec::new();
    for (i, (w, h)) in want.iter().zip(img.iter_mut()).enumerate() {
        if w != h {
            out.push((i as u32, Some(*h), *w));
            *h = *w;
        }
    }
    out
}

/// `img` brought to `want` (prefix -> set id, counted): the prefixes gone, and those new
/// or changed.
fn diff_prefixes(
    pool: &mut Pool,
    want: &BTreeMap<PKey, u32>,
    img: &mut BTreeMap<PKey, u32>,
) -> (Vec<PKey>, Vec<(PKey, u32)>) {
    let (mut gone, mut put) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (want.iter().peekable(), img.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some((wk, wv)), Some((hk, hv))) if wk == hk => {
                if wv != hv {
                    put.push((**wk, **wv));
                }
                a.next();
                b.next();
            }
            (Some((wk, wv)), Some((hk, _))) if wk < hk => {
                put.push((**wk, **wv));
                a.next();
            }
            (Some(_), Some((hk, _))) => {
                gone.push(**hk);
                b.next();
            }
            (Some((wk, wv)), None) => {
                put.push((**wk, **wv));
                a.next();
            }
            (None, Some((hk, _))) => {
                gone.push(**hk);
                b.next();
            }
            (None, None) => break,
        }
    }
    for k in &gone {
        if let Some(id) = img.remove(k) {
            pool.dec(id);
        }
    }
    for (k, id) in &put {
        pool.inc(*id);
        if let Some(h) = img.insert(*k, *id) {
            pool.dec(h);
        }
    }
    (gone, put)
}

/// [`diff_sets`] over the entries `keys` only.
fn keyed_sets(
    pool: &mut Pool,
    want: &[u32],
    img: &mut [u32],
    keys: &mut Vec<u32>,
) -> Vec<(u32, u32)> {
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    for &i in keys.iter() {
        let (w, h) = (want[i as usize], &mut img[i as usize]);
        if w != *h {
            pool.inc(w);
            pool.dec(*h);
            *h = w;
            out.push((i, w));
        }
    }
    out
}

/// [`diff_prefixes`] over the prefixes `keys` only.
fn keyed_prefixes(
    pool: &mut Pool,
    want: &BTreeMap<PKey, u32>,
    img: &mut BTreeMap<PKey, u32>,
    keys: &mut Vec<PKey>,
) -> (Vec<PKey>, Vec<(PKey, u32)>) {
    keys.sort_unstable();
    keys.dedup();
    let (mut gone, mut put) = (Vec::new(), Vec::new());
    for k in keys.iter() {
        match (want.get(k), img.get(k).copied()) {
            (None, Some(h)) => {
                img.remove(k);
                pool.dec(h);
                gone.push(*k);
            }
            (Some(&w), h) if h != Some(w) => {
                pool.inc(w);
                if let Some(h) = h {
                    pool.dec(h);
                }
                img.insert(*k, w);
                put.push((*k, w));
            }
            _ => {}
        }
    }
    (gone, put)
}

/// [`diff_plain`] over the positions `keys` only.
fn keyed_plain<T: PartialEq + Copy>(
    want: &[T],
    img: &mut [T],
    keys: &[u32],
) -> Vec<(u32, Option<T>, T)> {
    let mut out = Vec::new();
    for &i in keys {
        let (w, h) = (want[i as usize], &mut img[i as usize]);
        if w != *h {
            out.push((i, Some(*h), w));
            *h = w;
        }
    }
    out
}

/// A set no chain wants (its summary names words that are all zero): what the image of a
/// wild set holds until it is written.
fn unwritten() -> Bitset {
    Bitset {
        summary: [u64::MAX; statewall_common::firewall::SUMMARY],
        ..Bitset::default()
    }
}

/// The counter ids of a chain's rules in rule order, from what each position holds: by
/// rank when every rule has one of its own, by position otherwise (tables of a release
/// without ranks kept every rule in position order).
fn rule_order(ruleids: &[u32], ranks: &[u32]) -> Vec<u32> {
    let mut held: Vec<(u32, u32)> = ruleids
        .iter()
        .zip(ranks)
        .filter(|(id, _)| **id != NONE)
        .map(|(id, r)| (*r, *id))
        .collect();
    let mut distinct: Vec<u32> = held.iter().map(|h| h.0).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() == held.len() && !distinct.contains(&0) {
        held.sort_unstable();
    }
    held.into_iter().map(|h| h.1).collect()
}

/// A chain whose kernel entries are not known (each of its tables is written in full).
fn unknown() -> ChainKernel {
    ChainKernel {
        conf: ChainConf::default(),
        sport: Vec::new(),
        dport: Vec::new(),
        small: Vec::new(),
        src: BTreeMap::new(),
        dst: BTreeMap::new(),
        actions: Vec::new(),
        ruleids: Vec::new(),
        ranks: Vec::new(),
        wild: Vec::new(),
        linear: None,
    }
}

impl Tables {
    /// Writes the chains as they are into the inactive generation and switches to it.
    /// The caller makes sure no program still reads that generation (a grace period since
    /// it was last active). Returns the generation now active.
    pub fn write(&mut self, maps: &mut dyn MapAccess) -> Result<u32, RulesError> {
        self.catch_up(maps)?;
        let g = active(maps)? ^ 1;
        let mut a: Array<&mut MapData, u32> =
            Array::try_from(maps.map_mut(MAP_FW_CTL).map_err(|e| merr(MAP_FW_CTL, e))?)
                .map_err(|e| merr(MAP_FW_CTL, e))?;
        a.set(0, g, 0).map_err(|e| merr(MAP_FW_CTL, e))?;
        self.switched = g;
        Ok(g)
    }

    /// Brings the inactive generation up to what the active one holds, without switching
    /// to it: after a large change, so that the next change writes only what it changes
    /// (not the large one again). The caller makes sure no program still reads that
    /// generation, as for [`Tables::write`].
    pub fn catch_up(&mut self, maps: &mut dyn MapAccess) -> Result<(), RulesError> {
        let g = active(maps)? ^ 1;
        self.write_fresh(maps)?;
        self.zero_counters(maps)?;
        if !self.known[g as usize] {
            self.clear_stale(maps, g)?;
        }
        let dirty = std::mem::take(&mut self.dirty[g as usize]);
        for (ch, d) in dirty {
            if let Err(e) = self.flush(maps, g, ch, d) {
                self.forget(g);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes both generations' halves of the IPv4 direct table and their memory now (when
    /// the tables are opened), not in the first large change.
    pub fn prepare_v4(&mut self, maps: &mut dyn MapAccess) {
        for g in 0..2 {
            prepare_v4_half(&mut self.v4[g as usize], maps, g);
        }
    }

    /// Sets made since the last write, written before any entry refers to them.
    fn write_fresh(&mut self, maps: &mut dyn MapAccess) -> Result<(), RulesError> {
        self.pool.sweep();
        let fresh = std::mem::take(&mut self.pool.fresh);
        let pool = &self.pool;
        put_array_by(&mut self.mapped, maps, MAP_FW_BITSETS, &fresh, |i| {
            pool.set(fresh[i])
        })
    }

    /// Zeroes the counters queued: those given to new rules, those of a chain reset
    /// ([`Tables::reset_counters`]).
    pub fn zero_counters(&mut self, maps: &mut dyn MapAccess) -> Result<(), RulesError> {
        if self.zero.is_empty() {
            return Ok(());
        }
        // A per-CPU value is one (8-byte aligned) value per possible CPU.
        let n = aya::util::nr_cpus().map_err(|e| merr(MAP_FW_STATS, e.1))?;
        let keys: Vec<u32> = std::mem::take(&mut self.zero)
            .into_iter()
            .map(|(ch, id)| stats_slot(ch, id))
            .collect();
        let vals = vec![RuleStats::default(); keys.len() * n];
        put(maps, MAP_FW_STATS, &keys, &vals)
    }

    /// Removes every prefix entry of generation `g` (left by an earlier process, or by a
    /// write that failed): all its chains are then written in full.
    fn clear_stale(&mut self, maps: &mut dyn MapAccess, g: u32) -> Result<(), RulesError> {
        for name in [MAP_FW_SRC, MAP_FW_DST] {
            let mut t: LpmTrie<&mut MapData, [u8; 20], u32> =
                LpmTrie::try_from(maps.map_mut(name).map_err(|e| merr(name, e))?)
                    .map_err(|e| merr(name, e))?;
            let stale: Vec<(u32, [u8; 20])> = t
                .keys()
                .filter_map(|k| k.ok())
                .map(|k| (k.prefix_len(), k.data()))
                .filter(|(_, d)| d[0] == g as u8)
                .collect();
            for (len, data) in stale {
                let _ = t.remove(&Key::new(len, data));
            }
        }
        self.forget(g);
        self.known[g as usize] = true;
        Ok(())
    }

    /// What generation `g` holds is not known any more.
    fn forget(&mut self, g: u32) {
        for ch in 0..MAX_CHAINS {
            if let Some(img) = self.images[g as usize][ch as usize].take() {
                img.each_set(|id| self.pool.dec(id));
                img.ruleids
                    .iter()
                    .for_each(|id| self.counter_ref(ch, *id, false));
            }
            self.dirty[g as usize].insert(
                ch,
                Dirty {
                    full: true,
                    ..Dirty::default()
                },
            );
        }
        self.known[g as usize] = false;
        self.v4[g as usize].forget();
    }

    /// Brings chain `ch` of generation `g` to what it is now: the entries `d` names (all
    /// of them when it says so, or when what the generation holds is not known).
    fn flush(
        &mut self,
        maps: &mut dyn MapAccess,
        g: u32,
        ch: u32,
        mut d: Dirty,
    ) -> Result<(), RulesError> {
        let empty;
        let img = self.images[g as usize][ch as usize].take();
        d.full |= img.is_none();
        let mut img = img.unwrap_or_else(unknown);
        // (A chain that is gone is written as an empty one; one that exists is not copied.)
        let want = match self.chains.get(&ch) {
            Some(m) => &m.k,
            None => {
                empty = ChainKernel::empty();
                &empty
            }
        };
        let pool = &mut self.pool;
        // Sets of the fields (what `want` does not use is never read: left as it is).
        let mut ports = [Vec::new(), Vec::new()];
        for (i, (w, h, keys)) in [
            (&want.sport, &mut img.sport, &mut d.sport),
            (&want.dport, &mut img.dport, &mut d.dport),
        ]
        .into_iter()
        .enumerate()
        {
            ports[i] = if d.full || w.len() != h.len() {
                diff_sets(pool, w, h)
            } else {
                keyed_sets(pool, w, h, keys)
            };
        }
        let small = if d.full || d.small {
            diff_sets(pool, &want.small, &mut img.small)
        } else {
            Vec::new()
        };
        let (src, dst) = if d.full {
            (
                diff_prefixes(pool, &want.src, &mut img.src),
                diff_prefixes(pool, &want.dst, &mut img.dst),
            )
        } else {
            (
                keyed_prefixes(pool, &want.src, &mut img.src, &mut d.src),
                keyed_prefixes(pool, &want.dst, &mut img.dst, &mut d.dst),
            )
        };
        // The IPv4 direct table follows the tries as they now are (its size read once).
        prepare_v4_half(&mut self.v4[g as usize], maps, g);
        let mut v4 = Vec::new();
        if self.v4[g as usize].prepared() {
            for (is_dst, (gone, new), held) in [(false, &src, &img.src), (true, &dst, &img.dst)] {
                let changed: Vec<PKey> = gone
                    .iter()
                    .chain(new.iter().map(|(k, _)| k))
                    .copied()
                    .collect();
                let field = (ch, is_dst);
                let w = self.v4[g as usize].update(g, field, held, d.full, &changed);
                if v4.is_empty() {
                    v4 = w;
                } else {
                    v4.extend(w);
                }
            }
        }
        // Only the wild sets the chain uses are written: the others are never read, and
        // their ids may still hold an earlier process's sets (`Pool::wild_free`).
        let uses = want.conf.wild;
        let mut wild = diff_plain(&want.wild, &mut img.wild);
        wild.retain(|(fi, ..)| uses & (1 << fi) != 0);
        // What a wild set not written holds is not known: it is written in full when its
        // field has a wild set again (not taken to hold what was wanted meanwhile).
        for (fi, w) in img.wild.iter_mut().enumerate() {
            if uses & (1 << fi) == 0 {
                *w = unwritten();
            }
        }
        let (actions, ruleids, ranks) = if d.full || img.ranks.len() != want.ranks.len() {
            (
                diff_plain(&want.actions, &mut img.actions),
                diff_plain(&want.ruleids, &mut img.ruleids),
                diff_plain(&want.ranks, &mut img.ranks),
            )
        } else {
            d.positions.sort_unstable();
            d.positions.dedup();
            (
                keyed_plain(&want.actions, &mut img.actions, &d.positions),
                keyed_plain(&want.ruleids, &mut img.ruleids, &d.positions),
                keyed_plain(&want.ranks, &mut img.ranks, &d.positions),
            )
        };
        // Small chains: their rules one by one as well (read instead of the sets).
        let lin = self
            .chains
            .get(&ch)
            .and_then(|m| super::rules::linear_chain(&m.rules, &m.pos, &m.ids));
        let mut conf = want.conf;
        conf.linear = lin.as_ref().map_or(0, |l| l.n as u8 + 1);
        let lin = lin.filter(|l| img.linear.as_ref() != Some(l));
        if lin.is_some() {
            img.linear = lin;
        }
        let conf_changed = img.conf != conf || img.conf.enabled == 0;
        if img.conf.enabled != 0 {
            pool.dec(img.conf.all);
        }
        if want.conf.enabled != 0 {
            pool.inc(want.conf.all);
        }
        img.conf = conf;
        for (_, old, new) in &ruleids {
            if let Some(o) = old {
                self.counter_ref(ch, *o, false);
            }
            self.counter_ref(ch, *new, true);
        }
        self.images[g as usize][ch as usize] = Some(img);
        // The kernel's copy.
        let keys: Vec<u32> = wild.iter().map(|(fi, ..)| wild_id(g, ch, *fi)).collect();
        let vals: Vec<Bitset> = wild.iter().map(|(.., b)| *b).collect();
        put(maps, MAP_FW_BITSETS, &keys, &vals)?;
        for (name, d) in [(MAP_FW_SPORT, &ports[0]), (MAP_FW_DPORT, &ports[1])] {
            let keys: Vec<u32> = d.iter().map(|(p, _)| port_slot(g, ch, *p as u16)).collect();
            let vals: Vec<u16> = d.iter().map(|(_, id)| id16(*id)).collect();
            put_array(&mut self.mapped, maps, name, &keys, &vals)?;
        }
        let keys: Vec<u32> = small.iter().map(|(i, _)| small_slot(g, ch, *i)).collect();
        let vals: Vec<u16> = small.iter().map(|(_, id)| id16(*id)).collect();
        put(maps, MAP_FW_SMALL, &keys, &vals)?;
        let keys: Vec<u32> = actions.iter().map(|(p, ..)| rule_slot(g, ch, *p)).collect();
        let vals: Vec<u8> = actions.iter().map(|(.., a)| *a).collect();
        put(maps, MAP_FW_ACTIONS, &keys, &vals)?;
        let keys: Vec<u32> = ruleids.iter().map(|(p, ..)| rule_slot(g, ch, *p)).collect();
        let vals: Vec<u16> = ruleids.iter().map(|(.., id)| id16(*id)).collect();
        put(maps, MAP_FW_RULEID, &keys, &vals)?;
        let keys: Vec<u32> = ranks.iter().map(|(p, ..)| rule_slot(g, ch, *p)).collect();
        let vals: Vec<u32> = ranks.iter().map(|(.., r)| *r).collect();
        put(maps, MAP_FW_RANK, &keys, &vals)?;
        for (name, (gone, new)) in [(MAP_FW_SRC, src), (MAP_FW_DST, dst)] {
            let mut t: LpmTrie<&mut MapData, [u8; 20], u32> =
                LpmTrie::try_from(maps.map_mut(name).map_err(|e| merr(name, e))?)
                    .map_err(|e| merr(name, e))?;
            for (fam, addr, len) in gone {
                let _ = t.remove(&Key::new(32 + len as u32, lpm_data(g, ch, fam, &addr)));
            }
            let (keys, vals): (Vec<TrieKey>, Vec<u32>) = new
                .into_iter()
                .map(|((fam, addr, len), id)| {
                    let prefixlen = 32 + len as u32;
                    let data = lpm_data(g, ch, fam, &addr);
                    (TrieKey { prefixlen, data }, id)
                })
                .unzip();
            put(maps, name, &keys, &vals)?;
        }
        let keys: Vec<u32> = v4.iter().map(|(k, _)| *k).collect();
        let vals: Vec<V4Block> = v4.iter().map(|(_, v)| *v).collect();
        drop(v4);
        put_array(&mut self.mapped, maps, MAP_FW_V4, &keys, &vals)?;
        if let Some(l) = lin {
            put(maps, MAP_FW_LINEAR, &[g * MAX_CHAINS + ch], &[l])?;
        }
        if conf_changed {
            let mut a: Array<&mut MapData, ChainConf> = Array::try_from(
                maps.map_mut(MAP_FW_CHAINS)
                    .map_err(|e| merr(MAP_FW_CHAINS, e))?,
            )
            .map_err(|e| merr(MAP_FW_CHAINS, e))?;
            a.set(g * MAX_CHAINS + ch, conf, 0)
                .map_err(|e| merr(MAP_FW_CHAINS, e))?;
        }
        Ok(())
    }

    /// Reads back what the active generation holds (the tables are new, nothing written
    /// yet): its sets are held until that generation is rewritten, and the counter ids of
    /// its chains' rules, in order, are kept for the chains given next
    /// ([`Tables::set_chains`]). Tables of a release without counter ids (all 0) count
    /// rule `i` at counter `i`.
    pub fn adopt(&mut self, maps: &mut dyn MapAccess) -> Result<(), RulesError> {
        let g = active(maps)?;
        let mut held = Vec::new();
        let confs: Vec<ChainConf> = {
            let a: Array<&MapData, ChainConf> = Array::try_from(
                &*maps
                    .map_mut(MAP_FW_CHAINS)
                    .map_err(|e| merr(MAP_FW_CHAINS, e))?,
            )
            .map_err(|e| merr(MAP_FW_CHAINS, e))?;
            (0..MAX_CHAINS)
                .map(|ch| a.get(&(g * MAX_CHAINS + ch), 0).unwrap_or_default())
                .collect()
        };
        let range = |maps: &mut dyn MapAccess, name: &str, start: u32, n: u32, size: usize| {
            let fd = fd(maps, name)?;
            sys::lookup_range(fd, start, n, size).map_err(|e| merr(name, e))
        };
        let u16s = |b: Vec<u8>| -> Vec<u32> {
            b.chunks_exact(2)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]) as u32)
                .collect()
        };
        let mut tries: [BTreeMap<(u8, PKey), u32>; 2] = Default::default();
        for (i, name) in [MAP_FW_SRC, MAP_FW_DST].into_iter().enumerate() {
            let t: LpmTrie<&MapData, [u8; 20], u32> =
                LpmTrie::try_from(&*maps.map_mut(name).map_err(|e| merr(name, e))?)
                    .map_err(|e| merr(name, e))?;
            for k in t.keys().filter_map(|k| k.ok()) {
                let d = k.data();
                if d[0] != g as u8 || k.prefix_len() < 32 {
                    continue;
                }
                if let Ok(id) = t.get(&k, 0) {
                    let mut addr = [0u8; 16];
                    addr.copy_from_slice(&d[4..]);
                    tries[i].insert((d[1], (d[2], addr, (k.prefix_len() - 32) as u8)), id);
                }
            }
        }
        for (ch, conf) in (0..MAX_CHAINS).zip(confs) {
            let mut k = unknown();
            k.conf = conf;
            if conf.enabled != 0 {
                for (used, name, v) in [
                    (field::SPORT, MAP_FW_SPORT, &mut k.sport),
                    (field::DPORT, MAP_FW_DPORT, &mut k.dport),
                ] {
                    if conf.used & used != 0 {
                        *v = u16s(range(maps, name, port_slot(g, ch, 0), 65536, 2)?);
                    }
                }
                let small = u16s(range(
                    maps,
                    MAP_FW_SMALL,
                    small_slot(g, ch, 0),
                    SMALL_PER_CHAIN,
                    2,
                )?);
                k.small = small
                    .into_iter()
                    .enumerate()
                    .map(|(i, id)| {
                        if conf.used & small_field(i) != 0 {
                            id
                        } else {
                            NONE
                        }
                    })
                    .collect();
                for (i, t) in [&mut k.src, &mut k.dst].into_iter().enumerate() {
                    *t = tries[i]
                        .iter()
                        .filter(|((c, _), _)| *c as u32 == ch)
                        .map(|((_, p), id)| (*p, *id))
                        .collect();
                }
                k.each_set(|id| held.push(id));
                k.actions = range(
                    maps,
                    MAP_FW_ACTIONS,
                    rule_slot(g, ch, 0),
                    MAX_RULES as u32,
                    1,
                )?;
                let ids = u16s(range(
                    maps,
                    MAP_FW_RULEID,
                    rule_slot(g, ch, 0),
                    MAX_RULES as u32,
                    2,
                )?);
                k.ruleids = ids
                    .iter()
                    .zip(&k.actions)
                    .map(|(id, a)| if *a != 0 { *id } else { NONE })
                    .collect();
                let ranks = range(maps, MAP_FW_RANK, rule_slot(g, ch, 0), MAX_RULES as u32, 4)?;
                k.ranks = ranks
                    .chunks_exact(4)
                    .zip(&k.actions)
                    .map(|(c, a)| {
                        if *a != 0 {
                            u32::from_ne_bytes([c[0], c[1], c[2], c[3]])
                        } else {
                            0
                        }
                    })
                    .collect();
                let order = rule_order(&k.ruleids, &k.ranks);
                let mut distinct = order.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let ids = if distinct.len() == order.len() && order.len() == conf.rules as usize {
                    order
                } else {
                    (0..conf.rules).collect()
                };
                self.adopted.insert(ch, ids);
                for id in k.ruleids.clone() {
                    self.counter_ref(ch, id, true);
                }
            }
            self.images[g as usize][ch as usize] = Some(k);
        }
        self.pool.hold(&held);
        self.known[g as usize] = true;
        Ok(())
    }
}
