//! Sessions to samples, for mining detection: the crypto monitor's per-session values of
//! each window (packets and IP bytes each way, first and last packet, the server), kept
//! over the last `n` windows of each session, become one sample per session and window.
//!
//! A mining session is long-lived, low-rate and steady: small requests (share submits)
//! and answers, and now and then a larger push (a job) from the pool, at intervals set by
//! the miner's hash rate and the pool's block timing. Its features,
//! [`FEATURES`](super::windows::session::FEATURES) of them, client and server as the monitor found them (`CryptoVal::server`):
//! 0. windows it had packets in, of those looked back over (below), over `n`;
//! 1. windows since it was first seen, at most `4n`, over `4n` (how long-lived);
//! 2. 3. this window's packets per second from the client, from the server;
//! 4. 5. this window's mean IP bytes per packet from the client, from the server;
//! 6. this window's span from first to last packet, over the window;
//! 7. packets per second over the windows looked back over (both ways);
//! 8. their coefficient of variation across those windows (steady traffic: low);
//! 9. the busiest of those windows over their mean (bursts: high);
//! 10. 11. mean bytes per packet over those windows, from the client, from the server;
//! 12. the server's share of the packets, 13. of the bytes (symmetry);
//! 14. 1 for TCP, 0 for UDP;
//! 15. the largest of those windows' mean bytes per packet from the client;
//! 16. the same from the server (a pool's job push stands out of its small answers).
//!
//! The windows looked back over are the last `n`, the session's first left out once it has
//! others (a login's or a subscription's burst is no pattern). A session younger than
//! [`MIN_AGE`](super::windows::session::MIN_AGE) windows is not judged: not mining by
//! rule, neither trained on nor classified.
//!
//! Ports are left out on purpose: pools listen on any port.
//!
//! Live, a window is one read of the monitor; offline ([`from_packets`]), a capture's TCP
//! and UDP packets are cut into windows of `t` from its first packet (empty windows count,
//! as a live read finds nothing in them) and each packet is added to its session's value
//! by the function the kernel runs (`statewall_common::monitor::packet::crypto_add`), the table
//! bounded as the monitor's is. Both then go through [`History::window`].

use std::collections::HashMap;

use statewall_common::{
    monitor::{
        packet::{crypto_add, key_into},
        CryptoVal, SessKey,
    },
    parse::PacketInfo,
};

use super::windows::{Sample, Shape, Windows};
use crate::types::Seeded;

use super::windows::session::MAX_HISTORY;

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Packets from the client, from the server.
    pc: u64,
    ps: u64,
    /// IP bytes from the client, from the server.
    bc: u64,
    bs: u64,
}

impl Counts {
    /// A value's counts, client and server sides told by its server address.
    fn of(k: &SessKey, v: &CryptoVal) -> Counts {
        // `n_packets` counts the key's `saddr` side.
        if v.server == k.saddr {
            Counts {
                pc: v.n_packets_reverse,
                ps: v.n_packets,
                bc: v.n_bytes_reverse,
                bs: v.n_bytes,
            }
        } else {
            Counts {
                pc: v.n_packets,
                ps: v.n_packets_reverse,
                bc: v.n_bytes,
                bs: v.n_bytes_reverse,
            }
        }
    }
}

struct Track {
    /// The window it was first seen in.
    first: u64,
    /// The last window it had packets in.
    last: u64,
    /// Counts by window number modulo `n`.
    ring: Vec<Counts>,
}

fn div(a: f64, b: f64) -> f32 {
    if b > 0.0 {
        (a / b) as f32
    } else {
        0.0
    }
}

/// The sessions seen in the last `n` windows.
pub struct History {
    shape: Shape,
    /// The next window's number.
    window: u64,
    tracks: HashMap<SessKey, Track, Seeded>,
}

impl History {
    /// An empty history for windows of `shape` (`n`: the windows a session's features
    /// look back over, at most [`MAX_HISTORY`]).
    pub fn new(shape: Shape) -> History {
        History {
            shape: Shape {
                n: shape.n.clamp(1, MAX_HISTORY),
                ..shape
            },
            window: 0,
            tracks: HashMap::default(),
        }
    }

    /// Sessions it remembers.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// One window's sessions (each key once): a sample for each, in the order given.
    pub fn window(&mut self, sessions: &[(SessKey, CryptoVal)]) -> Vec<Sample> {
        let (n, w) = (self.shape.n as u64, self.window);
        self.window += 1;
        let t_s = self.shape.t_ns.max(1) as f64 / 1e9;
        let mut out = Vec::with_capacity(sessions.len());
        for (k, v) in sessions {
            let c = Counts::of(k, v);
            if c.pc + c.ps == 0 {
                continue;
            }
            let tr = self.tracks.entry(*k).or_insert_with(|| Track {
                first: w,
                last: w,
                ring: vec![Counts::default(); n as usize],
            });
            // The windows since its last one had no packets of it.
            for gap in (tr.last + 1..w).take(n as usize) {
                tr.ring[(gap % n) as usize] = Counts::default();
            }
            tr.ring[(w % n) as usize] = c;
            tr.last = w;
            let age = w - tr.first + 1;
            // The windows looked back over: the last `n`, the session's first (its
            // handshake, a login's or a subscription's burst) left out once there are others.
            let lo = if age == 1 {
                w
            } else {
                (tr.first + 1).max((w + 1).saturating_sub(n))
            };
            let span = w - lo + 1;
            // One pass for the sums, one for the spread (no list per sample: a window can
            // hold 16,384 sessions).
            let (mut present, mut peak) = (0usize, 0u64);
            let mut all = Counts::default();
            let (mut top_c, mut top_s) = (0f32, 0f32);
            for i in lo..=w {
                let r = tr.ring[(i % n) as usize];
                let p = r.pc + r.ps;
                present += (p > 0) as usize;
                peak = peak.max(p);
                all.pc += r.pc;
                all.ps += r.ps;
                all.bc += r.bc;
                all.bs += r.bs;
                top_c = top_c.max(div(r.bc as f64, r.pc as f64));
                top_s = top_s.max(div(r.bs as f64, r.ps as f64));
            }
            let mean = (all.pc + all.ps) as f64 / span as f64;
            let var = (lo..=w)
                .map(|i| {
                    let r = tr.ring[(i % n) as usize];
                    ((r.pc + r.ps) as f64 - mean).powi(2)
                })
                .sum::<f64>()
                / span as f64;
            let peak = peak as f64;
            let active = v.alive_ts.saturating_sub(v.start_ts) as f64 / 1e9;
            let x = vec![
                present as f32 / n as f32,
                age.min(4 * n) as f32 / (4 * n) as f32,
                div(c.pc as f64, t_s),
                div(c.ps as f64, t_s),
                div(c.bc as f64, c.pc as f64),
                div(c.bs as f64, c.ps as f64),
                div(active, t_s).min(1.0),
                div(mean, t_s),
                div(var.sqrt(), mean),
                div(peak, mean),
                div(all.bc as f64, all.pc as f64),
                div(all.bs as f64, all.ps as f64),
                div(all.ps as f64, (all.pc + all.ps) as f64),
                div(all.bs as f64, (all.bc + all.bs) as f64),
                (k.proto == 6) as u8 as f32,
                top_c,
                top_s,
            ];
            out.push(Sample {
                key: *k,
                window: w as usize,
                packets: (c.pc + c.ps) as usize,
                x,
            });
        }
        // Sessions quiet for `n` windows are forgotten (they start over if they return).
        self.tracks.retain(|_, t| t.last + n > w);
        out
    }
}

/// One window's session values, as a crypto monitor read gives them.
pub type WindowValues = Vec<(SessKey, CryptoVal)>;

/// A capture's TCP and UDP packets (`Capture::sessions`) as the crypto monitor would count
/// them: windows of `shape.t_ns` from the first packet (empty ones included, at most `n` in
/// a row), each with its sessions' values in the order they were first seen, at most
/// `shape.max_flows` a window; and the (session, window) of each session a full window
/// turned away.
pub fn values(
    packets: &[(u64, PacketInfo)],
    shape: Shape,
) -> (Vec<WindowValues>, Vec<(SessKey, usize)>) {
    let mut order: Vec<usize> = (0..packets.len()).collect();
    order.sort_by_key(|&i| packets[i].0);
    let (mut out, mut turned_away) = (Vec::new(), Vec::new());
    let Some(&first) = order.first() else {
        return (out, turned_away);
    };
    let start = packets[first].0;
    let t = shape.t_ns.max(1);
    let quiet_max = shape.n.clamp(1, MAX_HISTORY) as u64;
    let mut i = 0;
    // The grid's number of the window last written.
    let mut last: Option<u64> = None;
    while i < order.len() {
        let grid = (packets[order[i]].0 - start) / t;
        // The empty windows before it, at most `n` of them: after `n` quiet windows every
        // session is forgotten, and more would only cost memory (a capture's clock may
        // jump by years).
        if let Some(l) = last {
            for _ in 0..(grid - l - 1).min(quiet_max) {
                out.push(Vec::new());
            }
        }
        last = Some(grid);
        let window = out.len();
        let mut index: HashMap<SessKey, Option<usize>, Seeded> = HashMap::default();
        let mut vals: WindowValues = Vec::new();
        while i < order.len() && (packets[order[i]].0 - start) / t == grid {
            let (ts, p) = &packets[order[i]];
            i += 1;
            let mut k = SessKey::default();
            key_into(p, &mut k);
            let slot = *index.entry(k).or_insert_with(|| {
                if vals.len() == shape.max_flows {
                    turned_away.push((k, window));
                    return None;
                }
                vals.push((k, CryptoVal::default()));
                Some(vals.len() - 1)
            });
            if let Some(s) = slot {
                crypto_add(p, *ts, &mut vals[s].1);
            }
        }
        out.push(vals);
    }
    (out, turned_away)
}

/// The samples of a capture's TCP and UDP packets: [`values`] through a [`History`].
pub fn from_packets(packets: &[(u64, PacketInfo)], shape: Shape) -> Windows {
    let (windows, turned_away) = values(packets, shape);
    let mut hist = History::new(shape);
    // (A sample's window is its window's index here: `History` numbers the windows it
    // is given, empty ones included, from 0.)
    let mut servers = std::collections::HashMap::new();
    for (w, vals) in windows.iter().enumerate() {
        for (k, v) in vals {
            servers.insert((w, *k), v.server);
        }
    }
    Windows {
        windows: windows.len(),
        samples: windows.iter().flat_map(|w| hist.window(w)).collect(),
        turned_away,
        servers,
    }
}

/// Every session key of a capture's TCP and UDP packets.
pub fn keys(packets: &[(u64, PacketInfo)]) -> impl Iterator<Item = SessKey> + '_ {
    packets.iter().map(|(_, p)| {
        let mut k = SessKey::default();
        key_into(p, &mut k);
        k
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::windows::session::{judged, FEATURES};

    fn key(sport: u16) -> SessKey {
        let mut k = SessKey {
            family: 4,
            proto: 6,
            sport,
            dport: 3333,
            ..Default::default()
        };
        k.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.daddr[..4].copy_from_slice(&[10, 0, 0, 3]);
        k
    }

    fn val(k: &SessKey, client: u64, server: u64) -> CryptoVal {
        CryptoVal {
            n_packets: client,
            n_packets_reverse: server,
            n_bytes: client * 200,
            n_bytes_reverse: server * 600,
            start_ts: 1_000_000_000,
            alive_ts: 6_000_000_000,
            server: k.daddr,
            method: 3,
            ..Default::default()
        }
    }

    #[test]
    fn features_follow_the_session_over_its_windows() {
        let shape = Shape {
            t_ns: 10_000_000_000,
            n: 4,
            ..Shape::default()
        };
        let mut h = History::new(shape);
        let k = key(40000);
        let s = h.window(&[(k, val(&k, 4, 2))]);
        assert_eq!(s.len(), 1);
        let x = &s[0].x;
        assert_eq!(x.len(), FEATURES);
        assert_eq!(x[0], 0.25); // 1 of 4 windows
        assert_eq!(x[2], 0.4); // 4 client packets in 10 s
        assert_eq!(x[3], 0.2);
        assert_eq!((x[4], x[5]), (200.0, 600.0));
        assert_eq!(x[6], 0.5); // 5 s of 10
        assert_eq!(x[8], 0.0); // one window: no variation
        assert!((x[12] - 2.0 / 6.0).abs() < 1e-6);
        assert!((x[13] - 1200.0 / 2000.0).abs() < 1e-6);
        assert_eq!(x[14], 1.0);
        assert!(!judged(&s[0], shape), "a first window is not judged");
        // Absent a window, then back: the first window left out, the gap counted as zero
        // (the last two windows, with 0 and 6 packets: 1 of 4 windows with packets, mean 3,
        // deviation 3, busiest 6).
        assert!(h.window(&[]).is_empty());
        let s = h.window(&[(k, val(&k, 4, 2))]);
        let x = &s[0].x;
        assert_eq!(x[0], 0.25);
        assert_eq!(x[1], 3.0 / 16.0);
        assert!((x[8] - 1.0).abs() < 1e-6, "{}", x[8]);
        assert!((x[9] - 2.0).abs() < 1e-6);
        assert!(judged(&s[0], shape), "the third window is");
        // The server on the key's saddr side swaps the directions.
        let mut v = val(&k, 4, 2);
        v.server = k.saddr;
        let s = h.window(&[(k, v)]);
        assert_eq!((s[0].x[2], s[0].x[3]), (0.2, 0.4));
        // Quiet for n windows: forgotten, and new again when it returns.
        for _ in 0..4 {
            h.window(&[]);
        }
        assert!(h.is_empty());
        let s = h.window(&[(k, val(&k, 1, 1))]);
        assert_eq!(s[0].x[1], 1.0 / 16.0);
    }

    #[test]
    fn a_clock_jump_costs_at_most_n_empty_windows() {
        let pkt = |sport: u16| {
            let mut p = PacketInfo {
                status: statewall_common::parse::Status::Ip as u8,
                family: 4,
                l4proto: 6,
                sport,
                dport: 3333,
                ip_len: 100,
                ..Default::default()
            };
            p.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
            p.daddr[..4].copy_from_slice(&[10, 0, 0, 3]);
            p
        };
        let shape = Shape {
            t_ns: 1_000_000_000,
            n: 4,
            ..Shape::default()
        };
        // Windows 0 and 2 (one empty between), then a jump to the end of time.
        let packets = [(1_000, pkt(1)), (2_000_001_000, pkt(1)), (u64::MAX, pkt(2))];
        let (w, away) = values(&packets, shape);
        assert!(away.is_empty());
        let sizes: Vec<usize> = w.iter().map(|v| v.len()).collect();
        assert_eq!(sizes, [1, 0, 1, 0, 0, 0, 0, 1]);
        let ws = from_packets(&packets, shape);
        assert_eq!((ws.windows, ws.samples.len()), (8, 3));
    }
}
