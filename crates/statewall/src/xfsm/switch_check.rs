//! The `[[switch]]` sections checked against the `[[xfsm]]` machines (what a switch's
//! machines may do, and what only they may do): the config's part of the switches, apart
//! from what the kernel is given for them (`super::switch`), so that checking a config
//! needs no engine.

use std::collections::BTreeSet;

use statewall_common::xfsm::acts::{MAX_SWITCHES, MAX_SWITCH_PORTS};

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
