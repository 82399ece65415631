//! The `dynmon` stage: users' own eBPF programs, loaded and attached by statewall, their
//! maps served as metrics with no code of ours per program.
//!
//! An instance has one or two paths (ingress, egress; or one program on both hooks).
//! Each path's code is libbpf-style C (compiled here with clang) or an eBPF object with
//! BTF. Its metrics name maps; entries are decoded by walking the object's BTF
//! ([`btf`]), so no decoder is written per program.
//!
//! **Order in the chain.** A dynamic monitor is attached last on its tcx hook, after
//! statewall's own stages, so its verdict cannot let through what a gate or the firewall
//! dropped: on ingress it sees what they let through. (Returning `TC_ACT_OK` ends the
//! chain there; nothing of statewall's runs after it.) An `xdp` program is attached with
//! an XDP link on ingress.
//!
//! **swap-on-read** without changing the user's code: the path is loaded twice; the two
//! copies share every map except the swapped ones (the second load reuses the first's
//! maps through temporary pins). A read points the hook's link at the other copy
//! (`BPF_LINK_UPDATE`, atomic for new packets), waits one RCU grace period (the update
//! does not wait for runs of the old copy already started), then reads and empties the
//! old copy's swapped maps. Nothing is lost or counted twice.
//!
//! **empty-on-read** reads and empties a shared map: a packet counted between the two
//! steps of an array's read-then-zero may be lost (as with Dynmon); hash maps are read
//! and deleted by batches, entry by entry.
//!
//! Owns dynamic monitors (loading users' objects, BTF decoding, the maps' descriptions
//! (`maps`), metrics). May import:
//! `engine`, `types`.

mod bcc;
pub mod btf;
mod compile;
pub mod elf;
pub mod error;
pub use error::{BadObject, DynmonError};
mod load;
mod maps;
pub mod openmetrics;
mod scratch;
mod spec;

use crate::engine::access::map_data;
pub use bcc::{is_bcc, translate as translate_bcc, EPOCH_MAP, LOG_MAP};
pub use compile::{code_field, compile_c, find_clang, object_of};
use load::*;
pub use load::{map_type_name, LoadedPath};
pub use maps::MapMeta;
use maps::*;
pub use spec::*;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// The C example (`examples/dynmon/c/flows.c`) and its metric declarations.
pub static EXAMPLE_C_SOURCE: &str = include_str!("../../../../examples/dynmon/c/flows.c");
/// `examples/dynmon/c/flows.toml`.
pub static EXAMPLE_C_METRICS: &str = include_str!("../../../../examples/dynmon/c/flows.toml");

/// The Rust example (`examples/dynmon/rust`), built with statewall's kernel crate (empty
/// when the build used prebuilt objects without `STATEWALL_DYNMON_EXAMPLE_OBJECT`).
pub static EXAMPLE_RUST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dynmon-ports.bpf.o"));

/// Which hooks a path runs on: ingress (tcx, or XDP for an `xdp` program), egress, or
/// both tcx hooks with one program and one set of maps. The monitors' enum.
pub use crate::types::Direction;

/// A loaded instance.
pub struct Dynmon {
    /// Instance name.
    pub name: String,
    /// Its spec (objects, not sources, once loaded: see [`Dynmon::load`]).
    pub spec: DynmonSpec,
    /// Paths in spec order.
    pub paths: Vec<LoadedPath>,
    grace: crate::engine::sys::Grace,
    /// Reads taken.
    pub reads: u64,
    /// Duration of the last read's switch + grace period, and of its map reads.
    pub last: (Duration, Duration),
    /// Load + attach time.
    pub load_time: Duration,
    /// Running totals of counters whose reads are destructive, by metric and labels
    /// (see [`openmetrics::accumulate`]).
    pub totals: openmetrics::Totals,
    /// Tests only: `false` skips the grace period after a switch (reads then lose or
    /// double-count the packets of runs still in the old copy).
    pub wait: bool,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Dynmon {
    /// Writes readings of this instance as OpenMetrics (`om`) or Prometheus text families.
    pub fn render(&self, readings: &[Reading], om: bool, fams: &mut openmetrics::Families) {
        openmetrics::render(&self.name, &self.paths, &self.totals, readings, om, fams);
    }

    /// Loads every path of `spec` (compiling C sources) and attaches them when the spec
    /// names an interface. On error nothing stays loaded or attached.
    pub fn load(name: &str, mut spec: DynmonSpec) -> Result<Dynmon, DynmonError> {
        use base64::Engine;
        if !valid_metric_name(name) || name.contains(':') {
            return Err(DynmonError::Spec(format!(
                "instance name {name:?}: letters, digits and `_`, not starting with a digit"
            )));
        }
        if spec.paths.is_empty() {
            return Err(DynmonError::Spec(
                "no path: give an ingress or egress path".into(),
            ));
        }
        let t0 = Instant::now();
        let n = spec.paths.len();
        let sources: Vec<Option<String>> = spec.paths.iter().map(|p| p.source.clone()).collect();
        let what = |i: usize, p: &PathSpec| {
            if p.name.is_empty() {
                format!("path {i}")
            } else {
                format!("path {:?}", p.name)
            }
        };
        let mut objects = Vec::new();
        for (i, p) in spec.paths.iter_mut().enumerate() {
            let other = if n == 2 {
                sources[1 - i].as_deref()
            } else {
                None
            };
            let (object, externs) =
                compile::path_object(p, other).map_err(|e| e.context(what(i, p)))?;
            if p.source.is_some() {
                p.shared = externs;
            }
            // Keep the object, not the source: a restart does not need clang.
            p.source = None;
            p.object = Some(base64::engine::general_purpose::STANDARD.encode(&object));
            objects.push(object);
        }
        // A path that takes maps from the other is loaded after it.
        let mut loaded: Vec<Option<LoadedPath>> = (0..n).map(|_| None).collect();
        let order: Vec<usize> = (0..n)
            .filter(|&i| spec.paths[i].shared.is_empty())
            .chain((0..n).filter(|&i| !spec.paths[i].shared.is_empty()))
            .collect();
        for i in order {
            let p = &spec.paths[i];
            // (A path with no other to take from is refused by the load.)
            let from = if n == 2 { loaded[1 - i].as_ref() } else { None };
            if n == 2 && !p.shared.is_empty() && from.is_none() {
                return Err(DynmonError::Spec(format!(
                    "{}: both paths take maps from the other ({:?}): one must declare them",
                    what(i, p),
                    p.shared
                )));
            }
            let l = LoadedPath::load(p, &objects[i], from).map_err(|e| e.context(what(i, p)))?;
            loaded[i] = Some(l);
        }
        let paths: Vec<LoadedPath> = loaded.into_iter().flatten().collect();
        // Metric names, and the sample names OpenMetrics gives them, are the instance's
        // own: no two may meet (`x` as a counter writes `x_total`).
        let mut all: Vec<(String, &str)> = Vec::new();
        for p in &spec.paths {
            for m in &p.metrics {
                let mut names = vec![m.name.clone()];
                names.extend(openmetrics::sample_names(m));
                for n in names {
                    if let Some((_, other)) = all.iter().find(|(a, _)| *a == n) {
                        return Err(DynmonError::Spec(format!(
                            "metrics {other:?} and {:?} both write {n:?}",
                            m.name
                        )));
                    }
                    all.push((n, &m.name));
                }
            }
            for m in &p.metrics {
                if let Some(om) = &m.open_metrics {
                    for (i, l) in om.labels.iter().enumerate() {
                        if !openmetrics::label_name_ok(&l.name) {
                            return Err(DynmonError::Spec(format!(
                                "metric {:?}: label {:?}: a label name is letters, digits and `_`, \
                                 not starting with a digit or `__`, and not one of {:?}",
                                m.name,
                                l.name,
                                openmetrics::RESERVED_LABELS
                            )));
                        }
                        if om.labels[..i].iter().any(|o| o.name == l.name) {
                            return Err(DynmonError::Spec(format!(
                                "metric {:?}: label {:?} given twice",
                                m.name, l.name
                            )));
                        }
                    }
                }
            }
        }
        let grace = crate::engine::sys::Grace::new()
            .map_err(|e| DynmonError::Host(format!("grace-period map: {e}")))?;
        let mut d = Dynmon {
            name: name.to_string(),
            spec,
            paths,
            grace,
            reads: 0,
            last: Default::default(),
            load_time: Duration::ZERO,
            totals: BTreeMap::new(),
            wait: true,
        };
        if let Some(ifname) = d.spec.interface.clone() {
            let netns = d.spec.netns.clone();
            d.attach(&ifname, netns)?;
        }
        d.load_time = t0.elapsed();
        Ok(d)
    }

    /// Attaches every path to `ifname` in `netns` (dropping the instance detaches it).
    pub fn attach(&mut self, ifname: &str, netns: Option<String>) -> Result<(), DynmonError> {
        for p in &mut self.paths {
            if !p.links.is_empty() {
                return Err(DynmonError::Spec(format!(
                    "{} is attached already",
                    self.name
                )));
            }
            if let Err(e) = p.attach(ifname, netns.as_deref()) {
                for p in &mut self.paths {
                    p.links.clear();
                }
                return Err(e);
            }
        }
        self.spec.interface = Some(ifname.to_string());
        self.spec.netns = netns;
        Ok(())
    }

    /// Detaches every path (the programs stay loaded).
    pub fn detach(&mut self) {
        self.unhook();
        self.spec.interface = None;
    }

    /// Takes every path off its hook for a while, the spec still naming its interface (a
    /// replace whose successor needs the hook: the instance is attached again or replaced).
    pub fn unhook(&mut self) {
        for p in &mut self.paths {
            p.links.clear();
        }
    }

    /// Hooks the instance runs on, with the program id there.
    pub fn hooks(&self) -> Vec<(String, u32)> {
        self.paths
            .iter()
            .flat_map(|p| {
                p.links.iter().map(|l| {
                    (
                        l.hook.to_string(),
                        p.prog_ids.get(p.active).copied().unwrap_or(0),
                    )
                })
            })
            .collect()
    }

    /// The fd of map `map` of path `path`, in the copy the program runs now.
    pub fn active_map_fd(&self, path: usize, map: &str) -> Option<std::os::fd::RawFd> {
        let p = self.paths.get(path)?;
        let m = p.copies[p.active].map(map)?;
        Some(map_data(m).fd().as_fd().as_raw_fd())
    }

    /// The `pcn_log` messages its programs wrote since the last call: (path name, level,
    /// message), at most `max` per path.
    pub fn drain_logs(&mut self, max: usize) -> Vec<(String, u32, String)> {
        let mut out = Vec::new();
        for p in &mut self.paths {
            let name = p.spec.name.clone();
            for (level, msg) in p.drain_log(max) {
                out.push((name.clone(), level, msg));
            }
        }
        out
    }

    /// Reads every metric: one switch and one grace period for all swapped maps.
    pub fn read(&mut self) -> Result<Vec<Reading>, DynmonError> {
        let t0 = Instant::now();
        // Reads are as frequent as anyone wants the figures: keep pcn_get_time_epoch's
        // offset current with them (a clock step moves it).
        for p in &mut self.paths {
            p.refresh_epoch()?;
        }
        let mut old = vec![None; self.paths.len()];
        let mut switched = false;
        for (i, p) in self.paths.iter_mut().enumerate() {
            if p.copies.len() == 2 {
                old[i] = Some(if p.links.is_empty() {
                    // Not attached: nothing runs, read the active copy and keep it.
                    p.active
                } else {
                    switched = true;
                    p.switch()?
                });
            }
        }
        if switched && self.wait {
            self.grace
                .wait()
                .map_err(|e| DynmonError::Host(format!("waiting a grace period: {e}")))?;
        }
        let t1 = Instant::now();
        let ts = now_us();
        let ncpus = aya::util::nr_cpus()
            .map_err(|e| DynmonError::Host(format!("possible CPUs: {}", e.1)))?;
        let mut out: Vec<Reading> = Vec::new();
        for (i, p) in self.paths.iter_mut().enumerate() {
            // A map read once per read, even when several metrics name it.
            let mut done: BTreeMap<String, usize> = BTreeMap::new();
            for m in p.spec.metrics.clone() {
                let meta = p.maps[&m.map_name].clone();
                let value = if let Some(&j) = done.get(&m.map_name) {
                    out[j].value.clone()
                } else {
                    let copy = if meta.swapped {
                        old[i].unwrap_or(p.active)
                    } else {
                        p.active
                    };
                    let empty = meta.swapped || m.extraction.empty_on_read;
                    done.insert(m.map_name.clone(), out.len());
                    // One map failing does not lose what the others' reads took.
                    match read_map(p, copy, &m, &meta, empty, ncpus) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!(dynmon = %self.name, metric = %m.name, "{e}");
                            json!({ "error": e.to_string() })
                        }
                    }
                };
                out.push(Reading {
                    name: m.name.clone(),
                    path: i,
                    value,
                    timestamp_us: ts,
                });
            }
        }
        self.reads += 1;
        self.last = (t1 - t0, t1.elapsed());
        openmetrics::accumulate(&self.paths, &mut self.totals, &out);
        Ok(out)
    }
}

fn read_map(
    p: &mut LoadedPath,
    copy: usize,
    m: &MetricConfig,
    meta: &MapMeta,
    empty: bool,
    ncpus: usize,
) -> Result<Value, DynmonError> {
    let err = |e: std::io::Error| DynmonError::Host(format!("reading map {:?}: {e}", m.map_name));
    let btf = &p.btf;
    let plan = |ty: u32| (ty != 0).then(|| btf.plan(ty));
    let decode_with = |plan: &Option<btf::Plan>, b: &[u8]| -> Value {
        match plan {
            Some(p) => p.decode(b),
            None => raw_int(b),
        }
    };
    if meta.map_type == T_RINGBUF {
        let ring = p.rings.get_mut(&m.map_name).unwrap();
        let ty = m
            .value_type
            .as_deref()
            .and_then(|t| btf.find(t))
            .unwrap_or(meta.value_ty);
        let rp = plan(ty);
        let mut recs = Vec::new();
        while let Some(item) = ring.next() {
            recs.push(decode_with(&rp, &item));
            if recs.len() >= 1 << 20 {
                break;
            }
        }
        return Ok(Value::Array(recs));
    }
    let map = p.copies[copy]
        .map(&m.map_name)
        .ok_or_else(|| DynmonError::Host(format!("map {:?} is gone", m.map_name)))?;
    let fd = map_data(map).fd().as_fd().as_raw_fd();
    let (ks, vs) = (meta.key_size as usize, meta.value_size as usize);
    let vs_all = if per_cpu(meta.map_type) {
        vs.div_ceil(8) * 8 * ncpus
    } else {
        vs
    };
    let (kp, vp) = (plan(meta.key_ty), plan(meta.value_ty));
    let value_of = |b: &[u8]| -> Value {
        if per_cpu(meta.map_type) {
            let stride = vs.div_ceil(8) * 8;
            Value::Array(
                (0..ncpus)
                    .map(|c| decode_with(&vp, &b[c * stride..c * stride + vs]))
                    .collect(),
            )
        } else {
            decode_with(&vp, &b[..vs])
        }
    };
    match meta.map_type {
        T_QUEUE | T_STACK => {
            let mut vals = Vec::new();
            while let Some(v) = crate::engine::sys::map_pop(fd, vs).map_err(err)? {
                vals.push(value_of(&v));
                if vals.len() > meta.max_entries as usize {
                    break;
                }
            }
            Ok(Value::Array(vals))
        }
        T_ARRAY | T_PERCPU_ARRAY => {
            let (_, values, n) =
                crate::engine::sys::lookup_batch(fd, ks, vs_all, meta.max_entries, false)
                    .map_err(err)?;
            if empty {
                let zero = if meta.init.len() == vs_all {
                    meta.init.clone()
                } else {
                    vec![0u8; vs_all]
                };
                for k in 0..n as u32 {
                    crate::engine::sys::map_update(fd, &k.to_le_bytes(), &zero).map_err(err)?;
                }
            }
            let vals: Vec<Value> = (0..n)
                .map(|i| value_of(&values[i * vs_all..(i + 1) * vs_all]))
                .collect();
            // Global data (.bss, .data): the one value is the section's variables.
            if m.map_name.starts_with('.') && vals.len() == 1 {
                return Ok(vals.into_iter().next().unwrap());
            }
            Ok(Value::Array(vals))
        }
        _ => {
            let (keys, values, n) =
                crate::engine::sys::lookup_batch(fd, ks, vs_all, meta.max_entries, empty)
                    .map_err(err)?;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let k = &keys[i * ks..(i + 1) * ks];
                let key = decode_with(&kp, k);
                out.push(
                    json!({"key": key, "value": value_of(&values[i * vs_all..(i + 1) * vs_all])}),
                );
            }
            Ok(Value::Array(out))
        }
    }
}

/// Bytes without a BTF type: a number when they are 1, 2, 4 or 8 bytes, else hex.
fn raw_int(b: &[u8]) -> Value {
    match b.len() {
        1 => json!(b[0]),
        2 => json!(u16::from_le_bytes(b.try_into().unwrap())),
        4 => json!(u32::from_le_bytes(b.try_into().unwrap())),
        8 => json!(u64::from_le_bytes(b.try_into().unwrap())),
        _ => btf::hex(b),
    }
}

impl openmetrics::PathMaps for LoadedPath {
    fn spec(&self) -> &PathSpec {
        &self.spec
    }
    fn maps(&self) -> &BTreeMap<String, MapMeta> {
        &self.maps
    }
}

/// The instances, by name.
#[derive(Default)]
pub struct Dynmons {
    /// Loaded instances.
    pub by_name: BTreeMap<String, Dynmon>,
    /// Where specs are kept across restarts (`STATE_DIR/dynmon.json`).
    pub state_file: Option<PathBuf>,
    /// Names being loaded by a request.
    pub pending: std::collections::BTreeSet<String>,
    /// Kept instances that did not load at start (kept in the state file, so that a start
    /// before their interface exists does not lose them; loading the name again or
    /// deleting it clears them).
    pub failed: BTreeMap<String, DynmonSpec>,
}

impl Dynmons {
    /// Writes the specs (objects, not sources) to the state file durably (synced, then
    /// renamed over it), as they will be once instance `name` has `spec` (`None`: is
    /// gone). Callers write first and change after, or undo the change when this fails,
    /// so that the file and the running instances never disagree.
    pub fn save_with(&self, name: &str, spec: Option<&DynmonSpec>) -> Result<(), DynmonError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let mut specs: BTreeMap<&str, &DynmonSpec> = self
            .by_name
            .iter()
            .map(|(n, d)| (n.as_str(), &d.spec))
            .chain(self.failed.iter().map(|(n, s)| (n.as_str(), s)))
            .collect();
        match spec {
            Some(s) => specs.insert(name, s),
            None => specs.remove(name),
        };
        let text = serde_json::to_vec_pretty(&specs)
            .map_err(|e| DynmonError::Host(format!("the state file: {e}")))?;
        crate::engine::sys::write_synced(path, &text)
            .map_err(|e| DynmonError::Host(format!("the state file was not written: {e}")))
    }

    /// Loads the instances kept in `path` (an instance that fails is logged and left out).
    pub fn restore(path: PathBuf) -> Dynmons {
        let mut d = Dynmons {
            state_file: Some(path.clone()),
            ..Default::default()
        };
        let Ok(b) = std::fs::read(&path) else {
            return d;
        };
        let specs: BTreeMap<String, DynmonSpec> = match serde_json::from_slice(&b) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), "dynamic monitors not restored: {e}");
                return d;
            }
        };
        for (name, spec) in specs {
            match Dynmon::load(&name, spec.clone()) {
                Ok(m) => {
                    tracing::info!(dynmon = %name, "dynamic monitor restored");
                    d.by_name.insert(name, m);
                }
                Err(e) => {
                    tracing::warn!(dynmon = %name, "dynamic monitor not restored (kept in the state file): {e}");
                    d.failed.insert(name, spec);
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_file_and_code_field() {
        let f: MetricsFile = toml::from_str(
            r#"
            [[metric]]
            name = "pkts"
            map-name = "counts"
            extraction-options = { swap-on-read = true }
            open-metrics-metadata = { help = "h", type = "counter", labels = [{ name = "a", value = "b" }] }
            "#,
        )
        .unwrap();
        assert!(f.metric[0].extraction.swap_on_read && !f.metric[0].extraction.empty_on_read);
        assert_eq!(
            f.metric[0].open_metrics.as_ref().unwrap().kind,
            MetricType::Counter
        );
        let bad = toml::from_str::<MetricsFile>("[[metric]]\nname = \"x\"\nmap = \"m\"\n");
        assert!(bad.unwrap_err().to_string().contains("unknown field `map`"));
        assert_eq!(code_field("int x;").0.as_deref(), Some("int x;"));
        assert_eq!(
            code_field("f0VMRgIBAQ==").1.as_deref(),
            Some("f0VMRgIBAQ==")
        );
        assert!(
            valid_metric_name("a_b:c1") && !valid_metric_name("1a") && !valid_metric_name("a-b")
        );
    }
}
