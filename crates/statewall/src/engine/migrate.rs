//! Pinned maps of an older build that this build lays out differently, carried over when a
//! daemon starts on them.
//!
//! Counter arrays (per-CPU `u64`s indexed by a stage's counter enum) grow when a release
//! adds a counter. A pinned one with fewer entries than this build's is read, unpinned
//! (the old programs keep their copy until their links move to this build's programs) and
//! made again by the load; its counts are then written into the new one, so no count is
//! lost by an upgrade. Every other layout change is refused by [`super::Engine::open`].

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};

use super::{
    error::{pin_err, EngineError, Result},
    pins::Pins,
};

/// Pinned counter arrays: per-CPU arrays of `u64`, indexed by counter.
pub const COUNTER_MAPS: &[&str] = &[
    statewall_common::maps::MAP_GATE_STATS,
    statewall_common::xfsm::MAP_STATS,
    statewall_common::spa::MAP_SPA_STATS,
    statewall_common::firewall::MAP_FW_COUNTERS,
    statewall_common::detect::MAP_COUNT,
];

/// The counts of one grown counter array, per index and CPU.
pub struct Carried {
    name: &'static str,
    values: Vec<Vec<u64>>,
}

/// Where a moved pin waits (bpffs refuses names with a dot).
fn aside(pins: &Pins, name: &str) -> std::path::PathBuf {
    pins.root.join(CARRIED).join(name)
}

/// The directory of moved pins, under the pin root.
pub const CARRIED: &str = "carried";

/// Moves a map's pin (bpffs has no rename): pinned again under `to`, then unpinned.
fn move_pin(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let md = MapData::from_pin(from).map_err(|e| pin_err("opening pinned map", from, e))?;
    md.pin(to).map_err(|e| pin_err("pinning", to, e))?;
    std::fs::remove_file(from).map_err(|e| pin_err("unpinning", from, e))
}

/// Reads every pinned counter array shorter than this build's and moves its pin aside.
pub fn take_grown(pins: &Pins, obj: &aya_obj::Object) -> Result<Vec<Carried>> {
    let mut out = Vec::new();
    for &name in COUNTER_MAPS {
        let path = pins.map(name);
        let bak = aside(pins, name);
        if bak.exists() {
            // A start that died after moving it: the old build's array goes back first.
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| pin_err("unpinning", &path, e))?;
            }
            move_pin(&bak, &path)?;
        }
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
        std::fs::create_dir_all(pins.root.join(CARRIED))
            .map_err(|e| pin_err("creating", &pins.root.join(CARRIED), e))?;
        move_pin(&path, &bak)?;
        tracing::info!(
            "{name}: {n} counters pinned by an older build, {} in this one: carried over",
            want.max_entries()
        );
        out.push(Carried { name, values });
    }
    Ok(out)
}

/// Puts the moved pins back (the arrays this build made, if any, are unpinned).
pub fn roll_back(pins: &Pins, carried: &[Carried]) {
    for c in carried {
        let (path, bak) = (pins.map(c.name), aside(pins, c.name));
        let _ = std::fs::remove_file(&path);
        if let Err(e) = move_pin(&bak, &path) {
            tracing::error!("could not put the older build's pin back: {e}");
        }
    }
    let _ = std::fs::remove_dir(pins.root.join(CARRIED));
}

/// Drops the moved pins, once this build's programs run (their maps go with the last link).
pub fn commit(pins: &Pins, carried: &[Carried]) {
    for c in carried {
        let _ = std::fs::remove_file(aside(pins, c.name));
    }
    let _ = std::fs::remove_dir(pins.root.join(CARRIED));
}

/// Writes carried counts into the maps this build made.
pub fn restore(pins: &Pins, carried: &[Carried]) -> Result<()> {
    for c in carried {
        let path = pins.map(c.name);
        let md = MapData::from_pin(&path).map_err(|e| pin_err("opening pinned map", &path, e))?;
        let mut a: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(md))
            .map_err(|e| pin_err("opening pinned map", &path, e))?;
        for (i, v) in c.values.iter().enumerate() {
            let v =
                PerCpuValues::try_from(v.clone()).map_err(|e| EngineError::Load(e.to_string()))?;
            a.set(i as u32, v, 0)
                .map_err(|e| pin_err("writing carried counters", &path, e))?;
        }
    }
    Ok(())
}
