//! `[[switch]]`: interfaces tied together by machines whose actions forward frames between
//! them (a learning switch is one machine: see `examples/efsm/learning-switch.toml`).
//!
//! Every port gets `sw_switch` on its tcx ingress, last in the chain: a stage that guards
//! the port (the gate, a firewall instance) runs first, so a forward never skips it. The
//! program runs the switch's machines on every frame, IP or not (ARP), then forwards the
//! frame to the port a machine chose (`bpf_redirect`), or floods it to every other port
//! (`bpf_clone_redirect`), or hands it on to the host when no machine forwarded it.
//!
//! This file says what a switch is made of; `kernel` writes it.

use statewall_common::xfsm::acts::SwitchDef;

use crate::engine::{error::EngineError, netns::ifindex};
use crate::xfsm::config::{SwitchConfig, XfsmConfig};

/// The machine mask of each switch, given the kernel index of each `[[xfsm]]` machine
/// (`first` + its position).
pub fn masks(switches: &[SwitchConfig], machines: &[XfsmConfig], first: usize) -> Vec<u32> {
    switches
        .iter()
        .map(|s| {
            s.machines
                .iter()
                .filter_map(|n| machines.iter().position(|m| &m.name == n))
                .fold(0, |a, i| a | 1 << (first + i))
        })
        .collect()
}

/// The switches as the kernel holds them: ports resolved to interface indexes (an error
/// names a missing one), machine masks in generation `shadow`.
pub fn switch_defs(
    switches: &[SwitchConfig],
    masks: &[u32],
    shadow: u32,
) -> Result<Vec<SwitchDef>, EngineError> {
    let mut defs: Vec<SwitchDef> = Vec::new();
    for (i, s) in switches.iter().enumerate() {
        let mut d = SwitchDef {
            n: s.ports.len() as u32,
            ..Default::default()
        };
        for (j, p) in s.ports.iter().enumerate() {
            let idx = ifindex(s.netns.as_deref(), p);
            if idx == 0 {
                return Err(EngineError::Doors(format!(
                    "[[switch]] {}: no interface {p:?}{}",
                    s.name,
                    s.netns
                        .as_ref()
                        .map(|n| format!(" in namespace {n}"))
                        .unwrap_or_default()
                )));
            }
            d.ports[j] = idx;
        }
        d.masks[shadow as usize & 1] = masks.get(i).copied().unwrap_or(0);
        // Ports are told apart by index alone: two in different namespaces may not share
        // one.
        for (j, other) in defs.iter().enumerate() {
            if let Some(&idx) = d.ports[..d.n as usize]
                .iter()
                .find(|p| other.ports[..other.n as usize].contains(p))
            {
                return Err(EngineError::Doors(format!(
                    "[[switch]] {} and {}: a port of each has interface index {idx} (in different namespaces); give one of them another",
                    switches[j].name, s.name
                )));
            }
        }
        defs.push(d);
    }
    Ok(defs)
}
