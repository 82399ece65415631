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

/// Masks an address to a prefix length.
pub fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32) as u32)
            };
            IpAddr::from((u32::from(v) & m).to_be_bytes())
        }
        IpAddr::V6(v) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128) as u32)
            };
            IpAddr::from((u128::from(v) & m).to_be_bytes())
        }
    }
}

fn contains(net: (IpAddr, u8), inner: (IpAddr, u8)) -> bool {
    net.0.is_ipv4() == inner.0.is_ipv4() && net.1 <= inner.1 && mask(inner.0, net.1) == net.0
}

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

struct Builder {
    ids: HashMap<Vec<u64>, u32>,
    bitsets: Vec<Bitset>,
}

impl Builder {
    fn id(&mut self, rules: impl Iterator<Item = usize>) -> u32 {
        let mut b = Bitset::default();
        for r in rules {
            b.set(r);
        }
        let key = b.words.to_vec();
        if let Some(&i) = self.ids.get(&key) {
            return i;
        }
        let i = self.bitsets.len() as u32;
        self.bitsets.push(b);
        self.ids.insert(key, i);
        i
    }
}

/// The distinct sets of a port field: for each port 0..=65535, the rules it matches
/// (port 0 stands for packets without ports: only rules without a port constraint).
fn port_ids(
    b: &mut Builder,
    rules: &[Rule],
    get: impl Fn(&Rule) -> Option<(u16, u16)>,
) -> Vec<u16> {
    let mut cuts: BTreeSet<u32> = BTreeSet::new();
    cuts.insert(0);
    cuts.insert(1);
    for r in rules {
        if let Some((lo, hi)) = get(r) {
            cuts.insert(lo as u32);
            cuts.insert(hi as u32 + 1);
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().filter(|c| *c <= 65535).collect();
    let mut out = vec![0u16; 65536];
    for (i, &start) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied().unwrap_or(65536);
        let id = b.id(rules.iter().enumerate().filter_map(|(ri, r)| match get(r) {
            None => Some(ri),
            Some((lo, hi)) if start >= lo as u32 && start <= hi as u32 => Some(ri),
            _ => None,
        }));
        for p in start..end {
            out[p as usize] = id as u16;
        }
    }
    out
}

fn prefix_ids(
    b: &mut Builder,
    rules: &[Rule],
    get: impl Fn(&Rule) -> Option<(IpAddr, u8)>,
) -> Vec<PrefixEntry> {
    let mut nets: BTreeSet<(IpAddr, u8)> = rules.iter().filter_map(&get).collect();
    nets.insert(("0.0.0.0".parse().unwrap(), 0));
    nets.insert(("::".parse().unwrap(), 0));
    nets.into_iter()
        .map(|n| {
            let id = b.id(rules.iter().enumerate().filter_map(|(ri, r)| match get(r) {
                None => Some(ri),
                Some(rn) if contains(rn, n) => Some(ri),
                _ => None,
            }));
            ((family(&n.0), addr16(&n.0), n.1), id)
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
        ids: HashMap::new(),
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
            for (pr, slot) in small.iter_mut().take(256).enumerate() {
                *slot = b.id(rules.iter().enumerate().filter_map(|(ri, r)| {
                    (r.proto.is_none() || r.proto == Some(pr as u8)).then_some(ri)
                })) as u16;
            }
        }
        if used & field::FLAGS != 0 {
            for f in 0..257usize {
                let flags = (f < 256).then_some(f as u8);
                small[flags_index(flags) as usize] =
                    b.id(rules
                        .iter()
                        .enumerate()
                        .filter_map(|(ri, r)| match (r.tcpflags, flags) {
                            (None, _) => Some(ri),
                            (Some((m, v)), Some(f)) if f & m == v => Some(ri),
                            _ => None,
                        })) as u16;
            }
        }
        if used & field::CT != 0 {
            for st in 0..4u8 {
                small[statewall_common::firewall::ct_index(st) as usize] = b.id(rules
                    .iter()
                    .enumerate()
                    .filter_map(|(ri, r)| (r.ct.is_none() || r.ct == Some(st)).then_some(ri)))
                    as u16;
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

/// What the user side remembers of a generation it wrote (to clear it next time).
#[derive(Clone, Default)]
pub struct Written {
    /// Prefix keys written (src, dst).
    pub prefixes: Vec<(bool, Key<[u8; 20]>)>,
    /// Chains written.
    pub chains: BTreeSet<u32>,
}

/// Writes `c` into the inactive generation (bitset ids from `half * generation`) and
/// switches to it with one array update. `old` is what was written into that generation
/// before (cleared first). Returns the new generation and what was written.
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
    let base = g * half;
    {
        let mut a: Array<&mut MapData, Bitset> = Array::try_from(
            maps.map_mut(MAP_FW_BITSETS)
                .map_err(|e| merr(MAP_FW_BITSETS, e))?,
        )
        .map_err(|e| merr(MAP_FW_BITSETS, e))?;
        for (i, bs) in c.bitsets.iter().enumerate() {
            a.set(base + i as u32, *bs, 0)
                .map_err(|e| merr(MAP_FW_BITSETS, e))?;
        }
    }
    let mut w = Written::default();
    for (dst, name, table) in [(false, MAP_FW_SRC, &c.src), (true, MAP_FW_DST, &c.dst)] {
        let mut t: LpmTrie<&mut MapData, [u8; 20], u32> =
            LpmTrie::try_from(maps.map_mut(name).map_err(|e| merr(name, e))?)
                .map_err(|e| merr(name, e))?;
        if let Some(o) = old {
            for (d, k) in &o.prefixes {
                if *d == dst {
                    let _ = t.remove(k);
                }
            }
        }
        for (&ch, entries) in table {
            for &((fam, addr, len), id) in entries {
                let k = Key::new(32 + len as u32, lpm_data(g, ch, fam, &addr));
                t.insert(&k, base + id, 0).map_err(|e| merr(name, e))?;
                w.prefixes.push((dst, k));
            }
        }
    }
    for (name, table) in [(MAP_FW_SPORT, &c.sport), (MAP_FW_DPORT, &c.dport)] {
        let mut a: Array<&mut MapData, u16> =
            Array::try_from(maps.map_mut(name).map_err(|e| merr(name, e))?)
                .map_err(|e| merr(name, e))?;
        for (&ch, ids) in table {
            for (p, id) in ids.iter().enumerate() {
                let slot = port_slot(g, ch, p as u16);
                let v = (base + *id as u32) as u16;
                if a.get(&slot, 0).ok() != Some(v) {
                    a.set(slot, v, 0).map_err(|e| merr(name, e))?;
                }
            }
        }
    }
    {
        let mut a: Array<&mut MapData, u16> = Array::try_from(
            maps.map_mut(MAP_FW_SMALL)
                .map_err(|e| merr(MAP_FW_SMALL, e))?,
        )
        .map_err(|e| merr(MAP_FW_SMALL, e))?;
        for (&ch, ids) in &c.small {
            for (i, id) in ids.iter().enumerate() {
                a.set(small_slot(g, ch, i as u32), (base + *id as u32) as u16, 0)
                    .map_err(|e| merr(MAP_FW_SMALL, e))?;
            }
        }
    }
    {
        let mut a: Array<&mut MapData, u8> = Array::try_from(
            maps.map_mut(MAP_FW_ACTIONS)
                .map_err(|e| merr(MAP_FW_ACTIONS, e))?,
        )
        .map_err(|e| merr(MAP_FW_ACTIONS, e))?;
        for (&ch, acts) in &c.actions {
            for (r, act) in acts.iter().enumerate() {
                a.set(rule_slot(g, ch, r as u32), *act, 0)
                    .map_err(|e| merr(MAP_FW_ACTIONS, e))?;
            }
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
