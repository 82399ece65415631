//! A parsed packet through the tables: the fields a packet selects, the AND of their
//! bitsets and the first matching rule ([`classify`], the reference the kernel program
//! follows step by step over its maps).

use super::*;
use crate::parse::proto;
use crate::parse::{PacketInfo, FLAG_L4, FLAG_NONFIRST_FRAG};

/// Everything [`classify`] reads.
pub trait FwTables {
    /// The active generation.
    fn generation(&self) -> u32;
    /// A chain's configuration.
    fn chain(&self, generation: u32, chain: u32) -> ChainConf;
    /// Longest-prefix match in the source (`dst` false) or destination trie.
    fn prefix(&self, dst: bool, k: &LpmKey) -> Option<u32>;
    /// A port's bitset id.
    fn port(&self, dst: bool, slot: u32) -> u32;
    /// A protocol's or flags' bitset id.
    fn small(&self, slot: u32) -> u32;
    /// Word `w` of a stored bitset's summary (`summary` true) or of its rule words (one-rule
    /// sets, [`SINGLE`], are not stored: [`and_word`] decodes them).
    fn word(&self, id: u32, summary: bool, w: usize) -> u64;
    /// The action of the rule at a position ([`rule_slot`]).
    fn action(&self, slot: u32) -> u8;
}

/// The bitset ids a packet selects, one per used field (by field index: the bit number
/// of its [`field`] bit), each with the field's wild set ([`NO_SET`] when it has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Ids.
    pub ids: [u32; 7],
    /// The fields' wild sets.
    pub wild: [u32; 7],
    /// [`field`] bits of the fields selected.
    pub fields: u32,
}

impl Selection {
    /// Sets field `f`'s ids (a constant index at every call: no variable stack offset
    /// for the verifier).
    #[inline(always)]
    fn push(&mut self, f: u8, id: u32, wild: u32) {
        let i = (f.trailing_zeros() & 7) as usize;
        if i < 7 {
            self.ids[i] = id;
            self.wild[i] = wild;
            self.fields |= f as u32;
        }
    }
}

/// What the chain decides for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwVerdict {
    /// No chain: on to the next stage.
    Pass,
    /// The rule at position `r` matched with this action ([`ACT_DROP`] or [`ACT_ACCEPT`]).
    Rule(u32, u8),
    /// No rule matched: the default action.
    Default(u8),
    /// A packet of a known connection, accepted before the rules (`accept_established`).
    Established,
}

/// The key of the packet's source (`dst` false) or destination address.
#[inline(always)]
pub fn lpm_key(p: &PacketInfo, generation: u32, chain: u32, dst: bool) -> LpmKey {
    let bits = if p.family == 6 { 128 } else { 32 };
    LpmKey {
        prefixlen: 32 + bits,
        generation: generation as u8,
        chain: chain as u8,
        family: p.family,
        _pad: 0,
        addr: if dst { p.daddr } else { p.saddr },
    }
}

/// The packet's (source, destination) ports as the rules see them: (0, 0) for a packet
/// without ports (another protocol, or a later fragment whose first was not seen), and
/// port 0 is never a rule's.
#[inline(always)]
pub fn ports_of(p: &PacketInfo) -> (u16, u16) {
    // Later fragments whose first fragment was seen take its ports (`frag`).
    if crate::parse::has_ports(p) && (p.l4proto == proto::TCP || p.l4proto == proto::UDP) {
        (p.sport, p.dport)
    } else {
        (0, 0)
    }
}

/// The packet's TCP flags as the rules see them: `None` unless it is TCP and whole (or a
/// first fragment).
#[inline(always)]
pub fn tcp_flags_of(p: &PacketInfo) -> Option<u8> {
    let l4 = p.flags & FLAG_L4 != 0 && p.flags & FLAG_NONFIRST_FRAG == 0;
    (l4 && p.l4proto == proto::TCP).then_some(p.tcp_flags)
}

/// The bitset ids of a packet's fields in a chain (`wild`: [`ChainConf::wild`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn select<T: FwTables>(
    t: &T,
    p: &PacketInfo,
    generation: u32,
    chain: u32,
    used: u8,
    wild: u8,
    all: u32,
    ct: u8,
) -> Selection {
    let mut s = Selection::default();
    let wild_of = |f: u8| {
        if wild & f != 0 {
            wild_id(generation, chain, f.trailing_zeros())
        } else {
            NO_SET
        }
    };
    let (sport, dport) = ports_of(p);
    if used & field::SRC != 0 {
        s.push(
            field::SRC,
            t.prefix(false, &lpm_key(p, generation, chain, false))
                .unwrap_or(all),
            wild_of(field::SRC),
        );
    }
    if used & field::DST != 0 {
        s.push(
            field::DST,
            t.prefix(true, &lpm_key(p, generation, chain, true))
                .unwrap_or(all),
            wild_of(field::DST),
        );
    }
    if used & field::PROTO != 0 {
        s.push(
            field::PROTO,
            t.small(small_slot(generation, chain, p.l4proto as u32)),
            wild_of(field::PROTO),
        );
    }
    // Packets without ports take port 0's bitset: the rules that do not constrain the port.
    if used & field::SPORT != 0 {
        s.push(
            field::SPORT,
            t.port(false, port_slot(generation, chain, sport)),
            wild_of(field::SPORT),
        );
    }
    if used & field::DPORT != 0 {
        s.push(
            field::DPORT,
            t.port(true, port_slot(generation, chain, dport)),
            wild_of(field::DPORT),
        );
    }
    if used & field::FLAGS != 0 {
        s.push(
            field::FLAGS,
            t.small(small_slot(generation, chain, flags_index(tcp_flags_of(p)))),
            wild_of(field::FLAGS),
        );
    }
    if used & field::CT != 0 {
        s.push(
            field::CT,
            t.small(small_slot(generation, chain, ct_index(ct))),
            wild_of(field::CT),
        );
    }
    s
}

/// The AND of word `w` (summary or rule word) over the selected bitsets (each ORed with
/// its field's wild set), starting from the chain's all-rules bitset.
#[inline(always)]
pub fn and_word<T: FwTables>(t: &T, s: &Selection, all: u32, summary: bool, w: usize) -> u64 {
    // A one-rule set's words come from its id; the tables hold the others.
    let word = |id: u32| single_word(id, summary, w).unwrap_or_else(|| t.word(id, summary, w));
    let mut x = word(all);
    // Read from memory, not from what the compiler knows select() put there: the verifier
    // then sees one unknown mask, not one path per combination of fields.
    // SAFETY: a plain read of a field of a live reference.
    let fields = unsafe { core::ptr::read_volatile(&s.fields) };
    let mut i = 0;
    while i < 7 {
        if fields & (1 << i) != 0 {
            let mut f = word(s.ids[i]);
            if s.wild[i] != NO_SET {
                f |= word(s.wild[i]);
            }
            x &= f;
        }
        i += 1;
    }
    x
}

/// The position of the first rule of the chain matching the selection, skipping rules whose
/// action is [`ACT_LOG`] (`log(r)` is called for those).
pub fn first_match<T: FwTables, L: FnMut(u32)>(
    t: &T,
    s: &Selection,
    generation: u32,
    chain: u32,
    all: u32,
    mut log: L,
) -> Option<(u32, u8)> {
    for sw in 0..SUMMARY {
        let mut acc = and_word(t, s, all, true, sw);
        while acc != 0 {
            let w = sw * 64 + acc.trailing_zeros() as usize;
            acc &= acc - 1;
            let mut x = and_word(t, s, all, false, w);
            while x != 0 {
                let r = (w * 64) as u32 + x.trailing_zeros();
                x &= x - 1;
                let a = t.action(rule_slot(generation, chain, r));
                if a == ACT_LOG {
                    log(r);
                    continue;
                }
                return Some((r, a));
            }
        }
    }
    None
}

/// The reference: what chain `chain` decides for packet `p` in connection state `ct`
/// (`log` is called for every LOG rule passed on the way).
pub fn classify<T: FwTables, L: FnMut(u32)>(
    t: &T,
    p: &PacketInfo,
    chain: u32,
    ct: u8,
    log: L,
) -> FwVerdict {
    let g = t.generation();
    let c = t.chain(g, chain);
    if c.enabled == 0 || p.status == crate::parse::Status::NonIp as u8 {
        return FwVerdict::Pass;
    }
    // Malformed IP cannot be matched field by field: the chain's default action.
    if p.status == crate::parse::Status::Malformed as u8 {
        return FwVerdict::Default(c.default_action);
    }
    let ct = if c.track != 0 {
        ct
    } else {
        crate::ct_state::NEW
    };
    if c.accept_established != 0
        && (ct == crate::ct_state::ESTABLISHED || ct == crate::ct_state::RELATED)
    {
        return FwVerdict::Established;
    }
    let s = select(t, p, g, chain, c.used, c.wild, c.all, ct);
    match first_match(t, &s, g, chain, c.all, log) {
        Some((r, a)) => FwVerdict::Rule(r, a),
        None => FwVerdict::Default(c.default_action),
    }
}
