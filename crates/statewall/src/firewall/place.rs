//! Where a rule goes in its chain's positions. The first match is the lowest position, so
//! positions must keep the order of any two rules that can match one packet, but not of
//! two that cannot ([`disjoint`]): a new rule takes the free position nearest its
//! neighbours that keeps the first order, passing over rules it shares no packet with,
//! and only when there is none do the nearest few rules move by one. Ranks
//! (`SW_FW_RANK`) keep the whole order, for a later process to read back.

use statewall_common::firewall::MAX_RULES;

use super::rule::{disjoint, Rule};

/// Rules moved at most to make room for one insert; past that the chain is laid out again.
const SHIFT_MAX: usize = 64;

/// Free positions tried for a rule, nearest its neighbours first, before the bounds the
/// rules that can share a packet with it set are worked out over the whole chain.
const TRIES: usize = 8;

/// Where a new rule (or an updated one that cannot stay) goes.
pub(super) enum Place {
    /// A free position.
    Free(u32),
    /// This position, freed by moving the rules at positions `lo..=hi` by `by` (down: -1,
    /// up: 1): `(lo, hi, by)`.
    Shift(u32, (u32, u32, i32)),
}

/// Ranks of `n` rules spread evenly over the u32 range (0 stands for no rule).
pub(super) fn spread_ranks(n: usize) -> Vec<u32> {
    (0..n as u64)
        .map(|i| (((i + 1) << 32) / (n as u64 + 1)) as u32)
        .collect()
}

/// A chain's rules as [`Slots::place`] sees them.
pub(super) struct Slots<'a> {
    /// Position by index.
    pub(super) pos: &'a [u32],
    /// The rules by index.
    pub(super) rules: &'a [Box<Rule>],
    /// Action by position (0: free).
    pub(super) actions: &'a [u8],
}

/// Gives the rule inserted at index `i` a rank between its neighbours' (`rank` holds the
/// others' ranks, rising): the middle, while they are not consecutive. When they are, the
/// ranks of the smallest window of rules around `i` (doubling) whose rank span leaves
/// them at least `count^0.585` apart (1.5 to the power of the doubling's level: a larger
/// window must be sparser) are spread out evenly, as in order-maintenance lists, so that
/// inserts at one place, appends above all, renumber a few rules each on average, not the
/// chain. Returns the indices whose rank was set.
pub(super) fn insert_rank(rank: &mut Vec<u32>, i: usize) -> std::ops::Range<usize> {
    rank.insert(i, 0);
    let n = rank.len();
    let mut w = 0;
    loop {
        let (a, b) = (i.saturating_sub(w), (i + w).min(n - 1));
        let lo = if a > 0 { rank[a - 1] as u64 } else { 0 };
        let hi = if b + 1 < n {
            rank[b + 1] as u64
        } else {
            1 << 32
        };
        let count = (b - a + 1) as u64;
        let apart = (hi - lo) / (count + 1);
        let sparse = (count as f64).powf(0.585).max(2.0);
        if apart as f64 >= sparse || (a == 0 && b + 1 == n) {
            for (k, r) in rank[a..=b].iter_mut().enumerate() {
                *r = (lo + (k as u64 + 1) * (hi - lo) / (count + 1)) as u32;
            }
            return a..b + 1;
        }
        w = (2 * w).max(1);
    }
}

impl Slots<'_> {
    fn free(&self, p: u32) -> bool {
        self.actions[p as usize] == 0
    }

    /// Whether rule `r` at position `p`, at index `i` of the chain (after the rules before
    /// `i`, before those from `i` on; `skip`: the rule an update replaces, left out), keeps
    /// in order every two rules that can match one packet. Only the rules on the wrong
    /// side of `p` are compared with `r` (a chain kept mostly in order has few).
    pub(super) fn fits(&self, r: &Rule, i: usize, p: u32, skip: Option<usize>) -> bool {
        let p = i64::from(p);
        let (lo, hi) = self.bounds(r, i, skip, p, p);
        lo < p && p < hi
    }

    /// The bounds the rules that can share a packet with `r` (at index `i`; `skip` left
    /// out) set on its position, looking only at those before `i` whose position is above
    /// `above` and those from `i` on whose position is below `below`: the highest such
    /// position before, -1 without one, and the lowest from `i` on, [`MAX_RULES`] without.
    /// A free position `p` with `above <= p <= below` keeps the order iff `lo < p < hi`.
    fn bounds(
        &self,
        r: &Rule,
        i: usize,
        skip: Option<usize>,
        above: i64,
        below: i64,
    ) -> (i64, i64) {
        let (mut lo, mut hi) = (-1i64, MAX_RULES as i64);
        let wrong = |j: usize| Some(j) != skip && !disjoint(&self.rules[j], r);
        let (before, after) = self.pos.split_at(i);
        for (j, &q) in before.iter().enumerate() {
            let q = i64::from(q);
            if q > above && q > lo && wrong(j) {
                lo = q;
            }
        }
        for (k, &q) in after.iter().enumerate() {
            let q = i64::from(q);
            if q < below && q < hi && wrong(i + k) {
                hi = q;
            }
        }
        (lo, hi)
    }

    /// Where rule `r` goes at index `i` (`skip` as for [`Slots::fits`]): the free
    /// position nearest its neighbours' middle that keeps the order of every two rules
    /// that can match one packet (rules no packet matches with `r` may be passed over);
    /// failing that (and with `shift`), a position freed by moving the nearest few rules
    /// by one. `None`: only a layout from scratch.
    pub(super) fn place(
        &self,
        r: &Rule,
        i: usize,
        skip: Option<usize>,
        shift: bool,
    ) -> Option<Place> {
        let n = self.pos.len();
        let max = MAX_RULES as i64;
        let before = (0..i).rev().find(|j| Some(*j) != skip);
        let after = (i..n).find(|j| Some(*j) != skip);
        let before = before.map_or(-1, |j| self.pos[j] as i64);
        let after = after.map_or(max, |j| self.pos[j] as i64);
        let nearest = |lo: i64, hi: i64, t: i64| {
            // Free positions strictly between lo and hi, nearest t first.
            let t = t.clamp(lo + 1, (hi - 1).max(lo + 1));
            (0..max)
                .flat_map(move |d| {
                    let below = (d > 0).then_some(t - d);
                    [Some(t + d), below].into_iter().flatten()
                })
                .filter(move |p| *p > lo && *p < hi && *p >= 0 && *p < max)
                .map(|p| p as u32)
                .filter(|p| self.free(*p))
        };
        let t = (before + after).div_euclid(2);
        // The nearest free position (one pass over the chain, which compares with `r` only
        // the rules on its wrong side), then the few next nearest in one more pass.
        let tries: Vec<i64> = nearest(-1, max, t).take(TRIES).map(i64::from).collect();
        if let Some(&p) = tries.first().filter(|&&p| self.fits(r, i, p as u32, skip)) {
            return Some(Place::Free(p as u32));
        }
        if let (Some(&first), Some(&last)) = (tries.iter().min(), tries.iter().max()) {
            let (lo, hi) = self.bounds(r, i, skip, first, last);
            if let Some(&p) = tries.iter().find(|&&p| lo < p && p < hi) {
                return Some(Place::Free(p as u32));
            }
        }
        // The bounds all the rules that can share a packet with `r` set.
        let (lo, hi) = self.bounds(r, i, skip, -1, max);
        if lo >= hi {
            return None;
        }
        if let Some(p) = nearest(lo, hi, t).next() {
            return Some(Place::Free(p));
        }
        if !shift {
            return None;
        }
        // Every position from lo to hi is taken: the rules from the free position nearest
        // below lo up to lo move down one (`r` takes lo), or those from hi up to the free
        // position nearest above it move up one (`r` takes hi): the fewer.
        let down = (lo >= 0)
            .then(|| (0..lo).rev().take(SHIFT_MAX).find(|p| self.free(*p as u32)))
            .flatten()
            .map(|f| Place::Shift(lo as u32, (f as u32 + 1, lo as u32, -1)));
        let up = (hi < max)
            .then(|| (hi + 1..max).take(SHIFT_MAX).find(|p| self.free(*p as u32)))
            .flatten()
            .map(|g| Place::Shift(hi as u32, (hi as u32, g as u32 - 1, 1)));
        let len = |p: &Place| match p {
            Place::Shift(_, (a, b, _)) => b - a,
            Place::Free(_) => 0,
        };
        match (down, up) {
            (Some(d), Some(u)) => Some(if len(&d) <= len(&u) { d } else { u }),
            (d, u) => d.or(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranks stay non-zero and rising whatever the inserts, and 10,000 inserts at one
    /// place (the front, the end, one index in the middle) into 1,000 rules set at most 20
    /// ranks per insert on average (about 12 at the ends, 2 in the middle, here);
    /// spreading the whole chain out again whenever two neighbours' ranks meet would set
    /// hundreds.
    #[test]
    fn ranks_rise_and_renumber_little() {
        for at in [0usize, 1, 2] {
            let mut rank = spread_ranks(1000);
            let mut set = 0usize;
            for k in 0..10_000 {
                let i = match at {
                    0 => 0,
                    1 => rank.len(),
                    _ => 500 + k % 3,
                };
                set += insert_rank(&mut rank, i).len();
            }
            assert!(rank[0] > 0);
            assert!(
                rank.windows(2).all(|w| w[0] < w[1]),
                "place {at}: not rising"
            );
            assert!(set <= 20 * 10_000, "place {at}: {set} ranks set");
        }
        // An empty chain, then one rule.
        let mut rank = Vec::new();
        assert_eq!(insert_rank(&mut rank, 0), 0..1);
        assert!(rank[0] > 0);
    }
}
