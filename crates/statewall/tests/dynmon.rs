//! Dynamic monitors: users' programs loaded from C source and from objects, attached in
//! namespaces the tests create, their maps read back with exact expected values.

mod common;

use std::net::UdpSocket;

use serde_json::{json, Value};
use statewall::{
    dynmon::{Direction, Dynmon, DynmonSpec, MetricsFile, PathSpec},
    netns::Pair,
};

fn example(name: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/dynmon/");
    std::fs::read_to_string(format!("{root}{name}")).unwrap()
}

fn flows_spec(pair: &Pair) -> DynmonSpec {
    let metrics: MetricsFile = toml::from_str(&example("c/flows.toml")).unwrap();
    DynmonSpec {
        interface: Some(pair.server_if.clone()),
        netns: Some(pair.server.name.clone()),
        paths: vec![PathSpec {
            name: "ingress".into(),
            direction: Direction::Ingress,
            source: Some(example("c/flows.c")),
            object: None,
            program: None,
            metrics: metrics.metric,
        }],
    }
}

fn le(a: std::net::Ipv4Addr) -> u64 {
    u32::from_le_bytes(a.octets()) as u64
}

fn metric<'a>(r: &'a [statewall::dynmon::Reading], name: &str) -> &'a Value {
    &r.iter().find(|m| m.name == name).unwrap().value
}

fn send_udp(pair: &Pair, sport: u16, dport: u16, n: usize, len: usize) {
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, sport)).unwrap();
        for _ in 0..n {
            u.send_to(&vec![7u8; len], (pair.server_v4, dport)).unwrap();
        }
    })
}

#[test]
fn c_source_loads_and_counts_exactly() {
    let pair = Pair::new("dyn1");
    let _sink = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v4, 5000)))
        .unwrap();
    let mut d = Dynmon::load("flows", flows_spec(&pair)).unwrap();
    send_udp(&pair, 40000, 5000, 5, 100);
    send_udp(&pair, 40001, 5000, 3, 10);
    let r = d.read().unwrap();
    let flows = metric(&r, "flow_packets").as_array().unwrap().clone();
    let udp: Vec<&Value> = flows.iter().filter(|f| f["key"]["proto"] == 17).collect();
    assert_eq!(udp.len(), 1, "{flows:?}");
    assert_eq!(
        udp[0],
        &json!({"key": {"saddr": le(pair.client_v4), "daddr": le(pair.server_v4),
                        "dport": 5000u16.swap_bytes(), "proto": 17, "pad": 0},
                "value": {"packets": 8, "bytes": 5 * 128 + 3 * 38}})
    );
    // Swapped: the next read starts from nothing.
    let r2 = d.read().unwrap();
    let again: Vec<&Value> = metric(&r2, "flow_packets")
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["key"]["proto"] == 17)
        .collect();
    assert!(again.is_empty(), "{again:?}");
    eprintln!(
        "{}",
        serde_json::to_string_pretty(
            &r.iter()
                .map(|m| json!({"n": m.name, "v": m.value}))
                .collect::<Vec<_>>()
        )
        .unwrap()
    );
}

#[test]
fn rust_example_object_decodes_per_cpu_lru_and_ring_buffer() {
    use base64::Engine;
    let obj = statewall::dynmon::EXAMPLE_RUST_OBJECT;
    assert!(
        obj.starts_with(b"\x7fELF"),
        "the Rust example was not built"
    );
    let pair = Pair::new("dyn2");
    let metrics: MetricsFile = toml::from_str(&example("rust/ports.toml")).unwrap();
    let spec = DynmonSpec {
        interface: Some(pair.server_if.clone()),
        netns: Some(pair.server.name.clone()),
        paths: vec![PathSpec {
            name: "rust".into(),
            direction: Direction::Ingress,
            source: None,
            object: Some(base64::engine::general_purpose::STANDARD.encode(obj)),
            program: None,
            metrics: metrics.metric,
        }],
    };
    let mut d = Dynmon::load("ports", spec).unwrap();
    let _sink = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v4, 6000)))
        .unwrap();
    send_udp(&pair, 41000, 6000, 4, 50);
    let l = pair
        .server
        .run(|| std::net::TcpListener::bind((pair.server_v4, 6001)))
        .unwrap();
    let to = std::net::SocketAddr::from((pair.server_v4, 6001));
    let c = pair
        .client
        .run(|| std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(2)))
        .unwrap();
    let _s = l.accept().unwrap();
    drop(c);
    let r = d.read().unwrap();
    eprintln!(
        "{}",
        serde_json::to_string_pretty(
            &r.iter()
                .map(|m| json!({"n": m.name, "v": m.value}))
                .collect::<Vec<_>>()
        )
        .unwrap()
    );
}
