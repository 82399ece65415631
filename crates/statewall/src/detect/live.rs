//! The learned detectors, live: a monitor instance of its own each (so that it and a user
//! never take each other's swap-on-read windows), read once per model window.
//! - `[detect.classifier]` (floods): a ddos instance; its packets become samples by the
//!   same code as a capture's ([`super::windows::samples`]), and each flow classified as
//!   an attack names its source, the end that is not the session's server: the address a
//!   block drops.
//! - `[detect.mining]`: a crypto instance; its sessions become samples by the same code as
//!   a capture's ([`super::sessions::History`]), and each session classified as mining
//!   (by the model, or as a session of a host the model found mining at the same pool in
//!   the last windows: [`super::pools`])
//!   names the miner (the client) and the pool (the server): the pool is the address a
//!   block drops, so that the miner's host keeps its other traffic.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use serde::Serialize;
use statewall_common::monitor::SessKey;

use super::{
    bad,
    error::LearnError,
    model::Model,
    pools::Pools,
    sessions::History,
    windows::{samples, Sample, SampleKind, Shape},
    ClassifierConfig, DetectConfig, DetectError,
};
use crate::monitor::{Direction, Extraction, Kind, Monitor, MonitorSpec};
use statewall_common::maps::addr_ip;

/// The classifier's monitor instance's name.
pub const MONITOR: &str = "detect-classifier";
/// The mining detector's monitor instance's name.
pub const MONITOR_MINING: &str = "detect-mining";

/// Which learned detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// `[detect.classifier]`: floods.
    Flows,
    /// `[detect.mining]`: mining sessions.
    Mining,
}

impl Learned {
    /// Both.
    pub const ALL: [Learned; 2] = [Learned::Flows, Learned::Mining];

    /// Its section's name under `[detect]`.
    pub fn section(self) -> &'static str {
        match self {
            Learned::Flows => "classifier",
            Learned::Mining => "mining",
        }
    }

    /// Its section of `d`.
    pub fn config(self, d: &DetectConfig) -> Option<&ClassifierConfig> {
        match self {
            Learned::Flows => d.classifier.as_ref(),
            Learned::Mining => d.mining.as_ref(),
        }
    }

    /// The samples its model takes.
    pub fn kind(self) -> SampleKind {
        match self {
            Learned::Flows => SampleKind::Packets,
            Learned::Mining => SampleKind::Sessions,
        }
    }
}

/// A flow the classifier took for an attack.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Detection {
    /// The attacking end (mining: the miner).
    pub source: IpAddr,
    /// The server it sent to (mining: the pool).
    pub destination: IpAddr,
    /// The address `enforce` blocks: the source of a flood, the pool of a miner.
    pub block: IpAddr,
    /// The flow, as `proto a:port <-> b:port` (the session key's order).
    pub flow: String,
    /// Its packets the window recorded (floods: at most the model's `n`; mining: all).
    pub packets: usize,
    /// Its protocol.
    pub proto: u8,
    /// The server's port (0 for ICMP).
    pub port: u16,
    /// Floods: the IP lengths of its packets the window recorded (a frame's length less
    /// the Ethernet header, as in the features).
    #[serde(skip)]
    pub lens: Vec<u16>,
    /// Its session key.
    #[serde(skip)]
    pub key: SessKey,
    /// Mining: taken because the model found its host mining at its pool in the last
    /// windows, not by the model on its own ([`super::pools`]).
    pub known_miner: bool,
    /// The model's score: trees that took the sample for an attack, and trees asked
    /// ([`Model::votes`]; 0 of 0 when no forest judged it: a known miner's first window).
    pub votes: (usize, usize),
}

/// What the last windows gave.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Windows read.
    pub windows: u64,
    /// Samples (a flow in a window) classified, all windows.
    pub samples: u64,
    /// Of them, classified as attacks.
    pub attacks: u64,
    /// Flows the monitor turned away because its session table was full, counted once a
    /// window however many packets they sent (estimated within a few per cent:
    /// [`crate::monitor::away`]), all windows: `unclassified`.
    pub unclassified_flows: u64,
    /// Their packets, all windows.
    pub unclassified_packets: u64,
    /// The last window: reading and decoding it, ms.
    pub last_read_ms: f64,
    /// The last window: samples and inference, ms.
    pub last_classify_ms: f64,
    /// The last window's flows.
    pub last_flows: usize,
}

/// The classifier, loaded and attached.
pub struct Live {
    /// Its monitor.
    pub monitor: Monitor,
    /// Its model.
    pub model: Model,
    /// Its config.
    pub config: ClassifierConfig,
    /// Counts.
    pub stats: Stats,
    turned_away_seen: u64,
    /// Mining: the sessions of the last windows.
    history: Option<History>,
    /// Mining: the (host, pool) pairs the model found in the last windows.
    pools: Option<Pools>,
}

/// The monitor spec of the classifier of `c` for `model`.
pub fn monitor_spec(c: &ClassifierConfig, model: &Model) -> MonitorSpec {
    let mining = model.shape.kind == SampleKind::Sessions;
    MonitorSpec {
        name: if mining { MONITOR_MINING } else { MONITOR }.into(),
        kind: if mining { Kind::Crypto } else { Kind::Ddos },
        interfaces: c.interfaces.clone(),
        netns: c.netns.clone(),
        direction: Direction::Both,
        sessions: Some(c.sessions),
        packets_per_session: (!mining).then_some(model.shape.n as u32),
        packets_total: None,
        extraction: Extraction::Swap,
    }
}

/// A flow as `proto a:port <-> b:port`.
pub fn flow_text(k: &SessKey) -> String {
    let p = match k.proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        n => n.to_string(),
    };
    let (a, b) = (addr_ip(k.family, &k.saddr), addr_ip(k.family, &k.daddr));
    let end = |ip: IpAddr, port: u16| match ip {
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
        _ => format!("{ip}:{port}"),
    };
    format!("{p} {} <-> {}", end(a, k.sport), end(b, k.dport))
}

/// The model of a learned detector's section for samples of `kind` (the
/// `[detect.classifier]` packets, the `[detect.mining]` sessions): its file, else the
/// built-in one.
pub fn load_model(c: &ClassifierConfig, kind: SampleKind) -> Result<Model, DetectError> {
    let section = match kind {
        SampleKind::Packets => "classifier",
        SampleKind::Sessions => "mining",
    };
    let m = match (&c.model, kind) {
        (Some(p), _) => {
            Model::load(p).map_err(|e| bad(&format!("{section}.model"), e.to_string()))?
        }
        (None, SampleKind::Packets) => Model::builtin(),
        (None, SampleKind::Sessions) => Model::builtin_mining(),
    };
    if m.shape.kind != kind {
        return Err(bad(
            &format!("{section}.model"),
            format!(
                "a model of {:?} samples where [detect.{section}] takes {kind:?} (statewall detect train --detector {})",
                m.shape.kind,
                if kind == SampleKind::Packets { "ddos" } else { "mining" }
            ),
        ));
    }
    Ok(m)
}

/// Checks a `[detect]` section: its values ([`DetectConfig::validate`]) and the model each
/// of its learned detectors reads.
pub fn check(d: &DetectConfig) -> Result<(), DetectError> {
    d.validate_with(|c, kind| load_model(c, kind).map(drop))
}

impl Live {
    /// Loads its model (of `kind`'s samples) and attaches its monitor.
    pub fn open(config: &ClassifierConfig, kind: SampleKind) -> Result<Live, LearnError> {
        let model = load_model(config, kind)?;
        let monitor = Monitor::load(monitor_spec(config, &model))?;
        let mut l = Live {
            monitor,
            model,
            config: config.clone(),
            stats: Stats::default(),
            turned_away_seen: 0,
            history: None,
            pools: None,
        };
        if kind == SampleKind::Sessions {
            l.history = Some(History::new(l.shape()));
            l.pools = Some(Pools::new(l.model.shape.n));
        }
        Ok(l)
    }

    /// The addresses of the interfaces it watches (never blocked: on the host it protects,
    /// these are the victim's own).
    pub fn local_addrs(&self) -> Vec<IpAddr> {
        let names = self.config.interfaces.clone();
        crate::engine::netns::in_netns(self.config.netns.as_deref(), move || {
            let mut out = Vec::new();
            let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
            // SAFETY: getifaddrs fills `list`, freed below; each entry is read while the list
            // lives, its address by its family.
            unsafe {
                if libc::getifaddrs(&mut list) != 0 {
                    return out;
                }
                let mut p = list;
                while !p.is_null() {
                    let e = &*p;
                    let name = std::ffi::CStr::from_ptr(e.ifa_name).to_string_lossy();
                    if !e.ifa_addr.is_null() && names.iter().any(|n| *n == name) {
                        match (*e.ifa_addr).sa_family as i32 {
                            libc::AF_INET => {
                                let a = &*(e.ifa_addr as *const libc::sockaddr_in);
                                out.push(IpAddr::from(a.sin_addr.s_addr.to_ne_bytes()));
                            }
                            libc::AF_INET6 => {
                                let a = &*(e.ifa_addr as *const libc::sockaddr_in6);
                                out.push(IpAddr::from(a.sin6_addr.s6_addr));
                            }
                            _ => {}
                        }
                    }
                    p = e.ifa_next;
                }
                libc::freeifaddrs(list);
            }
            out
        })
        .unwrap_or_default()
    }

    /// The model's window shape, the session bound from the config.
    pub fn shape(&self) -> Shape {
        Shape {
            max_flows: self.config.sessions as usize,
            ..self.model.shape
        }
    }

    /// Reads a window and classifies it: the flows taken for attacks.
    pub fn window(&mut self) -> Result<Vec<Detection>, LearnError> {
        let t = Instant::now();
        let w = self.monitor.read()?;
        let read = t.elapsed();
        let t = Instant::now();
        let shape = self.shape();
        let (samples, servers, mining) = match &mut self.history {
            None => {
                let servers: HashMap<SessKey, [u8; 16]> =
                    w.ddos_sessions.iter().map(|s| (s.key, s.server)).collect();
                (samples(&w.packets, shape).samples, servers, false)
            }
            Some(h) => {
                let vals: Vec<_> = w.crypto.iter().map(|c| (c.key, c.total)).collect();
                let servers = vals.iter().map(|(k, v)| (*k, v.server)).collect();
                (h.window(&vals), servers, true)
            }
        };
        let mut found = self.classify(&samples, &servers, mining)?;
        if !mining && !found.is_empty() {
            lengths(&mut found, &w.packets);
        }
        let n = samples.len();
        let turned_away = self
            .monitor
            .counters()
            .ok()
            .and_then(|c| c.iter().find(|(n, _)| *n == "turned_away").map(|(_, v)| *v))
            .unwrap_or(0);
        let st = &mut self.stats;
        st.windows += 1;
        st.samples += n as u64;
        st.attacks += found.len() as u64;
        st.unclassified_flows += w.turned_away;
        st.unclassified_packets += turned_away.saturating_sub(self.turned_away_seen);
        self.turned_away_seen = turned_away;
        st.last_read_ms = read.as_secs_f64() * 1e3;
        st.last_classify_ms = t.elapsed().as_secs_f64() * 1e3;
        st.last_flows = n;
        Ok(found)
    }

    /// The samples the model takes for attacks, each with the address a block drops (the
    /// server's when `block_server`).
    fn classify(
        &mut self,
        samples: &[Sample],
        servers: &HashMap<SessKey, [u8; 16]>,
        block_server: bool,
    ) -> Result<Vec<Detection>, LearnError> {
        let refs: Vec<&Sample> = samples.iter().collect();
        let mut verdicts = self.model.predict(&refs)?;
        let mut turned = vec![false; samples.len()];
        if let (Some(p), Some(first)) = (&mut self.pools, samples.first()) {
            let w = first.window as u64;
            for i in p.window(w, samples, |k| servers.get(k).copied(), &mut verdicts) {
                turned[i] = true;
            }
        }
        let mut out = Vec::new();
        for ((s, attack), known_miner) in samples.iter().zip(verdicts).zip(turned) {
            if !attack {
                continue;
            }
            let k = &s.key;
            let server = servers.get(k).copied().unwrap_or(k.daddr);
            let (src, dst) = if server == k.saddr {
                (k.daddr, k.saddr)
            } else {
                (k.saddr, k.daddr)
            };
            let (source, destination) = (addr_ip(k.family, &src), addr_ip(k.family, &dst));
            let port = port_of(k, destination);
            out.push(Detection {
                source,
                destination,
                block: if block_server { destination } else { source },
                flow: flow_text(k),
                packets: s.packets,
                proto: k.proto,
                port,
                lens: Vec::new(),
                key: *k,
                known_miner,
                votes: self.model.votes(s)?.unwrap_or((0, 0)),
            });
        }
        // The model's own detections first: a block takes its reason from the first
        // detection of its address.
        out.sort_by_key(|d| d.known_miner);
        Ok(out)
    }
}

/// Turns around the flood detections whose attacking end is one of the host's own
/// addresses (`local`) and whose server is not: the monitor finds a session's server from
/// its first packet (by ports when nothing else tells), so a flood from a port below its
/// target's names the target's attacker the server. On the host it protects, the local
/// end is the victim: it becomes the destination (for [`super::spread`]). `block` stays
/// the local address, which is never blocked: the records do not tell which end sent
/// what, and the host's own connections, taken for an attack, must not get their peers
/// blocked.
pub fn orient(found: &mut [Detection], local: &[IpAddr]) {
    for d in found {
        if local.contains(&d.source) && !local.contains(&d.destination) {
            std::mem::swap(&mut d.source, &mut d.destination);
            d.port = port_of(&d.key, d.destination);
        }
    }
}

/// The port of the end `addr` of session `k`.
fn port_of(k: &SessKey, addr: IpAddr) -> u16 {
    if addr_ip(k.family, &k.saddr) == addr {
        k.sport
    } else {
        k.dport
    }
}

/// Fills each detection's packet lengths from the window's records.
fn lengths(found: &mut [Detection], packets: &[statewall_common::monitor::PktRec]) {
    let at: HashMap<SessKey, usize> = found.iter().enumerate().map(|(i, d)| (d.key, i)).collect();
    for r in packets {
        if let Some(&i) = at.get(&r.key) {
            found[i].lens.push(ip_len(r));
        }
    }
}

/// A record's IP length as the kernel reads it from the header, or 0 when the record
/// cannot tell: UDP from its length field (an IP header without options or extension
/// headers); others from the frame less the Ethernet header, unless the frame may carry
/// padding (60 bytes or less).
pub fn ip_len(r: &statewall_common::monitor::PktRec) -> u16 {
    match r.key.proto {
        statewall_common::parse::proto::UDP => {
            let ip = if r.key.family == 6 { 40 } else { 20 };
            r.udp_size.saturating_add(8 + ip)
        }
        _ if r.pkt_len <= 60 => 0,
        _ => r.pkt_len.saturating_sub(super::windows::ETH_HEADER),
    }
}

/// A source the classifier blocked.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// Why: the flow and window that made it.
    pub reason: String,
    /// The block's drop count when last looked at (growth re-arms the expiry).
    pub dropped_seen: u64,
    /// Which detector holds it (`classifier`, `mining`).
    pub detector: &'static str,
}

/// A learned detector in the daemon: the loaded instance (none without its section,
/// `[detect.classifier]` or `[detect.mining]`), the blocks it holds and what it could not
/// do.
#[derive(Default)]
pub struct Classifier {
    /// Loaded and attached.
    pub live: Option<Live>,
    /// Addresses it blocked (flood sources, pools), by prefix (a /32 or /128).
    pub held: HashMap<super::Prefix, Held>,
    /// Destination mitigations it put in place (floods, [`super::spread`]).
    pub dests: HashMap<statewall_common::detect::DestKey, Held>,
    /// What the last window's destination mitigations were or (under `monitor`) would
    /// have been: `target: action` each.
    pub last_destinations: Vec<String>,
    /// Detections not acted on because `max_blocks` were held (or the block table was
    /// full).
    pub refused: u64,
    /// Detections of allowlisted sources (never blocked).
    pub allowlisted: u64,
    /// Flood sources not blocked because their flows taken for attacks held a single
    /// packet in the window ([`MIN_BLOCK_PACKETS`]).
    pub lone: u64,
    /// The last window's detections (at most [`LAST_MAX`]).
    pub last: Vec<Detection>,
}

/// Detections kept from the last window.
pub const LAST_MAX: usize = 100;

/// The classifier blocks a source one by one only when its flows taken for attacks held
/// at least this many packets in the window: a block of a source that sent one packet
/// stops nothing (a flood that sends one packet a source is met by a destination
/// mitigation, [`super::spread`]), and a lone benign datagram the model takes for an
/// attack would cut its sender off for `expiry`.
pub const MIN_BLOCK_PACKETS: usize = 2;

/// The addresses to block among `found` (a window's detections) whose flows taken for
/// attacks hold fewer than [`MIN_BLOCK_PACKETS`] packets in all: not blocked one by one.
pub fn lone_sources(found: &[Detection]) -> std::collections::HashSet<IpAddr> {
    let mut sent: HashMap<IpAddr, usize> = HashMap::new();
    for d in found {
        *sent.entry(d.block).or_default() += d.packets;
    }
    sent.into_iter()
        .filter(|(_, n)| *n < MIN_BLOCK_PACKETS)
        .map(|(a, _)| a)
        .collect()
}

impl Classifier {
    /// Makes the instance `c` asks for (of `kind`'s samples), or keeps the running one
    /// when its config is the same (`None`: the running one stays as it is).
    pub fn prepare(
        &self,
        c: Option<&ClassifierConfig>,
        kind: SampleKind,
    ) -> Result<Option<Option<Live>>, LearnError> {
        match (c, &self.live) {
            (None, None) => Ok(None),
            (Some(c), Some(l)) if &l.config == c => Ok(None),
            (None, Some(_)) => Ok(Some(None)),
            (Some(c), _) => Live::open(c, kind).map(|l| Some(Some(l))),
        }
    }

    /// Puts a prepared instance in place.
    pub fn commit(&mut self, new: Option<Option<Live>>) {
        if let Some(l) = new {
            self.live = l;
            self.last.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statewall_common::{monitor::PktRec, parse::proto};

    fn rec(l4: u8, family: u8, pkt_len: u16, udp_size: u16) -> PktRec {
        PktRec {
            key: SessKey {
                proto: l4,
                family,
                ..Default::default()
            },
            pkt_len,
            udp_size,
            ..Default::default()
        }
    }

    #[test]
    fn ip_lengths_come_from_the_udp_header_and_never_from_a_padded_frame() {
        // 64 bytes of UDP payload: 92 over IPv4, 112 over IPv6, whatever the frame.
        assert_eq!(ip_len(&rec(proto::UDP, 4, 120, 64)), 92);
        assert_eq!(ip_len(&rec(proto::UDP, 6, 126, 64)), 112);
        // An echo request of 84 bytes in a 98-byte frame; a 60-byte frame may be padded.
        assert_eq!(ip_len(&rec(proto::ICMP, 4, 98, 0)), 84);
        assert_eq!(ip_len(&rec(proto::TCP, 4, 60, 0)), 0);
    }

    #[test]
    fn a_flood_naming_the_host_its_attacker_turns_around_and_blocks_no_peer() {
        let local: IpAddr = "10.77.0.2".parse().unwrap();
        let peer: IpAddr = "10.100.0.9".parse().unwrap();
        let mut k = SessKey {
            proto: proto::UDP,
            family: 4,
            sport: 9999,
            dport: 4000,
            ..Default::default()
        };
        k.saddr[..4].copy_from_slice(&[10, 77, 0, 2]);
        k.daddr[..4].copy_from_slice(&[10, 100, 0, 9]);
        let d = |source, destination, port| Detection {
            source,
            destination,
            block: source,
            flow: String::new(),
            packets: 1,
            proto: proto::UDP,
            port,
            lens: Vec::new(),
            key: k,
            known_miner: false,
            votes: (0, 0),
        };
        let mut found = vec![d(local, peer, 4000), d(peer, local, 9999)];
        orient(&mut found, &[local]);
        for f in &found {
            assert_eq!((f.source, f.destination, f.port), (peer, local, 9999));
        }
        assert_eq!(found[0].block, local, "the local address, never blocked");
        assert_eq!(found[1].block, peer);
    }

    #[test]
    fn a_source_of_one_packet_is_lone_and_one_of_many_flows_is_not() {
        let server: IpAddr = "10.77.0.2".parse().unwrap();
        let d = |a: [u8; 4], packets| Detection {
            source: IpAddr::from(a),
            destination: server,
            block: IpAddr::from(a),
            flow: String::new(),
            packets,
            proto: proto::UDP,
            port: 9999,
            lens: Vec::new(),
            key: SessKey::default(),
            known_miner: false,
            votes: (0, 0),
        };
        let found = vec![
            // A lone datagram.
            d([10, 77, 0, 1], 1),
            // A tool that changes its source port every packet: one-packet flows.
            d([10, 100, 0, 1], 1),
            d([10, 100, 0, 1], 1),
            // A flow of ten.
            d([10, 100, 0, 2], 10),
        ];
        let lone = lone_sources(&found);
        assert_eq!(
            lone.into_iter().collect::<Vec<_>>(),
            vec![IpAddr::from([10, 77, 0, 1])]
        );
        assert!(lone_sources(&[]).is_empty());
    }
}
