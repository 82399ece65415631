//! Hand-written `[[xfsm]]` machines and UDP payload knocks: the two example machines with
//! real traffic between namespaces the tests create (return traffic for UDP, which needs
//! the egress program and distinct lookup and update scopes; an SSH connection-rate
//! limit), doors whose UDP knocks must carry a payload (knocked by `statewall knock`),
//! the payload match on the XDP program, and config errors that say where.

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{bin, udp_in, udp_passes, Kernel};
use statewall::{
    config::Config,
    engine::ebpf::{PROG_XDP_INGRESS, PROG_XFSM},
    xfsm::{compile, write_tables},
};
use statewall_common::{
    maps::{GrantKey, GrantValue, MAP_GATE_GRANTS},
    xfsm::{MAP_STATES, STATE_DEFAULT},
    TCX_NEXT,
};
use statewall_harness::{netns::Pair, packet::Packet, testrun::TestBed};

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// An example config on the server side of `pair`, with its timeouts shortened.
fn example_config(pair: &Pair, name: &str, timeouts: (&str, &str)) -> Config {
    let text = example(name).replace(timeouts.0, timeouts.1);
    let mut cfg = Config::parse(&text, name).unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    cfg
}

/// The states of machine `m` in the kernel, by name.
fn states(k: &Kernel, m: usize) -> Vec<String> {
    let c = k.eng.xfsm_compiled().unwrap();
    let now = k.eng.kernel_now();
    k.eng
        .xfsm_states()
        .unwrap()
        .into_iter()
        .filter(|(key, v)| {
            key.machine as usize == m && (v.idle_deadline == 0 || v.idle_deadline > now)
        })
        .map(|(_, v)| c.state_name(m, v.state))
        .collect()
}

/// examples/xfsm-udp-return.toml: UDP from the client reaches the server only while the
/// server has sent to that client's address and port (egress program, swapped update
/// scope), and only until the idle timeout.
#[test]
fn udp_return_example_end_to_end() {
    let pair = Pair::new("ur");
    let cfg = example_config(&pair, "xfsm-udp-return.toml", ("\"30s\"", "\"1s\""));
    let k = Kernel::new("ur", &cfg);
    let hooks: Vec<String> = k
        .eng
        .link_states()
        .iter()
        .map(|l| l.spot.hook.clone())
        .collect();
    assert!(hooks.contains(&"egress".to_string()), "{hooks:?}");
    let srv_addr = SocketAddr::from((pair.server_v4, 5000));
    let cli_addr = SocketAddr::from((pair.client_v4, 6000));
    let srv = udp_in(&pair.server, srv_addr);
    let cli = udp_in(&pair.client, cli_addr);
    assert!(
        !udp_passes(&cli, &srv, srv_addr, b"unsolicited"),
        "UDP from a peer the server never sent to is dropped"
    );
    assert!(
        udp_passes(&srv, &cli, cli_addr, b"ping"),
        "the server's packet leaves"
    );
    assert_eq!(
        states(&k, 0),
        ["OPEN"],
        "the egress packet opened the return path"
    );
    assert!(
        udp_passes(&cli, &srv, srv_addr, b"reply"),
        "the reply from that address and port gets in"
    );
    let other = udp_in(&pair.client, SocketAddr::from((pair.client_v4, 6001)));
    assert!(
        !udp_passes(&other, &srv, srv_addr, b"other port"),
        "another client port is another flow: dropped"
    );
    // Replies do not extend the window (only the server's packets do).
    std::thread::sleep(Duration::from_millis(1300));
    assert!(
        !udp_passes(&cli, &srv, srv_addr, b"late"),
        "after the idle timeout the path is shut again"
    );
    assert!(udp_passes(&srv, &cli, cli_addr, b"again"));
    assert!(udp_passes(&cli, &srv, srv_addr, b"reply again"));
}

/// examples/xfsm-ssh-limit.toml: three new connections per source and minute (shortened
/// to 2 s), the fourth SYN dropped, and connections again once the minute is over.
#[test]
fn ssh_limit_example_end_to_end() {
    let pair = Pair::new("sl");
    let cfg = example_config(&pair, "xfsm-ssh-limit.toml", ("\"60s\"", "\"2s\""));
    let k = Kernel::new("sl", &cfg);
    let sv = pair.server_v4;
    let l = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    l.set_nonblocking(true).unwrap();
    let to = SocketAddr::from((sv, 22));
    let connect = || {
        pair.client
            .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(400)))
            .is_ok()
    };
    let start = std::time::Instant::now();
    for i in 1..=3 {
        assert!(connect(), "connection {i} of the minute is let in");
    }
    assert!(!connect(), "the fourth SYN within the minute is dropped");
    assert_eq!(states(&k, 0), ["FULL"]);
    // Wait out the (kept) hard timeout that started with the first SYN.
    let left = Duration::from_millis(2100).saturating_sub(start.elapsed());
    std::thread::sleep(left);
    assert!(connect(), "a new minute, a new connection");
}

/// A door whose UDP knocks must carry the canned payload: bare knocks and a wrong payload
/// do not open it, `statewall knock --default-payload` does; a per-step payload is
/// required on its port only.
#[test]
fn payload_knocks_end_to_end() {
    let pair = Pair::new("pk");
    let mut cfg = Config::parse(
        r#"
[[knock]]
name = "pk"
sequence = "7101:udp,7202:udp,7303:udp"
protected = ["tcp/22"]
udp_payload = true

[[knock]]
name = "step"
sequence = "7401:udp,7502:udp"
protected = ["tcp/2222"]
[knock.step_payload]
"7502" = "open sesame"
"#,
        "test",
    )
    .unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let k = Kernel::new("pk", &cfg);
    let sv = pair.server_v4.to_string();
    let knock = |extra: &[&str], steps: &[&str]| {
        let mut args = vec![bin(), "knock", &sv];
        args.extend_from_slice(steps);
        args.extend_from_slice(extra);
        let out = pair.client.exec(&args);
        assert!(out.status.success(), "statewall knock: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let granted = |port: u16| k.live().iter().any(|g| g.port == port);
    let seq = ["7101:udp", "7202:udp", "7303:udp"];
    knock(&[], &seq);
    assert!(!granted(22), "bare UDP knocks are no knocks");
    knock(&["--payload", "statewall-knocK"], &seq);
    assert!(!granted(22), "a payload a byte off is no knock");
    knock(&["--payload", "statewall-knock!"], &seq);
    assert!(!granted(22), "a longer payload is no knock");
    knock(&["--default-payload"], &seq);
    assert!(granted(22), "the canned payload opens the door");
    let sv4 = pair.server_v4;
    let _l = pair.server.run(|| TcpListener::bind((sv4, 22))).unwrap();
    assert!(pair
        .client
        .run(|| TcpStream::connect_timeout(
            &SocketAddr::from((sv4, 22)),
            Duration::from_millis(400)
        ))
        .is_ok());
    // Per step: the first knock is bare, the second needs its payload.
    knock(&[], &["7401:udp", "7502:udp"]);
    assert!(!granted(2222));
    // The client sends one payload to every step: the first step takes any payload.
    knock(&["--payload", "open sesame"], &["7401:udp", "7502:udp"]);
    assert!(
        granted(2222),
        "the step's own payload opens the second door"
    );
}

/// Knocks with the payload on the XDP program (its payload copy is not the tc one) and
/// on tc: only the right payload moves the state.
#[test]
fn payload_match_on_xdp_and_tc() {
    let cfg = Config::parse(
        "[[knock]]\nname = \"x\"\nsequence = \"7001:udp,7009:udp\"\nprotected = [\"tcp/22\"]\nudp_payload = \"knock knock\"\n",
        "test",
    )
    .unwrap();
    let c = compile(&cfg.doors(), &[]).unwrap();
    assert_eq!(c.payloads.len(), 1);
    for xdp in [true, false] {
        let mut bed = TestBed::new();
        write_tables(&mut bed, &c, Some(&[])).unwrap();
        bed.freeze(1_000_000_000_000);
        let src = "10.1.0.1".parse().unwrap();
        let dst = "10.1.0.2".parse().unwrap();
        let send = |bed: &mut TestBed, port: u16, body: &[u8]| {
            let f = Packet::udp(src, dst, 40000, port).payload(body).build();
            if xdp {
                assert_eq!(bed.run_xdp(PROG_XDP_INGRESS, &f), 2, "XDP_PASS");
            } else {
                assert_eq!(bed.run_tc(PROG_XFSM, &f), TCX_NEXT);
            }
        };
        send(&mut bed, 7001, b"knock knoc");
        send(&mut bed, 7001, b"");
        send(&mut bed, 7001, b"knock knock ");
        let st: aya::maps::HashMap<
            &aya::maps::MapData,
            statewall_common::xfsm::StateKey,
            statewall_common::xfsm::StateVal,
        > = (&*bed.map(MAP_STATES)).try_into().unwrap();
        assert_eq!(
            st.keys().count(),
            0,
            "xdp={xdp}: wrong payloads leave DEFAULT"
        );
        send(&mut bed, 7001, b"knock knock");
        let st: aya::maps::HashMap<
            &aya::maps::MapData,
            statewall_common::xfsm::StateKey,
            statewall_common::xfsm::StateVal,
        > = (&*bed.map(MAP_STATES)).try_into().unwrap();
        let v: Vec<_> = st.iter().map(|r| r.unwrap().1.state).collect();
        assert!(v.len() == 1 && v[0] != STATE_DEFAULT, "xdp={xdp}: {v:?}");
        send(&mut bed, 7009, b"knock knock");
        let g: aya::maps::HashMap<&aya::maps::MapData, GrantKey, GrantValue> =
            (&*bed.map(MAP_GATE_GRANTS)).try_into().unwrap();
        assert_eq!(g.keys().count(), 1, "xdp={xdp}: the door opened");
    }
}

#[test]
fn examples_load_and_raw_errors_say_where() {
    for name in ["xfsm-udp-return.toml", "xfsm-ssh-limit.toml"] {
        let cfg = Config::parse(&example(name), name).unwrap();
        let raws = cfg.raw_machines().unwrap();
        compile(&cfg.doors(), &raws).unwrap();
    }
    let base =
        "[[xfsm]]\nname = \"m\"\nlookup = [\"src_ip\"]\nstates = [\"A\"]\n[[xfsm.transition]]\n";
    for (extra, want) in [
        ("next = \"B\"\n", "transition #1 next"),
        ("direction = \"out\"\n", "transition #1 direction"),
        ("proto = \"sctp\"\n", "transition #1 proto"),
        ("proto = \"icmp\"\nport = 5\n", "transition #1 port"),
        (
            "proto = \"tcp\"\nport = 5\npayload = \"x\"\n",
            "transition #1 payload",
        ),
        (
            "proto = \"udp\"\npayload = \"x\"\n",
            "transition #1 payload",
        ),
        ("idle_timeout = \"5s\"\n", "transition #1 next"),
        (
            "next = \"A\"\nkeep = \"hard\"\nhard_timeout = \"1s\"\n",
            "transition #1 keep",
        ),
        ("action = \"reject\"\n", "transition #1 action"),
        (
            "next = \"A\"\nidle_rollback = \"A\"\n",
            "transition #1 idle_rollback",
        ),
        (
            "proto = \"udp\"\ntcpflags = \"syn\"\n",
            "transition #1 tcpflags",
        ),
    ] {
        let e = Config::parse(&format!("{base}{extra}"), "m.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[[xfsm]] #1 (m)") && e.contains(want),
            "{extra:?}: {e}"
        );
    }
    let e = Config::parse(
        "[[xfsm]]\nname = \"m\"\nlookup = [\"src_ip\", \"src_port\"]\nupdate = [\"dst_ip\"]\n[[xfsm.transition]]\n",
        "m.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("update") && e.contains("shape"), "{e}");
    let e = Config::parse(
        "[[xfsm]]\nname = \"m\"\nlookup = [\"vlan_id\"]\n[[xfsm.transition]]\n",
        "m.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("lookup") && e.contains("vlan_id"), "{e}");
    let e = Config::parse(
        "[[knock]]\nname = \"d\"\nsequence = \"7000:udp,8000\"\nprotected = [\"tcp/22\"]\n[knock.step_payload]\n\"8000\" = \"x\"\n",
        "k.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("step_payload") && e.contains("8000"), "{e}");
    let e = Config::parse(
        &format!(
            "[[knock]]\nname = \"d\"\nsequence = \"7000:udp,8000\"\nprotected = [\"tcp/22\"]\nudp_payload = \"{}\"\n",
            "x".repeat(65)
        ),
        "k.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("udp_payload") && e.contains("65 bytes"), "{e}");
}

/// The daemon runs a hand-written machine from its config and shows its live states in
/// `GET /api/v1/xfsm`, keys in the lookup scope's order.
#[test]
fn daemon_shows_raw_machine_states() {
    use common::{Daemon, Paths};
    let p = Paths::new("raw");
    let pair = Pair::new("raw");
    let conf = common::example_on(&pair, "xfsm-udp-return.toml");
    std::fs::write(&p.config, conf).unwrap();
    let d = Daemon::start(&p, &[]);
    let srv_addr = SocketAddr::from((pair.server_v4, 5000));
    let cli_addr = SocketAddr::from((pair.client_v4, 6000));
    let srv = udp_in(&pair.server, srv_addr);
    let cli = udp_in(&pair.client, cli_addr);
    assert!(!udp_passes(&cli, &srv, srv_addr, b"unsolicited"));
    assert!(udp_passes(&srv, &cli, cli_addr, b"ping"));
    assert!(udp_passes(&cli, &srv, srv_addr, b"reply"));
    let x = d.get("/api/v1/xfsm");
    let m = &x["machines"][0];
    assert_eq!(m["name"], "udp-return", "{x}");
    let st = &m["states"][0];
    assert_eq!(st["state"], "OPEN", "{x}");
    // Lookup scope: src_ip, dst_ip, proto, src_port, dst_port of the reply.
    assert_eq!(st["addrs"][0], pair.client_v4.to_string(), "{x}");
    assert_eq!(st["addrs"][1], pair.server_v4.to_string(), "{x}");
    assert_eq!(st["ports"][0], 6000, "{x}");
    assert_eq!(st["ports"][1], 5000, "{x}");
    assert_eq!(st["proto"], 17, "{x}");
    assert!(st["idle_left"].as_f64().unwrap() > 0.0, "{x}");
    let trans = x["transitions"].as_array().unwrap();
    let hits = |needle: &str| {
        trans
            .iter()
            .filter(|t| t["transition"].as_str().unwrap().contains(needle))
            .map(|t| t["packets"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(hits("udp-return: #4 DEFAULT ingress"), 1, "{x}");
    assert_eq!(hits("udp-return: #1 DEFAULT egress"), 1, "{x}");
    assert_eq!(hits("udp-return: #3 OPEN ingress"), 1, "{x}");
    d.stop();
}
