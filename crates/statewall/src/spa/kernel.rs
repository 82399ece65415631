//! The spa stage in the kernel: its configuration word and the pkd tag set, counters.
//! Written through the [`Engine`].

use aya::maps::{Array, HashMap as BpfHashMap, MapData};

use crate::engine::{map_err, Engine, EngineError, Result};
use crate::spa::config::SpaConfig;

impl Engine {
    /// Writes the spa stage's configuration and pkd tag set: tags first (new ones added
    /// before stale ones go), then the config word that turns pkd and fwknop on or off.
    pub fn apply_spa(&mut self, spa: &SpaConfig) -> Result<()> {
        use statewall_common::spa::{SpaConf, MAP_SPA_CONF, MAP_SPA_TAGS};
        let setup = spa
            .resolve()
            .map_err(|(at, msg)| EngineError::Doors(format!("{at}: {msg}")))?;
        let tags: std::collections::BTreeSet<u32> = setup
            .pkd
            .iter()
            .map(|a| u32::from_ne_bytes(a.tag))
            .collect();
        {
            let md = self.map_mut_checked(MAP_SPA_TAGS)?;
            let mut h: BpfHashMap<&mut MapData, u32, u8> =
                BpfHashMap::try_from(md).map_err(|e| map_err(MAP_SPA_TAGS, e))?;
            for t in &tags {
                h.insert(t, 1, 0).map_err(|e| map_err(MAP_SPA_TAGS, e))?;
            }
            let stale: Vec<u32> = h
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !tags.contains(k))
                .collect();
            for k in stale {
                let _ = h.remove(&k);
            }
        }
        let interval = spa.rate_interval.ns().max(1);
        let conf = SpaConf {
            pkd: !setup.pkd.is_empty() as u8,
            _pad: 0,
            fwknop_port: if setup.fwknop.is_empty() {
                0
            } else {
                spa.fwknop_port
            },
            _pad2: 0,
            interval_ns: interval,
            tau_ns: interval.saturating_mul(spa.rate_burst.saturating_sub(1) as u64),
        };
        let md = self.map_mut_checked(MAP_SPA_CONF)?;
        let mut arr: Array<&mut MapData, SpaConf> =
            Array::try_from(md).map_err(|e| map_err(MAP_SPA_CONF, e))?;
        arr.set(0, conf, 0).map_err(|e| map_err(MAP_SPA_CONF, e))?;
        Ok(())
    }

    /// spa stage counters (kernel side) summed over CPUs, by name.
    pub fn spa_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        use statewall_common::spa::{MAP_SPA_STATS, SPA_COUNTERS, SPA_COUNTER_NAMES};
        let sums = self.percpu_sums(MAP_SPA_STATS, SPA_COUNTERS)?;
        Ok(SPA_COUNTER_NAMES.into_iter().zip(sums).collect())
    }
}
