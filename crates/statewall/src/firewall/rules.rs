//! User side of the firewall classifier: one chain's per-field lookup tables and bitsets
//! (`statewall_common::firewall`) built from scratch ([`build`]) from its rules
//! (`super::rule`, re-exported here). Keeping them,
//! changing them rule by rule and writing them into the kernel is [`super::tables`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use statewall_common::firewall::{field, Bitset, ChainConf, MAX_RULES};

use super::sets::{ChainKernel, FastMap, Pool};
pub use super::sets::{PKey, RulesError};

pub use super::rule::*;

/// The set of the positions of `rules` whose field `get` is unconstrained.
pub fn unconstrained<T>(rules: &[Rule], pos: &[u32], get: impl Fn(&Rule) -> Option<T>) -> Bitset {
    let mut b = Bitset::default();
    for (ri, r) in rules.iter().enumerate() {
        if get(r).is_none() {
            b.set(pos[ri] as usize);
        }
    }
    b
}

/// The rules a field's value sets start from: those without a constraint on it, or none
/// when the field has a wild set (they are there instead).
fn base<T>(rules: &[Rule], pos: &[u32], get: impl Fn(&Rule) -> Option<T>, wild: bool) -> Bitset {
    if wild {
        Bitset::default()
    } else {
        unconstrained(rules, pos, get)
    }
}

/// The distinct sets of a port field: for each port 0..=65535, the rules it matches
/// (port 0 stands for packets without ports: only rules without a port constraint). One
/// sweep over the ranges' ends: the set of each stretch between two ends is the previous
/// one with the rules starting there added and those ending before it taken out.
fn port_ids(
    b: &mut Pool,
    rules: &[Rule],
    pos: &[u32],
    get: impl Fn(&Rule) -> Option<(u16, u16)>,
    wild: bool,
) -> Result<Vec<u32>, RulesError> {
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
    let mut cur = base(rules, pos, &get, wild);
    let mut out = vec![0u32; 65536];
    for (i, &start) in cuts.iter().enumerate() {
        for &ri in ends.get(&start).into_iter().flatten() {
            unset(&mut cur, pos[ri] as usize);
        }
        for &ri in starts.get(&start).into_iter().flatten() {
            cur.set(pos[ri] as usize);
        }
        let id = b.intern(&cur)?;
        let end = cuts.get(i + 1).copied().unwrap_or(65536);
        out[start as usize..end as usize].fill(id);
    }
    Ok(out)
}

/// The distinct sets of a prefix field: for each prefix some rule names (and the default
/// routes), the rules whose prefix contains it. In (family, address, length) order a
/// prefix comes after every prefix that contains it, and the prefixes inside one follow
/// it without a gap: so a stack holds the prefixes enclosing the one at hand, and its set
/// is the innermost one's with its own rules added.
fn prefix_ids(
    b: &mut Pool,
    rules: &[Rule],
    pos: &[u32],
    get: impl Fn(&Rule) -> Option<(IpAddr, u8)>,
    wild: bool,
) -> Result<BTreeMap<PKey, u32>, RulesError> {
    let mut by_net: BTreeMap<PKey, Vec<usize>> = BTreeMap::new();
    for (ri, r) in rules.iter().enumerate() {
        if let Some(n) = get(r) {
            by_net.entry(pkey(n)).or_default().push(ri);
        }
    }
    for d in DEFAULT_ROUTES {
        by_net.entry(d).or_default();
    }
    let base = base(rules, pos, &get, wild);
    let mut out = BTreeMap::new();
    let mut enclosing: Vec<(PKey, Bitset)> = Vec::new();
    for (n, own) in by_net {
        while enclosing.last().is_some_and(|(e, _)| !inside(&n, e)) {
            enclosing.pop();
        }
        let mut cur = enclosing.last().map_or(base, |(_, s)| *s);
        for ri in own {
            cur.set(pos[ri] as usize);
        }
        out.insert(n, b.intern(&cur)?);
        enclosing.push((n, cur));
    }
    Ok(out)
}

/// Builds one chain's tables from scratch: `pos[i]` is rule `i`'s position,
/// `ids[i]` its counter id, `ranks[i]` its rank; `wild`: the fields some rule leaves unconstrained get wild
/// sets. Sets come from (and are interned in) `pool`; the caller counts the references.
pub fn build(
    pool: &mut Pool,
    chain: &Chain,
    pos: &[u32],
    ids: &[u32],
    ranks: &[u32],
    wild: bool,
) -> Result<ChainKernel, RulesError> {
    let rules = &chain.rules;
    if rules.len() > MAX_RULES {
        return Err(RulesError::Rules {
            rules: rules.len(),
            max: MAX_RULES,
        });
    }
    let used = rules.iter().fold(0u8, |u, r| u | fields(r));
    let wild = if wild {
        used & rules.iter().fold(0u8, |u, r| u | !fields(r))
    } else {
        0
    };
    let mut all = Bitset::default();
    for &p in pos {
        all.set(p as usize);
    }
    let mut k = ChainKernel {
        conf: ChainConf {
            enabled: 1,
            default_action: chain.default_action,
            used,
            accept_established: chain.accept_established as u8,
            rules: rules.len() as u32,
            all: pool.intern(&all)?,
            track: 0,
            wild,
            linear: 0,
            _pad2: 0,
        },
        ..ChainKernel::empty()
    };
    for (fi, w) in k.wild.iter_mut().enumerate() {
        if wild & (1 << fi) != 0 {
            for (ri, r) in rules.iter().enumerate() {
                if fields(r) & (1 << fi) == 0 {
                    w.set(pos[ri] as usize);
                }
            }
        }
    }
    let w = |f: u8| wild & f != 0;
    if used & field::SRC != 0 {
        k.src = prefix_ids(pool, rules, pos, |r| r.src, w(field::SRC))?;
    }
    if used & field::DST != 0 {
        k.dst = prefix_ids(pool, rules, pos, |r| r.dst, w(field::DST))?;
    }
    if used & field::SPORT != 0 {
        k.sport = port_ids(pool, rules, pos, |r| r.sport, w(field::SPORT))?;
    }
    if used & field::DPORT != 0 {
        k.dport = port_ids(pool, rules, pos, |r| r.dport, w(field::DPORT))?;
    }
    // Small values: value i's set is the rules that accept it. Rules alike in the small
    // fields (protocol, TCP flags, state) answer every value alike: one class each, a
    // value's answer is its classes' (a few, however many rules), and values that answer
    // alike share one set, built once.
    let mut classes: FastMap<SmallSpec, u32> = FastMap::default();
    let mut reps: Vec<&Rule> = Vec::new();
    let class_of: Vec<u32> = rules
        .iter()
        .map(|r| {
            let n = reps.len() as u32;
            *classes
                .entry((r.proto, r.tcpflags, r.ct))
                .or_insert_with(|| {
                    reps.push(r);
                    n
                })
        })
        .collect();
    let mut memo: HashMap<Vec<bool>, u32> = HashMap::new();
    for i in 0..k.small.len() {
        if used & small_field(i) == 0 {
            continue;
        }
        let f = small_field(i);
        let acc: Vec<bool> = reps
            .iter()
            .map(|r| small_accepts(r, i) && (wild & f == 0 || fields(r) & f != 0))
            .collect();
        if let Some(&id) = memo.get(&acc) {
            k.small[i] = id;
            continue;
        }
        let mut b = Bitset::default();
        for (ri, c) in class_of.iter().enumerate() {
            if acc[*c as usize] {
                b.set(pos[ri] as usize);
            }
        }
        let id = pool.intern(&b)?;
        memo.insert(acc, id);
        k.small[i] = id;
    }
    for (ri, r) in rules.iter().enumerate() {
        k.occupy(pos[ri], r.action, ids[ri], ranks[ri]);
    }
    Ok(k)
}

/// What a rule says of the small fields: protocol, TCP flags, connection state.
type SmallSpec = (Option<u8>, Option<(u8, u8)>, Option<u8>);

/// Key data of a prefix-trie entry (after its 32 bits of prefix length): generation,
/// chain, family, a pad byte, the address.
pub fn lpm_data(generation: u32, chain: u32, fam: u8, addr: &[u8; 16]) -> [u8; 20] {
    let mut d = [0u8; 20];
    d[0] = generation as u8;
    d[1] = chain as u8;
    d[2] = fam;
    d[4..].copy_from_slice(addr);
    d
}
