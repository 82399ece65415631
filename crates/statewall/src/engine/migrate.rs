//! Pinned maps of an older build that this build lays out differently, carried over when a
//! daemon starts on them.
//!
//! Counter arrays (per-CPU `u64`s indexed by a stage's counter enum) grow when a release
//! adds a counter. A pinned one with fewer entries than this build's is read, unpinned
//! (the old programs keep their copy until their links move to this build's programs) and
//! made again by the load; its counts are then written into the new one, so no count is
//! lost by an upgrade. Every other layout change is refused by [`super::Engine::open`].

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};

use super::{pin_err, pins::Pins, EngineError, Result};

/// Pinned counter arrays: per-CPU arrays of `u64`, indexed by counter.
pub const COUNTER_MAPS: &[&str] = &[
    statewall_common::maps::MAP_GATE_STATS,
    statewall_common::xfsm::MAP_STATS,
    statewall_common::spa::MAP_SPA_STATS,
    statewall_common::fw::MAP_FW_COUNTERS,
];

/// The counts of one grown counter array, per index and CPU.
pub struct Carried {
    name: &'static str,
    values: Vec<Vec<u64>>,
}

/// Reads and unpins every pinned counter array shorter than this build's.
pub fn take_grown(pins: &Pins, obj: &aya_obj::Object) -> Result<Vec<Carried>> {
    let mut out = Vec::new();
    for &name in COUNTER_MAPS {
        let path = pins.map(name);
        let (Some(want), true) = (obj.maps.get(name), path.exists()) else {
            continue;
        };
        let md = MapData::from_pin(&path).map_err(|e| pin_err("opening pinned map", &path, e))?;
        let info = md
            .info()
            .map_err(|e| pin_err("reading pinned map", &path, e))?;
        if info.max_entries() >= want.max_entries()
            || (info.key_size(), info.value_size()) != (want.key_size(), want.value_size())
        {
            continue;
        }
        let n = info.max_entries();
        let a: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(md))
            .map_err(|e| pin_err("reading pinned map", &path, e))?;
        let values = (0..n)
            .map(|i| a.get(&i, 0).map(|v| v.iter().copied().collect()))
            .collect::<std::result::Result<Vec<Vec<u64>>, _>>()
            .map_err(|e| pin_err("reading pinned map", &path, e))?;
        std::fs::remove_file(&path).map_err(|e| pin_err("unpinning", &path, e))?;
        tracing::info!(
            "{name}: {n} counters pinned by an older build, {} in this one: carried over",
            want.max_entries()
        );
        out.push(Carried { name, values });
    }
    Ok(out)
}

/// Writes carried counts into the maps this build made.
pub fn restore(pins: &Pins, carried: Vec<Carried>) -> Result<()> {
    for c in carried {
        let path = pins.map(c.name);
        let md = MapData::from_pin(&path).map_err(|e| pin_err("opening pinned map", &path, e))?;
        let mut a: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(md))
            .map_err(|e| pin_err("opening pinned map", &path, e))?;
        for (i, v) in c.values.into_iter().enumerate() {
            let v = PerCpuValues::try_from(v).map_err(|e| EngineError::Load(e.to_string()))?;
            a.set(i as u32, v, 0)
                .map_err(|e| pin_err("writing carried counters", &path, e))?;
        }
    }
    Ok(())
}
