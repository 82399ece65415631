//! The embedded kernel object and the names of what it holds.

use aya::{Ebpf, EbpfLoader};
use statewall_common::firewall::GLOBAL_FW_STORES_ORDERED;

/// The compiled `statewall-ebpf` object (built by `build.rs`).
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/statewall.bpf.o"));

/// tc program of the gate stage.
pub const PROG_GATE: &str = "sw_gate";
/// tc program of the xfsm stage (OpenState engine; port knocking), before the gate.
pub const PROG_XFSM: &str = "sw_xfsm";
/// The `detect` stage's source blocks (tcx ingress, first).
pub const PROG_DETECT: &str = "sw_detect";
/// tc program of the xfsm stage on egress (raw machines with egress transitions).
pub const PROG_XFSM_EGRESS: &str = "sw_xfsm_egress";
/// tc program of the `[[switch]]` ports: runs their machines and forwards (last on the
/// tcx ingress hook).
pub const PROG_SWITCH: &str = "sw_switch";
/// tc program of the firewall stage, ingress chains.
pub const PROG_FW_INGRESS: &str = "sw_fw_ingress";
/// tc program of the firewall stage, egress chains.
pub const PROG_FW_EGRESS: &str = "sw_fw_egress";
/// XDP ingress program: the ingress stages (xfsm, gate, then the firewall's ingress chain
/// where it runs in XDP) in chain order.
pub const PROG_XDP_INGRESS: &str = "sw_xdp_ingress";
/// XDP program of the firewall's ingress chains alone (an XDP instance on an interface
/// where the gates do not run).
pub const PROG_FW_XDP: &str = "sw_fw_xdp";
/// Parser probe (tc), test-run only.
pub const PROG_PARSE_TC: &str = "sw_parse_tc";
/// Parser probe (XDP), test-run only.
pub const PROG_PARSE_XDP: &str = "sw_parse_xdp";
/// Empty tc program: the benchmark baseline.
pub const PROG_EMPTY_TC: &str = "sw_empty_tc";
/// Empty XDP program: the benchmark baseline.
pub const PROG_EMPTY_XDP: &str = "sw_empty_xdp";
/// XDP program that sends every frame back out (`XDP_TX`): the benchmark's traffic
/// generator, run with live frames, never attached.
pub const PROG_BENCH_TX: &str = "sw_bench_tx";
/// A token-bucket policer written by hand (never attached): the yardstick of the
/// extended machines' benchmark.
pub const PROG_BENCH_POLICER: &str = "sw_bench_policer";
/// The SYN-flood guard of `examples/efsm/syn-flood.toml` written by hand (never attached):
/// the yardstick of that machine's benchmark row.
pub const PROG_BENCH_SYNGUARD: &str = "sw_bench_synguard";

/// Maps the daemon pins (all but the test-only probe output).
pub const PINNED_MAPS: &[&str] = &[
    statewall_common::maps::MAP_CLOCK,
    statewall_common::maps::MAP_GATE_PORTS,
    statewall_common::maps::MAP_GATE_GRANTS,
    statewall_common::maps::MAP_GATE_STATS,
    statewall_common::maps::MAP_GATE_FLOWS,
    statewall_common::maps::MAP_GATE_CONF,
    statewall_common::maps::MAP_GATE_LIMITS,
    statewall_common::xfsm::MAP_MACHINES,
    statewall_common::xfsm::MAP_TRANS,
    statewall_common::xfsm::MAP_PORTS,
    statewall_common::xfsm::MAP_GRANT_SETS,
    statewall_common::xfsm::MAP_CTL,
    statewall_common::xfsm::MAP_STATES,
    statewall_common::xfsm::MAP_LOCKS,
    statewall_common::xfsm::MAP_ACTIVE,
    statewall_common::xfsm::MAP_ADDR_ACTIVE,
    statewall_common::xfsm::MAP_STATS,
    statewall_common::xfsm::MAP_TCOUNT,
    statewall_common::xfsm::MAP_ONCE,
    statewall_common::xfsm::MAP_PAYLOADS,
    statewall_common::xfsm::regs::MAP_CONDS,
    statewall_common::xfsm::regs::MAP_UPDATES,
    statewall_common::xfsm::regs::MAP_REGS,
    statewall_common::xfsm::regs::MAP_GLOBALS,
    statewall_common::xfsm::acts::MAP_ACTS,
    statewall_common::xfsm::MAP_FIXED_STATES,
    statewall_common::xfsm::regs::MAP_FIXED_REGS,
    statewall_common::xfsm::acts::MAP_SWITCH,
    statewall_common::xfsm::acts::MAP_SWITCH_IF,
    statewall_common::spa::MAP_SPA_CONF,
    statewall_common::spa::MAP_SPA_TAGS,
    statewall_common::spa::MAP_SPA_RATE,
    statewall_common::spa::MAP_SPA_EVENTS,
    statewall_common::spa::MAP_SPA_STATS,
    statewall_common::firewall::MAP_FW_CTL,
    statewall_common::firewall::MAP_FW_CHAINS,
    statewall_common::firewall::MAP_FW_IFACES,
    statewall_common::firewall::MAP_FW_IFIDX,
    statewall_common::firewall::MAP_FW_BITSETS,
    statewall_common::firewall::MAP_FW_SRC,
    statewall_common::firewall::MAP_FW_DST,
    statewall_common::firewall::MAP_FW_SPORT,
    statewall_common::firewall::MAP_FW_DPORT,
    statewall_common::firewall::MAP_FW_V4,
    statewall_common::firewall::MAP_FW_SMALL,
    statewall_common::firewall::MAP_FW_ACTIONS,
    statewall_common::firewall::MAP_FW_RULEID,
    statewall_common::firewall::MAP_FW_RANK,
    statewall_common::firewall::MAP_FW_LINEAR,
    statewall_common::firewall::MAP_FW_GUARD,
    statewall_common::firewall::MAP_FW_STATS,
    statewall_common::firewall::MAP_FW_LOG,
    statewall_common::firewall::MAP_FW_COUNTERS,
    statewall_common::ct::MAP_CT,
    statewall_common::ct::MAP_CT_CONF,
    statewall_common::xfsm::MAP_EVENTS,
    statewall_common::detect::MAP_ALLOW,
    statewall_common::detect::MAP_BLOCK,
    statewall_common::detect::MAP_COUNT,
    statewall_common::detect::MAP_DEST,
    statewall_common::detect::MAP_SYNS,
];

/// A short stable identifier of the embedded object (FNV-1a 64 of its bytes), recorded in
/// the pins so that a restart can tell whether the pinned programs are this build's.
pub fn object_id() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in OBJECT {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Whether the firewall's guard may leave a classification with a plain add
/// ([`GLOBAL_FW_STORES_ORDERED`]): the running kernel is x86 (total store order: a store
/// stays after the loads before it) and not PREEMPT_RT (where a classification can be
/// preempted by another on its CPU). Anything else, or a question that cannot be
/// answered, keeps the atomic add.
pub fn stores_ordered() -> bool {
    // SAFETY: `uname` fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    // SAFETY: `machine` is NUL-terminated by `uname`.
    let machine = unsafe { std::ffi::CStr::from_ptr(u.machine.as_ptr()) }.to_bytes();
    let x86 = machine == b"x86_64"
        || (machine.len() == 4 && machine[0] == b'i' && machine.ends_with(b"86"));
    let realtime = std::fs::read_to_string("/sys/kernel/realtime")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    x86 && !realtime
}

/// A loader of [`OBJECT`] with its globals set for the running kernel (every load of the
/// object goes through it).
pub fn loader() -> EbpfLoader<'static> {
    loader_ordered(stores_ordered())
}

/// [`loader`], with [`GLOBAL_FW_STORES_ORDERED`] as given (a test runs the firewall both
/// ways).
pub fn loader_ordered(ordered: bool) -> EbpfLoader<'static> {
    static YES: u32 = 1;
    static NO: u32 = 0;
    let mut l = EbpfLoader::new();
    l.override_global(
        GLOBAL_FW_STORES_ORDERED,
        if ordered { &YES } else { &NO },
        true,
    );
    l
}

/// Loads the object from loader `l` ([`loader`], or [`loader_ordered`]) with private,
/// unpinned maps, some resized (`(name, max_entries)`): tests and benchmarks.
pub fn load_private_with<'a>(
    mut l: EbpfLoader<'a>,
    sizes: &[(&'a str, u32)],
) -> Result<Ebpf, aya::EbpfError> {
    for (name, n) in sizes {
        l.map_max_entries(name, *n);
    }
    l.load(OBJECT)
}
