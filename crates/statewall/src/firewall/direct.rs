//! IPv4 prefixes read directly: beside each address field's trie, a multibit trie the
//! kernel reads with array lookups only (the address's top 16 bits index a root of 65,536
//! entries, each further 8 bits a block of 256), leaf-pushed, so that an entry holds the set
//! of the longest prefix covering its addresses. It is built from what the generation's
//! trie holds for the field (the same prefixes and sets), so both give the same answer;
//! the trie stays the field's whole truth (IPv6, and the fields that find no room here).
//!
//! Each generation has its half of `SW_FW_V4` (its roots and blocks) and its root slots
//! (block `g`), written only while it is inactive, like the rest of its tables. A field
//! that finds no root or no block free reads its trie until its chain is written in full.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use statewall_common::firewall::{
    v4_entry, v4_half, v4root_slot, V4Block, V4_BLOCK, V4_CHILD, V4_ROOTS, V4_ROOT_BLOCKS,
    V4_STRIDE,
};

use super::rules::PKey;

/// The entries of one /16 below a root, before they are given blocks: an entry for each
/// value of the next [`V4_STRIDE`] bits, each a value or a node for the bits after.
#[derive(Clone)]
struct Node {
    e: [u32; V4_BLOCK],
    kids: [Option<Box<Node>>; V4_BLOCK],
}

impl Node {
    fn filled(v: u32) -> Node {
        Node {
            e: [v; V4_BLOCK],
            kids: std::array::from_fn(|_| None),
        }
    }

    /// Prefix `addr`/`len` (17 to 32 bits, inside this node's /16) -> `v`, at `level`
    /// (0: bits 16 to 19). Prefixes come shortest first, so a range filled here has no
    /// node below it yet.
    fn insert(&mut self, addr: u32, len: u8, v: u32, level: u32) {
        let end = 16 + V4_STRIDE * (level + 1);
        let nib = (addr >> (32 - end)) as usize & (V4_BLOCK - 1);
        if len as u32 <= end {
            let span = 1usize << (end - len as u32);
            let start = nib & !(span - 1);
            self.e[start..start + span].fill(v);
        } else {
            let parent = self.e[nib];
            self.kids[nib]
                .get_or_insert_with(|| Box::new(Node::filled(parent)))
                .insert(addr, len, v, level + 1);
        }
    }

    /// Blocks needed.
    fn blocks(&self) -> usize {
        1 + self
            .kids
            .iter()
            .flatten()
            .map(|k| k.blocks())
            .sum::<usize>()
    }

    /// Gives the node and those below it blocks from `free`, queues their contents in
    /// `out`, and returns the entry that leads to it.
    fn place(
        &self,
        free: &mut Vec<u32>,
        taken: &mut Vec<u32>,
        out: &mut Vec<(u32, V4Block)>,
    ) -> u32 {
        let b = free.pop().expect("counted before placing");
        taken.push(b);
        let mut e = self.e;
        for (i, k) in self.kids.iter().enumerate() {
            if let Some(k) = k {
                e[i] = k.place(free, taken, out);
            }
        }
        out.push((b, e));
        V4_CHILD | b
    }
}

/// An IPv4 prefix of a field's trie: (address, length, entry value).
type V4Prefix = (u32, u8, u32);

fn v4(k: &PKey) -> u32 {
    u32::from_be_bytes([k.1[0], k.1[1], k.1[2], k.1[3]])
}

/// The /16 of an address.
fn slot_of(a: u32) -> usize {
    (a >> 16) as usize
}

/// One field's root as written: its entries, and the blocks under each /16.
struct Field {
    root: u32,
    top: Vec<u32>,
    blocks: HashMap<usize, Vec<u32>>,
}

/// One generation's half of the direct table, as written.
pub struct V4Half {
    /// Free roots (first blocks) and free single blocks; `None`: not read from the map yet.
    free: Option<(Vec<u32>, Vec<u32>)>,
    fields: HashMap<(u32, bool), Field>,
    /// Fields that found no room: they read their trie until their chain is written in full.
    fallen: BTreeSet<(u32, bool)>,
    /// The generation's root slots (block `g` of the map) as written.
    slots: V4Block,
}

impl Default for V4Half {
    fn default() -> V4Half {
        V4Half {
            free: None,
            fields: HashMap::new(),
            fallen: BTreeSet::new(),
            slots: [0; V4_BLOCK],
        }
    }
}

/// What a change writes into the map: blocks (index, contents).
pub type V4Writes = Vec<(u32, V4Block)>;

impl V4Half {
    /// Nothing of it is known (a new process, or a write that failed): every field is
    /// built again, from an empty half.
    pub fn forget(&mut self) {
        *self = V4Half::default();
    }

    /// Blocks in use (roots counted by their blocks), for the memory figures.
    pub fn blocks_in_use(&self) -> usize {
        self.fields
            .values()
            .map(|f| V4_ROOT_BLOCKS as usize + f.blocks.values().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Fields read through the direct table, and fields that found no room (read through
    /// their tries).
    pub fn fields(&self) -> (usize, usize) {
        (self.fields.len(), self.fallen.len())
    }

    /// Brings field (`ch`, `dst`) of generation `g` to what its trie holds now (`img`),
    /// in a map of `size` blocks: in full when `full` (the chain is written in full) or
    /// when the field has no root yet, else only the /16s the prefixes `changed` cover.
    /// Returns the blocks to write (a root slot last).
    pub fn update(
        &mut self,
        size: u32,
        g: u32,
        (ch, dst): (u32, bool),
        img: &BTreeMap<PKey, u32>,
        full: bool,
        changed: &[PKey],
    ) -> V4Writes {
        let mut out = Vec::new();
        if self.free.is_none() {
            // What the half holds is not known: every field reads its trie until it is
            // built here (the root slots first, all 0).
            let (first, n) = v4_half(size, g);
            let roots = V4_ROOTS.min(n / V4_ROOT_BLOCKS);
            let rest = first + roots * V4_ROOT_BLOCKS..first + n;
            self.free = Some((
                (0..roots)
                    .rev()
                    .map(|r| first + r * V4_ROOT_BLOCKS)
                    .collect(),
                rest.rev().collect(),
            ));
            self.slots = [0; V4_BLOCK];
            out.push((g & 1, self.slots));
        }
        let key = (ch, dst);
        if full {
            self.fallen.remove(&key);
        } else if self.fallen.contains(&key) {
            return out;
        }
        let v4_changed: Vec<&PKey> = changed.iter().filter(|k| k.0 == 4).collect();
        let incremental = !full && self.fields.contains_key(&key);
        if incremental && v4_changed.is_empty() {
            return out;
        }
        if incremental {
            // The /16s the changed prefixes cover; past a few thousand, in full.
            let mut slots = BTreeSet::new();
            for k in &v4_changed {
                let len = k.2.min(16);
                let first = slot_of(v4(k)) & !((1usize << (16 - len)) - 1);
                slots.extend(first..first + (1 << (16 - len)));
                if slots.len() > 4096 {
                    break;
                }
            }
            let mark = out.len();
            if slots.len() <= 4096 && self.repaint(key, img, &slots, &mut out) {
                return out;
            }
            out.truncate(mark);
        }
        self.release(key);
        let has_v4 = img.keys().any(|k| k.0 == 4);
        let mark = out.len();
        if has_v4 && !self.build(key, img, &mut out) {
            self.fallen.insert(key);
            out.truncate(mark);
        }
        let root = self.fields.get(&key).map_or(0, |f| f.root);
        self.set_slot(g, key, root, &mut out);
        out
    }

    /// Frees field `key`'s root and blocks.
    fn release(&mut self, key: (u32, bool)) {
        if let Some(f) = self.fields.remove(&key) {
            let (roots, blocks) = self.free.as_mut().expect("read before use");
            roots.push(f.root);
            blocks.extend(f.blocks.into_values().flatten());
        }
    }

    /// The field's root slot (the generation's slots, block `g`, written whole).
    fn set_slot(&mut self, g: u32, (ch, dst): (u32, bool), root: u32, out: &mut V4Writes) {
        self.slots[v4root_slot(ch, dst)] = root;
        out.push((g & 1, self.slots));
    }

    /// Builds field `key` in full (a root and its blocks) from `img`; false when there is
    /// no room (nothing of it is kept).
    fn build(&mut self, key: (u32, bool), img: &BTreeMap<PKey, u32>, out: &mut V4Writes) -> bool {
        let (roots, free) = self.free.as_mut().expect("read before use");
        let Some(root) = roots.pop() else {
            return false;
        };
        let mut top = vec![0u32; 65536];
        let mut short: Vec<V4Prefix> = Vec::new();
        let mut inner: BTreeMap<usize, Vec<V4Prefix>> = BTreeMap::new();
        for (k, id) in img.iter().filter(|(k, _)| k.0 == 4) {
            let p = (v4(k), k.2, v4_entry(Some(*id)));
            if k.2 <= 16 {
                short.push(p);
            } else {
                inner.entry(slot_of(p.0)).or_default().push(p);
            }
        }
        short.sort_by_key(|p| p.1);
        for (a, len, v) in short {
            let span = 1usize << (16 - len);
            let first = slot_of(a) & !(span - 1);
            top[first..first + span].fill(v);
        }
        let mut field = Field {
            root,
            top,
            blocks: HashMap::new(),
        };
        for (s, ps) in inner {
            if !place_slot(&mut field, free, s, ps, out) {
                roots.push(root);
                free.extend(field.blocks.into_values().flatten());
                return false;
            }
        }
        write_top(&field, (0..V4_ROOT_BLOCKS as usize).collect(), out);
        self.fields.insert(key, field);
        true
    }

    /// Builds the /16s `slots` of field `key` again from `img`; false when there is no
    /// room (the caller builds the field in full, or lets it read its trie).
    fn repaint(
        &mut self,
        key: (u32, bool),
        img: &BTreeMap<PKey, u32>,
        slots: &BTreeSet<usize>,
        out: &mut V4Writes,
    ) -> bool {
        let (_, free) = self.free.as_mut().expect("read before use");
        let field = self.fields.get_mut(&key).expect("checked by the caller");
        let mut rows = BTreeSet::new();
        for &s in slots {
            if let Some(b) = field.blocks.remove(&s) {
                free.extend(b);
            }
            let base = (0..=16u8).rev().find_map(|len| {
                let a = if len == 0 {
                    0
                } else {
                    ((s as u32) << 16) & (u32::MAX << (32 - len))
                };
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&a.to_be_bytes());
                img.get(&(4, addr, len))
            });
            field.top[s] = v4_entry(base.copied());
            let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
            lo[..2].copy_from_slice(&(s as u16).to_be_bytes());
            hi[..4].copy_from_slice(&(((s as u32) << 16) | 0xffff).to_be_bytes());
            let ps: Vec<V4Prefix> = img
                .range((4, lo, 17)..=(4, hi, 32))
                .filter(|(k, _)| k.2 > 16)
                .map(|(k, id)| (v4(k), k.2, v4_entry(Some(*id))))
                .collect();
            if !place_slot(field, free, s, ps, out) {
                return false;
            }
            rows.insert(s / V4_BLOCK);
        }
        write_top(field, rows.into_iter().collect(), out);
        true
    }
}

/// Builds /16 `s` of `field` from its prefixes longer than 16 bits (none: the entry keeps
/// its value), taking blocks from `free`; false when there are too few.
fn place_slot(
    field: &mut Field,
    free: &mut Vec<u32>,
    s: usize,
    mut ps: Vec<V4Prefix>,
    out: &mut V4Writes,
) -> bool {
    if ps.is_empty() {
        return true;
    }
    ps.sort_by_key(|p| p.1);
    let mut node = Node::filled(field.top[s]);
    for (a, len, v) in ps {
        node.insert(a, len, v, 0);
    }
    if node.blocks() > free.len() {
        return false;
    }
    let mut taken = Vec::new();
    field.top[s] = node.place(free, &mut taken, out);
    field.blocks.insert(s, taken);
    true
}

/// Queues the root's blocks `rows`.
fn write_top(field: &Field, rows: Vec<usize>, out: &mut V4Writes) {
    for r in rows {
        let mut b = [0u32; V4_BLOCK];
        b.copy_from_slice(&field.top[r * V4_BLOCK..(r + 1) * V4_BLOCK]);
        out.push((field.root + r as u32, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use statewall_common::firewall::V4_LEVELS;

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
        for i in 0..V4_LEVELS {
            if e & V4_CHILD == 0 {
                break;
            }
            e = map[&(e & !V4_CHILD)][(a >> (16 - V4_STRIDE * (i + 1))) as usize & (V4_BLOCK - 1)];
        }
        Some((e != 0).then(|| e - 1))
    }

    fn key(a: u32, len: u8) -> PKey {
        let a = if len == 0 {
            0
        } else {
            a & (u32::MAX << (32 - len))
        };
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&a.to_be_bytes());
        (4, addr, len)
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
        for (b, v) in half.update(size, g, (3, true), &img, true, &[]) {
            map.insert(b, v);
        }
        for step in 0..40 {
            let mut changed = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                let k = draw(&mut rng);
                if rng.random_bool(0.4) {
                    img.remove(&k);
                } else {
                    img.insert(k, rng.random_range(0..5000));
                }
                changed.push(k);
            }
            for (b, v) in half.update(size, g, (3, true), &img, false, &changed) {
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
        let w = small.update(
            2 + 2 * (V4_ROOTS * V4_ROOT_BLOCKS + 3),
            g,
            (3, true),
            &img,
            true,
            &[],
        );
        assert!(w.iter().all(|(b, _)| *b == g), "only root slots: {w:?}");
        assert_eq!(w.last().unwrap().1[v4root_slot(3, true)], 0);
        assert_eq!(small.blocks_in_use(), 0);
    }
}
