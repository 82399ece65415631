//! The `monitor` stage, user side: loading a monitor instance (its own load of the monitor
//! object, sizes and capture limits set by the loader), attaching it first on the tcx
//! hooks it watches, and reading windows.
//!
//! A read with swap-on-read flips the active buffer, waits one RCU grace period (so no
//! program can still be writing into the old buffer, see [`crate::engine::sys::Grace`]), then reads
//! the old buffer and empties it: ddos sessions by `BPF_MAP_LOOKUP_AND_DELETE_BATCH`, ddos
//! packet records and crypto sessions straight from memory-mapped arrays (`crypto`). The
//! datapath never waits for a reader. With erase-on-read a ddos buffer stays the same and
//! is emptied as it is read (a packet arriving during the read may be lost: that is what
//! swapping avoids); a crypto monitor reads as with swap-on-read.
//!
//! Owns the `[[monitor]]` section and its own object. May import: `engine`, `gate`,
//! `types`.

pub mod away;
mod crypto;
pub mod error;
pub mod files;

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, MapData},
    programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType},
    Ebpf, EbpfLoader,
};
use serde::{Deserialize, Serialize};

use crate::engine::sys::Mapped;
pub use crypto::{merge, CryptoSession};
use error::MonitorError;
use statewall_common::monitor::{
    CryptoVal, DdosSess, PktRec, PktSlot, SessKey, SessKey4, CNT_CAPTURED, CNT_IGNORED,
    CNT_IGNORED_MALFORMED, CNT_IGNORED_NOT_IP, CNT_IGNORED_PROTOCOL, CNT_PACKETS, CNT_SESSIONS,
    COUNTERS, COUNTER_NAMES, CRYPTO_INDEX_PER_SESSION, CRYPTO_SESSIONS, CTL_ACTIVE, CTL_EPOCH,
    CTL_SESS, CTL_USED, CTL_V6, DDOS_PER_SESSION, DDOS_SESSIONS, GLOBAL_KIND, GLOBAL_NCPU,
    GLOBAL_PER_SESSION, GLOBAL_SESSIONS, GLOBAL_TEST_DELAY, GLOBAL_TOTAL, KIND_CRYPTO, KIND_DDOS,
    MAP_CRYPTO_INDEX, MAP_CRYPTO_INDEX4, MAP_CRYPTO_KEYS, MAP_CRYPTO_VALS, MAP_DDOS_PKTS,
    MAP_DDOS_SESS, MAP_DDOS_SESS4, MAP_MON_CTL, MAP_MON_STATS,
};

/// The compiled monitor object (built by `build.rs`).
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/statewall-monitor.bpf.o"));

/// Tests only: where the build put the monitor object with a hold (every 1024th packet
/// of each CPU waits `SW_MON_TEST_DELAY_NS` while it writes a crypto session); the
/// library never loads it unless [`Monitor::load_held`] is called, and does not embed it.
pub const HELD_OBJECT_PATH: &str = concat!(env!("OUT_DIR"), "/statewall-monitor-held.bpf.o");

/// The monitor program.
pub const PROG_MONITOR: &str = "sw_monitor";

/// What a monitor extracts.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Per-packet features of up to `packets_per_session` packets per session.
    Ddos,
    /// Per-session counters in both directions.
    Crypto,
}

/// How a window is taken.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Extraction {
    /// Two buffers: switch, wait a grace period, read the old one.
    #[default]
    Swap,
    /// One buffer, emptied as it is read (ddos; a crypto monitor reads as with `swap`, its
    /// sessions' slots belonging to one window).
    Erase,
}

pub use crate::types::Direction;

/// A monitor instance as configured (`[[monitor]]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// Instance name.
    pub name: String,
    /// `ddos` or `crypto`.
    pub kind: Kind,
    /// Interfaces it watches.
    pub interfaces: Vec<String>,
    /// Network namespace of the interfaces (none: the daemon's).
    #[serde(default)]
    pub netns: Option<String>,
    /// ingress, egress or both.
    #[serde(default)]
    pub direction: Direction,
    /// Sessions per window (ddos 1024 for each address family, crypto 10000 for both).
    #[serde(default)]
    pub sessions: Option<u32>,
    /// ddos: packets captured per session and window (100).
    #[serde(default)]
    pub packets_per_session: Option<u32>,
    /// ddos: packets captured per window (sessions x packets_per_session).
    #[serde(default)]
    pub packets_total: Option<u32>,
    /// `swap` (default) or `erase`.
    #[serde(default)]
    pub extraction: Extraction,
}

impl MonitorSpec {
    /// A monitor of `kind` on ingress of `interfaces`, every other key at its default.
    pub fn new(name: &str, kind: Kind, interfaces: &[&str]) -> MonitorSpec {
        MonitorSpec {
            name: name.into(),
            kind,
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            netns: None,
            direction: Direction::Ingress,
            sessions: None,
            packets_per_session: None,
            packets_total: None,
            extraction: Extraction::Swap,
        }
    }

    /// Sessions per window.
    pub fn sessions(&self) -> u32 {
        self.sessions.unwrap_or(match self.kind {
            Kind::Ddos => DDOS_SESSIONS,
            Kind::Crypto => CRYPTO_SESSIONS,
        })
    }
    /// Packets per session (ddos).
    pub fn per_session(&self) -> u32 {
        self.packets_per_session.unwrap_or(DDOS_PER_SESSION)
    }
    /// Packets per window (ddos).
    pub fn total(&self) -> u32 {
        self.packets_total
            .unwrap_or(self.sessions().saturating_mul(self.per_session()))
    }

    /// Checks the values: (key, what is wrong).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let at = |k: &str, m: String| (k.to_string(), m);
        crate::types::check_name(&self.name).map_err(|e| at("name", e.to_string()))?;
        if self.interfaces.is_empty() {
            return Err(at("interfaces", "name at least one".into()));
        }
        if !(1..=1 << 20).contains(&self.sessions()) {
            return Err(at("sessions", format!("{}: 1 to 1048576", self.sessions())));
        }
        if self.kind == Kind::Ddos {
            if !(1..=65536).contains(&self.per_session()) {
                return Err(at(
                    "packets_per_session",
                    format!("{}: 1 to 65536", self.per_session()),
                ));
            }
            if !(1..=1 << 24).contains(&self.total()) {
                return Err(at(
                    "packets_total",
                    format!("{}: 1 to 16777216", self.total()),
                ));
            }
        } else if self.packets_per_session.is_some() || self.packets_total.is_some() {
            return Err(at(
                "packets_per_session",
                "packets_per_session and packets_total are for kind = \"ddos\"".into(),
            ));
        }
        Ok(())
    }
}

/// A ddos session of a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdosSession {
    /// Its key.
    pub key: SessKey,
    /// Server address.
    pub server: [u8; 16],
    /// Packets recorded.
    pub n_packets: u64,
}

/// One window read from a monitor.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Reads so far, this one included (1 for the first).
    pub n: u64,
    /// ddos sessions.
    pub ddos_sessions: Vec<DdosSession>,
    /// ddos packet records, in capture order.
    pub packets: Vec<PktRec>,
    /// ddos records whose session was not in the table (none unless a read raced a
    /// writer: only without the grace period, or with erase-on-read).
    pub orphans: usize,
    /// crypto sessions.
    pub crypto: Vec<CryptoSession>,
    /// The grace period waited.
    pub grace: Duration,
    /// Reading and decoding.
    pub read: Duration,
    /// Of `read`, the time in the kernel's batch reads of the session tables.
    pub read_kernel: Duration,
    /// Distinct sessions turned away because the session table was full (an estimate,
    /// within a few per cent: [`away`]).
    pub turned_away: u64,
}

/// A loaded and attached monitor instance.
pub struct Monitor {
    /// Its config.
    pub spec: MonitorSpec,
    ebpf: Ebpf,
    grace: crate::engine::sys::Grace,
    /// Wait the grace period before reading (tests switch it off to show what it is for).
    pub wait: bool,
    /// Windows read.
    pub reads: u64,
    /// Last grace period and read durations.
    pub last: (Duration, Duration),
    /// Sessions in the last window.
    pub last_sessions: usize,
    /// The last window's busiest sessions (at most 10), by packets, most first.
    pub last_top: Vec<(SessKey, u64)>,
    packet_maps: [Option<Mapped>; 2],
    /// crypto: the mapped keys' and counts' tables, and where the slots are in them.
    crypto: Option<(Mapped, Mapped, crypto::Slots)>,
    /// Possible CPUs (a per-CPU table's values).
    ncpus: usize,
    /// The session tables' batch-read buffers (keys, values), kept from one read to the
    /// next.
    scratch: (Vec<u8>, Vec<u8>),
}

fn realtime_minus_monotonic() -> u64 {
    let ts = |c| {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime into a local.
        unsafe { libc::clock_gettime(c, &mut t) };
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    };
    ts(libc::CLOCK_REALTIME).wrapping_sub(ts(libc::CLOCK_MONOTONIC))
}

/// One more than the highest possible CPU id (`bpf_get_smp_processor_id`'s bound; the
/// possible set, "0-3" or "0,2-3", may have gaps).
fn cpu_ids() -> std::io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    s.trim()
        .split(',')
        .map(|r| r.rsplit('-').next().unwrap_or(r).parse::<usize>())
        .try_fold(0, |m, c| c.map(|c| m.max(c + 1)))
        .map_err(std::io::Error::other)
}

fn merr(what: &str, e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Kernel {
        what: what.to_string(),
        msg: e.to_string(),
    }
}

impl Monitor {
    /// Loads the object for `spec` and attaches it, first on each hook it watches.
    pub fn load(spec: MonitorSpec) -> Result<Monitor, MonitorError> {
        let mut m = Monitor::open(spec)?;
        m.attach()?;
        Ok(m)
    }

    /// Loads the object for `spec` (program verified) without attaching it.
    pub fn open(spec: MonitorSpec) -> Result<Monitor, MonitorError> {
        Monitor::open_object(spec, OBJECT, None)
    }

    /// Tests only: like [`Monitor::load`], with the object at [`HELD_OBJECT_PATH`], in
    /// which every 1024th packet of each CPU is held `delay_ns` inside the program while
    /// it writes a crypto session.
    pub fn load_held(spec: MonitorSpec, delay_ns: u32) -> Result<Monitor, MonitorError> {
        let object = std::fs::read(HELD_OBJECT_PATH).map_err(|e| merr(HELD_OBJECT_PATH, e))?;
        // The ELF reader wants the object aligned as `include_bytes_aligned!` makes it.
        let words: Vec<u64> = object
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_ne_bytes(w)
            })
            .collect();
        // SAFETY: the words' bytes, cut to the object's length.
        let bytes =
            unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, object.len()) };
        let mut m = Monitor::open_object(spec, bytes, Some(delay_ns))?;
        m.attach()?;
        Ok(m)
    }

    /// Loads `object` (the monitor object, or the tests' held one with its hold) for `spec`.
    fn open_object(
        spec: MonitorSpec,
        object: &[u8],
        hold_ns: Option<u32>,
    ) -> Result<Monitor, MonitorError> {
        spec.validate().map_err(|(key, msg)| MonitorError::Spec {
            name: spec.name.clone(),
            key,
            msg,
        })?;
        let (kind, sessions, per, total) = (
            match spec.kind {
                Kind::Ddos => KIND_DDOS,
                Kind::Crypto => KIND_CRYPTO,
            },
            spec.sessions(),
            spec.per_session(),
            spec.total(),
        );
        // CPU ids run up to the highest possible one (the possible set may have gaps).
        let ncpus = cpu_ids().map_err(|e| merr("/sys/devices/system/cpu/possible", e))?;
        let ncpu = ncpus as u32;
        if 2 * ncpus as u64 * sessions as u64 > u32::MAX as u64 {
            return Err(MonitorError::Spec {
                name: spec.name.clone(),
                key: "sessions".into(),
                msg: format!(
                    "{sessions} sessions on {ncpus} CPUs: the counts' table needs \
                     2 x CPUs x sessions entries, at most {}",
                    u32::MAX
                ),
            });
        }
        let mut l = EbpfLoader::new();
        l.override_global(GLOBAL_KIND, &kind, true)
            .override_global(GLOBAL_PER_SESSION, &per, true)
            .override_global(GLOBAL_TOTAL, &total, true)
            .override_global(GLOBAL_SESSIONS, &sessions, true)
            .override_global(GLOBAL_NCPU, &ncpu, true);
        if let Some(ns) = &hold_ns {
            l.override_global(GLOBAL_TEST_DELAY, ns, true);
        }
        // The other kind's tables get one entry each.
        let (ds, dt, cs) = match spec.kind {
            Kind::Ddos => (sessions, total, 1),
            Kind::Crypto => (1, 1, sessions),
        };
        // ddos: IPv4 and IPv6 sessions have a table each, of `sessions` entries, per buffer.
        for b in 0..2 {
            l.map_max_entries(MAP_DDOS_SESS[b], ds);
            l.map_max_entries(MAP_DDOS_SESS4[b], ds);
            l.map_max_entries(MAP_DDOS_PKTS[b], dt);
        }
        // crypto: both families' index, and `sessions` slots per buffer.
        l.map_max_entries(MAP_CRYPTO_INDEX, cs * CRYPTO_INDEX_PER_SESSION)
            .map_max_entries(MAP_CRYPTO_INDEX4, cs * CRYPTO_INDEX_PER_SESSION)
            .map_max_entries(MAP_CRYPTO_KEYS, 2 * cs)
            .map_max_entries(MAP_CRYPTO_VALS, 2 * ncpu * cs);
        let ebpf = l.load(object).map_err(|e| MonitorError::Load {
            what: format!("loading monitor {:?}", spec.name),
            msg: format!("{e:#}"),
        })?;
        let grace = crate::engine::sys::Grace::new().map_err(|e| merr("grace-period map", e))?;
        let mut packet_maps = [None, None];
        if spec.kind == Kind::Ddos {
            for (b, slot) in packet_maps.iter_mut().enumerate() {
                let m = ebpf.map(MAP_DDOS_PKTS[b]).unwrap();
                let fd = match m {
                    aya::maps::Map::Array(d) => d.fd().as_fd().as_raw_fd(),
                    _ => return Err(merr(MAP_DDOS_PKTS[b], "not an array")),
                };
                *slot = Some(
                    Mapped::new(fd, total as usize * std::mem::size_of::<PktSlot>(), false)
                        .map_err(|e| merr(&format!("mapping {}", MAP_DDOS_PKTS[b]), e))?,
                );
            }
        }
        let crypto = match spec.kind {
            Kind::Crypto => Some(map_crypto(&ebpf, sessions, ncpus)?),
            Kind::Ddos => None,
        };
        let mut m = Monitor {
            spec,
            ebpf,
            grace,
            wait: true,
            reads: 0,
            last: Default::default(),
            last_sessions: 0,
            last_top: Vec::new(),
            packet_maps,
            crypto,
            ncpus: aya::util::nr_cpus().map_err(|e| merr("possible CPUs", e.1))?,
            scratch: Default::default(),
        };
        m.set_ctl(CTL_EPOCH, realtime_minus_monotonic())?;
        let name = m.spec.name.clone();
        m.prog()?.load().map_err(|e| MonitorError::Load {
            what: format!("monitor {name:?}: {PROG_MONITOR}"),
            msg: format!("{e:#?}"),
        })?;
        Ok(m)
    }

    fn prog(&mut self) -> Result<&mut SchedClassifier, MonitorError> {
        self.ebpf
            .program_mut(PROG_MONITOR)
            .unwrap()
            .try_into()
            .map_err(|e| merr(PROG_MONITOR, e))
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN); returns its verdict.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<i32, MonitorError> {
        use aya::programs::{TestRun, TestRunOptions};
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::new()
        };
        let r = self
            .prog()?
            .test_run(opts)
            .map_err(|e| merr("test run", e))?;
        Ok(r.return_value as i32)
    }

    /// Mean run time over `repeat` runs on `frame`.
    pub fn time(&mut self, frame: &[u8], repeat: u32) -> Result<Duration, MonitorError> {
        use aya::programs::{TestRun, TestRunOptions};
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        let r = self
            .prog()?
            .test_run(opts)
            .map_err(|e| merr("test run", e))?;
        Ok(r.duration)
    }

    fn set_ctl(&mut self, slot: u32, v: u64) -> Result<(), MonitorError> {
        let mut a: Array<&mut MapData, u64> =
            Array::try_from(self.ebpf.map_mut(MAP_MON_CTL).unwrap())
                .map_err(|e| merr(MAP_MON_CTL, e))?;
        a.set(slot, v, 0).map_err(|e| merr(MAP_MON_CTL, e))
    }

    fn ctl(&self, slot: u32) -> Result<u64, MonitorError> {
        let a: Array<&MapData, u64> = Array::try_from(self.ebpf.map(MAP_MON_CTL).unwrap())
            .map_err(|e| merr(MAP_MON_CTL, e))?;
        a.get(&slot, 0).map_err(|e| merr(MAP_MON_CTL, e))
    }

    fn attach(&mut self) -> Result<(), MonitorError> {
        let hooks: &[TcAttachType] = match self.spec.direction {
            Direction::Ingress => &[TcAttachType::Ingress],
            Direction::Egress => &[TcAttachType::Egress],
            Direction::Both => &[TcAttachType::Ingress, TcAttachType::Egress],
        };
        let spec = self.spec.clone();
        let p = self.prog()?;
        for ifname in &spec.interfaces {
            for t in hooks {
                let failed = |msg: String| MonitorError::Attach {
                    name: spec.name.clone(),
                    ifname: ifname.clone(),
                    hook: format!("{t:?}"),
                    msg,
                };
                let r = crate::engine::netns::in_netns(spec.netns.as_deref(), || {
                    p.attach_with_options(ifname, *t, TcAttachOptions::TcxOrder(LinkOrder::first()))
                        .map(|_| ())
                        .map_err(|e| format!("{e:#}"))
                })
                .map_err(|e| failed(e.to_string()))?;
                r.map_err(failed)?;
            }
        }
        Ok(())
    }

    /// Stage counters summed over CPUs, by name.
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, MonitorError> {
        let a: aya::maps::PerCpuArray<&MapData, u64> =
            aya::maps::PerCpuArray::try_from(self.ebpf.map(MAP_MON_STATS).unwrap())
                .map_err(|e| merr(MAP_MON_STATS, e))?;
        let mut v: Vec<(&'static str, u64)> = (0..COUNTERS)
            .map(|i| {
                a.get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(|e| merr(MAP_MON_STATS, e))
            })
            .zip(COUNTER_NAMES)
            .map(|(v, n)| v.map(|v| (n, v)))
            .collect::<Result<_, MonitorError>>()?;
        // Ignored: the sum of its causes; captured: every packet seen that no other outcome
        // took.
        v[CNT_IGNORED as usize].1 = [
            CNT_IGNORED_NOT_IP,
            CNT_IGNORED_MALFORMED,
            CNT_IGNORED_PROTOCOL,
        ]
        .iter()
        .map(|&i| v[i as usize].1)
        .sum();
        let others: u64 = v
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let i = *i as u32;
                i != CNT_PACKETS && i != CNT_CAPTURED && i != CNT_SESSIONS && i != CNT_IGNORED
            })
            .map(|(_, x)| x.1)
            .sum();
        v[CNT_CAPTURED as usize].1 = v[CNT_PACKETS as usize].1.saturating_sub(others);
        Ok(v)
    }

    fn map_fd(&self, name: &str) -> i32 {
        use aya::maps::Map;
        match self.ebpf.map(name).unwrap() {
            Map::HashMap(d) | Map::PerCpuHashMap(d) | Map::Array(d) => d.fd().as_fd().as_raw_fd(),
            _ => -1,
        }
    }

    /// Takes a window: switches buffers (swap) and waits a grace period, then reads the
    /// buffer the programs no longer write and empties it.
    pub fn read(&mut self) -> Result<Window, MonitorError> {
        let window = self.ctl(CTL_ACTIVE)?;
        let b = window as usize & 1;
        // crypto switches buffers with either extraction: its slots and index entries belong
        // to one window, so erase-on-read reads it as swap-on-read does.
        let swap = self.spec.extraction == Extraction::Swap || self.spec.kind == Kind::Crypto;
        if swap {
            self.set_ctl(CTL_ACTIVE, window.wrapping_add(1))?;
        }
        let t0 = Instant::now();
        if self.wait && swap {
            self.grace.wait().map_err(|e| merr("grace period", e))?;
        }
        let grace = t0.elapsed();
        let t1 = Instant::now();
        let mut w = Window {
            turned_away: self.take_away(b)?,
            ..Window::default()
        };
        match self.spec.kind {
            Kind::Ddos => {
                let mut sessions = Vec::new();
                let mut add = |key: SessKey, s: DdosSess| sessions.push((key, s));
                w.read_kernel += self.sessions::<SessKey4>(MAP_DDOS_SESS4[b], &mut add)?;
                if self.take_v6(b)? {
                    w.read_kernel += self.sessions::<SessKey>(MAP_DDOS_SESS[b], &mut add)?;
                }
                let mut by_id = std::collections::HashMap::with_capacity(sessions.len());
                w.ddos_sessions.reserve(sessions.len());
                for (key, s) in sessions {
                    by_id.insert(s.id, key);
                    w.ddos_sessions.push(DdosSession {
                        key,
                        server: s.server,
                        n_packets: s.n_packets,
                    });
                }
                let used = self.ctl(CTL_USED + b as u32)?;
                let n = used.min(self.spec.total() as u64) as usize;
                if let Some(m) = &self.packet_maps[b] {
                    // SAFETY: the mapping holds `total` records; `n` is at most that.
                    let recs =
                        unsafe { std::slice::from_raw_parts(m.as_ptr() as *const PktSlot, n) };
                    // Every record's session is in the table read above (both belong to
                    // buffer b, quiescent after the grace period).
                    // The kernel keeps monotonic ns in records: Unix time here.
                    let epoch = self.ctl(CTL_EPOCH)?;
                    w.packets = recs
                        .iter()
                        .filter_map(|r| {
                            by_id.get(&r.sess).map(|k| {
                                let mut rec = PktRec::from_slot(*k, r);
                                rec.ts = rec.ts.wrapping_add(epoch);
                                rec
                            })
                        })
                        .collect();
                    w.orphans = n - w.packets.len();
                }
                self.set_ctl(CTL_USED + b as u32, 0)?;
                // Session numbers start again in a quiescent buffer only: with
                // erase-on-read, sessions made during the read keep theirs, and new ones
                // must not take them again.
                if self.spec.extraction == Extraction::Swap {
                    self.set_ctl(CTL_SESS + b as u32, 0)?;
                }
                if self.spec.extraction == Extraction::Erase && used > 0 {
                    // Records past `used` are never read, so the slots need no zeroing;
                    // a packet that claimed a slot during the read is the loss that
                    // erase-on-read accepts.
                }
            }
            Kind::Crypto => {
                let slots = self.ctl(CTL_SESS + b as u32)? as usize;
                let (keys, vals, at) = self.crypto.as_ref().expect("crypto tables mapped at load");
                let (k0, v0, run) = at.buffer(b);
                // Buffer b only, which no program writes after the grace period.
                // SAFETY: the mappings hold both buffers' keys and values (`map_crypto`).
                let (k, v) = unsafe {
                    (
                        std::slice::from_raw_parts(
                            (keys.as_ptr() as *const SessKey).add(k0),
                            at.sessions,
                        ),
                        std::slice::from_raw_parts_mut(
                            (vals.as_ptr() as *mut CryptoVal).add(v0),
                            run,
                        ),
                    )
                };
                w.crypto = at.read(k, v, slots);
                at.zero(v, slots);
                self.set_ctl(CTL_SESS + b as u32, 0)?;
            }
        }
        self.reads += 1;
        w.n = self.reads;
        w.grace = grace;
        w.read = t1.elapsed();
        self.last = (w.grace, w.read);
        self.last_sessions = w.ddos_sessions.len() + w.crypto.len();
        let mut top: Vec<(SessKey, u64)> = w
            .ddos_sessions
            .iter()
            .map(|d| (d.key, d.n_packets))
            .chain(
                w.crypto
                    .iter()
                    .map(|c| (c.key, c.total.n_packets + c.total.n_packets_reverse)),
            )
            .collect();
        // The 10 busiest in linear time, then only those sorted: a window can hold 10k.
        if top.len() > 10 {
            top.select_nth_unstable_by_key(9, |t| std::cmp::Reverse(t.1));
            top.truncate(10);
        }
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        self.last_top = top;
        Ok(w)
    }
}

impl Monitor {
    /// Whether buffer `b` may hold IPv6 sessions ([`CTL_V6`]), clearing the note first (a
    /// session made after it, during an erase-on-read, notes it again for the next read).
    fn take_v6(&mut self, b: usize) -> Result<bool, MonitorError> {
        let slot = CTL_V6 + b as u32;
        if self.ctl(slot)? == 0 {
            return Ok(false);
        }
        self.set_ctl(slot, 0)?;
        Ok(true)
    }

    /// Reads and empties ddos session table `map` of keys `K` (given as the tables of both
    /// families name them), handing each session to `add`. Returns the time the kernel's
    /// batch read took.
    fn sessions<K: aya::Pod + Into<SessKey>>(
        &mut self,
        map: &str,
        add: &mut impl FnMut(SessKey, DdosSess),
    ) -> Result<Duration, MonitorError> {
        let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<DdosSess>());
        let fd = self.map_fd(map);
        let (keys, values) = &mut self.scratch;
        let t = Instant::now();
        // The whole table in one call (kept buffers: no fresh memory per read).
        let n = crate::engine::sys::lookup_batch_into(
            fd,
            (ks, vs),
            self.spec.sessions(),
            true,
            keys,
            values,
        )
        .map_err(|e| merr(map, e))?;
        let kernel = t.elapsed();
        for i in 0..n {
            let key: K = pod(&keys[i * ks..]);
            add(key.into(), pod(&values[i * vs..]));
        }
        Ok(kernel)
    }
}

/// A crypto monitor's keys' and counts' tables mapped (the counts writable: the reader
/// zeroes them), for `sessions` slots per buffer and `ncpus` CPU ids.
fn map_crypto(
    ebpf: &Ebpf,
    sessions: u32,
    ncpus: usize,
) -> Result<(Mapped, Mapped, crypto::Slots), MonitorError> {
    let at = crypto::Slots {
        sessions: sessions as usize,
        ncpus,
    };
    let map = |name: &str, bytes: usize, writable: bool| {
        let fd = match ebpf.map(name) {
            Some(aya::maps::Map::Array(d)) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(merr(name, "not an array")),
        };
        Mapped::new(fd, bytes, writable).map_err(|e| merr(&format!("mapping {name}"), e))
    };
    Ok((
        map(
            MAP_CRYPTO_KEYS,
            at.keys() * std::mem::size_of::<SessKey>(),
            false,
        )?,
        map(
            MAP_CRYPTO_VALS,
            at.values() * std::mem::size_of::<CryptoVal>(),
            true,
        )?,
        at,
    ))
}

fn pod<T: aya::Pod>(b: &[u8]) -> T {
    assert!(b.len() >= std::mem::size_of::<T>());
    // SAFETY: T is plain old data and the slice is long enough.
    unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) }
}

/// An address of a session as an `IpAddr`.
pub fn ip(family: u8, a: &[u8; 16]) -> IpAddr {
    statewall_common::maps::addr_ip(family, a)
}

/// The daemon's monitor instances, by name.
#[derive(Default)]
pub struct Monitors {
    /// Loaded and attached.
    pub by_name: std::collections::BTreeMap<String, Monitor>,
}

impl Monitors {
    /// Loads and attaches what `specs` adds or changes, leaving the running ones alone:
    /// on error, what was loaded here is dropped (detached) again.
    pub fn prepare(&self, specs: &[MonitorSpec]) -> Result<Vec<Monitor>, MonitorError> {
        let mut new = Vec::new();
        for s in specs {
            if self.by_name.get(&s.name).is_some_and(|m| &m.spec == s) {
                continue;
            }
            new.push(Monitor::load(s.clone())?);
        }
        Ok(new)
    }

    /// Puts `new` (from [`Monitors::prepare`]) in place and drops the instances `specs` no
    /// longer has.
    pub fn commit(&mut self, specs: &[MonitorSpec], new: Vec<Monitor>) {
        for m in new {
            if self.by_name.contains_key(&m.spec.name) {
                tracing::info!(monitor = %m.spec.name, "monitor replaced");
            } else {
                tracing::info!(monitor = %m.spec.name, "monitor attached");
            }
            self.by_name.insert(m.spec.name.clone(), m);
        }
        let gone: Vec<String> = self
            .by_name
            .keys()
            .filter(|n| !specs.iter().any(|s| &s.name == *n))
            .cloned()
            .collect();
        for n in gone {
            self.by_name.remove(&n);
            tracing::info!(monitor = %n, "monitor detached");
        }
    }
}
