//! The detect stage: its blocks and allowlist under BPF_PROG_TEST_RUN against a reference
//! that finds the longest matching prefix by a linear scan; and, end to end between
//! namespaces the test creates, floods from spoofed sources (10.100.0.0/14, inside a
//! namespace with no default route) detected and countered by the in-kernel detectors,
//! while a legitimate client keeps its connections, in `enforce` and in `monitor` mode.

mod common;

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{lpm_trie::Key, LpmTrie, MapData, PerCpuArray, PerCpuValues};
use common::{cli, eventually, follow_events, raw_socket, send_raw, soak_cases, Daemon, Paths};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use statewall::{
    detect::Prefix,
    engine::ebpf::{PROG_DETECT, PROG_XDP_INGRESS},
};
use statewall_common::{
    detect::{
        Block, DestKey, DestMit, SynKey, COUNTERS, C_ALLOWED, C_BLOCKED, MAP_ALLOW, MAP_BLOCK,
        MAP_COUNT, MAP_DEST, MAP_SYNS, SLOT_DESTS,
    },
    TCX_NEXT, TC_ACT_SHOT, XDP_DROP, XDP_PASS,
};
use statewall_harness::{
    dataset,
    netns::{spawn, Pair, Reaped},
    packet::Packet,
    testrun::TestBed,
};

fn key(p: &Prefix) -> Key<[u8; 20]> {
    let (len, data) = p.lpm_key();
    Key::new(len, data)
}

/// A random prefix around the addresses the test draws from (10.100.0.0/14 and
/// fd00:100::/32), of any length down to /8 (/16 for IPv6).
fn random_prefix(rng: &mut StdRng) -> Prefix {
    let a = random_addr(rng);
    let len = if a.is_ipv4() {
        rng.random_range(8..=32)
    } else {
        rng.random_range(16..=128)
    };
    Prefix::new(a, len)
}

/// A source from a small space, so that drawn prefixes and addresses meet often.
fn random_addr(rng: &mut StdRng) -> IpAddr {
    if rng.random_bool(0.75) {
        IpAddr::from([
            10,
            rng.random_range(100..104),
            rng.random_range(0..4),
            rng.random_range(0..8),
        ])
    } else {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[0xfd, 0, 1, 0]);
        b[15] = rng.random_range(0..8);
        b[7] = rng.random_range(0..2);
        IpAddr::from(b)
    }
}

/// The reference: the allowlist first; then the longest block containing the source,
/// dropping while it has not expired.
fn reference(allow: &[Prefix], blocks: &[(Prefix, u64)], src: IpAddr, now: u64) -> Option<usize> {
    if allow.iter().any(|a| a.contains(src)) {
        return None;
    }
    let best = blocks
        .iter()
        .enumerate()
        .filter(|(_, (p, _))| p.contains(src))
        .max_by_key(|(_, (p, _))| p.len)?;
    let exp = best.1 .1;
    (exp == 0 || now < exp).then_some(best.0)
}

/// Makes the kernel's allowlist exactly `allow`.
fn set_allowlist(bed: &mut TestBed, allow: &[Prefix]) {
    let mut t: LpmTrie<&mut MapData, [u8; 20], u8> = bed.map(MAP_ALLOW).try_into().unwrap();
    let old: Vec<_> = t.keys().filter_map(|k| k.ok()).collect();
    for k in old {
        t.remove(&k).unwrap();
    }
    for a in allow {
        t.insert(&key(a), 1, 0).unwrap();
    }
}

fn counters(bed: &mut TestBed) -> Vec<u64> {
    let a: PerCpuArray<&MapData, u64> = (&*bed.map(MAP_COUNT)).try_into().unwrap();
    (0..COUNTERS)
        .map(|i| a.get(&i, 0).unwrap().iter().sum())
        .collect()
}

/// Random blocks (some expired, some without expiry) and allowlists; random packets from
/// the same addresses, TCP, UDP and ICMP, IPv4 and IPv6, through `sw_detect` (tc) and the
/// XDP ingress program: every verdict equals the reference's, and each block's drop count
/// and the stage's counters add up.
#[test]
fn blocks_and_allowlist_equal_the_reference_on_random_prefixes() {
    let mut bed = TestBed::new();
    // The kernel's clock stands still at `now`.
    let now = 1_000_000_000_000;
    bed.freeze(now);
    let cases = soak_cases(12);
    let (mut dropped_total, mut sent) = (0u64, 0u64);
    for case in 0..cases {
        let mut rng = StdRng::seed_from_u64(0xdec7 + case as u64);
        let allow: Vec<Prefix> = (0..rng.random_range(0..3))
            .map(|_| random_prefix(&mut rng))
            .collect();
        let mut blocks: Vec<(Prefix, u64)> = Vec::new();
        for _ in 0..rng.random_range(1..8) {
            let p = random_prefix(&mut rng);
            if blocks.iter().any(|(b, _)| *b == p) {
                continue;
            }
            let exp = match rng.random_range(0..3) {
                0 => 0,
                1 => now - 1,
                _ => now + 1_000_000_000,
            };
            blocks.push((p, exp));
        }
        set_allowlist(&mut bed, &allow);
        {
            let mut t: LpmTrie<&mut MapData, [u8; 20], Block> =
                bed.map(MAP_BLOCK).try_into().unwrap();
            let old: Vec<_> = t.keys().filter_map(|k| k.ok()).collect();
            for k in old {
                t.remove(&k).unwrap();
            }
            for (p, exp) in &blocks {
                let b = Block {
                    expires_ns: *exp,
                    ..Default::default()
                };
                t.insert(&key(p), b, 0).unwrap();
            }
        }
        let before = counters(&mut bed);
        let mut want = vec![0u64; blocks.len()];
        let mut allowed_hits = 0;
        for i in 0..300 {
            let src = random_addr(&mut rng);
            let dst: IpAddr = if src.is_ipv4() {
                "10.77.0.2".parse().unwrap()
            } else {
                "fd00:77::2".parse().unwrap()
            };
            let f = match rng.random_range(0..3) {
                0 => Packet::tcp(src, dst, 40000, 80, 0x02),
                1 => Packet::udp(src, dst, 53, 9999),
                _ => Packet::echo_request(src, dst, 7),
            }
            .build();
            let r = reference(&allow, &blocks, src, now);
            let xdp = i % 2 == 1;
            let got_drop = if xdp {
                let v = bed.run_xdp(PROG_XDP_INGRESS, &f);
                assert!(v == XDP_DROP || v == XDP_PASS, "{v}");
                v == XDP_DROP
            } else {
                let v = bed.run_tc(PROG_DETECT, &f);
                assert!(v == TC_ACT_SHOT || v == TCX_NEXT, "{v}");
                v == TC_ACT_SHOT
            };
            assert_eq!(
                got_drop,
                r.is_some(),
                "case {case} packet {i} from {src} (xdp {xdp}): allow {allow:?} blocks {blocks:?}"
            );
            if let Some(b) = r {
                want[b] += 1;
            }
            let in_block = blocks.iter().any(|(p, _)| p.contains(src));
            if in_block && allow.iter().any(|a| a.contains(src)) {
                allowed_hits += 1;
            }
            sent += 1;
        }
        let t: LpmTrie<&mut MapData, [u8; 20], Block> = bed.map(MAP_BLOCK).try_into().unwrap();
        for ((p, _), w) in blocks.iter().zip(&want) {
            let got = t.get(&key(p), 0).unwrap().dropped;
            assert_eq!(got, *w, "case {case}: drops counted in {p}");
        }
        let after = counters(&mut bed);
        let total: u64 = want.iter().sum();
        assert_eq!(
            after[C_BLOCKED as usize] - before[C_BLOCKED as usize],
            total
        );
        assert_eq!(
            after[C_ALLOWED as usize] - before[C_ALLOWED as usize],
            allowed_hits
        );
        dropped_total += total;
    }
    assert!(
        dropped_total > 0 && dropped_total < sent,
        "{dropped_total} of {sent} dropped: the draw meets both sides"
    );
    common::tally("detect: test-run packets against the reference", sent);
}

/// One destination mitigation of the reference, with its own counts.
#[derive(Clone, Debug)]
struct RefDest {
    addr: IpAddr,
    proto: u8,
    port: u16,
    len: u16,
    mode: u32,
    limit: u32,
    expires: u64,
    second: u64,
    passed: u64,
    dropped: u64,
}

/// The reference of the destination mitigations: whether `frame` (from `src` to `dst`,
/// protocol `l4`, TCP flags `flags`, ports) is dropped at `now`. Written from the rules in
/// `statewall_common::detect`, not from the kernel's code: the IP length is read from the
/// frame's header, the matching entry found by a scan.
#[allow(clippy::too_many_arguments)]
fn dest_reference(
    table: &mut [RefDest],
    held: &mut std::collections::HashMap<(IpAddr, u16, IpAddr, u16), u64>,
    allow: &[Prefix],
    frame: &[u8],
    (src, dst, l4, flags, sport, dport): (IpAddr, IpAddr, u8, u8, u16, u16),
    now: u64,
) -> bool {
    let ip_len = if dst.is_ipv4() {
        u16::from_be_bytes([frame[16], frame[17]])
    } else {
        u16::from_be_bytes([frame[18], frame[19]]) + 40
    };
    let port = match l4 {
        6 if flags & 0x12 == 0x02 => dport,
        17 => dport,
        1 | 58 => 0,
        _ => return false,
    };
    let pick = |len: u16| {
        table
            .iter()
            .position(|d| (d.addr, d.proto, d.port, d.len) == (dst, l4, port, len))
    };
    let Some(i) = pick(ip_len).or_else(|| pick(0)) else {
        return false;
    };
    let d = &mut table[i];
    if (d.expires != 0 && now >= d.expires) || allow.iter().any(|a| a.contains(src)) {
        return false;
    }
    let pass = match d.mode {
        1 => {
            if d.second != now / 1_000_000_000 {
                d.second = now / 1_000_000_000;
                d.passed = 0;
            }
            d.passed += 1;
            d.passed <= d.limit as u64
        }
        2 if l4 == 6 => {
            let k = (src, sport, dst, dport);
            match held.get(&k) {
                Some(t) if (500_000_000..=10_000_000_000).contains(&(now - t)) => {
                    held.remove(&k);
                    true
                }
                _ => {
                    held.insert(k, now);
                    false
                }
            }
        }
        _ => false,
    };
    if !pass {
        d.dropped += 1;
    }
    !pass
}

fn dest_key(d: &RefDest) -> DestKey {
    let mut addr = [0u8; 16];
    let family = match d.addr {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            6
        }
    };
    DestKey {
        family,
        proto: d.proto,
        port: d.port,
        len: d.len,
        _pad: 0,
        addr,
    }
}

/// Random destination tables (drop, rate and SYN-verifying entries, with and without a
/// length, some expired) and allowlists; random packets to their addresses, ports and
/// lengths (TCP SYNs, SYN-ACKs and ACKs, UDP, ICMP; IPv4 and IPv6) while the frozen clock
/// moves on in steps across seconds and the 0.5 to 10 s in which a held SYN's
/// retransmission is admitted, through `sw_detect` and
/// the XDP ingress program: every verdict and every entry's drop count equals the
/// reference's; with the control word at 0, nothing is looked up or dropped.
#[test]
fn destinations_equal_the_reference_on_random_packets() {
    let mut bed = TestBed::new();
    let mut now = 2_000_000_000_000;
    bed.freeze(now);
    let cpus = aya::util::nr_cpus().unwrap();
    let addrs: [IpAddr; 3] = [
        "10.77.0.2".parse().unwrap(),
        "10.77.0.3".parse().unwrap(),
        "fd00:77::2".parse().unwrap(),
    ];
    let (mut dropped, mut sent) = (0u64, 0u64);
    for case in 0..soak_cases(12) {
        let mut rng = StdRng::seed_from_u64(0xde57 + case as u64);
        let allow: Vec<Prefix> = (0..rng.random_range(0..2))
            .map(|_| Prefix::new(random_addr(&mut rng), 32))
            .filter(|p| p.addr.is_ipv4())
            .collect();
        let mut table: Vec<RefDest> = Vec::new();
        for _ in 0..rng.random_range(1..7) {
            let proto = [6u8, 17, 1][rng.random_range(0..3)];
            let addr = addrs[rng.random_range(0..3)];
            let proto = if addr.is_ipv6() && proto == 1 {
                58
            } else {
                proto
            };
            let port = if proto == 6 || proto == 17 {
                [53u16, 8080][rng.random_range(0..2)]
            } else {
                0
            };
            let d = RefDest {
                addr,
                proto,
                port,
                len: [0u16, 0, 92, 112][rng.random_range(0..4)],
                mode: rng.random_range(0..3),
                limit: rng.random_range(0..4),
                expires: [0, now - 1, now + 60_000_000_000][rng.random_range(0..3)],
                second: 0,
                passed: 0,
                dropped: 0,
            };
            if !table.iter().any(|t| dest_key(t) == dest_key(&d)) {
                table.push(d);
            }
        }
        let enabled = case % 5 != 4;
        set_allowlist(&mut bed, &allow);
        {
            let mut h: aya::maps::HashMap<&mut MapData, DestKey, DestMit> =
                bed.map(MAP_DEST).try_into().unwrap();
            let old: Vec<_> = h.keys().filter_map(|k| k.ok()).collect();
            for k in old {
                h.remove(&k).unwrap();
            }
            for d in &table {
                let m = DestMit {
                    expires_ns: d.expires,
                    mode: d.mode,
                    limit: d.limit,
                    ..Default::default()
                };
                h.insert(dest_key(d), m, 0).unwrap();
            }
        }
        {
            let mut h: aya::maps::HashMap<&mut MapData, SynKey, u64> =
                bed.map(MAP_SYNS).try_into().unwrap();
            let old: Vec<_> = h.keys().filter_map(|k| k.ok()).collect();
            for k in old {
                h.remove(&k).unwrap();
            }
            let mut a: PerCpuArray<&mut MapData, u64> = bed.map(MAP_COUNT).try_into().unwrap();
            let n = if enabled { table.len() as u64 } else { 0 };
            a.set(
                SLOT_DESTS,
                PerCpuValues::try_from(vec![n; cpus]).unwrap(),
                0,
            )
            .unwrap();
        }
        let mut held = std::collections::HashMap::new();
        for i in 0..300 {
            if rng.random_range(0..6) == 0 {
                now += rng.random_range(100_000_000..1_600_000_000);
                bed.freeze(now);
            } else if rng.random_range(0..60) == 0 {
                // Across the 10 s a held SYN waits at most.
                now += rng.random_range(9_000_000_000..11_000_000_000);
                bed.freeze(now);
            }
            let d = &table[rng.random_range(0..table.len())];
            let dst = d.addr;
            let src = if rng.random_range(0..8) == 0 && !allow.is_empty() && dst.is_ipv4() {
                allow[0].addr
            } else if rng.random_bool(0.5) {
                // A few sources that come back: SYNs sent again, within and after 3 s.
                let n = rng.random_range(1..3u8);
                if dst.is_ipv4() {
                    IpAddr::from([10, 100, 9, n])
                } else {
                    IpAddr::from([0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, n])
                }
            } else {
                let a = random_addr(&mut rng);
                match (a, dst) {
                    (IpAddr::V4(_), IpAddr::V6(_)) => "fd00:1::5".parse().unwrap(),
                    (IpAddr::V6(_), IpAddr::V4(_)) => "10.100.0.5".parse().unwrap(),
                    _ => a,
                }
            };
            let sport = 40000;
            let port = if d.port != 0 { d.port } else { 53 };
            let payload = [0u8, 44, 64][rng.random_range(0..3)] as usize;
            let flags = [0x02u8, 0x02, 0x12, 0x10][rng.random_range(0..4)];
            let l4 = [d.proto, d.proto, 6, 17][rng.random_range(0..4)];
            let pk = match l4 {
                6 => Packet::tcp(src, dst, sport, port, flags),
                17 => Packet::udp(src, dst, sport, port).payload(&vec![0u8; payload]),
                _ => Packet::echo_request(src, dst, 7).payload(&vec![0u8; payload]),
            };
            let f = pk.build();
            let l4 = if l4 == 1 && dst.is_ipv6() { 58 } else { l4 };
            let want = enabled
                && dest_reference(
                    &mut table,
                    &mut held,
                    &allow,
                    &f,
                    (src, dst, l4, flags, sport, port),
                    now,
                );
            let xdp = i % 2 == 1;
            let got = if xdp {
                bed.run_xdp(PROG_XDP_INGRESS, &f) == XDP_DROP
            } else {
                bed.run_tc(PROG_DETECT, &f) == TC_ACT_SHOT
            };
            assert_eq!(
                got, want,
                "case {case} packet {i}: {src} -> {dst} proto {l4} flags {flags:#x} port {port} \
                 payload {payload} (xdp {xdp}) table {table:?}"
            );
            dropped += want as u64;
            sent += 1;
        }
        let h: aya::maps::HashMap<&mut MapData, DestKey, DestMit> =
            bed.map(MAP_DEST).try_into().unwrap();
        for d in &table {
            let got = h.get(&dest_key(d), 0).unwrap().dropped;
            assert_eq!(got, d.dropped, "case {case}: drops counted in {d:?}");
        }
    }
    assert!(
        dropped > sent / 10 && dropped < sent * 9 / 10,
        "{dropped} of {sent} dropped: the draw meets both sides"
    );
    common::tally(
        "detect: destination test-run packets against the reference",
        sent,
    );
}

/// A daemon with `[detect]` = `detect` on the server side of a fresh pair.
struct Bed {
    // Fields drop in this order: the daemon stops before its pins are torn down (a daemon
    // still running could pin again what the teardown removed).
    d: Daemon,
    pair: Pair,
    p: Paths,
    /// The server veth's MAC (spoofed frames must be for it to reach a socket).
    mac: [u8; 6],
}

fn bed(tag: &str, detect: &str) -> Bed {
    bed_on(tag, "tcx", detect)
}

/// As [`bed`], with the interface's ingress stages on `ingress` (`tcx` or `xdp`).
fn bed_on(tag: &str, ingress: &str, detect: &str) -> Bed {
    bed_of(tag, |pair| {
        format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\ningress = \"{ingress}\"\n\n[detect]\n{detect}\n",
            pair.server_if, pair.server.name
        )
    })
}

/// A daemon on the server side of a fresh pair, with the config `config` writes for it.
fn bed_of(tag: &str, config: impl FnOnce(&Pair) -> String) -> Bed {
    bed_with(tag, &[], config)
}

/// As [`bed_of`], the daemon started with `args`.
fn bed_with(tag: &str, args: &[&str], config: impl FnOnce(&Pair) -> String) -> Bed {
    let pair = Pair::new(tag);
    let p = Paths::new(tag);
    std::fs::write(&p.config, config(&pair)).unwrap();
    let d = Daemon::start(&p, args);
    let text = pair
        .server
        .exec_ok(&["cat", &format!("/sys/class/net/{}/address", pair.server_if)]);
    let mut mac = [0u8; 6];
    for (i, h) in text.trim().split(':').enumerate() {
        mac[i] = u8::from_str_radix(h, 16).unwrap();
    }
    Bed { p, pair, d, mac }
}

/// A counter of the server namespace's `/proc/net/snmp` (`Udp InDatagrams`, ...).
fn snmp(b: &Bed, group: &str, field: &str) -> u64 {
    proc_net(b, "snmp", group, field)
}

/// A counter of the server namespace's `/proc/net/<file>` (`snmp`, `netstat`).
fn proc_net(b: &Bed, file: &str, group: &str, field: &str) -> u64 {
    let text = b
        .pair
        .server
        .exec_ok(&["cat", &format!("/proc/net/{file}")]);
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names.split_whitespace().position(|n| n == field).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// What the server has received of one kind: UDP datagrams (delivered, to closed ports,
/// or in error), ICMP echo requests, TCP segments.
fn received(b: &Bed, kind: &str) -> u64 {
    match kind {
        "udp" => ["InDatagrams", "NoPorts", "InErrors"]
            .iter()
            .map(|f| snmp(b, "Udp", f))
            .sum(),
        "icmp" => snmp(b, "Icmp", "InEchos"),
        _ => snmp(b, "Tcp", "InSegs"),
    }
}

/// The `n`-th flood frame of `kind` (`syn`, `udp`, `icmp`, `reflection`) from a spoofed
/// source in `from` (10.100.0.0/14 unless told), for the server's MAC.
fn flood_frame(b: &Bed, kind: &str, rng: &mut StdRng, from: [u8; 2]) -> Vec<u8> {
    let src = IpAddr::from([
        from[0],
        from[1] + rng.random_range(0..4),
        rng.random(),
        rng.random(),
    ]);
    let dst = IpAddr::from(b.pair.server_v4);
    let p = match kind {
        "syn" => Packet::tcp(src, dst, rng.random_range(1024..65535), 8080, 0x02),
        "udp" => Packet::udp(src, dst, rng.random_range(1024..65535), 9999).payload(&[0u8; 64]),
        "icmp" => Packet::echo_request(src, dst, rng.random()),
        _ => Packet::udp(src, dst, 53, rng.random_range(1024..65535)).payload(&[0u8; 400]),
    };
    let mut f = p.build();
    f[..6].copy_from_slice(&b.mac);
    f
}

/// Sends `n` flood frames at about 4,000 a second (bursts of 100 every 25 ms) while
/// `during` runs once and then every 100 ms; the frames sent.
fn flood(b: &Bed, kind: &str, n: u64, from: [u8; 2], during: impl Fn() + Sync) -> u64 {
    let seed = n ^ kind.len() as u64;
    flood_of(b, n, seed, |rng, _| flood_frame(b, kind, rng, from), during)
}

/// As [`flood`], frame `i` made by `frame`.
fn flood_of(
    b: &Bed,
    n: u64,
    seed: u64,
    mut frame: impl FnMut(&mut StdRng, u64) -> Vec<u8> + Send,
    during: impl Fn() + Sync,
) -> u64 {
    let fd = b.pair.client.run(|| raw_socket(&b.pair.client_if));
    let stop = AtomicBool::new(false);
    let sent = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut sent = 0;
            while sent < n {
                for _ in 0..100 {
                    send_raw(&fd, &frame(&mut rng, sent));
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            stop.store(true, Ordering::Relaxed);
            sent
        });
        while !stop.load(Ordering::Relaxed) {
            during();
            std::thread::sleep(Duration::from_millis(100));
        }
        t.join().unwrap()
    });
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
    sent
}

fn mitigations(d: &Daemon) -> Vec<Value> {
    d.get("/api/v1/detect")["mitigations"]
        .as_array()
        .unwrap()
        .clone()
}

/// The allowlist in force, as GET /api/v1/detect shows it.
fn allowlist_in_force(d: &Daemon) -> Vec<String> {
    d.get("/api/v1/detect")["allowlist_in_force"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn row<'a>(ms: &'a [Value], detector: &str) -> Option<&'a Value> {
    ms.iter().find(|m| m["detector"] == detector)
}

/// A TCP echo server on the server's port 7 and a client that must get every round trip
/// through.
struct Legit {
    to: SocketAddr,
    _l: std::thread::JoinHandle<()>,
}

fn legit(b: &Bed) -> Legit {
    let sv = b.pair.server_v4;
    let l = b.pair.server.run(|| TcpListener::bind((sv, 7))).unwrap();
    let h = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut buf = [0u8; 64];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    Legit {
        to: SocketAddr::from((sv, 7)),
        _l: h,
    }
}

impl Legit {
    /// One connection and one round trip; how long it took.
    fn round_trip(&self, b: &Bed) -> Duration {
        use std::io::{Read, Write};
        let t = Instant::now();
        b.pair.client.run(|| {
            let mut s = TcpStream::connect_timeout(&self.to, Duration::from_secs(4))
                .expect("the legitimate client connects");
            s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).expect("and gets its answer");
            assert_eq!(&buf, b"ping");
        });
        t.elapsed()
    }
}

/// `enforce`: a UDP flood, an ICMP flood and a reflected flood (UDP from port 53), each
/// from spoofed sources at about 4,000 packets a second against a threshold of 200: the
/// mitigation appears with its reason and the destination, the flood reaches the server
/// at about the threshold (one window's worth beyond it at most per second), a legitimate
/// TCP client gets every round trip through, and the mitigation ends 2 s (the expiry)
/// after the flood.
#[test]
fn floods_are_held_to_their_threshold_and_released_after_they_end() {
    let b = bed(
        "dtf",
        "mode = \"enforce\"\nexpiry = \"2s\"\nsyn_flood.threshold = 200\n\
         udp_flood.threshold = 200\nicmp_flood.threshold = 200\nreflection.threshold = 200\n",
    );
    let events = follow_events(&b.d.socket, "/api/v1/events");
    let lg = legit(&b);
    let server = b.pair.server_v4.to_string();
    for (kind, detector, counted) in [
        ("udp", "udp_flood", "udp"),
        ("icmp", "icmp_flood", "icmp"),
        ("reflection", "reflection", "udp"),
    ] {
        let before = received(&b, counted);
        let t0 = Instant::now();
        let sent = flood(&b, kind, 6000, [10, 100], || {
            lg.round_trip(&b);
        });
        let secs = t0.elapsed().as_secs_f64();
        let got = received(&b, counted) - before;
        let ms = mitigations(&b.d);
        let m = row(&ms, detector)
            .unwrap_or_else(|| panic!("{kind}: no {detector} mitigation in {ms:?}"));
        assert_eq!(m["target"], server.as_str(), "{m}");
        assert_eq!(m["scope"], "destination");
        assert!(
            m["reason"].as_str().unwrap().contains("threshold 200/s"),
            "{m}"
        );
        let dropped = m["dropped"].as_u64().unwrap();
        // The threshold per window, the window in which it fired, and one more for a
        // window boundary at either end.
        let bound = 200 * (secs.ceil() as u64 + 2);
        assert!(
            got <= bound,
            "{kind}: {got} of {sent} reached the server in {secs:.1}s (bound {bound})"
        );
        assert!(
            dropped + got >= sent * 9 / 10,
            "{kind}: {dropped} dropped, {got} received of {sent}"
        );
        eprintln!("{kind}: {sent} sent in {secs:.1}s, {got} reached the server, {dropped} dropped");
        // The flood is over: the mitigation ends after its expiry (2 s from the last
        // re-arm, at most a second before the flood's last packet), not before.
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            row(&mitigations(&b.d), detector).is_some(),
            "{kind}: ended before its expiry"
        );
        eventually(&format!("{kind}: mitigation expired"), || {
            row(&mitigations(&b.d), detector).is_none()
        });
        lg.round_trip(&b);
    }
    let ev = events.lock().unwrap().clone();
    for machine in ["detect-udp", "detect-icmp", "detect-reflection"] {
        assert!(
            ev.iter().any(|e| e["door"] == machine
                && e["to"] == "FLOOD"
                && e["registers"]["count"].as_u64() >= Some(200)),
            "no {machine} event into FLOOD with the count that fired it: {ev:?}"
        );
    }
    assert!(common::logs(&b.p).contains("detect: flood detected"));
}

/// `enforce`, DNS reflection through a real resolver: nping sends 8,000 queries whose
/// source is the server (the victim) to a dnsmasq in the client namespace (`--rate 2000`;
/// it sends them faster here), and dnsmasq answers each to the server with a large TXT
/// record from port 53. The
/// reflection detector (threshold 200/s; the UDP-flood detector off, so that the
/// reflection one is the one that acts) mitigates the server with its reason, the answers
/// reach the server at about the threshold, a legitimate TCP client's round trips go on,
/// and the mitigation ends after its expiry (5 s).
#[test]
fn a_dns_reflection_through_dnsmasq_is_held_and_released() {
    let b = bed(
        "dtd",
        "mode = \"enforce\"\nexpiry = \"5s\"\nreflection.threshold = 200\n\
         udp_flood = { enabled = false }\n",
    );
    let dir = std::env::temp_dir().join(format!("statewall-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dns: Vec<Reaped> = statewall_harness::apps::dns_servers(&b.pair, &dir)
        .into_iter()
        .map(Reaped)
        .collect();
    let lg = legit(&b);
    lg.round_trip(&b);
    let query = statewall_harness::apps::query(0x5151, "amp.example", 16);
    let hex: String = query.iter().map(|x| format!("{x:02x}")).collect();
    let server = b.pair.server_v4.to_string();
    let (rate, secs) = (2000u64, 4u64);
    let before = received(&b, "udp");
    let t0 = Instant::now();
    let mut nping = Reaped(spawn(&mut b.pair.client.command(&[
        "nping",
        "-q",
        "--udp",
        "-S",
        &server,
        "-g",
        "40000",
        "-p",
        "53",
        "--data",
        &hex,
        "--rate",
        &rate.to_string(),
        "-c",
        &(rate * secs).to_string(),
        statewall_harness::apps::REFLECTOR,
    ])));
    let mut seen = None;
    while nping.0.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "nping did not end");
        lg.round_trip(&b);
        let ms = mitigations(&b.d);
        if let Some(m) = row(&ms, "reflection") {
            seen = Some(m.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs_run = t0.elapsed().as_secs_f64();
    let got = received(&b, "udp") - before;
    let m = seen.unwrap_or_else(|| panic!("no reflection mitigation: {:?}", mitigations(&b.d)));
    assert_eq!(m["target"], server.as_str(), "{m}");
    assert_eq!(m["scope"], "destination");
    let reason = m["reason"].as_str().unwrap();
    assert!(
        reason.contains("amplifier ports") && reason.contains("threshold 200/s"),
        "{m}"
    );
    // The flood just ended: the mitigation is still there (5 s of expiry from its last
    // re-arm), with its drops.
    let dropped = row(&mitigations(&b.d), "reflection")
        .map(|m| m["dropped"].as_u64().unwrap())
        .expect("the mitigation ended before its expiry");
    let bound = 200 * (secs_run.ceil() as u64 + 2);
    eprintln!(
        "reflection through dnsmasq: {} queries in {secs_run:.1}s, {got} answers reached the server, {dropped} dropped: {reason}",
        rate * secs
    );
    assert!(
        got <= bound,
        "{got} answers reached the server (bound {bound})"
    );
    assert!(
        dropped + got >= rate * secs / 2,
        "{dropped} dropped and {got} received of {} queries answered",
        rate * secs
    );
    eventually("the reflection mitigation expired", || {
        row(&mitigations(&b.d), "reflection").is_none()
    });
    lg.round_trip(&b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `enforce`, SYN flood: spoofed SYNs to a listening port at about 4,000 a second against a
/// threshold of 200; the mitigation appears with its reason, every legitimate connection
/// opens (on its SYN's retransmission), the flood's SYNs are held (counted as dropped in
/// the mitigation), and `statewall detect release` ends the mitigation by hand. A second
/// flood brings it back, and it ends by itself its expiry (6 s) after that flood.
#[test]
fn a_syn_flood_is_held_and_clients_connect_on_retransmission() {
    let b = bed(
        "dts",
        "mode = \"enforce\"\nexpiry = \"6s\"\nsyn_flood.threshold = 200\n",
    );
    let sv = b.pair.server_v4;
    let _l = b.pair.server.run(|| TcpListener::bind((sv, 8080))).unwrap();
    let lg = legit(&b);
    let slow = std::sync::atomic::AtomicU64::new(0);
    let before = received(&b, "tcp");
    let sent = flood(&b, "syn", 8000, [10, 100], || {
        if lg.round_trip(&b) > Duration::from_millis(800) {
            slow.fetch_add(1, Ordering::Relaxed);
        }
    });
    let got = received(&b, "tcp") - before;
    let ms = mitigations(&b.d);
    let m = row(&ms, "syn_flood").unwrap_or_else(|| panic!("no syn_flood mitigation: {ms:?}"));
    assert_eq!(m["target"], sv.to_string().as_str());
    assert!(
        m["reason"].as_str().unwrap().contains("threshold 200/s"),
        "{m}"
    );
    let dropped = m["dropped"].as_u64().unwrap();
    assert!(
        dropped * 10 >= sent * 8,
        "{dropped} of {sent} spoofed SYNs held"
    );
    assert!(
        got * 5 <= sent,
        "{got} TCP segments reached the server of {sent} SYNs sent"
    );
    assert!(
        slow.load(Ordering::Relaxed) >= 1,
        "no connection waited for a retransmission"
    );
    eprintln!("syn flood: {sent} SYNs, {dropped} held, {got} segments reached the server");
    let (rc, out, err) = cli(&b.p, &["detect", "list"]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("syn_flood") && out.contains(&sv.to_string()),
        "{out}"
    );
    let (rc, _, err) = cli(&b.p, &["detect", "release", &sv.to_string()]);
    assert_eq!(rc, 0, "{err}");
    assert!(row(&mitigations(&b.d), "syn_flood").is_none());
    // Released: a connection opens at once.
    assert!(lg.round_trip(&b) < Duration::from_millis(800));
    // Again, left to its expiry: there half a second after the flood, then gone.
    flood(&b, "syn", 4000, [10, 100], || {});
    assert!(row(&mitigations(&b.d), "syn_flood").is_some(), "not back");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        row(&mitigations(&b.d), "syn_flood").is_some(),
        "ended before its expiry"
    );
    eventually("the SYN-flood mitigation expired", || {
        row(&mitigations(&b.d), "syn_flood").is_none()
    });
    assert!(lg.round_trip(&b) < Duration::from_millis(800));
}

/// `monitor`: the same floods (UDP, ICMP, reflected, SYN) are detected and reported (row
/// with its reason, packets over the threshold counted) and nothing is dropped; each
/// report ends after the flood.
#[test]
fn monitor_mode_reports_the_flood_and_drops_nothing() {
    let b = bed(
        "dtm",
        "expiry = \"2s\"\nudp_flood.threshold = 200\nicmp_flood.threshold = 200\n\
         reflection.threshold = 200\nsyn_flood.threshold = 200\n",
    );
    let sv = b.pair.server_v4;
    let _l = b.pair.server.run(|| TcpListener::bind((sv, 8080))).unwrap();
    let lg = legit(&b);
    for (kind, detector, counted) in [
        ("udp", "udp_flood", "udp"),
        ("icmp", "icmp_flood", "icmp"),
        ("reflection", "reflection", "udp"),
        ("syn", "syn_flood", "tcp"),
    ] {
        let before = received(&b, counted);
        let sent = flood(&b, kind, 6000, [10, 100], || {
            lg.round_trip(&b);
        });
        let ms = mitigations(&b.d);
        let got = received(&b, counted) - before;
        // (The legitimate client's segments are TCP too.)
        if counted == "tcp" {
            assert!(
                got >= sent,
                "{kind}: monitor mode dropped {} of {sent}",
                sent - got
            );
        } else {
            assert_eq!(
                got,
                sent,
                "{kind}: monitor mode dropped {} of {sent}",
                sent - got
            );
        }
        let m = row(&ms, detector).unwrap_or_else(|| panic!("{kind}: not reported: {ms:?}"));
        assert!(
            m["reason"].as_str().unwrap().contains("threshold 200/s"),
            "{m}"
        );
        assert!(
            m["dropped"].as_u64().unwrap() > 1000,
            "{kind}: packets over the threshold: {m}"
        );
        eprintln!("{kind}: {sent} sent, {got} received, reported {m}");
        eventually(&format!("{kind}: report ended"), || {
            row(&mitigations(&b.d), detector).is_none()
        });
    }
    assert_eq!(b.d.get("/api/v1/detect")["mode"], "monitor");
}

/// The gateways of the watched namespace join the allowlist (`allow_gateways`, the
/// default): a route through 10.77.0.254 added to the server's namespace is in force after
/// a reload, a UDP flood spoofing that address is neither counted nor dropped (the same
/// flood from spoofed sources that are no gateway is held), and a block of it is refused.
#[test]
fn the_gateway_joins_the_allowlist() {
    let b = bed(
        "dtg",
        "mode = \"enforce\"\nexpiry = \"2s\"\nudp_flood.threshold = 200\n",
    );
    let in_force = || allowlist_in_force(&b.d);
    assert!(!in_force().contains(&"10.77.0.254/32".to_string()));
    b.pair.server.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.200.0.0/16",
        "via",
        "10.77.0.254",
        "dev",
        &b.pair.server_if,
    ]);
    b.d.ok("POST", "/api/v1/reload", "");
    let list = in_force();
    assert!(list.contains(&"10.77.0.254/32".to_string()), "{list:?}");
    let before = received(&b, "udp");
    let gw = IpAddr::from([10, 77, 0, 254]);
    let dst = IpAddr::from(b.pair.server_v4);
    let sent = flood_of(
        &b,
        6000,
        7,
        |rng, _| {
            let mut f = Packet::udp(gw, dst, rng.random_range(1024..65535), 9999)
                .payload(&[0u8; 64])
                .build();
            f[..6].copy_from_slice(&b.mac);
            f
        },
        || {},
    );
    let got = received(&b, "udp") - before;
    assert_eq!(got, sent, "the gateway's packets dropped: {}", sent - got);
    let ms = mitigations(&b.d);
    assert!(row(&ms, "udp_flood").is_none(), "{ms:?}");
    let (rc, _, err) = cli(&b.p, &["detect", "block", "10.77.0.254"]);
    assert_ne!(rc, 0, "a block of the gateway was taken");
    assert!(err.contains("allowlist"), "{err}");
    // The same flood from sources that are no gateway is held.
    flood(&b, "udp", 6000, [10, 100], || {});
    let ms = mitigations(&b.d);
    assert!(row(&ms, "udp_flood").is_some(), "{ms:?}");
}

/// The admins' addresses join the allowlist (`allow_admins`, the default): an ssh login
/// with a terminal from the client (10.77.0.1) to a real OpenSSH server in the watched
/// namespace, recorded by sshd in /run/utmp, puts 10.77.0.1 in the allowlist in force
/// within seconds (the daemon is not reloaded); a block of it is refused and a UDP flood
/// spoofing it is not held; after the logout, a reload lets it go. (The test makes
/// /run/utmp when the machine has none, and removes what it made.)
#[test]
fn a_logged_in_admin_joins_the_allowlist() {
    struct Made(bool);
    impl Drop for Made {
        fn drop(&mut self) {
            if self.0 {
                let _ = std::fs::remove_file(statewall::detect::admins::UTMP);
            }
        }
    }
    let utmp = std::path::Path::new(statewall::detect::admins::UTMP);
    let _made = Made(!utmp.exists() && std::fs::write(utmp, b"").is_ok());
    let b = bed(
        "dtm",
        "mode = \"enforce\"\nexpiry = \"2s\"\nudp_flood.threshold = 200\n",
    );
    let in_force = || allowlist_in_force(&b.d);
    let admin = "10.77.0.1/32".to_string();
    assert!(!in_force().contains(&admin), "{:?}", in_force());
    let dir = std::env::temp_dir().join(format!("statewall-dtm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (servers, key) = statewall_harness::mining::servers(&b.pair, &dir);
    let _servers: Vec<Reaped> = servers.into_iter().map(Reaped).collect();
    let login = Reaped(spawn(&mut statewall_harness::mining::ssh(
        &b.pair,
        &key,
        "10.77.0.1",
        &["-tt"],
        "sleep 30",
    )));
    eventually("the admin's address in the allowlist in force", || {
        in_force().contains(&admin)
    });
    let (rc, _, err) = cli(&b.p, &["detect", "block", "10.77.0.1"]);
    assert_ne!(rc, 0, "a block of the admin was taken");
    assert!(err.contains("allowlist"), "{err}");
    let (src, dst) = (
        IpAddr::from(b.pair.client_v4),
        IpAddr::from(b.pair.server_v4),
    );
    flood_of(
        &b,
        4000,
        9,
        |rng, _| {
            let mut f = Packet::udp(src, dst, rng.random_range(1024..65535), 9999)
                .payload(&[0u8; 64])
                .build();
            f[..6].copy_from_slice(&b.mac);
            f
        },
        || {},
    );
    let ms = mitigations(&b.d);
    assert!(
        row(&ms, "udp_flood").is_none(),
        "a flood spoofing the admin held: {ms:?}"
    );
    drop(login);
    eventually("the login record removed", || {
        statewall::detect::admins::admins()
            .iter()
            .all(|p| p.to_string() != admin)
    });
    b.d.ok("POST", "/api/v1/reload", "");
    assert!(!in_force().contains(&admin), "{:?}", in_force());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The allowlist: a flood spoofing allowlisted sources is neither counted nor dropped; a
/// block inside the allowlist is refused; a block is dropped in the kernel (counted in its
/// row), a wider one leaves the allowlisted addresses in it passing, and a release or its
/// expiry lifts it.
#[test]
fn the_allowlist_is_never_blocked_and_blocks_drop_until_released() {
    let b = bed(
        "dta",
        "mode = \"enforce\"\nallowlist = [\"10.77.0.1\", \"10.100.0.0/14\"]\nudp_flood.threshold = 200\n",
    );
    let before = received(&b, "udp");
    let sent = flood(&b, "udp", 4000, [10, 100], || {});
    assert_eq!(
        received(&b, "udp") - before,
        sent,
        "allowlisted sources were dropped"
    );
    assert!(mitigations(&b.d).is_empty(), "{:?}", mitigations(&b.d));
    for inside in ["10.77.0.1", "10.101.0.0/16"] {
        let r = statewall::client::request_blocking(
            &b.d.socket,
            "POST",
            "/api/v1/detect/blocks",
            Some(format!("{{\"prefix\": \"{inside}\"}}")),
        )
        .unwrap();
        assert_eq!(r.status, 409, "{inside}: {}", r.body);
    }
    // A block of 10.104.0.0/14 drops everything from it, counted in its row.
    let (rc, _, err) = cli(&b.p, &["detect", "block", "10.104.0.0/14"]);
    assert_eq!(rc, 0, "{err}");
    let before = received(&b, "udp");
    let sent = flood(&b, "udp", 1000, [10, 104], || {});
    assert_eq!(received(&b, "udp") - before, 0);
    let ms = mitigations(&b.d);
    let m = row(&ms, "block").unwrap();
    assert_eq!(
        (m["target"].as_str(), m["dropped"].as_u64()),
        (Some("10.104.0.0/14"), Some(sent))
    );
    // A block inside it is a block of its own, with its own count; releasing an address
    // that only a wider block holds is no release.
    b.d.ok(
        "POST",
        "/api/v1/detect/blocks",
        r#"{"prefix": "10.104.1.1"}"#,
    );
    let ms = mitigations(&b.d);
    let own = ms.iter().find(|m| m["target"] == "10.104.1.1/32").unwrap();
    assert_eq!(own["dropped"].as_u64(), Some(0), "{own}");
    b.d.ok("DELETE", "/api/v1/detect/10.104.1.1", "");
    let r = statewall::client::request_blocking(
        &b.d.socket,
        "DELETE",
        "/api/v1/detect/10.104.1.2",
        None,
    )
    .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    // A wider block: the allowlisted prefix inside it still passes.
    b.d.ok(
        "POST",
        "/api/v1/detect/blocks",
        r#"{"prefix": "10.0.0.0/8"}"#,
    );
    let before = received(&b, "udp");
    let sent = flood(&b, "udp", 1000, [10, 100], || {});
    assert_eq!(received(&b, "udp") - before, sent);
    // Released by hand, or at its expiry.
    b.d.ok("DELETE", "/api/v1/detect/10.0.0.0/8", "");
    let (rc, _, err) = cli(&b.p, &["detect", "release", "10.104.0.0/14"]);
    assert_eq!(rc, 0, "{err}");
    b.d.ok(
        "POST",
        "/api/v1/detect/blocks",
        r#"{"prefix": "10.104.0.0/14", "seconds": 1}"#,
    );
    let before = received(&b, "udp");
    flood(&b, "udp", 200, [10, 104], || {});
    assert_eq!(received(&b, "udp") - before, 0);
    eventually("the block expired and was swept", || {
        mitigations(&b.d).is_empty()
    });
    let before = received(&b, "udp");
    let sent = flood(&b, "udp", 200, [10, 104], || {});
    assert_eq!(received(&b, "udp") - before, sent);
}

/// A real tool: hping3 sends 3,000 UDP datagrams and 3,000 ICMP echo requests from the
/// client's own address at about 5,000 a second (bounded by `-c`); `enforce` holds each to
/// its threshold and reports it, and the legitimate TCP client is not touched. (hping3
/// lingers about a second after its last packet: the expiry is 5 s here.)
#[test]
fn hping3_floods_are_detected_and_held() {
    let b = bed(
        "dth",
        "mode = \"enforce\"\nexpiry = \"5s\"\nudp_flood.threshold = 300\nicmp_flood.threshold = 300\n",
    );
    let lg = legit(&b);
    let server = b.pair.server_v4.to_string();
    for (args, detector, counted) in [
        (&["--udp", "-p", "9999"][..], "udp_flood", "udp"),
        (&["--icmp"][..], "icmp_flood", "icmp"),
    ] {
        let before = received(&b, counted);
        let t0 = Instant::now();
        let mut cmd = b
            .pair
            .client
            .command(&["hping3", "-q", "-c", "3000", "-i", "u200"]);
        let out = cmd
            .args(args)
            .arg(&server)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("hping3 (scripts/setup.sh installs it)");
        let secs = t0.elapsed().as_secs_f64();
        let got = received(&b, counted) - before;
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("3000 packets transmitted"), "hping3: {text}");
        let ms = mitigations(&b.d);
        let m = row(&ms, detector).unwrap_or_else(|| panic!("no {detector} mitigation: {ms:?}"));
        assert_eq!(m["target"], server.as_str());
        let bound = 300 * (secs.ceil() as u64 + 2);
        assert!(
            got <= bound,
            "{detector}: {got} of 3000 reached the server in {secs:.1}s"
        );
        eprintln!("hping3 {detector}: 3000 sent in {secs:.1}s, {got} reached the server");
        lg.round_trip(&b);
        eventually("expired", || row(&mitigations(&b.d), detector).is_none());
    }
}

/// With the interface's ingress stages in XDP, the detectors run inside the XDP program:
/// a spoofed UDP flood is held to its threshold there, a block drops there, and the
/// legitimate client keeps its round trips.
#[test]
fn in_xdp_the_detectors_and_blocks_act_before_the_stack() {
    let b = bed_on(
        "dtx",
        "xdp",
        "mode = \"enforce\"\nexpiry = \"2s\"\nudp_flood.threshold = 200\n",
    );
    assert!(
        b.d.programs(Some(&b.pair.server_if), "xdp")
            .iter()
            .any(|p| p == "sw_xdp_ingress"),
        "the XDP program is attached"
    );
    let lg = legit(&b);
    let before = received(&b, "udp");
    let t0 = Instant::now();
    let sent = flood(&b, "udp", 6000, [10, 100], || {
        lg.round_trip(&b);
    });
    let secs = t0.elapsed().as_secs_f64();
    let got = received(&b, "udp") - before;
    let ms = mitigations(&b.d);
    let m = row(&ms, "udp_flood").unwrap_or_else(|| panic!("no udp_flood mitigation: {ms:?}"));
    assert_eq!(m["target"], b.pair.server_v4.to_string().as_str());
    let bound = 200 * (secs.ceil() as u64 + 2);
    assert!(
        got <= bound,
        "{got} of {sent} reached the server in {secs:.1}s"
    );
    b.d.ok(
        "POST",
        "/api/v1/detect/blocks",
        r#"{"prefix": "10.104.0.0/14"}"#,
    );
    let before = received(&b, "udp");
    let sent = flood(&b, "udp", 300, [10, 104], || {});
    assert_eq!(received(&b, "udp") - before, 0);
    let ms = mitigations(&b.d);
    assert_eq!(row(&ms, "block").unwrap()["dropped"].as_u64(), Some(sent));
}

/// Without `[detect]` the stage is off: a block is refused (409, saying why), since no
/// program would drop it on tcx.
#[test]
fn without_the_section_a_block_is_refused() {
    let pair = Pair::new("dto");
    let p = Paths::new("dto");
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n",
            pair.server_if, pair.server.name
        ),
    )
    .unwrap();
    let d = Daemon::start(&p, &[]);
    let r = statewall::client::request_blocking(
        &d.socket,
        "POST",
        "/api/v1/detect/blocks",
        Some(r#"{"prefix": "198.51.100.0/24"}"#.into()),
    )
    .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("[detect]"), "{}", r.body);
    assert_eq!(d.get("/api/v1/detect")["mode"], Value::Null);
}

/// hping3 SYN floods from spoofed sources (one flow each, `-k`) for `secs`, while `during`
/// runs every 200 ms; then waits for hping3.
fn hping3_syn_flood(b: &Bed, sources: &[&str], pps: u64, secs: u64, during: impl Fn()) {
    let server = b.pair.server_v4.to_string();
    let mut kids: Vec<std::process::Child> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let port = (20000 + i).to_string();
            let (i_us, count) = (format!("u{}", 1_000_000 / pps), (pps * secs).to_string());
            b.pair
                .client
                .command(&[
                    "hping3", "-q", "-k", "-S", "-p", "8080", "-a", src, "-s", &port, "-i", &i_us,
                    "-c", &count, &server,
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("hping3 (scripts/setup.sh installs it)")
        })
        .collect();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        during();
        std::thread::sleep(Duration::from_millis(200));
    }
    for k in &mut kids {
        let _ = k.wait();
    }
}

/// The learned classifier, live, `enforce`, with the in-kernel detectors off: a spoofed
/// SYN flood from four sources (one of them allowlisted) is classified in a window of its
/// own monitor, two others are blocked with the flow that made each (the last is blocked by
/// hand beforehand, and the classifier leaves that block as it is), their SYNs stop
/// reaching the server, the legitimate client's round trips keep working (and it is never
/// blocked), the allowlisted source is counted and never blocked, and the blocks lapse
/// after the flood. Then `monitor` mode: the same flood is detected, nothing is blocked.
#[test]
fn the_classifier_blocks_flood_sources_and_lets_them_go() {
    for mode in ["enforce", "monitor"] {
        let b = classifier_bed("dlc", mode, "allowlist = [\"10.103.0.0/16\"]\n");
        let lg = legit(&b);
        lg.round_trip(&b);
        let sources = ["10.100.1.1", "10.101.2.2", "10.102.3.3", "10.103.4.4"];
        let blocked = ["10.100.1.1/32", "10.101.2.2/32"];
        // One source is blocked by hand, until released: the classifier leaves its block
        // as it is (no expiry, its own row).
        let (rc, _, err) = cli(&b.p, &["detect", "block", "10.102.3.3"]);
        assert_eq!(rc, 0, "{err}");
        let by_hand = |ms: &[Value]| {
            ms.iter()
                .find(|m| m["target"] == "10.102.3.3/32")
                .is_some_and(|m| m["detector"] == "block" && m["left_s"].is_null())
        };
        let seen_all = AtomicBool::new(false);
        let reached_after = std::sync::Mutex::new(None::<(Instant, u64)>);
        // The classifier's rows as last seen during the flood: the four hping3 runs end
        // at different times, and a blocked source's row may lapse (3 s after its last
        // drop) while the test waits for the last run.
        let last_rows = std::sync::Mutex::new(Vec::<Value>::new());
        hping3_syn_flood(&b, &sources, 500, 9, || {
            lg.round_trip(&b);
            let ms = mitigations(&b.d);
            for m in &ms {
                assert_ne!(m["target"], "10.77.0.1/32", "the legitimate client: {ms:?}");
                assert_ne!(m["target"], "10.103.4.4/32", "allowlisted: {ms:?}");
                assert_ne!(m["target"], "10.77.0.2/32", "the victim: {ms:?}");
            }
            assert!(by_hand(&ms), "{ms:?}");
            let all = blocked.iter().all(|t| {
                ms.iter()
                    .any(|m| m["detector"] == "classifier" && m["target"] == *t)
            });
            if all && !seen_all.swap(true, Ordering::Relaxed) {
                *reached_after.lock().unwrap() = Some((Instant::now(), received(&b, "tcp")));
            }
            if all {
                *last_rows.lock().unwrap() = ms
                    .into_iter()
                    .filter(|m| m["detector"] == "classifier")
                    .collect();
            }
        });
        let v = b.d.get("/api/v1/detect");
        let c = &v["classifier"];
        eprintln!("{mode}: classifier {c}");
        assert!(c["stats"]["windows"].as_u64().unwrap() >= 3, "{c}");
        assert!(c["stats"]["attacks"].as_u64().unwrap() >= 4, "{c}");
        assert!(c["allowlisted"].as_u64().unwrap() >= 1, "{c}");
        if mode == "monitor" {
            assert!(!seen_all.load(Ordering::Relaxed));
            let ms = mitigations(&b.d);
            assert!(
                row(&ms, "classifier").is_none(),
                "monitor mode blocks nothing: {ms:?}"
            );
            continue;
        }
        assert!(seen_all.load(Ordering::Relaxed), "never blocked: {v}");
        let ms = last_rows.lock().unwrap().clone();
        let m = row(&ms, "classifier").unwrap();
        assert_classified(m);
        eprintln!("{mode}: {}", m["reason"]);
        // After the blocks: at most the allowlisted source's SYNs (500/s) and the
        // legitimate client's segments reached the server, not the other 1,500/s (one
        // source of them blocked by hand from the start).
        let (t, before) = reached_after.lock().unwrap().unwrap();
        let secs = t.elapsed().as_secs_f64();
        let got = received(&b, "tcp") - before;
        assert!(
            (got as f64) < secs * 900.0,
            "{got} TCP segments in {secs:.1}s after the blocks"
        );
        let dropped: u64 = ms
            .iter()
            .filter(|m| m["detector"] == "classifier")
            .map(|m| m["dropped"].as_u64().unwrap())
            .sum();
        assert!(dropped > 0, "{ms:?}");
        eventually("the classifier's blocks lapsed after the flood", || {
            row(&mitigations(&b.d), "classifier").is_none()
        });
        assert!(by_hand(&mitigations(&b.d)), "the block by hand stays");
        lg.round_trip(&b);
    }
}

/// A mitigation row the classifier made, with its reason and the forest's score: at least
/// the built-in bars' 17 of its 25 trees (19 for the payload forest).
fn assert_classified(m: &Value) {
    let reason = m["reason"].as_str().unwrap();
    let (_, score) = reason
        .split_once("classified as an attack by ")
        .unwrap_or_else(|| panic!("no score: {m}"));
    let words: Vec<&str> = score.split(' ').take(4).collect();
    assert_eq!((words[1], words[3]), ("of", "trees"), "{m}");
    let (v, n): (u32, u32) = (words[0].parse().unwrap(), words[2].parse().unwrap());
    assert!(n == 25 && (17..=25).contains(&v), "{m}");
}

/// An HTTP request flood (ab keeping 10 connections alive, from 10.77.0.200) against the
/// server a legitimate client also fetches from: in `enforce` the classifier's payload
/// forest takes the flood's connections for attacks and blocks their source with its
/// reason, the flood's segments then stop reaching the server, the legitimate client's
/// requests (short connections from 10.77.0.1, like the ones the forest must not take
/// for attacks) keep working throughout, and the block lapses after the flood; `monitor`
/// reports the same attacks and blocks nothing.
#[test]
fn the_classifier_blocks_an_http_request_flood() {
    http_attack_is_classified("dlh", "flood", 300.0, |pair, url| {
        // (Bounded: once blocked, ab waits out its 3 s timeout and gives up.)
        let _ = pair.client.exec(&[
            "timeout",
            "14",
            "ab",
            "-q",
            "-k",
            "-B",
            "10.77.0.200",
            "-c",
            "10",
            "-t",
            "8",
            "-n",
            "100000000",
            "-s",
            "3",
            url,
        ]);
    });
}

/// A slow HTTP attack (slowhttptest: slow headers and a slow body at once, 12 s, from
/// 10.77.0.200) against the server a legitimate client also fetches from (curl bound to
/// 10.77.0.1): in `enforce` the classifier takes the slow connections for attacks and
/// blocks their source with its reason and score, its segments then stop reaching the
/// server, the legitimate client's requests keep working throughout, and the block lapses
/// after the attack; `monitor` reports it and blocks nothing.
#[test]
fn the_classifier_blocks_a_slow_http_attack() {
    http_attack_is_classified("dls", "slow attack", 100.0, |pair, url| {
        // slowhttptest cannot bind a source: the client namespace's route gives it the
        // attacker's while it runs.
        statewall_harness::apps::route_source(pair, "10.77.0.200");
        std::thread::scope(|sc| {
            for slow in ["-H", "-B"] {
                sc.spawn(move || {
                    let _ = pair.client.exec(&[
                        "timeout",
                        "20",
                        "slowhttptest",
                        slow,
                        "-c",
                        "100",
                        "-r",
                        "50",
                        "-i",
                        "2",
                        "-l",
                        "12",
                        "-p",
                        "3",
                        "-u",
                        url,
                    ]);
                });
            }
        });
        statewall_harness::apps::route_source(pair, &pair.client_v4.to_string());
    });
}

/// An HTTP attack from 10.77.0.200 (`attack` runs it against the URL it is given and
/// returns once it has ended) against the keep-alive HTTP server, while a legitimate
/// client (curl from 10.77.0.1) fetches from it, under `enforce` then `monitor`. Under
/// `enforce` the classifier blocks the attacker with its reason and score, fewer than
/// `per_s` TCP segments a second reach the server after the block, the client's requests
/// work throughout, and the block lapses after the attack; under `monitor` the attacks
/// are reported and nothing is blocked. `what` names the attack in messages.
fn http_attack_is_classified(
    tag: &str,
    what: &str,
    per_s: f64,
    attack: impl Fn(&Pair, &str) + Sync,
) {
    for mode in ["enforce", "monitor"] {
        let b = classifier_bed(tag, mode, "");
        let c = &b.pair.client;
        c.exec_ok(&[
            "ip",
            "addr",
            "add",
            "10.77.0.200/24",
            "dev",
            &b.pair.client_if,
        ]);
        let www = std::env::temp_dir().join(format!("statewall-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "<html>statewall</html>\n").unwrap();
        let _server = Reaped(spawn(&mut dataset::keep_alive_http(
            &b.pair,
            &www.to_string_lossy(),
        )));
        let url = format!("http://{}:8080/", b.pair.server_v4);
        let client = b.pair.client_v4.to_string();
        let fetch = || dataset::http_get(c, &client, &url);
        eventually("the HTTP server answers", fetch);
        let done = AtomicBool::new(false);
        let (mut fetched, mut seen) = (0, None::<(Instant, u64)>);
        let mut rows = Vec::new();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                attack(&b.pair, &url);
                done.store(true, Ordering::Relaxed);
            });
            while !done.load(Ordering::Relaxed) {
                let ok = fetch();
                let ms = mitigations(&b.d);
                assert!(
                    ok,
                    "{mode}: the legitimate client's request {} failed (a retry {}); \
                     the server's listen queue overflowed {} times; mitigations {ms:?}; \
                     classifier {}",
                    fetched + 1,
                    if fetch() { "worked" } else { "failed too" },
                    proc_net(&b, "netstat", "TcpExt", "ListenOverflows"),
                    b.d.get("/api/v1/detect")["classifier"]
                );
                fetched += 1;
                for m in &ms {
                    assert_ne!(m["target"], "10.77.0.1/32", "the legitimate client: {ms:?}");
                    assert_ne!(m["target"], "10.77.0.2/32", "the server: {ms:?}");
                }
                let blocked: Vec<Value> = ms
                    .into_iter()
                    .filter(|m| m["detector"] == "classifier" && m["target"] == "10.77.0.200/32")
                    .collect();
                if !blocked.is_empty() {
                    if seen.is_none() {
                        seen = Some((Instant::now(), received(&b, "tcp")));
                    }
                    rows = blocked;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let _ = std::fs::remove_dir_all(&www);
        let v = b.d.get("/api/v1/detect");
        let cl = &v["classifier"];
        eprintln!("{mode}: {fetched} requests by the legitimate client; classifier {cl}");
        assert!(fetched >= 5, "{fetched}");
        assert!(cl["stats"]["attacks"].as_u64().unwrap() >= 1, "{cl}");
        if mode == "monitor" {
            assert!(seen.is_none(), "monitor mode blocks nothing: {rows:?}");
            continue;
        }
        let (t, before) = seen.unwrap_or_else(|| panic!("the {what}'s source was never blocked"));
        let m = &rows[0];
        assert_classified(m);
        assert!(m["dropped"].as_u64().unwrap() > 0, "{m}");
        // After the block: the legitimate client's few segments, not the attack's.
        let secs = t.elapsed().as_secs_f64();
        let got = received(&b, "tcp") - before;
        eprintln!(
            "{mode}: {got} TCP segments in {secs:.1}s after the block: {}",
            m["reason"]
        );
        assert!(
            (got as f64) < secs * per_s,
            "{got} TCP segments in {secs:.1}s after the block"
        );
        eventually(
            &format!("the classifier's block lapsed after the {what}"),
            || row(&mitigations(&b.d), "classifier").is_none(),
        );
        assert!(fetch(), "the legitimate client after the {what}");
    }
}

/// A classifier bed: `enforce` or `monitor`, the in-kernel detectors off, expiry 3 s,
/// `extra` more lines of `[detect]`; the classifier watches the server's veth.
fn classifier_bed(tag: &str, mode: &str, extra: &str) -> Bed {
    let off = "syn_flood = { enabled = false }\nudp_flood = { enabled = false }\n\
               icmp_flood = { enabled = false }\nreflection = { enabled = false }\n";
    bed_of(tag, |pair| {
        format!(
            "[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n\n[detect]\nmode = \"{mode}\"\n\
             expiry = \"3s\"\n{extra}{off}\n\
             [detect.classifier]\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\n",
            i = pair.server_if,
            n = pair.server.name
        )
    })
}

/// The classifier's blocks are bounded and fail safe: with room for two (`max_blocks`), a
/// SYN flood from three sources and an allowlisted fourth gets at most two blocked at any
/// time; the detections past them are refused, counted in the API and in
/// `statewall_detect_classifier_total{what="refused"}`, and take no held block's place
/// while its source floods on; the allowlisted source is never blocked.
#[test]
fn the_classifier_stops_at_max_blocks_and_evicts_nothing() {
    let mport = common::free_port();
    let metrics = format!("127.0.0.1:{mport}");
    let off = "syn_flood = { enabled = false }\nudp_flood = { enabled = false }\n\
               icmp_flood = { enabled = false }\nreflection = { enabled = false }\n";
    let b = bed_with("dlf", &["--metrics-listen", &metrics], |pair| {
        format!(
            "[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n\n[detect]\nmode = \"enforce\"\n\
             expiry = \"3s\"\nallowlist = [\"10.103.0.0/16\"]\n{off}\n\
             [detect.classifier]\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\nmax_blocks = 2\n",
            i = pair.server_if,
            n = pair.server.name
        )
    });
    let sources = ["10.100.1.1", "10.101.2.2", "10.102.3.3", "10.103.4.4"];
    // The first two held, and when: they stay while their sources flood (4 s at least).
    let full = std::sync::Mutex::new(None::<(Instant, Vec<String>)>);
    let most = std::sync::atomic::AtomicUsize::new(0);
    hping3_syn_flood(&b, &sources, 500, 9, || {
        let ms = mitigations(&b.d);
        let held: Vec<String> = ms
            .iter()
            .filter(|m| m["detector"] == "classifier")
            .map(|m| m["target"].as_str().unwrap().to_string())
            .collect();
        assert!(held.len() <= 2, "more than max_blocks: {ms:?}");
        assert!(
            !held.iter().any(|t| t == "10.103.4.4/32"),
            "allowlisted: {ms:?}"
        );
        most.fetch_max(held.len(), Ordering::Relaxed);
        let mut f = full.lock().unwrap();
        match &*f {
            None if held.len() == 2 => *f = Some((Instant::now(), held)),
            Some((t, first)) if t.elapsed() < Duration::from_secs(4) => {
                assert!(
                    first.iter().all(|x| held.contains(x)),
                    "a held block gave way: {first:?} then {ms:?}"
                );
            }
            _ => {}
        }
    });
    assert_eq!(most.load(Ordering::Relaxed), 2, "never two blocks");
    let c = &b.d.get("/api/v1/detect")["classifier"];
    eprintln!("classifier {c}");
    let refused = c["refused"].as_u64().unwrap();
    assert!(refused >= 1, "{c}");
    let text = common::scrape(mport);
    let line = text
        .lines()
        .find(|l| l.starts_with("statewall_detect_classifier_total{what=\"refused\"}"))
        .unwrap_or_else(|| panic!("no refused count: {text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
}

/// Frame `i` of a UDP flood to port 9999 whose spoofed source (in 10.100.0.0/14) changes
/// every 10 packets: 64 bytes of payload, an IP length of 92.
fn walking_udp(b: &Bed, rng: &mut StdRng, i: u64, src: &mut [u8; 4]) -> Vec<u8> {
    if i.is_multiple_of(10) {
        *src = [10, 100 + rng.random_range(0..4), rng.random(), rng.random()];
    }
    let p = Packet::udp(
        IpAddr::from(*src),
        IpAddr::from(b.pair.server_v4),
        4000,
        9999,
    )
    .payload(&[0u8; 64]);
    let mut f = p.build();
    f[..6].copy_from_slice(&b.mac);
    f
}

fn dest_row<'a>(ms: &'a [Value], target: &str) -> Option<&'a Value> {
    ms.iter()
        .find(|m| m["scope"] == "destination" && m["target"] == target)
}

fn counter(b: &Bed, name: &str) -> u64 {
    b.d.get("/api/v1/detect")["counters"][name]
        .as_u64()
        .unwrap()
}

/// Floods whose sources change faster than a block follows them (one window late): the
/// classifier mitigates the destination instead of blocking each source.
/// - UDP to port 9999 from a new spoofed source every 10 packets, 92 bytes each: the
///   classifier drops the 92-byte packets to that port (its row says why and counts),
///   blocks none of the sources, the flood stops reaching the server while a legitimate
///   datagram of another length to the same port and the legitimate TCP client get
///   through, and the mitigation lapses after the flood.
/// - SYNs to port 8080 from a new spoofed source each: a SYN is admitted only when sent
///   again, so the flood stops reaching the server while a real client (which
///   retransmits) connects to 8080.
/// - In `monitor` mode the same UDP flood is reported (the destination mitigation it
///   would make) and nothing is dropped.
#[test]
fn the_classifier_mitigates_a_destination_when_sources_outrun_blocks() {
    let b = classifier_bed("dcd", "enforce", "");
    let lg = legit(&b);
    lg.round_trip(&b);
    let sv = b.pair.server_v4;
    let sock = b
        .pair
        .server
        .run(|| std::net::UdpSocket::bind((sv, 9999)))
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let client = b
        .pair
        .client
        .run(|| std::net::UdpSocket::bind((b.pair.client_v4, 0)))
        .unwrap();
    let udp_target = format!("{sv} udp/9999, 92-byte packets");
    let seen = std::sync::Mutex::new(None::<(Instant, u64)>);
    let mut src = [0u8; 4];
    let sent = flood_of(
        &b,
        40_000,
        1,
        |rng, i| walking_udp(&b, rng, i, &mut src),
        || {
            let ms = mitigations(&b.d);
            let mut g = seen.lock().unwrap();
            if g.is_none() && dest_row(&ms, &udp_target).is_some() {
                *g = Some((Instant::now(), received(&b, "udp")));
            }
            for m in &ms {
                assert_ne!(m["scope"], "source", "no source blocked one by one: {ms:?}");
            }
        },
    );
    let (t, before) = seen
        .lock()
        .unwrap()
        .expect("the destination was never mitigated");
    let secs = t.elapsed().as_secs_f64();
    let got = received(&b, "udp") - before;
    eprintln!("udp: {sent} sent; {got} datagrams in the {secs:.1}s after the mitigation");
    // About 4,000 a second were sent: at most a tenth of them arrive under it.
    assert!((got as f64) < secs * 400.0, "{got} datagrams in {secs:.1}s");
    let ms = mitigations(&b.d);
    let m = dest_row(&ms, &udp_target).expect("the mitigation in force");
    eprintln!("{m}");
    assert_eq!(m["detector"], "classifier", "{m}");
    let reason = m["reason"].as_str().unwrap();
    assert!(
        reason.contains("sources") && reason.contains("packets of 92 bytes dropped"),
        "{m}"
    );
    assert!(m["dropped"].as_u64().unwrap() > 0, "{m}");
    assert!(counter(&b, "destination_dropped") > 0);
    // Another length to the same port, from the legitimate client, still arrives (the
    // socket's queue, filled before the mitigation, emptied first).
    let mut buf = [0u8; 512];
    while sock.recv_from(&mut buf).is_ok() {}
    b.pair.client.run(|| {
        client.send_to(&[7u8; 200], (sv, 9999)).unwrap();
    });
    let legit_arrived = (0..20).any(|_| match sock.recv_from(&mut buf) {
        Ok((n, from)) => n == 200 && from.ip() == IpAddr::from(b.pair.client_v4),
        Err(_) => false,
    });
    assert!(legit_arrived, "a 200-byte datagram to the mitigated port");
    lg.round_trip(&b);
    eventually("the destination mitigation lapsed after the flood", || {
        dest_row(&mitigations(&b.d), &udp_target).is_none()
    });

    // SYNs from a new source each.
    let l = b.pair.server.run(|| TcpListener::bind((sv, 8080))).unwrap();
    let syn_target = format!("{sv} tcp/8080 SYNs");
    let seen = std::sync::Mutex::new(None::<(Instant, u64)>);
    let connected = AtomicBool::new(false);
    flood(&b, "syn", 40_000, [10, 100], || {
        let ms = mitigations(&b.d);
        // The lone 200-byte datagram above may be taken for an attack: a source of one
        // packet is never blocked (it would cut the client off).
        assert!(
            !ms.iter().any(|m| m["target"] == "10.77.0.1/32"),
            "the legitimate client blocked: {ms:?}"
        );
        let mut g = seen.lock().unwrap();
        if g.is_none() && dest_row(&ms, &syn_target).is_some() {
            *g = Some((Instant::now(), received(&b, "tcp")));
            drop(g);
            // A real client retransmits its SYN: it gets in.
            let passed = counter(&b, "destination_passed");
            b.pair.client.run(|| {
                TcpStream::connect_timeout(&SocketAddr::from((sv, 8080)), Duration::from_secs(5))
                    .expect("a real client connects on its retransmission")
            });
            assert!(counter(&b, "destination_passed") > passed);
            connected.store(true, Ordering::Relaxed);
        }
    });
    drop(l);
    assert!(
        connected.load(Ordering::Relaxed),
        "the SYN flood's destination was never mitigated"
    );
    let (t, before) = seen.lock().unwrap().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let got = received(&b, "tcp") - before;
    eprintln!("syn: {got} segments in the {secs:.1}s after the mitigation");
    assert!(
        (got as f64) < secs * 400.0,
        "{got} TCP segments in {secs:.1}s"
    );
    let ms = mitigations(&b.d);
    let m = dest_row(&ms, &syn_target).expect("the SYN mitigation in force");
    assert!(
        m["reason"]
            .as_str()
            .unwrap()
            .contains("admitted only when sent again"),
        "{m}"
    );
    // Released by hand: gone at once (the flood is over, no window brings it back).
    let (rc, out, err) = cli(&b.p, &["detect", "release", &sv.to_string()]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        dest_row(&mitigations(&b.d), &syn_target).is_none(),
        "{:?}",
        mitigations(&b.d)
    );
    lg.round_trip(&b);
    drop(b);

    let b = classifier_bed("dcm", "monitor", "");
    let mut src = [0u8; 4];
    let before = received(&b, "udp");
    let reported = AtomicBool::new(false);
    let want = format!("{sv} udp/9999, 92-byte packets: packets of 92 bytes dropped");
    let sent = flood_of(
        &b,
        16_000,
        2,
        |rng, i| walking_udp(&b, rng, i, &mut src),
        || {
            let v = b.d.get("/api/v1/detect");
            let last = v["classifier"]["last_destinations"]
                .as_array()
                .unwrap()
                .clone();
            if last.iter().any(|t| *t == want.as_str()) {
                reported.store(true, Ordering::Relaxed);
            }
            assert!(
                v["mitigations"].as_array().unwrap().is_empty(),
                "monitor mode mitigates nothing: {v}"
            );
        },
    );
    assert!(
        reported.load(Ordering::Relaxed),
        "monitor mode reports what it would do"
    );
    let got = received(&b, "udp") - before;
    // (Nothing is dropped by the stage; the veth's backlog may lose a few of a burst.)
    assert_eq!(counter(&b, "destination_dropped"), 0);
    assert_eq!(counter(&b, "blocked"), 0);
    assert!(
        got >= sent * 95 / 100,
        "monitor mode: {got} of {sent} arrived"
    );
}
