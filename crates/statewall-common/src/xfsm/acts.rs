//! Actions besides pass and drop: set the packet mark, set the DSCP, forward.
//!
//! A transition names an action set ([`super::Trans::act`], 1 + an index into the
//! generation's [`MAP_ACTS`]). Taking it records the actions in the packet's working
//! memory ([`super::Work::fx`] and the values beside it); a later machine's action of the
//! same kind overrides an earlier one. The program that runs the machines applies them
//! after the last machine, and only when no machine dropped the packet:
//! - **mark** sets `skb->mark` (tc hooks only: an XDP frame has no mark);
//! - **DSCP** rewrites the IPv4 TOS / IPv6 traffic-class DSCP bits, ECN kept, the IPv4
//!   header checksum updated (tc hooks only);
//! - **event** sends an event carrying the machine, its states and the lookup key's
//!   registers (reason [`super::reason::ACTION`]), at most [`EVENTS_PER_SEC`] per machine
//!   and second on each CPU (more are not sent); a transition that changes the state
//!   sends its transition event instead;
//! - **forward** is taken only on the ports of a `[[switch]]` (by `sw_switch`, the last
//!   program on those ports' tcx ingress, after every enforcing stage there): to the
//!   interface whose index a per-flow register of the lookup key holds, or flooded to
//!   every other port of the switch when that register is 0 or not one of the switch's
//!   ports, or when the action says `flood`.

/// Action sets per generation.
pub const MAX_ACT_SETS: u32 = 64;
/// Map: action sets, per generation.
pub const MAP_ACTS: &str = "SW_XFSM_ACTS";

/// Action bits ([`ActSet::flags`], and [`super::Work::fx`]).
pub mod act {
    /// Set the packet mark to [`super::ActSet::mark`].
    pub const MARK: u8 = 1;
    /// Set the DSCP to [`super::ActSet::dscp`].
    pub const DSCP: u8 = 2;
    /// Forward to the interface in per-flow register [`super::ActSet::reg`] of the lookup
    /// key (flood when it is 0).
    pub const FWD_REG: u8 = 4;
    /// Flood to the switch's other ports.
    pub const FLOOD: u8 = 8;
    /// (Work only) a forwarding decision was taken: `fwd` holds it (0 = flood).
    pub const FWD: u8 = 16;
    /// Send an event (rate-limited).
    pub const EVENT: u8 = 32;
}

/// Action events per machine and second, on each CPU.
pub const EVENTS_PER_SEC: u64 = 64;
/// Map: per CPU and machine, the current second and the action events sent in it.
pub const MAP_EVRATE: &str = "SW_XFSM_EVRATE";

/// One transition's actions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActSet {
    /// [`act`] bits.
    pub flags: u8,
    /// DSCP (0 to 63).
    pub dscp: u8,
    /// Register for [`act::FWD_REG`].
    pub reg: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Packet mark.
    pub mark: u32,
}

/// Switches (`[[switch]]`) at most.
pub const MAX_SWITCHES: u32 = 4;
/// Ports per switch at most.
pub const MAX_SWITCH_PORTS: usize = 8;
/// Map: switch definitions, by switch id.
pub const MAP_SWITCH: &str = "SW_SWITCH";
/// Map: interface index -> switch id.
pub const MAP_SWITCH_IF: &str = "SW_SWITCH_IF";

/// A switch: its ports and, per table generation, the machines it runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchDef {
    /// Machines (bit per machine index), per generation.
    pub masks: [u32; 2],
    /// Ports in use.
    pub n: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Interface indexes of the ports.
    pub ports: [u32; MAX_SWITCH_PORTS],
}

impl SwitchDef {
    /// True when `ifindex` is one of the ports.
    #[inline(always)]
    pub fn has(&self, ifindex: u32) -> bool {
        let mut i = 0;
        while i < MAX_SWITCH_PORTS {
            if (i as u32) < self.n && self.ports[i] == ifindex {
                return true;
            }
            i += 1;
        }
        false
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), explicit padding.
    unsafe impl aya::Pod for super::ActSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SwitchDef {}
}
