//! [`Compiled`]: one generation's xfsm tables as the compiler leaves them, before they are
//! written into the kernel (or loaded into the reference's plain maps).

use std::collections::BTreeMap;

use statewall_common::xfsm::{
    acts::ActSet,
    regs::{CondSet, UpdSet},
    slow_bit, GrantSet, Machine, Payload, Trans, TransKey, CTL_PAYLOAD, CTL_SLOW, STATE_DEFAULT,
};

/// A transition table key without the generation: (machine, state, direction, protocol,
/// port).
pub type TKey = (u8, u8, u8, u8, u16);

/// Compiled tables for one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// Machines by index.
    pub machines: Vec<Machine>,
    /// Transitions by (machine, state, direction, protocol, port): the key without the
    /// generation.
    pub trans: BTreeMap<(u8, u8, u8, u8, u16), Trans>,
    /// Payload patterns, [`Trans::payload`] - 1 indexing them.
    pub payloads: Vec<Payload>,
    /// Port prefilter bits (only non-zero ports).
    pub ports: BTreeMap<u16, u16>,
    /// Grant sets by index.
    pub grant_sets: Vec<GrantSet>,
    /// Human names of the transition counters, by index.
    pub counter_names: Vec<String>,
    /// Names of the states of each machine (index = state id).
    pub state_names: Vec<Vec<String>>,
    /// Transitions of machines with conditions, by key and condition vector.
    pub cond_trans: BTreeMap<(TKey, u8), Trans>,
    /// Conditions by machine (empty for machines without).
    pub conds: Vec<CondSet>,
    /// Update sets; [`Trans::upd`] - 1 indexes them.
    pub upd_sets: Vec<UpdSet>,
    /// Per machine: names of its per-flow and global registers.
    pub reg_names: Vec<(Vec<String>, Vec<String>)>,
    /// Action sets; [`Trans::act`] - 1 indexes them.
    pub act_sets: Vec<ActSet>,
    /// Machines that only `[[switch]]` ports run (bit per machine).
    pub switch_mask: u32,
    /// Machines not run for a source on the `[detect]` allowlist (bit per machine).
    pub exempt_mask: u32,
}

impl Compiled {
    /// The transitions with their full keys in generation `generation`.
    pub fn trans_entries(&self, generation: u32) -> impl Iterator<Item = (TransKey, Trans)> + '_ {
        let plain = self.trans.iter().map(|(k, t)| ((*k, 0u8), t));
        plain
            .chain(self.cond_trans.iter().map(|(k, t)| (*k, t)))
            .map(move |(((machine, state, dir, proto, port), conds), t)| {
                (
                    TransKey {
                        generation: generation as u8,
                        machine,
                        state,
                        proto,
                        port,
                        dir,
                        conds,
                    },
                    *t,
                )
            })
    }

    /// Records in each machine the kinds of transition key it has
    /// ([`Machine::levels`](statewall_common::xfsm::Machine::levels)): the kernel skips the
    /// lookups of the others.
    pub(crate) fn mark_levels(&mut self) {
        use statewall_common::xfsm::{LEVEL_ANY, LEVEL_PORT, LEVEL_PROTO};
        let keys: Vec<TransKey> = self.trans_entries(0).map(|(k, _)| k).collect();
        for k in keys {
            let level = match (k.proto, k.port) {
                (0, _) => LEVEL_ANY,
                (_, 0) => LEVEL_PROTO,
                _ => LEVEL_PORT,
            };
            if let Some(m) = self.machines.get_mut(k.machine as usize) {
                m.levels |= level;
            }
        }
    }

    /// Bit set of the machines the hooks run (enabled, not a switch's).
    pub fn mask(&self) -> u32 {
        self.machines
            .iter()
            .enumerate()
            .filter(|(_, m)| m.enabled != 0)
            .fold(0, |a, (i, _)| a | 1 << i)
            & !self.switch_mask
    }

    /// The `CTL_GEN` bits that turn the per-packet fast path off: `CTL_SLOW` when some
    /// enabled machine keys no address or acts on any port of any protocol from DEFAULT,
    /// the per-protocol bits when it acts on any port of that protocol.
    pub fn slow(&self) -> u32 {
        let mut bits = 0;
        for (m, mach) in self.machines.iter().enumerate() {
            if mach.enabled == 0 || self.switch_mask & (1 << m) != 0 {
                continue;
            }
            // No IP address in the key (none, or MACs only): the address filter cannot
            // rule a packet out.
            let l = &mach.lookup;
            if (l.a_src[0] | l.a_src[1] | l.a_dst[0] | l.a_dst[1]) == 0 {
                bits |= CTL_SLOW;
            }
            let any_port = self
                .trans
                .keys()
                .copied()
                .chain(self.cond_trans.keys().map(|k| k.0))
                .filter(|&(mm, st, _, _, port)| {
                    mm as usize == m && st == STATE_DEFAULT && port == 0
                });
            let syn_only = mach.any_protos & statewall_common::xfsm::ANY_TCP_SYN != 0;
            for (_, _, _, p, _) in any_port {
                bits |= match p {
                    0 => CTL_SLOW,
                    6 if syn_only => statewall_common::xfsm::CTL_SLOW_TCP_SYN,
                    p => slow_bit(p),
                };
            }
        }
        bits
    }

    /// Whether some condition or update reads the clock as a value (`now`, `since`,
    /// `gsince`): the kernel then reads the precise clock for the packets of the hook
    /// ([`CTL_PRECISE`](statewall_common::xfsm::CTL_PRECISE)).
    pub fn reads_clock(&self) -> bool {
        use statewall_common::xfsm::regs::{opnd, Operand};
        let clock = |o: &Operand| matches!(o.kind, opnd::NOW | opnd::SINCE | opnd::GSINCE);
        self.conds.iter().any(|cs| {
            cs.c.iter()
                .take(cs.n as usize)
                .any(|c| clock(&c.a) || clock(&c.b))
        }) || self
            .upd_sets
            .iter()
            .any(|u| u.u.iter().take(u.n as usize).any(|x| clock(&x.src)))
    }

    /// The [`CTL_GEN`](statewall_common::xfsm::CTL_GEN) word that switches to generation `generation` holding these tables.
    pub fn ctl_word(&self, generation: u32) -> u32 {
        let payload = if self.payloads.is_empty() {
            0
        } else {
            CTL_PAYLOAD
        };
        let precise = if self.reads_clock() {
            statewall_common::xfsm::CTL_PRECISE
        } else {
            0
        };
        generation
            | self.slow()
            | payload
            | precise
            | self.mask() << 8
            | self.switch_mask << statewall_common::xfsm::CTL_SWITCH_SHIFT
            | if self.exempt_mask != 0 {
                statewall_common::xfsm::CTL_HAS_EXEMPT
            } else {
                0
            }
    }

    /// The id ([`Trans::payload`]) of a payload pattern, added if new.
    pub(crate) fn payload_id(&mut self, p: &Payload) -> u8 {
        match self.payloads.iter().position(|x| x == p) {
            Some(i) => (i + 1) as u8,
            None => {
                self.payloads.push(*p);
                self.payloads.len() as u8
            }
        }
    }

    /// The id ([`Trans::act`]) of an action set, added if new; `None` when the
    /// generation has no room for another.
    pub(crate) fn act_id(&mut self, a: ActSet) -> Option<u8> {
        match self.act_sets.iter().position(|x| *x == a) {
            Some(i) => Some(i as u8 + 1),
            None if self.act_sets.len() < statewall_common::xfsm::acts::MAX_ACT_SETS as usize => {
                self.act_sets.push(a);
                Some(self.act_sets.len() as u8)
            }
            None => None,
        }
    }

    /// The name of a state of machine `m`.
    pub fn state_name(&self, m: usize, state: u8) -> String {
        self.state_names
            .get(m)
            .and_then(|v| v.get(state as usize))
            .cloned()
            .unwrap_or_else(|| format!("state {state}"))
    }
}
