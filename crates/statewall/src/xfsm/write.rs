//! Writing compiled tables into the kernel's maps: the inactive generation first, then
//! one array update that switches to it. Takes any [`MapAccess`] (the daemon's engine, a
//! test bed).

use super::{error::XfsmError, tables::Compiled};
use crate::engine::access::MapAccess;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use statewall_common::{
    xfsm::acts::{MAP_ACTS, MAX_ACT_SETS},
    xfsm::regs::{MAP_CONDS, MAP_UPDATES, MAX_UPD_SETS},
    xfsm::{
        Trans, TransKey, CTL_EXEMPT, CTL_GEN, MAP_CTL, MAP_GRANT_SETS, MAP_MACHINES, MAP_PAYLOADS,
        MAP_PORTS, MAP_TRANS, MAX_GRANT_SETS, MAX_MACHINES, MAX_PAYLOADS, PORTS_PER_GEN,
    },
};

fn merr(name: &str, e: impl std::fmt::Display) -> XfsmError {
    XfsmError::Map(format!("map {name}: {e}"))
}

/// Writes `items` into consecutive slots of array `name`, the first at `base`.
fn write_slots<T: aya::Pod>(
    acc: &mut dyn MapAccess,
    name: &str,
    base: u32,
    items: impl Iterator<Item = T>,
) -> Result<(), XfsmError> {
    let mut a: Array<&mut MapData, T> =
        Array::try_from(acc.map_mut(name).map_err(|e| merr(name, e))?)
            .map_err(|e| merr(name, e))?;
    for (i, v) in items.enumerate() {
        a.set(base + i as u32, v, 0).map_err(|e| merr(name, e))?;
    }
    Ok(())
}

/// One slot per machine: `v`'s entries, then defaults up to [`MAX_MACHINES`].
fn per_machine<T: Copy + Default>(v: &[T]) -> impl Iterator<Item = T> + '_ {
    (0..MAX_MACHINES).map(|i| v.get(i).copied().unwrap_or_default())
}

/// Writes `c` into the inactive generation and switches to it with one array update.
/// `known_ports` lists the ports with non-zero prefilter bits in the inactive generation
/// (`None`: unknown, every port is written).
pub fn write_tables(
    acc: &mut dyn MapAccess,
    c: &Compiled,
    known_ports: Option<&[u16]>,
) -> Result<u32, XfsmError> {
    let cur = {
        let a: Array<&MapData, u32> =
            Array::try_from(&*acc.map_mut(MAP_CTL).map_err(|e| merr(MAP_CTL, e))?)
                .map_err(|e| merr(MAP_CTL, e))?;
        a.get(&CTL_GEN, 0).map_err(|e| merr(MAP_CTL, e))? & 1
    };
    let new = cur ^ 1;
    let machine_base = new * MAX_MACHINES as u32;
    write_slots(acc, MAP_MACHINES, machine_base, per_machine(&c.machines))?;
    let grants = c.grant_sets.iter().copied().take(MAX_GRANT_SETS as usize);
    write_slots(acc, MAP_GRANT_SETS, new * MAX_GRANT_SETS, grants)?;
    let payloads = c.payloads.iter().copied().take(MAX_PAYLOADS as usize);
    write_slots(acc, MAP_PAYLOADS, new * MAX_PAYLOADS, payloads)?;
    {
        let mut a: Array<&mut MapData, u16> =
            Array::try_from(acc.map_mut(MAP_PORTS).map_err(|e| merr(MAP_PORTS, e))?)
                .map_err(|e| merr(MAP_PORTS, e))?;
        let base = new * PORTS_PER_GEN;
        match known_ports {
            Some(ports) => {
                for p in ports {
                    if !c.ports.contains_key(p) {
                        a.set(base + *p as u32, 0, 0)
                            .map_err(|e| merr(MAP_PORTS, e))?;
                    }
                }
                for (p, v) in &c.ports {
                    a.set(base + *p as u32, *v, 0)
                        .map_err(|e| merr(MAP_PORTS, e))?;
                }
            }
            None => {
                for p in 0..PORTS_PER_GEN {
                    let v = c.ports.get(&(p as u16)).copied().unwrap_or(0);
                    a.set(base + p, v, 0).map_err(|e| merr(MAP_PORTS, e))?;
                }
            }
        }
    }
    write_slots(acc, MAP_CONDS, machine_base, per_machine(&c.conds))?;
    let updates = c.upd_sets.iter().copied();
    write_slots(acc, MAP_UPDATES, new * MAX_UPD_SETS, updates)?;
    let acts = c.act_sets.iter().copied();
    write_slots(acc, MAP_ACTS, new * MAX_ACT_SETS, acts)?;
    {
        let mut h: BpfHashMap<&mut MapData, TransKey, Trans> =
            BpfHashMap::try_from(acc.map_mut(MAP_TRANS).map_err(|e| merr(MAP_TRANS, e))?)
                .map_err(|e| merr(MAP_TRANS, e))?;
        let stale: Vec<TransKey> = h
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.generation as u32 == new)
            .collect();
        for k in stale {
            h.remove(&k).map_err(|e| merr(MAP_TRANS, e))?;
        }
        for (k, t) in c.trans_entries(new) {
            h.insert(k, t, 0).map_err(|e| merr(MAP_TRANS, e))?;
        }
    }
    let mut a: Array<&mut MapData, u32> =
        Array::try_from(acc.map_mut(MAP_CTL).map_err(|e| merr(MAP_CTL, e))?)
            .map_err(|e| merr(MAP_CTL, e))?;
    // The new generation's exempt machines beside the other's, before the switch.
    let exempt = a.get(&CTL_EXEMPT, 0).map_err(|e| merr(MAP_CTL, e))?;
    let shift = 8 * new;
    let exempt = (exempt & !(0xff << shift)) | (c.exempt_mask & 0xff) << shift;
    a.set(CTL_EXEMPT, exempt, 0).map_err(|e| merr(MAP_CTL, e))?;
    // The switch: one array update.
    a.set(CTL_GEN, c.ctl_word(new), 0)
        .map_err(|e| merr(MAP_CTL, e))?;
    Ok(new)
}
