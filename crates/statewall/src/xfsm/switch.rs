//! `[[switch]]`: interfaces tied together by machines whose actions forward frames between
//! them (a learning switch is one machine: see `examples/efsm/learning-switch.toml`).
//!
//! Every port gets `sw_switch` on its tcx ingress, last in the chain: a stage that guards
//! the port (the gate, a firewall instance) runs first, so a forward never skips it. The
//! program runs the switch's machines on every frame, IP or not (ARP), then forwards the
//! frame to the port a machine chose (`bpf_redirect`), or floods it to every other port
//! (`bpf_clone_redirect`), or hands it on to the host when no machine forwarded it.

use std::collections::BTreeSet;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use statewall_common::xfsm::acts::{
    SwitchDef, MAP_SWITCH, MAP_SWITCH_IF, MAX_SWITCHES, MAX_SWITCH_PORTS,
};

use crate::engine::{map_err, Engine, Result};
use crate::xfsm::config::{SwitchConfig, XfsmConfig};

/// Checks the switches against the machines: an error names the key and says what is
/// wrong. `xdp_ingress`: some interface runs the ingress stages in XDP (where a packet has
/// no mark and the DSCP is not rewritten).
pub fn check(
    switches: &[SwitchConfig],
    machines: &[XfsmConfig],
    xdp_ingress: bool,
) -> std::result::Result<(), (String, String)> {
    if switches.len() > MAX_SWITCHES as usize {
        return Err((
            "[[switch]]".into(),
            format!("{} switches: at most {MAX_SWITCHES}", switches.len()),
        ));
    }
    let mut names = BTreeSet::new();
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut ports_seen = BTreeSet::new();
    for (i, s) in switches.iter().enumerate() {
        let at = |key: &str| format!("[[switch]] #{} ({}) {key}", i + 1, s.name);
        crate::types::check_name(&s.name).map_err(|e| (at("name"), e.to_string()))?;
        if !names.insert(&s.name) {
            return Err((at("name"), "a switch with this name exists".into()));
        }
        if s.ports.len() < 2 || s.ports.len() > MAX_SWITCH_PORTS {
            return Err((
                at("ports"),
                format!("{} ports: 2 to {MAX_SWITCH_PORTS}", s.ports.len()),
            ));
        }
        for p in &s.ports {
            if p.is_empty() || p.len() > 15 || p.contains(['/', ' ', ':']) {
                return Err((at("ports"), format!("{p:?} is not an interface name")));
            }
            if !ports_seen.insert((s.netns.clone(), p.clone())) {
                return Err((at("ports"), format!("{p:?} is a port twice")));
            }
        }
        if s.machines.is_empty() {
            return Err((at("machines"), "a switch needs a machine".into()));
        }
        for m in &s.machines {
            let Some(mc) = machines.iter().find(|x| &x.name == m) else {
                return Err((at("machines"), format!("{m:?} is not an [[xfsm]] machine")));
            };
            if !taken.insert(m.as_str()) {
                return Err((at("machines"), format!("{m:?} already runs on a switch")));
            }
            if mc.exempt {
                return Err((
                    at("machines"),
                    format!("{m:?} is a [detect] detector: it runs on the interfaces' hooks"),
                ));
            }
            if let Some(j) = mc
                .transitions
                .iter()
                .position(|t| t.direction != "ingress" || t.payload.is_some() || t.grant.is_some())
            {
                return Err((
                    format!("[[xfsm]] ({m}) transition #{}", j + 1),
                    "a switch's machine sees frames arriving on its ports: direction ingress only, no payload matches, no grants".into(),
                ));
            }
        }
    }
    for m in machines {
        let on_switch = taken.contains(m.name.as_str());
        for (j, t) in m.transitions.iter().enumerate() {
            let at = |key: &str| format!("[[xfsm]] ({}) transition #{} {key}", m.name, j + 1);
            if t.forward.is_some() && !on_switch {
                return Err((
                    at("forward"),
                    "forward is taken on [[switch]] ports only: name the machine in a switch's machines".into(),
                ));
            }
            if xdp_ingress && !on_switch && (t.mark.is_some() || t.dscp.is_some()) {
                return Err((
                    at(if t.mark.is_some() { "mark" } else { "dscp" }),
                    "an interface runs the ingress stages in XDP, where there is no packet mark and the DSCP is not rewritten: use ingress = \"tcx\"".into(),
                ));
            }
        }
    }
    Ok(())
}

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
