//! Extended machines (registers, conditions, updates) end to end: the policer example with
//! real traffic between namespaces the test creates; configs at every maximum load (the
//! verifier takes the program as it is, whatever the tables hold) and one over each is a
//! config error that says where.

mod common;

use std::process::Stdio;

use common::{cli, raw_socket, send_raw, udp_in, udp_passes, Daemon, Kernel, Paths};
use statewall::config::Config;
use statewall_common::xfsm::regs::{FLOW_REGS, GLOBAL_REGS, MAX_CONDS, MAX_UPDATES};
use statewall_harness::netns::Pair;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Frame bytes per second the policer example lets through: one byte per 2^10 ns.
const RATE_BYTES: f64 = 1e9 / 1024.0;
/// iperf3's UDP payload in this test, and the frame around it (UDP, IPv4 or IPv6,
/// Ethernet).
const PAYLOAD: usize = 1200;

/// Received payload bits per second of an iperf3 UDP client run (`-J`): its sending rate
/// less what the server reported lost.
fn received_bps(json: &[u8]) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(json).expect("iperf3 -J output");
    assert!(v["error"].is_null(), "iperf3: {}", v["error"]);
    let sum = &v["end"]["sum"];
    let sent = sum["bits_per_second"].as_f64().expect("bits_per_second");
    let lost = sum["lost_percent"].as_f64().expect("lost_percent");
    sent * (1.0 - lost / 100.0)
}

/// examples/efsm/policer.toml: an IPv4 source sending UDP at twice its rate arrives at
/// the rate (within 10%); an IPv6 source sending at half the rate at the same time loses
/// nothing that the policer drops (it has its own bucket).
#[test]
fn policer_example_holds_a_source_to_its_rate() {
    let pair = Pair::new("po");
    let mut cfg = Config::parse(&example("efsm/policer.toml"), "policer.toml").unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let _k = Kernel::new("po", &cfg);
    let payload_rate = |frame: usize| RATE_BYTES * 8.0 * PAYLOAD as f64 / frame as f64;
    let (v4_frame, v6_frame) = (PAYLOAD + 8 + 20 + 14, PAYLOAD + 8 + 40 + 14);
    let want_v4 = payload_rate(v4_frame);
    let servers: Vec<_> = ["5201", "5202"]
        .iter()
        .map(|port| {
            pair.server
                .command(&["iperf3", "-s", "-1", "-p", port])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let client = |addr: String, port: &str, bps: f64| {
        pair.client
            .command(&[
                "iperf3",
                "-u",
                "-c",
                &addr,
                "-p",
                port,
                "-t",
                "4",
                "-l",
                &PAYLOAD.to_string(),
                "-b",
                &format!("{}", bps as u64),
                "-J",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let over = client(pair.server_v4.to_string(), "5201", 2.0 * want_v4);
    let under = client(
        pair.server_v6.to_string(),
        "5202",
        0.5 * payload_rate(v6_frame),
    );
    let over = over.wait_with_output().unwrap();
    let under = under.wait_with_output().unwrap();
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(over.status.success(), "{over:?}");
    assert!(under.status.success(), "{under:?}");
    let got = received_bps(&over.stdout);
    let ratio = got / want_v4;
    eprintln!(
        "policed source: {:.2} Mbit/s received for {:.2} Mbit/s allowed ({ratio:.3})",
        got / 1e6,
        want_v4 / 1e6
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "policed source arrives at {ratio:.3} of its rate"
    );
    let v: serde_json::Value = serde_json::from_slice(&under.stdout).unwrap();
    let lost = v["end"]["sum"]["lost_percent"].as_f64().unwrap();
    assert!(
        lost < 1.0,
        "the other source lost {lost}% while under its own rate"
    );
}

/// A machine with every maximum: per-flow and global registers, conditions, updates per
/// transition.
fn at_limits(flow: usize, global: usize, conds: usize, updates: usize) -> String {
    let mut t = String::from("[[xfsm]]\nname = \"max\"\nlookup = [\"src_ip\"]\n");
    let regs: Vec<String> = (0..flow).map(|i| format!("\"r{i}\"")).collect();
    let globs: Vec<String> = (0..global).map(|i| format!("\"g{i}\"")).collect();
    t += &format!(
        "registers = [{}]\nglobals = [{}]\n",
        regs.join(", "),
        globs.join(", ")
    );
    for i in 0..conds {
        t += &format!(
            "[[xfsm.condition]]\nname = \"c{i}\"\ntest = \"r{} >= g{}\"\n",
            i % flow,
            i % global
        );
    }
    let ups: Vec<String> = (0..updates)
        .map(|i| format!("\"r{} += since(g{}) >> 3\"", i % flow, i % global))
        .collect();
    t += &format!(
        "[[xfsm.transition]]\nproto = \"udp\"\nwhen = [\"c0\", \"!c{}\"]\nupdate = [{}]\n",
        conds - 1,
        ups.join(", ")
    );
    t += "[[xfsm.transition]]\nproto = \"udp\"\naction = \"drop\"\nupdate = [\"g0 += 1\"]\n";
    t
}

#[test]
fn a_config_at_every_maximum_loads_and_one_over_is_refused_where_it_is() {
    let text = at_limits(FLOW_REGS, GLOBAL_REGS, MAX_CONDS, MAX_UPDATES);
    let mut cfg = Config::parse(&text, "max.toml").unwrap();
    // Eight such machines: the most a config may have.
    let one = cfg.machines[0].clone();
    cfg.machines = (0..8)
        .map(|i| {
            let mut m = one.clone();
            m.name = format!("max{i}");
            m
        })
        .collect();
    let pair = Pair::new("mx");
    cfg.interfaces = vec![pair.server_interface()];
    let k = Kernel::new("mx", &cfg);
    assert_eq!(k.eng.xfsm_compiled().unwrap().machines.len(), 8);
    for (text, what) in [
        (
            at_limits(FLOW_REGS + 1, GLOBAL_REGS, MAX_CONDS, MAX_UPDATES),
            "registers",
        ),
        (
            at_limits(FLOW_REGS, GLOBAL_REGS + 1, MAX_CONDS, MAX_UPDATES),
            "globals",
        ),
        (
            at_limits(FLOW_REGS, GLOBAL_REGS, MAX_CONDS + 1, MAX_UPDATES),
            "condition",
        ),
        (
            at_limits(FLOW_REGS, GLOBAL_REGS, MAX_CONDS, MAX_UPDATES + 1),
            "transition #1 update",
        ),
    ] {
        let err = Config::parse(&text, "over.toml").unwrap_err().to_string();
        assert!(
            err.contains("[[xfsm]] #1 (max)") && err.contains(what) && err.contains("at most"),
            "{what}: {err}"
        );
    }
    for (bad, what) in [
        ("r0 ~ 1", "condition #1 test"),
        ("nope >= 1", "condition #1 test"),
        ("r0 >= now >> 64", "condition #1 test"),
    ] {
        let text = at_limits(1, 1, 1, 1).replace("r0 >= g0", bad);
        let err = Config::parse(&text, "bad.toml").unwrap_err().to_string();
        assert!(err.contains(what), "{bad}: {err}");
    }
    let text = at_limits(1, 1, 1, 1).replace("\"c0\", \"!c0\"", "\"c9\"");
    let err = Config::parse(&text, "bad.toml").unwrap_err().to_string();
    assert!(
        err.contains("transition #1 when") && err.contains("c9"),
        "{err}"
    );
}

/// `statewall xfsm show` (and its API) lists a machine's flows with their registers by
/// name: the policer's bucket for the one source that sent, with `stamp` a kernel time
/// and `tokens` at most the burst less what the source sent.
#[test]
fn xfsm_show_lists_flows_and_registers() {
    let p = Paths::new("xs");
    let pair = Pair::new("xs");
    let conf = common::example_on(&pair, "efsm/policer.toml");
    std::fs::write(&p.config, conf).unwrap();
    let d = Daemon::start(&p, &[]);
    let srv_addr = std::net::SocketAddr::from((pair.server_v4, 5000));
    let srv = udp_in(&pair.server, srv_addr);
    let cli_sock = udp_in(
        &pair.client,
        std::net::SocketAddr::from((pair.client_v4, 6000)),
    );
    for _ in 0..3 {
        assert!(udp_passes(&cli_sock, &srv, srv_addr, &[7; 100]));
    }
    let v = d.get("/api/v1/xfsm/machines/policer");
    let flows = v["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 1, "{v}");
    let f = &flows[0];
    assert_eq!(f["addrs"][0], pair.client_v4.to_string(), "{v}");
    assert_eq!(f["state"], "DEFAULT", "{v}");
    let tokens = f["registers"]["tokens"].as_u64().unwrap();
    let stamp = f["registers"]["stamp"].as_u64().unwrap();
    // Three frames of 142 bytes paid from a bucket of 30,000 (refilled by at most the
    // time between them, capped at the burst).
    assert!((29_000..=30_000).contains(&tokens), "{v}");
    assert!(stamp > 0, "{v}");
    assert_eq!(v["globals"], serde_json::json!({}), "{v}");
    let (code, out, err) = cli(&p, &["xfsm", "show", "policer"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&pair.client_v4.to_string()) && out.contains(&format!("tokens={tokens}")),
        "{out}"
    );
    let (code, _, err) = cli(&p, &["xfsm", "show", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("no [[xfsm]] machine named \"nope\""), "{err}");
    d.stop();
}

/// examples/efsm/heavy-hitters.toml: a 1.5 MB UDP flow is marked HEAVY and reported by an
/// event carrying its byte count; a small flow from the same host to another port is not.
#[test]
fn heavy_hitter_example_marks_and_reports_the_big_flow_only() {
    let p = Paths::new("hh");
    let pair = Pair::new("hh");
    let conf = common::example_on(&pair, "efsm/heavy-hitters.toml");
    std::fs::write(&p.config, conf).unwrap();
    let d = Daemon::start(&p, &[]);
    let events = common::follow_events(&p.socket, "/api/v1/events");
    // What arrives demoted (DSCP CS1, mark 0x48), counted by nftables after the hook.
    pair.server.exec_ok(&["nft", "add", "table", "inet", "hh"]);
    pair.server.exec_ok(&[
        "nft",
        "add chain inet hh c { type filter hook input priority 0 ; }",
    ]);
    for port in ["5001", "5002"] {
        pair.server.exec_ok(&[
            "nft", "add", "rule", "inet", "hh", "c", "meta", "mark", "0x48", "ip", "dscp", "cs1",
            "udp", "dport", port, "counter",
        ]);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let big = std::net::SocketAddr::from((pair.server_v4, 5001));
    let small = std::net::SocketAddr::from((pair.server_v4, 5002));
    let srv_big = udp_in(&pair.server, big);
    let srv_small = udp_in(&pair.server, small);
    let c_big = udp_in(
        &pair.client,
        std::net::SocketAddr::from((pair.client_v4, 6001)),
    );
    let c_small = udp_in(
        &pair.client,
        std::net::SocketAddr::from((pair.client_v4, 6002)),
    );
    for _ in 0..20 {
        assert!(udp_passes(&c_small, &srv_small, small, &[1; 200]));
    }
    // 1,500 datagrams of 1,000 bytes (1,042-byte frames): past 1,000,000 at the 960th.
    for _ in 0..1500 {
        c_big.send_to(&[2; 1000], big).unwrap();
    }
    assert!(udp_passes(&c_big, &srv_big, big, b"last"));
    let v = d.get("/api/v1/xfsm/machines/heavy-hitters");
    let flows = v["flows"].as_array().unwrap();
    let by_port = |port: u64| {
        flows
            .iter()
            .find(|f| f["ports"][1] == port)
            .unwrap_or_else(|| panic!("no flow to port {port}: {v}"))
    };
    assert_eq!(by_port(5001)["state"], "HEAVY", "{v}");
    assert!(
        by_port(5001)["registers"]["bytes"].as_u64().unwrap() > 1_000_000,
        "{v}"
    );
    assert_eq!(by_port(5002)["state"], "DEFAULT", "{v}");
    assert_eq!(by_port(5002)["registers"]["bytes"], 20 * (200 + 42), "{v}");
    common::eventually("the HEAVY event", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["door"] == "heavy-hitters" && e["to"] == "HEAVY")
    });
    let ev = events.lock().unwrap().clone();
    let heavy: Vec<_> = ev.iter().filter(|e| e["to"] == "HEAVY").collect();
    assert_eq!(heavy.len(), 1, "{ev:?}");
    let bytes = heavy[0]["registers"]["bytes"].as_u64().unwrap();
    assert!((1_000_000..1_000_000 + 1042).contains(&bytes), "{ev:?}");
    assert_eq!(heavy[0]["packet"], "udp/5001", "{ev:?}");
    // Demoted: the big flow's datagrams from the 960th on (with "last", 541 or so), all
    // delivered (the rewritten IPv4 checksum holds); none of the small flow's.
    let rules = pair
        .server
        .exec_ok(&["nft", "list", "chain", "inet", "hh", "c"]);
    let count = |port: &str| -> u64 {
        let line = rules
            .lines()
            .find(|l| l.contains(&format!("dport {port}")))
            .unwrap_or_else(|| panic!("{rules}"));
        line.split("packets ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!((500..=560).contains(&count("5001")), "{rules}");
    assert_eq!(count("5002"), 0, "{rules}");
    d.stop();
}

/// Eight conditions make each transition without `when` take 256 transition-table entries:
/// 17 of them are more than a generation's share, refused when the config is read.
#[test]
fn a_machine_too_big_for_the_transition_table_is_refused() {
    let mut t = at_limits(1, 1, MAX_CONDS, 1);
    for port in 0..17 {
        t += &format!(
            "[[xfsm.transition]]\nproto = \"tcp\"\nport = {}\n",
            1000 + port
        );
    }
    let err = Config::parse(&t, "big.toml").unwrap_err().to_string();
    assert!(err.contains("transition table entries"), "{err}");
    let fits = at_limits(1, 1, MAX_CONDS, 1)
        + &(0..14)
            .map(|p| {
                format!(
                    "[[xfsm.transition]]\nproto = \"tcp\"\nport = {}\n",
                    1000 + p
                )
            })
            .collect::<String>();
    Config::parse(&fits, "fits.toml").unwrap();
}

/// A reload that gives a machine's index to another machine starts that machine's
/// registers at 0: the policer's buckets do not become another machine's registers.
#[test]
fn a_machine_that_starts_over_starts_with_zero_registers() {
    let p = Paths::new("rz");
    let pair = Pair::new("rz");
    let iface = format!(
        "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n",
        pair.server_if, pair.server.name
    );
    let conf = common::example_on(&pair, "efsm/policer.toml");
    std::fs::write(&p.config, &conf).unwrap();
    let d = Daemon::start(&p, &[]);
    let srv_addr = std::net::SocketAddr::from((pair.server_v4, 5000));
    let srv = udp_in(&pair.server, srv_addr);
    let c = udp_in(
        &pair.client,
        std::net::SocketAddr::from((pair.client_v4, 6000)),
    );
    assert!(udp_passes(&c, &srv, srv_addr, b"x"));
    let v = d.get("/api/v1/xfsm/machines/policer");
    assert_eq!(v["flows"].as_array().unwrap().len(), 1, "{v}");
    // The same index, another machine with a register and a global.
    let other = format!(
        "{iface}[[xfsm]]\nname = \"count\"\nlookup = [\"src_ip\"]\nregisters = [\"n\"]\nglobals = [\"all\"]\n[[xfsm.transition]]\nproto = \"udp\"\nupdate = [\"n += 1\", \"all += 1\"]\n"
    );
    std::fs::write(&p.config, &other).unwrap();
    let (code, _, err) = cli(&p, &["reload"]);
    assert_eq!(code, 0, "{err}");
    let v = d.get("/api/v1/xfsm/machines/count");
    assert_eq!(v["flows"], serde_json::json!([]), "{v}");
    assert_eq!(v["globals"]["all"], 0, "{v}");
    assert!(udp_passes(&c, &srv, srv_addr, b"y"));
    let v = d.get("/api/v1/xfsm/machines/count");
    assert_eq!(v["flows"][0]["registers"]["n"], 1, "{v}");
    assert_eq!(v["globals"]["all"], 1, "{v}");
    d.stop();
}

/// examples/efsm/syn-flood.toml (threshold lowered to 20 SYNs a second): under a flood of
/// SYNs from spoofed sources (10.100.0.0/14, inside namespaces with no default route), a
/// real client still connects, on its SYN's retransmission about a second later; the
/// flood's SYNs are dropped. Before the flood, a connection opens at once.
#[test]
fn syn_flood_example_admits_real_clients_on_retransmission() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};
    let pair = Pair::new("sf");
    let text = example("efsm/syn-flood.toml").replace("syns >= 200", "syns >= 20");
    let mut cfg = Config::parse(&text, "syn-flood.toml").unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let k = Kernel::new("sf", &cfg);
    let sv = pair.server_v4;
    let l = pair.server.run(|| TcpListener::bind((sv, 8080))).unwrap();
    let to = SocketAddr::from((sv, 8080));
    let connect = || {
        let t = Instant::now();
        let ok = pair
            .client
            .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(4)))
            .is_ok();
        (ok, t.elapsed())
    };
    let (ok, took) = connect();
    assert!(
        ok && took < Duration::from_millis(500),
        "no flood: {took:?}"
    );
    let fd = pair.client.run(|| raw_socket(&pair.client_if));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, delayed) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            // About 20,000 SYNs a second, for as long as the clients connect.
            let mut rng = StdRng::seed_from_u64(11);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..100 {
                    let src = std::net::IpAddr::from([
                        10,
                        rng.random_range(100..104),
                        rng.random(),
                        rng.random(),
                    ]);
                    let f = statewall_harness::packet::Packet::tcp(
                        src,
                        sv.into(),
                        rng.random_range(1024..65535),
                        8080,
                        0x02,
                    )
                    .build();
                    send_raw(&fd, &f);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        });
        std::thread::sleep(Duration::from_millis(300));
        // Three clients in turn: each must connect; a SYN that happens to fall among the
        // unverified ones of a new second connects at once, so two of three must wait.
        let mut delayed = 0;
        for i in 0..3 {
            let (ok, took) = connect();
            assert!(ok, "client {i} did not connect under the flood ({took:?})");
            if took >= Duration::from_millis(800) {
                delayed += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (flood.join().unwrap(), delayed)
    });
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
    drop(l);
    assert!(
        delayed >= 2,
        "only {delayed} of 3 connections waited for a retransmission"
    );
    let dropped = k.counter("dropped");
    assert!(
        dropped * 10 >= sent * 8,
        "{dropped} of {sent} spoofed SYNs dropped"
    );
    eprintln!("syn flood: {sent} spoofed SYNs, {dropped} dropped; {delayed} of 3 clients admitted on retransmission");
}

/// examples/efsm/udp-stateful.toml: one bidirectional key. UDP in is dropped until the
/// server sends to that peer's address and port; the reply then gets in, another peer
/// port does not, both directions show as one flow, and the flow closes after its idle
/// timeout (shortened to 1 s).
#[test]
fn udp_stateful_example_with_a_bidirectional_key() {
    use std::net::SocketAddr;
    let pair = Pair::new("us");
    let text = example("efsm/udp-stateful.toml").replace("\"30s\"", "\"1s\"");
    let mut cfg = Config::parse(&text, "udp-stateful.toml").unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let k = Kernel::new("us", &cfg);
    let srv_addr = SocketAddr::from((pair.server_v4, 5000));
    let cli_addr = SocketAddr::from((pair.client_v4, 6000));
    let srv = udp_in(&pair.server, srv_addr);
    let cli = udp_in(&pair.client, cli_addr);
    assert!(!udp_passes(&cli, &srv, srv_addr, b"unsolicited"));
    assert!(udp_passes(&srv, &cli, cli_addr, b"ping"));
    assert!(udp_passes(&cli, &srv, srv_addr, b"reply"));
    assert!(udp_passes(&cli, &srv, srv_addr, b"more"));
    let other = udp_in(&pair.client, SocketAddr::from((pair.client_v4, 6001)));
    assert!(!udp_passes(&other, &srv, srv_addr, b"other port"));
    // One entry for both directions.
    let states = k.eng.xfsm_states().unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    assert!(!udp_passes(&cli, &srv, srv_addr, b"late"));
    let bad = text.replace(
        "lookup = [\"src_ip\", \"dst_ip\", \"src_port\", \"dst_port\"]",
        "lookup = [\"src_ip\", \"dst_port\"]",
    );
    let err = Config::parse(&bad, "bad.toml").unwrap_err().to_string();
    assert!(
        err.contains("bidirectional") && err.contains("two addresses"),
        "{err}"
    );
}

/// examples/efsm/superspreader.toml: a source sending SYNs to 20 distinct addresses (all
/// in the test's own link prefix, sent as frames on the namespaces' veth) is flagged; a
/// client sending to 3 servers, three times each, is not.
#[test]
fn superspreader_example_flags_a_sweep_not_a_client() {
    use std::net::{IpAddr, Ipv4Addr};
    let pair = Pair::new("ss");
    let mut cfg = Config::parse(&example("efsm/superspreader.toml"), "superspreader.toml").unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let k = Kernel::new("ss", &cfg);
    // SYN frames from the client's end (the second source, 10.77.0.50, is the test's own
    // address too) to 20 addresses in the link's /24: they end at the server's hook.
    let fd = pair.client.run(|| raw_socket(&pair.client_if));
    let syn = |from: Ipv4Addr, to: u8| {
        let f = statewall_harness::packet::Packet::tcp(
            IpAddr::V4(from),
            IpAddr::V4(Ipv4Addr::new(10, 77, 0, to)),
            40000 + to as u16,
            80,
            0x02,
        )
        .build();
        send_raw(&fd, &f);
    };
    for _ in 0..3 {
        for to in 100..103 {
            syn(Ipv4Addr::new(10, 77, 0, 50), to);
        }
    }
    for to in 100..120 {
        syn(pair.client_v4, to);
    }
    let c = k.eng.xfsm_compiled().unwrap();
    let states: Vec<(IpAddr, String)> = k
        .eng
        .xfsm_states()
        .unwrap()
        .into_iter()
        .filter(|(key, _)| key.machine == 1)
        .map(|(key, v)| {
            (
                statewall_common::maps::addr_ip(key.family, &key.addrs[0]),
                c.state_name(1, v.state),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![(IpAddr::V4(pair.client_v4), "FLAGGED".to_string())],
        "only the sweeping source is flagged"
    );
    let regs = k.eng.xfsm_flow_regs().unwrap();
    let count = |a: Ipv4Addr| {
        regs.iter()
            .find(|(key, _)| key.machine == 1 && key.addrs[0][..4] == a.octets())
            .map(|(_, v)| v.r[0])
    };
    assert_eq!(
        count(Ipv4Addr::new(10, 77, 0, 50)),
        Some(3),
        "3 servers, counted once each"
    );
    assert_eq!(count(pair.client_v4), Some(20));
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
}

/// Example 6: port knocking as a plain machine opens the port as the door does, for the
/// knocking source only; a wrong knock part-way through starts over.
#[test]
fn knock_machine_example_opens_like_a_door() {
    let p = Paths::new("kmach");
    let pair = Pair::new("kmach");
    let conf = common::example_on(&pair, "efsm/knock-machine.toml");
    std::fs::write(&p.config, conf).unwrap();
    let d = Daemon::start(&p, &[]);
    let ssh = std::net::SocketAddr::from((pair.server_v4, 22));
    let listener = pair
        .server
        .run(|| std::net::TcpListener::bind(ssh).unwrap());
    let _echo = common::echo(listener, None);
    let connects = || {
        pair.client
            .run(|| {
                std::net::TcpStream::connect_timeout(&ssh, std::time::Duration::from_millis(400))
            })
            .is_ok()
    };
    assert!(!connects(), "tcp/22 open before any knock");
    let to = std::net::IpAddr::V4(pair.server_v4);
    // A wrong knock part-way (7000, 7500, 8000, 9000): 7500 starts over, so 8000 and
    // 9000 are no sequence.
    common::knock_from(&pair, to, &common::steps("7000,7500,8000,9000"));
    assert!(!connects(), "opened by a sequence with a wrong knock in it");
    common::knock_from(&pair, to, &common::steps("7000,8000,9000"));
    common::eventually("tcp/22 open after the knock", connects);
    let g = d.get("/api/v1/gate/grants");
    assert!(g.to_string().contains(&pair.client_v4.to_string()), "{g}");
    let x = d.get("/api/v1/xfsm");
    assert_eq!(common::transition_hits(&x, "knock22: #3 "), 1, "{x}");
    assert_eq!(
        common::transition_hits(&x, "knock22: #4 "),
        1,
        "the wrong knock: {x}"
    );
    d.stop();
}

/// The `event` action: an event per packet the transition takes, carrying the flow's
/// registers, at most 64 per second and CPU per machine.
#[test]
fn event_action_reports_packets_at_a_bounded_rate() {
    let p = Paths::new("evact");
    let pair = Pair::new("evact");
    let conf = format!(
        "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[[xfsm]]\nname = \"watch\"\nlookup = [\"src_ip\"]\nregisters = [\"n\"]\n[[xfsm.transition]]\nproto = \"udp\"\nport = 5999\naction = \"drop\"\nevent = true\nupdate = [\"n += 1\"]\n",
        pair.server_if, pair.server.name
    );
    std::fs::write(&p.config, conf).unwrap();
    let d = Daemon::start(&p, &[]);
    let events = common::follow_events(&p.socket, "/api/v1/events");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let to = std::net::SocketAddr::from((pair.server_v4, 5999));
    let c = udp_in(
        &pair.client,
        std::net::SocketAddr::from((pair.client_v4, 6999)),
    );
    let t0 = std::time::Instant::now();
    for _ in 0..2000 {
        c.send_to(b"x", to).unwrap();
    }
    let secs = t0.elapsed().as_secs() + 2;
    common::eventually("events", || !events.lock().unwrap().is_empty());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ev: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["door"] == "watch")
        .cloned()
        .collect();
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        !ev.is_empty() && (ev.len() as u64) <= (64 * cpus * secs).min(1999),
        "{} events from 2000 packets in {secs} s on {cpus} CPUs",
        ev.len()
    );
    for e in &ev {
        assert_eq!(e["kind"], "event", "{e}");
        assert_eq!(e["packet"], "udp/5999", "{e}");
        assert!(e["registers"]["n"].as_u64().is_some(), "{e}");
    }
    let x = d.get("/api/v1/xfsm/machines/watch");
    assert_eq!(x["flows"][0]["registers"]["n"], 2000, "{x}");
    d.stop();
}

/// A machine that never leaves DEFAULT (the policer, the learning switch: their memory is
/// their registers) is compiled as such, so that the kernel neither looks up nor writes a
/// state for its flows; a machine with states is not.
#[test]
fn machines_without_states_keep_no_state_entries() {
    use statewall_common::xfsm::M_STATELESS;
    for (file, stateless) in [
        ("policer.toml", vec![true]),
        ("learning-switch.toml", vec![true]),
        ("syn-flood.toml", vec![false]),
        ("heavy-hitters.toml", vec![false]),
        ("superspreader.toml", vec![false, false]),
        ("knock-machine.toml", vec![false]),
    ] {
        let cfg = Config::parse(&example(&format!("efsm/{file}")), file).unwrap();
        let raws = cfg.raw_machines().unwrap();
        let compiled = statewall::xfsm::compile(&[], &raws).unwrap();
        let got: Vec<bool> = compiled
            .machines
            .iter()
            .map(|m| m.flags & M_STATELESS != 0)
            .collect();
        assert_eq!(got, stateless, "{file}");
    }
}
