//! One edit's effect on a chain's sets (`Change`), worked out before anything changes,
//! then applied to the entries it touches, which are noted (`Dirty`) for the generations
//! to be brought up to date on those entries only.

use std::collections::{BTreeMap, HashMap};

use statewall_common::firewall::{field, Bitset, SINGLE};

use super::rule::{
    fields, inside, pkey, port_accepts, shorten, small_accepts, small_field, unset, PKey, Rule,
};
use super::sets::{ChainKernel, Pool, RulesError, NONE};

/// What one edit does to every set: the rules at positions `shift.0..=shift.1` move by
/// `shift.2`, position `clear` leaves, and position `add` joins the sets of the entries
/// whose value the new rule accepts. Position `kill` leaves the all-rules set only: the
/// rule there matches nothing from then on, while its bits stay in the field sets until a
/// later change clears them (see `Tables::scrub`).
pub(super) struct Change {
    shift: Option<(u32, u32, i32)>,
    clear: Option<u32>,
    add: Option<u32>,
    pub(super) kill: Option<u32>,
    memo: HashMap<(u32, bool), u32>,
    /// Per set id: 0 not looked at yet, 1 untouched, 2 holds a position the change moves
    /// or clears.
    touched: Vec<u8>,
    pub(super) incs: Vec<u32>,
    pub(super) decs: Vec<u32>,
    /// The entries changed.
    pub(super) d: Dirty,
}

/// Entries of a chain changed since a generation was last written (`full`: all of them).
#[derive(Clone, Debug, Default)]
pub(super) struct Dirty {
    pub(super) full: bool,
    pub(super) sport: Vec<u32>,
    pub(super) dport: Vec<u32>,
    pub(super) small: bool,
    pub(super) src: Vec<PKey>,
    pub(super) dst: Vec<PKey>,
    pub(super) positions: Vec<u32>,
}

impl Dirty {
    pub(super) fn add(&mut self, o: &Dirty) {
        if self.full {
            return;
        }
        self.full = o.full;
        self.sport.extend(&o.sport);
        self.dport.extend(&o.dport);
        self.small |= o.small;
        self.src.extend(&o.src);
        self.dst.extend(&o.dst);
        self.positions.extend(&o.positions);
    }
}

impl Change {
    pub(super) fn new(
        shift: Option<(u32, u32, i32)>,
        clear: Option<u32>,
        add: Option<u32>,
    ) -> Change {
        Change {
            shift,
            clear,
            add,
            kill: None,
            memo: HashMap::new(),
            touched: Vec::new(),
            incs: Vec::new(),
            decs: Vec::new(),
            d: Dirty::default(),
        }
    }

    fn touches(&mut self, pool: &Pool, id: u32) -> bool {
        // A one-position set: whether the change moves or clears that position.
        if let Some(p) = id.checked_sub(SINGLE) {
            return self.clear == Some(p)
                || self.shift.is_some_and(|(lo, hi, _)| (lo..=hi).contains(&p));
        }
        if self.touched.len() < pool.sets.len() {
            self.touched.resize(pool.sets.len(), 0);
        }
        if self.touched[id as usize] == 0 {
            let b = &pool.sets[id as usize];
            let yes = self.clear.is_some_and(|q| b.has(q as usize))
                || self
                    .shift
                    .is_some_and(|(lo, hi, _)| (lo..=hi).any(|q| b.has(q as usize)));
            self.touched[id as usize] = 1 + yes as u8;
        }
        self.touched[id as usize] == 2
    }

    /// The set an entry refers to after the change, `accepts`: the new rule accepts the
    /// entry's value.
    fn apply(&mut self, pool: &mut Pool, id: u32, accepts: bool) -> Result<u32, RulesError> {
        let accepts = accepts && self.add.is_some();
        if id == NONE || (!accepts && !self.touches(pool, id)) {
            return Ok(id);
        }
        if let Some(&n) = self.memo.get(&(id, accepts)) {
            return Ok(n);
        }
        let b = self.transform(&pool.set(id), accepts);
        let n = pool.intern(&b)?;
        self.memo.insert((id, accepts), n);
        Ok(n)
    }

    /// Set `b` after the change.
    fn transform(&self, b: &Bitset, accepts: bool) -> Bitset {
        let mut b = *b;
        if let Some(q) = self.clear {
            unset(&mut b, q as usize);
        }
        if let Some((lo, hi, by)) = self.shift {
            let had: Vec<u32> = (lo..=hi).filter(|q| b.has(*q as usize)).collect();
            had.iter().for_each(|q| unset(&mut b, *q as usize));
            had.iter()
                .for_each(|q| b.set((*q as i64 + by as i64) as usize));
        }
        if let (true, Some(p)) = (accepts, self.add) {
            b.set(p as usize);
        }
        b
    }
}

/// An entry of a chain's tables.
#[derive(Clone, Copy)]
enum Loc {
    All,
    Port(bool, usize),
    Small(usize),
    Prefix(bool, PKey),
}

/// [`Tables::remap`] on one chain's tables (references counted by the caller): only the
/// entries whose value some rule in `involved` (moved or cleared) or `r` (joining) accepts
/// can change, so only those are looked at, unless one of them takes every value of a
/// field (no constraint, no wild set). Every new set is made first; only then are the
/// entries changed (and noted in `c.d`), so an error (no room for a set) changes nothing.
pub(super) fn remap_chain(
    pool: &mut Pool,
    k: &mut ChainKernel,
    c: &mut Change,
    r: Option<&Rule>,
    involved: &[Rule],
) -> Result<(), RulesError> {
    let (changes, wild) = plan_remap(pool, k, c, r, involved)?;
    for (loc, old, new) in changes {
        c.incs.push(new);
        c.decs.extend(old);
        match loc {
            Loc::All => k.conf.all = new,
            Loc::Port(dst, port) => {
                let v = if dst { &mut k.dport } else { &mut k.sport };
                v[port] = new;
                if dst { &mut c.d.dport } else { &mut c.d.sport }.push(port as u32);
            }
            Loc::Small(i) => {
                k.small[i] = new;
                c.d.small = true;
            }
            Loc::Prefix(dst, key) => {
                if dst { &mut k.dst } else { &mut k.src }.insert(key, new);
                if dst { &mut c.d.dst } else { &mut c.d.src }.push(key);
            }
        }
    }
    k.wild = wild;
    Ok(())
}

/// The entries [`remap_chain`] changes: (where, old set or none for a new prefix, new
/// set), and the wild sets after the change.
#[allow(clippy::type_complexity)]
fn plan_remap(
    pool: &mut Pool,
    k: &ChainKernel,
    c: &mut Change,
    r: Option<&Rule>,
    involved: &[Rule],
) -> Result<(Vec<(Loc, Option<u32>, u32)>, Vec<Bitset>), RulesError> {
    let mut out: Vec<(Loc, Option<u32>, u32)> = Vec::new();
    let mut put = |loc: Loc, old: u32, new: u32| {
        if new != old {
            out.push((loc, Some(old), new));
        }
    };
    let mut all = c.apply(pool, k.conf.all, r.is_some())?;
    if let Some(q) = c.kill {
        let mut b = pool.set(all);
        unset(&mut b, q as usize);
        all = pool.intern(&b)?;
    }
    put(Loc::All, k.conf.all, all);
    // With a wild set, a rule unconstrained on the field joins it instead of the value
    // sets; the value sets take only the rules that constrain the field.
    let wild = k.conf.wild;
    let takes = |f: u8| r.map(|r| wild & f == 0 || fields(r) & f != 0);
    let mut wilds = k.wild.clone();
    for (fi, w) in wilds.iter_mut().enumerate() {
        let f = 1u8 << fi;
        if wild & f != 0 {
            *w = c.transform(w, r.is_some_and(|r| fields(r) & f == 0));
        }
    }
    // Rules whose accepted values bound what can change, and whether one takes them all.
    let rules: Vec<&Rule> = involved.iter().chain(r).collect();
    let everything = |f: u8| wild & f == 0 && rules.iter().any(|x| fields(x) & f == 0);
    for (dst, v) in [(false, &k.sport), (true, &k.dport)] {
        if v.is_empty() {
            continue;
        }
        let f = if dst { field::DPORT } else { field::SPORT };
        let get = |x: &Rule| if dst { x.dport } else { x.sport };
        let range = takes(f).filter(|t| *t).and(r.map(get));
        let mut spans: Vec<(usize, usize)> = if everything(f) {
            vec![(0, 65535)]
        } else {
            rules
                .iter()
                .filter_map(|x| get(x))
                .map(|(lo, hi)| (lo as usize, hi as usize))
                .collect()
        };
        spans.sort_unstable();
        let mut next = 0usize;
        let mut last: Option<((u32, bool), u32)> = None;
        for (lo, hi) in spans {
            for (port, &e) in v.iter().enumerate().take(hi + 1).skip(lo.max(next)) {
                let acc = range.is_some_and(|g| port_accepts(g, port));
                let n = match last {
                    Some((key, n)) if key == (e, acc) => n,
                    _ => c.apply(pool, e, acc)?,
                };
                last = Some(((e, acc), n));
                put(Loc::Port(dst, port), e, n);
            }
            next = next.max(hi + 1);
        }
    }
    for (i, &e) in k.small.iter().enumerate() {
        let acc = takes(small_field(i)) == Some(true) && r.is_some_and(|r| small_accepts(r, i));
        put(Loc::Small(i), e, c.apply(pool, e, acc)?);
    }
    for (dst, t) in [(false, &k.src), (true, &k.dst)] {
        if t.is_empty() {
            continue;
        }
        let f = if dst { field::DST } else { field::SRC };
        let get = |x: &Rule| if dst { x.dst } else { x.src };
        let net = takes(f).filter(|t| *t).and(r.map(get));
        let keys: Vec<PKey> = if everything(f) {
            t.keys().copied().collect()
        } else {
            let mut keys: Vec<PKey> = rules
                .iter()
                .filter_map(|x| get(x))
                .flat_map(|n| within(t, &pkey(n)))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        for key in keys {
            let Some(&e) = t.get(&key) else { continue };
            let acc = net.is_some_and(|n| n.is_none_or(|n| inside(&key, &pkey(n))));
            put(Loc::Prefix(dst, key), e, c.apply(pool, e, acc)?);
        }
    }
    // New prefixes of `r`: their parents' sets before the change, changed.
    for (dst, n) in [
        (false, r.and_then(|r| r.src)),
        (true, r.and_then(|r| r.dst)),
    ] {
        let Some(n) = n else { continue };
        let key = pkey(n);
        let t = if dst { &k.dst } else { &k.src };
        if !t.contains_key(&key) {
            let parent = (0..key.2)
                .rev()
                .find_map(|len| t.get(&shorten(&key, len)).copied())
                .unwrap_or(k.conf.all);
            out.push((Loc::Prefix(dst, key), None, c.apply(pool, parent, true)?));
        }
    }
    Ok((out, wilds))
}

/// The prefixes of `t` inside `p` (one range of the ordered keys).
fn within(t: &BTreeMap<PKey, u32>, p: &PKey) -> Vec<PKey> {
    let bits = if p.0 == 4 { 32 } else { 128 };
    let mut end = p.1;
    for b in p.2 as usize..bits {
        end[b / 8] |= 0x80 >> (b % 8);
    }
    t.range((p.0, p.1, p.2)..=(p.0, end, u8::MAX))
        .map(|(k, _)| *k)
        .filter(|k| inside(k, p))
        .collect()
}
