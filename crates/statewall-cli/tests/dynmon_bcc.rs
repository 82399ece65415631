//! Polycube Dynmon programs in BCC's dialect, posted unchanged to
//! `/polycube/v1/dynmon/{name}`: the dialect's flows monitor (examples/dynmon/bcc) and
//! the same monitor in libbpf-style C (examples/dynmon/c), attached at once to one
//! interface of a namespace pair the test creates, read once after a bounded burst of
//! real traffic: every metric equal (swap-on-read, empty-on-read and a queue included),
//! timestamps aside. A program using a construct statewall does not translate is refused
//! with its line, and nothing of it stays loaded. Two-path programs share tables
//! (`"extern"`); the crypto and ddos monitors written as Dynmon programs
//! (examples/dynmon/bcc) keep the built-in monitors' records on the same traffic.

mod common;

use std::net::UdpSocket;

use common::{curl, free_port, Daemon, Paths};
use serde_json::{json, Value};
use statewall_harness::netns::Pair;

fn example(name: &str) -> String {
    let p = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/dynmon/"
    ))
    .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A daemon (REST on a free port, no auth) for the server side of a namespace pair the
/// test creates; `monitor`: a built-in `[[monitor]]` (name, kind) on the server interface,
/// both directions.
struct Bed {
    // Fields drop in this order: the daemon before the namespaces it attached to.
    _d: Daemon,
    pair: Pair,
    p: Paths,
    api: u16,
    /// `http://127.0.0.1:{api}/polycube/v1/dynmon`
    base: String,
}

fn bed(tag: &str, monitor: Option<(&str, &str)>) -> Bed {
    let p = Paths::new(tag);
    let pair = Pair::new(tag);
    let (i, n) = (&pair.server_if, &pair.server.name);
    let mut config = format!("[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n");
    if let Some((name, kind)) = monitor {
        config += &format!(
            "\n[[monitor]]\nname = \"{name}\"\nkind = \"{kind}\"\ninterfaces = [\"{i}\"]\n\
             netns = \"{n}\"\ndirection = \"both\"\n"
        );
    }
    std::fs::write(&p.config, config).unwrap();
    let api = free_port();
    let listen = format!("127.0.0.1:{api}");
    let d = Daemon::start(&p, &["--listen", &listen, "--no-auth"]);
    Bed {
        _d: d,
        pair,
        p,
        api,
        base: format!("http://127.0.0.1:{api}/polycube/v1/dynmon"),
    }
}

/// A monitor's metrics as Dynmon serves them, timestamps removed and hash entries in
/// key order.
fn metrics(base: &str, name: &str) -> Value {
    let (code, mut v) = curl("GET", &format!("{base}/{name}/metrics"), None);
    assert_eq!(code, 200, "{v}");
    for m in v["ingress-metrics"].as_array_mut().unwrap() {
        m.as_object_mut().unwrap().remove("timestamp");
        if let Some(list) = m["value"].as_array_mut() {
            if list.iter().all(|e| e.get("key").is_some()) {
                list.sort_by_key(|e| e["key"].to_string());
            }
        }
    }
    v
}

fn programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_dialects_flows_monitor_reads_as_the_libbpf_one() {
    let b = bed("dynbcc", None);
    let (pair, api, base) = (&b.pair, b.api, &b.base);
    // The three programs are read one after the other: a packet arriving in between would
    // count in some of them only. IPv6 is what a fresh link sends unasked (router
    // solicitations, listener reports): off on the client's side, so that only the burst
    // reaches the server.
    let quiet = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", pair.client_if);
    pair.client.run(|| std::fs::write(&quiet, "1")).unwrap();
    let metric_configs = {
        let f: statewall::dynmon::MetricsFile = toml::from_str(&example("c/flows.toml")).unwrap();
        serde_json::to_value(f.metric).unwrap()
    };
    // The BCC program twice: for tc, and for XDP (a Polycube XDP cube).
    for (name, code, kind) in [
        ("native", example("c/flows.c"), "TC"),
        ("bcc", example("bcc/flows.c"), "TC"),
        ("bccxdp", example("bcc/flows.c"), "XDP_SKB"),
    ] {
        let body = json!({"interface": pair.server_if, "netns": pair.server.name, "type": kind,
            "dataplane-config": {"ingress-path": {"name": name, "code": code,
                "metric-configs": metric_configs}}});
        let (code, v) = curl("POST", &format!("{base}/{name}"), Some(&body.to_string()));
        assert_eq!(code, 201, "{name}: {v}");
    }
    assert!(
        programs().iter().any(|n| n == "statewall_bcc_r"),
        "{:?}",
        programs()
    );
    // One read each to start from nothing (swap-on-read, empty-on-read, the queue).
    for m in ["native", "bcc", "bccxdp"] {
        let _ = metrics(base, m);
    }
    // A bounded burst: 5 x 100 bytes to 9001, 3 x 400 to 9002, 7 x 20 to 9003.
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, 0)).unwrap();
        for (port, n, len) in [(9001u16, 5, 100usize), (9002, 3, 400), (9003, 7, 20)] {
            for _ in 0..n {
                u.send_to(&vec![7u8; len], (pair.server_v4, port)).unwrap();
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let native = metrics(base, "native");
    let bcc = metrics(base, "bcc");
    let xdp = metrics(base, "bccxdp");
    // Not equal by being empty: the native reading has the burst.
    let flows = native["ingress-metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "flow_packets")
        .unwrap()["value"]
        .clone();
    let udp: Vec<(u64, Value)> = flows
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key"]["proto"] == 17)
        .map(|e| {
            (
                (e["key"]["dport"].as_u64().unwrap() as u16).swap_bytes() as u64,
                e["value"].clone(),
            )
        })
        .collect();
    assert!(
        udp.contains(&(9001, json!({"packets": 5, "bytes": 5 * 128})))
            && udp.contains(&(9002, json!({"packets": 3, "bytes": 3 * 428})))
            && udp.contains(&(9003, json!({"packets": 7, "bytes": 7 * 48}))),
        "{native}"
    );
    assert_eq!(
        bcc["ingress-metrics"], native["ingress-metrics"],
        "the BCC program's metrics differ from the libbpf one's"
    );
    assert_eq!(bcc["egress-metrics"], json!([]));
    // In XDP: the same figures (RX_OK is XDP_PASS: the packets went on to tc).
    assert_eq!(
        xdp["ingress-metrics"], native["ingress-metrics"],
        "the BCC program in XDP reads otherwise"
    );
    let (code, v) = curl(
        "GET",
        &format!("http://127.0.0.1:{api}/api/v1/dynmon/bccxdp"),
        None,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["hooks"][0]["hook"], "xdp", "{v}");

    // A construct statewall does not translate: 400 with its line, nothing left loaded.
    let before = b._d.held_programs();
    assert!(before.len() >= 3, "the daemon holds no program: {before:?}");
    let bad = "BPF_TABLE(\"hash\", u32, u64, counts, 1024);\n\
               static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {\n\
               \treturn RX_REDIRECT;\n}\n";
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "dataplane-config": {"ingress-path": {"name": "x", "code": bad, "metric-configs": []}}});
    let (code, v) = curl("POST", &format!("{base}/bad"), Some(&body.to_string()));
    assert_eq!(code, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("line 3:") && e.contains("RX_REDIRECT"), "{e}");
    let (code, _) = curl("GET", &format!("{base}/bad"), None);
    assert_eq!(code, 404);
    assert_eq!(b._d.held_programs(), before, "programs the daemon holds");
    // clang's own errors name the user's lines too.
    let typo = "BPF_ARRAY(a, u64, 4);\n\
                static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {\n\
                \n\
                \tundeclared_thing += 1;\n\
                \treturn RX_OK;\n}\n";
    let body = json!({"dataplane-config": {"ingress-path": {"name": "x", "code": typo,
        "metric-configs": []}}});
    let (code, v) = curl("POST", &format!("{base}/typo"), Some(&body.to_string()));
    assert_eq!(code, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("prog.c:4:") && e.contains("undeclared_thing"),
        "{e}"
    );
}

/// The ingress path of a two-path monitor: declares the session table and the event
/// queue, `_SHARED`; the egress path takes both as `"extern"` tables.
const SHARED_IN: &str = r#"struct key { u32 lo; u32 hi; u16 plo; u16 phi; };
struct counts { u64 in; u64 out; };
struct ev { u32 dir; u32 len; };
BPF_TABLE_SHARED("hash", struct key, struct counts, sessions, 1024);
BPF_QUEUESTACK_SHARED("queue", events, struct ev, 128, 0);
struct ip4 { u8 vihl; u8 tos; __be16 len; __be16 id; __be16 frag; u8 ttl; u8 proto; __sum16 c; __be32 s; __be32 d; } __attribute__((packed));
struct ports { __be16 s; __be16 d; };
static __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ip4 *ip = data + 14;
	struct ports *p = data + 34;
	if ((void *)(p + 1) > end || ip->proto != IPPROTO_UDP)
		return RX_OK;
	struct key k = {};
	if (ip->s < ip->d) { k.lo = ip->s; k.hi = ip->d; k.plo = p->s; k.phi = p->d; }
	else { k.lo = ip->d; k.hi = ip->s; k.plo = p->d; k.phi = p->s; }
	struct counts zero = {};
	struct counts *c = sessions.lookup_or_try_init(&k, &zero);
	if (c) {
		if (POLYCUBE_PROGRAM_TYPE == 0) __sync_fetch_and_add(&c->in, 1);
		else __sync_fetch_and_add(&c->out, 1);
	}
	struct ev e = { .dir = POLYCUBE_PROGRAM_TYPE, .len = md->packet_len };
	events.push(&e, 0);
	return RX_OK;
}
"#;

#[test]
fn extern_tables_join_the_two_paths_and_one_read_switches_both() {
    let b = bed("dynbccx", None);
    let (pair, base) = (&b.pair, &b.base);
    // The egress path: the same code with the two tables "extern".
    let egress = SHARED_IN
        .replace(
            "BPF_TABLE_SHARED(\"hash\", struct key, struct counts, sessions, 1024);",
            "BPF_TABLE(\"extern\", struct key, struct counts, sessions, 1024);",
        )
        .replace(
            "BPF_QUEUESTACK_SHARED(\"queue\", events, struct ev, 128, 0);",
            "BPF_QUEUESTACK(\"extern\", events, struct ev, 128, 0);",
        );
    assert!(egress.matches("\"extern\"").count() == 2);
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "dataplane-config": {
            "ingress-path": {"name": "in", "code": SHARED_IN, "metric-configs": [
                {"name": "sessions", "map-name": "sessions",
                 "extraction-options": {"swap-on-read": true}},
                {"name": "events", "map-name": "events"}]},
            "egress-path": {"name": "out", "code": egress, "metric-configs": []}}});
    let (code, v) = curl("POST", &format!("{base}/shared"), Some(&body.to_string()));
    assert_eq!(code, 201, "{v}");
    let _ = metrics(base, "shared");
    // Datagrams from the client, each answered by the server: `n` in, `n` out per round.
    let server = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v4, 9100)).unwrap());
    let client = pair
        .client
        .run(|| UdpSocket::bind((pair.client_v4, 0)).unwrap());
    for t in [&server, &client] {
        t.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
    }
    let cport = client.local_addr().unwrap().port();
    for round in [4usize, 2] {
        for _ in 0..round {
            client.send_to(&[1; 60], (pair.server_v4, 9100)).unwrap();
            let mut b = [0u8; 100];
            let (n, from) = server.recv_from(&mut b).unwrap();
            server.send_to(&b[..n], from).unwrap();
            client.recv_from(&mut b).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let v = metrics(base, "shared");
        let m = |name: &str| {
            v["ingress-metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == name)
                .unwrap_or_else(|| panic!("no {name}: {v}"))["value"]
                .clone()
        };
        let sessions = m("sessions");
        let ours: Vec<&Value> = sessions
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                let (pl, ph) = (e["key"]["plo"].as_u64(), e["key"]["phi"].as_u64());
                [pl, ph].contains(&Some(9100u16.swap_bytes() as u64))
                    && [pl, ph].contains(&Some(cport.swap_bytes() as u64))
            })
            .collect();
        // Both directions in one entry: the egress path wrote into the ingress path's
        // table, and the read took exactly this round (both links switched together).
        assert_eq!(ours.len(), 1, "round {round}: {sessions}");
        assert_eq!(
            ours[0]["value"],
            json!({"in": round, "out": round}),
            "round {round}: {sessions}"
        );
        // The queue: each request then its answer, in order (60 bytes of payload: 102 and
        // 102 bytes on the wire), from both paths.
        let ev: Vec<(u64, u64)> = m("events")
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["dir"].as_u64().unwrap(), e["len"].as_u64().unwrap()))
            .filter(|e| e.1 == 102)
            .collect();
        let want: Vec<(u64, u64)> = (0..round).flat_map(|_| [(0, 102), (1, 102)]).collect();
        assert_eq!(ev, want, "round {round}");
    }
    // A path taking a table the other does not declare: the line, nothing loaded.
    let body = json!({"dataplane-config": {
        "ingress-path": {"name": "in", "code": SHARED_IN.replace("sessions, 1024);", "sess, 1024);").replace("sessions.", "sess."), "metric-configs": []},
        "egress-path": {"name": "out", "code": egress, "metric-configs": []}}});
    let (code, v) = curl("POST", &format!("{base}/broken"), Some(&body.to_string()));
    assert_eq!(code, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("line 4:") && e.contains("declares no table `sessions`"),
        "{e}"
    );
}

/// Sessions of a Dynmon reading, per-CPU timestamps removed, in key order.
fn sessions_of(v: &Value) -> Vec<Value> {
    let mut s: Vec<Value> = v["ingress-metrics"][0]["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions: {v}"))
        .clone();
    for e in &mut s {
        for per_cpu in e["value"].as_array_mut().unwrap() {
            let o = per_cpu.as_object_mut().unwrap();
            o.remove("start_timestamp");
            o.remove("alive_timestamp");
        }
    }
    s.sort_by_key(|e| e["key"].to_string());
    s
}

#[test]
fn the_dialects_crypto_monitor_keeps_the_built_in_records() {
    let b = bed("dynbccc", Some(("crypto1", "crypto")));
    let (pair, base) = (&b.pair, &b.base);
    let ingress = example("bcc/crypto.c");
    let decl = "BPF_TABLE_SHARED(\"percpu_hash\", struct session_key, struct session_value, sessions, 10000);";
    assert!(ingress.contains(decl));
    let egress = ingress.replace(
        decl,
        "BPF_TABLE(\"extern\", struct session_key, struct session_value, sessions, 10000);",
    );
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "dataplane-config": {
            "ingress-path": {"name": "in", "code": ingress, "metric-configs": [
                {"name": "sessions", "map-name": "sessions",
                 "extraction-options": {"swap-on-read": true}}]},
            "egress-path": {"name": "out", "code": egress, "metric-configs": []}}});
    let (code, v) = curl(
        "POST",
        &format!("{base}/bcccrypto"),
        Some(&body.to_string()),
    );
    assert_eq!(code, 201, "{v}");
    // Both start from an empty window.
    for m in ["crypto1", "bcccrypto"] {
        let (code, v) = curl("GET", &format!("{base}/{m}/metrics"), None);
        assert_eq!(code, 200, "{m}: {v}");
    }
    // A TCP connection (SYN: method 1) with data both ways, UDP to port 53 (method 2) and
    // between two high ports (method 3), each datagram answered.
    let listener = pair
        .server
        .run(|| std::net::TcpListener::bind((pair.server_v4, 8080)).unwrap());
    let echo = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut b = vec![0u8; 3000];
        let mut got = 0;
        while got < 3000 {
            let n = s.read(&mut b[got..]).unwrap();
            assert!(n > 0);
            got += n;
        }
        s.write_all(&b[..1000]).unwrap();
    });
    pair.client.run(|| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect((pair.server_v4, 8080)).unwrap();
        c.write_all(&[3u8; 3000]).unwrap();
        let mut b = vec![0u8; 1000];
        c.read_exact(&mut b).unwrap();
    });
    echo.join().unwrap();
    for (port, n) in [(53u16, 3), (40123, 2)] {
        let server = pair
            .server
            .run(|| UdpSocket::bind((pair.server_v4, port)).unwrap());
        let client = pair
            .client
            .run(|| UdpSocket::bind((pair.client_v4, 0)).unwrap());
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        for _ in 0..n {
            client.send_to(&[5; 77], (pair.server_v4, port)).unwrap();
            let mut b = [0u8; 200];
            let (k, from) = server.recv_from(&mut b).unwrap();
            server.send_to(&b[..k], from).unwrap();
            client.recv_from(&mut b).unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, builtin) = curl("GET", &format!("{base}/crypto1/metrics"), None);
    let (_, bcc) = curl("GET", &format!("{base}/bcccrypto/metrics"), None);
    let (builtin, bcc) = (sessions_of(&builtin), sessions_of(&bcc));
    // The traffic is there: three sessions (TCP 8080, UDP 53, UDP 40123), and among the
    // CPUs' values the three methods (each CPU sets its own from the first packet it sees).
    assert_eq!(builtin.len(), 3, "{builtin:?}");
    let methods: std::collections::BTreeSet<u64> = builtin
        .iter()
        .flat_map(|s| s["value"].as_array().unwrap().iter())
        .map(|c| c["method"].as_u64().unwrap())
        .filter(|&m| m != 0)
        .collect();
    assert_eq!(
        methods.into_iter().collect::<Vec<_>>(),
        [1, 2, 3],
        "{builtin:?}"
    );
    assert_eq!(
        bcc, builtin,
        "the BCC crypto monitor's records differ from the built-in monitor's"
    );
}

/// One metric of a Dynmon reading (by position), `timestamp`s removed, sorted.
fn records(v: &Value, i: usize) -> Vec<Value> {
    let mut r: Vec<Value> = v["ingress-metrics"][i]["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no metric {i}: {v}"))
        .clone();
    for e in &mut r {
        e.as_object_mut().unwrap().remove("timestamp");
    }
    r.sort_by_key(|e| e.to_string());
    r
}

#[test]
fn the_dialects_ddos_monitor_keeps_the_built_in_records() {
    let b = bed("dynbccd", Some(("ddos1", "ddos")));
    let (pair, base) = (&b.pair, &b.base);
    let ingress = example("bcc/ddos.c");
    let decls = [
        (
            "BPF_TABLE_SHARED(\"hash\", struct session_key, struct session_value, sessions, 1024);",
            "BPF_TABLE(\"extern\", struct session_key, struct session_value, sessions, 1024);",
        ),
        (
            "BPF_QUEUESTACK_SHARED(\"queue\", packets, struct features, 102400, 0);",
            "BPF_QUEUESTACK(\"extern\", packets, struct features, 102400, 0);",
        ),
    ];
    let mut egress = ingress.clone();
    for (own, ext) in decls {
        assert!(egress.contains(own));
        egress = egress.replace(own, ext);
    }
    // The built-in monitor's order: packets, then sessions.
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "dataplane-config": {
            "ingress-path": {"name": "in", "code": ingress, "metric-configs": [
                {"name": "packets", "map-name": "packets"},
                {"name": "sessions", "map-name": "sessions",
                 "extraction-options": {"swap-on-read": true}}]},
            "egress-path": {"name": "out", "code": egress, "metric-configs": []}}});
    let (code, v) = curl("POST", &format!("{base}/bccddos"), Some(&body.to_string()));
    assert_eq!(code, 201, "{v}");
    for m in ["ddos1", "bccddos"] {
        let (code, v) = curl("GET", &format!("{base}/{m}/metrics"), None);
        assert_eq!(code, 200, "{m}: {v}");
    }
    // A TCP connection, 120 datagrams one way (past the 100 a session keeps), 3 pings.
    let listener = pair
        .server
        .run(|| std::net::TcpListener::bind((pair.server_v4, 8081)).unwrap());
    let echo = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 500];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b[..200]).unwrap();
    });
    pair.client.run(|| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect((pair.server_v4, 8081)).unwrap();
        c.write_all(&[4u8; 500]).unwrap();
        let mut b = [0u8; 200];
        c.read_exact(&mut b).unwrap();
    });
    echo.join().unwrap();
    let sink = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v4, 9200)).unwrap());
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, 0)).unwrap();
        for i in 0..120u8 {
            u.send_to(&[i; 33], (pair.server_v4, 9200)).unwrap();
        }
    });
    pair.client.exec_ok(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &pair.server_v4.to_string(),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(sink);
    let (_, builtin) = curl("GET", &format!("{base}/ddos1/metrics"), None);
    let (_, bcc) = curl("GET", &format!("{base}/bccddos/metrics"), None);
    let (bp, bs) = (records(&builtin, 0), records(&builtin, 1));
    // The traffic is there: the UDP session kept 100 of its 120, the pings their 6.
    let udp = bs
        .iter()
        .find(|s| {
            s["key"]["dport"] == 9200u16.swap_bytes() || s["key"]["sport"] == 9200u16.swap_bytes()
        })
        .unwrap_or_else(|| panic!("no UDP session: {bs:?}"));
    assert_eq!(udp["value"]["n_packets"], 100, "{bs:?}");
    let icmp = bs
        .iter()
        .find(|s| s["key"]["proto"] == 1)
        .unwrap_or_else(|| panic!("no ICMP session: {bs:?}"));
    assert_eq!(icmp["value"]["n_packets"], 6, "{bs:?}");
    assert!(bp.len() > 110, "{}", bp.len());
    assert_eq!(
        records(&bcc, 1),
        bs,
        "the BCC ddos monitor's sessions differ from the built-in monitor's"
    );
    assert_eq!(
        records(&bcc, 0),
        bp,
        "the BCC ddos monitor's packet records differ from the built-in monitor's"
    );
}

#[test]
fn the_other_constructs_read_as_their_libbpf_twin_and_pcn_log_reaches_the_log() {
    let b = bed("dynbcck", None);
    let (p, pair, api, base) = (&b.p, &b.pair, b.api, &b.base);
    let data = |f: &str| {
        std::fs::read_to_string(format!("{}/tests/data/bcc/{f}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    };
    let configs = |extra: bool| {
        let mut m = vec![
            json!({"name": "by_port", "map-name": "by_port",
                   "extraction-options": {"empty-on-read": true}}),
            json!({"name": "per_cpu", "map-name": "per_cpu"}),
            json!({"name": "recent", "map-name": "recent"}),
            json!({"name": "ports", "map-name": "ports"}),
            json!({"name": "top", "map-name": "top"}),
        ];
        if extra {
            m.push(json!({"name": "epoch", "map-name": "epoch"}));
        }
        m
    };
    // The twin the native way (/api/v1/dynmon), the BCC program the Polycube way.
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "paths": [{"source": data("constructs_libbpf.c"), "metrics": configs(false)}]});
    let (code, v) = curl(
        "POST",
        &format!("http://127.0.0.1:{api}/api/v1/dynmon/twin"),
        Some(&body.to_string()),
    );
    assert!(code == 200 || code == 201, "twin: {v}");
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "dataplane-config": {"ingress-path": {"name": "bcck", "code": data("constructs.c"),
            "metric-configs": configs(true)}}});
    let (code, v) = curl("POST", &format!("{base}/bcck"), Some(&body.to_string()));
    assert_eq!(code, 201, "bcck: {v}");
    let unix_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // RX_DROP drops: a datagram to 9004 never arrives, one to 9003 does.
    let sink = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v4, 9004)).unwrap());
    let open = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v4, 9003)).unwrap());
    for u in [&sink, &open] {
        u.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
    }
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, 0)).unwrap();
        u.send_to(b"dropped", (pair.server_v4, 9004)).unwrap();
        u.send_to(b"through", (pair.server_v4, 9003)).unwrap();
    });
    let mut b = [0u8; 16];
    assert_eq!(open.recv(&mut b).unwrap(), 7);
    assert!(sink.recv(&mut b).is_err(), "RX_DROP let a datagram through");
    drop((sink, open));
    // Both start from an empty reading.
    let _ = metrics(base, "twin");
    let _ = metrics(base, "bcck");
    let before = unix_s();
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, 0)).unwrap();
        for port in [9001u16, 9001, 9002, 9002, 9002, 9003] {
            u.send_to(&[9; 28], (pair.server_v4, port)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let twin = metrics(base, "twin");
    let mut bcc = metrics(base, "bcck");
    let after = unix_s();
    // pcn_get_time_epoch: Unix time (read apart: the twin has no such clock).
    let list = bcc["ingress-metrics"].as_array_mut().unwrap();
    let i = list.iter().position(|m| m["name"] == "epoch").unwrap();
    let epoch = list.remove(i)["value"][0].as_u64().unwrap() / 1_000_000_000;
    assert!(
        (before..=after).contains(&epoch),
        "{before} <= {epoch} <= {after}"
    );
    // The reading is what the traffic makes: counts 2, 3, 1; 9001 deleted from the LRU
    // table by 9003; the stack 9001, 9001, 9003 (each 9002 popped itself); its top 9003.
    let get = |name: &str| -> Value {
        twin["ingress-metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()["value"]
            .clone()
    };
    let counts: Vec<(u64, u64)> = get("by_port")
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"]["port"].as_u64().unwrap(),
                e["value"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(9001, 2), (9002, 3), (9003, 1)], "{twin}");
    let recent: Vec<u64> = get("recent")
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"]["port"].as_u64().unwrap())
        .collect();
    assert_eq!(recent, [9002, 9003], "{twin}");
    let mut stack: Vec<u64> = get("ports")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    stack.sort();
    assert_eq!(stack, [9001, 9001, 9003], "{twin}");
    assert_eq!(get("top"), json!([9003]), "{twin}");
    assert_eq!(
        bcc["ingress-metrics"], twin["ingress-metrics"],
        "the BCC program's metrics differ from its libbpf twin's"
    );
    // pcn_log: the daemon's log has the messages (written within a second or so).
    let want = "pcn_log: udp to port 9003, 70 bytes";
    let mut log = String::new();
    for _ in 0..50 {
        log = common::logs(p);
        if log.contains(want) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        log.contains(want),
        "{want:?} not in the daemon's log:\n{log}"
    );
    assert_eq!(
        log.matches("pcn_log: udp to port 9002,").count(),
        3,
        "{log}"
    );
    // At most 16 messages a second per CPU: 200 datagrams at once leave at least one
    // second's budget and at most two seconds' on every CPU. (The budget is per second of
    // the kernel clock: the messages above must be in an earlier second, or they use
    // part of it.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, 0)).unwrap();
        for _ in 0..200 {
            u.send_to(&[9; 28], (pair.server_v4, 9001)).unwrap();
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let n = common::logs(p)
        .matches("pcn_log: udp to port 9001,")
        .count()
        - 2;
    let cpus = aya::util::nr_cpus().unwrap();
    assert!((16..=2 * 16 * cpus).contains(&n), "{n} messages of 200");
}
