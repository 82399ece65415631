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
//! Owns dynamic monitors (loading users' objects, BTF decoding, metrics). May import:
//! `engine`, `types`.

pub mod btf;
pub mod elf;
pub mod openmetrics;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    maps::{Map, MapData},
    programs::{
        links::FdLink, tc::TcAttachOptions, LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        Xdp,
    },
    Ebpf, EbpfLoader,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::btf::Btf;

/// The C example (`examples/dynmon/c/flows.c`) and its metric declarations.
pub static EXAMPLE_C_SOURCE: &str = include_str!("../../../../examples/dynmon/c/flows.c");
/// `examples/dynmon/c/flows.toml`.
pub static EXAMPLE_C_METRICS: &str = include_str!("../../../../examples/dynmon/c/flows.toml");

/// The Rust example (`examples/dynmon/rust`), built with statewall's kernel crate (empty
/// when the build used prebuilt objects without `STATEWALL_DYNMON_EXAMPLE_OBJECT`).
pub static EXAMPLE_RUST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dynmon-ports.bpf.o"));

/// What the extraction of a metric does on each read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExtractionOptions {
    /// Read from the copy that was active, after switching to the other one.
    #[serde(rename = "swap-on-read", default)]
    pub swap_on_read: bool,
    /// Empty the map after reading it.
    #[serde(rename = "empty-on-read", default)]
    pub empty_on_read: bool,
}

/// OpenMetrics type of a metric.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Monotonic count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// log2 buckets: entry k counts values below 2^k.
    Histogram,
    /// Count and sum of the entries' values.
    Summary,
    /// Anything else.
    #[default]
    Untyped,
}

/// A constant label.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value.
    pub value: String,
}

/// How a metric is exported as OpenMetrics.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OpenMetricsMetadata {
    /// HELP text.
    #[serde(default)]
    pub help: String,
    /// TYPE.
    #[serde(rename = "type", default)]
    pub kind: MetricType,
    /// Constant labels.
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// A metric declaration, as Dynmon's `metric-configs` entries.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Metric name (also its OpenMetrics family name).
    pub name: String,
    /// The map it reads.
    #[serde(rename = "map-name")]
    pub map_name: String,
    /// swap-on-read / empty-on-read.
    #[serde(rename = "extraction-options", default)]
    pub extraction: ExtractionOptions,
    /// OpenMetrics export (none: JSON only).
    #[serde(
        rename = "open-metrics-metadata",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub open_metrics: Option<OpenMetricsMetadata>,
    /// statewall extension: the BTF type of a ring buffer's records (`struct event`).
    #[serde(
        rename = "value-type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub value_type: Option<String>,
}

/// A metrics file for `statewall dynmon load --metrics` (TOML: `[[metric]]` tables).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// The declarations.
    #[serde(default)]
    pub metric: Vec<MetricConfig>,
}

/// Which hooks a path runs on: ingress (tcx, or XDP for an `xdp` program), egress, or
/// both tcx hooks with one program and one set of maps. The monitors' enum.
pub use crate::types::Direction;

/// One path: its code, where it runs, what it exports.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// A name for people (Dynmon's path `name`).
    #[serde(default)]
    pub name: String,
    /// Hooks.
    #[serde(default)]
    pub direction: Direction,
    /// libbpf-style C source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An eBPF object, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The program to attach, when the object has more than one that fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Metric declarations.
    #[serde(default)]
    pub metrics: Vec<MetricConfig>,
}

/// A dynamic monitor instance.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DynmonSpec {
    /// Interface it is attached to (none: loaded and verified, not attached yet).
    #[serde(default)]
    pub interface: Option<String>,
    /// Network namespace of the interface (none: the daemon's).
    #[serde(default)]
    pub netns: Option<String>,
    /// One or two paths.
    pub paths: Vec<PathSpec>,
}

/// A name statewall accepts for instances and metrics.
pub fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

const BCC_MARKERS: &[&str] = &[
    "BPF_TABLE",
    "BPF_HASH(",
    "BPF_ARRAY(",
    "BPF_PERCPU_ARRAY(",
    "BPF_PERCPU_HASH(",
    "BPF_QUEUE(",
    "BPF_STACK(",
    "BPF_QUEUESTACK",
    "pcn_",
    "handle_rx(",
    "handle_tx(",
    "struct CTXTYPE",
];

/// Refuses Polycube's BCC dialect, naming what was found and what to write instead.
pub fn refuse_bcc(src: &str) -> Result<(), String> {
    for (n, line) in src.lines().enumerate() {
        if let Some(m) = BCC_MARKERS.iter().find(|m| line.contains(*m)) {
            return Err(format!(
                "line {}: `{}` is Polycube's BCC dialect, which statewall does not compile. \
                 Write libbpf-style C instead: maps as `struct {{ __uint(type, BPF_MAP_TYPE_HASH); \
                 __type(key, struct k); __type(value, __u64); __uint(max_entries, 1024); }} name \
                 SEC(\".maps\");`, the program as `SEC(\"tcx/ingress\") int prog(struct __sk_buff *skb)` \
                 returning TC_ACT_OK, and bpf_map_lookup_elem / bpf_map_update_elem for map access \
                 (see examples/dynmon/ in the statewall sources)",
                n + 1,
                m.trim_end_matches('(')
            ));
        }
    }
    Ok(())
}

/// The clang statewall compiles with: `STATEWALL_CLANG`, else `clang`, else `clang-NN`.
pub fn find_clang() -> Option<PathBuf> {
    if let Ok(c) = std::env::var("STATEWALL_CLANG") {
        return Some(PathBuf::from(c));
    }
    let path = std::env::var_os("PATH")?;
    let names =
        std::iter::once("clang".to_string()).chain((14..=30).rev().map(|v| format!("clang-{v}")));
    for n in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(&n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Compiles libbpf-style C to an eBPF object with BTF (`clang -target bpf -g -O2`).
pub fn compile_c(src: &str) -> Result<Vec<u8>, String> {
    refuse_bcc(src)?;
    let clang = find_clang().ok_or(
        "C source needs clang, which is not installed here: install it (Debian: `apt-get install \
         clang-22 libbpf-dev`; statewall's scripts/setup.sh does), or load an object built \
         elsewhere with `clang -target bpf -g -O2 -c prog.c`",
    )?;
    let dir = private_dir(&std::env::temp_dir(), "statewall-dynmon")?;
    let (c, o) = (dir.join("prog.c"), dir.join("prog.o"));
    let run = || -> Result<Vec<u8>, String> {
        std::fs::write(&c, src).map_err(|e| format!("writing {}: {e}", c.display()))?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "x86_64-linux-gnu",
            "aarch64" => "aarch64-linux-gnu",
            other => other,
        };
        let out = std::process::Command::new(&clang)
            .args([
                "-target",
                "bpf",
                "-g",
                "-O2",
                "-Wall",
                "-Wno-unused-function",
            ])
            .arg(format!("-I/usr/include/{arch}"))
            .arg("-c")
            .arg(&c)
            .arg("-o")
            .arg(&o)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", clang.display()))?;
        let out = wait_bounded(out, CLANG_TIMEOUT)
            .map_err(|e| format!("running {}: {e}", clang.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).replace(&*c.to_string_lossy(), "prog.c");
            return Err(format!("clang could not compile the source:\n{err}"));
        }
        std::fs::read(&o).map_err(|e| format!("reading {}: {e}", o.display()))
    };
    let r = run();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// The object bytes of a path: its object (base64, or raw ELF bytes handed over as a
/// latin-1 string is not accepted), or its source compiled.
pub fn object_of(p: &PathSpec) -> Result<Vec<u8>, String> {
    use base64::Engine;
    match (&p.source, &p.object) {
        (Some(_), Some(_)) => Err("give `source` or `object`, not both".into()),
        (None, None) => Err("no code: give `source` (C) or `object` (base64 ELF)".into()),
        (Some(s), None) => compile_c(s),
        (None, Some(b)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| format!("`object` is not base64: {e}"))?;
            if !bytes.starts_with(b"\x7fELF") {
                return Err("`object` is not an ELF file".into());
            }
            Ok(bytes)
        }
    }
}

/// Code as Dynmon's `code` field carries it: C source, or a base64 object.
pub fn code_field(code: &str) -> (Option<String>, Option<String>) {
    use base64::Engine;
    let t = code.trim();
    let is_obj = !t.contains(char::is_whitespace)
        && base64::engine::general_purpose::STANDARD
            .decode(t)
            .is_ok_and(|b| b.starts_with(b"\x7fELF"));
    if is_obj {
        (None, Some(t.to_string()))
    } else {
        (Some(code.to_string()), None)
    }
}

/// A map of a loaded path.
#[derive(Clone, Debug)]
pub struct MapMeta {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Sizes.
    pub key_size: u32,
    /// Value size as declared.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// BTF key type (0: unknown).
    pub key_ty: u32,
    /// BTF value type (0: unknown).
    pub value_ty: u32,
    /// Whether each copy has its own instance.
    pub swapped: bool,
    /// Global data (`.data`, `.bss`): the initial contents an emptied map gets back.
    pub init: Vec<u8>,
}

/// The most a map read may take (keys and values, all CPUs).
const MAX_READ_BYTES: u64 = 256 << 20;

const T_HASH: u32 = 1;
const T_ARRAY: u32 = 2;
const T_PERCPU_HASH: u32 = 5;
const T_PERCPU_ARRAY: u32 = 6;
const T_LRU_HASH: u32 = 9;
const T_LRU_PERCPU_HASH: u32 = 10;
const T_QUEUE: u32 = 22;
const T_STACK: u32 = 23;
const T_RINGBUF: u32 = 27;

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

fn per_cpu(t: u32) -> bool {
    matches!(t, T_PERCPU_HASH | T_PERCPU_ARRAY | T_LRU_PERCPU_HASH)
}

fn map_data(m: &Map) -> &MapData {
    match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::Queue(d)
        | Map::Stack(d)
        | Map::RingBuf(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::ReusePortSockArray(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    }
}

/// A link of a path, with an fd of its own for `BPF_LINK_UPDATE`.
struct Attached {
    hook: &'static str,
    _link: FdLink,
    fd: OwnedFd,
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
    copies: Vec<Ebpf>,
    active: usize,
    links: Vec<Attached>,
    rings: BTreeMap<String, aya::maps::RingBuf<MapData>>,
    /// Program ids of the copies.
    pub prog_ids: Vec<u32>,
}

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
    pub totals: BTreeMap<String, BTreeMap<Vec<(String, String)>, f64>>,
    /// Tests only: `false` skips the grace period after a switch (reads then lose or
    /// double-count the packets of runs still in the old copy).
    pub wait: bool,
}

fn perr(e: ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => format!("the verifier rejected the program ({io_error}):\n{verifier_log}"),
        e => format!("{e:#}"),
    }
}

/// A new directory only this process can have made: a random name, created with
/// `mkdir` (which fails on anything already there, a symlink included), mode 0700.
fn private_dir(base: &std::path::Path, prefix: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..16 {
        let mut r = [0u8; 8];
        // SAFETY: getrandom writes at most r.len() bytes into r.
        let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
        if n != r.len() as isize {
            return Err("getrandom failed".into());
        }
        let d = base.join(format!("{prefix}-{:016x}", u64::from_le_bytes(r)));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", d.display())),
        }
    }
    Err(format!("no fresh directory under {}", base.display()))
}

/// A bpffs directory for the temporary pins of one load.
fn pin_dir() -> Result<PathBuf, String> {
    private_dir(std::path::Path::new("/sys/fs/bpf"), "statewall-dynmon-tmp")
}

/// How long clang may take on one source.
const CLANG_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for `child` at most `limit`, killing it after; its stderr is collected.
fn wait_bounded(
    mut child: std::process::Child,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.take(1 << 20).read_to_end(&mut b);
        }
        b
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "clang took more than {} s and was stopped",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap_or_default(),
    })
}

impl LoadedPath {
    fn load(spec: &PathSpec, object: &[u8]) -> Result<LoadedPath, String> {
        let object = elf::normalise(object)?;
        let btf_bytes = elf::btf(&object)?.ok_or(
            "the object has no .BTF section: build it with BTF (clang -g; aya objects carry BTF)",
        )?;
        let mut btf =
            Btf::parse(btf_bytes).map_err(|e| format!("reading the object's BTF: {e}"))?;
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
        let obj =
            aya_obj::Object::parse(&object).map_err(|e| format!("parsing the object: {e}"))?;

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
                    format!(
                        "no tc or xdp program {n:?} in the object (it has: {})",
                        names
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                n.clone()
            }
            None => {
                let c: Vec<_> = names.iter().filter(|(_, h)| want(h)).collect();
                match c.as_slice() {
                    [(n, _)] => (*n).clone(),
                    [] => {
                        return Err(format!(
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
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "several programs fit ({}): name one with `program`",
                            c.iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                }
            }
        };
        let xdp = names.iter().any(|(n, h)| **n == program && *h == "xdp");
        if xdp && spec.direction != Direction::Ingress {
            return Err("an xdp program runs on ingress only".into());
        }

        // Metrics: known maps, supported types, valid names.
        let map_names: Vec<String> = obj.maps.keys().cloned().collect();
        let mut swapped: Vec<String> = Vec::new();
        for m in &spec.metrics {
            if !valid_metric_name(&m.name) {
                return Err(format!(
                    "metric {:?}: a name is letters, digits, `_` and `:`, not starting with a digit",
                    m.name
                ));
            }
            if m.name.starts_with("statewall_") {
                return Err(format!(
                    "metric {:?}: names starting with statewall_ are statewall's own families",
                    m.name
                ));
            }
            let Some(mo) = obj.maps.get(&m.map_name) else {
                return Err(format!(
                    "metric {:?}: the object has no map {:?} (it has: {})",
                    m.name,
                    m.map_name,
                    map_names.join(", ")
                ));
            };
            let t = mo.map_type();
            if map_type_name(t) == "unsupported" {
                return Err(format!(
                    "metric {:?}: map {:?} has type {t}; dynmon reads hash, LRU hash, per-CPU \
                     hash, array, per-CPU array, queue, stack and ring buffer maps",
                    m.name, m.map_name
                ));
            }
            if m.extraction.swap_on_read && (t == T_RINGBUF || m.map_name.starts_with(".rodata")) {
                return Err(format!(
                    "metric {:?}: swap-on-read does not apply to map {:?} ({})",
                    m.name,
                    m.map_name,
                    map_type_name(t)
                ));
            }
            let cpus = if per_cpu(t) {
                aya::util::nr_cpus().map(|n| n as u64).unwrap_or(1)
            } else {
                1
            };
            let entry = mo.key_size() as u64 + (mo.value_size() as u64).div_ceil(8) * 8 * cpus;
            let bytes = entry.saturating_mul(mo.max_entries() as u64);
            if t != T_RINGBUF && bytes > MAX_READ_BYTES {
                return Err(format!(
                    "metric {:?}: map {:?} can hold {} MiB, more than dynmon reads at once ({} MiB)",
                    m.name,
                    m.map_name,
                    bytes >> 20,
                    MAX_READ_BYTES >> 20
                ));
            }
            if let Some(vt) = &m.value_type {
                if btf.find(vt).is_none() {
                    return Err(format!(
                        "metric {:?}: no type {vt:?} in the object's BTF",
                        m.name
                    ));
                }
            }
            if m.extraction.swap_on_read && !swapped.contains(&m.map_name) {
                swapped.push(m.map_name.clone());
            }
        }
        for (i, a) in spec.metrics.iter().enumerate() {
            if spec.metrics[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("metric {:?} is declared twice", a.name));
            }
        }

        // One copy, or two sharing every map but the swapped ones. Maps the object pins by
        // name (LIBBPF_PIN_BY_NAME) go to this load's private directory, not /sys/fs/bpf.
        for n in &swapped {
            if obj.maps[n].pinning() != aya_obj::maps::PinningType::None {
                return Err(format!(
                    "map {n:?} is pinned by name in the object: it cannot be swapped on read"
                ));
            }
        }
        let n_copies = if swapped.is_empty() { 1 } else { 2 };
        let mut copies = Vec::new();
        let dir = pin_dir()?;
        let by_name = dir.join("by-name");
        let pins: Vec<(String, PathBuf)> = if n_copies == 2 {
            map_names
                .iter()
                .filter(|n| !swapped.contains(n) && !n.starts_with(".rodata"))
                .enumerate()
                .map(|(i, n)| (n.clone(), dir.join(format!("m{i}"))))
                .collect()
        } else {
            vec![]
        };
        let loaded = (|| -> Result<(), String> {
            std::fs::create_dir(&by_name)
                .map_err(|e| format!("creating {}: {e}", by_name.display()))?;
            for _ in 0..n_copies {
                let mut l = EbpfLoader::new();
                l.default_map_pin_directory(&by_name);
                for (n, p) in &pins {
                    l.map_pin_path(n.as_str(), p.as_path());
                }
                let mut e = l
                    .load(&object)
                    .map_err(|e| format!("loading the object: {e:#}"))?;
                let p = e.program_mut(&program).unwrap();
                if xdp {
                    let p: &mut Xdp = p.try_into().map_err(|e| format!("{e:#}"))?;
                    p.load().map_err(perr)?;
                } else {
                    let p: &mut SchedClassifier = p.try_into().map_err(|e| format!("{e:#}"))?;
                    p.load().map_err(perr)?;
                }
                copies.push(e);
            }
            Ok(())
        })();
        // The pins only joined the two loads: the maps live on in the copies.
        let _ = std::fs::remove_dir_all(&dir);
        loaded?;

        let mut maps = BTreeMap::new();
        for m in &spec.metrics {
            if maps.contains_key(&m.map_name) {
                continue;
            }
            let d = map_data(copies[0].map(&m.map_name).unwrap());
            let info = d
                .info()
                .map_err(|e| format!("map {:?}: {e:#}", m.map_name))?;
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
                    .map_err(|e| format!("ring buffer {name:?}: {e:#}"))?;
                rings.insert(name.clone(), r);
            }
        }
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
            prog_ids,
        })
    }

    fn prog_fd(&self, copy: usize) -> Result<std::os::fd::RawFd, String> {
        let p = self.copies[copy].program(&self.program).unwrap();
        let fd = p.fd().map_err(|e| format!("{e:#}"))?;
        Ok(fd.as_fd().as_raw_fd())
    }

    fn attach(&mut self, ifname: &str, netns: Option<&str>) -> Result<(), String> {
        let hooks: &[&'static str] = match (self.xdp, self.spec.direction) {
            (true, _) => &["xdp"],
            (false, Direction::Ingress) => &["ingress"],
            (false, Direction::Egress) => &["egress"],
            (false, Direction::Both) => &["ingress", "egress"],
        };
        for hook in hooks {
            let prog = self.copies[self.active].program_mut(&self.program).unwrap();
            let link: Result<FdLink, String> =
                crate::engine::netns::in_netns(netns, || -> Result<FdLink, String> {
                    if *hook == "xdp" {
                        let p: &mut Xdp = prog.try_into().map_err(|e| format!("{e:#}"))?;
                        let id = p
                            .attach(ifname, aya::programs::xdp::XdpMode::Default)
                            .map_err(|e| format!("{e:#}"))?;
                        let l = p.take_link(id).map_err(|e| format!("{e:#}"))?;
                        FdLink::try_from(l).map_err(|e| format!("{e:#}"))
                    } else {
                        let t = if *hook == "ingress" {
                            TcAttachType::Ingress
                        } else {
                            TcAttachType::Egress
                        };
                        let p: &mut SchedClassifier =
                            prog.try_into().map_err(|e| format!("{e:#}"))?;
                        let id = p
                            .attach_with_options(
                                ifname,
                                t,
                                TcAttachOptions::TcxOrder(LinkOrder::last()),
                            )
                            .map_err(|e| format!("{e:#}"))?;
                        let l = p.take_link(id).map_err(|e| format!("{e:#}"))?;
                        FdLink::try_from(l).map_err(|e| format!("{e:#}"))
                    }
                })
                .map_err(|e| e.to_string())?;
            let link =
                link.map_err(|e| format!("attaching {} to {ifname} ({hook}): {e}", self.program))?;
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
    fn switch(&mut self) -> Result<usize, String> {
        let old = self.active;
        let next = 1 - old;
        let fd = self.prog_fd(next)?;
        for l in &self.links {
            crate::engine::sys::link_update(l.fd.as_raw_fd(), fd)
                .map_err(|e| format!("switching the {} link: {e}", l.hook))?;
        }
        self.active = next;
        Ok(old)
    }
}

/// An fd of a link that stays valid as long as the link (pin it for a moment, open the
/// pin, unpin: aya keeps `FdLink`'s fd to itself).
fn link_fd(link: FdLink) -> Result<(FdLink, OwnedFd), String> {
    let d = pin_dir()?;
    let p = d.join("link");
    let pinned = link
        .pin(&p)
        .map_err(|e| format!("pinning the link: {e:#}"))?;
    let fd = crate::engine::sys::obj_get(&p).map_err(|e| format!("opening the link pin: {e}"));
    let link = pinned
        .unpin()
        .map_err(|e| format!("unpinning the link: {e}"));
    let _ = std::fs::remove_dir(&d);
    Ok((link?, fd?))
}

/// One metric's reading.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Metric name.
    pub name: String,
    /// Path index.
    pub path: usize,
    /// The decoded value (Dynmon's shapes).
    pub value: Value,
    /// Unix time of the read, microseconds.
    pub timestamp_us: u64,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Dynmon {
    /// Loads every path of `spec` (compiling C sources) and attaches them when the spec
    /// names an interface. On error nothing stays loaded or attached.
    pub fn load(name: &str, mut spec: DynmonSpec) -> Result<Dynmon, String> {
        use base64::Engine;
        if !valid_metric_name(name) || name.contains(':') {
            return Err(format!(
                "instance name {name:?}: letters, digits and `_`, not starting with a digit"
            ));
        }
        if spec.paths.is_empty() {
            return Err("no path: give an ingress or egress path".into());
        }
        let t0 = Instant::now();
        let mut paths = Vec::new();
        for (i, p) in spec.paths.iter_mut().enumerate() {
            let what = if p.name.is_empty() {
                format!("path {i}")
            } else {
                format!("path {:?}", p.name)
            };
            let object = object_of(p).map_err(|e| format!("{what}: {e}"))?;
            // Keep the object, not the source: a restart does not need clang.
            p.source = None;
            p.object = Some(base64::engine::general_purpose::STANDARD.encode(&object));
            paths.push(LoadedPath::load(p, &object).map_err(|e| format!("{what}: {e}"))?);
        }
        // Metric names, and the sample names OpenMetrics gives them, are the instance's
        // own: no two may meet (`x` as a counter writes `x_total`).
        let mut all: Vec<(String, &str)> = Vec::new();
        for p in &spec.paths {
            for m in &p.metrics {
                let mut names = vec![m.name.clone()];
                names.extend(openmetrics::sample_names(m));
                for n in names {
                    if let Some((_, other)) = all.iter().find(|(a, _)| *a == n) {
                        return Err(format!(
                            "metrics {other:?} and {:?} both write {n:?}",
                            m.name
                        ));
                    }
                    all.push((n, &m.name));
                }
            }
            for m in &p.metrics {
                if let Some(om) = &m.open_metrics {
                    for (i, l) in om.labels.iter().enumerate() {
                        if !openmetrics::label_name_ok(&l.name) {
                            return Err(format!(
                                "metric {:?}: label {:?}: a label name is letters, digits and `_`, \
                                 not starting with a digit or `__`, and not one of {:?}",
                                m.name,
                                l.name,
                                openmetrics::RESERVED_LABELS
                            ));
                        }
                        if om.labels[..i].iter().any(|o| o.name == l.name) {
                            return Err(format!(
                                "metric {:?}: label {:?} given twice",
                                m.name, l.name
                            ));
                        }
                    }
                }
            }
        }
        let grace =
            crate::engine::sys::Grace::new().map_err(|e| format!("grace-period map: {e}"))?;
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
    pub fn attach(&mut self, ifname: &str, netns: Option<String>) -> Result<(), String> {
        for p in &mut self.paths {
            if !p.links.is_empty() {
                return Err(format!("{} is attached already", self.name));
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
        for p in &mut self.paths {
            p.links.clear();
        }
        self.spec.interface = None;
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

    /// Reads every metric: one switch and one grace period for all swapped maps.
    pub fn read(&mut self) -> Result<Vec<Reading>, String> {
        let t0 = Instant::now();
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
                .map_err(|e| format!("waiting a grace period: {e}"))?;
        }
        let t1 = Instant::now();
        let ts = now_us();
        let ncpus = aya::util::nr_cpus().map_err(|e| format!("possible CPUs: {}", e.1))?;
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
                            json!({ "error": e })
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
        openmetrics::accumulate(self, &out);
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
) -> Result<Value, String> {
    let err = |e: std::io::Error| format!("reading map {:?}: {e}", m.map_name);
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
        .ok_or_else(|| format!("map {:?} is gone", m.map_name))?;
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
    /// Writes the specs (objects, not sources) to the state file.
    pub fn save(&self) {
        let Some(path) = &self.state_file else { return };
        let specs: BTreeMap<&String, &DynmonSpec> = self
            .by_name
            .iter()
            .map(|(n, d)| (n, &d.spec))
            .chain(self.failed.iter())
            .collect();
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec_pretty(&specs)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), "saving dynamic monitors: {e}");
        }
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
    fn bcc_dialect_is_refused_with_the_line_and_what_to_write() {
        let src = "#include <bcc/helpers.h>\nBPF_TABLE(\"hash\", u32, u64, counts, 1024);\n";
        let e = refuse_bcc(src).unwrap_err();
        assert!(
            e.starts_with("line 2: `BPF_TABLE` is Polycube's BCC dialect"),
            "{e}"
        );
        assert!(
            e.contains("SEC(\".maps\")") && e.contains("tcx/ingress"),
            "{e}"
        );
        assert!(refuse_bcc("SEC(\"tc\") int f(struct __sk_buff *s) { return 0; }").is_ok());
    }

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
