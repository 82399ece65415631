//! A scan cannot tell protected ports from closed ones. nmap, from a namespace the test
//! creates, scans a server whose doors protect tcp/22 and tcp/443 and whose gate protects
//! udp/9922: a SYN scan of every TCP port (IPv4) and of a range (IPv6), and a UDP scan of
//! the protected and knock ports and their neighbours, report every port without a grant
//! as `closed`, like the host's own closed ports; an open port stays `open`. With
//! `reject = "drop"` the protected ports show up as `filtered` (today's behaviour, and the
//! proof that the scan can tell). A spoofed SYN flood to a protected port gets no more
//! resets than the bucket allows.

mod common;

use std::{
    collections::BTreeMap,
    net::{IpAddr, TcpListener},
    time::{Duration, Instant},
};

use common::{config_on, raw_listener, raw_socket, send_raw, Kernel};
use statewall_common::parse::parse_packet;
use statewall_harness::{netns::Pair, packet::Packet};

/// The doors and the protected UDP port, and `extra` lines for `[gate]`.
fn config(gate_extra: &str) -> String {
    format!(
        "[gate]\nprotected = [\"udp/9922\"]\n{gate_extra}\n\n\
         [[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\n\n\
         [[knock]]\nname = \"web\"\nsequence = \"7100,8100:udp\"\nprotected = [\"tcp/443\"]\n"
    )
}

/// nmap in the client namespace (`args` before the target): each port it lists, with its
/// state, and the state and number of the ports it did not list.
fn nmap(
    pair: &Pair,
    args: &[&str],
    target: IpAddr,
) -> (BTreeMap<u16, String>, Option<(String, u32)>) {
    let t = target.to_string();
    let mut a = vec!["nmap", "-n", "-Pn", "-T4", "-oG", "-"];
    if target.is_ipv6() {
        a.push("-6");
    }
    a.extend_from_slice(args);
    a.push(&t);
    let out = pair.client.exec(&a);
    assert!(out.status.success(), "nmap {args:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Ports: "))
        .unwrap_or_else(|| panic!("no Ports line from nmap {args:?}:\n{text}"));
    let mut ports = BTreeMap::new();
    let list = line.split("Ports: ").nth(1).unwrap();
    let list = list.split('\t').next().unwrap();
    for item in list.split(", ") {
        let f: Vec<&str> = item.trim().split('/').collect();
        ports.insert(f[0].parse().unwrap(), f[1].to_string());
    }
    let ignored = line.split("Ignored State: ").nth(1).map(|rest| {
        let (state, n) = rest.trim().split_once(" (").unwrap();
        (state.to_string(), n.trim_end_matches(')').parse().unwrap())
    });
    (ports, ignored)
}

/// Scans ask the server's closed ports right away: no per-destination ICMP limit in the
/// server's namespace (the test's own), so that its closed UDP ports answer every probe.
fn quick_icmp(pair: &Pair) {
    pair.server
        .exec_ok(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
    pair.server
        .exec_ok(&["sysctl", "-qw", "net.ipv6.icmp.ratelimit=0"]);
}

#[test]
fn protected_ports_scan_like_closed_ones() {
    let pair = Pair::new("scan");
    quick_icmp(&pair);
    let cfg = config_on(&pair, &config(""));
    let k = Kernel::new("scan", &cfg);
    let (v4, v6) = (IpAddr::V4(pair.server_v4), IpAddr::V6(pair.server_v6));
    let _open: Vec<TcpListener> = [v4, v6]
        .into_iter()
        .map(|a| pair.server.run(|| TcpListener::bind((a, 80))).unwrap())
        .collect();

    // Every TCP port over IPv4: only 80 is open, every other port (22 and 443 included)
    // is closed.
    let (listed, ignored) = nmap(&pair, &["-sS", "-p-", "--max-retries", "1"], v4);
    assert_eq!(
        listed,
        BTreeMap::from([(80, "open".to_string())]),
        "ports nmap tells apart (ignored: {ignored:?})"
    );
    assert_eq!(ignored, Some(("closed".to_string(), 65534)));
    // IPv6, around the protected ports.
    let (listed, _) = nmap(&pair, &["-sS", "-p", "20-25,80,440-445,7000,8000,9000"], v6);
    for (port, state) in &listed {
        let want = if *port == 80 { "open" } else { "closed" };
        assert_eq!(state, want, "IPv6 tcp/{port}: {listed:?}");
    }
    // UDP, both families: the protected port, the knock ports and their neighbours.
    for target in [v4, v6] {
        let (listed, _) = nmap(&pair, &["-sU", "-p", "8099-8101,9920-9924"], target);
        assert_eq!(listed.len(), 8, "{target}: {listed:?}");
        for (port, state) in &listed {
            assert_eq!(state, "closed", "{target} udp/{port}: {listed:?}");
        }
    }
    let c: BTreeMap<&str, u64> = k.eng.gate_counters().unwrap().into_iter().collect();
    assert!(
        c["reset"] >= 4 && c["unreachable"] >= 2,
        "the gate answered for the protected ports: {c:?}"
    );
}

#[test]
fn reject_drop_lets_a_scan_see_the_protected_ports() {
    let pair = Pair::new("scandrop");
    quick_icmp(&pair);
    let cfg = config_on(&pair, &config("reject = \"drop\""));
    let _k = Kernel::new("scandrop", &cfg);
    let v4 = IpAddr::V4(pair.server_v4);
    let (listed, _) = nmap(&pair, &["-sS", "-p", "20-25,440-445"], v4);
    for (port, state) in &listed {
        let want = if [22, 443].contains(port) {
            "filtered"
        } else {
            "closed"
        };
        assert_eq!(state, want, "tcp/{port}: {listed:?}");
    }
}

fn mac(pair: &Pair, server: bool) -> [u8; 6] {
    let (ns, ifname) = if server {
        (&pair.server, &pair.server_if)
    } else {
        (&pair.client, &pair.client_if)
    };
    let out = ns.exec_ok(&["ip", "-o", "link", "show", ifname]);
    let s = out.split("link/ether ").nth(1).expect("no link/ether");
    let mut m = [0u8; 6];
    for (i, b) in s.split([':', ' ']).take(6).enumerate() {
        m[i] = u8::from_str_radix(b, 16).unwrap();
    }
    m
}

/// SYNs to tcp/22 from 20,000 spoofed sources of 10.77.9.0/24 (a prefix of the test's
/// own, routed nowhere: the client namespace has no default route and does not forward)
/// with a bucket of 1,000 resets a second and a burst of 100: the resets seen on the wire
/// stay within what the bucket allows over the flood's time, and the rest are counted as
/// limited.
#[test]
fn a_spoofed_syn_flood_gets_no_more_resets_than_the_bucket() {
    let pair = Pair::new("rstflood");
    let cfg = config_on(&pair, &config("reset_per_sec = 1000\nreset_burst = 100"));
    let k = Kernel::new("rstflood", &cfg);
    let rx = pair.client.run(|| raw_listener(&pair.client_if));
    let tx = pair.client.run(|| raw_socket(&pair.client_if));
    let (cm, sm) = (mac(&pair, false), mac(&pair, true));
    let server = IpAddr::V4(pair.server_v4);
    let counting = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = vec![0u8; 2048];
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            // SAFETY: reading into a buffer we own; rx has a 200 ms receive timeout.
            let got = unsafe { libc::recv(rx, buf.as_mut_ptr() as *mut _, buf.len(), 0) };
            if got <= 0 {
                continue;
            }
            let p = parse_packet(&buf[..got as usize]);
            if p.l4proto == 6
                && p.tcp_flags & 0x04 != 0
                && p.sport == 22
                && p.daddr[..3] == [10, 77, 9]
            {
                n += 1;
            }
        }
        // SAFETY: closing the socket this thread was given.
        unsafe { libc::close(rx) };
        n
    });
    let sent = 20_000u32;
    let t0 = Instant::now();
    for i in 0..sent {
        let src = IpAddr::from([10, 77, 9, (i % 250) as u8 + 1]);
        let mut f = Packet::tcp(src, server, 1024 + (i % 60000) as u16, 22, 0x02).build();
        f[..6].copy_from_slice(&sm);
        f[6..12].copy_from_slice(&cm);
        send_raw(&tx, &f);
    }
    let took = t0.elapsed();
    // SAFETY: closing the socket made above.
    unsafe { libc::close(tx) };
    let replies = counting.join().unwrap();
    let c: BTreeMap<&str, u64> = k.eng.gate_counters().unwrap().into_iter().collect();
    // What the bucket allows: its burst, and a thousand a second of the flood's time
    // (from the first SYN to the last, and the tail that was still in flight).
    let allowed = 100 + (1000.0 * (took.as_secs_f64() + 0.05)).ceil() as u64;
    common::tally("spoofed SYNs to a protected port", sent as u64);
    assert!(
        replies >= 100 && replies <= allowed,
        "{replies} resets on the wire, {allowed} allowed in {took:?}: {c:?}"
    );
    assert_eq!(c["reset"], replies, "every reset counted was seen: {c:?}");
    assert!(
        c["reset_limited"] >= sent as u64 - allowed,
        "the rest counted as limited: {c:?}"
    );
}
