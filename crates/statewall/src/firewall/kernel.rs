//! The firewall in the kernel: instances written into the inactive generation and switched
//! in, the interfaces pointed at their instances, the chain programs attached; sessions,
//! counters and the LOG ring. Written through the [`Engine`]; the prefix keys written last
//! are kept beside it ([`Installed`]).

use aya::maps::{Array, HashMap as BpfHashMap, MapData};

use crate::engine::{map_err, Engine, EngineError, Result};
use crate::{
    engine::pins::LinkSpot,
    firewall::{config::FirewallConfig, rules::Written},
};
use std::collections::BTreeMap;

use aya::maps::Map;

use crate::engine::{drain_ring, ebpf, ifindex};

/// What the firewall wrote into each generation last (kept in the engine:
/// [`Engine::stage`]).
#[derive(Default)]
pub struct Installed {
    written: [Option<Written>; 2],
    /// The grace period of the generation retired last: programs that started while it
    /// was active may still read it until this thread (waiting one RCU grace period) ends.
    retiring: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Writes the firewall instances into the inactive generation and switches to it,
    /// points each attached interface at its instance, and attaches the chain programs
    /// (`config_links`: the config's own, kept). `moves`: (chain, origin of each new rule) for
    /// the counters to follow their rules.
    pub fn apply_firewall(
        &mut self,
        fw: &FirewallConfig,
        config_links: &[LinkSpot],
        st: &crate::firewall::FwState,
        moves: &[(u32, Vec<Option<usize>>)],
    ) -> Result<()> {
        use statewall_common::firewall::{
            stats_slot, RuleStats, MAP_FW_BITSETS, MAP_FW_IFACES, MAP_FW_STATS,
        };
        let compiled = crate::firewall::rules::compile(&st.chains())
            .map_err(|e| EngineError::Rules(e.to_string()))?;
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
        let half = self
            .maps
            .get(MAP_FW_BITSETS)
            .and_then(|m| match m {
                Map::Array(d) => d.info().ok().map(|i| i.max_entries()),
                _ => None,
            })
            .unwrap_or(4096)
            / 2;
        let ctl: Array<&MapData, u32> =
            Array::try_from(self.map_checked(statewall_common::firewall::MAP_FW_CTL)?)
                .map_err(|e| map_err(statewall_common::firewall::MAP_FW_CTL, e))?;
        let shadow = (ctl.get(&0, 0).unwrap_or(0) & 1) as usize ^ 1;
        // The generation about to be written was retired by the last switch: it is written
        // only once the programs that could still read it have finished (when changes come
        // further apart than a grace period, that wait is over already).
        if let Some(h) = self.stage::<Installed>().retiring.take() {
            let _ = h.join();
        }
        let old = self.stage::<Installed>().written[shadow].take();
        // Counters that move with their rules (a rule that stays where it was keeps its
        // counter in place): read before the switch.
        type Moved = Vec<(u32, Vec<(usize, aya::maps::PerCpuValues<RuleStats>)>)>;
        let mut moved: Moved = Vec::new();
        {
            let a: aya::maps::PerCpuArray<&MapData, RuleStats> =
                aya::maps::PerCpuArray::try_from(self.map_checked(MAP_FW_STATS)?)
                    .map_err(|e| map_err(MAP_FW_STATS, e))?;
            for (chain, origin) in moves {
                let mut v = Vec::new();
                for (i, o) in origin.iter().enumerate() {
                    let vals = match o {
                        Some(o) if *o == i => continue,
                        Some(o) => a.get(&stats_slot(*chain, *o as u32), 0),
                        None => {
                            let n = aya::util::nr_cpus().map_err(|e| map_err(MAP_FW_STATS, e.1))?;
                            Ok(
                                aya::maps::PerCpuValues::try_from(vec![RuleStats::default(); n])
                                    .unwrap(),
                            )
                        }
                    }
                    .map_err(|e| map_err(MAP_FW_STATS, e))?;
                    v.push((i, vals));
                }
                moved.push((*chain, v));
            }
        }
        let (_, written) =
            crate::firewall::rules::write_tables(self, &compiled, half, old.as_ref()).map_err(
                |e| EngineError::Map {
                    map: "firewall tables".into(),
                    msg: e.to_string(),
                },
            )?;
        self.stage::<Installed>().written[shadow] = Some(written);
        self.stage::<Installed>().retiring = Some(std::thread::spawn(|| {
            if let Ok(g) = crate::engine::sys::Grace::new() {
                let _ = g.wait();
            }
        }));
        {
            let mut a: aya::maps::PerCpuArray<&mut MapData, RuleStats> =
                aya::maps::PerCpuArray::try_from(self.map_mut_checked(MAP_FW_STATS)?)
                    .map_err(|e| map_err(MAP_FW_STATS, e))?;
            for (chain, vals) in moved {
                for (i, v) in vals {
                    a.set(stats_slot(chain, i as u32), v, 0)
                        .map_err(|e| map_err(MAP_FW_STATS, e))?;
                }
            }
        }
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
            for k in stale {
                let _ = h.remove(&k);
            }
        }
        self.stage_links = links;
        self.reconcile(config_links)
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

    /// Per-rule counters of a chain (packets, bytes), summed over CPUs.
    pub fn fw_stats(&self, chain: u32, rules: usize) -> Result<Vec<(u64, u64)>> {
        use statewall_common::firewall::{stats_slot, RuleStats, MAP_FW_STATS};
        let a: aya::maps::PerCpuArray<&MapData, RuleStats> =
            aya::maps::PerCpuArray::try_from(self.map_checked(MAP_FW_STATS)?)
                .map_err(|e| map_err(MAP_FW_STATS, e))?;
        (0..rules)
            .map(|r| {
                let v = a
                    .get(&stats_slot(chain, r as u32), 0)
                    .map_err(|e| map_err(MAP_FW_STATS, e))?;
                Ok(v.iter()
                    .fold((0, 0), |(p, b), s| (p + s.packets, b + s.bytes)))
            })
            .collect()
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
