//! Where a rule goes in its chain's positions. The first match is the lowest position, so
//! positions must keep the order of any two rules that can match one packet, but not of
//! two that cannot ([`disjoint`]): a new rule takes the free position nearest its
//! neighbours that keeps the first order, passing over rules it shares no packet with,
//! and only when there is none do the nearest few rules move by one. Ranks
//! (`SW_FW_RANK`) keep the whole order, for a later process to read back.

use statewall_common::firewall::MAX_RULES;

use super::rules::{disjoint, Rule};

/// Rules moved at most to make room for one insert; past that the chain is laid out again.
const SHIFT_MAX: usize = 64;

/// Free positions tried for a rule, nearest its neighbours first, before the bounds the
/// rules that can share a packet with it set are worked out over the whole chain.
const TRIES: usize = 8;

/// Where a new rule (or an updated one that cannot stay) goes.
pub(super) enum Place {
    /// A free position.
    Free(u32),
    /// This position, freed by moving the rules at positions `.1 ..= .2` by `.3` (down:
    /// -1, up: 1).
    Shift(u32, u32, u32, i32),
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
    pub(super) rules: &'a [Rule],
    /// Action by position (0: free).
    pub(super) actions: &'a [u8],
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
        let wrong = |j: usize| Some(j) != skip && !disjoint(&self.rules[j], r);
        let (before, after) = self.pos.split_at(i);
        !(before.iter().enumerate().any(|(j, &q)| q > p && wrong(j))
            || after
                .iter()
                .enumerate()
                .any(|(k, &q)| q < p && wrong(i + k)))
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
        if let Some(p) = nearest(-1, max, t)
            .take(TRIES)
            .find(|p| self.fits(r, i, *p, skip))
        {
            return Some(Place::Free(p));
        }
        // The bounds the rules that can share a packet with `r` set.
        let (mut lo, mut hi) = (-1i64, max);
        for (j, (&q, x)) in self.pos.iter().zip(self.rules).enumerate() {
            if Some(j) == skip || disjoint(x, r) {
                continue;
            }
            if j < i {
                lo = lo.max(q as i64);
            } else {
                hi = hi.min(q as i64);
            }
        }
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
            .map(|f| Place::Shift(lo as u32, f as u32 + 1, lo as u32, -1));
        let up = (hi < max)
            .then(|| (hi + 1..max).take(SHIFT_MAX).find(|p| self.free(*p as u32)))
            .flatten()
            .map(|g| Place::Shift(hi as u32, hi as u32, g as u32 - 1, 1));
        let len = |p: &Place| match p {
            Place::Shift(_, a, b, _) => b - a,
            Place::Free(_) => 0,
        };
        match (down, up) {
            (Some(d), Some(u)) => Some(if len(&d) <= len(&u) { d } else { u }),
            (d, u) => d.or(u),
        }
    }
}
