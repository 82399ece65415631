//! Labelled captures for the learned classifier (`make dataset`, `statewall dataset`): real
//! tools between two namespaces this process creates, the server's veth captured by tcpdump.
//!
//! Each capture holds one attack kind (or none) over a background of benign traffic. The
//! training sets' captures use 10.77.0.0/24 and spoof from 10.100.0.0/14, the held-out
//! sets' 10.177.0.0/24 and 10.180.0.0/14 ([`Nets`]); hosts below are of the set's /24:
//! - benign, from .1 and .10 to .49 (addresses of the client namespace): curl against a
//!   Python `http.server`, some requests in bursts of completed handshakes, bursts of
//!   concurrent requests to an overloaded server (its accept queue full: handshakes and
//!   requests sent again), a rate-limited download, iperf3 over TCP and fast iperf3 over
//!   UDP (both capped), ping (one of them fast), and slow UDP to a closed port;
//!   and DNS lookups of a few names (the application kinds' captures; [`crate::apps`]);
//! - attacks, by hping3: SYN, UDP and ICMP floods, from the client namespace's own attacker
//!   addresses (.200 to .203, answered) or from spoofed sources (neither namespace has a
//!   default route: the server's answers go nowhere). Each flood
//!   keeps its source port (`-k`), one flow per source, so that a third or more of a mixed
//!   capture's flows stay benign; one burst per capture walks the source ports;
//! - application attacks ([`crate::apps`]): an HTTP request flood (ab), a slow HTTP attack
//!   (slowhttptest), and DNS reflection (nping's spoofed queries answered by dnsmasq).
//!
//! The seed picks addresses, rates, sizes, TTLs, windows and the link MTU; the held-out set
//! is made with other seeds and other addresses than the training set.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use statewall::detect::learn::{Entry, Manifest};

use crate::{
    netns::{spawn, Pair},
    rng::Rng,
};

/// The addresses of a set's captures: the training sets' (10.77.0.0/24, spoofed sources
/// from 10.100.0.0/14) or the held-out sets' (10.177.0.0/24, spoofed from 10.180.0.0/14),
/// so that the held-out captures judge a model on addresses it never saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nets {
    /// The namespaces' network: 10.`lan`.0.0/24 (client .1, server .2, benign .10 to .49,
    /// the reflector .60, attackers .200 to .203, miners .204 to .207).
    pub lan: u8,
    /// The spoofed sources' prefix: 10.`spoofed`.0.0/14.
    pub spoofed: u8,
}

impl Nets {
    /// The addresses of set `set`'s captures (the held-out sets': `held-out...`).
    pub fn of(set: &str) -> Nets {
        if set.starts_with("held-out") {
            Nets {
                lan: 177,
                spoofed: 180,
            }
        } else {
            Nets {
                lan: 77,
                spoofed: 100,
            }
        }
    }

    /// Attacker prefixes: the client's own attacker addresses and the spoofed prefix.
    pub fn attackers(self) -> Vec<String> {
        vec![
            format!("10.{}.0.200/30", self.lan),
            format!("10.{}.0.0/14", self.spoofed),
        ]
    }
}

/// A capture's attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Benign traffic only.
    Benign,
    /// SYN flood.
    Syn,
    /// UDP flood.
    Udp,
    /// ICMP echo flood.
    Icmp,
    /// Crypto mining (Stratum) among long-lived benign sessions ([`crate::mining`]).
    Mining,
    /// HTTP request flood (ab).
    Http,
    /// Slow HTTP (slowhttptest).
    Slow,
    /// DNS reflection (nping to dnsmasq).
    Dns,
}
// (A kind's number seeds its captures' choices: the kinds that were there first keep
// theirs, so that `make dataset` makes the same captures as before.)
const _: () = assert!(Kind::Mining as u64 == 4 && Kind::Icmp as u64 == 3);

impl Kind {
    /// Its name in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Benign => "benign",
            Kind::Syn => "syn",
            Kind::Udp => "udp",
            Kind::Icmp => "icmp",
            Kind::Http => "http",
            Kind::Slow => "slow",
            Kind::Dns => "dns",
            Kind::Mining => "mining",
        }
    }

    /// The floods, answered or spoofed.
    pub const ATTACKS: [Kind; 3] = [Kind::Syn, Kind::Udp, Kind::Icmp];
    /// The application attacks (never spoofed: reflection spoofs by its nature).
    pub const APPS: [Kind; 3] = [Kind::Http, Kind::Slow, Kind::Dns];

    /// The kind named `s` (as in the manifest).
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Benign, Kind::Mining]
            .into_iter()
            .chain(Kind::ATTACKS)
            .chain(Kind::APPS)
            .find(|k| k.name() == s)
    }

    /// True for the application attacks' kinds, whose captures have DNS in their benign
    /// background.
    pub fn is_app(self) -> bool {
        Kind::APPS.contains(&self)
    }
}

/// One capture to make.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Its attack.
    pub kind: Kind,
    /// Spoofed sources (else the attacker addresses).
    pub spoofed: bool,
    /// Length.
    pub seconds: u64,
    /// Seed.
    pub seed: u64,
    /// `train` or `held-out`.
    pub set: String,
    /// Spoofed floods: this many short floods more (10 packets each), one after the other,
    /// each from a source of its own in the spoofed prefix: the sources a flood walks, as
    /// the burst walks the source ports. 0 for the sets `make dataset` makes.
    pub walk_sources: u64,
}

impl Plan {
    /// Its file name.
    pub fn file(&self) -> String {
        let s = if self.spoofed { "-spoofed" } else { "" };
        format!("{}-{}{s}-{}.pcap", self.set, self.kind.name(), self.seed)
    }
}

/// A benign source: the client's own address or one of .10 to .49.
pub(crate) fn benign_addr(pair: &Pair, rng: &mut Rng) -> String {
    if rng.range(0, 9) == 0 {
        pair.host(1)
    } else {
        pair.host(rng.range(10, 49) as u8)
    }
}

/// The benign background until `until`: threads that each run one tool at a time (with
/// `dns`, one more for DNS lookups).
fn benign(pair: &Pair, seed: u64, until: Instant, dns: bool) {
    let c = &pair.client;
    let server = pair.server_v4.to_string();
    std::thread::scope(|s| {
        if dns {
            s.spawn(|| {
                let mut rng = Rng(seed ^ 5);
                while Instant::now() < until {
                    let from = benign_addr(pair, &mut rng);
                    for _ in 0..rng.range(1, 4) {
                        crate::apps::lookup(pair, &from, &mut rng);
                    }
                    std::thread::sleep(Duration::from_millis(rng.range(50, 600)));
                }
            });
        }
        // Web: requests, every tenth a burst of completed handshakes.
        s.spawn(|| {
            let mut rng = Rng(seed ^ 1);
            while Instant::now() < until {
                let n = if rng.range(0, 9) == 0 {
                    rng.range(5, 20)
                } else {
                    1
                };
                let from = benign_addr(pair, &mut rng);
                for _ in 0..n {
                    http_get(c, &from, &format!("http://{server}:8080/"));
                }
                std::thread::sleep(Duration::from_millis(rng.range(30, 400)));
            }
        });
        // Clients of an overloaded server: bursts of concurrent requests to the busy
        // server ([`BUSY`]), each burst meeting it idle: the first handshakes complete,
        // the accept queue fills, and the others' final ACKs and requests are dropped and
        // sent again, their SYN-ACKs too (a flood's victim's legitimate clients see the
        // same).
        s.spawn(|| {
            let mut rng = Rng(seed ^ 6);
            let (backlog, pace) = busy(seed);
            while Instant::now() + Duration::from_secs(4) < until {
                let kids: Vec<_> = (0..rng.range(3, 10))
                    .map(|_| {
                        let from = benign_addr(pair, &mut rng);
                        spawn(&mut c.command(&[
                            "curl",
                            "-s",
                            "-o",
                            "/dev/null",
                            "-m",
                            "8",
                            "--interface",
                            &from,
                            &format!("http://{server}:8090/"),
                        ]))
                    })
                    .collect();
                for mut k in kids {
                    let _ = k.wait();
                }
                // (Until its queue is drained: what timed out is still in it.)
                let drain = (backlog + 2) * pace + rng.range(200, 2000);
                std::thread::sleep(Duration::from_millis(drain));
            }
        });
        // Downloads, rate-limited.
        s.spawn(|| {
            let mut rng = Rng(seed ^ 2);
            while Instant::now() < until {
                let from = benign_addr(pair, &mut rng);
                let rate = format!("{}k", rng.range(100, 800));
                let _ = c.exec(&[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-m",
                    "4",
                    "--limit-rate",
                    &rate,
                    "--interface",
                    &from,
                    &format!("http://{server}:8080/big.bin"),
                ]);
            }
        });
        // iperf3: TCP and fast UDP, capped, in turns.
        s.spawn(|| {
            let mut rng = Rng(seed ^ 3);
            while Instant::now() + Duration::from_secs(3) < until {
                let from = benign_addr(pair, &mut rng);
                let udp = rng.range(0, 1) == 1;
                let rate = format!("{}M", rng.range(10, 60));
                let mut a = vec!["iperf3", "-c", &server, "-B", &from, "-t", "2", "-b", &rate];
                a.extend(if udp {
                    ["-u", "-p", "5202"]
                } else {
                    ["-4", "-p", "5201"]
                });
                let _ = c.exec(&a);
                std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
            }
        });
        // ping, one of them fast; slow UDP to a closed port.
        s.spawn(|| {
            let mut rng = Rng(seed ^ 4);
            while Instant::now() + Duration::from_secs(2) < until {
                let from = benign_addr(pair, &mut rng);
                if rng.range(0, 2) == 0 {
                    let _ = c.exec(&[
                        "hping3",
                        "-q",
                        "--udp",
                        "-k",
                        "-a",
                        &from,
                        "-s",
                        &rng.range(20000, 60000).to_string(),
                        "-p",
                        &rng.range(20000, 30000).to_string(),
                        "-c",
                        "15",
                        "-i",
                        "u60000",
                        &server,
                    ]);
                } else {
                    let fast = rng.range(0, 3) == 0;
                    let (n, i) = if fast { ("100", "0.01") } else { ("8", "0.2") };
                    let _ = c.exec(&["ping", "-q", "-I", &from, "-c", n, "-i", i, &server]);
                }
            }
        });
    });
}

/// An address of the spoofed prefix (10.`base`.0.0/14).
fn spoofed_addr(rng: &mut Rng, base: u8) -> String {
    format!(
        "10.{}.{}.{}",
        base as u64 + rng.range(0, 3),
        rng.range(0, 255),
        rng.range(1, 254)
    )
}

/// The flood of one capture, from `start` for `secs`.
fn flood(pair: &Pair, plan: &Plan, rng: &mut Rng, secs: u64) {
    match plan.kind {
        Kind::Http => return crate::apps::http_flood(pair, rng, secs),
        Kind::Slow => return crate::apps::slow_http(pair, rng, secs),
        Kind::Dns => return crate::apps::dns_reflection(pair, rng, secs),
        _ => {}
    }
    let server = pair.server_v4.to_string();
    let base = Nets::of(&plan.set).spoofed;
    let sources: Vec<String> = if plan.spoofed {
        (0..rng.range(8, 24))
            .map(|_| spoofed_addr(rng, base))
            .collect()
    } else {
        (200..200 + rng.range(2, 4) as u8)
            .map(|i| pair.host(i))
            .collect()
    };
    if plan.kind == Kind::Benign {
        return;
    }
    // Each source its own tool options: port, window, size, TTL, rate; for SYNs also the
    // acknowledgment number and the TCP options. hping3 fills a SYN's acknowledgment field
    // with a random number, which most SYN flooders leave at 0 as every real client does:
    // a model that saw only hping3's would tell floods by that field alone (a forest did:
    // it took every lone SYN with a random acknowledgment and none with 0). So half the
    // sources send 0 (`-L 0`), and some add an MSS or a timestamp option.
    let options = |rng: &mut Rng| -> Vec<String> {
        let mut v: Vec<String> = match plan.kind {
            Kind::Syn => {
                let mut v: Vec<String> = vec![
                    "-S".into(),
                    "-p".into(),
                    rng.pick(&["8080", "80", "443", "22", "5201", "3306"])
                        .to_string(),
                    "-w".into(),
                    rng.range(64, 65535).to_string(),
                ];
                if rng.range(0, 2) == 0 {
                    v.extend(["-L".into(), "0".into()]);
                }
                match rng.range(0, 4) {
                    0 => v.extend([
                        "--tcp-mss".into(),
                        rng.pick(&["1460", "1400", "536"]).to_string(),
                    ]),
                    1 => v.push("--tcp-timestamp".into()),
                    _ => {}
                }
                v
            }
            Kind::Udp => vec![
                "--udp".into(),
                "-p".into(),
                rng.range(1, 65000).to_string(),
                "-d".into(),
                rng.range(0, 1400).to_string(),
            ],
            _ => vec!["--icmp".into(), "-d".into(), rng.range(0, 1400).to_string()],
        };
        v.extend(["--ttl".into(), rng.range(32, 255).to_string()]);
        v
    };
    // Packets per second, all sources together, shared out unevenly.
    let total = rng.range(1000, 4000);
    let mut kids = Vec::new();
    for src in &sources {
        let pps = (total * rng.range(50, 150) / 100 / sources.len() as u64).max(50);
        let mut a: Vec<String> = vec![
            "hping3".into(),
            "-q".into(),
            "-k".into(),
            "-a".into(),
            src.clone(),
        ];
        a.extend(options(rng));
        a.extend([
            "-s".into(),
            rng.range(1024, 65000).to_string(),
            "-i".into(),
            format!("u{}", 1_000_000 / pps),
            "-c".into(),
            (pps * secs).to_string(),
            server.clone(),
        ]);
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        kids.push(spawn(&mut pair.client.command(&a)));
    }
    // One burst that walks the source ports: short flows of one packet each.
    let mut a: Vec<String> = vec![
        "hping3".into(),
        "-q".into(),
        "-a".into(),
        rng.pick(&sources).clone(),
    ];
    a.extend(options(rng));
    a.extend([
        "-i".into(),
        format!("u{}", rng.range(1000, 10000)),
        "-c".into(),
        "100".into(),
        server.clone(),
    ]);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    kids.push(spawn(&mut pair.client.command(&a)));
    if plan.spoofed {
        for _ in 0..plan.walk_sources {
            let src = spoofed_addr(rng, base);
            let mut a: Vec<String> =
                vec!["hping3".into(), "-q".into(), "-k".into(), "-a".into(), src];
            a.extend(options(rng));
            a.extend([
                "-i".into(),
                "u5000".into(),
                "-c".into(),
                "10".into(),
                server.clone(),
            ]);
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            // (hping3 waits for answers after its last packet: the next one starts
            // meanwhile.)
            kids.push(spawn(&mut pair.client.command(&a)));
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    for mut k in kids {
        let _ = k.wait();
    }
}

/// Makes one capture in `dir`; returns its manifest entry.
pub fn capture(dir: &Path, plan: &Plan) -> Entry {
    let mut rng = Rng(plan.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ plan.kind as u64);
    let nets = Nets::of(&plan.set);
    let pair = Pair::with_net("ds", nets.lan);
    let (c, s) = (&pair.client, &pair.server);
    let mtu = rng.pick(&["1500", "1400", "1280", "9000"]).to_string();
    for (ns, ifn) in [(c, &pair.client_if), (s, &pair.server_if)] {
        ns.exec_ok(&["ip", "link", "set", ifn, "mtu", &mtu]);
    }
    for i in (10..50).chain(200..204) {
        c.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", pair.host(i)),
            "dev",
            &pair.client_if,
        ]);
    }
    let www = tempdir(&format!("www-{}", plan.seed));
    std::fs::write(www.join("index.html"), "<html>statewall dataset</html>\n").unwrap();
    std::fs::write(www.join("big.bin"), vec![0x5a; 4 << 20]).unwrap();
    let www_s = www.to_string_lossy().into_owned();
    let server_v4 = pair.server_v4.to_string();
    // The application kinds' server speaks HTTP/1.1 (keep-alive: the request flood
    // reuses its connections), the others' HTTP/1.0.
    let http = if plan.kind.is_app() {
        keep_alive_http(&pair, &www_s)
    } else {
        s.command(&[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            &server_v4,
            "-d",
            &www_s,
        ])
    };
    let (backlog, pace) = busy(plan.seed);
    let servers = [
        spawn(&mut busy_http(&pair, backlog, pace as f64 / 1000.0)),
        spawn(&mut { http }),
        spawn(&mut s.command(&["iperf3", "-s", "-p", "5201"])),
        spawn(&mut s.command(&["iperf3", "-s", "-p", "5202"])),
    ];
    let url = format!("http://{}:8080/", pair.server_v4);
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        c.exec(&["curl", "-s", "-o", "/dev/null", "-m", "1", &url])
            .status
            .success()
    });
    assert!(ready, "the HTTP server did not start");
    let mining = (plan.kind == Kind::Mining).then(|| {
        let d = tempdir(&format!("mining-{}", plan.seed));
        let (kids, key) = crate::mining::servers(&pair, &d);
        (d, kids, key)
    });
    let dns = plan.kind.is_app().then(|| {
        let d = tempdir(&format!("dns-{}", plan.seed));
        let kids = crate::apps::dns_servers(&pair, &d);
        let mut probe = Rng(plan.seed);
        let up = (0..40).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            crate::apps::lookup(&pair, &pair.host(10), &mut probe)
        });
        assert!(up, "the server's dnsmasq did not answer");
        (d, kids)
    });
    let dump = Dump::server(&pair, &dir.join(plan.file()), &[]);
    let start = Instant::now();
    let until = start + Duration::from_secs(plan.seconds);
    std::thread::scope(|sc| {
        sc.spawn(|| benign(&pair, plan.seed, until, dns.is_some()));
        if let Some((_, _, key)) = &mining {
            crate::mining::sessions(&pair, key, plan.seed, until);
        } else if plan.kind != Kind::Benign {
            let lead = plan.seconds / 5;
            let secs = plan.seconds.saturating_sub(2 * lead).max(1);
            std::thread::sleep(Duration::from_secs(lead));
            flood(&pair, plan, &mut rng, secs);
        }
    });
    dump.stop();
    for mut k in servers {
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = std::fs::remove_dir_all(&www);
    if let Some((d, kids)) = dns {
        for mut k in kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = std::fs::remove_dir_all(&d);
    }
    let (attackers, victims) = match mining {
        Some((d, kids, _)) => {
            for mut k in kids {
                let _ = k.kill();
                let _ = k.wait();
            }
            let _ = std::fs::remove_dir_all(&d);
            crate::mining::labels(&pair)
        }
        None => {
            let mut a = nets.attackers();
            if plan.kind == Kind::Dns {
                a.push(format!("{}/32", crate::apps::reflector(&pair)));
            }
            (a, vec![format!("{}/32", pair.server_v4)])
        }
    };
    Entry {
        file: plan.file(),
        kind: plan.kind.name().into(),
        attackers,
        victims,
        seed: plan.seed,
        set: plan.set.clone(),
    }
}

/// tcpdump on a pair's server veth, writing a file: 128-byte snap length, each packet
/// written as it comes.
pub struct Dump(Child);

impl Dump {
    /// Starts capturing what passes `pair`'s server veth (and `filter`, tcpdump's filter
    /// words: none for all) into `file`; returns once tcpdump is listening.
    pub fn server(pair: &Pair, file: &Path, filter: &[&str]) -> Dump {
        let f = file.to_string_lossy();
        let mut a = vec![
            "tcpdump",
            "-i",
            &pair.server_if,
            "-s",
            "128",
            "-U",
            "-w",
            &f,
        ];
        a.extend_from_slice(filter);
        let d = Dump(spawn(pair.server.command(&a).stderr(Stdio::null())));
        std::thread::sleep(Duration::from_millis(1000));
        d
    }

    /// Stops it half a second from now (the last packets in), with the file complete.
    pub fn stop(mut self) {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: plain kill(2) of our child; tcpdump writes its buffer out on SIGTERM.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Dump {
    fn drop(&mut self) {
        // (After `stop` it has exited: nothing to kill.)
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The busy server's listen backlog and pace (ms between accepts) for a capture's seed.
fn busy(seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed ^ 7);
    (rng.range(1, 3), rng.range(100, 1000))
}

/// An overloaded HTTP server on port 8090 of the address its first argument names: its
/// listen backlog the second argument, it answers one connection at a time, accepting the
/// next only after the third argument's seconds (a server that cannot keep up: the
/// requests beyond its backlog wait in SYN-RECV, and their handshakes and requests are
/// sent again).
const BUSY: &str = r#"import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8090))
s.listen(int(sys.argv[2]))
while True:
    time.sleep(float(sys.argv[3]))
    c, _ = s.accept()
    c.settimeout(2)
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 23\r\n\r\n<html>statewall</html>\n")
    except OSError:
        pass
    c.close()
"#;

/// Python's threading HTTP server over HTTP/1.1 on port 8080 of the address its second
/// argument names, serving the folder its first argument names, saying `Connection: keep-alive` (ab reuses a connection only
/// when told).
const HTTP11: &str = r#"import functools, http.server as h, sys
class H(h.SimpleHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def end_headers(self):
        self.send_header('Connection', 'keep-alive')
        super().end_headers()
handler = functools.partial(H, directory=sys.argv[1])
h.ThreadingHTTPServer((sys.argv[2], 8080), handler).serve_forever()
"#;

/// One GET of `url` by curl in namespace `ns`, from address `from`, within 3 s: true
/// when it succeeded.
pub fn http_get(ns: &crate::netns::NetNs, from: &str, url: &str) -> bool {
    ns.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "3",
        "--interface",
        from,
        url,
    ])
    .status
    .success()
}

/// [`BUSY`] in the pair's server namespace on its address, port 8090: listen backlog
/// `backlog`, one connection accepted every `pace` seconds.
pub fn busy_http(pair: &Pair, backlog: u64, pace: f64) -> Command {
    pair.server.command(&[
        "python3",
        "-c",
        BUSY,
        &pair.server_v4.to_string(),
        &backlog.to_string(),
        &pace.to_string(),
    ])
}

/// [`HTTP11`] in the pair's server namespace, serving the folder `www`.
pub fn keep_alive_http(pair: &Pair, www: &str) -> Command {
    let addr = pair.server_v4.to_string();
    pair.server.command(&["python3", "-c", HTTP11, www, &addr])
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("statewall-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The plans of a set: `rounds` captures of each of `kinds`, the floods answered and
/// spoofed (each with its own seed), and a benign capture (none when `benign_seconds` is
/// 0).
pub fn plans(
    set: &str,
    seed: u64,
    rounds: u64,
    seconds: u64,
    benign_seconds: u64,
    kinds: &[Kind],
) -> Vec<Plan> {
    let mut v = Vec::new();
    // Seeds: a round's captures take 2 each from its own block of 10 (more when more
    // kinds need it), so that no two captures share one.
    let block = (2 * kinds.len() as u64).max(10);
    for round in 0..rounds {
        for (i, kind) in kinds.iter().copied().enumerate() {
            let spoofs: &[bool] = if kind.is_app() {
                &[false]
            } else {
                &[false, true]
            };
            for &spoofed in spoofs {
                v.push(Plan {
                    kind,
                    spoofed,
                    seconds,
                    seed: seed + block * round + 2 * i as u64 + spoofed as u64,
                    set: set.into(),
                    walk_sources: 0,
                });
            }
        }
    }
    if benign_seconds > 0 {
        v.push(Plan {
            kind: Kind::Benign,
            spoofed: false,
            seconds: benign_seconds,
            seed: seed + 100,
            set: set.into(),
            walk_sources: 0,
        });
    }
    v
}

/// The plans of a mining set: `rounds` captures of `seconds`, each with its own seed.
pub fn mining_plans(set: &str, seed: u64, rounds: u64, seconds: u64) -> Vec<Plan> {
    (0..rounds)
        .map(|r| Plan {
            kind: Kind::Mining,
            spoofed: false,
            seconds,
            seed: seed + r,
            set: set.into(),
            walk_sources: 0,
        })
        .collect()
}

/// Makes the captures of `plans` in `dir` and writes (or extends) its `manifest.json`.
pub fn make(dir: &Path, plans: &[Plan]) -> Result<Manifest, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("manifest.json");
    let mut m = match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(_) => Manifest::default(),
    };
    for p in plans {
        eprintln!("dataset: {} ({} s)", p.file(), p.seconds);
        let e = capture(dir, p);
        m.captures.retain(|x| x.file != e.file);
        m.captures.push(e);
        let text = serde_json::to_string_pretty(&m).expect("a manifest serializes");
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(m)
}
