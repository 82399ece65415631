//! The `gate` stage: protected ports open only to sources holding a grant, and to the
//! flows opened while they held one. Same decision as `statewall_common::gate::decide`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use statewall_common::{
    gate::{closes_connection, flow_idle, flow_key, grant_key, opens_connection, port_bit},
    maps::{
        FlowKey, FlowValue, GateConf, GateCounter, GateLimits, GrantKey, GrantValue, GATE_COUNTERS,
        GATE_PORTS_LEN, GATE_RESET, GATE_SUMMARY_SLOT, GATE_TCP, GATE_UDP, GATE_UNREACH,
    },
    parse::proto,
    parse::{has_ports, is_ipv6_ext, PacketInfo, Status, FLAG_L2_GROUP, FLAG_NONFIRST_FRAG},
    reset::VERDICT_RESET,
    unreach::VERDICT_UNREACH,
    TCX_NEXT, TC_ACT_SHOT,
};

use crate::{atomic::fetch_add, clock::now_ns};

#[map(name = "SW_GATE_PORTS")]
static SW_GATE_PORTS: Array<u8> = Array::with_max_entries(GATE_PORTS_LEN, 0);

/// Preallocated (no BPF_F_NO_PREALLOC, not LRU): a full table refuses new grants.
#[map(name = "SW_GATE_GRANTS")]
pub(crate) static SW_GATE_GRANTS: HashMap<GrantKey, GrantValue> =
    HashMap::with_max_entries(4096, 0);

/// Preallocated, not LRU: a full table refuses new flows, live ones are never evicted.
#[map(name = "SW_GATE_FLOWS")]
static SW_GATE_FLOWS: HashMap<FlowKey, FlowValue> = HashMap::with_max_entries(16384, 0);

#[map(name = "SW_GATE_CONF")]
static SW_GATE_CONF: Array<GateConf> = Array::with_max_entries(1, 0);

#[map(name = "SW_GATE_STATS")]
static SW_GATE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GATE_COUNTERS, 0);

#[map(name = "SW_GATE_LIMITS")]
static SW_GATE_LIMITS: Array<GateLimits> = Array::with_max_entries(1, 0);

/// Takes a token of a bucket (`tat`: its theoretical arrival time, shared by every CPU):
/// true when an answer may go. An interval of 0 is no limit.
#[inline(always)]
fn admit(tat: *mut u64, interval: u64, burst: u64, now: u64) -> bool {
    if interval == 0 {
        return true;
    }
    // An idle bucket holds `burst` tokens, no more. (User space keeps interval x burst
    // below 2^63: the product does not wrap.)
    let floor = now.saturating_sub(interval.wrapping_mul(burst.saturating_sub(1)));
    // SAFETY: `tat` points into the one value of SW_GATE_LIMITS.
    unsafe {
        if core::ptr::read_volatile(tat) < floor {
            core::ptr::write_volatile(tat, floor);
        }
    }
    if fetch_add(tat, interval) <= now {
        return true;
    }
    // Not conforming: the token is given back.
    fetch_add(tat, interval.wrapping_neg());
    false
}

/// A refusal that answers like a closed port, within its bucket: `answer` when admitted,
/// else a drop (counted `limited`).
#[inline(always)]
fn answer_or_drop(icmp: bool, answer: i32) -> i32 {
    let Some(l) = SW_GATE_LIMITS.get_ptr_mut(0) else {
        count(GateCounter::Dropped);
        return TC_ACT_SHOT;
    };
    let now = now_ns();
    // SAFETY: the one value of SW_GATE_LIMITS; fields read once, tokens taken atomically.
    let ok = unsafe {
        if icmp {
            admit(
                core::ptr::addr_of_mut!((*l).icmp_tat),
                (*l).icmp_interval_ns,
                (*l).icmp_burst,
                now,
            )
        } else {
            admit(
                core::ptr::addr_of_mut!((*l).rst_tat),
                (*l).rst_interval_ns,
                (*l).rst_burst,
                now,
            )
        }
    };
    match (ok, icmp) {
        (true, false) => count(GateCounter::Reset),
        (true, true) => count(GateCounter::Unreachable),
        (false, false) => count(GateCounter::ResetLimited),
        (false, true) => count(GateCounter::UnreachableLimited),
    }
    if ok {
        answer
    } else {
        count(GateCounter::Dropped);
        TC_ACT_SHOT
    }
}

/// Whether a refusal of `p` may be answered (before a token is taken): its L4 header
/// follows the IP header directly (no IPv4 options, no IPv6 extension header, so no IPv6
/// fragment), it is no later fragment, it came to a unicast MAC, and neither address is
/// one a host never answers (unspecified, multicast, IPv4 class E and broadcast, and
/// 0.0.0.0/8 as a source).
#[inline(always)]
fn answerable(p: &PacketInfo) -> bool {
    if p.flags & (FLAG_L2_GROUP | FLAG_NONFIRST_FRAG) != 0 {
        return false;
    }
    if p.family == 4 {
        let (s, d) = (p.saddr[0], p.daddr[0]);
        p.l4_off == p.l3_off + 20
            && s != 0
            && s & 0xe0 != 0xe0
            && d & 0xe0 != 0xe0
            && u32::from_ne_bytes([p.daddr[0], p.daddr[1], p.daddr[2], p.daddr[3]]) != 0
    } else {
        let mut any = 0u8;
        let mut i = 0;
        while i < 16 {
            any |= p.saddr[i];
            i += 1;
        }
        p.l4_off == p.l3_off + 40 && any != 0 && p.saddr[0] != 0xff && p.daddr[0] != 0xff
    }
}

/// A refused packet to a protected port: a UDP packet to a port whose style is
/// `GATE_UNREACH` is answered with a port unreachable when [`answerable`], anything else
/// dropped.
#[inline(always)]
fn refuse(p: &PacketInfo) -> i32 {
    if p.l4proto == proto::UDP && bits(p.dport as u32) & GATE_UNREACH != 0 && answerable(p) {
        return answer_or_drop(true, VERDICT_UNREACH);
    }
    count(GateCounter::Dropped);
    TC_ACT_SHOT
}

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
    let mut bit = port_bit(p.l4proto);
    // A later IPv6 fragment whose first was not seen and whose header names an extension
    // header (Destination Options after the Fragment header): any protocol with ports.
    if p.family == 6 && p.flags & FLAG_NONFIRST_FRAG != 0 && is_ipv6_ext(p.l4proto) {
        bit = GATE_TCP | GATE_UDP;
    }
    if bit == 0 {
        return TCX_NEXT;
    }
    // Ports from this packet's L4 header, or from its first fragment's.
    if !has_ports(p) {
        if summary & bit != 0 {
            count(GateCounter::Dropped);
            return TC_ACT_SHOT;
        }
        return TCX_NEXT;
    }
    if bits(p.dport as u32) & bit == 0 {
        return TCX_NEXT;
    }
    protected(p)
}

/// A packet to a protected port (`p` is in map memory: see `scratch` in main.rs).
#[inline(never)]
fn protected(p: &PacketInfo) -> i32 {
    let key = grant_key(p);
    let (l4proto, tcp_flags) = (p.l4proto, p.tcp_flags);
    let grant = unsafe { SW_GATE_GRANTS.get(&key) };
    // The clock only when it decides something: a packet that would open a connection
    // without any grant (the common case in a scan or a flood) is refused without it.
    let opens = opens_connection(l4proto, tcp_flags);
    let now = if grant.is_none() && opens {
        0
    } else {
        now_ns()
    };
    let granted = match grant {
        Some(g) => g.expires_ns > now,
        None => false,
    };
    if !granted && opens {
        if bits(p.dport as u32) & GATE_RESET != 0 && answerable(p) {
            return answer_or_drop(false, VERDICT_RESET);
        }
        count(GateCounter::Dropped);
        return TC_ACT_SHOT;
    }
    let conf = match SW_GATE_CONF.get(0) {
        Some(c) => *c,
        None => GateConf::default(),
    };
    if flow_idle(&conf, l4proto, false) == 0 {
        return if granted {
            count(GateCounter::Granted);
            TCX_NEXT
        } else {
            refuse(p)
        };
    }
    let fk = &flow_key(p);
    let closes = closes_connection(l4proto, tcp_flags);
    if let Some(v) = SW_GATE_FLOWS.get_ptr_mut(fk) {
        let v = unsafe { &mut *v };
        if v.expires_ns > now {
            if opens {
                v.closing = 0;
            }
            v.closing |= closes as u8;
            v.expires_ns = now + flow_idle(&conf, l4proto, v.closing != 0);
            if granted {
                count(GateCounter::Granted);
            } else {
                count(GateCounter::Flow);
            }
            return TCX_NEXT;
        }
        let _ = SW_GATE_FLOWS.remove(fk);
    }
    if !granted {
        return refuse(p);
    }
    let v = FlowValue {
        expires_ns: now + flow_idle(&conf, l4proto, closes),
        closing: closes as u8,
        _pad: [0; 7],
    };
    if SW_GATE_FLOWS.insert(fk, &v, 0).is_err() {
        count(GateCounter::FlowsFull);
    }
    count(GateCounter::Granted);
    TCX_NEXT
}
