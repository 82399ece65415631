//! Updates that clean up after themselves later. An update that moves its rule to a free
//! position takes the old position out of the all-rules set (the classification starts
//! from it, so the old rule matches nothing from the switch on) instead of out of every
//! set that holds it: at 10,000 rules, an update of a rule with a /16 source touched the
//! sets of the 37 prefixes inside it, twice an insert's work. The old rule's bits are
//! cleared by [`Tables::scrub`], which every edit runs first and the daemon runs after
//! answering, so that no other change ever meets them: no rule is placed at a position
//! while its stale bits remain.

use statewall_common::firewall::LINEAR_MAX;

use super::{
    change::Change,
    place::Place,
    rule::Rule,
    sets::RulesError,
    tables::{Edit, Tables},
};

impl Tables {
    /// Whether an update left bits to clear.
    pub fn has_stale(&self) -> bool {
        self.chains.values().any(|m| !m.stale.is_empty())
    }

    /// Rule `i` of chain `ch` replaced by `r` at a free position, its old position only
    /// taken out of the all-rules set (see the module doc). `Ok(false)`: not done this way
    /// (a short chain, matched rule by rule, or no free position that keeps the order),
    /// nothing changed.
    pub(super) fn update_later(&mut self, ch: u32, i: usize, r: &Rule) -> Result<bool, RulesError> {
        let m = &self.chains[&ch];
        if m.rules.len() <= LINEAR_MAX || self.needs_relayout(m.k.conf.used, m.k.conf.wild, r) {
            return Ok(false);
        }
        let q = m.pos[i];
        let Some(Place::Free(p)) = m.slots().place(r, i, Some(i), false) else {
            return Ok(false);
        };
        if p == q {
            return Ok(false);
        }
        let mut c = Change::new(None, None, Some(p));
        c.kill = Some(q);
        self.remap(ch, &mut c, Some(r), &[])?;
        // The old position is free in the model and the kernel's tables (no rule is
        // placed there before the scrub: every edit scrubs first); the old rule's
        // prefixes stay named until then.
        let old = self.put_updated(ch, i, r, p, &mut c);
        let m = self.chains.get_mut(&ch).expect("checked");
        m.stale.push((q, old));
        self.mark_keys(ch, &c.d);
        Ok(true)
    }

    /// Clears the bits of the rules updates replaced in chain `ch` (their prefixes leave
    /// the tries when no rule names them any more). Returns whether there were any. On an
    /// error (no room for a set), the chain is laid out again from its rules, which leaves
    /// no stale bit either; when that fails too, the error is returned and the entries not
    /// cleared stay listed (every edit then fails at its scrub, placing nothing, until
    /// room is made).
    pub fn scrub(&mut self, ch: u32) -> Result<bool, RulesError> {
        let mut any = false;
        // An entry leaves the list only once its bits are cleared: if the layout below
        // fails too, what remains is still known, and still cleared before any placing.
        while let Some((q, old)) = self.chains.get(&ch).and_then(|m| m.stale.first().cloned()) {
            any = true;
            let mut c = Change::new(None, Some(q), None);
            if let Err(e) = self.remap(ch, &mut c, None, std::slice::from_ref(&*old)) {
                tracing::warn!("firewall: clearing an updated rule's bits: {e}; laying out");
                self.pool.sweep();
                // (A layout from the rules leaves no stale bit and an empty list.)
                return self.edit_by_relayout(ch, &[]).map(|()| true);
            }
            self.chains.get_mut(&ch).expect("found").stale.remove(0);
            self.name(ch, &old, -1, &mut c.d);
            self.mark_keys(ch, &c.d);
        }
        if any {
            self.pool.sweep();
        }
        Ok(any)
    }

    /// [`Tables::scrub`] on every chain.
    pub fn scrub_all(&mut self) -> Result<bool, RulesError> {
        let chains: Vec<u32> = self.chains.keys().copied().collect();
        let mut any = false;
        for ch in chains {
            any |= self.scrub(ch)?;
        }
        Ok(any)
    }

    /// One edit alone: an update to the rule as it is changes nothing (a tool that
    /// writes its whole ruleset again sends many); another that can is done by
    /// [`Tables::update_later`].
    pub(super) fn edit_alone(&mut self, ch: u32, e: &Edit) -> Result<bool, RulesError> {
        match e {
            Edit::Update(i, r) if self.chains[&ch].rules.get(*i).is_some_and(|o| **o == *r) => {
                Ok(true)
            }
            Edit::Update(i, r) => self.update_later(ch, *i, r),
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use statewall_common::firewall::{ACT_ACCEPT, ACT_DROP};

    use super::*;
    use crate::firewall::rules::Chain;

    fn rule(i: u8) -> Rule {
        Rule {
            src: Some((std::net::IpAddr::from([10, i, 0, 0]), 16)),
            dst: None,
            proto: Some(17),
            sport: None,
            dport: Some((1000 + i as u16, 1000 + i as u16)),
            tcpflags: None,
            ct: None,
            action: ACT_ACCEPT,
        }
    }

    /// Positions holding `bit` in any set the pool holds.
    fn holders(t: &Tables, bit: u32) -> usize {
        let n = t.pool.sets.len() as u32;
        (0..n)
            .filter(|id| t.pool.live(*id) && t.pool.set(*id).has(bit as usize))
            .count()
    }

    /// An update of a long chain's rule moves it to a free position and only takes the
    /// old one out of the all-rules set; the scrub then clears the old rule's bits from
    /// every set, and the next edit scrubs first.
    #[test]
    fn an_update_leaves_bits_the_scrub_clears() {
        let rules: Vec<Rule> = (0..40).map(rule).collect();
        let chain = Chain {
            rules,
            default_action: ACT_DROP,
            accept_established: false,
        };
        let mut t = Tables::new(1 << 12);
        t.set_chains(&BTreeMap::from([(0u32, chain)]), &[]).unwrap();
        let q = t.positions(0)[20];
        let id = t.counter_ids(0)[20];
        assert!(holders(&t, q) > 0);
        // The rule written as it is: nothing moves, nothing is left.
        t.edit(0, &[Edit::Update(20, rule(20))]).unwrap();
        assert_eq!(t.positions(0)[20], q);
        assert!(!t.has_stale());
        let mut new = rule(20);
        new.dport = Some((2000, 2000));
        t.edit(0, &[Edit::Update(20, new.clone())]).unwrap();
        let p = t.positions(0)[20];
        assert_ne!(p, q, "the update stayed in place");
        assert_eq!(
            t.counter_ids(0)[20],
            id,
            "the counter did not follow the rule"
        );
        assert!(t.has_stale());
        let all = t.chains[&0].k.conf.all;
        assert!(
            !t.pool.set(all).has(q as usize),
            "the old position still matches"
        );
        assert!(t.pool.set(all).has(p as usize));
        assert!(holders(&t, q) > 0, "nothing was left to clear");
        assert!(t.scrub_all().unwrap());
        assert!(!t.has_stale());
        assert_eq!(holders(&t, q), 0, "the scrub left the old rule's bits");
        assert!(!t.scrub_all().unwrap());
        // The next edit clears what an update left before it places anything.
        let mut again = rule(21);
        again.dport = Some((3000, 3000));
        t.edit(0, &[Edit::Update(21, again)]).unwrap();
        let q2 = t.chains[&0].stale[0].0;
        t.edit(0, &[Edit::Delete(0)]).unwrap();
        assert!(!t.has_stale());
        assert_eq!(holders(&t, q2), 0);
    }
}
