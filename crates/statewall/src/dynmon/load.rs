//! Loading one path of a dynamic monitor: choosing the program, checking the metrics against
//! the object, one copy (or two for swap-on-read) loaded and attached, and map metadata
//! for decoding.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::PathBuf,
};

use aya::{
    maps::MapData,
    programs::{
        links::FdLink, tc::TcAttachOptions, LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        Xdp,
    },
    Ebpf, EbpfLoader,
};

use super::{
    btf::Btf,
    elf,
    error::{BadObject, DynmonError},
    maps::*,
    scratch::private_dir,
    spec::{valid_metric_name, PathSpec},
};
use crate::{engine::access::map_data, types::Direction};

/// The most a map read may take (keys and values, all CPUs).
pub(super) const MAX_READ_BYTES: u64 = 256 << 20;
/// A map type's name as statewall shows it.
pub fn map_type_name(t: u32) -> &'static str {
    match t {
        T_HASH => "hash",
        T_ARRAY => "array",
        T_PERCPU_HASH => "percpu_hash",
        T_PERCPU_ARRAY => "percpu_array",
        T_LRU_HASH => "lru_hash",
        T_LRU_PERCPU_HASH => "lru_percpu_hash",
        T_QUEUE => "queue",
        T_STACK => "stack",
        T_RINGBUF => "ringbuf",
        _ => "unsupported",
    }
}
pub(super) fn per_cpu(t: u32) -> bool {
    matches!(t, T_PERCPU_HASH | T_PERCPU_ARRAY | T_LRU_PERCPU_HASH)
}
/// A link of a path, with an fd of its own for `BPF_LINK_UPDATE`.
pub(super) struct Attached {
    pub(super) hook: &'static str,
    pub(super) _link: FdLink,
    pub(super) fd: OwnedFd,
}
/// A loaded path.
pub struct LoadedPath {
    /// Its spec.
    pub spec: PathSpec,
    /// The program attached.
    pub program: String,
    /// Whether it is an XDP program.
    pub xdp: bool,
    /// The object's BTF.
    pub btf: Btf,
    /// Maps by name.
    pub maps: BTreeMap<String, MapMeta>,
    pub(super) copies: Vec<Ebpf>,
    pub(super) active: usize,
    pub(super) links: Vec<Attached>,
    pub(super) rings: BTreeMap<String, aya::maps::RingBuf<MapData>>,
    /// `pcn_log`'s records (a program in Polycube's dialect).
    pub(super) log: Option<aya::maps::RingBuf<MapData>>,
    /// Program ids of the copies.
    pub prog_ids: Vec<u32>,
}
pub(super) fn perr(e: ProgramError) -> DynmonError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => DynmonError::Verifier(format!(
            "the verifier rejected the program ({io_error}):\n{verifier_log}"
        )),
        e => DynmonError::Host(format!("{e:#}")),
    }
}
/// A bpffs directory for the temporary pins of one load.
pub(super) fn pin_dir() -> Result<PathBuf, DynmonError> {
    private_dir(std::path::Path::new("/sys/fs/bpf"), "statewall-dynmon-tmp")
}
impl LoadedPath {
    /// Loads a path; `from`: the monitor's other path, loaded already, whose maps named in
    /// `spec.shared` this path uses instead of its own.
    pub(super) fn load(
        spec: &PathSpec,
        object: &[u8],
        from: Option<&LoadedPath>,
    ) -> Result<LoadedPath, DynmonError> {
        let object = elf::normalise(object)?;
        let btf_bytes = elf::btf(&object)?.ok_or(
            "the object has no .BTF section: build it with BTF (clang -g; aya objects carry BTF)",
        )
        .map_err(|m| BadObject(m.into()))?;
        let mut btf = Btf::parse(btf_bytes)
            .map_err(|e| DynmonError::Object(e).context("reading the object's BTF"))?;
        let secs = elf::sections(&object)?;
        let syms = elf::symbols(&object)?;
        btf.fix_datasecs(
            |sec| secs.iter().find(|s| s.name == sec).map(|s| s.size),
            |sec, var| {
                let idx = secs.iter().position(|s| s.name == sec)?;
                syms.iter()
                    .find(|(n, i, _)| n == var && *i == idx)
                    .map(|s| s.2)
            },
        );
        let obj = aya_obj::Object::parse(&object)
            .map_err(|e| DynmonError::Object(BadObject(format!("parsing the object: {e}"))))?;

        let (program, xdp) = choose_program(&obj, &secs, spec)?;

        let swapped = check_metrics(&obj, &btf, spec)?;
        let map_names: Vec<String> = obj.maps.keys().cloned().collect();

        // One copy, or two sharing every map but the swapped ones. Maps the object pins by
        // name (LIBBPF_PIN_BY_NAME) go to this load's private directory, not /sys/fs/bpf.
        for n in &swapped {
            if obj.maps[n].pinning() != aya_obj::maps::PinningType::None {
                return Err(DynmonError::Spec(format!(
                    "map {n:?} is pinned by name in the object: it cannot be swapped on read"
                )));
            }
        }
        let shared_swapped = check_shared(&obj, spec, &swapped, from)?;
        let n_copies = if swapped.is_empty() && !shared_swapped {
            1
        } else {
            2
        };
        let mut copies = Vec::new();
        let dir = pin_dir()?;
        let by_name = dir.join("by-name");
        // The other path's maps this one shares, pinned here for the loader: one per copy
        // of that path (its copy k goes with copy k of this one).
        let mut taken: Vec<(String, Vec<PathBuf>)> = Vec::new();
        if let Some(from) = from {
            for name in &spec.shared {
                let mut per_copy = Vec::new();
                for (k, e) in from.copies.iter().enumerate() {
                    let m = e.map(name).ok_or_else(|| {
                        DynmonError::Spec(format!("the other path has no map {name:?} to share"))
                    })?;
                    let p = dir.join(format!("shared-{name}-{k}"));
                    map_data(m).pin(&p).map_err(|e| {
                        DynmonError::Host(format!("pinning map {name:?} to share it: {e:#}"))
                    })?;
                    per_copy.push(p);
                }
                taken.push((name.clone(), per_copy));
            }
        }
        let pins: Vec<(String, PathBuf)> = if n_copies == 2 {
            map_names
                .iter()
                .filter(|n| !swapped.contains(n) && !n.starts_with(".rodata"))
                .filter(|n| !spec.shared.contains(n))
                .enumerate()
                .map(|(i, n)| (n.clone(), dir.join(format!("m{i}"))))
                .collect()
        } else {
            vec![]
        };
        let loaded = (|| -> Result<(), DynmonError> {
            std::fs::create_dir(&by_name)
                .map_err(|e| DynmonError::Host(format!("creating {}: {e}", by_name.display())))?;
            for copy in 0..n_copies {
                let mut l = EbpfLoader::new();
                l.default_map_pin_directory(&by_name);
                for (n, p) in &pins {
                    l.map_pin_path(n.as_str(), p.as_path());
                }
                for (n, per_copy) in &taken {
                    l.map_pin_path(n.as_str(), per_copy[copy % per_copy.len()].as_path());
                }
                let mut e = l
                    .load(&object)
                    .map_err(|e| DynmonError::Verifier(format!("loading the object: {e:#}")))?;
                let p = e.program_mut(&program).unwrap();
                if xdp {
                    let p: &mut Xdp = p
                        .try_into()
                        .map_err(|e| DynmonError::Spec(format!("{e:#}")))?;
                    p.load().map_err(perr)?;
                } else {
                    let p: &mut SchedClassifier = p
                        .try_into()
                        .map_err(|e| DynmonError::Spec(format!("{e:#}")))?;
                    p.load().map_err(perr)?;
                }
                copies.push(e);
            }
            Ok(())
        })();
        // The pins only joined the two loads: the maps live on in the copies.
        let _ = std::fs::remove_dir_all(&dir);
        loaded?;
        for e in &mut copies {
            write_epoch(e)?;
        }

        let mut maps = BTreeMap::new();
        for m in &spec.metrics {
            if maps.contains_key(&m.map_name) {
                continue;
            }
            let d = map_data(copies[0].map(&m.map_name).unwrap());
            let info = d
                .info()
                .map_err(|e| DynmonError::Host(format!("map {:?}: {e:#}", m.map_name)))?;
            let types = btf.map_types(&m.map_name).unwrap_or_default();
            let mut value_ty = types.value;
            // Global data: the section's variables.
            if m.map_name.starts_with('.') {
                value_ty = btf.datasec(&m.map_name).unwrap_or(0);
            }
            maps.insert(
                m.map_name.clone(),
                MapMeta {
                    map_type: obj.maps[&m.map_name].map_type(),
                    key_size: info.key_size(),
                    value_size: info.value_size(),
                    max_entries: info.max_entries(),
                    key_ty: types.key,
                    value_ty,
                    swapped: swapped.contains(&m.map_name),
                    init: if m.map_name.starts_with('.') {
                        let mut v = obj.maps[&m.map_name].data().to_vec();
                        v.resize(info.value_size() as usize, 0);
                        v
                    } else {
                        Vec::new()
                    },
                },
            );
        }
        let mut rings = BTreeMap::new();
        for (name, mm) in &maps {
            if mm.map_type == T_RINGBUF {
                let m = copies[0].take_map(name).unwrap();
                let r = aya::maps::RingBuf::try_from(m)
                    .map_err(|e| DynmonError::Host(format!("ring buffer {name:?}: {e:#}")))?;
                rings.insert(name.clone(), r);
            }
        }
        let log = match copies[0].take_map(super::bcc::LOG_MAP) {
            Some(m) => Some(
                aya::maps::RingBuf::try_from(m)
                    .map_err(|e| DynmonError::Host(format!("the pcn_log ring: {e:#}")))?,
            ),
            None => None,
        };
        let prog_ids = copies
            .iter()
            .map(|e| {
                let p = e.program(&program).unwrap();
                p.info().map(|i| i.id()).unwrap_or(0)
            })
            .collect();
        Ok(LoadedPath {
            spec: spec.clone(),
            program,
            xdp,
            btf,
            maps,
            copies,
            active: 0,
            links: vec![],
            rings,
            log,
            prog_ids,
        })
    }

    /// The `pcn_log` records waiting: (level, message), at most `max`.
    pub(super) fn drain_log(&mut self, max: usize) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        let Some(r) = self.log.as_mut() else {
            return out;
        };
        while out.len() < max {
            let Some(item) = r.next() else { break };
            if item.len() < 8 {
                continue;
            }
            let level = u32::from_ne_bytes(item[..4].try_into().unwrap());
            let msg = &item[8..];
            let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
            out.push((level, String::from_utf8_lossy(&msg[..end]).into_owned()));
        }
        out
    }

    /// Writes `pcn_get_time_epoch`'s offset again (a program in Polycube's dialect).
    pub(super) fn refresh_epoch(&mut self) -> Result<(), DynmonError> {
        for e in &mut self.copies {
            write_epoch(e)?;
        }
        Ok(())
    }

    pub(super) fn prog_fd(&self, copy: usize) -> Result<std::os::fd::RawFd, DynmonError> {
        let p = self.copies[copy].program(&self.program).unwrap();
        let fd = p.fd().map_err(|e| DynmonError::Host(format!("{e:#}")))?;
        Ok(fd.as_fd().as_raw_fd())
    }

    pub(super) fn attach(&mut self, ifname: &str, netns: Option<&str>) -> Result<(), DynmonError> {
        let hooks: &[&'static str] = match (self.xdp, self.spec.direction) {
            (true, _) => &["xdp"],
            (false, Direction::Ingress) => &["ingress"],
            (false, Direction::Egress) => &["egress"],
            (false, Direction::Both) => &["ingress", "egress"],
        };
        for hook in hooks {
            let prog = self.copies[self.active].program_mut(&self.program).unwrap();
            let link: Result<FdLink, DynmonError> =
                crate::engine::netns::in_netns(netns, || -> Result<FdLink, DynmonError> {
                    if *hook == "xdp" {
                        let p: &mut Xdp = prog
                            .try_into()
                            .map_err(|e| DynmonError::Attach(format!("{e:#}")))?;
                        let id = p
                            .attach(ifname, aya::programs::xdp::XdpMode::Default)
                            .map_err(|e| DynmonError::Attach(format!("{e:#}")))?;
                        let l = p
                            .take_link(id)
                            .map_err(|e| DynmonError::Attach(format!("{e:#}")))?;
                        FdLink::try_from(l).map_err(|e| DynmonError::Attach(format!("{e:#}")))
                    } else {
                        let t = if *hook == "ingress" {
                            TcAttachType::Ingress
                        } else {
                            TcAttachType::Egress
                        };
                        let p: &mut SchedClassifier = prog
                            .try_into()
                            .map_err(|e| DynmonError::Attach(format!("{e:#}")))?;
                        let id = p
                            .attach_with_options(
                                ifname,
                                t,
                                TcAttachOptions::TcxOrder(LinkOrder::last()),
                            )
                            .map_err(|e| DynmonError::Attach(format!("{e:#}")))?;
                        let l = p
                            .take_link(id)
                            .map_err(|e| DynmonError::Attach(format!("{e:#}")))?;
                        FdLink::try_from(l).map_err(|e| DynmonError::Attach(format!("{e:#}")))
                    }
                })
                .map_err(|e| DynmonError::Attach(e.to_string()))?;
            let link = link.map_err(|e| {
                DynmonError::Attach(format!(
                    "attaching {} to {ifname} ({hook}): {e}",
                    self.program
                ))
            })?;
            let fd = link_fd(link)?;
            self.links.push(Attached {
                hook,
                _link: fd.0,
                fd: fd.1,
            });
        }
        Ok(())
    }

    /// Points every link at the other copy. The caller waits a grace period before
    /// reading the copy that was active.
    pub(super) fn switch(&mut self) -> Result<usize, DynmonError> {
        let old = self.active;
        let next = 1 - old;
        let fd = self.prog_fd(next)?;
        for l in &self.links {
            crate::engine::sys::link_update(l.fd.as_raw_fd(), fd)
                .map_err(|e| DynmonError::Host(format!("switching the {} link: {e}", l.hook)))?;
        }
        self.active = next;
        Ok(old)
    }
}
/// An fd of a link that stays valid as long as the link (pin it for a moment, open the
/// pin, unpin: aya keeps `FdLink`'s fd to itself).
pub(super) fn link_fd(link: FdLink) -> Result<(FdLink, OwnedFd), DynmonError> {
    let d = pin_dir()?;
    let p = d.join("link");
    let pinned = link
        .pin(&p)
        .map_err(|e| DynmonError::Host(format!("pinning the link: {e:#}")))?;
    let fd = crate::engine::sys::obj_get(&p)
        .map_err(|e| DynmonError::Host(format!("opening the link pin: {e}")));
    let link = pinned
        .unpin()
        .map_err(|e| DynmonError::Host(format!("unpinning the link: {e}")));
    let _ = std::fs::remove_dir(&d);
    Ok((link?, fd?))
}
/// The program to attach: the one `spec` names, else the only one that fits its direction;
/// and whether it is an XDP program.
pub(super) fn choose_program(
    obj: &aya_obj::Object,
    secs: &[elf::Section],
    spec: &PathSpec,
) -> Result<(String, bool), DynmonError> {
    // The program: the one named, else the only one that fits the direction.
    let fits = |p: &aya_obj::Program| -> Option<&'static str> {
        let sec = secs
            .get(p.section_index)
            .map(|s| s.name.as_str())
            .unwrap_or("");
        match p.section {
            aya_obj::ProgramSection::SchedClassifier => {
                Some(elf::section_hook(sec).unwrap_or("tc"))
            }
            aya_obj::ProgramSection::Xdp { .. } => Some("xdp"),
            _ => None,
        }
    };
    let want = |hook: &str| match spec.direction {
        Direction::Ingress => matches!(hook, "ingress" | "tc" | "xdp"),
        Direction::Egress => matches!(hook, "egress" | "tc"),
        Direction::Both => hook == "tc",
    };
    let mut names: Vec<(&String, &'static str)> = obj
        .programs
        .iter()
        .filter_map(|(n, p)| fits(p).map(|h| (n, h)))
        .collect();
    names.sort();
    let program = match &spec.program {
        Some(n) => {
            // Named explicitly: any tc program fits any tcx hook.
            names.iter().find(|(m, _)| *m == n).ok_or_else(|| {
                DynmonError::Spec(format!(
                    "no tc or xdp program {n:?} in the object (it has: {})",
                    names
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            n.clone()
        }
        None => {
            let c: Vec<_> = names.iter().filter(|(_, h)| want(h)).collect();
            match c.as_slice() {
                [(n, _)] => (*n).clone(),
                [] => {
                    return Err(DynmonError::Spec(format!(
                        "no program fits direction {:?}: put it in a `tc`, `tcx/ingress`, \
                         `tcx/egress`, `classifier` or `xdp` section (the object has: {})",
                        spec.direction,
                        if names.is_empty() {
                            "no tc or xdp program".to_string()
                        } else {
                            names
                                .iter()
                                .map(|(n, h)| format!("{n} ({h})"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    )))
                }
                _ => {
                    return Err(DynmonError::Spec(format!(
                        "several programs fit ({}): name one with `program`",
                        c.iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    };
    let xdp = names.iter().any(|(n, h)| **n == program && *h == "xdp");
    if xdp && spec.direction != Direction::Ingress {
        return Err(DynmonError::Spec(
            "an xdp program runs on ingress only".into(),
        ));
    }
    Ok((program, xdp))
}
/// Checks the metrics `spec` declares against the object (known maps, supported types,
/// sizes, BTF types, unique valid names); returns the maps read swap-on-read.
pub(super) fn check_metrics(
    obj: &aya_obj::Object,
    btf: &Btf,
    spec: &PathSpec,
) -> Result<Vec<String>, DynmonError> {
    // Metrics: known maps, supported types, valid names.
    let map_names: Vec<String> = obj.maps.keys().cloned().collect();
    let mut swapped: Vec<String> = Vec::new();
    for m in &spec.metrics {
        if !valid_metric_name(&m.name) {
            return Err(DynmonError::Spec(format!(
                "metric {:?}: a name is letters, digits, `_` and `:`, not starting with a digit",
                m.name
            )));
        }
        if m.name.starts_with("statewall_") {
            return Err(DynmonError::Spec(format!(
                "metric {:?}: names starting with statewall_ are statewall's own families",
                m.name
            )));
        }
        let Some(mo) = obj.maps.get(&m.map_name) else {
            return Err(DynmonError::Spec(format!(
                "metric {:?}: the object has no map {:?} (it has: {})",
                m.name,
                m.map_name,
                map_names.join(", ")
            )));
        };
        let t = mo.map_type();
        if map_type_name(t) == "unsupported" {
            return Err(DynmonError::Spec(format!(
                "metric {:?}: map {:?} has type {t}; dynmon reads hash, LRU hash, per-CPU \
                 hash, array, per-CPU array, queue, stack and ring buffer maps",
                m.name, m.map_name
            )));
        }
        if m.extraction.swap_on_read && (t == T_RINGBUF || m.map_name.starts_with(".rodata")) {
            return Err(DynmonError::Spec(format!(
                "metric {:?}: swap-on-read does not apply to map {:?} ({})",
                m.name,
                m.map_name,
                map_type_name(t)
            )));
        }
        let cpus = if per_cpu(t) {
            aya::util::nr_cpus().map(|n| n as u64).unwrap_or(1)
        } else {
            1
        };
        let entry = mo.key_size() as u64 + (mo.value_size() as u64).div_ceil(8) * 8 * cpus;
        let bytes = entry.saturating_mul(mo.max_entries() as u64);
        if t != T_RINGBUF && bytes > MAX_READ_BYTES {
            return Err(DynmonError::Spec(format!(
                "metric {:?}: map {:?} can hold {} MiB, more than dynmon reads at once ({} MiB)",
                m.name,
                m.map_name,
                bytes >> 20,
                MAX_READ_BYTES >> 20
            )));
        }
        if let Some(vt) = &m.value_type {
            if btf.find(vt).is_none() {
                return Err(DynmonError::Spec(format!(
                    "metric {:?}: no type {vt:?} in the object's BTF",
                    m.name
                )));
            }
        }
        if m.extraction.swap_on_read && !swapped.contains(&m.map_name) {
            swapped.push(m.map_name.clone());
        }
    }
    for (i, a) in spec.metrics.iter().enumerate() {
        if spec.metrics[..i].iter().any(|b| b.name == a.name) {
            return Err(DynmonError::Spec(format!(
                "metric {:?} is declared twice",
                a.name
            )));
        }
    }
    Ok(swapped)
}

/// Writes Unix time minus the kernel's monotonic clock into the object's
/// [`super::bcc::EPOCH_MAP`], when it has one (programs in Polycube's dialect).
fn write_epoch(e: &mut Ebpf) -> Result<(), DynmonError> {
    let Some(m) = e.map_mut(super::bcc::EPOCH_MAP) else {
        return Ok(());
    };
    let mut a = aya::maps::Array::<_, u64>::try_from(m)
        .map_err(|e| DynmonError::Host(format!("the epoch map: {e:#}")))?;
    let off =
        crate::engine::clock::realtime_ns().saturating_sub(crate::engine::clock::monotonic_ns());
    a.set(0, off, 0)
        .map_err(|e| DynmonError::Host(format!("writing the epoch offset: {e:#}")))
}

/// Checks the maps `spec` takes from the other path (`from`): both objects have them, and
/// this path does not swap them on read (the path that declares a map swaps it). Returns
/// whether one of them is swapped by `from`, in which case this path needs two copies too.
fn check_shared(
    obj: &aya_obj::Object,
    spec: &PathSpec,
    swapped: &[String],
    from: Option<&LoadedPath>,
) -> Result<bool, DynmonError> {
    let mut any = false;
    for name in &spec.shared {
        let Some(from) = from else {
            return Err(DynmonError::Spec(format!(
                "map {name:?} is taken from the other path, and there is none"
            )));
        };
        if !obj.maps.contains_key(name) {
            return Err(DynmonError::Spec(format!(
                "map {name:?} is taken from the other path, but this object has no such map"
            )));
        }
        if swapped.contains(name) {
            return Err(DynmonError::Spec(format!(
                "map {name:?} is the other path's: declare swap-on-read on a metric of that path"
            )));
        }
        any |= from.maps.get(name).is_some_and(|m| m.swapped);
    }
    Ok(any)
}
