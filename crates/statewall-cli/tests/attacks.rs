//! Attacks, in one suite. The stage tests check what each stage does; these check that
//! its promises hold while it is attacked:
//! - knock brute force at the highest rate one core sends, with the lockout on;
//! - spoofed sources flooding the lock table to lift a lockout;
//! - full port scans (every TCP and UDP port, ascending and in random order);
//! - every stage at once in the daemon (a knock door with a lockout, fwknop SPA, a
//!   protected port, a firewall with conntrack and a 256-entry table) against all of the
//!   above plus SPA replays, forgeries, stale and future packets, an SPA flood from 6000
//!   spoofed sources, a SYN scan of every TCP port and a conntrack flood; meanwhile four
//!   connections (one through the knock grant, one through the SPA grant, one to an open
//!   port, and the server's own, whose replies get in only as ESTABLISHED) carry round
//!   trips every 5 ms, and none may fail.
//!
//! Counts scale with `STATEWALL_SOAK` (`make soak`, which sums up what they tried), except
//! the full scans, which cover every port once.

mod common;

use common::{
    config_on, echo, eventually, free_port, knock_from, raw_listener, raw_socket, sample, scrape,
    send_raw, soak_cases, steps, tally, Daemon, Kernel, Paths,
};

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use statewall::config::Step;
use statewall_common::parse::parse_packet;
use statewall_harness::{
    netns::{NetNs, Pair},
    packet::Packet,
};

/// Strict mode (set to false to see the scans open the doors).
const STRICT: bool = true;

/// With the lockout off, full scans of every TCP and UDP port, ascending and in random
/// order, never open a door.
#[test]
fn port_scans_never_open_a_door() {
    let pair = Pair::new("scan");
    let cfg = config_on(
        &pair,
        &format!("[[knock]]\nname = \"tcp\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\nstrict = {STRICT}\n\
         [[knock]]\nname = \"udp\"\nsequence = \"1111:udp,2222:udp,3333:udp\"\nprotected = [\"udp/53\"]\nstrict = {STRICT}\n"),
    );
    let k = Kernel::new("scan", &cfg);
    let sv = IpAddr::V4(pair.server_v4);
    let mut all: Vec<u16> = (1..=65535).collect();
    let mut rng = StdRng::seed_from_u64(0x5ca7);
    for order in ["ascending", "random"] {
        if order == "random" {
            all.shuffle(&mut rng);
        }
        for proto in ["tcp", "udp"] {
            let scan: Vec<Step> = all
                .iter()
                .map(|p| format!("{p}:{proto}").parse().unwrap())
                .collect();
            knock_from(&pair, sv, &scan);
            tally("attacks: port-scan packets", scan.len() as u64);
            assert_eq!(
                k.counter("grants"),
                0,
                "a {order} {proto} scan opened a door"
            );
        }
    }
    // The scans did walk into the sequences, and were reset (two transitions each) ...
    let c = k.eng.xfsm_counters().unwrap();
    assert!(k.counter("transitions") >= 8, "{c:?}");
    assert_eq!(k.live_grants(), 0);
    // ... while the real sequences still open the doors.
    for seq in ["7000,8000,9000", "1111:udp,2222:udp,3333:udp"] {
        knock_from(&pair, sv, &steps(seq));
    }
    assert_eq!(k.counter("grants"), 2);
}

/// A locked-out source stays locked out while spoofed sources flood the lock table past
/// its capacity (no eviction), and the full table fails closed.
#[test]
fn spoofed_flood_does_not_lift_a_lockout() {
    let pair = Pair::new("flood");
    let cfg = config_on(
        &pair,
        "[[knock]]\nname = \"ssh\"\nsequence = \"7000:udp,8000:udp,9000:udp\"\nprotected = [\"udp/53\"]\nlockout = { failures = 2, within = \"10m\", duration = \"10m\" }\n",
    );
    let k = Kernel::new("flood", &cfg);
    let sv = IpAddr::V4(pair.server_v4);
    // Two wrong sequences lock the client out.
    knock_from(&pair, sv, &steps("7000:udp,9000:udp,7000:udp,9000:udp"));
    assert_eq!(k.counter("lockouts"), 1);
    // 20000 spoofed sources (more than the 16384 lock records; x20 in soak) each make a
    // failure.
    let ifname = pair.client_if.clone();
    let sent = pair.client.run(|| {
        let sock = raw_socket(&ifname);
        let mut rng = StdRng::seed_from_u64(7);
        let mut n = 0;
        for _ in 0..soak_cases(20000) {
            let src = IpAddr::from([10, rng.random_range(100..=200), rng.random(), rng.random()]);
            for port in [7000, 9000] {
                let f = Packet::udp(src, sv, 40000, port).build();
                send_raw(&sock, &f);
                n += 1;
            }
        }
        // SAFETY: closing the socket made above.
        unsafe { libc::close(sock) };
        n
    });
    assert_eq!(sent, 2 * soak_cases(20000) as u64);
    tally("attacks: spoofed lock-table packets", sent);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        k.counter("lock_table_full") > 0,
        "the flood filled the lock table"
    );
    // The real client's right sequence is still ignored.
    let before = k.counter("locked_packets");
    knock_from(&pair, sv, &steps("7000:udp,8000:udp,9000:udp"));
    assert_eq!(k.live_grants(), 0, "the lockout was lifted");
    assert!(k.counter("locked_packets") >= before + 3);
    let me = k
        .eng
        .xfsm_locks()
        .unwrap()
        .into_iter()
        .find(|(key, _)| key.addr[..4] == pair.client_v4.octets());
    assert!(me.is_some_and(|(_, v)| v.locked_until > k.eng.kernel_now()));
}

/// Brute force at the highest rate one core sends: random three-step sequences over the
/// door's own ports and their neighbours (so that many steps are right), from one source,
/// with the lockout on. The door never opens for it, it is locked out after its failures,
/// and its knocks are refused from then on; another source still opens the door.
#[test]
fn brute_force_at_top_rate_is_locked_out() {
    let pair = Pair::new("brute");
    let cfg = config_on(
        &pair,
        "[[knock]]\nname = \"ssh\"\nsequence = \"7000:udp,8000:udp,9000:udp\"\nprotected = [\"udp/53\"]\nlockout = { failures = 5, within = \"10m\", duration = \"10m\" }\n",
    );
    let k = Kernel::new("brute", &cfg);
    let sv = IpAddr::V4(pair.server_v4);
    let ports = [6999u16, 7000, 7001, 7999, 8000, 8001, 8999, 9000, 9001];
    let mut rng = StdRng::seed_from_u64(0xb7);
    let tries = soak_cases(5000);
    let mut seqs: Vec<Vec<Step>> = Vec::new();
    for _ in 0..tries {
        let s: Vec<Step> = (0..3)
            .map(|_| {
                format!("{}:udp", ports[rng.random_range(0..ports.len())])
                    .parse()
                    .unwrap()
            })
            .collect();
        // The right sequence itself is not a guess worth counting.
        if s.iter().map(|s| s.0.port).collect::<Vec<_>>() != [7000, 8000, 9000] {
            seqs.push(s);
        }
    }
    let all: Vec<Step> = seqs.concat();
    let t0 = std::time::Instant::now();
    knock_from(&pair, sv, &all);
    let rate = all.len() as f64 / t0.elapsed().as_secs_f64();
    eprintln!("{} guesses at {rate:.0} packets/s", seqs.len());
    tally("attacks: knock brute-force packets", all.len() as u64);
    assert_eq!(k.live_grants(), 0, "a guess opened the door");
    assert_eq!(k.counter("grants"), 0);
    assert!(k.counter("lockouts") >= 1, "never locked out");
    assert!(
        k.counter("locked_packets") > all.len() as u64 / 2,
        "most of the flood was refused as locked: {}",
        k.counter("locked_packets")
    );
    // The right sequence from the locked source is refused too ...
    knock_from(&pair, sv, &steps("7000:udp,8000:udp,9000:udp"));
    assert_eq!(k.live_grants(), 0, "the locked source opened the door");
    // ... and from another source (the client's IPv6 address) it opens.
    let sv6 = IpAddr::V6(pair.server_v6);
    knock_from(&pair, sv6, &steps("7000:udp,8000:udp,9000:udp"));
    assert_eq!(k.live_grants(), 1, "another source cannot open the door");
}

const K: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";
const H: &str =
    "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl9gYWJjZGVmZw==";

/// A connection kept busy: a round trip every 5 ms until stopped. Gives (round trips,
/// failures); a failure ends it.
struct Busy {
    what: &'static str,
    stop: Arc<AtomicBool>,
    h: JoinHandle<(u64, u64)>,
}

impl Busy {
    fn new(what: &'static str, mut c: TcpStream) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let h = std::thread::spawn(move || {
            let (mut n, mut failed) = (0u64, 0u64);
            while !st.load(Ordering::Relaxed) {
                let msg = n.to_be_bytes();
                let mut back = [0u8; 8];
                if c.write_all(&msg).is_err() || c.read_exact(&mut back).is_err() || back != msg {
                    failed += 1;
                    break;
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (n, failed)
        });
        Busy { what, stop, h }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.h.join().unwrap();
        eprintln!("{}: {} round trips, {} failed", self.what, r.0, r.1);
        r
    }
}

/// The MAC address of `ifname` in `ns`.
fn mac(ns: &NetNs, ifname: &str) -> [u8; 6] {
    let out = ns.exec_ok(&["ip", "-o", "link", "show", ifname]);
    let s = out.split("link/ether ").nth(1).expect("no link/ether");
    let mut m = [0u8; 6];
    for (i, b) in s.split([':', ' ']).take(6).enumerate() {
        m[i] = u8::from_str_radix(b, 16).unwrap();
    }
    m
}

/// Frames from the client's interface to the server's: real MAC addresses, so that the
/// server's stack answers those the stages let in.
struct Wire {
    fd: i32,
    macs: [u8; 12],
}

impl Wire {
    fn new(pair: &Pair) -> Wire {
        let (c, s) = (
            mac(&pair.client, &pair.client_if),
            mac(&pair.server, &pair.server_if),
        );
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&s);
        macs[6..].copy_from_slice(&c);
        Wire {
            fd: pair.client.run(|| raw_socket(&pair.client_if)),
            macs,
        }
    }

    fn send(&self, mut f: Vec<u8>) {
        f[..12].copy_from_slice(&self.macs);
        send_raw(&self.fd, &f);
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        // SAFETY: closing the socket this value owns.
        unsafe { libc::close(self.fd) };
    }
}

/// Runs the real fwknop client for tcp/2200 with this suite's keys.
fn fwknop(pair: &Pair, p: &Paths, extra: &[&str]) {
    common::fwknop(pair, p, "tcp/2200", (K, H), extra)
}

/// Every stage at once in the daemon, attacked every way in turn; see the module's text.
#[test]
fn every_stage_at_once_under_attack() {
    let p = Paths::new("atk");
    let pair = Pair::new("atk");
    let (sv, cv) = (pair.server_v4, pair.client_v4);
    let svip = IpAddr::V4(sv);
    std::fs::write(
        &p.config,
        format!(
            r#"[[interface]]
name = "{ifname}"
netns = "{ns}"

[gate]
protected = ["tcp/2222"]

[[knock]]
name = "ssh"
sequence = "7000:udp,8000:udp,9000:udp"
protected = ["tcp/22"]
open_for = "10m"
strict = true
lockout = {{ failures = 3, within = "10m", duration = "10m" }}

[spa]
rate_interval = "10ms"
rate_burst = 5

[[spa.fwknop]]
source = ["ANY"]
open_ports = ["tcp/2200"]
key_base64 = "{K}"
hmac_key_base64 = "{H}"
fw_access_timeout = 600

[firewall]
conntrack_max = 256

[maps]
SW_XFSM_LOCKS = 4096
"#,
            ifname = pair.server_if,
            ns = pair.server.name,
        ),
    )
    .unwrap();
    let mport = free_port();
    let d = Daemon::start(&p, &["--metrics-listen", &format!("127.0.0.1:{mport}")]);
    // The firewall: replies of the server's own connections get in as ESTABLISHED; new
    // connections only to 22, 2200, 2222 and 5201; UDP (knocks, SPA) in; the rest dropped.
    d.firewall_on(
        "fw",
        &pair,
        r#"[{"conntrack": "ESTABLISHED", "action": "accept"},
            {"l4proto": "TCP", "dport": 22, "action": "accept"},
            {"l4proto": "TCP", "dport": 2200, "action": "accept"},
            {"l4proto": "TCP", "dport": 2222, "action": "accept"},
            {"l4proto": "TCP", "dport": 5201, "action": "accept"},
            {"l4proto": "UDP", "action": "accept"}]"#,
    );
    d.ok(
        "PATCH",
        "/api/v1/firewall/fw/chain/INGRESS",
        r#"{"default": "DROP"}"#,
    );
    let xfsm = |what: &str| d.get("/api/v1/xfsm")["counters"][what].as_u64().unwrap();
    let spa = |what: &str| d.get("/api/v1/spa")["verdicts"][what].as_u64().unwrap();
    let connect = |port: u16| {
        let to = SocketAddr::from((sv, port));
        pair.client
            .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(500)))
    };
    let listen = |port: u16| pair.server.run(|| TcpListener::bind((sv, port))).unwrap();

    // The legitimate users, before the attacks.
    let mut echoes = vec![echo(listen(5201), None)];
    let mut busy = vec![Busy::new("open port 5201", connect(5201).unwrap())];
    let l22 = listen(22);
    let l2200 = listen(2200);
    let _l2222 = listen(2222);
    assert!(connect(22).is_err(), "tcp/22 before the knock");
    knock_from(&pair, svip, &steps("7000:udp,8000:udp,9000:udp"));
    let c22 = connect(22).expect("the knock opened tcp/22");
    echoes.push(echo(l22, Some(c22.local_addr().unwrap())));
    busy.push(Busy::new("knock-granted tcp/22", c22));
    let saved = p.scratch.join("spa.pkt");
    fwknop(&pair, &p, &["--save-packet", saved.to_str().unwrap()]);
    eventually("the SPA packet was accepted", || spa("accepted") == 1);
    let c2200 = connect(2200).expect("SPA opened tcp/2200");
    echoes.push(echo(l2200, Some(c2200.local_addr().unwrap())));
    busy.push(Busy::new("SPA-granted tcp/2200", c2200));
    let lc = pair.client.run(|| TcpListener::bind((cv, 7777))).unwrap();
    echoes.push(echo(lc, None));
    let to = SocketAddr::from((cv, 7777));
    let out = pair
        .server
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .expect("the server's own connection");
    busy.push(Busy::new(
        "server's own connection (replies as ESTABLISHED)",
        out,
    ));
    let opened = xfsm("grants");
    assert_eq!(opened, 1);
    let mut sent = 0u64;

    // 1. SPA: a replay, a forged HMAC, stale and future packets.
    let pkt = std::fs::read_to_string(&saved).unwrap();
    let pkt = pkt.trim_end().as_bytes().to_vec();
    let spa_to = SocketAddr::from((sv, 62201));
    pair.client
        .run(|| statewall::spa::send_udp(spa_to, &pkt))
        .unwrap();
    eventually("the replay was refused", || spa("replay") == 1);
    let forged = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 64]);
    let sv_s = sv.to_string();
    let out = pair.client.exec(&[
        common::bin(),
        "spa",
        "--fwknop",
        &sv_s,
        "-A",
        "tcp/2200",
        "--key-base64-rijndael",
        K,
        "--key-base64-hmac",
        &forged,
    ]);
    assert!(out.status.success(), "{out:?}");
    eventually("the forgery was refused", || spa("bad_digest") == 1);
    fwknop(&pair, &p, &["--time-offset-minus", "5m"]);
    fwknop(&pair, &p, &["--time-offset-plus", "5m"]);
    eventually("stale and future packets were refused", || {
        spa("stale") == 2
    });
    sent += 4;

    // 2. An SPA flood: garbage from 6000 spoofed sources (x20 in soak) while the real client sends a
    // fresh packet, which gets in.
    let wire = Arc::new(Wire::new(&pair));
    let flood = std::thread::spawn({
        let wire = wire.clone();
        move || {
            let mut n = 0u64;
            for f in common::spa_garbage(svip, soak_cases(3) as u8) {
                wire.send(f);
                n += 1;
            }
            n
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    fwknop(&pair, &p, &[]);
    let n = flood.join().unwrap();
    tally("attacks: SPA flood packets", n);
    sent += n;
    eventually("the real packet got in through the flood", || {
        spa("accepted") == 2
    });
    eventually("the flood was refused", || {
        spa("malformed") + spa("bad_digest") + spa("rate_limited") >= 1000
    });

    // 3. Knock brute force from the client at the top rate: random three-step guesses
    // over the door's ports and their neighbours.
    let ports = [6999u16, 7000, 7001, 7999, 8000, 8001, 8999, 9000, 9001];
    let mut rng = StdRng::seed_from_u64(0xa77);
    let guesses: Vec<Step> = (0..soak_cases(2000))
        .flat_map(|_| {
            (0..3)
                .map(|_| format!("{}:udp", ports[rng.random_range(0..ports.len())]))
                .collect::<Vec<_>>()
        })
        .filter_map(|s| s.parse().ok())
        .collect();
    knock_from(&pair, svip, &guesses);
    tally("attacks: knock brute-force packets", guesses.len() as u64);
    sent += guesses.len() as u64;
    assert_eq!(xfsm("grants"), opened, "a guess opened the door");
    assert!(xfsm("lockouts") >= 1, "the guesser was never locked out");

    // 4. Spoofed sources fill the lock table (4096 records) to lift the lockout.
    let mut n = 0u64;
    for _ in 0..soak_cases(6000) {
        let src = IpAddr::from([10, rng.random_range(100..=200), rng.random(), rng.random()]);
        for port in [7000, 9000] {
            wire.send(Packet::udp(src, svip, 40000, port).build());
            n += 1;
        }
    }
    tally("attacks: spoofed lock-table packets", n);
    sent += n;
    eventually("the lock table filled", || xfsm("lock_table_full") > 0);
    let locked = xfsm("locked_packets");
    knock_from(&pair, svip, &steps("7000:udp,8000:udp,9000:udp"));
    eventually(
        "the right sequence from the locked source was refused",
        || xfsm("locked_packets") >= locked + 3,
    );
    assert_eq!(xfsm("grants"), opened, "the lockout was lifted");

    // 5. A SYN scan of every TCP port from the client: only the open port and the ports
    // granted to it answer.
    let granted: BTreeSet<u16> = d
        .get("/api/v1/gate/grants")
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["addr"] == cv.to_string() && g["proto"] == "tcp")
        .map(|g| g["port"].as_u64().unwrap() as u16)
        .collect();
    let answered = syn_scan(&pair, &wire);
    let mut expect: BTreeSet<u16> = granted.clone();
    expect.insert(5201);
    assert!(!answered.contains(&2222), "the protected port answered");
    assert_eq!(
        answered, expect,
        "ports that answered (granted: {granted:?})"
    );
    tally("attacks: SYN scan packets", 65535);
    sent += 65535;

    // 6. Conntrack exhaustion: new UDP flows from spoofed sources, many times the table.
    // (In bursts of 100, each shorter than the connections' round trips: the LRU keeps the
    // entries in use.)
    let created = || sample(&scrape(mport), "statewall_fw_conntrack_created_total").unwrap() as u64;
    let created0 = created();
    let flows = soak_cases(5000) as u64;
    for i in 0..flows {
        let src = IpAddr::from([10, 160 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        wire.send(Packet::udp(src, svip, 40000, 9999).payload(b"x").build());
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    tally("attacks: conntrack flood flows", flows);
    sent += flows;
    eventually("every flow of the flood was entered", || {
        created() >= created0 + flows
    });
    let text = scrape(mport);
    let live = sample(&text, "statewall_map_entries{map=\"SW_FW_CT\"}").unwrap();
    assert!(live <= 256.0, "conntrack entries: {live}");

    // Afterwards: every connection carried on, the protected port stayed shut, and the
    // daemon is well. While the spoofed records fill the lock table, a new source cannot
    // start a sequence either (fail closed, as documented), and that is counted.
    for b in busy {
        let (n, failed) = b.finish();
        assert_eq!(failed, 0, "a connection failed during the attacks");
        assert!(n > 10, "only {n} round trips");
    }
    assert!(connect(2222).is_err(), "tcp/2222 opened");
    let full = xfsm("lock_table_full");
    for port in [7000, 8000, 9000] {
        wire.send(Packet::udp(IpAddr::from([10, 201, 0, 1]), svip, 40000, port).build());
    }
    eventually("the new source was turned away", || {
        xfsm("lock_table_full") > full
    });
    assert_eq!(
        xfsm("grants"),
        opened,
        "a source opened the door with the table full"
    );
    // (The API answers, and the daemon exits cleanly below.)
    d.get("/api/v1/status");
    eprintln!("{sent} attack packets in all");
    drop(wire);
    assert_eq!(d.stop(), 0);
    for e in echoes {
        e.join().unwrap();
    }
}

/// Sends a SYN to every TCP port of the server from the client's address and returns the
/// ports that answered with SYN-ACK.
fn syn_scan(pair: &Pair, wire: &Wire) -> BTreeSet<u16> {
    let rx = pair.client.run(|| raw_listener(&pair.client_if));
    let stop = Arc::new(AtomicBool::new(false));
    let server = IpAddr::V4(pair.server_v4);
    let h = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut got = BTreeSet::new();
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: reading into a buffer we own; rx has a 200 ms receive timeout.
                let n = unsafe { libc::recv(rx, buf.as_mut_ptr() as *mut _, buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                let p = parse_packet(&buf[..n as usize]);
                let from = IpAddr::from(<[u8; 4]>::try_from(&p.saddr[..4]).unwrap());
                if p.family == 4 && p.l4proto == 6 && from == server && p.tcp_flags & 0x12 == 0x12 {
                    got.insert(p.sport);
                }
            }
            // SAFETY: closing the socket this thread was given.
            unsafe { libc::close(rx) };
            got
        }
    });
    let (c, s) = (IpAddr::V4(pair.client_v4), server);
    let mut ports: Vec<u16> = (1..=65535).collect();
    ports.shuffle(&mut StdRng::seed_from_u64(0x5ca));
    for port in ports {
        // (Source ports below the ephemeral range: no clash with the live connections.)
        wire.send(Packet::tcp(c, s, 20000 + port % 10000, port, 0x02).build());
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap()
}
