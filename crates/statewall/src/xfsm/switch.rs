//! `[[switch]]`: interfaces tied together by machines whose actions forward frames between
//! them (a learning switch is one machine: see `examples/efsm/learning-switch.toml`).
//!
//! Every port gets `sw_switch` on its tcx ingress, last in the chain: a stage that guards
//! the port (the gate, a firewall instance) runs first, so a forward never skips it. The
//! program runs the switch's machines on every frame, IP or not (ARP), then forwards the
//! frame to the port a machine chose (`bpf_redirect`), or floods it to every other port
//! (`bpf_clone_redirect`), or hands it on to the host when no machine forwarded it.

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use statewall_common::xfsm::acts::{SwitchDef, MAP_SWITCH, MAP_SWITCH_IF, MAX_SWITCHES};

use crate::engine::{map_err, Engine, Result};
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
) -> Result<Vec<SwitchDef>> {
    let mut defs: Vec<SwitchDef> = Vec::new();
    for (i, s) in switches.iter().enumerate() {
        let mut d = SwitchDef {
            n: s.ports.len() as u32,
            ..Default::default()
        };
        for (j, p) in s.ports.iter().enumerate() {
            let idx = crate::engine::ifindex(s.netns.as_deref(), p);
            if idx == 0 {
                return Err(crate::engine::EngineError::Doors(format!(
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
                return Err(crate::engine::EngineError::Doors(format!(
                    "[[switch]] {} and {}: a port of each has interface index {idx} (in different namespaces); give one of them another",
                    switches[j].name, s.name
                )));
            }
        }
        defs.push(d);
    }
    Ok(defs)
}

impl Engine {
    /// Before a table switch: the switches' machine masks of generation `shadow` (the one
    /// the switch makes active); ports and the active generation's masks stay.
    pub fn write_switch_masks(&mut self, defs: &[SwitchDef], shadow: u32) -> Result<()> {
        let g = shadow as usize & 1;
        let mut a: Array<&mut MapData, SwitchDef> =
            Array::try_from(self.map_mut_checked(MAP_SWITCH)?)
                .map_err(|e| map_err(MAP_SWITCH, e))?;
        for i in 0..MAX_SWITCHES {
            let mut d = a.get(&i, 0).unwrap_or_default();
            d.masks[g] = defs.get(i as usize).map(|x| x.masks[g]).unwrap_or(0);
            a.set(i, d, 0).map_err(|e| map_err(MAP_SWITCH, e))?;
        }
        Ok(())
    }

    /// After the table switch: the switches' ports and the interface map (ports that left
    /// a switch removed); the masks stay as written.
    pub fn write_switch_ports(&mut self, defs: &[SwitchDef]) -> Result<()> {
        let mut a: Array<&mut MapData, SwitchDef> =
            Array::try_from(self.map_mut_checked(MAP_SWITCH)?)
                .map_err(|e| map_err(MAP_SWITCH, e))?;
        for i in 0..MAX_SWITCHES {
            let old = a.get(&i, 0).unwrap_or_default();
            let mut d = defs.get(i as usize).copied().unwrap_or_default();
            d.masks = old.masks;
            a.set(i, d, 0).map_err(|e| map_err(MAP_SWITCH, e))?;
        }
        let mut h: BpfHashMap<&mut MapData, u32, u32> =
            BpfHashMap::try_from(self.map_mut_checked(MAP_SWITCH_IF)?)
                .map_err(|e| map_err(MAP_SWITCH_IF, e))?;
        let want: Vec<(u32, u32)> = defs
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.ports[..d.n as usize].iter().map(move |&p| (p, i as u32)))
            .collect();
        let stale: Vec<u32> = h
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !want.iter().any(|(p, _)| p == k))
            .collect();
        for k in stale {
            h.remove(&k).map_err(|e| map_err(MAP_SWITCH_IF, e))?;
        }
        for (p, i) in want {
            h.insert(p, i, 0).map_err(|e| map_err(MAP_SWITCH_IF, e))?;
        }
        Ok(())
    }
}
