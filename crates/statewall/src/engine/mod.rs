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
//!
//! Owns loading, pinning, attaching, adopting and tearing down; knows no stage (a
//! stage writes its tables through `impl Engine` blocks in its own folder and keeps what it
//! wrote last with [`Engine::stage`]; a table writer that also serves test beds takes
//! [`MapAccess`], in `access`). May import: `statewall-common` only.

pub mod access;
pub mod clock;
pub mod ebpf;
pub mod error;
pub mod migrate;
pub mod netns;
pub mod pins;
pub mod sys;

use std::{
    any::{Any, TypeId},
    collections::BTreeMap,
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
};
use serde::Serialize;
use statewall_common::maps::{CLOCK_SLOT_EPOCH_OFFSET, CLOCK_SLOT_TEST_OFFSET, MAP_CLOCK};

use crate::{
    engine::ebpf::{PROG_GATE, PROG_XDP_INGRESS},
    engine::netns::in_netns,
    engine::pins::{LinkSpot, Pins},
};

pub use access::MapAccess;
pub(crate) use error::{map_err, pin_err};
pub use error::{EngineError, Result};
pub(crate) use netns::ifindex;

/// Chain order of the programs on a tcx hook (lower first).
fn chain_rank(program: &str) -> u32 {
    match program {
        // First: the cheapest place to shed a flood.
        ebpf::PROG_DETECT => 10,
        ebpf::PROG_XFSM | ebpf::PROG_XFSM_EGRESS => 30,
        PROG_GATE => 40,
        ebpf::PROG_FW_INGRESS | ebpf::PROG_FW_EGRESS => 50,
        // Last: a forward must not skip an enforcing stage on the port.
        ebpf::PROG_SWITCH => 60,
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
    (ebpf::PROG_DETECT, false),
    (ebpf::PROG_XFSM, false),
    (ebpf::PROG_XFSM_EGRESS, false),
    (PROG_GATE, false),
    (ebpf::PROG_FW_INGRESS, false),
    (ebpf::PROG_FW_EGRESS, false),
    (ebpf::PROG_SWITCH, false),
    (PROG_XDP_INGRESS, true),
    (ebpf::PROG_FW_XDP, true),
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
    pub(crate) maps: BTreeMap<&'static str, Map>,
    progs: BTreeMap<&'static str, Prog>,
    /// True when the programs were adopted from pins rather than loaded.
    pub adopted: bool,
    /// Links that stages attach beside the config's interfaces (the firewall's
    /// instances): [`Engine::reconcile`] keeps them.
    pub stage_links: Vec<LinkSpot>,
    /// What each stage wrote last, so that its next write is a difference (the xfsm
    /// generation's ports, the firewall's prefix keys): one value per type, owned and named
    /// by the stage ([`Engine::stage`]); the engine reads none of them.
    stages: BTreeMap<TypeId, Box<dyn Any + Send>>,
}

impl MapAccess for Engine {
    fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.maps
            .get_mut(name)
            .ok_or_else(|| map_err(name, "not among the pinned maps"))
    }
}

/// `BPF_MAP_TYPE_ARRAY` and `BPF_MAP_TYPE_PERCPU_ARRAY`.
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_PERCPU_ARRAY: u32 = 6;

fn prog_dir(pins: &Pins) -> PathBuf {
    pins.progs().join(format!("{:016x}", ebpf::object_id()))
}

impl Engine {
    /// Adopts the pinned state or loads the object (see the module doc).
    /// `sizes`: the map sizes the config sets (`Config::map_sizes`); the other maps have
    /// this build's.
    pub fn open(pins: &Pins, sizes: &[(&'static str, u32)]) -> Result<Engine> {
        if !pins.on_bpffs() {
            return Err(EngineError::NoBpffs(pins.root.clone()));
        }
        pins.create()
            .map_err(|e| pin_err("creating", &pins.root, e))?;
        let obj =
            aya_obj::Object::parse(ebpf::OBJECT).map_err(|e| EngineError::Load(e.to_string()))?;
        // Counter arrays an older build pinned shorter: moved aside here, made again below.
        let carried = migrate::take_grown(pins, &obj)?;
        let dir = prog_dir(pins);
        let have = PROGRAMS.iter().all(|(p, _)| dir.join(p).exists())
            && ebpf::PINNED_MAPS.iter().all(|m| pins.map(m).exists());
        let adopted = have;
        let opened = Self::load_and_check(pins, sizes, &obj, &dir, have, &carried);
        let (maps, progs) = match opened {
            Ok(v) => v,
            Err(e) => {
                // Nothing links to what this start made: the older build's pins go back.
                if !have && !carried.is_empty() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                migrate::roll_back(pins, &carried);
                return Err(e);
            }
        };
        let mut eng = Engine {
            pins: pins.clone(),
            maps,
            progs,
            adopted,
            stage_links: Vec::new(),
            stages: BTreeMap::new(),
        };
        // Every link runs this build's program (also after a start that died half-way).
        eng.relink_all()?;
        migrate::commit(pins, &carried);
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

    /// Loads the object when `have` is false, writes the carried counts, and opens every
    /// pinned map (checked against this build's layout) and program.
    #[allow(clippy::type_complexity)]
    fn load_and_check(
        pins: &Pins,
        sizes: &[(&'static str, u32)],
        obj: &aya_obj::Object,
        dir: &Path,
        have: bool,
        carried: &[migrate::Carried],
    ) -> Result<(BTreeMap<&'static str, Map>, BTreeMap<&'static str, Prog>)> {
        if !have {
            Self::load_and_pin(pins, sizes, dir)?;
        }
        migrate::restore(pins, carried)?;
        let mut maps = BTreeMap::new();
        let sized = sizes;
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
        Ok((maps, progs))
    }

    fn load_and_pin(pins: &Pins, sizes: &[(&'static str, u32)], dir: &Path) -> Result<()> {
        let mut loader = ebpf::loader();
        for m in ebpf::PINNED_MAPS {
            loader.map_pin_path(m, pins.map(m));
        }
        for &(m, n) in sizes {
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
        let Ok(fd) = crate::engine::sys::obj_get(&self.pins.link(spot)) else {
            return false;
        };
        let linked = crate::engine::sys::link_ifindex(fd.as_raw_fd()).unwrap_or(0);
        if linked == 0 {
            return false;
        }
        ifindex(spot.netns.as_deref(), &spot.ifname) == linked
    }

    /// Makes the pinned links match the config's (`config_links`, from `Config::links`)
    /// and the stages' ([`Engine::stage_links`]): detaches what is no longer wanted,
    /// attaches what is missing, in chain order.
    pub fn reconcile(&mut self, config_links: &[LinkSpot]) -> Result<()> {
        let mut want = config_links.to_vec();
        want.extend(self.stage_links.iter().cloned());
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

    /// The map called `name` (an error when this build has no such map).
    pub(crate) fn pinned(&self, name: &str) -> Result<&Map> {
        self.maps
            .get(name)
            .ok_or_else(|| map_err(name, "not among the pinned maps"))
    }

    /// Entries `0..n` of a per-CPU counter array, each summed over CPUs.
    pub(crate) fn percpu_sums(&self, map: &str, n: u32) -> Result<Vec<u64>> {
        let a: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.pinned(map)?).map_err(|e| map_err(map, e))?;
        (0..n)
            .map(|i| {
                a.get(&i, 0)
                    .map(|per| per.iter().sum())
                    .map_err(|e| map_err(map, e))
            })
            .collect()
    }

    /// Every entry of a hash map, sorted by key.
    pub(crate) fn hash_entries<K: aya::Pod + Ord, V: aya::Pod>(
        &self,
        map: &str,
    ) -> Result<Vec<(K, V)>> {
        let h: BpfHashMap<&MapData, K, V> =
            BpfHashMap::try_from(self.pinned(map)?).map_err(|e| map_err(map, e))?;
        let mut v: Vec<_> = h.iter().filter_map(|r| r.ok()).collect();
        v.sort_by_key(|(k, _)| *k);
        Ok(v)
    }

    /// Removes the entries of a hash map whose key `pick` chooses; how many.
    pub(crate) fn hash_remove_where<K: aya::Pod, V: aya::Pod>(
        &mut self,
        map: &str,
        pick: impl Fn(&K) -> bool,
    ) -> Result<usize> {
        let mut h: BpfHashMap<&mut MapData, K, V> =
            BpfHashMap::try_from(self.map_mut_checked(map)?).map_err(|e| map_err(map, e))?;
        let keys: Vec<K> = h
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| pick(k))
            .collect();
        for k in &keys {
            h.remove(k).map_err(|e| map_err(map, e))?;
        }
        Ok(keys.len())
    }

    /// The kernel clock now.
    pub fn kernel_now(&self) -> u64 {
        // SW_CLOCK is among the maps `open` checked, with its layout.
        let arr: Array<&MapData, u64> = Array::try_from(
            self.maps
                .get(MAP_CLOCK)
                .expect("Engine::open opens every pinned map"),
        )
        .expect("Engine::open checked its layout");
        clock::monotonic_ns() + arr.get(&CLOCK_SLOT_TEST_OFFSET, 0).unwrap_or(0)
    }

    /// Removes the entries at `keys` of hash map `name` that are still `expired` (a packet
    /// may have revived one since the caller looked); returns how many.
    pub(crate) fn remove_expired<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
        keys: impl Iterator<Item = K>,
        expired: impl Fn(&V) -> bool,
    ) -> Result<usize> {
        let md = self.map_mut(name)?;
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
        let mut arr: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(MAP_CLOCK)?).map_err(|e| map_err(MAP_CLOCK, e))?;
        let off = clock::realtime_ns().saturating_sub(clock::monotonic_ns());
        arr.set(CLOCK_SLOT_EPOCH_OFFSET, off, 0)
            .map_err(|e| map_err(MAP_CLOCK, e))
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
                crate::engine::sys::count_keys(
                    md.fd().as_fd().as_raw_fd(),
                    info.key_size() as usize,
                )
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

    /// What runs on each hook of `interfaces`, in order (from the kernel, foreign programs
    /// too).
    pub fn hook_states(&self, interfaces: &[(Option<String>, String)]) -> Vec<HookState> {
        let mut v = Vec::new();
        for (netns, ifname) in interfaces {
            for (hook, t) in [
                ("ingress", TcAttachType::Ingress),
                ("egress", TcAttachType::Egress),
            ] {
                let name = ifname.clone();
                let progs = in_netns(netns.as_deref(), move || {
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
                    netns: netns.clone(),
                    ifname: ifname.clone(),
                    hook: hook.into(),
                    programs: progs,
                });
            }
            let xdp: Vec<(String, u32)> = self
                .link_states()
                .into_iter()
                .filter(|l| {
                    l.spot.hook == "xdp" && &l.spot.ifname == ifname && &l.spot.netns == netns
                })
                .map(|l| (l.spot.program, l.program_id))
                .collect();
            if !xdp.is_empty() {
                v.push(HookState {
                    netns: netns.clone(),
                    ifname: ifname.clone(),
                    hook: "xdp".into(),
                    programs: xdp,
                });
            }
        }
        v
    }

    /// The value a stage keeps beside the kernel objects, made with `Default` on first
    /// use (see the field `stages`).
    pub fn stage<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.stages
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut::<T>()
            .expect("a stage value is stored under its own type")
    }

    /// The value a stage keeps, if it has written one.
    pub fn stage_ref<T: 'static>(&self) -> Option<&T> {
        self.stages.get(&TypeId::of::<T>())?.downcast_ref::<T>()
    }

    /// A pinned map by name, or an error naming it.
    pub(crate) fn map_checked(&self, name: &str) -> Result<&Map> {
        self.maps.get(name).ok_or_else(|| EngineError::Map {
            map: name.into(),
            msg: "not pinned".into(),
        })
    }

    /// A pinned map by name, or an error naming it.
    pub(crate) fn map_mut_checked(&mut self, name: &str) -> Result<&mut Map> {
        self.maps.get_mut(name).ok_or_else(|| EngineError::Map {
            map: name.into(),
            msg: "not pinned".into(),
        })
    }

    /// A pinned map, for tests and tools.
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.get(name)
    }
}

fn detach_pin(path: &Path) -> Result<()> {
    let l = PinnedLink::from_pin(path).map_err(|e| pin_err("opening pinned link", path, e))?;
    let fd = l.unpin().map_err(|e| pin_err("unpinning link", path, e))?;
    drop(fd);
    Ok(())
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
