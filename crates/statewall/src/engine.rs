//! The kernel side as the daemon holds it: pinned maps, pinned programs and pinned links.
//!
//! [`Engine::open`] adopts what is pinned when the pinned programs are this build's (same
//! object id: program, map and link ids stay the same across a restart); otherwise it loads
//! the object, reusing every pinned map (state survives), pins the new programs and moves
//! any pinned link to its new program with `BPF_LINK_UPDATE` (no moment with no program).
//! [`Engine::reconcile`] makes the pinned links match the config; [`teardown`] removes all.
//!
//! Attach order on a hook follows the stage order documented in README; every statewall
//! program goes before any foreign program already on the hook.

use std::{
    collections::BTreeMap,
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::{XdpLink, XdpMode},
        LinkOrder, SchedClassifier, TcAttachType, Xdp,
    },
    EbpfLoader,
};
use serde::Serialize;
use statewall_common::maps::{
    FlowKey, FlowValue, GateConf, GrantKey, GrantValue, GATE_COUNTERS, GATE_COUNTER_NAMES,
    GATE_SUMMARY_SLOT, GATE_TCP, GATE_UDP, MAP_CLOCK, MAP_GATE_CONF, MAP_GATE_FLOWS,
    MAP_GATE_GRANTS, MAP_GATE_PORTS, MAP_GATE_STATS,
};

use crate::{
    config::{Config, IngressHook, PortSpec},
    ebpf::{self, PROG_GATE, PROG_XDP_INGRESS},
    netns::in_netns,
    pins::{LinkSpot, Pins},
};

/// Errors of the kernel side, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// bpffs is not mounted where the pins should go.
    #[error("{0} is not on a bpf filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`, done by scripts/setup.sh)")]
    NoBpffs(PathBuf),
    /// The knock doors could not be compiled or their sequences read.
    #[error("knock doors: {0}")]
    Doors(String),
    /// Loading the object or a program failed (the verifier log is in the message).
    #[error("loading the eBPF object: {0}")]
    Load(String),
    /// A pin could not be made, opened or removed.
    #[error("{what} {path}: {msg}")]
    Pin {
        /// What was being done.
        what: &'static str,
        /// The pin path.
        path: PathBuf,
        /// The error.
        msg: String,
    },
    /// Attaching or detaching failed.
    #[error("attaching {program} to {ifname} ({hook}{ns}): {msg}")]
    Attach {
        /// Program.
        program: String,
        /// Interface.
        ifname: String,
        /// Hook.
        hook: String,
        /// Namespace note.
        ns: String,
        /// The error.
        msg: String,
    },
    /// A preallocated table is full: the new entry was refused (fail closed).
    #[error("{map} is full: entry refused")]
    TableFull {
        /// Map name.
        map: String,
    },
    /// A map operation failed.
    #[error("map {map}: {msg}")]
    Map {
        /// Map name.
        map: String,
        /// The error.
        msg: String,
    },
}

type Result<T> = std::result::Result<T, EngineError>;

fn pin_err(what: &'static str, path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Pin {
        what,
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn map_err(map: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Map {
        map: map.into(),
        msg: e.to_string(),
    }
}

/// The programs statewall attaches, in chain order per hook.
pub fn desired_links(cfg: &Config) -> Vec<LinkSpot> {
    let mut v = Vec::new();
    for ifc in &cfg.interfaces {
        let spot = |hook: &str, program: &str| LinkSpot {
            netns: ifc.netns.clone(),
            ifname: ifc.name.clone(),
            hook: hook.into(),
            program: program.into(),
        };
        match ifc.ingress {
            IngressHook::Tcx => {
                if !cfg.knocks.is_empty() || !cfg.machines.is_empty() {
                    v.push(spot("ingress", ebpf::PROG_XFSM));
                }
                v.push(spot("ingress", PROG_GATE));
            }
            IngressHook::Xdp => v.push(spot("xdp", PROG_XDP_INGRESS)),
            IngressHook::Off => continue,
        }
        if cfg
            .raw_machines()
            .is_ok_and(|r| crate::xfsm::raw_uses_egress(&r))
        {
            v.push(spot("egress", ebpf::PROG_XFSM_EGRESS));
        }
    }
    v
}

/// Chain order of the programs on a tcx hook (lower first).
fn chain_rank(program: &str) -> u32 {
    match program {
        ebpf::PROG_XFSM | ebpf::PROG_XFSM_EGRESS => 30,
        PROG_GATE => 40,
        ebpf::PROG_FW_INGRESS | ebpf::PROG_FW_EGRESS => 50,
        _ => 100,
    }
}

/// One attachment as seen in the kernel.
#[derive(Clone, Debug, Serialize)]
pub struct LinkState {
    /// Where.
    #[serde(flatten)]
    pub spot: LinkSpot,
    /// Kernel link id.
    pub link_id: u32,
    /// Kernel program id.
    pub program_id: u32,
}

/// One map and how full it is.
#[derive(Clone, Debug, Serialize)]
pub struct MapState {
    /// Name.
    pub name: String,
    /// Kernel map id.
    pub id: u32,
    /// Kernel map type, as aya names it.
    pub kind: String,
    /// Entries in use (hash maps: keys present; arrays: their size).
    pub entries: u32,
    /// Capacity.
    pub max_entries: u32,
}

/// Attached programs on one hook, in the order the kernel runs them.
#[derive(Clone, Debug, Serialize)]
pub struct HookState {
    /// Namespace (None = the daemon's).
    pub netns: Option<String>,
    /// Interface.
    pub ifname: String,
    /// `ingress` / `egress` / `xdp`.
    pub hook: String,
    /// Program names (and ids) in run order, foreign ones included.
    pub programs: Vec<(String, u32)>,
}

/// The programs the daemon loads, pins and attaches: (name, is XDP).
pub const PROGRAMS: &[(&str, bool)] = &[
    (ebpf::PROG_XFSM, false),
    (ebpf::PROG_XFSM_EGRESS, false),
    (PROG_GATE, false),
    (ebpf::PROG_FW_INGRESS, false),
    (ebpf::PROG_FW_EGRESS, false),
    (PROG_XDP_INGRESS, true),
];

/// A loaded (or adopted) program.
enum Prog {
    Tc(SchedClassifier),
    Xdp(Xdp),
}

/// The kernel side of one statewall instance.
pub struct Engine {
    /// Pin layout.
    pub pins: Pins,
    maps: BTreeMap<&'static str, Map>,
    progs: BTreeMap<&'static str, Prog>,
    /// True when the programs were adopted from pins rather than loaded.
    pub adopted: bool,
    /// The xfsm tables written last (None until [`Engine::apply_xfsm`]).
    pub xfsm: Option<crate::xfsm::Compiled>,
    /// Ports with prefilter bits in each xfsm generation (None = unknown).
    xfsm_ports: [Option<Vec<u16>>; 2],
    /// Per door: (signature without its sequences, full signature) of the last write. A
    /// door whose signature changes loses its sources' states; unknown signatures (a start
    /// that could not read the saved ones) lose all. The daemon keeps them in
    /// `STATE_DIR/xfsm-doors.json` so that a restart keeps knocks in progress.
    pub door_sigs: Vec<(String, String)>,
    /// One-time sequences in force (see [`crate::sequences`]).
    pub once_live: Vec<crate::sequences::Once>,
    /// Time counters in force, per time-based door.
    pub time_counters: Vec<(String, u64)>,
    /// What was written into each firewall generation (prefix keys to clear).
    fw_written: [Option<crate::fw::Written>; 2],
    /// Firewall attachments: programs on the interfaces of instances.
    pub fw_links: Vec<LinkSpot>,
}

impl crate::xfsm::MapAccess for Engine {
    fn map_mut(&mut self, name: &str) -> &mut Map {
        self.maps
            .get_mut(name)
            .unwrap_or_else(|| panic!("map {name} is not pinned"))
    }
}

/// `BPF_MAP_TYPE_ARRAY` and `BPF_MAP_TYPE_PERCPU_ARRAY`.
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// The map sizes the config sets (the other maps have this build's).
fn config_sizes(cfg: &Config) -> Vec<(&'static str, u32)> {
    let mut v = vec![
        (MAP_GATE_GRANTS, cfg.gate.grants_max),
        (MAP_GATE_FLOWS, cfg.gate.flows_max),
        (
            statewall_common::fw::MAP_FW_BITSETS,
            cfg.firewall.bitsets_max,
        ),
        (statewall_common::ct::MAP_CT, cfg.firewall.conntrack_max),
    ];
    for (name, n) in &cfg.maps {
        if let Some(m) = crate::config::RESIZABLE_MAPS.iter().find(|m| m.0 == name) {
            v.push((m.0, *n));
        }
    }
    v
}

fn prog_dir(pins: &Pins) -> PathBuf {
    pins.progs().join(format!("{:016x}", ebpf::object_id()))
}

impl Engine {
    /// Adopts the pinned state or loads the object (see the module doc).
    pub fn open(pins: &Pins, cfg: &Config) -> Result<Engine> {
        if !pins.on_bpffs() {
            return Err(EngineError::NoBpffs(pins.root.clone()));
        }
        pins.create()
            .map_err(|e| pin_err("creating", &pins.root, e))?;
        let dir = prog_dir(pins);
        let have = PROGRAMS.iter().all(|(p, _)| dir.join(p).exists())
            && ebpf::PINNED_MAPS.iter().all(|m| pins.map(m).exists());
        let adopted = have;
        if !have {
            Self::load_and_pin(pins, cfg, &dir)?;
        }
        let obj =
            aya_obj::Object::parse(ebpf::OBJECT).map_err(|e| EngineError::Load(e.to_string()))?;
        let mut maps = BTreeMap::new();
        let sized = config_sizes(cfg);
        for m in ebpf::PINNED_MAPS {
            let p = pins.map(m);
            let md = MapData::from_pin(&p).map_err(|e| pin_err("opening pinned map", &p, e))?;
            // A pinned map from another build must have this build's layout.
            if let (Ok(info), Some(want)) = (md.info(), obj.maps.get(*m)) {
                // Arrays this build sizes itself (counters, control words) must have its
                // size too: a longer one than a pin has would be read past its end.
                let fixed = matches!(want.map_type(), MAP_TYPE_ARRAY | MAP_TYPE_PERCPU_ARRAY)
                    && !sized.iter().any(|s| s.0 == *m);
                let layout = (info.key_size(), info.value_size());
                let entries = if fixed {
                    info.max_entries()
                } else {
                    want.max_entries()
                };
                if layout != (want.key_size(), want.value_size()) || entries != want.max_entries() {
                    return Err(pin_err(
                        "checking pinned map",
                        &p,
                        format!(
                            "key/value sizes {}/{} and {} entries differ from this build's {}/{} and {}: it was made by an incompatible build; \
                             `statewall teardown` removes it (and the state in it)",
                            info.key_size(),
                            info.value_size(),
                            entries,
                            want.key_size(),
                            want.value_size(),
                            want.max_entries()
                        ),
                    ));
                }
            }
            let map = Map::from_map_data(md).map_err(|e| pin_err("opening pinned map", &p, e))?;
            maps.insert(*m, map);
        }
        let mut progs = BTreeMap::new();
        for (name, xdp) in PROGRAMS {
            let path = dir.join(name);
            let prog = if *xdp {
                Xdp::from_pin(&path, aya_obj::programs::XdpAttachType::Interface).map(Prog::Xdp)
            } else {
                SchedClassifier::from_pin(&path).map(Prog::Tc)
            }
            .map_err(|e| pin_err("opening pinned program", &path, e))?;
            progs.insert(*name, prog);
        }
        let mut eng = Engine {
            pins: pins.clone(),
            maps,
            progs,
            adopted,
            xfsm: None,
            xfsm_ports: [None, None],
            door_sigs: Vec::new(),
            once_live: Vec::new(),
            time_counters: Vec::new(),
            fw_written: [None, None],
            fw_links: Vec::new(),
        };
        // Every link runs this build's program (also after a start that died half-way).
        eng.relink_all()?;
        if !adopted {
            // Older builds' programs are no longer referenced by any link.
            if let Ok(rd) = std::fs::read_dir(pins.progs()) {
                for e in rd.flatten() {
                    if e.path() != dir {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        eng.refresh_clock()?;
        Ok(eng)
    }

    fn load_and_pin(pins: &Pins, cfg: &Config, dir: &Path) -> Result<()> {
        let mut loader = EbpfLoader::new();
        for m in ebpf::PINNED_MAPS {
            loader.map_pin_path(m, pins.map(m));
        }
        for (m, n) in config_sizes(cfg) {
            loader.map_max_entries(m, n);
        }
        let mut obj = loader
            .load(ebpf::OBJECT)
            .map_err(|e| EngineError::Load(format!("{e:#}")))?;
        std::fs::create_dir_all(dir).map_err(|e| pin_err("creating", dir, e))?;
        for (name, _) in PROGRAMS {
            let name = *name;
            let prog = obj
                .program_mut(name)
                .ok_or_else(|| EngineError::Load(format!("no program {name}")))?;
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            match prog {
                aya::programs::Program::SchedClassifier(p) => {
                    p.load()
                        .map_err(|e| EngineError::Load(format!("{name}: {e:#}")))?;
                    p.pin(&path).map_err(|e| pin_err("pinning", &path, e))?;
                }
                aya::programs::Program::Xdp(p) => {
                    p.load()
                        .map_err(|e| EngineError::Load(format!("{name}: {e:#}")))?;
                    p.pin(&path).map_err(|e| pin_err("pinning", &path, e))?;
                }
                _ => {
                    return Err(EngineError::Load(format!(
                        "{name}: unexpected program type"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Points every pinned link at this build's program (after a load).
    fn relink_all(&mut self) -> Result<()> {
        for spot in self.pins.list_links() {
            let path = self.pins.link(&spot);
            let link = PinnedLink::from_pin(&path)
                .map_err(|e| pin_err("opening pinned link", &path, e))?;
            let fd: FdLink = link.into();
            let linked = fd.info().map(|i| i.program_id()).unwrap_or(0);
            let res = match (
                spot.hook.as_str(),
                self.progs.get_mut(spot.program.as_str()),
            ) {
                ("xdp", Some(Prog::Xdp(p))) => {
                    if p.info().map(|i| i.id()).unwrap_or(0) == linked {
                        continue;
                    }
                    XdpLink::try_from(fd)
                        .map_err(|e| e.to_string())
                        .and_then(|l| {
                            let id = p.attach_to_link(l).map_err(|e| e.to_string())?;
                            // The pin keeps the link; drop the program's own copy of the fd.
                            p.take_link(id).map(drop).map_err(|e| e.to_string())
                        })
                }
                ("ingress" | "egress", Some(Prog::Tc(p))) => {
                    if p.info().map(|i| i.id()).unwrap_or(0) == linked {
                        continue;
                    }
                    SchedClassifierLink::try_from(fd)
                        .map_err(|e| e.to_string())
                        .and_then(|l| {
                            let id = p.attach_to_link(l).map_err(|e| e.to_string())?;
                            p.take_link(id).map(drop).map_err(|e| e.to_string())
                        })
                }
                _ => Err(format!(
                    "unknown program {} for hook {}",
                    spot.program, spot.hook
                )),
            };
            match res {
                Ok(()) => {
                    tracing::info!(link = %path.display(), "link moved to this build's program")
                }
                // A link this build does not know: reconcile removes it if unwanted.
                Err(msg) => {
                    tracing::warn!(link = %path.display(), "cannot move link to this build's program: {msg}")
                }
            }
        }
        Ok(())
    }

    /// True when the pinned link of `spot` is attached to the interface that has that name
    /// now (a removed or recreated interface leaves a defunct link behind).
    fn link_alive(&self, spot: &LinkSpot) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(fd) = crate::sys::obj_get(&self.pins.link(spot)) else {
            return false;
        };
        let linked = crate::sys::link_ifindex(fd.as_raw_fd()).unwrap_or(0);
        if linked == 0 {
            return false;
        }
        ifindex(spot.netns.as_deref(), &spot.ifname) == linked
    }

    /// Makes the pinned links match the config: detaches what is no longer wanted, attaches
    /// what is missing, in chain order.
    pub fn reconcile(&mut self, cfg: &Config) -> Result<()> {
        let mut want = desired_links(cfg);
        want.extend(self.fw_links.iter().cloned());
        self.reconcile_links(&want)
    }

    /// Makes the pinned links exactly `want` (in chain order per hook).
    pub fn reconcile_links(&mut self, want: &[LinkSpot]) -> Result<()> {
        let want = want.to_vec();
        // Attach first, detach after: switching a hook (tcx to XDP) never leaves a gap, and a
        // failed attach leaves the old links in place.
        for spot in &want {
            let path = self.pins.link(spot);
            if path.exists() {
                if self.link_alive(spot) {
                    continue;
                }
                tracing::warn!(program = %spot.program, ifname = %spot.ifname, hook = %spot.hook, netns = ?spot.netns,
                    "link is defunct (interface removed or recreated): attaching again");
                detach_pin(&path)?;
            }
            self.attach(spot, &want)?;
        }
        for have in self.pins.list_links() {
            if !want.contains(&have) {
                self.detach(&have)?;
            }
        }
        Ok(())
    }

    fn attach(&mut self, spot: &LinkSpot, all: &[LinkSpot]) -> Result<()> {
        let path = self.pins.link(spot);
        std::fs::create_dir_all(path.parent().unwrap())
            .map_err(|e| pin_err("creating", &path, e))?;
        let aerr = |msg: String| EngineError::Attach {
            program: spot.program.clone(),
            ifname: spot.ifname.clone(),
            hook: spot.hook.clone(),
            ns: spot
                .netns
                .as_ref()
                .map(|n| format!(" in netns {n}"))
                .unwrap_or_default(),
            msg,
        };
        // Order: after the attached statewall program ranked just before this one, else
        // before the one ranked just after, else first on the hook.
        let same_hook: Vec<&LinkSpot> = all
            .iter()
            .filter(|s| {
                s.netns == spot.netns
                    && s.ifname == spot.ifname
                    && s.hook == spot.hook
                    && s != &spot
            })
            .filter(|s| self.pins.link(s).exists())
            .collect();
        let rank = chain_rank(&spot.program);
        let prev = same_hook
            .iter()
            .filter(|s| chain_rank(&s.program) < rank)
            .max_by_key(|s| chain_rank(&s.program));
        let next = same_hook
            .iter()
            .filter(|s| chain_rank(&s.program) > rank)
            .min_by_key(|s| chain_rank(&s.program));
        let neighbour = |s: &LinkSpot| -> Result<SchedClassifierLink> {
            let p = self.pins.link(s);
            let l = PinnedLink::from_pin(&p).map_err(|e| pin_err("opening pinned link", &p, e))?;
            SchedClassifierLink::try_from(FdLink::from(l))
                .map_err(|e| pin_err("opening pinned link", &p, e))
        };
        // The neighbour's fd must stay open until the attach: LinkOrder holds its number.
        let nb = match (prev, next) {
            (Some(p), _) => Some((true, neighbour(p)?)),
            (None, Some(n)) => Some((false, neighbour(n)?)),
            _ => None,
        };
        let order = match &nb {
            Some((true, l)) => LinkOrder::after_link(l).map_err(|e| aerr(e.to_string()))?,
            Some((false, l)) => LinkOrder::before_link(l).map_err(|e| aerr(e.to_string()))?,
            None => LinkOrder::first(),
        };
        let ifname = spot.ifname.clone();
        let hook = spot.hook.clone();
        let prog = self
            .progs
            .get_mut(spot.program.as_str())
            .ok_or_else(|| aerr(format!("unknown program {}", spot.program)))?;
        let fd: std::result::Result<FdLink, String> =
            in_netns(spot.netns.as_deref(), move || match (hook.as_str(), prog) {
                ("ingress" | "egress", Prog::Tc(p)) => {
                    let t = if hook == "ingress" {
                        TcAttachType::Ingress
                    } else {
                        TcAttachType::Egress
                    };
                    let id = p
                        .attach_with_options(&ifname, t, TcAttachOptions::TcxOrder(order))
                        .map_err(|e| format!("{e:#}"))?;
                    let l = p.take_link(id).map_err(|e| e.to_string())?;
                    FdLink::try_from(l).map_err(|e| e.to_string())
                }
                ("xdp", Prog::Xdp(p)) => {
                    let id = p
                        .attach(&ifname, XdpMode::Default)
                        .map_err(|e| format!("{e:#}"))?;
                    let l = p.take_link(id).map_err(|e| e.to_string())?;
                    FdLink::try_from(l).map_err(|e| e.to_string())
                }
                (hook, _) => Err(format!("program does not fit hook {hook}")),
            })
            .map_err(|e| aerr(e.to_string()))?;
        let fd = fd.map_err(aerr)?;
        drop(nb);
        fd.pin(&path)
            .map_err(|e| pin_err("pinning link", &path, e))?;
        tracing::info!(program = %spot.program, ifname = %spot.ifname, hook = %spot.hook, netns = ?spot.netns, "attached");
        Ok(())
    }

    fn detach(&mut self, spot: &LinkSpot) -> Result<()> {
        let path = self.pins.link(spot);
        detach_pin(&path)?;
        tracing::info!(program = %spot.program, ifname = %spot.ifname, hook = %spot.hook, netns = ?spot.netns, "detached");
        Ok(())
    }

    /// Writes the protected-port table from the config: additions first, then removals, so
    /// no port that stays protected is ever open in between; the summary slot last.
    pub fn apply_gate(&mut self, cfg: &Config) -> Result<()> {
        let mut want = vec![0u8; 65536];
        for PortSpec { proto, port } in &cfg.protected_ports() {
            want[*port as usize] |= if *proto == 17 { GATE_UDP } else { GATE_TCP };
        }
        for port in cfg.spa.reset_ports() {
            if want[port as usize] & GATE_TCP != 0 {
                want[port as usize] |= statewall_common::maps::GATE_RESET;
            }
        }
        let summary = want.iter().fold(0u8, |a, b| a | b);
        let md = self.maps.get_mut(MAP_GATE_PORTS).unwrap();
        let mut arr: Array<&mut MapData, u8> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        let cur_summary = arr.get(&GATE_SUMMARY_SLOT, 0).unwrap_or(0);
        arr.set(GATE_SUMMARY_SLOT, cur_summary | summary, 0)
            .map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        for pass in 0..2 {
            for port in 0..65536u32 {
                let cur = arr.get(&port, 0).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
                let w = want[port as usize];
                let adding = w & !cur != 0;
                if cur != w && ((pass == 0 && adding) || (pass == 1 && !adding)) {
                    let v = if pass == 0 { cur | w } else { w };
                    arr.set(port, v, 0)
                        .map_err(|e| map_err(MAP_GATE_PORTS, e))?;
                }
            }
        }
        arr.set(GATE_SUMMARY_SLOT, summary, 0)
            .map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        let g = &cfg.gate;
        let conf = GateConf {
            tcp_idle_ns: g.flow_idle_tcp.0.as_nanos() as u64,
            tcp_closing_ns: g.flow_closing_tcp.0.as_nanos() as u64,
            udp_idle_ns: g.flow_idle_udp.0.as_nanos() as u64,
        };
        let md = self.maps.get_mut(MAP_GATE_CONF).unwrap();
        let mut arr: Array<&mut MapData, GateConf> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_CONF, e))?;
        arr.set(0, conf, 0).map_err(|e| map_err(MAP_GATE_CONF, e))?;
        Ok(())
    }

    /// Writes the spa stage's configuration and pkd tag set: tags first (new ones added
    /// before stale ones go), then the config word that turns pkd and fwknop on or off.
    pub fn apply_spa(&mut self, cfg: &Config) -> Result<()> {
        use statewall_common::spa::{SpaConf, MAP_SPA_CONF, MAP_SPA_TAGS};
        let setup = cfg
            .spa
            .resolve()
            .map_err(|(at, msg)| EngineError::Doors(format!("{at}: {msg}")))?;
        let tags: std::collections::BTreeSet<u32> = setup
            .pkd
            .iter()
            .map(|a| u32::from_ne_bytes(a.tag))
            .collect();
        {
            let md = self.maps.get_mut(MAP_SPA_TAGS).unwrap();
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
        let interval = cfg.spa.rate_interval.ns().max(1);
        let conf = SpaConf {
            pkd: !setup.pkd.is_empty() as u8,
            _pad: 0,
            fwknop_port: if setup.fwknop.is_empty() {
                0
            } else {
                cfg.spa.fwknop_port
            },
            _pad2: 0,
            interval_ns: interval,
            tau_ns: interval.saturating_mul(cfg.spa.rate_burst.saturating_sub(1) as u64),
        };
        let md = self.maps.get_mut(MAP_SPA_CONF).unwrap();
        let mut arr: Array<&mut MapData, SpaConf> =
            Array::try_from(md).map_err(|e| map_err(MAP_SPA_CONF, e))?;
        arr.set(0, conf, 0).map_err(|e| map_err(MAP_SPA_CONF, e))?;
        Ok(())
    }

    /// Writes the firewall instances into the inactive generation and switches to it,
    /// points each attached interface at its instance, and attaches the chain programs
    /// (`cfg` for the other stages' links). `moves`: (chain, origin of each new rule) for
    /// the counters to follow their rules.
    pub fn apply_firewall(
        &mut self,
        cfg: &Config,
        st: &crate::firewall::FwState,
        moves: &[(u32, Vec<Option<usize>>)],
    ) -> Result<()> {
        use statewall_common::fw::{
            stats_slot, RuleStats, MAP_FW_BITSETS, MAP_FW_IFACES, MAP_FW_STATS,
        };
        let compiled = crate::fw::compile(&st.chains()).map_err(EngineError::Doors)?;
        {
            use statewall_common::ct::{CtConf, MAP_CT_CONF};
            let f = &cfg.firewall;
            let conf = CtConf {
                tcp_syn_ns: f.ct_tcp_syn.ns(),
                tcp_est_ns: f.ct_tcp_established.ns(),
                tcp_close_ns: f.ct_tcp_closing.ns(),
                udp_ns: f.ct_udp.ns(),
            };
            let mut a: Array<&mut MapData, CtConf> =
                Array::try_from(self.maps.get_mut(MAP_CT_CONF).unwrap())
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
            Array::try_from(self.maps.get(statewall_common::fw::MAP_FW_CTL).unwrap())
                .map_err(|e| map_err(statewall_common::fw::MAP_FW_CTL, e))?;
        let shadow = (ctl.get(&0, 0).unwrap_or(0) & 1) as usize ^ 1;
        let old = self.fw_written[shadow].take();
        // Counters that move with their rules: read before the switch.
        let mut moved: Vec<(u32, Vec<aya::maps::PerCpuValues<RuleStats>>)> = Vec::new();
        {
            let a: aya::maps::PerCpuArray<&MapData, RuleStats> =
                aya::maps::PerCpuArray::try_from(self.maps.get(MAP_FW_STATS).unwrap())
                    .map_err(|e| map_err(MAP_FW_STATS, e))?;
            for (chain, origin) in moves {
                let mut v = Vec::new();
                for o in origin {
                    let vals = match o {
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
                    v.push(vals);
                }
                moved.push((*chain, v));
            }
        }
        let (_, written) =
            crate::fw::write_tables(self, &compiled, half, old.as_ref()).map_err(|e| {
                EngineError::Map {
                    map: "firewall tables".into(),
                    msg: e,
                }
            })?;
        self.fw_written[shadow] = Some(written);
        {
            let mut a: aya::maps::PerCpuArray<&mut MapData, RuleStats> =
                aya::maps::PerCpuArray::try_from(self.maps.get_mut(MAP_FW_STATS).unwrap())
                    .map_err(|e| map_err(MAP_FW_STATS, e))?;
            for (chain, vals) in moved {
                for (i, v) in vals.into_iter().enumerate() {
                    a.set(stats_slot(chain, i as u32), v, 0)
                        .map_err(|e| map_err(MAP_FW_STATS, e))?;
                }
            }
        }
        // Interfaces -> instances.
        let mut want_ifaces = BTreeMap::new();
        for inst in st.instances.values() {
            for port in &inst.ports {
                let idx = ifindex(port.netns.as_deref(), &port.ifname);
                if idx == 0 {
                    return Err(EngineError::Doors(format!(
                        "interface {:?} (namespace {:?}) does not exist",
                        port.ifname, port.netns
                    )));
                }
                want_ifaces.insert(idx, inst.slot);
            }
        }
        let links = fw_link_spots(st);
        {
            let mut h: BpfHashMap<&mut MapData, u32, u32> =
                BpfHashMap::try_from(self.maps.get_mut(MAP_FW_IFACES).unwrap())
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
        self.fw_links = links;
        self.reconcile(cfg)
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
        use statewall_common::fw::{stats_slot, RuleStats, MAP_FW_STATS};
        let a: aya::maps::PerCpuArray<&MapData, RuleStats> =
            aya::maps::PerCpuArray::try_from(self.maps.get(MAP_FW_STATS).unwrap())
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
        use statewall_common::fw::{COUNTERS, COUNTER_NAMES, MAP_FW_COUNTERS};
        let sums = self.percpu_sums(MAP_FW_COUNTERS, COUNTERS)?;
        Ok(COUNTER_NAMES.into_iter().zip(sums).collect())
    }

    /// Takes the LOG events waiting in the ring buffer (tools and tests; the daemon follows
    /// the ring with its own handle).
    pub fn drain_fw_log(&mut self) -> Vec<statewall_common::fw::FwLog> {
        let Some(m) = self.maps.get_mut(statewall_common::fw::MAP_FW_LOG) else {
            return Vec::new();
        };
        drain_ring(m)
    }

    /// spa stage counters (kernel side) summed over CPUs, by name.
    pub fn spa_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        use statewall_common::spa::{MAP_SPA_STATS, SPA_COUNTERS, SPA_COUNTER_NAMES};
        let sums = self.percpu_sums(MAP_SPA_STATS, SPA_COUNTERS)?;
        Ok(SPA_COUNTER_NAMES.into_iter().zip(sums).collect())
    }

    /// Compiles the config's doors and writes them into the inactive xfsm generation, then
    /// switches to it (one array update: no packet sees half a table).
    pub fn apply_xfsm(&mut self, cfg: &Config) -> Result<()> {
        let exp = self.expand_sequences(cfg)?;
        let doors = &exp.doors;
        let raws = cfg
            .raw_machines()
            .map_err(|(at, msg)| EngineError::Doors(format!("{at}: {msg}")))?;
        let compiled = crate::xfsm::compile(doors, &raws).map_err(EngineError::Doors)?;
        // A machine whose door changed (or whose previous door is unknown: the first write
        // of this process) starts with no states: an old state id means nothing in the new
        // machine. When only its sequences changed (a one-time sequence used, a new time
        // window), OPEN states stay and only part-way states go. Lock records stay (they
        // are per source and door index).
        let sigs: Vec<(String, String)> = doors
            .iter()
            .map(|d| {
                let mut bare = d.clone();
                bare.sequences.clear();
                bare.once.clear();
                (format!("{bare:?}"), format!("{d:?}"))
            })
            .chain(raws.iter().map(|r| (format!("{r:?}"), format!("{r:?}"))))
            .collect();
        let mut flush = [None::<u8>; statewall_common::xfsm::MAX_MACHINES];
        for (m, f) in flush.iter_mut().enumerate() {
            let (old, new) = (self.door_sigs.get(m), sigs.get(m));
            if old.map(|s| &s.0) != new.map(|s| &s.0) {
                *f = Some(0); // every state
            } else if old != new {
                *f = Some(2); // states from 2 on: the part-way ones
            }
        }
        let ctl: Array<&MapData, u32> =
            Array::try_from(self.maps.get(statewall_common::xfsm::MAP_CTL).unwrap())
                .map_err(|e| map_err(statewall_common::xfsm::MAP_CTL, e))?;
        let cur = ctl.get(&statewall_common::xfsm::CTL_GEN, 0).unwrap_or(0) & 1;
        let shadow = (cur ^ 1) as usize;
        let known = self.xfsm_ports[shadow].take();
        let new = crate::xfsm::write_tables(self, &compiled, known.as_deref()).map_err(|e| {
            EngineError::Map {
                map: "xfsm tables".into(),
                msg: e,
            }
        })?;
        self.xfsm_ports[new as usize] = Some(compiled.ports.keys().copied().collect());
        self.xfsm = Some(compiled);
        self.door_sigs = sigs;
        self.once_live = exp.once;
        self.time_counters = exp.time_counters;
        if flush.iter().any(Option::is_some) {
            use statewall_common::xfsm::{StateKey, StateVal, MAP_STATES};
            let mut h: BpfHashMap<&mut MapData, StateKey, StateVal> =
                BpfHashMap::try_from(self.maps.get_mut(MAP_STATES).unwrap())
                    .map_err(|e| map_err(MAP_STATES, e))?;
            let keys: Vec<StateKey> = h
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(k, v)| {
                    matches!(flush.get(k.machine as usize), Some(Some(from)) if v.state >= *from)
                })
                .map(|(k, _)| k)
                .collect();
            for k in keys {
                let _ = h.remove(&k);
            }
        }
        Ok(())
    }

    /// The doors with every sequence in force, after recording the one-time sequences the
    /// kernel has used (their keys gone from `SW_XFSM_ONCE`) and issuing keys for new ones.
    fn expand_sequences(&mut self, cfg: &Config) -> Result<crate::sequences::Expansion> {
        use crate::sequences::{self as seqs, SENTINEL};
        use statewall_common::xfsm::MAP_ONCE;
        let now = crate::clock::unix_secs();
        let derr = EngineError::Doors;
        let mut exp = seqs::expand(cfg, now).map_err(derr)?;
        if exp.once.is_empty() {
            return Ok(exp);
        }
        let dir = cfg.daemon.state_dir.clone();
        let mut h: BpfHashMap<&mut MapData, u64, u8> =
            BpfHashMap::try_from(self.maps.get_mut(MAP_ONCE).unwrap())
                .map_err(|e| map_err(MAP_ONCE, e))?;
        let mut issued = if h.get(&SENTINEL, 0).is_err() {
            // A new map (first start, or pins gone after a reboot): keys issued before mean
            // nothing now.
            seqs::write_synced(&seqs::issued_path(&dir), b"").map_err(derr)?;
            h.insert(SENTINEL, 1, 0).map_err(|e| map_err(MAP_ONCE, e))?;
            BTreeSet::new()
        } else {
            seqs::read_issued(&dir).map_err(derr)?
        };
        let mut used = BTreeSet::new();
        for _ in 0..8 {
            let fresh: Vec<seqs::Once> = exp
                .once
                .iter()
                .filter(|o| {
                    !used.contains(&o.key) && issued.contains(&o.key) && h.get(&o.key, 0).is_err()
                })
                .cloned()
                .collect();
            if fresh.is_empty() {
                break;
            }
            for o in &fresh {
                match seqs::consume(&dir, o) {
                    Ok(()) => {
                        tracing::info!(door = %o.door, origin = ?o.origin, "one-time sequence used")
                    }
                    Err(e) => tracing::warn!(door = %o.door, "one-time sequence used: {e}"),
                }
                used.insert(o.key);
            }
            exp = seqs::expand(cfg, now).map_err(derr)?;
        }
        // Sequences used but still read (a line that could not be marked) stay out.
        for d in &mut exp.doors {
            let mut i = 0;
            while i < d.sequences.len() {
                if d.once.get(i).is_some_and(|k| used.contains(k)) {
                    d.sequences.remove(i);
                    d.once.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        exp.once.retain(|o| !used.contains(&o.key));
        // Keys no longer in force (used, counters passed, lines or doors gone) leave the
        // map and the list, so neither fills up.
        let live: BTreeSet<u64> = exp.once.iter().map(|o| o.key).collect();
        let gone: Vec<u64> = issued.difference(&live).copied().collect();
        for k in &gone {
            let _ = h.remove(k);
        }
        let new: Vec<u64> = live.difference(&issued).copied().collect();
        if !gone.is_empty() {
            issued.retain(|k| live.contains(k));
            seqs::write_issued(&dir, &issued).map_err(derr)?;
        }
        if !new.is_empty() {
            // Listed (and synced) before they exist in the map: a crash in between leaves a
            // listed key missing, which reads as used (fail closed).
            seqs::append_issued(&dir, &new).map_err(derr)?;
            for k in &new {
                if let Err(e) = h.insert(k, 1, 0) {
                    // Not in the map: take it off the list again, so that it does not read
                    // as used, and fail the update.
                    issued.extend(new.iter().copied());
                    issued.remove(k);
                    let _ = seqs::write_issued(&dir, &issued);
                    return Err(map_err(MAP_ONCE, e));
                }
                issued.insert(*k);
            }
        }
        Ok(exp)
    }

    /// Recompiles the doors when a one-time sequence was used or a time window turned
    /// (the daemon calls it every second); true when it did.
    pub fn refresh_sequences(&mut self, cfg: &Config) -> Result<bool> {
        use statewall_common::xfsm::MAP_ONCE;
        let now = crate::clock::unix_secs();
        let turned = self.time_counters.iter().any(|(door, c)| {
            cfg.knocks.iter().any(|k| {
                k.name == *door
                    && crate::knockclient::time_counter(now, k.time_period.0.as_secs().max(1)) != *c
            })
        });
        let used = !self.once_live.is_empty() && {
            let h: BpfHashMap<&MapData, u64, u8> =
                BpfHashMap::try_from(self.maps.get(MAP_ONCE).unwrap())
                    .map_err(|e| map_err(MAP_ONCE, e))?;
            self.once_live.iter().any(|o| h.get(&o.key, 0).is_err())
        };
        if turned || used {
            self.apply_xfsm(cfg)?;
        }
        Ok(turned || used)
    }

    /// Takes the xfsm events waiting in the ring buffer (tools and tests; the daemon reads
    /// them asynchronously from its own handle).
    pub fn drain_events(&mut self) -> Vec<statewall_common::xfsm::Event> {
        use statewall_common::xfsm::{Event, MAP_EVENTS};
        let Some(m) = self.maps.get_mut(MAP_EVENTS) else {
            return Vec::new();
        };
        drain_ring::<Event>(m)
    }

    /// xfsm stage counters summed over CPUs, by name.
    pub fn xfsm_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        use statewall_common::xfsm::{COUNTERS, COUNTER_NAMES, MAP_STATS};
        let sums = self.percpu_sums(MAP_STATS, COUNTERS)?;
        Ok(COUNTER_NAMES.into_iter().zip(sums).collect())
    }

    /// Entries `0..n` of a per-CPU counter array, each summed over CPUs.
    fn percpu_sums(&self, map: &str, n: u32) -> Result<Vec<u64>> {
        let a: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.maps.get(map).unwrap()).map_err(|e| map_err(map, e))?;
        (0..n)
            .map(|i| {
                a.get(&i, 0)
                    .map(|per| per.iter().sum())
                    .map_err(|e| map_err(map, e))
            })
            .collect()
    }

    /// Every entry of a hash map, sorted by key.
    fn hash_entries<K: aya::Pod + Ord, V: aya::Pod>(&self, map: &str) -> Result<Vec<(K, V)>> {
        let h: BpfHashMap<&MapData, K, V> =
            BpfHashMap::try_from(self.maps.get(map).unwrap()).map_err(|e| map_err(map, e))?;
        let mut v: Vec<_> = h.iter().filter_map(|r| r.ok()).collect();
        v.sort_by_key(|(k, _)| *k);
        Ok(v)
    }

    /// Per-transition counters of the current tables: (name, packets).
    pub fn xfsm_transition_counters(&self) -> Result<Vec<(String, u64)>> {
        use statewall_common::xfsm::MAP_TCOUNT;
        let Some(c) = &self.xfsm else {
            return Ok(Vec::new());
        };
        let sums = self.percpu_sums(MAP_TCOUNT, c.counter_names.len() as u32)?;
        Ok(c.counter_names.iter().cloned().zip(sums).collect())
    }

    /// The xfsm state entries: (machine, source, state, idle deadline, hard deadline).
    pub fn xfsm_states(
        &self,
    ) -> Result<
        Vec<(
            statewall_common::xfsm::StateKey,
            statewall_common::xfsm::StateVal,
        )>,
    > {
        self.hash_entries(statewall_common::xfsm::MAP_STATES)
    }

    /// Lock records: (key, value).
    pub fn xfsm_locks(
        &self,
    ) -> Result<
        Vec<(
            statewall_common::xfsm::LockKey,
            statewall_common::xfsm::LockVal,
        )>,
    > {
        self.hash_entries(statewall_common::xfsm::MAP_LOCKS)
    }

    /// Removes lock records whose lockout and failure window are over (so that a full lock
    /// table drains), and clears the table-full flag when there is room again; returns how
    /// many records went.
    pub fn sweep_locks(&mut self, cfg: &Config) -> Result<usize> {
        use statewall_common::xfsm::{LockKey, LockVal, CTL_LOCK_FULL, MAP_CTL, MAP_LOCKS};
        let now = self.kernel_now();
        let windows: Vec<u64> = cfg
            .knocks
            .iter()
            .map(|k| k.lockout.as_ref().map(|l| l.within.ns()).unwrap_or(0))
            .collect();
        let locks = self.xfsm_locks()?;
        let total = locks.len();
        let dead: Vec<LockKey> = locks
            .into_iter()
            .filter(|(k, v)| {
                let w = windows.get(k.machine as usize).copied().unwrap_or(0);
                v.locked_until <= now && v.window_start.saturating_add(w) <= now
            })
            .map(|(k, _)| k)
            .collect();
        let cap = {
            use aya::maps::IterableMap;
            let mut h: BpfHashMap<&mut MapData, LockKey, LockVal> =
                BpfHashMap::try_from(self.maps.get_mut(MAP_LOCKS).unwrap())
                    .map_err(|e| map_err(MAP_LOCKS, e))?;
            for k in &dead {
                let _ = h.remove(k);
            }
            h.map().info().map(|i| i.max_entries()).unwrap_or(0) as usize
        };
        if total - dead.len() < cap {
            let mut ctl: Array<&mut MapData, u32> =
                Array::try_from(self.maps.get_mut(MAP_CTL).unwrap())
                    .map_err(|e| map_err(MAP_CTL, e))?;
            if ctl.get(&CTL_LOCK_FULL, 0).unwrap_or(0) != 0 {
                ctl.set(CTL_LOCK_FULL, 0, 0)
                    .map_err(|e| map_err(MAP_CTL, e))?;
            }
        }
        Ok(dead.len())
    }

    /// The protected ports as the kernel has them.
    pub fn protected(&self) -> Result<Vec<PortSpec>> {
        let md = self.maps.get(MAP_GATE_PORTS).unwrap();
        let arr: Array<&MapData, u8> =
            Array::try_from(md).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
        let mut v = Vec::new();
        for port in 1..65536u32 {
            let b = arr.get(&port, 0).map_err(|e| map_err(MAP_GATE_PORTS, e))?;
            if b & GATE_TCP != 0 {
                v.push(PortSpec {
                    proto: 6,
                    port: port as u16,
                });
            }
            if b & GATE_UDP != 0 {
                v.push(PortSpec {
                    proto: 17,
                    port: port as u16,
                });
            }
        }
        Ok(v)
    }

    /// The kernel clock now.
    pub fn kernel_now(&self) -> u64 {
        let arr: Array<&MapData, u64> = Array::try_from(self.maps.get(MAP_CLOCK).unwrap()).unwrap();
        crate::clock::kernel_now(&arr)
    }

    /// Adds or extends a grant. A full table refuses it.
    pub fn grant(&mut self, key: GrantKey, seconds: u64, origin: u32) -> Result<u64> {
        let mut expires_ns = self.kernel_now() + seconds * 1_000_000_000;
        let md = self.maps.get_mut(MAP_GATE_GRANTS).unwrap();
        let mut h: BpfHashMap<&mut MapData, GrantKey, GrantValue> =
            BpfHashMap::try_from(md).map_err(|e| map_err(MAP_GATE_GRANTS, e))?;
        // Extending never shortens a grant.
        if let Ok(cur) = h.get(&key, 0) {
            expires_ns = expires_ns.max(cur.expires_ns);
        }
        h.insert(
            key,
            GrantValue {
                expires_ns,
                origin,
                _pad: 0,
            },
            0,
        )
        .map_err(|e| match e {
            aya::maps::MapError::SyscallError(ref s)
                if s.io_error.raw_os_error() == Some(libc::E2BIG) =>
            {
                EngineError::TableFull {
                    map: MAP_GATE_GRANTS.into(),
                }
            }
            e => map_err(MAP_GATE_GRANTS, e),
        })?;
        Ok(expires_ns)
    }

    /// Removes a grant; false when there was none.
    pub fn revoke(&mut self, key: &GrantKey) -> Result<bool> {
        let md = self.maps.get_mut(MAP_GATE_GRANTS).unwrap();
        let mut h: BpfHashMap<&mut MapData, GrantKey, GrantValue> =
            BpfHashMap::try_from(md).map_err(|e| map_err(MAP_GATE_GRANTS, e))?;
        match h.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(s))
                if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(map_err(MAP_GATE_GRANTS, e)),
        }
    }

    /// Every grant with its expiry (kernel clock).
    pub fn grants(&self) -> Result<Vec<(GrantKey, GrantValue)>> {
        self.hash_entries(MAP_GATE_GRANTS)
    }

    /// Removes the grants of `grants` (a dump of the table) that had expired at `now`;
    /// returns how many. A grant extended since the dump stays.
    pub fn sweep_grants(&mut self, grants: &[(GrantKey, GrantValue)], now: u64) -> Result<usize> {
        let dead = grants
            .iter()
            .filter(|(_, v)| v.expires_ns <= now)
            .map(|(k, _)| *k);
        self.remove_expired(MAP_GATE_GRANTS, dead, |v: &GrantValue| v.expires_ns <= now)
    }

    /// Removes the entries at `keys` of hash map `name` that are still `expired` (a packet
    /// may have revived one since the caller looked); returns how many.
    fn remove_expired<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
        keys: impl Iterator<Item = K>,
        expired: impl Fn(&V) -> bool,
    ) -> Result<usize> {
        let md = self.maps.get_mut(name).unwrap();
        let mut h: BpfHashMap<&mut MapData, K, V> =
            BpfHashMap::try_from(md).map_err(|e| map_err(name, e))?;
        let mut n = 0;
        for k in keys {
            let dead = matches!(h.get(&k, 0), Ok(v) if expired(&v));
            if dead && h.remove(&k).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Writes `CLOCK_REALTIME - CLOCK_MONOTONIC` again (the daemon does it every second, so
    /// epoch timestamps follow wall-clock steps).
    pub fn refresh_clock(&mut self) -> Result<()> {
        let mut clock: Array<&mut MapData, u64> =
            Array::try_from(self.maps.get_mut(MAP_CLOCK).unwrap())
                .map_err(|e| map_err(MAP_CLOCK, e))?;
        crate::clock::refresh_epoch_offset(&mut clock).map_err(|e| map_err(MAP_CLOCK, e))
    }

    /// Every flow opened under a grant, with its expiry (kernel clock).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>> {
        self.hash_entries(MAP_GATE_FLOWS)
    }

    /// Removes flows that idled out; returns how many. (The gate ignores them already; this
    /// frees their room.)
    pub fn sweep_flows(&mut self) -> Result<usize> {
        let now = self.kernel_now();
        let flows = self.flows()?;
        let dead = flows
            .iter()
            .filter(|(_, v)| v.expires_ns <= now)
            .map(|(k, _)| *k);
        self.remove_expired(MAP_GATE_FLOWS, dead, |v: &FlowValue| v.expires_ns <= now)
    }

    /// Gate counters summed over CPUs, by name.
    pub fn gate_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let sums = self.percpu_sums(MAP_GATE_STATS, GATE_COUNTERS)?;
        Ok(GATE_COUNTER_NAMES.into_iter().zip(sums).collect())
    }

    /// The maps with ids and fill levels.
    pub fn map_states(&self) -> Vec<MapState> {
        let mut v = Vec::new();
        for name in self.maps.keys() {
            let Ok(md) = MapData::from_pin(self.pins.map(name)) else {
                continue;
            };
            let Ok(info) = md.info() else { continue };
            let kind = info
                .map_type()
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|_| "unknown".into());
            let is_hash = kind.contains("Hash");
            let entries = if is_hash {
                use std::os::fd::{AsFd, AsRawFd};
                crate::sys::count_keys(md.fd().as_fd().as_raw_fd(), info.key_size() as usize)
                    .unwrap_or(0)
            } else {
                info.max_entries()
            };
            v.push(MapState {
                name: name.to_string(),
                id: info.id(),
                kind,
                entries,
                max_entries: info.max_entries(),
            });
        }
        v
    }

    /// Ids of the pinned links.
    pub fn link_states(&self) -> Vec<LinkState> {
        self.pins
            .list_links()
            .into_iter()
            .filter_map(|spot| {
                let l = PinnedLink::from_pin(self.pins.link(&spot)).ok()?;
                let fd: FdLink = l.into();
                let info = fd.info().ok()?;
                Some(LinkState {
                    spot,
                    link_id: info.id(),
                    program_id: info.program_id(),
                })
            })
            .collect()
    }

    /// What runs on each configured hook, in order (from the kernel, foreign programs too).
    pub fn hook_states(&self, cfg: &Config) -> Vec<HookState> {
        let mut v = Vec::new();
        for ifc in &cfg.interfaces {
            for (hook, t) in [
                ("ingress", TcAttachType::Ingress),
                ("egress", TcAttachType::Egress),
            ] {
                let name = ifc.name.clone();
                let progs = in_netns(ifc.netns.as_deref(), move || {
                    SchedClassifier::query_tcx(&name, t)
                })
                .ok()
                .and_then(|r| r.ok())
                .map(|(_, infos)| {
                    infos
                        .iter()
                        .map(|i| (i.name_as_str().unwrap_or("?").to_string(), i.id()))
                        .collect()
                })
                .unwrap_or_default();
                v.push(HookState {
                    netns: ifc.netns.clone(),
                    ifname: ifc.name.clone(),
                    hook: hook.into(),
                    programs: progs,
                });
            }
            let xdp: Vec<(String, u32)> = self
                .link_states()
                .into_iter()
                .filter(|l| {
                    l.spot.hook == "xdp" && l.spot.ifname == ifc.name && l.spot.netns == ifc.netns
                })
                .map(|l| (l.spot.program, l.program_id))
                .collect();
            if !xdp.is_empty() {
                v.push(HookState {
                    netns: ifc.netns.clone(),
                    ifname: ifc.name.clone(),
                    hook: "xdp".into(),
                    programs: xdp,
                });
            }
        }
        v
    }

    /// A pinned map, for tests and tools.
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.get(name)
    }
}

/// The index of interface `name` in namespace `netns` now (0: no such interface).
fn ifindex(netns: Option<&str>, name: &str) -> u32 {
    let name = name.to_string();
    in_netns(netns, move || {
        let c = std::ffi::CString::new(name).unwrap_or_default();
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })
    .unwrap_or(0)
}

fn detach_pin(path: &Path) -> Result<()> {
    let l = PinnedLink::from_pin(path).map_err(|e| pin_err("opening pinned link", path, e))?;
    let fd = l.unpin().map_err(|e| pin_err("unpinning link", path, e))?;
    drop(fd);
    Ok(())
}

/// The firewall's attachments for `st`: both chain programs on every interface of every
/// instance. The daemon sets them before its first reconcile at start, so that adopting
/// running links never detaches the firewall for a moment.
pub fn fw_link_spots(st: &crate::firewall::FwState) -> Vec<LinkSpot> {
    let mut links = Vec::new();
    for inst in st.instances.values() {
        for port in &inst.ports {
            for (hook, program) in [
                ("ingress", ebpf::PROG_FW_INGRESS),
                ("egress", ebpf::PROG_FW_EGRESS),
            ] {
                links.push(LinkSpot {
                    netns: port.netns.clone(),
                    ifname: port.ifname.clone(),
                    hook: hook.into(),
                    program: program.into(),
                });
            }
        }
    }
    links
}

/// Every record of type `T` waiting in a ring buffer map.
pub fn drain_ring<T: aya::Pod>(m: &mut Map) -> Vec<T> {
    let Ok(mut rb) = aya::maps::RingBuf::try_from(m) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    while let Some(item) = rb.next() {
        if let Some(x) = ring_record(&item) {
            v.push(x);
        }
    }
    v
}

/// One ring-buffer record as a `T`, when it is long enough.
pub fn ring_record<T: aya::Pod>(b: &[u8]) -> Option<T> {
    // SAFETY: T is plain old data; the length is checked.
    (b.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) })
}

/// Detaches every pinned link and removes every pin under the root.
pub fn teardown(pins: &Pins) -> Result<usize> {
    let mut n = 0;
    for spot in pins.list_links() {
        detach_pin(&pins.link(&spot))?;
        n += 1;
    }
    if pins.root.exists() {
        std::fs::remove_dir_all(&pins.root).map_err(|e| pin_err("removing", &pins.root, e))?;
    }
    Ok(n)
}
