//! Malformed packets through every stage at once, as real frames on the wire: a knock
//! door, a protected port, an SPA action and a firewall whose rules match the valid
//! versions of the frames. Every truncation of each valid frame, bad IHL, TCP data offset
//! below 5, IPv6 extension-header chains past the parser's bound, VLAN stacks past its
//! bound (on tc, a tag the device took out of the frame counts), non-first fragments that
//! carry port-like bytes, and truncations that leave zero-length payloads: none may make a knock step, a grant, a rule match or an SPA candidate. Then the valid frames
//! do each of those, so the test can tell.

mod common;

use std::net::IpAddr;

use common::{raw_socket, send_raw, Kernel};
use statewall::{
    config::Config,
    firewall::{ChainState, FwState, Instance, Port, PortArg, RuleSpec},
};
use statewall_common::parse::{parse_packet, Status, MAX_IPV6_EXT, MAX_VLAN};
use statewall_harness::{
    netns::Pair,
    packet::{Packet, L4},
};

fn rule(proto: &str, port: u64) -> RuleSpec {
    RuleSpec {
        l4proto: Some(proto.into()),
        dport: Some(PortArg::N(port)),
        action: Some("ACCEPT".into()),
        ..Default::default()
    }
}

/// The valid frames: a first knock step (v4 and v6), UDP to the protected port, a pkd
/// knock, UDP to an open port.
fn valid(pair: &Pair) -> Vec<(&'static str, Vec<u8>)> {
    let (c, s) = (IpAddr::from(pair.client_v4), IpAddr::from(pair.server_v4));
    let (c6, s6) = (IpAddr::from(pair.client_v6), IpAddr::from(pair.server_v6));
    let key = statewall::spa::pkd_bytes::<40>("test").unwrap();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pkd = statewall::spa::pkd_packet(2200, b"SSHK", &key, ts, &[7; 12]);
    vec![
        ("knock v4", Packet::tcp(c, s, 40000, 7000, 0x02).build()),
        ("knock v6", Packet::tcp(c6, s6, 40001, 7000, 0x02).build()),
        (
            "udp to the protected port",
            Packet::udp(c, s, 40002, 9922).payload(b"data").build(),
        ),
        ("pkd", Packet::udp(c, s, 40003, 2200).payload(&pkd).build()),
        (
            "udp to an open port",
            Packet::udp(c, s, 40004, 5353).payload(b"q").build(),
        ),
    ]
}

/// Malformed variants of `f` (a frame `Packet` built): every truncation, bad IHL, TCP data
/// offset < 5; and (from `build`) extension-header chains, VLAN stacks, fragments.
fn variants(pair: &Pair) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (what, f) in valid(pair) {
        for n in 14..f.len() {
            out.push((format!("{what} cut at {n}"), f[..n].to_vec()));
        }
        let v4 = f[12] == 0x08 && f[13] == 0x00;
        if v4 {
            for ihl in [0u8, 4, 15] {
                let mut g = f.clone();
                g[14] = 0x40 | ihl;
                out.push((format!("{what} ihl {ihl}"), g));
            }
            if f[23] == 6 {
                let mut g = f.clone();
                g[14 + 20 + 12] = 0x40; // data offset 4
                out.push((format!("{what} tcp doff 4"), g));
            }
        }
    }
    let (c, s) = (IpAddr::from(pair.client_v4), IpAddr::from(pair.server_v4));
    let (c6, s6) = (IpAddr::from(pair.client_v6), IpAddr::from(pair.server_v6));
    let mut p = Packet::tcp(c6, s6, 40004, 7000, 0x02);
    for _ in 0..=MAX_IPV6_EXT {
        p = p.ipv6_ext(60, 0);
    }
    out.push(("ipv6 chain past the bound".into(), p.build()));
    let mut p = Packet::tcp(c, s, 40005, 7000, 0x02);
    for i in 0..=MAX_VLAN {
        p = p.vlan(0x8100, 10 + i as u16);
    }
    out.push(("vlan stack past the bound".into(), p.build()));
    // Non-first fragments whose first payload bytes look like ports 7000 / 9922 / 2200.
    for port in [7000u16, 9922, 2200] {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&40000u16.to_be_bytes());
        bytes.extend_from_slice(&port.to_be_bytes());
        bytes.extend_from_slice(&[0x02; 60]);
        out.push((
            format!("later fragment, port-like {port}"),
            Packet::new(c, s, L4::Raw(6))
                .payload(&bytes)
                .fragment(3, false)
                .build(),
        ));
        out.push((
            format!("later v6 fragment, port-like {port}"),
            Packet::new(c6, s6, L4::Raw(17))
                .payload(&bytes)
                .fragment(3, false)
                .build(),
        ));
    }
    out
}

#[test]
fn malformed_packets_move_no_stage() {
    let pair = Pair::new("bad");
    let mut cfg = Config::parse(
        "[gate]\nprotected = [\"udp/9922\"]\n\n\
         [[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\n\n\
         [[spa.pkd]]\nname = \"pkd\"\nport = 2200\ntag = \"SSHK\"\nkey = \"test\"\nwindow = 60\n",
        "test",
    )
    .unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let mut k = Kernel::new("bad", &cfg);
    let mut fw = FwState::default();
    fw.instances.insert(
        "fw".into(),
        Instance {
            slot: 0,
            kind: "TC".into(),
            ports: vec![Port {
                netns: Some(pair.server.name.clone()),
                ifname: pair.server_if.clone(),
            }],
            ingress: ChainState {
                // What reaches the firewall: the gate drops 9922 without a grant, the
                // spa stage every pkd packet.
                rules: vec![Box::new(rule("TCP", 7000)), Box::new(rule("UDP", 5353))],
                default: "ACCEPT".into(),
                accept_established: false,
            },
            egress: ChainState::default(),
        },
    );
    k.eng
        .apply_firewall(&cfg.firewall, &cfg.links(), &fw, &[])
        .unwrap();

    let bad = variants(&pair);
    // What the reference makes of them: malformed, or (later fragments) no L4 header.
    let mut malformed = 0;
    for (what, f) in &bad {
        let p = parse_packet(f);
        assert!(
            p.status == Status::Malformed as u8 || p.dport == 0,
            "{what}: the reference sees a port ({p:?})"
        );
        malformed += (p.status == Status::Malformed as u8) as usize;
    }
    assert!(malformed > 200, "only {malformed} malformed frames");
    common::tally("malformed frames on the wire", bad.len() as u64);
    let fd = pair.client.run(|| raw_socket(&pair.client_if));
    for (_, f) in &bad {
        send_raw(&fd, f);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stats = |k: &Kernel| k.eng.fw_stats(0, 2).unwrap();
    let spa = |k: &Kernel| {
        k.eng
            .spa_counters()
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == "candidates")
            .unwrap()
            .1
    };
    assert_eq!(
        k.counter("transitions"),
        0,
        "a malformed frame moved a door"
    );
    assert_eq!(k.live_grants(), 0, "a malformed frame made a grant");
    assert_eq!(
        stats(&k),
        vec![(0, 0); 2],
        "a malformed frame matched a rule"
    );
    assert_eq!(spa(&k), 0, "a malformed frame was an SPA candidate");
    assert!(
        k.eng
            .gate_counters()
            .unwrap()
            .iter()
            .any(|(n, v)| *n == "seen" && *v > 0),
        "the frames did not reach the programs"
    );

    // The valid frames do what the malformed ones must not (knocks last: in strict mode a
    // later packet from the source would reset the first step).
    for (_, f) in valid(&pair).into_iter().rev() {
        send_raw(&fd, &f);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(k.counter("transitions"), 2, "both first knock steps");
    let st = stats(&k);
    assert!(
        st.iter().all(|s| s.0 >= 1),
        "every rule matched its frame: {st:?}"
    );
    // The pkd packet became a candidate for the verifier (no daemon reads them here).
    assert_eq!(spa(&k), 1);
    // SAFETY: closing the raw socket made above.
    unsafe { libc::close(fd) };
}
