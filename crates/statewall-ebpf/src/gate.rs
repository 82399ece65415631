//! The `gate` stage: protected ports open only to sources holding a grant.
//! Same decision as `statewall_common::gate::decide`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use statewall_common::{
    gate::{grant_key, port_bit},
    maps::{
        GateCounter, GrantKey, GrantValue, GATE_COUNTERS, GATE_PORTS_LEN, GATE_SUMMARY_SLOT,
        GATE_TCP, GATE_UDP,
    },
    parse::{PacketInfo, Status, FLAG_L4, FLAG_NONFIRST_FRAG},
    TCX_NEXT, TC_ACT_SHOT,
};

use crate::clock::now_ns;

#[map(name = "SW_GATE_PORTS")]
static SW_GATE_PORTS: Array<u8> = Array::with_max_entries(GATE_PORTS_LEN, 0);

/// Preallocated (no BPF_F_NO_PREALLOC, not LRU): a full table refuses new grants.
#[map(name = "SW_GATE_GRANTS")]
pub(crate) static SW_GATE_GRANTS: HashMap<GrantKey, GrantValue> =
    HashMap::with_max_entries(4096, 0);

#[map(name = "SW_GATE_STATS")]
static SW_GATE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GATE_COUNTERS, 0);

#[inline(always)]
fn count(c: GateCounter) {
    if let Some(v) = SW_GATE_STATS.get_ptr_mut(c as u32) {
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn bits(slot: u32) -> u8 {
    match SW_GATE_PORTS.get(slot) {
        Some(b) => *b,
        None => 0,
    }
}

/// Runs the gate on a parsed packet: `TCX_NEXT` or `TC_ACT_SHOT`.
#[inline(always)]
pub fn run(p: &PacketInfo) -> i32 {
    count(GateCounter::Seen);
    if p.status == Status::NonIp as u8 {
        return TCX_NEXT;
    }
    let summary = bits(GATE_SUMMARY_SLOT);
    if p.status == Status::Malformed as u8 {
        if summary & (GATE_TCP | GATE_UDP) != 0 {
            count(GateCounter::Malformed);
            return TC_ACT_SHOT;
        }
        return TCX_NEXT;
    }
    let bit = port_bit(p.l4proto);
    if bit == 0 {
        return TCX_NEXT;
    }
    if p.flags & FLAG_NONFIRST_FRAG != 0 || p.flags & FLAG_L4 == 0 {
        if summary & bit != 0 {
            count(GateCounter::Dropped);
            return TC_ACT_SHOT;
        }
        return TCX_NEXT;
    }
    if bits(p.dport as u32) & bit == 0 {
        return TCX_NEXT;
    }
    let key = grant_key(p);
    if let Some(g) = unsafe { SW_GATE_GRANTS.get(&key) } {
        if g.expires_ns > now_ns() {
            count(GateCounter::Granted);
            return TCX_NEXT;
        }
    }
    count(GateCounter::Dropped);
    TC_ACT_SHOT
}
