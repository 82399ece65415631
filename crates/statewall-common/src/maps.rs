//! Map names, keys and values shared by the kernel programs and user space.
//!
//! Every map is pinned by name under `<bpffs-root>/maps/`. Each type is `#[repr(C)]` with
//! explicit padding so that its layout is the same on both sides.

/// Map flag (`BPF_F_MMAPABLE`): an `ARRAY` whose values user space may map into its memory
/// and read or write there without a syscall per entry.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Clock offsets, an `ARRAY` of `u64` (see [`CLOCK_SLOT_TEST_OFFSET`]).
pub const MAP_CLOCK: &str = "SW_CLOCK";
/// Index in [`MAP_CLOCK`]: nanoseconds added to `bpf_ktime_get_ns()` by every program.
/// Zero in production; tests move time forward by raising it instead of sleeping.
pub const CLOCK_SLOT_TEST_OFFSET: u32 = 0;
/// Index in [`MAP_CLOCK`]: `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns, written by the
/// daemon when it starts and again every second (so wall-clock steps reach the kernel
/// within a second), so kernel programs can produce epoch timestamps.
pub const CLOCK_SLOT_EPOCH_OFFSET: u32 = 1;
/// Index in [`MAP_CLOCK`]: when non-zero, the kernel clock is frozen at this value (tests
/// that compare the kernel with the reference need both to see the same instant).
pub const CLOCK_SLOT_FROZEN: u32 = 2;
/// Number of slots in [`MAP_CLOCK`].
pub const CLOCK_SLOTS: u32 = 3;

/// Gate stage: protected ports, an `ARRAY` of `u8` indexed by port; each entry is a bit
/// set of [`GATE_TCP`] / [`GATE_UDP`]. Slot [`GATE_SUMMARY_SLOT`] holds the OR of all ports.
pub const MAP_GATE_PORTS: &str = "SW_GATE_PORTS";
/// Entries in [`MAP_GATE_PORTS`]: every port plus the summary slot.
pub const GATE_PORTS_LEN: u32 = 65537;
/// Slot of [`MAP_GATE_PORTS`] holding the OR of every port's bits.
pub const GATE_SUMMARY_SLOT: u32 = 65536;
/// Port bit: TCP to this port is protected.
pub const GATE_TCP: u8 = 1;
/// Port bit: UDP to this port is protected.
pub const GATE_UDP: u8 = 2;
/// Port bit: a refused TCP SYN to this port is answered with a reset (not dropped silently).
pub const GATE_RESET: u8 = 4;
/// Port bit: a refused UDP packet to this port is answered with an ICMP (ICMPv6) port
/// unreachable, as from a closed port.
pub const GATE_UNREACH: u8 = 8;
/// Gate stage: the rate limits of its answers, an `ARRAY` with one [`GateLimits`].
pub const MAP_GATE_LIMITS: &str = "SW_GATE_LIMITS";
/// Gate stage: grants, a preallocated `HASH` of [`GrantKey`] -> [`GrantValue`].
pub const MAP_GATE_GRANTS: &str = "SW_GATE_GRANTS";
/// Gate stage: flows opened under a grant, a preallocated `HASH` of [`FlowKey`] ->
/// [`FlowValue`]. They outlive the grant until idle (not LRU: only granted sources create
/// entries, and a full table refuses new flows rather than evicting live ones).
pub const MAP_GATE_FLOWS: &str = "SW_GATE_FLOWS";
/// Gate stage: flow timeouts, an `ARRAY` with one [`GateConf`].
pub const MAP_GATE_CONF: &str = "SW_GATE_CONF";
/// Gate stage: per-CPU counters, a `PERCPU_ARRAY` of `u64` indexed by [`GateCounter`].
pub const MAP_GATE_STATS: &str = "SW_GATE_STATS";
/// Parser probe output (tests only): an `ARRAY` with one [`crate::parse::PacketInfo`].
pub const MAP_PARSE_OUT: &str = "SW_PARSE_OUT";
/// The hand-written policer's buckets (benchmark only, never pinned).
pub const MAP_BENCH_BUCKETS: &str = "SW_BENCH_BUCKETS";
/// Map of the hand-written SYN-flood guard (benchmark only): the SYN window.
pub const MAP_BENCH_SYNWIN: &str = "SW_BENCH_SYNWIN";
/// Map of the hand-written SYN-flood guard (benchmark only): flows probed.
pub const MAP_BENCH_PROBED: &str = "SW_BENCH_PROBED";
/// Per-CPU scratch shared by the kernel programs (kernel-private, never pinned).
pub const MAP_SCRATCH: &str = "SW_SCRATCH";

/// Address family tags used in keys.
pub const FAMILY_V4: u8 = 4;
/// IPv6 family tag.
pub const FAMILY_V6: u8 = 6;

/// An address as the kernel's keys and events hold it: `family` [`FAMILY_V6`], or IPv4
/// in the first 4 bytes.
pub fn addr_ip(family: u8, a: &[u8; 16]) -> core::net::IpAddr {
    if family == FAMILY_V6 {
        core::net::IpAddr::from(*a)
    } else {
        core::net::IpAddr::from([a[0], a[1], a[2], a[3]])
    }
}

/// An address as the kernel's keys hold it ([`addr_ip`] reads it back): (family,
/// 16 bytes), IPv4 (an IPv4-mapped IPv6 address included) in the first 4 bytes.
pub fn ip_bytes(addr: core::net::IpAddr) -> (u8, [u8; 16]) {
    match unmapped(addr) {
        core::net::IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, b)
        }
        core::net::IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps; any other unchanged.
pub fn unmapped(a: core::net::IpAddr) -> core::net::IpAddr {
    match a {
        core::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(core::net::IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

/// The gate key of a source and (protocol number, port); an IPv4-mapped IPv6 address is
/// the IPv4 host.
pub fn key_for(addr: core::net::IpAddr, proto: u8, port: u16) -> GrantKey {
    let (family, addr) = ip_bytes(addr);
    GrantKey {
        proto,
        port,
        family,
        addr,
    }
}

/// The address in a grant key.
pub fn key_addr(k: &GrantKey) -> core::net::IpAddr {
    addr_ip(k.family, &k.addr)
}

/// Key of a grant: this source may open new flows to (`proto`, `port`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct GrantKey {
    /// Source address; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port, host byte order.
    pub port: u16,
}

/// Value of a grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GrantValue {
    /// Expiry, in the kernel clock (monotonic ns plus the test offset).
    pub expires_ns: u64,
    /// Who granted it: [`GRANT_BY_API`], later knock doors and SPA actions.
    pub origin: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Key of a flow opened through the gate: the packet's 5-tuple as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address; IPv4 in the first 4 bytes, the rest zero.
    pub saddr: [u8; 16],
    /// Destination address, same layout.
    pub daddr: [u8; 16],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// Value of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// The flow lets packets through until then (kernel clock); every packet of it
    /// pushes this forward by the idle timeout of its protocol and stage.
    pub expires_ns: u64,
    /// Non-zero once a TCP FIN or RST was seen: the short closing timeout applies.
    pub closing: u8,
    /// Explicit padding.
    pub _pad: [u8; 7],
}

/// Flow timeouts of the gate (one entry of [`MAP_GATE_CONF`]). A zero idle timeout turns
/// flow tracking off for that protocol: connections then live only as long as the grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateConf {
    /// Idle timeout of a TCP flow, ns.
    pub tcp_idle_ns: u64,
    /// Idle timeout of a TCP flow after a FIN or RST, ns.
    pub tcp_closing_ns: u64,
    /// Idle timeout of a UDP flow, ns.
    pub udp_idle_ns: u64,
}

/// Grant created by hand (CLI or API).
pub const GRANT_BY_API: u32 = 1;
/// Grant created by an xfsm transition (a knock door); the grant set id is added.
pub const GRANT_BY_XFSM: u32 = 0x100;
/// Grant origin: an SPA packet (pkd or fwknop).
pub const GRANT_BY_SPA: u32 = 0x200;
/// Grant origin: another host of the fleet (installed from the cluster's shared grants).
pub const GRANT_BY_CLUSTER: u32 = 0x300;

/// Counters of the gate stage (index into [`MAP_GATE_STATS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateCounter {
    /// Packets the stage looked at.
    Seen = 0,
    /// Packets to a protected port let through by a live grant.
    Granted = 1,
    /// Packets to a protected port dropped for want of a grant.
    Dropped = 2,
    /// Malformed IP packets (status MALFORMED) dropped by the gate when they could be
    /// aimed at a protected port (dropped; fail closed).
    Malformed = 3,
    /// Packets to a protected port let through by a flow opened under a grant that has
    /// since ended.
    Flow = 4,
    /// Flows a granted packet could not record because the flow table was full (the
    /// packet passed; the flow lives only as long as its grant).
    FlowsFull = 5,
    /// Refused SYNs answered with a TCP reset (ports whose style is `reset`).
    Reset = 6,
    /// Refused SYNs not answered because the reset bucket was empty (dropped).
    ResetLimited = 7,
    /// Refused UDP packets answered with an ICMP port unreachable.
    Unreachable = 8,
    /// Refused UDP packets not answered because the ICMP bucket was empty (dropped).
    UnreachableLimited = 9,
}

/// Number of gate counters.
pub const GATE_COUNTERS: u32 = 10;
/// Names of the gate counters, in index order, as they appear in `/metrics` and the API.
pub const GATE_COUNTER_NAMES: [&str; GATE_COUNTERS as usize] = [
    "seen",
    "granted",
    "dropped",
    "malformed",
    "flow",
    "flows_full",
    "reset",
    "reset_limited",
    "unreachable",
    "unreachable_limited",
];

/// The gate's answer rates: two token buckets (GCRA: a theoretical arrival time that each
/// answer pushes forward by the interval, admitted while it is not ahead of now), one for
/// TCP resets and one for ICMP port unreachables, shared by every CPU. An interval of 0
/// means no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateLimits {
    /// Nanoseconds per reset (1e9 / resets per second).
    pub rst_interval_ns: u64,
    /// Resets allowed at once.
    pub rst_burst: u64,
    /// Nanoseconds per ICMP message.
    pub icmp_interval_ns: u64,
    /// ICMP messages allowed at once.
    pub icmp_burst: u64,
    /// Kernel state: the resets' theoretical arrival time.
    pub rst_tat: u64,
    /// Kernel state: the ICMP messages'.
    pub icmp_tat: u64,
}

#[cfg(feature = "user")]
mod pod_limits {
    // SAFETY: plain old data, repr(C), u64 fields only.
    unsafe impl aya::Pod for super::GateLimits {}
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding, any bit pattern valid.
    unsafe impl aya::Pod for super::GrantKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GrantValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GateConf {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::IpAddr;

    #[test]
    fn addresses_read_back_from_their_key_bytes() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let (f, b) = ip_bytes(v4);
        assert_eq!((f, &b[4..]), (FAMILY_V4, &[0u8; 12][..]));
        assert_eq!(addr_ip(f, &b), v4);
        // An IPv4-mapped IPv6 address is the IPv4 host.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_bytes(mapped), (f, b));
        assert_eq!(unmapped(mapped), v4);
        // Other IPv6 addresses stay IPv6, IPv4-compatible ones included.
        for a in ["::1", "::", "::192.0.2.7", "2001:db8::1"] {
            let a: IpAddr = a.parse().unwrap();
            let (f, b) = ip_bytes(a);
            assert_eq!(f, FAMILY_V6, "{a}");
            assert_eq!(addr_ip(f, &b), a);
            assert_eq!(unmapped(a), a);
        }
        let k = key_for(mapped, 6, 22);
        assert_eq!(
            (k.family, k.proto, k.port, key_addr(&k)),
            (FAMILY_V4, 6, 22, v4)
        );
    }
}
