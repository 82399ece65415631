//! User side of the firewall classifier: rules compiled into the per-field lookup tables
//! and bitsets of `statewall_common::firewall`, written into the inactive generation and switched
//! in with one array update; and [`RefTables`], the same tables as plain maps, for the
//! reference classifier in tests.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use aya::maps::{lpm_trie::Key, Array, LpmTrie, MapData};
use statewall_common::firewall::{
    field, flags_index, port_slot, rule_slot, small_slot, Bitset, ChainConf, FwTables, LpmKey,
    ACT_ACCEPT, MAP_FW_ACTIONS, MAP_FW_BITSETS, MAP_FW_CHAINS, MAP_FW_CTL, MAP_FW_DPORT,
    MAP_FW_DST, MAP_FW_SMALL, MAP_FW_SPORT, MAP_FW_SRC, MAX_CHAINS, MAX_RULES,
};

/// One rule, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Source prefix (address masked to its length), `None` = any.
    pub src: Option<(IpAddr, u8)>,
    /// Destination prefix.
    pub dst: Option<(IpAddr, u8)>,
    /// L4 protocol number, `None` = any.
    pub proto: Option<u8>,
    /// Source port range (inclusive, from 1).
    pub sport: Option<(u16, u16)>,
    /// Destination port range.
    pub dport: Option<(u16, u16)>,
    /// TCP flags: (mask, value); only TCP packets match.
    pub tcpflags: Option<(u8, u8)>,
    /// Connection state (`statewall_common::ct::NEW` ...), `None` = any.
    pub ct: Option<u8>,
    /// `statewall_common::firewall::ACT_*`.
    pub action: u8,
}

/// A chain's rules and default action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Rules in order (first match wins).
    pub rules: Vec<Rule>,
    /// Default action.
    pub default_action: u8,
    /// Packets of known connections are accepted before the rules.
    pub accept_established: bool,
}

pub use crate::types::mask;

fn family(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        4
    } else {
        6
    }
}

fn addr16(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            b
        }
        IpAddr::V6(v) => v.octets(),
    }
}

/// One prefix-trie entry: (family, prefix address, length) -> bitset id.
pub type PrefixEntry = ((u8, [u8; 16], u8), u32);

/// Compiled tables of one generation (ids relative to the generation's first id).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// Distinct bitsets; ids index this.
    pub bitsets: Vec<Bitset>,
    /// Per chain: configuration (with ids relative).
    pub chains: BTreeMap<u32, ChainConf>,
    /// Per chain: source prefix entries.
    pub src: BTreeMap<u32, Vec<PrefixEntry>>,
    /// Per chain: destination prefix entries.
    pub dst: BTreeMap<u32, Vec<PrefixEntry>>,
    /// Per chain: 65536 source-port ids.
    pub sport: BTreeMap<u32, Vec<u16>>,
    /// Per chain: 65536 destination-port ids.
    pub dport: BTreeMap<u32, Vec<u16>>,
    /// Per chain: protocol ids (256) then flag ids (257).
    pub small: BTreeMap<u32, Vec<u16>>,
    /// Per chain: rule actions.
    pub actions: BTreeMap<u32, Vec<u8>>,
}

/// A hasher for bitsets (a multiply-rotate over their words: `HashMap`'s default hashes
/// each 1.3 kB set byte by byte, the bulk of a large compile).
#[derive(Default)]
struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_ne_bytes(c.try_into().unwrap_or_default()));
        }
        for b in chunks.remainder() {
            self.write_u64(*b as u64);
        }
    }
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, w: usize) {
        self.write_u64(w as u64);
    }
}

type WordMap = HashMap<Box<[u64]>, u32, std::hash::BuildHasherDefault<WordHasher>>;

struct Builder {
    ids: WordMap,
    bitsets: Vec<Bitset>,
}

/// Takes rule `r` out of a set.
fn unset(b: &mut Bitset, r: usize) {
    b.words[r / 64] &= !(1u64 << (r % 64));
    if b.words[r / 64] == 0 {
        b.summary[r / 64 / 64] &= !(1u64 << ((r / 64) % 64));
    }
}

/// The set of `rules` whose field `get` is unconstrained.
fn unconstrained<T>(rules: &[Rule], get: impl Fn(&Rule) -> Option<T>) -> Bitset {
    let mut b = Bitset::default();
    for (ri, r) in rules.iter().enumerate() {
        if get(r).is_none() {
            b.set(ri);
        }
    }
    b
}

impl Builder {
    /// The id of set `b`: an equal set's, or a new one.
    fn intern(&mut self, b: &Bitset) -> u32 {
        if let Some(&i) = self.ids.get(&b.words[..]) {
            return i;
        }
        let i = self.bitsets.len() as u32;
        self.bitsets.push(*b);
        self.ids.insert(b.words.to_vec().into_boxed_slice(), i);
        i
    }

    fn id(&mut self, rules: impl Iterator<Item = usize>) -> u32 {
        let mut b = Bitset::default();
        for r in rules {
            b.set(r);
        }
        self.intern(&b)
    }
}

/// The distinct sets of a port field: for each port 0..=65535, the rules it matches
/// (port 0 stands for packets without ports: only rules without a port constraint). One
/// sweep over the ranges' ends: the set of each stretch between two ends is the previous
/// one with the rules starting there added and those ending before it taken out.
fn port_ids(
    b: &mut Builder,
    rules: &[Rule],
    get: impl Fn(&Rule) -> Option<(u16, u16)>,
) -> Vec<u16> {
    let mut starts: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut ends: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (ri, r) in rules.iter().enumerate() {
        if let Some((lo, hi)) = get(r) {
            starts.entry(lo as u32).or_default().push(ri);
            ends.entry(hi as u32 + 1).or_default().push(ri);
        }
    }
    let mut cuts: BTreeSet<u32> = starts.keys().chain(ends.keys()).copied().collect();
    cuts.insert(0);
    cuts.insert(1);
    let cuts: Vec<u32> = cuts.into_iter().filter(|c| *c <= 65535).collect();
    let mut cur = unconstrained(rules, &get);
    let mut out = vec![0u16; 65536];
    for (i, &start) in cuts.iter().enumerate() {
        for &ri in ends.get(&start).into_iter().flatten() {
            unset(&mut cur, ri);
        }
        for &ri in starts.get(&start).into_iter().flatten() {
            cur.set(ri);
        }
        let id = b.intern(&cur);
        let end = cuts.get(i + 1).copied().unwrap_or(65536);
        out[start as usize..end as usize].fill(id as u16);
    }
    out
}

/// The distinct sets of a prefix field: for each prefix some rule names (and the default
/// routes), the rules whose prefix contains it, found by looking up each of its shorter
/// masks.
fn prefix_ids(
    b: &mut Builder,
    rules: &[Rule],
    get: impl Fn(&Rule) -> Option<(IpAddr, u8)>,
) -> Vec<PrefixEntry> {
    let mut by_net: HashMap<(IpAddr, u8), Vec<usize>> = HashMap::new();
    for (ri, r) in rules.iter().enumerate() {
        if let Some(n) = get(r) {
            by_net.entry(n).or_default().push(ri);
        }
    }
    let mut nets: BTreeSet<(IpAddr, u8)> = by_net.keys().copied().collect();
    nets.insert(("0.0.0.0".parse().unwrap(), 0));
    nets.insert(("::".parse().unwrap(), 0));
    let base = unconstrained(rules, &get);
    nets.into_iter()
        .map(|n| {
            let mut cur = base;
            for len in 0..=n.1 {
                for &ri in by_net.get(&(mask(n.0, len), len)).into_iter().flatten() {
                    cur.set(ri);
                }
            }
            ((family(&n.0), addr16(&n.0), n.1), b.intern(&cur))
        })
        .collect()
}

/// The sets of a field with few values (`values` of them): value `v`'s is the rules
/// without a constraint and those whose constraint `accepts` it.
fn small_ids<C: Copy>(
    b: &mut Builder,
    rules: &[Rule],
    values: usize,
    get: impl Fn(&Rule) -> Option<C>,
    accepts: impl Fn(C, usize) -> bool,
) -> Vec<u32> {
    let base = unconstrained(rules, &get);
    let constrained: Vec<(usize, C)> = rules
        .iter()
        .enumerate()
        .filter_map(|(ri, r)| get(r).map(|c| (ri, c)))
        .collect();
    (0..values)
        .map(|v| {
            let mut cur = base;
            for &(ri, c) in &constrained {
                if accepts(c, v) {
                    cur.set(ri);
                }
            }
            b.intern(&cur)
        })
        .collect()
}

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
    /// More distinct rule sets than a 16-bit bitset id can name.
    #[error("{sets} distinct rule sets: at most 65535")]
    Sets {
        /// Rule sets needed.
        sets: usize,
    },
    /// More distinct rule sets than a generation of the bitset table holds.
    #[error("{sets} distinct rule sets: the bitset table holds {half} per generation ([firewall] bitsets_max)")]
    NoRoom {
        /// Rule sets needed.
        sets: usize,
        /// Rule sets a generation holds.
        half: u32,
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

/// Compiles chains (by chain number) into one generation's tables.
pub fn compile(chains: &BTreeMap<u32, Chain>) -> Result<Compiled, RulesError> {
    let mut b = Builder {
        ids: WordMap::default(),
        bitsets: Vec::new(),
    };
    let mut c = Compiled::default();
    for (&ch, chain) in chains {
        if ch >= MAX_CHAINS {
            return Err(RulesError::Chain {
                chain: ch,
                max: MAX_CHAINS,
            });
        }
        let rules = &chain.rules;
        if rules.len() > MAX_RULES {
            return Err(RulesError::Rules {
                rules: rules.len(),
                max: MAX_RULES,
            });
        }
        let mut used = 0u8;
        for r in rules {
            used |= if r.src.is_some() { field::SRC } else { 0 }
                | if r.dst.is_some() { field::DST } else { 0 }
                | if r.proto.is_some() { field::PROTO } else { 0 }
                | if r.sport.is_some() { field::SPORT } else { 0 }
                | if r.dport.is_some() { field::DPORT } else { 0 }
                | if r.tcpflags.is_some() {
                    field::FLAGS
                } else {
                    0
                }
                | if r.ct.is_some() { field::CT } else { 0 };
        }
        let all = b.id(0..rules.len());
        if used & field::SRC != 0 {
            c.src.insert(ch, prefix_ids(&mut b, rules, |r| r.src));
        }
        if used & field::DST != 0 {
            c.dst.insert(ch, prefix_ids(&mut b, rules, |r| r.dst));
        }
        if used & field::SPORT != 0 {
            c.sport.insert(ch, port_ids(&mut b, rules, |r| r.sport));
        }
        if used & field::DPORT != 0 {
            c.dport.insert(ch, port_ids(&mut b, rules, |r| r.dport));
        }
        let mut small = vec![0u16; statewall_common::firewall::SMALL_PER_CHAIN as usize];
        if used & field::PROTO != 0 {
            let ids = small_ids(&mut b, rules, 256, |r| r.proto, |p, v| p as usize == v);
            for (slot, id) in small.iter_mut().zip(ids) {
                *slot = id as u16;
            }
        }
        if used & field::FLAGS != 0 {
            // Values 0..=255 are TCP flags, 256 a packet that is not TCP (no flags rule).
            let ids = small_ids(
                &mut b,
                rules,
                257,
                |r| r.tcpflags,
                |(m, v), f| f < 256 && f as u8 & m == v,
            );
            for (f, id) in ids.into_iter().enumerate() {
                small[flags_index((f < 256).then_some(f as u8)) as usize] = id as u16;
            }
        }
        if used & field::CT != 0 {
            let ids = small_ids(&mut b, rules, 4, |r| r.ct, |st, v| st as usize == v);
            for (st, id) in ids.into_iter().enumerate() {
                small[statewall_common::firewall::ct_index(st as u8) as usize] = id as u16;
            }
        }
        c.small.insert(ch, small);
        c.actions
            .insert(ch, rules.iter().map(|r| r.action).collect());
        c.chains.insert(
            ch,
            ChainConf {
                enabled: 1,
                default_action: chain.default_action,
                used,
                accept_established: chain.accept_established as u8,
                rules: rules.len() as u32,
                all,
                track: 0,
                _pad2: [0; 3],
            },
        );
    }
    // Both chains of an instance (2k, 2k+1) track when either needs the state.
    let needs: BTreeSet<u32> = c
        .chains
        .iter()
        .filter(|(_, cc)| cc.used & field::CT != 0 || cc.accept_established != 0)
        .map(|(ch, _)| ch / 2)
        .collect();
    for (ch, cc) in c.chains.iter_mut() {
        cc.track = needs.contains(&(ch / 2)) as u8;
    }
    if b.bitsets.len() > u16::MAX as usize {
        return Err(RulesError::Sets {
            sets: b.bitsets.len(),
        });
    }
    c.bitsets = b.bitsets;
    Ok(c)
}

fn lpm_data(generation: u32, chain: u32, fam: u8, addr: &[u8; 16]) -> [u8; 20] {
    let mut d = [0u8; 20];
    d[0] = generation as u8;
    d[1] = chain as u8;
    d[2] = fam;
    d[4..].copy_from_slice(addr);
    d
}

fn merr(name: &str, e: impl std::fmt::Display) -> RulesError {
    RulesError::Map {
        map: name.to_string(),
        msg: e.to_string(),
    }
}

/// What the user side remembers of a generation it wrote: the next write into that
/// generation changes only what differs.
#[derive(Clone, Default)]
pub struct Written {
    /// The generation.
    pub generation: u32,
    /// Prefix-trie entries written ((destination, prefix length, key data) -> value).
    pub prefixes: HashMap<(bool, u32, [u8; 20]), u32>,
    /// Chains written.
    pub chains: BTreeSet<u32>,
    /// The tables written.
    pub compiled: Option<Compiled>,
}

/// The entries of `new` (per chain, by index) that differ from `old`'s, or all of them.
fn changed<'a, T: PartialEq + Copy>(
    new: &'a BTreeMap<u32, Vec<T>>,
    old: Option<&'a BTreeMap<u32, Vec<T>>>,
) -> impl Iterator<Item = (u32, usize, T)> + 'a {
    new.iter().flat_map(move |(ch, v)| {
        let was = old.and_then(|o| o.get(ch));
        v.iter()
            .enumerate()
            .filter(move |(i, x)| was.and_then(|w| w.get(*i)) != Some(*x))
            .map(move |(i, x)| (*ch, i, *x))
    })
}

/// Writes `c` into the inactive generation (bitset ids from `half * generation`) and
/// switches to it with one array update. `old` is what was written into that generation
/// before: only what differs from it is written. Without it (or with another generation's),
/// everything is written, and prefix entries of that generation that `c` does not have are
/// found in the tries and removed. Returns the new generation and what it now holds.
pub fn write_tables(
    maps: &mut dyn crate::engine::MapAccess,
    c: &Compiled,
    half: u32,
    old: Option<&Written>,
) -> Result<(u32, Written), RulesError> {
    let cur = {
        let a: Array<&MapData, u32> =
            Array::try_from(&*maps.map_mut(MAP_FW_CTL).map_err(|e| merr(MAP_FW_CTL, e))?)
                .map_err(|e| merr(MAP_FW_CTL, e))?;
        a.get(&0, 0).map_err(|e| merr(MAP_FW_CTL, e))? & 1
    };
    let g = cur ^ 1;
    if c.bitsets.len() as u32 > half {
        return Err(RulesError::NoRoom {
            sets: c.bitsets.len(),
            half,
        });
    }
    let old = old.filter(|o| o.generation == g);
    let was = old.and_then(|o| o.compiled.as_ref());
    let base = g * half;
    {
        let mut a: Array<&mut MapData, Bitset> = Array::try_from(
            maps.map_mut(MAP_FW_BITSETS)
                .map_err(|e| merr(MAP_FW_BITSETS, e))?,
        )
        .map_err(|e| merr(MAP_FW_BITSETS, e))?;
        for (i, bs) in c.bitsets.iter().enumerate() {
            if was.and_then(|w| w.bitsets.get(i)) != Some(bs) {
                a.set(base + i as u32, *bs, 0)
                    .map_err(|e| merr(MAP_FW_BITSETS, e))?;
            }
        }
    }
    let mut w = Written {
        generation: g,
        ..Written::default()
    };
    for (dst, name, table) in [(false, MAP_FW_SRC, &c.src), (true, MAP_FW_DST, &c.dst)] {
        let mut t: LpmTrie<&mut MapData, [u8; 20], u32> =
            LpmTrie::try_from(maps.map_mut(name).map_err(|e| merr(name, e))?)
                .map_err(|e| merr(name, e))?;
        for (&ch, entries) in table {
            for &((fam, addr, len), id) in entries {
                w.prefixes.insert(
                    (dst, 32 + len as u32, lpm_data(g, ch, fam, &addr)),
                    base + id,
                );
            }
        }
        let stale: Vec<(u32, [u8; 20])> = match old {
            Some(o) => o
                .prefixes
                .keys()
                .filter(|k| k.0 == dst && !w.prefixes.contains_key(k))
                .map(|k| (k.1, k.2))
                .collect(),
            None => t
                .keys()
                .filter_map(|k| k.ok())
                .map(|k| (k.prefix_len(), k.data()))
                .filter(|(len, data)| {
                    data[0] == g as u8 && !w.prefixes.contains_key(&(dst, *len, *data))
                })
                .collect(),
        };
        for (len, data) in stale {
            let _ = t.remove(&Key::new(len, data));
        }
        for (k, v) in w.prefixes.iter().filter(|(k, _)| k.0 == dst) {
            if old.and_then(|o| o.prefixes.get(k)) != Some(v) {
                t.insert(&Key::new(k.1, k.2), *v, 0)
                    .map_err(|e| merr(name, e))?;
            }
        }
    }
    for (name, table, before) in [
        (MAP_FW_SPORT, &c.sport, was.map(|w| &w.sport)),
        (MAP_FW_DPORT, &c.dport, was.map(|w| &w.dport)),
    ] {
        let mut a: Array<&mut MapData, u16> =
            Array::try_from(maps.map_mut(name).map_err(|e| merr(name, e))?)
                .map_err(|e| merr(name, e))?;
        for (ch, p, id) in changed(table, before) {
            a.set(port_slot(g, ch, p as u16), (base + id as u32) as u16, 0)
                .map_err(|e| merr(name, e))?;
        }
    }
    {
        let mut a: Array<&mut MapData, u16> = Array::try_from(
            maps.map_mut(MAP_FW_SMALL)
                .map_err(|e| merr(MAP_FW_SMALL, e))?,
        )
        .map_err(|e| merr(MAP_FW_SMALL, e))?;
        for (ch, i, id) in changed(&c.small, was.map(|w| &w.small)) {
            a.set(small_slot(g, ch, i as u32), (base + id as u32) as u16, 0)
                .map_err(|e| merr(MAP_FW_SMALL, e))?;
        }
    }
    {
        let mut a: Array<&mut MapData, u8> = Array::try_from(
            maps.map_mut(MAP_FW_ACTIONS)
                .map_err(|e| merr(MAP_FW_ACTIONS, e))?,
        )
        .map_err(|e| merr(MAP_FW_ACTIONS, e))?;
        for (ch, r, act) in changed(&c.actions, was.map(|w| &w.actions)) {
            a.set(rule_slot(g, ch, r as u32), act, 0)
                .map_err(|e| merr(MAP_FW_ACTIONS, e))?;
        }
    }
    {
        let mut a: Array<&mut MapData, ChainConf> = Array::try_from(
            maps.map_mut(MAP_FW_CHAINS)
                .map_err(|e| merr(MAP_FW_CHAINS, e))?,
        )
        .map_err(|e| merr(MAP_FW_CHAINS, e))?;
        for ch in 0..MAX_CHAINS {
            let mut conf = c.chains.get(&ch).copied().unwrap_or_default();
            conf.all += base;
            a.set(g * MAX_CHAINS + ch, conf, 0)
                .map_err(|e| merr(MAP_FW_CHAINS, e))?;
            if conf.enabled != 0 {
                w.chains.insert(ch);
            }
        }
    }
    let mut a: Array<&mut MapData, u32> =
        Array::try_from(maps.map_mut(MAP_FW_CTL).map_err(|e| merr(MAP_FW_CTL, e))?)
            .map_err(|e| merr(MAP_FW_CTL, e))?;
    a.set(0, g, 0).map_err(|e| merr(MAP_FW_CTL, e))?;
    w.compiled = Some(c.clone());
    Ok((g, w))
}

/// The reference's tables: one generation, as plain maps.
#[derive(Clone, Debug, Default)]
pub struct RefTables {
    /// Compiled tables.
    pub c: Compiled,
}

impl FwTables for RefTables {
    fn generation(&self) -> u32 {
        0
    }
    fn chain(&self, _generation: u32, chain: u32) -> ChainConf {
        self.c.chains.get(&chain).copied().unwrap_or_default()
    }
    fn prefix(&self, dst: bool, k: &LpmKey) -> Option<u32> {
        let t = if dst { &self.c.dst } else { &self.c.src };
        let bits = k.prefixlen - 32;
        let a = k.addr;
        t.get(&(k.chain as u32))?
            .iter()
            .filter(|((fam, net, len), _)| {
                *fam == k.family && (*len as u32) <= bits && {
                    let ip = if *fam == 4 {
                        IpAddr::from([a[0], a[1], a[2], a[3]])
                    } else {
                        IpAddr::from(a)
                    };
                    addr16(&mask(ip, *len)) == *net
                }
            })
            .max_by_key(|((_, _, len), _)| *len)
            .map(|(_, id)| *id)
    }
    fn port(&self, dst: bool, slot: u32) -> u32 {
        let chain = (slot / 65536) % MAX_CHAINS;
        let t = if dst { &self.c.dport } else { &self.c.sport };
        t.get(&chain)
            .map(|v| v[(slot % 65536) as usize] as u32)
            .unwrap_or(0)
    }
    fn small(&self, slot: u32) -> u32 {
        let per = statewall_common::firewall::SMALL_PER_CHAIN;
        let chain = (slot / per) % MAX_CHAINS;
        self.c
            .small
            .get(&chain)
            .map(|v| v[(slot % per) as usize] as u32)
            .unwrap_or(0)
    }
    fn word(&self, id: u32, summary: bool, w: usize) -> u64 {
        match self.c.bitsets.get(id as usize) {
            Some(b) if summary => b.summary.get(w).copied().unwrap_or(0),
            Some(b) => b.words.get(w).copied().unwrap_or(0),
            None => 0,
        }
    }
    fn action(&self, slot: u32) -> u8 {
        let chain = (slot / MAX_RULES as u32) % MAX_CHAINS;
        self.c
            .actions
            .get(&chain)
            .and_then(|v| v.get((slot % MAX_RULES as u32) as usize).copied())
            .unwrap_or(ACT_ACCEPT)
    }
}
