//! `[[switch]]` end to end: the learning-switch example between three namespaces the test
//! creates, each joined by a veth pair to a fourth (the switch's), with no bridge: frames
//! cross only because `sw_switch` forwards them. Raw frames with a test ethertype show
//! where a frame goes (forwarded to one port, or flooded to all others); pings show that
//! ordinary traffic (ARP included) works between every pair.

mod common;

use std::time::{Duration, Instant};

use common::{raw_listener, raw_socket, send_raw, Daemon, Paths};
use statewall_harness::netns::NetNs;

/// IEEE 802 local experimental ethertype: nothing in the namespaces answers it.
const ETH_TEST: [u8; 2] = [0x88, 0xb5];

fn mac(i: u8) -> [u8; 6] {
    [0x02, 0x5a, 0, 0, 0, i]
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn frame(dst: [u8; 6], src: [u8; 6], marker: u32) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_TEST);
    f.extend_from_slice(&marker.to_be_bytes());
    f.resize(60, 0);
    f
}

/// True when a frame carrying `marker` arrives on `fd` within about a second.
fn arrives(fd: i32, marker: u32) -> bool {
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while t0.elapsed() < Duration::from_secs(1) {
        // SAFETY: receiving into a buffer we own (SO_RCVTIMEO bounds the wait).
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), 0) };
        if n >= 18 && buf[12..14] == ETH_TEST && buf[14..18] == marker.to_be_bytes() {
            return true;
        }
    }
    false
}

struct Host {
    ns: NetNs,
    ip: String,
    tx: i32,
    rx: i32,
}

/// The switch namespace with ports swp1..3, and three hosts (eth0, MAC 02:5a::i,
/// 10.97.0.i/24, IPv6 off so that no neighbour discovery refreshes the table behind the
/// test's back).
fn topology() -> (NetNs, Vec<Host>) {
    let sw = NetNs::new("sw");
    let mut hosts = Vec::new();
    for i in 1..=3u8 {
        let ns = NetNs::new(&format!("h{i}"));
        let (port, peer) = (
            format!("swp{i}"),
            format!("h{i}x{}", std::process::id() % 10000),
        );
        sw.exec_ok(&[
            "ip", "link", "add", &port, "type", "veth", "peer", "name", &peer,
        ]);
        sw.exec_ok(&["ip", "link", "set", &peer, "netns", &ns.name]);
        sw.exec_ok(&["ip", "link", "set", &port, "up"]);
        ns.exec_ok(&["ip", "link", "set", &peer, "name", "eth0"]);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec_ok(&["ip", "link", "set", "eth0", "address", &mac_text(mac(i))]);
        let ip = format!("10.97.0.{i}");
        ns.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        let (tx, rx) = ns.run(|| (raw_socket("eth0"), raw_listener("eth0")));
        hosts.push(Host { ns, ip, tx, rx });
    }
    (sw, hosts)
}

fn counts(d: &Daemon) -> (u64, u64) {
    let x = d.get("/api/v1/xfsm");
    (
        common::transition_hits(&x, "learn: #1 "),
        common::transition_hits(&x, "learn: #2 "),
    )
}

#[test]
fn learning_switch_forwards_floods_ages_and_relearns() {
    let (sw, h) = topology();
    let p = Paths::new("switch");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/efsm/learning-switch.toml"
    ))
    .unwrap();
    // A 3-second ageing time, and the ports in the switch's namespace.
    let conf = text
        .replace("since(seen) < 30s", "since(seen) < 3s")
        .replace(
            "name = \"sw0\"\n",
            &format!("name = \"sw0\"\nnetns = \"{}\"\n", sw.name),
        );
    assert!(conf.contains("< 3s") && conf.contains(&sw.name));
    std::fs::write(&p.config, conf).unwrap();
    // Without the switch nothing crosses: the ports are not bridged.
    let ping = |from: &Host, to: &Host| {
        from.ns
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &to.ip])
            .status
            .success()
    };
    assert!(!ping(&h[0], &h[1]), "frames cross without statewall");
    let d = Daemon::start(&p, &[]);
    assert_eq!(d.programs(Some("swp1"), "ingress"), ["sw_switch"]);

    // Pings between every pair (ARP broadcasts flooded, replies forwarded).
    for (a, b) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        assert!(
            ping(&h[a], &h[b]),
            "ping h{} -> h{}: {} {}",
            a + 1,
            b + 1,
            d.get("/api/v1/xfsm"),
            d.get("/api/v1/xfsm/machines/learn")
        );
    }
    // From here on the hosts send only what the test sends: their neighbour entries made
    // permanent, no ARP probe refreshes the table behind its back.
    for a in &h {
        for (j, b) in h.iter().enumerate() {
            if a.ip != b.ip {
                let m = mac_text(mac(j as u8 + 1));
                a.ns.exec_ok(&[
                    "ip",
                    "neigh",
                    "replace",
                    &b.ip,
                    "lladdr",
                    &m,
                    "nud",
                    "permanent",
                    "dev",
                    "eth0",
                ]);
            }
        }
    }
    let (known, flooded) = counts(&d);
    assert!(known > 0 && flooded > 0, "known {known}, flooded {flooded}");
    let table = d.get("/api/v1/xfsm/machines/learn");
    let flows = table["flows"].as_array().unwrap();
    for i in 1..=3u8 {
        let name = std::ffi::CString::new(format!("swp{i}")).unwrap();
        // SAFETY: a valid C string.
        let port = sw.run(|| unsafe { libc::if_nametoindex(name.as_ptr()) });
        let f = flows
            .iter()
            .find(|f| f["addrs"][0] == mac_text(mac(i)))
            .unwrap_or_else(|| panic!("no entry for h{i}'s MAC: {table}"));
        assert_eq!(f["registers"]["port"], port as u64, "{table}");
    }

    // A known destination: to its port only. An unknown one: to every other port.
    let mut marker = 1;
    let mut send = |from: usize, src: [u8; 6], dst: [u8; 6]| {
        marker += 1;
        send_raw(&h[from].tx, &frame(dst, src, marker));
        marker
    };
    let m = send(1, mac(2), mac(1)); // h2's entry fresh
    assert!(arrives(h[0].rx, m));
    let m = send(0, mac(1), mac(2));
    assert!(arrives(h[1].rx, m), "known destination not forwarded");
    assert!(!arrives(h[2].rx, m), "known destination flooded");
    let m = send(0, mac(1), [0x02, 0x5a, 0, 0, 0, 0x77]);
    assert!(
        arrives(h[1].rx, m) && arrives(h[2].rx, m),
        "unknown not flooded"
    );
    assert!(!arrives(h[0].rx, m), "flooded back to its own port");

    // Ageing: 3 s without a frame from h2, and its entry no longer counts.
    std::thread::sleep(Duration::from_millis(3500));
    let m = send(0, mac(1), mac(2));
    let (to_h2, to_h3) = (arrives(h[1].rx, m), arrives(h[2].rx, m));
    assert!(
        to_h2 && to_h3,
        "aged entry not flooded (h2 {to_h2}, h3 {to_h3}): {}",
        d.get("/api/v1/xfsm/machines/learn")
    );

    // A moved MAC: h2's address moves to h3 (h2 gone) and is relearned by its first frame
    // there, before its old entry ages out.
    let m = send(1, mac(2), mac(1)); // h2 refreshes its entry (port 2)
    assert!(arrives(h[0].rx, m));
    h[1].ns.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    h[2].ns
        .exec_ok(&["ip", "link", "set", "eth0", "address", &mac_text(mac(2))]);
    let m = send(2, mac(2), mac(1)); // from h3, now with h2's MAC
    assert!(arrives(h[0].rx, m));
    let m = send(0, mac(1), mac(2));
    assert!(arrives(h[2].rx, m), "moved MAC not relearned");
    common::tally("switch frames checked", marker as u64);
    d.stop();
}

/// `sw_switch` under test-run against the interpreter running the learning-switch example
/// (its own reading of the machine: keys by MAC, registers, conditions, forward): frames
/// of five MACs, broadcast and unknown destinations, IP and not, on three ports of a
/// namespace the test creates (veths whose peers are there too: floods end there), with the clock
/// crossing the ageing time. The verdicts and the MAC tables must be equal.
#[test]
fn sw_switch_equals_the_interpreter_on_random_frames() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use statewall_common::xfsm::{
        acts::{SwitchDef, MAP_SWITCH, MAP_SWITCH_IF},
        interp::Interp,
        regs::{FlowRegs, MAP_REGS},
        StateKey,
    };
    let ns = NetNs::new("swtr");
    for i in 1..=3 {
        let (d, e) = (format!("d{i}"), format!("e{i}"));
        ns.exec_ok(&["ip", "link", "add", &d, "type", "veth", "peer", "name", &e]);
        ns.exec_ok(&["ip", "link", "set", &d, "up"]);
        ns.exec_ok(&["ip", "link", "set", &e, "up"]);
    }
    let frames = common::soak_cases(3000) as usize;
    ns.run(move || {
        let ports: Vec<u32> = (1..=3)
            .map(|i| {
                let n = std::ffi::CString::new(format!("d{i}")).unwrap();
                // SAFETY: a valid C string.
                unsafe { libc::if_nametoindex(n.as_ptr()) }
            })
            .collect();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/efsm/learning-switch.toml"
        ))
        .unwrap()
        .replace("since(seen) < 30s", "since(seen) < 3s");
        let cfg = statewall::config::Config::parse(&text, "learning-switch.toml").unwrap();
        let raws = cfg.raw_machines().unwrap();
        let mut compiled = statewall::xfsm::compile(&[], &raws).unwrap();
        compiled.switch_mask = 1;
        let mut bed = statewall_harness::testrun::TestBed::new();
        statewall::xfsm::write_tables(&mut bed, &compiled, Some(&[])).unwrap();
        let mut def = SwitchDef {
            masks: [1, 1],
            n: 3,
            ..Default::default()
        };
        def.ports[..3].copy_from_slice(&ports);
        {
            let mut a: aya::maps::Array<&mut aya::maps::MapData, SwitchDef> =
                bed.map(MAP_SWITCH).try_into().unwrap();
            a.set(0, def, 0).unwrap();
            let mut h: aya::maps::HashMap<&mut aya::maps::MapData, u32, u32> =
                bed.map(MAP_SWITCH_IF).try_into().unwrap();
            for p in &ports {
                h.insert(*p, 0, 0).unwrap();
            }
        }
        let mut it = Interp::new(raws, 0);
        let mut rng = StdRng::seed_from_u64(0x5717);
        // Where each MAC lives (it moves now and then).
        let mut home: Vec<usize> = (0..5).map(|i| i % 3).collect();
        let mut now = 1_000 * 1_000_000_000u64;
        let (mut flooded, mut forwarded) = (0, 0);
        for i in 0..frames {
            now += match rng.random_range(0..20) {
                0 => rng.random_range(2_000..5_000) * 1_000_000,
                _ => rng.random_range(0..300) * 1_000_000,
            };
            if rng.random_bool(0.01) {
                let m = rng.random_range(0..5);
                home[m] = rng.random_range(0..3);
            }
            let s = rng.random_range(0..5);
            let dst = match rng.random_range(0..10) {
                0 => [0xff; 6],
                1 => [0x02, 0x5a, 0, 0, 0, 0x77],
                _ => mac(rng.random_range(0..5) as u8 + 1),
            };
            let mut f = if rng.random_bool(0.5) {
                frame(dst, mac(s as u8 + 1), i as u32)
            } else {
                statewall_harness::packet::Packet::udp(
                    "10.98.0.1".parse().unwrap(),
                    "10.98.0.2".parse().unwrap(),
                    4000,
                    5000,
                )
                .build()
            };
            f[..6].copy_from_slice(&dst);
            f[6..12].copy_from_slice(&mac(s as u8 + 1));
            let port = ports[home[s]];
            bed.freeze(now);
            let (got, _, _) = bed.run_skb(statewall::engine::ebpf::PROG_SWITCH, &f, port);
            let mut info = statewall_common::parse::parse_packet(&f);
            info.ifindex = port;
            let want = it.step_switch(&info, now);
            let expect = match (want.pass, want.fwd) {
                (false, _) => statewall_common::TC_ACT_SHOT,
                (true, None) => statewall_common::TCX_NEXT,
                (true, Some(to)) if to == port => statewall_common::TC_ACT_SHOT,
                (true, Some(to)) if to != 0 && ports.contains(&to) => {
                    forwarded += 1;
                    7 // TC_ACT_REDIRECT
                }
                (true, Some(_)) => {
                    flooded += 1;
                    statewall_common::TC_ACT_SHOT
                }
            };
            assert_eq!(got, expect, "frame {i}: {want:?}");
        }
        // The MAC tables: registers by MAC.
        let r: aya::maps::HashMap<&aya::maps::MapData, StateKey, FlowRegs> =
            (&*bed.map(MAP_REGS)).try_into().unwrap();
        let mut kr: Vec<([u8; 16], [u64; 4])> = r
            .iter()
            .map(|e| e.unwrap())
            .map(|(k, v)| (k.addrs[0], v.r))
            .collect();
        kr.sort();
        let ir: Vec<([u8; 16], [u64; 4])> = it.regs.iter().map(|(k, v)| (k.2[0], *v)).collect();
        assert_eq!(kr, ir);
        assert!(flooded > 100 && forwarded > 100, "{flooded} {forwarded}");
        common::tally("switch frames, kernel = interpreter", frames as u64);
    });
}
