//! The `detect` stage's tables in the kernel: the allowlist, the source blocks and their
//! counters, and the mitigations the detector machines hold (read from the xfsm tables).

use std::collections::BTreeSet;

use aya::maps::{lpm_trie::Key, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray};
use statewall_common::detect::{
    self as kd, Block, DestKey, DestMit, MAP_ALLOW, MAP_BLOCK, MAP_COUNT, MAP_DEST, SLOT_DESTS,
};

use super::{Configured, Mitigation, Prefix, FLOOD};
use crate::engine::{map_err, Engine, EngineError, Result};

/// The SW_DETECT_COUNT counters by name.
pub const COUNTER_NAMES: [&str; kd::COUNTERS as usize] = [
    "allowed",
    "blocked",
    "expired",
    "destination_dropped",
    "destination_passed",
];

/// A failed insert into `map`: [`EngineError::TableFull`] when the table has no room.
fn insert_err(map: &str, e: aya::maps::MapError) -> EngineError {
    match e {
        aya::maps::MapError::SyscallError(ref s)
            if matches!(s.io_error.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG)) =>
        {
            EngineError::TableFull { map: map.into() }
        }
        e => map_err(map, e),
    }
}

fn key_of(p: &Prefix) -> Key<[u8; 20]> {
    let (len, data) = p.lpm_key();
    Key::new(len, data)
}

fn prefix_of(k: &Key<[u8; 20]>) -> Prefix {
    let d = k.data();
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&d[4..20]);
    Prefix {
        addr: statewall_common::maps::addr_ip(d[0], &addr),
        len: (k.prefix_len().saturating_sub(32)) as u8,
    }
}

impl Engine {
    /// Makes the kernel's allowlist `allow` (entries not in it removed).
    pub fn apply_detect_allowlist(&mut self, allow: &[Prefix]) -> Result<()> {
        let mut t: LpmTrie<&mut MapData, [u8; 20], u8> =
            LpmTrie::try_from(self.map_mut_checked(MAP_ALLOW)?)
                .map_err(|e| map_err(MAP_ALLOW, e))?;
        let want: BTreeSet<Prefix> = allow.iter().copied().collect();
        let have: Vec<Key<[u8; 20]>> = t.keys().filter_map(|k| k.ok()).collect();
        for k in have {
            if !want.contains(&prefix_of(&k)) {
                t.remove(&k).map_err(|e| map_err(MAP_ALLOW, e))?;
            }
        }
        for p in &want {
            t.insert(&key_of(p), 1, 0)
                .map_err(|e| map_err(MAP_ALLOW, e))?;
        }
        Ok(())
    }

    /// The allowlist in force: the prefixes [`Engine::apply_detect_allowlist`] wrote last
    /// (the configured ones and the gateways), in order.
    pub fn detect_allowlist(&self) -> Result<Vec<Prefix>> {
        let t: LpmTrie<&MapData, [u8; 20], u8> =
            LpmTrie::try_from(self.map_checked(MAP_ALLOW)?).map_err(|e| map_err(MAP_ALLOW, e))?;
        // A walk that fails part-way is an error, not a shorter list (callers fall back to
        // the configured prefixes).
        let mut v = t
            .keys()
            .map(|k| k.map(|k| prefix_of(&k)))
            .collect::<std::result::Result<Vec<Prefix>, _>>()
            .map_err(|e| map_err(MAP_ALLOW, e))?;
        v.sort();
        Ok(v)
    }

    /// [`Engine::detect_allowlist`], or the prefixes `d` configures when the kernel's list
    /// cannot be read (they are in it too): what a block must never touch.
    pub fn detect_allowlist_or(&self, d: &super::DetectConfig) -> Vec<Prefix> {
        self.detect_allowlist()
            .ok()
            .or_else(|| d.allow_prefixes().ok())
            .unwrap_or_default()
    }

    /// Blocks `p` until `expires_ns` (kernel clock; 0 = until released). A block that
    /// exists keeps its drop count and takes the new expiry.
    pub fn detect_block(&mut self, p: &Prefix, expires_ns: u64) -> Result<()> {
        let now = self.kernel_now();
        let mut t: LpmTrie<&mut MapData, [u8; 20], Block> =
            LpmTrie::try_from(self.map_mut_checked(MAP_BLOCK)?)
                .map_err(|e| map_err(MAP_BLOCK, e))?;
        let k = key_of(p);
        // A lookup finds the longest prefix holding the key: only the exact prefix's own
        // block keeps its counts.
        let exact = t
            .keys()
            .filter_map(|r| r.ok())
            .any(|x| x.prefix_len() == k.prefix_len() && x.data() == k.data());
        let mut b = match t.get(&k, 0) {
            Ok(b) if exact => b,
            _ => Block {
                since_ns: now,
                ..Default::default()
            },
        };
        b.expires_ns = expires_ns;
        t.insert(&k, b, 0).map_err(|e| insert_err(MAP_BLOCK, e))
    }

    /// Lifts the block of exactly `p`; false when there was none.
    pub fn detect_unblock(&mut self, p: &Prefix) -> Result<bool> {
        let mut t: LpmTrie<&mut MapData, [u8; 20], Block> =
            LpmTrie::try_from(self.map_mut_checked(MAP_BLOCK)?)
                .map_err(|e| map_err(MAP_BLOCK, e))?;
        // Removed by its exact key (a lookup would find a wider block holding it).
        match t.remove(&key_of(p)) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(ref s))
                if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err(MAP_BLOCK, e)),
        }
    }

    /// Lifts every block and destination mitigation (the stage turned off).
    pub fn detect_unblock_all(&mut self) -> Result<()> {
        for (p, _) in self.detect_blocks()? {
            self.detect_unblock(&p)?;
        }
        self.detect_dest_remove(|_| true)?;
        Ok(())
    }

    /// Every block: (prefix, value).
    pub fn detect_blocks(&self) -> Result<Vec<(Prefix, Block)>> {
        let t: LpmTrie<&MapData, [u8; 20], Block> =
            LpmTrie::try_from(self.map_checked(MAP_BLOCK)?).map_err(|e| map_err(MAP_BLOCK, e))?;
        let mut v: Vec<(Prefix, Block)> = t
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, b)| (prefix_of(&k), b))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        Ok(v)
    }

    /// Removes the blocks and destination mitigations that have expired; how many.
    pub fn detect_sweep(&mut self) -> Result<usize> {
        let now = self.kernel_now();
        let gone: Vec<Prefix> = self
            .detect_blocks()?
            .into_iter()
            .filter(|(_, b)| !kd::blocks(b, now))
            .map(|(p, _)| p)
            .collect();
        for p in &gone {
            self.detect_unblock(p)?;
        }
        let dests = self.detect_dests()?;
        let over: Vec<DestKey> = dests
            .iter()
            .filter(|(_, m)| !kd::in_force(m.expires_ns, now))
            .map(|(k, _)| *k)
            .collect();
        let n = if over.is_empty() {
            0
        } else {
            self.hash_remove_where::<DestKey, DestMit>(MAP_DEST, |k| over.contains(k))?
        };
        // The control word from the table, each time: a write that failed, or a table an
        // older daemon left, is right again within a sweep.
        self.write_dest_count(dests.len().saturating_sub(n) as u64)?;
        Ok(gone.len() + n)
    }

    /// Puts the destination mitigation `k` in place, or re-arms it: `mode`, `limit` and
    /// the expiry `expires_ns` (0: until released) are set; an entry that exists keeps
    /// its counts and its start (the kernel's increments between the read and the write
    /// here are lost: a few packets of a count).
    pub fn detect_dest_put(
        &mut self,
        k: &DestKey,
        mode: u32,
        limit: u32,
        expires_ns: u64,
    ) -> Result<()> {
        let now = self.kernel_now();
        let mut h: BpfHashMap<&mut MapData, DestKey, DestMit> =
            BpfHashMap::try_from(self.map_mut_checked(MAP_DEST)?)
                .map_err(|e| map_err(MAP_DEST, e))?;
        let old = h.get(k, 0).ok();
        let mut m = old.unwrap_or(DestMit {
            since_ns: now,
            ..Default::default()
        });
        m.mode = mode;
        m.limit = limit;
        m.expires_ns = expires_ns;
        h.insert(k, m, 0).map_err(|e| insert_err(MAP_DEST, e))?;
        // (A re-armed entry leaves the count as it was.)
        match old {
            Some(_) => Ok(()),
            None => self.detect_dest_count(),
        }
    }

    /// Every destination mitigation, sorted by key.
    pub fn detect_dests(&self) -> Result<Vec<(DestKey, DestMit)>> {
        self.hash_entries(MAP_DEST)
    }

    /// Removes the destination mitigations `pick` chooses; how many.
    pub fn detect_dest_remove(&mut self, pick: impl Fn(&DestKey) -> bool) -> Result<usize> {
        let n = self.hash_remove_where::<DestKey, DestMit>(MAP_DEST, pick)?;
        self.detect_dest_count()?;
        Ok(n)
    }

    /// Writes the number of destination mitigations into the kernel's control word (on
    /// every CPU): with none, the kernel looks nothing up.
    fn detect_dest_count(&mut self) -> Result<()> {
        let n = self.detect_dests()?.len() as u64;
        self.write_dest_count(n)
    }

    /// Writes `n` into the destination mitigations' control word on every CPU.
    fn write_dest_count(&mut self, n: u64) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| map_err(MAP_COUNT, e))?;
        let mut a: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_mut_checked(MAP_COUNT)?)
                .map_err(|e| map_err(MAP_COUNT, e))?;
        let v =
            aya::maps::PerCpuValues::try_from(vec![n; cpus]).map_err(|e| map_err(MAP_COUNT, e))?;
        a.set(SLOT_DESTS, v, 0).map_err(|e| map_err(MAP_COUNT, e))
    }

    /// The stage's counters by name.
    pub fn detect_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let sums = self.percpu_sums(MAP_COUNT, kd::COUNTERS)?;
        Ok(COUNTER_NAMES.iter().copied().zip(sums).collect())
    }

    /// The mitigations in force: the destinations the detectors' machines (`machines`:
    /// machine index and detector) hold in `FLOOD`, the classifier's destination
    /// mitigations (`dests`: its reasons), then the blocks (those in `held` are the
    /// classifier's, with its reasons). `verifier` is the SYN verifier's machine index,
    /// whose global count is the SYN detector's drops.
    pub fn detect_mitigations(
        &self,
        machines: &[(usize, Configured)],
        verifier: Option<usize>,
        held: &std::collections::HashMap<Prefix, super::live::Held>,
        dests: &std::collections::HashMap<DestKey, super::live::Held>,
    ) -> Result<Vec<Mitigation>> {
        let now = self.kernel_now();
        let left = |t: u64| (t != 0).then(|| t.saturating_sub(now) as f64 / 1e9);
        let mut out = Vec::new();
        let c = self.xfsm_compiled();
        let states = self.xfsm_states()?;
        let regs = self.xfsm_flow_regs()?;
        let syn_dropped = verifier
            .map(|m| self.xfsm_globals(m).map(|g| g[0]))
            .transpose()?;
        for (m, d) in machines {
            for (k, v) in &states {
                let in_flood = c.is_some_and(|c| c.state_name(*m, v.state) == FLOOD);
                let live = v.hard_deadline == 0 || v.hard_deadline > now;
                if k.machine as usize != *m || !in_flood || !live {
                    continue;
                }
                let r = regs.iter().find(|(rk, _)| rk == k).map(|(_, r)| r.r);
                let (count, excess) = r.map(|r| (r[1], r[2])).unwrap_or((0, 0));
                let target = statewall_common::maps::addr_ip(k.family, &k.addrs[0]);
                out.push(Mitigation {
                    detector: d.name.to_string(),
                    target: target.to_string(),
                    scope: "destination",
                    reason: format!(
                        "{count} {} in the current one-second window, threshold {}/s",
                        d.what, d.threshold
                    ),
                    dropped: if d.name == "syn_flood" {
                        syn_dropped.unwrap_or(excess)
                    } else {
                        excess
                    },
                    left_s: left(v.hard_deadline),
                });
            }
        }
        for (k, m) in self.detect_dests()? {
            if !kd::in_force(m.expires_ns, now) {
                continue;
            }
            let (detector, reason) = match dests.get(&k) {
                Some(h) => (h.detector, h.reason.clone()),
                // (Its reason went with the daemon that made it; it lapses at its expiry.)
                None => ("classifier", "made by an earlier run of the daemon".into()),
            };
            out.push(Mitigation {
                detector: detector.into(),
                target: super::spread::target(&k),
                scope: "destination",
                reason,
                dropped: m.dropped,
                left_s: left(m.expires_ns),
            });
        }
        for (p, b) in self.detect_blocks()? {
            if !kd::blocks(&b, now) {
                continue;
            }
            let (detector, reason) = match held.get(&p) {
                Some(h) => (h.detector, h.reason.clone()),
                None => ("block", "blocked through the API".into()),
            };
            out.push(Mitigation {
                detector: detector.into(),
                target: p.to_string(),
                scope: "source",
                reason,
                dropped: b.dropped,
                left_s: left(b.expires_ns),
            });
        }
        Ok(out)
    }

    /// Ends the detector machines' mitigation for destination `addr`: its `FLOOD` entries
    /// and its window's registers removed, so the next packet starts a new window; how
    /// many states were removed.
    pub fn detect_release_destination(
        &mut self,
        machines: &[usize],
        addr: std::net::IpAddr,
    ) -> Result<usize> {
        use statewall_common::xfsm::{
            regs::{FlowRegs, MAP_FIXED_REGS, MAP_REGS},
            StateKey, StateVal, MAP_FIXED_STATES, MAP_STATES,
        };
        let ours = |k: &StateKey| {
            machines.contains(&(k.machine as usize))
                && statewall_common::maps::addr_ip(k.family, &k.addrs[0]) == addr
        };
        let mut n = 0;
        for map in [MAP_STATES, MAP_FIXED_STATES] {
            n += self.hash_remove_where::<StateKey, StateVal>(map, ours)?;
        }
        for map in [MAP_REGS, MAP_FIXED_REGS] {
            self.hash_remove_where::<StateKey, FlowRegs>(map, ours)?;
        }
        Ok(n)
    }
}
