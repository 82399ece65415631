//! The flood dataset's application-level attacks and its DNS, with real tools:
//! - an HTTP request flood: apache2-utils' `ab` with keep-alive, from the attacker
//!   addresses, each with its own concurrency (the server speaks HTTP/1.1 in these
//!   captures: each connection carries requests as fast as they are answered);
//! - a slow HTTP attack: `slowhttptest`, slow headers (slowloris) and a slow body at once,
//!   from one attacker address (the tool cannot bind one: the client namespace's route to
//!   the server takes that source while it runs; every benign tool binds its own);
//! - DNS reflection: nmap's `nping` sends queries whose source is the victim to a real DNS
//!   server (dnsmasq, at [`REFLECTOR`] in the client namespace), which answers each with a
//!   large TXT record, to the victim;
//! - benign DNS: lookups of a few names from the benign addresses to a dnsmasq on the
//!   server, sent and answered here ([`lookup`]).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    process::Child,
    time::Duration,
};

use crate::{
    netns::{spawn, Pair},
    rng::Rng,
};

/// The reflecting DNS server's address (in the client namespace) in [`Pair::new`]'s
/// network; [`reflector`] gives it in any pair's.
pub const REFLECTOR: &str = "10.77.0.60";

/// The reflecting DNS server's address in `pair`'s network (host .60).
pub fn reflector(pair: &Pair) -> String {
    pair.host(60)
}
/// The names the DNS servers answer: (name, record type).
const NAMES: [(&str, u16); 4] = [
    ("www.example", 1),
    ("mail.example", 1),
    ("www.example", 16),
    ("amp.example", 16),
];

/// A DNS query for `name` of type `qtype`, with id `id`, asking for recursion.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A dnsmasq answering [`NAMES`] on `addr`, port 53, in the namespace of `cmd` (the
/// binary only: no resolver, no hosts file, no service), its A records `a`. `dir` holds
/// its pid file.
fn dnsmasq(ns: &crate::netns::NetNs, addr: &str, a: &str, dir: &Path) -> Child {
    let big: String = "statewall-dataset ".repeat(14);
    let pid = dir.join(format!("dnsmasq-{addr}.pid"));
    spawn(&mut ns.command(&[
        "dnsmasq",
        "-k",
        // No configuration of the host's (/etc/dnsmasq.conf, dnsmasq.d).
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        &format!("--listen-address={addr}"),
        "-u",
        "root",
        &format!("--pid-file={}", pid.display()),
        "--log-facility=/dev/null",
        &format!("--address=/www.example/{a}"),
        &format!("--address=/mail.example/{a}"),
        "--txt-record=www.example,statewall",
        &format!("--txt-record=amp.example,{}", big.trim_end()),
    ]))
}

/// The DNS servers of a capture: one on the server for benign lookups, and the reflector
/// in the client namespace.
pub fn dns_servers(pair: &Pair, dir: &Path) -> Vec<Child> {
    pair.client.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", reflector(pair)),
        "dev",
        &pair.client_if,
    ]);
    let server = pair.server_v4.to_string();
    vec![
        dnsmasq(&pair.server, &server, &server, dir),
        dnsmasq(&pair.client, &reflector(pair), &server, dir),
    ]
}

/// One benign lookup from `from` (a client address) to the server's DNS: true when
/// answered.
pub fn lookup(pair: &Pair, from: &str, rng: &mut Rng) -> bool {
    let (name, qtype) = NAMES[rng.range(0, NAMES.len() as u64 - 1) as usize];
    let id = rng.range(1, 65535) as u16;
    let server = SocketAddr::from((pair.server_v4, 53));
    let from: Ipv4Addr = from.parse().expect("a client address");
    pair.client.run(|| {
        let Ok(s) = UdpSocket::bind((from, 0)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(800)));
        if s.send_to(&query(id, name, qtype), server).is_err() {
            return false;
        }
        let mut buf = [0u8; 1500];
        matches!(s.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == id.to_be_bytes())
    })
}

/// Runs `args` in the client namespace, one process per element, and waits for them;
/// panics when one fails (a capture labelled with an attack that did not run is worse
/// than none).
fn run_all(pair: &Pair, runs: Vec<Vec<String>>) {
    let mut kids = Vec::new();
    for a in &runs {
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        kids.push((
            a.join(" "),
            spawn(
                pair.client
                    .command(&a)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null()),
            ),
        ));
    }
    for (what, mut k) in kids {
        let st = k.wait().expect("waiting for an attack tool");
        assert!(st.success(), "{what}: {st}");
    }
}

/// An HTTP request flood for `secs`: ab from 1 to 3 attacker addresses.
pub fn http_flood(pair: &Pair, rng: &mut Rng, secs: u64) {
    let url = format!("http://{}:8080/", pair.server_v4);
    let runs = (200..200 + rng.range(1, 3) as u8)
        .map(|i| {
            vec![
                "ab".into(),
                "-q".into(),
                "-k".into(),
                "-B".into(),
                pair.host(i),
                "-c".into(),
                rng.range(2, 30).to_string(),
                "-t".into(),
                secs.to_string(),
                "-n".into(),
                "100000000".into(),
                "-s".into(),
                "3".into(),
                url.clone(),
            ]
        })
        .collect();
    run_all(pair, runs);
}

/// A slow HTTP attack for `secs` from one attacker address: slow headers and a slow body
/// at once, each with its own connections and pace. The client namespace's route takes
/// the attacker's source while it runs, and its own again after.
pub fn slow_http(pair: &Pair, rng: &mut Rng, secs: u64) {
    let src = pair.host(rng.range(200, 203) as u8);
    route_source(pair, &src);
    let url = format!("http://{}:8080/", pair.server_v4);
    let runs = ["-H", "-B"]
        .iter()
        .map(|mode| {
            vec![
                "slowhttptest".into(),
                mode.to_string(),
                "-c".into(),
                rng.range(50, 200).to_string(),
                "-r".into(),
                rng.range(10, 60).to_string(),
                "-i".into(),
                rng.range(2, 10).to_string(),
                "-l".into(),
                secs.to_string(),
                "-p".into(),
                "3".into(),
                "-u".into(),
                url.clone(),
            ]
        })
        .collect();
    run_all(pair, runs);
    route_source(pair, &pair.client_v4.to_string());
}

/// Makes `src` the source the client namespace's route to the pair's /24 gives a tool
/// that binds none (slowhttptest cannot); the client's own address puts it back.
pub fn route_source(pair: &Pair, src: &str) {
    pair.client.exec_ok(&[
        "ip",
        "route",
        "replace",
        &pair.net24(),
        "dev",
        &pair.client_if,
        "proto",
        "kernel",
        "scope",
        "link",
        "src",
        src,
    ]);
}

/// DNS reflection for `secs`: 1 to 3 streams of spoofed queries (source: the victim, each
/// stream its own victim port) to the reflector, which answers the victim.
pub fn dns_reflection(pair: &Pair, rng: &mut Rng, secs: u64) {
    let runs = (0..rng.range(1, 3))
        .map(|_| {
            let rate = rng.range(200, 1500);
            let q = query(rng.range(1, 65535) as u16, "amp.example", 16);
            let hex: String = q.iter().map(|b| format!("{b:02x}")).collect();
            vec![
                "nping".into(),
                "-q".into(),
                "--udp".into(),
                "-S".into(),
                pair.server_v4.to_string(),
                "-g".into(),
                rng.range(1024, 65000).to_string(),
                "-p".into(),
                "53".into(),
                "--data".into(),
                hex,
                "--rate".into(),
                rate.to_string(),
                "-c".into(),
                (rate * secs).to_string(),
                reflector(pair),
            ]
        })
        .collect();
    run_all(pair, runs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_laid_out_as_rfc_1035_says() {
        let q = query(0x1234, "amp.example", 16);
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..16], b"\x03amp");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 16, 0, 1]);
    }
}
