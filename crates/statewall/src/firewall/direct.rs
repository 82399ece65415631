//! IPv4 prefixes read directly: beside each address field's trie, a multibit trie the
//! kernel reads with array lookups only. The address's top 16 bits index a root of 65,536
//! entries, each further 8 bits a block of 256. A prefix is written in its own level only
//! (a /0 to /16 in the root, a /17 to /24 in its /16's block, a /25 to /32 in its /24's),
//! over the entries it covers that no longer prefix of that level covers; the reader keeps
//! the last value on its way down. So a change writes one root row or block per prefix it
//! changes. It is built from what the generation's trie holds for the field (the same
//! prefixes and sets), so both give the same answer; the trie stays the field's whole
//! truth (IPv6, and the fields that find no room here).
//!
//! Each generation has its half of `SW_FW_V4` (its roots and blocks) and its root slots
//! (block `g`), written only while it is inactive, like the rest of its tables. A field
//! that finds no root or no block free reads its trie until its chain is written in full.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use statewall_common::firewall::{
    v4_entry, v4_half, v4root_slot, V4Block, V4_BLOCK, V4_CHILD_SHIFT, V4_MAX_BLOCKS,
    V4_ROOT_BLOCKS, V4_STRIDE, V4_VALUE,
};

use super::rule::PKey;
use crate::types::FastMap;

fn v4(k: &PKey) -> u32 {
    u32::from_be_bytes([k.1[0], k.1[1], k.1[2], k.1[3]])
}

fn key(a: u32, len: u8) -> PKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&(a & mask(len)).to_be_bytes());
    (4, addr, len)
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

/// The level of a prefix length: 0 (the root) up to 16 bits, then one per stride.
fn level_of(len: u8) -> u32 {
    (len as u32).saturating_sub(16).div_ceil(V4_STRIDE)
}

/// The prefix lengths level `k` holds.
fn lens_of(k: u32) -> (u8, u8) {
    if k == 0 {
        (0, 16)
    } else {
        (
            (16 + V4_STRIDE * (k - 1) + 1) as u8,
            (16 + V4_STRIDE * k) as u8,
        )
    }
}

/// A block below the root: (level, the address its block covers, cut to the bits above it).
type BlockKey = (u32, u32);

/// The block of level `k` (at least 1) that holds address `a`.
fn block_of(k: u32, a: u32) -> BlockKey {
    (k, a & mask(lens_of(k).0 - 1))
}

/// The entry of address `a` in its level-`k` table (the root's 65,536, a block's 256).
fn index_of(k: u32, a: u32) -> usize {
    let (_, hi) = lens_of(k);
    let bits = if k == 0 { 16 } else { V4_STRIDE };
    ((a >> (32 - hi as u32)) & ((1 << bits) - 1)) as usize
}

/// A half's blocks: the free ones, and the contents of each (as last built), by index
/// from the half's first block (kept from one build to the next: no new memory to touch).
struct Pool {
    first: u32,
    free: Vec<u32>,
    arena: Vec<V4Block>,
}

impl Pool {
    fn block(&mut self, id: u32) -> &mut V4Block {
        &mut self.arena[(id - self.first) as usize]
    }
}

/// One field's root as written, and its blocks.
struct Field {
    root: u32,
    top: Vec<u32>,
    blocks: FastMap<BlockKey, u32>,
    /// Written since the last update: root rows, blocks.
    rows: BTreeSet<usize>,
    dirty: FastMap<BlockKey, ()>,
}

impl Field {
    fn entries<'a>(&'a mut self, pool: &'a mut Pool, b: Option<BlockKey>) -> &'a mut [u32] {
        match b {
            None => &mut self.top,
            Some(b) => pool.block(self.blocks[&b]),
        }
    }

    fn touch(&mut self, b: Option<BlockKey>, i: usize) {
        match b {
            None => {
                self.rows.insert(i / V4_BLOCK);
            }
            Some(b) => {
                self.dirty.insert(b, ());
            }
        }
    }

    /// The level-`k` table of address `a` (`None`: the root), made (and linked from its
    /// parent) when `make`; false when it is missing, or there is no block free.
    fn table(&mut self, k: u32, a: u32, make: bool, pool: &mut Pool) -> Option<Option<BlockKey>> {
        if k == 0 {
            return Some(None);
        }
        let b = block_of(k, a);
        if self.blocks.contains_key(&b) {
            return Some(Some(b));
        }
        if !make {
            return None;
        }
        let parent = self.table(k - 1, a, true, pool)?;
        let id = pool.free.pop()?;
        *pool.block(id) = [0; V4_BLOCK];
        self.blocks.insert(b, id);
        self.dirty.insert(b, ());
        let i = index_of(k - 1, a);
        let e = &mut self.entries(pool, parent)[i];
        *e = (*e & V4_VALUE) | (id << V4_CHILD_SHIFT);
        self.touch(parent, i);
        Some(Some(b))
    }

    /// Frees the level-`k` block of address `a` when nothing is left in it, and then its
    /// parent the same way.
    fn prune(&mut self, k: u32, a: u32, pool: &mut Pool) {
        if k == 0 {
            return;
        }
        let b = block_of(k, a);
        let Some(&id) = self.blocks.get(&b) else {
            return;
        };
        if pool.block(id).iter().any(|v| *v != 0) {
            return;
        }
        pool.free.push(id);
        self.blocks.remove(&b);
        self.dirty.remove(&b);
        let parent = self
            .table(k - 1, a, false, pool)
            .expect("a block's parent exists");
        let i = index_of(k - 1, a);
        let e = &mut self.entries(pool, parent)[i];
        *e &= V4_VALUE;
        self.touch(parent, i);
        self.prune(k - 1, a, pool);
    }

    /// Writes prefix `p`'s entries as `img` says: over its range in its level, the value
    /// of the longest prefix of that level covering each entry (its own if `img` holds
    /// it). False when a block is needed and none is free.
    fn paint(&mut self, p: &PKey, img: &BTreeMap<PKey, u32>, pool: &mut Pool) -> bool {
        let (a, len) = (v4(p), p.2);
        let k = level_of(len);
        let (lo, hi) = lens_of(k);
        // The longest shorter prefix of the level that covers the range, then those in it.
        let base = (lo..len).rev().find_map(|l| img.get(&key(a, l)).copied());
        let mut inside: Vec<(u32, u8, u32)> = img
            .range(key(a, len)..=(4, key(a | !mask(len), 32).1, hi))
            .filter(|(q, _)| q.2 >= len && q.2 <= hi && v4(q) & mask(len) == a & mask(len))
            .map(|(q, id)| (v4(q), q.2, *id))
            .collect();
        let needed = base.is_some() || !inside.is_empty();
        let Some(t) = self.table(k, a, needed, pool) else {
            return !needed;
        };
        inside.sort_by_key(|q| q.1);
        let span = 1usize << (hi - len);
        let start = index_of(k, a) & !(span - 1);
        let mut vals = vec![v4_entry(base); span];
        for (qa, ql, id) in inside {
            let n = 1usize << (hi - ql);
            let s = index_of(k, qa) & !(n - 1);
            vals[s - start..s - start + n].fill(v4_entry(Some(id)));
        }
        let es = self.entries(pool, t);
        for (e, v) in es[start..start + span].iter_mut().zip(vals) {
            *e = (*e & !V4_VALUE) | v;
        }
        match t {
            None => {
                self.rows
                    .extend(start / V4_BLOCK..=(start + span - 1) / V4_BLOCK);
            }
            Some(b) => {
                self.dirty.insert(b, ());
                self.prune(k, a, pool);
            }
        }
        true
    }

    /// What was written since the last call, as blocks of the map.
    fn writes(&mut self, pool: &mut Pool, out: &mut V4Writes) {
        out.reserve(self.rows.len() + self.dirty.len());
        for r in std::mem::take(&mut self.rows) {
            let mut b = [0u32; V4_BLOCK];
            b.copy_from_slice(&self.top[r * V4_BLOCK..(r + 1) * V4_BLOCK]);
            out.push((self.root + r as u32, b));
        }
        for k in std::mem::take(&mut self.dirty).into_keys() {
            if let Some(&id) = self.blocks.get(&k) {
                out.push((id, *pool.block(id)));
            }
        }
    }
}

/// One generation's half of the direct table, as written.
pub struct V4Half {
    /// Free roots (first blocks) and the blocks; `None`: not read from the map yet.
    free: Option<(Vec<u32>, Pool)>,
    fields: HashMap<(u32, bool), Field>,
    /// Fields that found no room: they read their trie until their chain is written in full.
    fallen: BTreeSet<(u32, bool)>,
    /// The generation's root slots (block `g` of the map) as written.
    slots: V4Block,
    /// What the map holds is not known: the root slots are written (all 0) first.
    fresh: bool,
}

impl Default for V4Half {
    fn default() -> V4Half {
        V4Half {
            free: None,
            fields: HashMap::new(),
            fallen: BTreeSet::new(),
            slots: [0; V4_BLOCK],
            fresh: true,
        }
    }
}

/// What a change writes into the map: blocks (index, contents).
pub type V4Writes = Vec<(u32, V4Block)>;

impl V4Half {
    /// Nothing of it is known (a new process, or a write that failed): every field is
    /// built again, from an empty half (its memory kept).
    pub fn forget(&mut self) {
        if let Some((roots, pool)) = &mut self.free {
            let (first, n) = (pool.first, pool.arena.len() as u32);
            (*roots, pool.free) = Self::all_free(first, n);
        }
        self.fields.clear();
        self.fallen.clear();
        self.slots = [0; V4_BLOCK];
        self.fresh = true;
    }

    /// Every root and block of a half of `n` blocks from `first` free.
    fn all_free(first: u32, n: u32) -> (Vec<u32>, Vec<u32>) {
        let roots = statewall_common::firewall::v4_roots(n);
        (
            (0..roots)
                .rev()
                .map(|r| first + r * V4_ROOT_BLOCKS)
                .collect(),
            (first + roots * V4_ROOT_BLOCKS..first + n).rev().collect(),
        )
    }

    /// Takes generation `g`'s half of a map of `size` blocks, and its memory (touched now,
    /// so that a large build later does not wait for the pages).
    pub fn prepare(&mut self, size: u32, g: u32) {
        if self.free.is_some() {
            return;
        }
        let (first, n) = v4_half(size.min(V4_MAX_BLOCKS), g);
        let (roots, free) = Self::all_free(first, n);
        let mut arena = vec![[0; V4_BLOCK]; n as usize];
        // One store a page: the zeroed allocation is only mapped when written.
        for b in arena
            .iter_mut()
            .step_by(4096 / std::mem::size_of::<V4Block>().max(1))
        {
            // SAFETY: a store to an element of the arena.
            unsafe { std::ptr::write_volatile(&mut b[0], 0) };
        }
        self.free = Some((roots, Pool { first, free, arena }));
    }

    /// Blocks in use (roots counted by their blocks), for the memory figures.
    pub fn blocks_in_use(&self) -> usize {
        self.fields
            .values()
            .map(|f| V4_ROOT_BLOCKS as usize + f.blocks.len())
            .sum()
    }

    /// Fields read through the direct table, and fields that found no room (read through
    /// their tries).
    pub fn fields(&self) -> (usize, usize) {
        (self.fields.len(), self.fallen.len())
    }

    /// The half is taken ([`V4Half::prepare`]).
    pub fn prepared(&self) -> bool {
        self.free.is_some()
    }

    /// Brings field (`ch`, `dst`) of generation `g` to what its trie holds now (`img`),
    /// once the half is taken ([`V4Half::prepare`]): in full when `full` (the chain is
    /// written in full) or when the field has no root yet, else only the prefixes
    /// `changed`. Returns the blocks to write (a root slot last).
    pub fn update(
        &mut self,
        g: u32,
        (ch, dst): (u32, bool),
        img: &BTreeMap<PKey, u32>,
        full: bool,
        changed: &[PKey],
    ) -> V4Writes {
        let mut out = Vec::new();
        if self.fresh {
            // What the half holds is not known: every field reads its trie until it is
            // built here (the root slots first, all 0).
            self.fresh = false;
            out.push((g & 1, self.slots));
        }
        let key = (ch, dst);
        if full {
            self.fallen.remove(&key);
        } else if self.fallen.contains(&key) {
            return out;
        }
        if !full && self.fields.contains_key(&key) {
            let pool = &mut self.free.as_mut().expect("read above").1;
            let f = self.fields.get_mut(&key).expect("checked");
            // Shortest first; a prefix inside one painted already in its level is done.
            let mut todo: Vec<&PKey> = changed.iter().filter(|k| k.0 == 4).collect();
            todo.sort_by_key(|k| k.2);
            let mut done: Vec<(u32, u32, u8)> = Vec::new();
            let mut room = true;
            for k in todo {
                let (lv, a) = (level_of(k.2), v4(k));
                if done
                    .iter()
                    .any(|&(l, b, len)| l == lv && a & mask(len) == b)
                {
                    continue;
                }
                if !f.paint(k, img, pool) {
                    room = false;
                    break;
                }
                done.push((lv, a & mask(k.2), k.2));
            }
            if room {
                f.writes(pool, &mut out);
                return out;
            }
        }
        self.release(key);
        if img.keys().any(|k| k.0 == 4) && !self.build(key, img, &mut out) {
            tracing::warn!(
                "firewall chain {ch}: its {} prefixes find no room in the IPv4 direct table ([maps] SW_FW_V4): read through the prefix trie",
                if dst { "destination" } else { "source" }
            );
            self.fallen.insert(key);
        }
        let root = self.fields.get(&key).map_or(0, |f| f.root);
        self.slots[v4root_slot(ch, dst)] = root;
        out.push((g & 1, self.slots));
        out
    }

    /// Frees field `key`'s root and blocks.
    fn release(&mut self, key: (u32, bool)) {
        if let Some(f) = self.fields.remove(&key) {
            let (roots, pool) = self.free.as_mut().expect("read before use");
            roots.push(f.root);
            pool.free.extend(f.blocks.into_values());
        }
    }

    /// Builds field `key` in full (a root and its blocks) from `img`; false when there is
    /// no room (nothing of it is kept).
    fn build(&mut self, key: (u32, bool), img: &BTreeMap<PKey, u32>, out: &mut V4Writes) -> bool {
        let (roots, pool) = self.free.as_mut().expect("read before use");
        let Some(root) = roots.pop() else {
            return false;
        };
        let mut f = Field {
            root,
            top: vec![0u32; 65536],
            blocks: FastMap::default(),
            rows: (0..V4_ROOT_BLOCKS as usize).collect(),
            dirty: FastMap::default(),
        };
        // Shortest first: each prefix over the shorter ones of its level.
        let mut ps: Vec<(&PKey, u32)> = img
            .iter()
            .filter(|(k, _)| k.0 == 4)
            .map(|(k, id)| (k, *id))
            .collect();
        ps.sort_by_key(|(k, _)| k.2);
        for (k, id) in ps {
            let (a, len) = (v4(k), k.2);
            let lv = level_of(len);
            let Some(t) = f.table(lv, a, true, pool) else {
                roots.push(root);
                pool.free.extend(f.blocks.into_values());
                return false;
            };
            let span = 1usize << (lens_of(lv).1 - len);
            let start = index_of(lv, a) & !(span - 1);
            for e in &mut f.entries(pool, t)[start..start + span] {
                *e = (*e & !V4_VALUE) | v4_entry(Some(id));
            }
        }
        // Every block is new.
        f.dirty = f.blocks.keys().map(|b| (*b, ())).collect();
        f.writes(pool, out);
        self.fields.insert(key, f);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use statewall_common::firewall::{V4_LEVELS, V4_ROOTS};

    /// The longest prefix of `img` covering `a`, read prefix by prefix.
    fn naive(img: &BTreeMap<PKey, u32>, a: u32) -> Option<u32> {
        img.iter()
            .filter(|(k, _)| k.0 == 4)
            .filter(|(k, _)| k.2 == 0 || (a ^ v4(k)) >> (32 - k.2) == 0)
            .max_by_key(|(k, _)| k.2)
            .map(|(_, id)| *id)
    }

    /// What the kernel reads: the written blocks, walked as `v4_lookup` walks them.
    fn read(map: &HashMap<u32, V4Block>, g: u32, key: (u32, bool), a: u32) -> Option<Option<u32>> {
        let root = map.get(&g).map_or(0, |b| b[v4root_slot(key.0, key.1)]);
        if root == 0 {
            return None;
        }
        let top = a >> 16;
        let mut e = map[&(root + (top >> V4_STRIDE))][top as usize & (V4_BLOCK - 1)];
        let mut best = e & V4_VALUE;
        for i in 0..V4_LEVELS {
            let child = e >> V4_CHILD_SHIFT;
            if child == 0 {
                break;
            }
            e = map[&child][(a >> (16 - V4_STRIDE * (i + 1))) as usize & (V4_BLOCK - 1)];
            if e & V4_VALUE != 0 {
                best = e & V4_VALUE;
            }
        }
        Some(best.checked_sub(1))
    }

    /// Random prefixes nesting in 10.0.0.0/14, built in full then changed a few at a time:
    /// every address read through the blocks as the kernel reads them gets the set of the
    /// longest prefix, found prefix by prefix; a half too small falls back to the trie.
    #[test]
    fn the_direct_table_gives_the_longest_prefix() {
        let mut rng = StdRng::seed_from_u64(0x4d1);
        let size = 2 + 2 * (V4_ROOTS * V4_ROOT_BLOCKS + 4000);
        let mut half = V4Half::default();
        let mut map: HashMap<u32, V4Block> = HashMap::new();
        let mut img: BTreeMap<PKey, u32> = BTreeMap::new();
        img.insert(key(0, 0), 7);
        let draw = |rng: &mut StdRng| {
            let a = 0x0a00_0000 | rng.random_range(0..1u32 << 18);
            key(
                a,
                [8u8, 12, 15, 16, 17, 19, 20, 23, 24, 25, 28, 31, 32][rng.random_range(0..13)],
            )
        };
        for _ in 0..300 {
            img.insert(draw(&mut rng), rng.random_range(0..5000));
        }
        let g = 1;
        half.prepare(size, g);
        for (b, v) in half.update(g, (3, true), &img, true, &[]) {
            map.insert(b, v);
        }
        for step in 0..80 {
            let mut changed = Vec::new();
            for _ in 0..rng.random_range(1..16) {
                let k = draw(&mut rng);
                if rng.random_bool(0.4) {
                    img.remove(&k);
                } else {
                    img.insert(k, rng.random_range(0..5000));
                }
                changed.push(k);
            }
            for (b, v) in half.update(g, (3, true), &img, false, &changed) {
                map.insert(b, v);
            }
            for _ in 0..300 {
                let a = if rng.random_bool(0.8) {
                    let k = img.keys().nth(rng.random_range(0..img.len())).unwrap();
                    v4(k) | rng.random_range(0..256)
                } else {
                    rng.random()
                };
                assert_eq!(
                    read(&map, g, (3, true), a),
                    Some(naive(&img, a)),
                    "step {step}: {a:#x}"
                );
            }
        }
        assert!(half.blocks_in_use() > V4_ROOT_BLOCKS as usize);
        // Too few blocks: the field reads its trie (slot 0), and nothing is half-built.
        let mut small = V4Half::default();
        small.prepare(2 + 2 * (V4_ROOT_BLOCKS + 3), g);
        let w = small.update(g, (3, true), &img, true, &[]);
        assert!(
            w.iter().all(|(b, _)| *b == g),
            "only root slots: {:?}",
            w.iter().map(|w| w.0).collect::<Vec<_>>()
        );
        assert_eq!(w.last().unwrap().1[v4root_slot(3, true)], 0);
        assert_eq!(small.blocks_in_use(), 0);
        // Every prefix but the default route taken away, a few at a time: the blocks are
        // freed as they empty.
        let all: Vec<PKey> = img.keys().filter(|k| k.2 > 0).copied().collect();
        for chunk in all.chunks(7) {
            chunk.iter().for_each(|k| {
                img.remove(k);
            });
            for (b, v) in half.update(g, (3, true), &img, false, chunk) {
                map.insert(b, v);
            }
            let a = 0x0a00_0000 | rng.random_range(0..1u32 << 18);
            assert_eq!(read(&map, g, (3, true), a), Some(naive(&img, a)), "{a:#x}");
        }
        assert_eq!(half.blocks_in_use(), V4_ROOT_BLOCKS as usize);
        // Forgotten (a new process: the map keeps what the last one wrote), then built
        // again from other prefixes: nothing of the old blocks shows through.
        half.forget();
        for _ in 0..300 {
            img.insert(draw(&mut rng), rng.random_range(0..5000));
        }
        for (b, v) in half.update(g, (3, true), &img, false, &[]) {
            map.insert(b, v);
        }
        for _ in 0..2000 {
            let a = 0x0a00_0000 | rng.random_range(0..1u32 << 18);
            assert_eq!(read(&map, g, (3, true), a), Some(naive(&img, a)), "{a:#x}");
        }
    }
}
