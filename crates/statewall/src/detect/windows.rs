//! Packets to samples, after LUCID's flow windows (shared COMPAT.md, section 8): the one
//! path from ddos records, whether the kernel wrote them or a capture was read
//! ([`super::capture`]), to the classifier's input.
//!
//! A flow is the session key (both directions of a 5-tuple are one key). Packets, taken in
//! time order, fall into windows of `t`: a window starts at the first packet after the
//! previous one ended. A flow's sample in a window is its first `n` packets, eleven
//! features each, scaled to [0, 1] by fixed ranges, zero rows after its last packet.
//!
//! The features the ddos record lacks are derived from what it has:
//! - IP length: the frame's length less a 14-byte Ethernet header;
//! - the protocols present, a bitmap over (arp, data, dns, ftp, http, icmp, ip, ssdp, ssl,
//!   telnet, tcp, udp), bit i for the i-th: `ip` always; `tcp`, `udp` or `icmp` (ICMPv6
//!   included) from the protocol; an application from either port when the packet carries
//!   payload (53 dns, 21 ftp, 80, 8000 and 8080 http, 443 ssl, 23 telnet, 1900 ssdp);
//!   `data` when it carries payload and no port names an application;
//! - the highest layer: the name of the last of those (the application, else `DATA` for
//!   payload, else the transport: `TCP`, `UDP`, `ICMP`, `ICMPV6`) hashed with FNV-1a 32;
//! - UDP length: the record's UDP payload size plus the 8-byte header.
//!
//! A window holds at most `max_flows` flows, as the monitor's session table does; a flow
//! that comes later in a full window is turned away, counted, and has no sample there.

use std::collections::HashMap;

use statewall_common::{
    monitor::{PktRec, SessKey},
    parse::proto,
};

use crate::types::Seeded;

/// Features per packet.
pub const FEATURES: usize = 11;

/// The layout of session samples ([`SampleKind::Sessions`], which [`super::sessions`]
/// makes): what a model needs to read them.
pub mod session {
    use super::{Sample, Shape};

    /// Features per session sample.
    pub const FEATURES: usize = 17;

    /// The most windows a session's history may hold.
    pub const MAX_HISTORY: usize = 64;

    /// Windows a session must have lived (counting its first) before it is judged: younger
    /// sessions are not mining by rule, neither trained on nor classified. Mining lasts hours;
    /// what a session does in its first seconds (a login, a subscription) says little.
    pub const MIN_AGE: u64 = 2;

    /// Whether a session sample of `shape` is old enough to be judged ([`MIN_AGE`]).
    pub fn judged(s: &Sample, shape: Shape) -> bool {
        let cap = (4 * shape.n.clamp(1, MAX_HISTORY)) as f32;
        s.x.get(1)
            .is_some_and(|a| (a * cap).round() as u64 >= MIN_AGE)
    }
}

/// The Ethernet header a record's frame length is taken to carry (the IP length is the
/// rest).
pub const ETH_HEADER: u16 = 14;

/// What a model's samples are made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleKind {
    /// A flow's first packets in a window, LUCID's features each (the ddos monitor's
    /// records): floods.
    #[default]
    Packets,
    /// A session's counts over its last windows (the crypto monitor's values,
    /// [`super::sessions`]): mining.
    Sessions,
}

/// Window length and packets per flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// Window length, ns.
    pub t_ns: u64,
    /// Packets per flow and window ([`SampleKind::Packets`]), or the windows a session's
    /// features look back over ([`SampleKind::Sessions`]).
    pub n: usize,
    /// Flows per window (more are turned away).
    pub max_flows: usize,
    /// What the samples are made of (absent from models made before it: packets).
    #[serde(default)]
    pub kind: SampleKind,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            t_ns: 10_000_000_000,
            n: 10,
            max_flows: 16_384,
            kind: SampleKind::Packets,
        }
    }
}

/// One flow in one window.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The flow.
    pub key: SessKey,
    /// The window's number (from 0).
    pub window: usize,
    /// Packets it had in the window (all of them, not only the first `n`).
    pub packets: usize,
    /// `n` x [`FEATURES`] values, row by row.
    pub x: Vec<f32>,
}

/// Samples of a run of packets.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    /// Each flow's sample in each window it had packets in (and was not turned away).
    pub samples: Vec<Sample>,
    /// Windows.
    pub windows: usize,
    /// (flow, window) of each flow turned away by a full window.
    pub turned_away: Vec<(SessKey, usize)>,
    /// Sessions ([`SampleKind::Sessions`]): each (window, session)'s server address, as
    /// the monitor found it in that window (empty for packets).
    pub servers: std::collections::HashMap<(usize, SessKey), [u8; 16]>,
}

// Bit 0 (arp) is never set: the monitor records IP packets only.
const DATA: u32 = 1 << 1;
const DNS: u32 = 1 << 2;
const FTP: u32 = 1 << 3;
const HTTP: u32 = 1 << 4;
const ICMP: u32 = 1 << 5;
const IP: u32 = 1 << 6;
const SSDP: u32 = 1 << 7;
const SSL: u32 = 1 << 8;
const TELNET: u32 = 1 << 9;
const TCP: u32 = 1 << 10;
const UDP: u32 = 1 << 11;

/// The application a port names (its bit and layer name).
fn application(port: u16) -> Option<(u32, &'static str)> {
    Some(match port {
        53 => (DNS, "DNS"),
        21 => (FTP, "FTP"),
        80 | 8000 | 8080 => (HTTP, "HTTP"),
        443 => (SSL, "SSL"),
        23 => (TELNET, "TELNET"),
        1900 => (SSDP, "SSDP"),
        _ => return None,
    })
}

/// FNV-1a, 32 bits.
pub fn fnv1a32(s: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The protocol bitmap and the highest layer's name of a record.
pub fn layers(r: &PktRec) -> (u32, &'static str) {
    let (l4, name, payload) = match r.key.proto {
        proto::TCP => (TCP, "TCP", r.tcp_payload > 0),
        proto::UDP => (UDP, "UDP", r.udp_size > 0),
        proto::ICMP => (ICMP, "ICMP", false),
        proto::ICMPV6 => (ICMP, "ICMPV6", false),
        _ => (0, "IP", false),
    };
    let mut bits = IP | l4;
    if !payload || !matches!(r.key.proto, proto::TCP | proto::UDP) {
        return (bits, name);
    }
    let app = application(r.key.sport).or(application(r.key.dport));
    match app {
        Some((bit, name)) => (bits | bit, name),
        None => {
            bits |= DATA;
            (bits, "DATA")
        }
    }
}

/// One packet's eleven features, scaled (`start`: the window's start, Unix ns).
pub fn features(r: &PktRec, start: u64, t_ns: u64) -> [f32; FEATURES] {
    let (bits, top) = layers(r);
    let udp_len = if r.key.proto == proto::UDP {
        r.udp_size as u32 + 8
    } else {
        0
    };
    let f = |v: f64, range: f64| (v / range) as f32;
    let is_tcp = r.key.proto == proto::TCP;
    let tcp = |v: u32| if is_tcp { v as f64 } else { 0.0 };
    let is_icmp = matches!(r.key.proto, proto::ICMP | proto::ICMPV6);
    [
        f(r.ts.saturating_sub(start) as f64, t_ns as f64),
        f(r.pkt_len.saturating_sub(ETH_HEADER) as f64, 65536.0),
        f(fnv1a32(top.as_bytes()) as f64, 4_294_967_296.0),
        f(r.ip_flags_frag as f64, 65536.0),
        f(bits as f64, 4096.0),
        f(tcp(r.tcp_payload as u32), 65536.0),
        f(tcp(r.tcp_ack), 4_294_967_296.0),
        f(tcp(r.tcp_flags as u32), 65536.0),
        f(tcp(r.tcp_win as u32), 65536.0),
        f(udp_len as f64, 65536.0),
        f(if is_icmp { r.icmp_type as f64 } else { 0.0 }, 256.0),
    ]
}

/// The protocol bits that say a packet carried payload: `data` or an application.
const PAYLOAD_BITS: u32 = DATA | DNS | FTP | HTTP | SSDP | SSL | TELNET;

/// Whether one of the packets recorded in `s` (of a shape of `n` packets) carried TCP or
/// UDP payload: its protocol bitmap (feature 5) has `data` or an application bit.
pub fn carries_payload(s: &Sample, n: usize) -> bool {
    (0..s.packets.min(n)).any(|i| {
        let bits =
            s.x.get(i * FEATURES + 4)
                .map_or(0, |v| (v * 4096.0).round() as u32);
        bits & PAYLOAD_BITS != 0
    })
}

/// The samples of `packets` (any order: they are taken by time).
pub fn samples(packets: &[PktRec], shape: Shape) -> Windows {
    let mut order: Vec<usize> = (0..packets.len()).collect();
    if !packets.is_sorted_by_key(|p| p.ts) {
        order.sort_by_key(|&i| packets[i].ts);
    }
    let mut out = Windows::default();
    let mut i = 0;
    while i < order.len() {
        let start = packets[order[i]].ts;
        // (A window of 0 ns would never end.)
        let end = start.saturating_add(shape.t_ns.max(1));
        let window = out.windows;
        out.windows += 1;
        // Flow -> its sample's index in `out.samples`; turned away flows map to None.
        // (Seeded: a flood chooses these keys. SipHash cost about 2 ms of a 10,000-flow
        // window.)
        let mut flows: HashMap<SessKey, Option<usize>, Seeded> =
            HashMap::with_capacity_and_hasher(1024, Seeded::default());
        let mut taken = 0;
        while i < order.len() && packets[order[i]].ts < end {
            let r = &packets[order[i]];
            i += 1;
            let slot = *flows.entry(r.key).or_insert_with(|| {
                if taken == shape.max_flows {
                    out.turned_away.push((r.key, window));
                    return None;
                }
                taken += 1;
                out.samples.push(Sample {
                    key: r.key,
                    window,
                    packets: 0,
                    x: vec![0.0; shape.n * FEATURES],
                });
                Some(out.samples.len() - 1)
            });
            let Some(s) = slot else { continue };
            let s = &mut out.samples[s];
            if s.packets < shape.n {
                let row = s.packets * FEATURES;
                s.x[row..row + FEATURES].copy_from_slice(&features(r, start, shape.t_ns));
            }
            s.packets += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: u64, sport: u16, dport: u16, p: u8) -> PktRec {
        let mut r = PktRec::default();
        r.key.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.key.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        r.key.sport = sport;
        r.key.dport = dport;
        r.key.proto = p;
        r.key.family = 4;
        r.ts = ts;
        r.pkt_len = 114;
        r
    }

    #[test]
    fn windows_start_at_the_first_packet_after_the_last_one_ended() {
        let s = Shape {
            t_ns: 10,
            n: 2,
            max_flows: 1,
            ..Shape::default()
        };
        // Window 0: [5, 15) holds 5, 6, 9 (a second flow turned away at 9); 14 too.
        // Window 1 starts at 40 (not 15 or 35).
        let ps = [
            rec(40, 1, 2, proto::TCP),
            rec(5, 1, 2, proto::TCP),
            rec(6, 1, 2, proto::TCP),
            rec(9, 3, 4, proto::TCP),
            rec(14, 1, 2, proto::TCP),
        ];
        let w = samples(&ps, s);
        assert_eq!(w.windows, 2);
        assert_eq!(w.samples.len(), 2);
        assert_eq!(w.samples[0].packets, 3);
        assert_eq!(w.turned_away.len(), 1);
        assert_eq!(w.turned_away[0].0.sport, 3);
        // Relative times of the first two packets: 0 and 1 of 10.
        assert_eq!(w.samples[0].x[0], 0.0);
        assert_eq!(w.samples[0].x[FEATURES], 0.1);
        assert_eq!(w.samples[1].window, 1);
        // Zero rows after the last packet.
        assert!(w.samples[1].x[FEATURES..].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn a_sample_carries_payload_when_a_recorded_packet_does() {
        let s = Shape {
            t_ns: 100,
            n: 2,
            max_flows: 4,
            ..Shape::default()
        };
        let mut with = rec(3, 40000, 8080, proto::TCP);
        with.tcp_payload = 100;
        // Flow 1: a SYN, then a segment with payload; flow 2: three bare segments, and
        // a third packet with payload past the two a sample records.
        let mut late = rec(4, 40001, 8080, proto::TCP);
        late.tcp_payload = 100;
        let ps = [
            rec(1, 40000, 8080, proto::TCP),
            with,
            rec(2, 40001, 8080, proto::TCP),
            rec(3, 40001, 8080, proto::TCP),
            late,
            rec(5, 0, 0, proto::ICMP),
        ];
        let w = samples(&ps, s);
        let by = |sport| w.samples.iter().find(|x| x.key.sport == sport).unwrap();
        assert!(carries_payload(by(40000), s.n));
        assert!(!carries_payload(by(40001), s.n));
        assert!(!carries_payload(by(0), s.n));
    }

    #[test]
    fn layers_follow_the_ports_and_the_payload() {
        let mut r = rec(0, 40000, 53, proto::UDP);
        assert_eq!(layers(&r), (IP | UDP, "UDP"));
        r.udp_size = 30;
        assert_eq!(layers(&r), (IP | UDP | DNS, "DNS"));
        r.key.dport = 9999;
        assert_eq!(layers(&r), (IP | UDP | DATA, "DATA"));
        let mut t = rec(0, 443, 50000, proto::TCP);
        t.tcp_payload = 1;
        assert_eq!(layers(&t), (IP | TCP | SSL, "SSL"));
        assert_eq!(layers(&rec(0, 0, 0, proto::ICMP)), (IP | ICMP, "ICMP"));
        // The reference values of FNV-1a 32.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }
}
