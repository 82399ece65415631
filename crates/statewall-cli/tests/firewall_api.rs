//! The firewall through its REST API, with real traffic between namespaces the test
//! creates: COMPAT.md's example batch over the Polycube path with curl (no Content-Type),
//! the rule list with its default stub, a default-DROP ingress chain with an ACCEPT rule,
//! a bad batch that changes nothing, counters, and a restart that keeps rules and counters.

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{curl, free_port, Daemon, Paths};
use serde_json::Value;
use statewall_harness::netns::Pair;

fn connects(pair: &Pair, port: u16) -> bool {
    let to = SocketAddr::from((pair.server_v4, port));
    pair.client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(400)))
        .is_ok()
}

#[test]
fn polycube_path_batches_enforce_and_persist() {
    let p = Paths::new("fwapi");
    let pair = Pair::new("fwapi");
    std::fs::write(&p.config, "").unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let d = Daemon::start(&p, &["--listen", &listen, "--no-auth"]);
    let base = format!("http://{listen}/polycube/v1");
    let (code, v) = curl(
        "POST",
        &format!("{base}/firewall/fw1"),
        Some(r#"{"type": "TC", "loglevel": "INFO"}"#),
    );
    assert_eq!(code, 200, "{v}");
    let attach = format!(
        r#"{{"cube": "fw1", "port": "{}", "netns": "{}", "position": "last"}}"#,
        pair.server_if, pair.server.name
    );
    let (code, v) = curl("POST", &format!("{base}/attach"), Some(&attach));
    assert_eq!(code, 200, "{v}");
    let (_, v) = curl("GET", &format!("{base}/firewall/fw1/"), None);
    assert_eq!(v["parent"], pair.server_if.as_str());
    // COMPAT.md's example batch: one rule left, the ICMP one for 10.0.0.11, id 0.
    let example = include_str!("../../../fuzz/corpus/rest_bodies/compat_batch");
    let (code, v) = curl(
        "POST",
        &format!("{base}/firewall/fw1/chain/INGRESS/batch"),
        Some(example),
    );
    assert_eq!(code, 200, "{v}");
    let (_, list) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/rule"),
        None,
    );
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["id"], 0);
    assert_eq!(list[0]["src"], "10.0.0.11/32");
    assert_eq!(list[0]["dst"], "10.0.0.0/24");
    assert_eq!(list[0]["l4proto"], "ICMP");
    assert_eq!(
        list[1],
        serde_json::json!({"id": 1, "action": "ACCEPT", "description": "Default Policy"})
    );
    // Default DROP on ingress, with an ACCEPT rule for tcp/22 from the client.
    let sv = pair.server_v4;
    let _l22 = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let _l23 = pair.server.run(|| TcpListener::bind((sv, 23))).unwrap();
    assert!(connects(&pair, 22) && connects(&pair, 23), "default ACCEPT");
    let rule = format!(
        r#"{{"rules": [{{"operation": "append", "l4proto": "tcp", "src": "{}/24", "dport": 22, "action": "accept", "description": "ssh"}}]}}"#,
        pair.client_v4
    );
    let (code, v) = curl(
        "POST",
        &format!("{base}/firewall/fw1/chain/INGRESS/batch"),
        Some(&rule),
    );
    assert_eq!(code, 200, "{v}");
    let (code, v) = curl(
        "PATCH",
        &format!("{base}/firewall/fw1/chain/INGRESS/"),
        Some(r#"{"default": "drop"}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert!(connects(&pair, 22), "the ACCEPT rule");
    assert!(!connects(&pair, 23), "the default DROP");
    // A bad batch: the index and reason, and nothing changes.
    let bad = r#"{"rules": [{"operation": "append", "l4proto": "udp", "dport": 53, "action": "accept"},
                            {"operation": "append", "l4proto": "tcp", "dport": "99999", "action": "accept"}]}"#;
    let (code, v) = curl(
        "POST",
        &format!("{base}/firewall/fw1/chain/INGRESS/batch"),
        Some(bad),
    );
    assert_eq!(code, 400);
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("rules[1]") && e.contains("dport"), "{e}");
    let (_, after) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/rule"),
        None,
    );
    assert_eq!(after.as_array().unwrap().len(), 3, "unchanged: {after}");
    // Counters.
    let (_, st) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/stats"),
        None,
    );
    let ssh = st[1]["pkts"].as_u64().unwrap();
    assert!(ssh >= 1, "{st}");
    assert_eq!(st[1]["description"], "ssh");
    // A restart keeps the rules, the enforcement and the counters.
    assert_eq!(d.stop(), 0);
    assert!(!connects(&pair, 23), "enforced while the daemon is down");
    let d = Daemon::start(&p, &["--listen", &listen, "--no-auth"]);
    let (_, st) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/stats"),
        None,
    );
    assert!(st[1]["pkts"].as_u64().unwrap() >= ssh, "{st}");
    assert!(connects(&pair, 22));
    assert!(!connects(&pair, 23));
    let (_, st2) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/stats"),
        None,
    );
    assert!(st2[1]["pkts"].as_u64().unwrap() > st[1]["pkts"].as_u64().unwrap());
    // Inserting before the rule moves its counter with it.
    let ins = r#"{"rules": [{"operation": "insert", "id": 0, "l4proto": "udp", "dport": 5353, "action": "drop"}]}"#;
    let (code, _) = curl(
        "POST",
        &format!("{base}/firewall/fw1/chain/INGRESS/batch"),
        Some(ins),
    );
    assert_eq!(code, 200);
    let (_, st3) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/stats"),
        None,
    );
    assert_eq!(st3[2]["description"], "ssh");
    assert_eq!(st3[2]["pkts"], st2[1]["pkts"], "{st3}");
    assert_eq!(st3[0]["pkts"], 0);
    // That batch is a line of the journal, not a new snapshot; a restart replays it, and
    // the counters still follow their rules.
    let journal = p.state.join("firewall.journal");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("5353"), "{text}");
    assert_eq!(d.stop(), 0);
    let d = Daemon::start(&p, &["--listen", &listen, "--no-auth"]);
    let (_, st4) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/stats"),
        None,
    );
    assert_eq!(st4.as_array().map(Vec::len), Some(3), "{st4}");
    assert_eq!(st4[2]["description"], "ssh");
    assert!(st4[2]["pkts"].as_u64().unwrap() >= st3[2]["pkts"].as_u64().unwrap());
    assert!(connects(&pair, 22));
    assert!(!connects(&pair, 23));
    // Resetting the counters zeroes every rule's, and keeps the rules.
    let (code, v) = curl(
        "POST",
        &format!("{base}/firewall/fw1/chain/INGRESS/stats/reset"),
        None,
    );
    assert_eq!(code, 200, "{v}");
    let (_, st5) = curl(
        "GET",
        &format!("{base}/firewall/fw1/chain/INGRESS/stats"),
        None,
    );
    let counts: Vec<u64> = st5
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pkts"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![0, 0, 0], "{st5}");
    assert_eq!(st5[2]["description"], "ssh");
    // Detach: traffic flows again.
    let detach = format!(
        r#"{{"cube": "fw1", "port": "{}", "netns": "{}"}}"#,
        pair.server_if, pair.server.name
    );
    let (code, v) = curl("POST", &format!("{base}/detach"), Some(&detach));
    assert_eq!(code, 200, "{v}");
    assert!(connects(&pair, 23));
    d.stop();
}

fn api(d: &Daemon, method: &str, path: &str, body: &str) -> Value {
    let r = statewall::client::request_blocking(&d.socket, method, path, Some(body.to_string()))
        .unwrap();
    assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// Connection tracking under a default-DROP ingress chain: the server's own outgoing
/// connection gets its replies in (a rule accepting ESTABLISHED), a new connection from
/// outside does not; and with a 256-entry table, a flood of 3000 new flows evicts idle
/// entries while the connection that stays active keeps working.
#[test]
fn conntrack_replies_and_flood() {
    use std::io::{Read, Write};
    let p = Paths::new("fwct");
    let pair = Pair::new("fwct");
    std::fs::write(&p.config, "[firewall]\nconntrack_max = 256\n").unwrap();
    let mport = free_port();
    let d = Daemon::start(&p, &["--metrics-listen", &format!("127.0.0.1:{mport}")]);
    d.firewall_on(
        "fw2",
        &pair,
        r#"[{"conntrack": "ESTABLISHED", "action": "accept"}]"#,
    );
    api(
        &d,
        "PATCH",
        "/api/v1/firewall/fw2/chain/INGRESS",
        r#"{"default": "DROP"}"#,
    );
    let cv = pair.client_v4;
    let l = pair.client.run(|| TcpListener::bind((cv, 7777))).unwrap();
    let echo = common::echo(l, None);
    let to = SocketAddr::from((cv, 7777));
    let mut conn = pair
        .server
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .expect("the server's own connection: replies get in as ESTABLISHED");
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut roundtrip = |msg: &[u8]| {
        conn.write_all(msg).unwrap();
        let mut buf = vec![0u8; msg.len()];
        conn.read_exact(&mut buf)
            .map(|_| buf == msg)
            .unwrap_or(false)
    };
    assert!(roundtrip(b"hello"));
    let sv = pair.server_v4;
    let _l22 = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let ok = connects(&pair, 22);
    let sess = api(&d, "GET", "/api/v1/firewall/fw2/sessions", "");
    let rules = api(&d, "GET", "/api/v1/firewall/fw2/chain/INGRESS/rule", "");
    let stats = api(&d, "GET", "/api/v1/firewall/fw2/chain/INGRESS/stats", "");
    assert!(
        !ok,
        "a new connection from outside: default DROP\n{sess}\n{rules}\n{stats}"
    );
    let sess = api(&d, "GET", "/api/v1/firewall/fw2/sessions", "");
    assert!(
        sess.as_array()
            .unwrap()
            .iter()
            .any(|s| s["dport"] == 7777 && s["state"] == "ESTABLISHED"),
        "{sess}"
    );
    // The flood: 3000 new UDP flows from the server, 12 times the table.
    let sock = pair
        .server
        .run(|| std::net::UdpSocket::bind((sv, 0)))
        .unwrap();
    for i in 0..3000u16 {
        sock.send_to(b"x", (cv, 10000 + i)).unwrap();
        if i % 100 == 99 {
            assert!(
                roundtrip(b"still there"),
                "the active connection after {i} flood flows"
            );
        }
    }
    let sess = api(&d, "GET", "/api/v1/firewall/fw2/sessions", "");
    let n = sess.as_array().unwrap().len();
    assert!(n <= 300, "the table holds about 256 entries: {n}");
    // Counted: every flow of the flood was entered, and /metrics says so; the table's
    // gauge stays at its size.
    let text = common::scrape(mport);
    let created = common::sample(&text, "statewall_fw_conntrack_created_total").unwrap();
    assert!(created >= 3000.0, "connections created: {created}");
    let live = common::sample(&text, "statewall_map_entries{map=\"SW_FW_CT\"}").unwrap();
    assert!(live <= 300.0, "conntrack entries: {live}");
    assert!(roundtrip(b"after the flood"));
    drop(conn);
    echo.join().unwrap();
    d.stop();
}

/// `statewall firewall` (alias `fw`): create, attach, rules polycubectl style, a batch
/// file, show, default, stats, sessions, errors that name the operation, delete.
#[test]
fn firewall_cli() {
    use common::cli;
    let (p, pair, d) = cli_instance("fwcli", "fw3");
    let ok = |args: &[&str]| cli_ok(&p, args);
    ok(&[
        "firewall",
        "rule",
        "fw3",
        "INGRESS",
        "append",
        "l4proto=TCP",
        "dport=22",
        "action=accept",
        "description=ssh",
    ]);
    let batch = p.scratch.join("batch.json");
    std::fs::write(
        &batch,
        r#"{"rules": [{"operation": "insert", "id": 0, "l4proto": "UDP", "dport": "5000-5010", "action": "drop"}]}"#,
    )
    .unwrap();
    ok(&[
        "fw",
        "batch",
        "fw3",
        "--chain",
        "INGRESS",
        batch.to_str().unwrap(),
    ]);
    ok(&["fw", "default", "fw3", "INGRESS", "drop"]);
    let show = ok(&["fw", "show", "fw3"]);
    assert!(
        show.contains("dport=5000-5010") && show.contains("description=ssh"),
        "{show}"
    );
    assert!(
        show.contains("Default Policy") && show.contains("action=DROP"),
        "{show}"
    );
    let sv = pair.server_v4;
    let _l = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let _l23 = pair.server.run(|| TcpListener::bind((sv, 23))).unwrap();
    assert!(connects(&pair, 22));
    assert!(!connects(&pair, 23), "default DROP");
    let stats = ok(&["fw", "stats", "fw3"]);
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("INGRESS 1 ") && !l.contains("pkts=0 ")),
        "{stats}"
    );
    ok(&["fw", "sessions", "fw3"]);
    let list = ok(&["fw", "show"]);
    assert!(
        list.contains("fw3") && list.contains("DROP (2 rules)"),
        "{list}"
    );
    let (code, _, err) = cli(
        &p,
        &[
            "fw",
            "rule",
            "fw3",
            "INGRESS",
            "update",
            "id=9",
            "action=drop",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("rules[0]") && err.contains("id 9"), "{err}");
    ok(&["fw", "delete", "fw3"]);
    assert!(
        connects(&pair, 23),
        "the instance is gone, and its DROP with it"
    );
    assert!(!ok(&["fw", "show"]).contains("fw3"));
    d.stop();
}

/// LOG rules: every packet that passes one is counted and reported with its fields, in
/// `fw log`, the API and `/metrics`, and the chain goes on to the next rule.
#[test]
fn log_rules_report_hits() {
    use std::io::{Read, Write};
    let metrics = free_port();
    let p = Paths::new("fwlog");
    let pair = Pair::new("fwlog");
    std::fs::write(&p.config, "").unwrap();
    let d = Daemon::start(&p, &["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
    let ok = |args: &[&str]| cli_ok(&p, args);
    ok(&["fw", "create", "fw4"]);
    ok(&[
        "fw",
        "attach",
        "fw4",
        &pair.server_if,
        "--netns",
        &pair.server.name,
    ]);
    for rule in [
        [
            "l4proto=TCP",
            "dport=22",
            "action=log",
            "description=ssh-seen",
        ],
        [
            "l4proto=TCP",
            "dport=22",
            "action=accept",
            "description=ssh",
        ],
    ] {
        let mut a = vec!["fw", "rule", "fw4", "INGRESS", "append"];
        a.extend_from_slice(&rule);
        ok(&a);
    }
    ok(&["fw", "default", "fw4", "INGRESS", "drop"]);
    let sv = pair.server_v4;
    let l = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let to = SocketAddr::from((sv, 22));
    let mut c = pair
        .client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .expect("LOG goes on to the ACCEPT rule");
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    drop(c);
    drop(s);
    // Every packet the LOG rule counted shows up as an event (read asynchronously).
    let stats = d.get("/api/v1/firewall/fw4/chain/INGRESS/stats");
    let counted = stats[0]["pkts"].as_u64().unwrap();
    assert!(counted >= 3, "{stats}");
    assert_eq!(stats[1]["pkts"].as_u64(), Some(counted), "{stats}");
    let mut events = Value::Null;
    for _ in 0..100 {
        events = d.get("/api/v1/firewall/fw4/log");
        if events.as_array().unwrap().len() as u64 >= counted {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ev = events.as_array().unwrap();
    assert_eq!(ev.len() as u64, counted, "{events}");
    let syn = &ev[0];
    assert_eq!(syn["chain"], "INGRESS", "{syn}");
    assert_eq!(syn["rule"], 0, "{syn}");
    assert_eq!(syn["description"], "ssh-seen", "{syn}");
    assert_eq!(syn["l4proto"], "TCP", "{syn}");
    assert_eq!(syn["src"], pair.client_v4.to_string(), "{syn}");
    assert_eq!(syn["dst"], sv.to_string(), "{syn}");
    assert_eq!(syn["dport"], 22, "{syn}");
    assert_eq!(syn["tcpflags"], "SYN", "{syn}");
    assert_eq!(syn["conntrack"], "NEW", "{syn}");
    assert!(ev
        .iter()
        .any(|e| e["tcpflags"].as_str().unwrap().contains("FIN")));
    // `since` pages; the CLI prints the same events.
    let last = ev.last().unwrap()["seq"].as_u64().unwrap();
    let v = d.get(&format!("/api/v1/firewall/fw4/log?since={}", last - 1));
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let text = ok(&["fw", "log", "fw4"]);
    assert_eq!(text.lines().count() as u64, counted, "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("INGRESS rule 0 NEW TCP")
            && text.contains("(ssh-seen)"),
        "{text}"
    );
    // Nothing matches on port 23: no event.
    assert!(!connects(&pair, 23));
    let n = d.get("/api/v1/firewall/fw4/log").as_array().unwrap().len() as u64;
    assert_eq!(n, counted);
    // /metrics has the per-rule counters and the LOG event counters.
    let text = common::scrape(metrics);
    assert!(
        text.contains(&format!(
            "statewall_fw_rule_packets_total{{firewall=\"fw4\",chain=\"INGRESS\",rule=\"0\"}} {counted}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "statewall_fw_log_events_total{{what=\"log_queued\"}} {counted}"
        )),
        "{text}"
    );
    // No rule names an address yet: no field has IPv4 prefixes in force. A rule on a
    // source prefix puts the chain's sources in the IPv4 direct table.
    assert!(
        text.contains("statewall_fw_v4_fields{table=\"direct\"} 0"),
        "{text}"
    );
    ok(&[
        "fw",
        "rule",
        "fw4",
        "INGRESS",
        "append",
        "src=198.18.0.0/15",
        "action=drop",
    ]);
    let text = common::scrape(metrics);
    assert!(
        text.contains("statewall_fw_v4_fields{table=\"direct\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("statewall_fw_v4_fields{table=\"trie\"} 0"),
        "{text}"
    );
    let blocks = common::sample(&text, "statewall_fw_v4_blocks").unwrap();
    assert!(blocks >= 256.0, "a root's blocks: {blocks}");
    d.stop();
}

/// `statewall fw apply NAME FILE --confirm 2s`: the ruleset is reverted by itself unless
/// confirmed in time; confirmed, it stays.
#[test]
fn apply_confirm_reverts_unless_confirmed() {
    use common::cli;
    let (p, pair, d) = cli_instance("fwconf", "fw4");
    let ok = |args: &[&str]| cli_ok(&p, args);
    let file = p.scratch.join("ruleset.json");
    std::fs::write(
        &file,
        r#"{"INGRESS": {"default": "DROP", "rules": [{"l4proto": "TCP", "dport": 22, "action": "accept"}]}}"#,
    )
    .unwrap();
    let sv = pair.server_v4;
    let _l22 = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let _l23 = pair.server.run(|| TcpListener::bind((sv, 23))).unwrap();
    let f = file.to_str().unwrap();
    ok(&["fw", "apply", "fw4", f, "--confirm", "2s"]);
    assert!(connects(&pair, 22) && !connects(&pair, 23), "applied");
    // Not confirmed: back to the previous (empty, ACCEPT) ruleset.
    let t0 = std::time::Instant::now();
    while !connects(&pair, 23) {
        assert!(t0.elapsed() < Duration::from_secs(10), "never reverted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!ok(&["fw", "show", "fw4"]).contains("dport=22"));
    let (code, _, err) = cli(&p, &["fw", "confirm", "fw4"]);
    assert_ne!(code, 0);
    assert!(err.contains("nothing to confirm"), "{err}");
    // Confirmed: it stays past the deadline.
    ok(&["fw", "apply", "fw4", f, "--confirm", "2s"]);
    ok(&["fw", "confirm", "fw4"]);
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        connects(&pair, 22) && !connects(&pair, 23),
        "confirmed: kept"
    );
    d.stop();
}

/// `statewall` run as a client of the daemon at `p`; it must succeed; its stdout.
fn cli_ok(p: &Paths, args: &[&str]) -> String {
    let (code, out, err) = common::cli(p, args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

/// A daemon and a pair of namespaces, with firewall `name` made and attached to the
/// server's interface through the CLI.
fn cli_instance(tag: &str, name: &str) -> (Paths, Pair, Daemon) {
    let p = Paths::new(tag);
    let pair = Pair::new(tag);
    std::fs::write(&p.config, "").unwrap();
    let d = Daemon::start(&p, &[]);
    cli_ok(&p, &["fw", "create", name]);
    cli_ok(
        &p,
        &[
            "fw",
            "attach",
            name,
            &pair.server_if,
            "--netns",
            &pair.server.name,
        ],
    );
    (p, pair, d)
}

/// A config with the pair's server interface (and `extra` lines in its section).
fn interface_config(pair: &Pair, extra: &str) -> String {
    format!(
        "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n{extra}",
        pair.server_if, pair.server.name
    )
}

/// The programs on one hook of the pair's server interface.
fn programs_on(d: &Daemon, pair: &Pair, hook: &str) -> Vec<String> {
    d.programs(Some(&pair.server_if), hook)
}

/// Creates firewall instance `base` of type `ty`, attaches it to the pair's server
/// interface and appends a rule that drops the client's TCP to port 23. Returns the attach
/// body.
fn drop_port_23(d: &Daemon, pair: &Pair, base: &str, ty: &str) -> String {
    d.ok("POST", base, &format!(r#"{{"type": "{ty}"}}"#));
    let attach = format!(
        r#"{{"port": "{}", "netns": "{}"}}"#,
        pair.server_if, pair.server.name
    );
    d.ok("POST", &format!("{base}/attach"), &attach);
    let rule = format!(
        r#"{{"rules": [{{"operation": "append", "l4proto": "tcp", "src": "{}/32", "dport": 23, "action": "drop"}}]}}"#,
        pair.client_v4
    );
    // The daemon says where the batch's time went: its phases, in order, within the whole.
    let r = statewall::client::request_blocking(
        &d.socket,
        "POST",
        &format!("{base}/chain/INGRESS/batch"),
        Some(rule),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<&str> = r.server_phases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["parse", "lock", "plan", "kernel", "state", "journal"]
    );
    let sum: f64 = r.server_phases.iter().map(|(_, ms)| ms).sum();
    let app = r.server_ms.unwrap();
    // (Each figure is rounded to a microsecond.)
    assert!(
        r.server_phases.iter().all(|(_, ms)| *ms >= 0.0) && sum <= app + 0.006,
        "{:?} within {app}",
        r.server_phases
    );
    attach
}

/// An `XDP_DRV` instance: its ingress chain runs in `sw_fw_xdp` on the interface's XDP hook
/// (no tc ingress program there; egress stays on tc), drops what its rule says with the
/// rule's counter counting it, and lets the rest through. On an interface whose gates run
/// on tcx ingress the attach is refused (the chain would run before them), and the
/// instance keeps no port; with the interface in XDP mode, the chain runs inside the XDP
/// ingress program after the gates.
#[test]
fn xdp_instance_classifies_in_xdp() {
    let p = Paths::new("fwxdp");
    let pair = Pair::new("fwxdp");
    std::fs::write(&p.config, "").unwrap();
    let d = Daemon::start(&p, &[]);
    let base = "/api/v1/firewall/fx";
    let attach = drop_port_23(&d, &pair, base, "XDP_DRV");
    assert_eq!(programs_on(&d, &pair, "xdp"), vec!["sw_fw_xdp"]);
    assert!(!programs_on(&d, &pair, "ingress").contains(&"sw_fw_ingress".to_string()));
    assert!(programs_on(&d, &pair, "egress").contains(&"sw_fw_egress".to_string()));
    let sv = pair.server_v4;
    let _l22 = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let _l23 = pair.server.run(|| TcpListener::bind((sv, 23))).unwrap();
    assert!(connects(&pair, 22), "no rule for tcp/22: accepted");
    assert!(!connects(&pair, 23), "the DROP rule, in XDP");
    let stats = d.get(&format!("{base}/chain/INGRESS/stats"));
    let dropped = stats[0]["pkts"].as_u64().unwrap_or(0);
    assert!(dropped >= 1, "the rule counted its drops: {stats}");
    // A reload that puts the gates on the port's tcx ingress: the saved XDP instance's
    // chain moves to tcx (after them) and keeps dropping; so it does after a restart.
    std::fs::write(&p.config, interface_config(&pair, "")).unwrap();
    d.ok("POST", "/api/v1/reload", "");
    let on_tcx = |d: &Daemon| {
        assert!(programs_on(d, &pair, "xdp").is_empty());
        assert!(programs_on(d, &pair, "ingress").contains(&"sw_fw_ingress".to_string()));
        assert!(connects(&pair, 22));
        assert!(!connects(&pair, 23), "the DROP rule, on tcx now");
    };
    on_tcx(&d);
    d.stop();
    let d = Daemon::start(&p, &[]);
    on_tcx(&d);
    d.stop();
    // (Its pins and links go with its paths.)
    drop(p);

    // The same instance on an interface whose gates run on tcx: refused, nothing kept.
    let p = Paths::new("fwxdp2");
    std::fs::write(&p.config, interface_config(&pair, "")).unwrap();
    let d = Daemon::start(&p, &[]);
    d.ok("POST", base, r#"{"type": "XDP_SKB"}"#);
    let r = statewall::client::request_blocking(
        &d.socket,
        "POST",
        &format!("{base}/attach"),
        Some(attach.clone()),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("before the gates"), "{}", r.body);
    assert_eq!(d.get(base)["ports"], serde_json::json!([]), "nothing kept");
    assert!(programs_on(&d, &pair, "xdp").is_empty());
    d.stop();
    drop(p);

    // The interface in XDP mode: one XDP program runs the gates, then the chain.
    let p = Paths::new("fwxdp3");
    std::fs::write(&p.config, interface_config(&pair, "ingress = \"xdp\"\n")).unwrap();
    let d = Daemon::start(&p, &[]);
    drop_port_23(&d, &pair, base, "TC");
    assert_eq!(programs_on(&d, &pair, "xdp"), vec!["sw_xdp_ingress"]);
    assert!(!programs_on(&d, &pair, "ingress").contains(&"sw_fw_ingress".to_string()));
    assert!(connects(&pair, 22));
    assert!(!connects(&pair, 23), "the DROP rule, after the XDP gates");
    let stats = d.get(&format!("{base}/chain/INGRESS/stats"));
    assert!(stats[0]["pkts"].as_u64().unwrap_or(0) >= 1, "{stats}");
    d.stop();
}

/// The programs find most interfaces in an array indexed by the interface index and the
/// others (index 4096 and above) in the interface hash: a chain on a veth of index 70000
/// drops what its rule says, counts it, and stops when detached; so does one on an
/// ordinary veth, whose array slot is cleared at the detach.
#[test]
fn interfaces_past_the_array_are_classified_from_the_hash() {
    use statewall_common::firewall::IFIDX_SLOTS;
    for (tag, index) in [("fwhi", Some(70_000u32)), ("fwlo", None)] {
        let p = Paths::new(tag);
        let pair = Pair::with_server_index(tag, index);
        let got = pair
            .server
            .exec_ok(&["cat", &format!("/sys/class/net/{}/ifindex", pair.server_if)]);
        let got: u32 = got.trim().parse().unwrap();
        assert_eq!(got >= IFIDX_SLOTS, index.is_some(), "{tag}: index {got}");
        std::fs::write(&p.config, "").unwrap();
        let d = Daemon::start(&p, &[]);
        let base = "/api/v1/firewall/fi";
        let port = drop_port_23(&d, &pair, base, "TC");
        let sv = pair.server_v4;
        let _l22 = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
        let _l23 = pair.server.run(|| TcpListener::bind((sv, 23))).unwrap();
        assert!(connects(&pair, 22), "{tag}: no rule for tcp/22");
        assert!(!connects(&pair, 23), "{tag}: the DROP rule");
        let stats = d.get(&format!("{base}/chain/INGRESS/stats"));
        assert!(
            stats[0]["pkts"].as_u64().unwrap_or(0) >= 1,
            "{tag}: {stats}"
        );
        d.ok("POST", &format!("{base}/detach"), &port);
        assert!(connects(&pair, 23), "{tag}: detached, nothing classifies");
        d.stop();
    }
}

/// A start makes the interface array equal to the interface hash: a slot a stopped daemon
/// left behind (here written by hand, for an interface no instance has) is cleared, and
/// the instance's own interface keeps its slot and its chain.
#[test]
fn a_stale_interface_slot_is_cleared_at_start() {
    use aya::maps::{Array, Map, MapData};
    use statewall_common::firewall::{IFACE_PRESENT, MAP_FW_IFIDX};
    let p = Paths::new("fwst");
    let pair = Pair::new("fwst");
    std::fs::write(&p.config, "").unwrap();
    let d = Daemon::start(&p, &[]);
    drop_port_23(&d, &pair, "/api/v1/firewall/fs", "TC");
    assert_eq!(d.stop(), 0);
    let pin = statewall::engine::pins::Pins::new(&p.root).map(MAP_FW_IFIDX);
    let open = || -> Array<MapData, u32> {
        Array::try_from(Map::Array(MapData::from_pin(&pin).unwrap())).unwrap()
    };
    let idx: u32 = pair
        .server
        .exec_ok(&["cat", &format!("/sys/class/net/{}/ifindex", pair.server_if)])
        .trim()
        .parse()
        .unwrap();
    let stale = 4000;
    assert_ne!(idx, stale);
    assert_ne!(
        open().get(&idx, 0).unwrap() & IFACE_PRESENT,
        0,
        "the port's slot"
    );
    open().set(stale, IFACE_PRESENT, 0).unwrap();
    let d = Daemon::start(&p, &[]);
    assert_eq!(open().get(&stale, 0).unwrap(), 0, "the stale slot");
    assert_ne!(
        open().get(&idx, 0).unwrap() & IFACE_PRESENT,
        0,
        "the port's slot"
    );
    let sv = pair.server_v4;
    let _l23 = pair.server.run(|| TcpListener::bind((sv, 23))).unwrap();
    assert!(!connects(&pair, 23), "the DROP rule, after the start");
    assert_eq!(d.stop(), 0);
}
