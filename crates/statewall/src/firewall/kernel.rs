//! The firewall in the kernel: the chains' tables ([`Tables`]) written into the inactive
//! generation and switched in, the interfaces pointed at their instances, the chain
//! programs attached; sessions, counters and the LOG ring. Written through the
//! [`Engine`]; the tables are kept beside it ([`Installed`]).

use aya::maps::{Array, HashMap as BpfHashMap, MapData};

use crate::engine::{map_err, Engine, EngineError, Result};
use crate::{
    engine::pins::LinkSpot,
    firewall::{
        config::FirewallConfig,
        rules::RulesError,
        tables::{Edit, Tables},
    },
};
use std::collections::BTreeMap;

use aya::maps::Map;

use crate::engine::{drain_ring, ebpf, ifindex};

/// The firewall's tables (kept in the engine: [`Engine::stage`]).
#[derive(Default)]
pub struct Installed {
    tables: Option<Tables>,
    /// The interface array was made equal to the interface hash (once a process: after
    /// that both are written together).
    ifidx_synced: bool,
}

fn rules_err(e: RulesError) -> EngineError {
    match e {
        RulesError::Map { map, msg } => EngineError::Map { map, msg },
        e => EngineError::Rules(e.to_string()),
    }
}

impl Engine {
    /// The firewall's tables, opened on first use (what the kernel holds read back).
    fn fw_tables(&mut self) -> Result<&mut Tables> {
        use statewall_common::firewall::MAP_FW_BITSETS;
        if self.stage::<Installed>().tables.is_none() {
            let capacity = self
                .maps
                .get(MAP_FW_BITSETS)
                .and_then(|m| match m {
                    Map::Array(d) => d.info().ok().map(|i| i.max_entries()),
                    _ => None,
                })
                .unwrap_or(4096);
            let mut t = Tables::new(capacity);
            t.adopt(self).map_err(rules_err)?;
            t.prepare_v4(self);
            self.stage::<Installed>().tables = Some(t);
        }
        Ok(self
            .stage::<Installed>()
            .tables
            .as_mut()
            .expect("opened above"))
    }

    /// The firewall's tables as they are (none before the firewall was first applied).
    pub fn fw_tables_ref(&self) -> Option<&Tables> {
        self.stage_ref::<Installed>()?.tables.as_ref()
    }

    /// Writes the tables into the inactive generation and switches to it, then waits until
    /// nothing reads the generation just retired (so the next change may write it).
    fn fw_switch(&mut self) -> Result<()> {
        self.with_fw_tables(|t, e| t.write(e))?;
        self.fw_quiesce();
        Ok(())
    }

    /// Writes the generation retired by the last switch up to date, without switching
    /// ([`Tables::catch_up`]; nothing reads it since that switch waited for it): after a
    /// large change, so that the next one does not write it again.
    pub fn fw_catch_up(&mut self) -> Result<()> {
        if self.fw_tables_ref().is_none() {
            return Ok(());
        }
        self.with_fw_tables(|t, e| t.catch_up(e))
    }

    /// Clears the bits updates left in the tables ([`Tables::scrub`]) and switches to
    /// the result: run after an answer, so that the update's answer does not wait for it
    /// (the next edit does it first otherwise). Returns whether there was anything.
    pub fn fw_scrub(&mut self) -> Result<bool> {
        if !self.fw_tables_ref().is_some_and(Tables::has_stale) {
            return Ok(false);
        }
        if !self.with_fw_tables(|t, _| t.scrub_all())? {
            return Ok(false);
        }
        self.fw_switch()?;
        Ok(true)
    }

    /// Runs `f` on the (opened) tables and the engine's maps (the tables are taken out of
    /// the engine meanwhile).
    fn with_fw_tables<R>(
        &mut self,
        f: impl FnOnce(&mut Tables, &mut Engine) -> std::result::Result<R, RulesError>,
    ) -> Result<R> {
        let mut tables = self
            .stage::<Installed>()
            .tables
            .take()
            .ok_or_else(|| EngineError::Rules("firewall tables not opened".into()))?;
        let r = f(&mut tables, self);
        self.stage::<Installed>().tables = Some(tables);
        r.map_err(rules_err)
    }

    /// Waits until every classification that may have read the generation just retired
    /// has ended: the CPUs inside one when the switch was made (`SW_FW_GUARD`: entered
    /// more than left) have left it. Usually none was, and this is one read. Past a second
    /// (a CPU stalled under the program), or without the map, one RCU grace period.
    fn fw_quiesce(&self) {
        use statewall_common::firewall::{FwGuard, MAP_FW_GUARD};
        // The switch's store before the reads below (the programs add to `enter`, a full
        // barrier, before they read the generation).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let read = || -> Option<Vec<FwGuard>> {
            let a: aya::maps::PerCpuArray<&MapData, FwGuard> =
                aya::maps::PerCpuArray::try_from(self.map_checked(MAP_FW_GUARD).ok()?).ok()?;
            a.get(&0, 0).ok().map(|v| v.iter().copied().collect())
        };
        let grace = || {
            if let Ok(g) = crate::engine::sys::Grace::new() {
                let _ = g.wait();
            }
        };
        let Some(first) = read() else {
            return grace();
        };
        let mut busy: Vec<(usize, u64)> = first
            .iter()
            .enumerate()
            .filter(|(_, g)| g.enter != g.exit)
            .map(|(cpu, g)| (cpu, g.enter))
            .collect();
        let t0 = std::time::Instant::now();
        while !busy.is_empty() {
            if t0.elapsed() > std::time::Duration::from_secs(1) {
                return grace();
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
            let Some(now) = read() else {
                return grace();
            };
            busy.retain(|(cpu, entered)| now.get(*cpu).is_some_and(|g| g.exit < *entered));
        }
    }

    /// Applies `edits` to chain `chain` (rewriting only what they change) and switches
    /// the kernel to it. Instances, ports and links are left as they are.
    pub fn fw_edit(&mut self, chain: u32, edits: &[Edit]) -> Result<()> {
        self.fw_tables()?.edit(chain, edits).map_err(rules_err)?;
        self.fw_switch()
    }

    /// Writes the firewall instances (chains whose rules changed are laid out again) and
    /// switches to them, points each attached interface at its instance, and attaches the
    /// chain programs (`config_links`: the config's own, kept). `moves`: (chain, origin of
    /// each new rule) for the counters to follow their rules.
    pub fn apply_firewall(
        &mut self,
        fw: &FirewallConfig,
        config_links: &[LinkSpot],
        st: &crate::firewall::FwState,
        moves: &[(u32, Vec<Option<usize>>)],
    ) -> Result<()> {
        use statewall_common::firewall::MAP_FW_IFACES;
        // Where each chain runs.
        let links = fw_link_spots(st, config_links);
        {
            use statewall_common::ct::{CtConf, MAP_CT_CONF};
            let f = fw;
            let conf = CtConf {
                tcp_syn_ns: f.ct_tcp_syn.ns(),
                tcp_est_ns: f.ct_tcp_established.ns(),
                tcp_close_ns: f.ct_tcp_closing.ns(),
                udp_ns: f.ct_udp.ns(),
            };
            let mut a: Array<&mut MapData, CtConf> =
                Array::try_from(self.map_mut_checked(MAP_CT_CONF)?)
                    .map_err(|e| map_err(MAP_CT_CONF, e))?;
            a.set(0, conf, 0).map_err(|e| map_err(MAP_CT_CONF, e))?;
        }
        self.fw_ifidx_from_hash()?;
        self.fw_tables()?
            .set_chains(&st.chains(), moves)
            .map_err(rules_err)?;
        self.fw_switch()?;
        // Interfaces -> instances (and whether the ingress chain runs in XDP).
        let mut want_ifaces = BTreeMap::new();
        for inst in st.instances.values() {
            for port in &inst.ports {
                let xdp = placement(inst, port, config_links) != IngressMode::Tc;
                let idx = ifindex(port.netns.as_deref(), &port.ifname);
                if idx == 0 {
                    return Err(EngineError::Doors(format!(
                        "interface {:?} (namespace {:?}) does not exist",
                        port.ifname, port.netns
                    )));
                }
                let flag = if xdp {
                    statewall_common::firewall::IFACE_XDP
                } else {
                    0
                };
                want_ifaces.insert(idx, inst.slot | flag);
            }
        }
        // A chain that moves between tc and XDP is never left without a hook: the new
        // links are attached while the old ones stay (each program classifies only where
        // the interface's entry says), then the entries switch, then the old links go. An
        // XDP hook holds one program: there the new one replaces the old.
        let new_xdp: Vec<(Option<String>, String)> = links
            .iter()
            .chain(config_links)
            .filter(|l| l.hook == "xdp")
            .map(|l| (l.netns.clone(), l.ifname.clone()))
            .collect();
        let mut both: Vec<LinkSpot> = self
            .stage_links
            .iter()
            .filter(|l| {
                !(l.hook == "xdp" && new_xdp.contains(&(l.netns.clone(), l.ifname.clone())))
            })
            .cloned()
            .collect();
        for l in &links {
            if !both.contains(l) {
                both.push(l.clone());
            }
        }
        self.stage_links = both;
        self.reconcile(config_links)?;
        {
            let mut h: BpfHashMap<&mut MapData, u32, u32> =
                BpfHashMap::try_from(self.map_mut_checked(MAP_FW_IFACES)?)
                    .map_err(|e| map_err(MAP_FW_IFACES, e))?;
            for (k, v) in &want_ifaces {
                h.insert(k, v, 0).map_err(|e| map_err(MAP_FW_IFACES, e))?;
            }
            let stale: Vec<u32> = h
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !want_ifaces.contains_key(k))
                .collect();
            for k in &stale {
                let _ = h.remove(k);
            }
            // The array the programs read for most interfaces: the same entries.
            use statewall_common::firewall::{ifidx_slot, IFACE_PRESENT, MAP_FW_IFIDX};
            let mut a: Array<&mut MapData, u32> =
                Array::try_from(self.map_mut_checked(MAP_FW_IFIDX)?)
                    .map_err(|e| map_err(MAP_FW_IFIDX, e))?;
            for (k, v) in &want_ifaces {
                if let Some(slot) = ifidx_slot(*k) {
                    a.set(slot, v | IFACE_PRESENT, 0)
                        .map_err(|e| map_err(MAP_FW_IFIDX, e))?;
                }
            }
            for k in stale {
                if let Some(slot) = ifidx_slot(k) {
                    let _ = a.set(slot, 0, 0);
                }
            }
        }
        self.stage_links = links;
        self.reconcile(config_links)
    }

    /// Makes the interface array equal to the interface hash, once a process, before any
    /// link changes: pins of a release without the array (adopted) leave it empty, and a
    /// process that stopped between writing the two may have left a slot the hash no
    /// longer has. After that, both are written together.
    fn fw_ifidx_from_hash(&mut self) -> Result<()> {
        use statewall_common::firewall::{
            ifidx_slot, IFACE_PRESENT, IFIDX_SLOTS, MAP_FW_IFACES, MAP_FW_IFIDX,
        };
        if self.stage::<Installed>().ifidx_synced {
            return Ok(());
        }
        let want: BTreeMap<u32, u32> = {
            let h: BpfHashMap<&MapData, u32, u32> =
                BpfHashMap::try_from(self.map_checked(MAP_FW_IFACES)?)
                    .map_err(|e| map_err(MAP_FW_IFACES, e))?;
            h.iter()
                .filter_map(|e| e.ok())
                .filter_map(|(k, v)| Some((ifidx_slot(k)?, v | IFACE_PRESENT)))
                .collect()
        };
        let mut a: Array<&mut MapData, u32> = Array::try_from(self.map_mut_checked(MAP_FW_IFIDX)?)
            .map_err(|e| map_err(MAP_FW_IFIDX, e))?;
        for slot in 0..IFIDX_SLOTS {
            let v = want.get(&slot).copied().unwrap_or(0);
            if a.get(&slot, 0).map_err(|e| map_err(MAP_FW_IFIDX, e))? != v {
                a.set(slot, v, 0).map_err(|e| map_err(MAP_FW_IFIDX, e))?;
            }
        }
        self.stage::<Installed>().ifidx_synced = true;
        Ok(())
    }

    /// The connection table: (key, entry) of every live connection.
    pub fn fw_sessions(
        &self,
    ) -> Result<Vec<(statewall_common::ct::CtKey, statewall_common::ct::CtVal)>> {
        let now = self.kernel_now();
        let mut v: Vec<_> = self.hash_entries(statewall_common::ct::MAP_CT)?;
        v.retain(
            |(_, e): &(statewall_common::ct::CtKey, statewall_common::ct::CtVal)| {
                e.expires_ns > now
            },
        );
        Ok(v)
    }

    /// Per-rule counters of a chain's first `rules` rules (packets, bytes), summed over
    /// CPUs.
    pub fn fw_stats(&self, chain: u32, rules: usize) -> Result<Vec<(u64, u64)>> {
        use statewall_common::firewall::{stats_slot, RuleStats, MAP_FW_STATS};
        let ids: Vec<u32> = self
            .fw_tables_ref()
            .map(|t| t.counter_ids(chain).to_vec())
            .unwrap_or_default();
        let a: aya::maps::PerCpuArray<&MapData, RuleStats> =
            aya::maps::PerCpuArray::try_from(self.map_checked(MAP_FW_STATS)?)
                .map_err(|e| map_err(MAP_FW_STATS, e))?;
        (0..rules)
            .map(|r| {
                let Some(&id) = ids.get(r) else {
                    return Ok((0, 0));
                };
                let v = a
                    .get(&stats_slot(chain, id), 0)
                    .map_err(|e| map_err(MAP_FW_STATS, e))?;
                Ok(v.iter()
                    .fold((0, 0), |(p, b), s| (p + s.packets, b + s.bytes)))
            })
            .collect()
    }

    /// Zeroes the counters of a chain's rules.
    pub fn fw_reset_stats(&mut self, chain: u32) -> Result<()> {
        self.fw_tables()?.reset_counters(chain);
        self.with_fw_tables(|t, e| t.zero_counters(e))
    }

    /// The index of the rule of `chain` whose counter id is `id` (a LOG event's rule).
    pub fn fw_rule_index(&self, chain: u32, id: u32) -> Option<usize> {
        self.fw_tables_ref()?.index_of(chain, id)
    }

    /// Firewall stage counters summed over CPUs, by name.
    pub fn fw_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        use statewall_common::firewall::{COUNTERS, COUNTER_NAMES, MAP_FW_COUNTERS};
        let sums = self.percpu_sums(MAP_FW_COUNTERS, COUNTERS)?;
        Ok(COUNTER_NAMES.into_iter().zip(sums).collect())
    }

    /// Takes the LOG events waiting in the ring buffer (tools and tests; the daemon follows
    /// the ring with its own handle).
    pub fn drain_fw_log(&mut self) -> Vec<statewall_common::firewall::FwLog> {
        let Some(m) = self.maps.get_mut(statewall_common::firewall::MAP_FW_LOG) else {
            return Vec::new();
        };
        drain_ring(m)
    }
}

/// Where an instance's ingress chain runs on one of its ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressMode {
    /// tcx ingress (`sw_fw_ingress`).
    Tc,
    /// XDP, inside the XDP ingress program after the gates: the interface is an
    /// `[[interface]]` with `ingress = "xdp"`.
    AfterXdpGates,
    /// XDP, in `sw_fw_xdp` of its own: an `XDP_SKB` or `XDP_DRV` instance on an interface
    /// where no gate runs.
    Xdp,
}

/// Where `inst`'s ingress chain runs on `port`, given the config's own attachments (the
/// gates' hooks). An XDP instance on an interface whose gates run on tcx is refused: its
/// chain would run before them, out of the stages' order.
pub fn ingress_mode(
    inst: &crate::firewall::Instance,
    port: &crate::firewall::Port,
    config_links: &[LinkSpot],
) -> Result<IngressMode> {
    let on_port = |hook: &str| {
        config_links
            .iter()
            .any(|l| l.netns == port.netns && l.ifname == port.ifname && l.hook == hook)
    };
    if on_port("xdp") {
        return Ok(IngressMode::AfterXdpGates);
    }
    if !inst.kind.starts_with("XDP") {
        return Ok(IngressMode::Tc);
    }
    if on_port("ingress") {
        return Err(EngineError::Placement(format!(
            "port {}: a {} instance's ingress chain would run in XDP before the gates, which \
             run on this interface's tcx ingress; set ingress = \"xdp\" in its [[interface]] \
             (the chain then runs after the gates, in one XDP program) or make the instance TC",
            port.ifname, inst.kind
        )));
    }
    Ok(IngressMode::Xdp)
}

/// [`ingress_mode`], except that a chain that cannot run in XDP on `port` runs on tcx, with
/// a warning: saved instances (from a release that ran every chain on tcx, or from before a
/// reload moved the gates) keep a working chain. New instances and attaches are refused by
/// [`check_placement`] instead.
pub fn placement(
    inst: &crate::firewall::Instance,
    port: &crate::firewall::Port,
    config_links: &[LinkSpot],
) -> IngressMode {
    ingress_mode(inst, port, config_links).unwrap_or_else(|e| {
        tracing::warn!("{e}: its ingress chain runs on tcx");
        IngressMode::Tc
    })
}

/// Refuses a firewall state in which some instance's ingress chain cannot run where its
/// type asks ([`ingress_mode`]).
pub fn check_placement(st: &crate::firewall::FwState, config_links: &[LinkSpot]) -> Result<()> {
    for inst in st.instances.values() {
        for port in &inst.ports {
            ingress_mode(inst, port, config_links)?;
        }
    }
    Ok(())
}

/// The firewall's attachments for `st`: the chain programs on every interface of every
/// instance (the ingress one where [`placement`] says). The daemon sets them before its
/// first reconcile at start, so that adopting running links never detaches the firewall
/// for a moment.
pub fn fw_link_spots(st: &crate::firewall::FwState, config_links: &[LinkSpot]) -> Vec<LinkSpot> {
    let mut links = Vec::new();
    for inst in st.instances.values() {
        for port in &inst.ports {
            let spot = |hook: &str, program: &str| LinkSpot {
                netns: port.netns.clone(),
                ifname: port.ifname.clone(),
                hook: hook.into(),
                program: program.into(),
            };
            match placement(inst, port, config_links) {
                IngressMode::Tc => links.push(spot("ingress", ebpf::PROG_FW_INGRESS)),
                IngressMode::Xdp => links.push(spot("xdp", ebpf::PROG_FW_XDP)),
                IngressMode::AfterXdpGates => {}
            }
            links.push(spot("egress", ebpf::PROG_FW_EGRESS));
        }
    }
    links
}
