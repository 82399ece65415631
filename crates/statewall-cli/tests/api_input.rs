//! Bad REST input (issue 8): malformed JSON, wrong types, unknown fields, unparsable
//! addresses and oversized bodies get a 4xx whose message names the field, and change
//! nothing; a CIDR with host bits set is masked, not refused.

mod common;

use common::{Daemon, Paths};
use serde_json::Value;
use statewall::client::request_blocking;

fn call(d: &Daemon, method: &str, path: &str, body: &str) -> (u16, String) {
    let r = request_blocking(&d.socket, method, path, Some(body.to_string())).unwrap();
    (r.status, r.body)
}

#[test]
fn bad_bodies_are_refused_by_field_and_change_nothing() {
    let p = Paths::new("apiin");
    std::fs::write(&p.config, "[gate]\nprotected = [\"tcp/22\"]\n").unwrap();
    let d = Daemon::start(&p, &[]);
    let grants = "/api/v1/gate/grants";
    let cases: &[(&str, &str)] = &[
        (
            r#"{"addr": "10.0.0.300", "proto": "tcp", "port": 22, "seconds": 10}"#,
            "addr",
        ),
        (
            r#"{"addr": "10.0.0.1", "proto": "tcp", "port": "twenty-two", "seconds": 10}"#,
            "port",
        ),
        (
            r#"{"addr": "10.0.0.1", "proto": "tcp", "port": 70000, "seconds": 10}"#,
            "port",
        ),
        (
            r#"{"addr": "10.0.0.1", "proto": "tcp", "port": 22, "seconds": 10, "bogus": 1}"#,
            "bogus",
        ),
        (
            r#"{"addr": "10.0.0.1", "proto": "tcp", "port": 22}"#,
            "seconds",
        ),
        (r#"{"addr": "10.0.0.1", "proto": "tcp", "#, "line 1"),
        (r#"[1, 2, 3]"#, "JSON"),
    ];
    for (body, names) in cases {
        let (code, msg) = call(&d, "POST", grants, body);
        assert!((400..500).contains(&code), "{body}: {code} {msg}");
        assert!(
            msg.contains(names),
            "{body}: the message does not name {names}: {msg}"
        );
    }
    // A body past the limit. The daemon answers 413 and closes before the body is all
    // sent, so the body is written by hand, ignoring the broken pipe, and the answer read.
    let big = format!(
        r#"{{"addr": "10.0.0.1", "pad": "{}"}}"#,
        "x".repeat(3 << 20)
    );
    let answer = {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        let head = format!(
            "POST {grants} HTTP/1.1\r\nHost: statewall\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            big.len()
        );
        let _ = c
            .write_all(head.as_bytes())
            .and_then(|_| c.write_all(big.as_bytes()));
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Nothing was granted.
    let v: Value = d.get(grants);
    assert!(v.as_array().unwrap().is_empty(), "{v}");

    // Firewall: a bad rule anywhere in a batch names its index and field; host bits are
    // masked.
    let fw = "/api/v1/firewall/fwin";
    let (code, msg) = call(&d, "POST", fw, "{}");
    assert_eq!(code, 200, "{msg}");
    let batch = format!("{fw}/chain/INGRESS/batch");
    let bad: &[(&str, &str)] = &[
        (
            r#"{"rules": [{"operation": "append", "src": "10.0.0.0/8", "action": "drop"}, {"operation": "append", "src": "10.0.0.300/24"}]}"#,
            "rules[1]",
        ),
        (
            r#"{"rules": [{"operation": "append", "dport": "2000-1000"}]}"#,
            "dport",
        ),
        (
            r#"{"rules": [{"operation": "append", "tcpflags": "SYN,BOGUS"}]}"#,
            "tcpflags",
        ),
        (
            r#"{"rules": [{"operation": "append", "action": "REJECTX"}]}"#,
            "action",
        ),
        (
            r#"{"rules": [{"operation": "append", "colour": "red"}]}"#,
            "colour",
        ),
        (
            r#"{"rules": [{"operation": "update", "id": 5, "action": "drop"}]}"#,
            "id 5",
        ),
        (r#"{"rules": "all of them"}"#, "rules"),
    ];
    for (body, names) in bad {
        let (code, msg) = call(&d, "POST", &batch, body);
        assert!((400..500).contains(&code), "{body}: {code} {msg}");
        assert!(
            msg.contains(names),
            "{body}: the message does not name {names}: {msg}"
        );
    }
    let rules: Value = d.get(&format!("{fw}/chain/INGRESS/rule"));
    assert_eq!(
        rules.as_array().unwrap().len(),
        1,
        "only the default stub: {rules}"
    );
    let (code, msg) = call(
        &d,
        "POST",
        &batch,
        r#"{"rules": [{"operation": "append", "src": "10.0.0.150/24", "action": "drop"}]}"#,
    );
    assert_eq!(code, 200, "{msg}");
    let rules: Value = d.get(&format!("{fw}/chain/INGRESS/rule"));
    assert_eq!(rules[0]["src"], "10.0.0.0/24", "{rules}");

    // Monitors and reload: an unknown monitor is a 404 that names it.
    let (code, msg) = call(&d, "POST", "/api/v1/monitor/nothing/read", "");
    assert_eq!(code, 404);
    assert!(msg.contains("nothing"), "{msg}");
    d.stop();
}

/// What was stored must be what was sent: a CIDR with a blank, a rule whose source and
/// destination are of different families, and names out of the rule (too long, a `/`, a
/// leading `-`) are refused with 400 naming the field; a firewall stored under such a name
/// before the rule keeps working and `statewall status` reports it.
#[test]
fn values_that_would_be_stored_differently_are_refused() {
    let p = Paths::new("apibound");
    std::fs::write(&p.config, "").unwrap();
    // A firewall made before the naming rule, kept in the state directory.
    std::fs::create_dir_all(&p.state).unwrap();
    std::fs::write(
        p.state.join("firewall.json"),
        r#"{"instances": {"old name": {"slot": 0, "kind": "TC", "ports": [], "ingress": {"rules": [], "default": "ACCEPT", "accept_established": false}, "egress": {"rules": [], "default": "ACCEPT", "accept_established": false}}}}"#,
    )
    .unwrap();
    let d = Daemon::start(&p, &[]);
    let fw = "/api/v1/firewall/fwb";
    assert_eq!(call(&d, "POST", fw, "{}").0, 200);
    // The firewall's errors map to their statuses in one place: a second one is a
    // conflict, an unknown chain a bad request.
    let (code, msg) = call(&d, "POST", fw, "{}");
    assert_eq!((code, msg.contains("exists")), (409, true), "{msg}");
    let (code, msg) = call(&d, "GET", &format!("{fw}/chain/SIDEWAYS/rule"), "");
    assert_eq!((code, msg.contains("not a chain")), (400, true), "{msg}");
    let batch = format!("{fw}/chain/INGRESS/batch");
    for (rule, field) in [
        (r#"{"src": "10.0.0.1 /24"}"#, "src"),
        (r#"{"dst": " 10.0.0.1"}"#, "dst"),
        (r#"{"src": "10.0.0.0/8", "dst": "2001:db8::1"}"#, "dst"),
        (r#"{"src": "2001:db8::/32", "dst": "10.0.0.1/32"}"#, "dst"),
    ] {
        let body = format!(
            r#"{{"rules": [{{"operation": "append", "action": "drop", {} }}]}}"#,
            &rule[1..rule.len() - 1]
        );
        let (code, msg) = call(&d, "POST", &batch, &body);
        assert_eq!(code, 400, "{rule}: {msg}");
        assert!(msg.contains(field), "{rule}: {msg}");
    }
    let rules: Value = d.get(&format!("{fw}/chain/INGRESS/rule"));
    assert_eq!(
        rules.as_array().unwrap().len(),
        1,
        "nothing stored: {rules}"
    );
    let long = "f".repeat(10_000);
    for name in [
        long.as_str(),
        "-lead",
        ".hidden",
        "a%2Fb",
        "x".repeat(65).as_str(),
    ] {
        let (code, msg) = call(&d, "POST", &format!("/api/v1/firewall/{name}"), "{}");
        assert_eq!(code, 400, "{}: {msg}", &name[..name.len().min(20)]);
        assert!(msg.contains("name") && msg.len() < 400, "{msg}");
        let (code, msg) = call(
            &d,
            "POST",
            &format!("/api/v1/dynmon/{name}"),
            r#"{"interface": "lo", "paths": [{"source": "int x;", "metrics": []}]}"#,
        );
        assert_eq!(code, 400, "dynmon {}: {msg}", &name[..name.len().min(20)]);
        assert!(msg.contains("name"), "{msg}");
    }
    let (code, msg) = call(
        &d,
        "POST",
        &format!("/api/v1/firewall/{}", "x".repeat(64)),
        "{}",
    );
    assert_eq!(code, 200, "64 characters are fine: {msg}");
    let list: Value = d.get("/api/v1/firewall");
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    // The old name works and is reported.
    let old: Value = d.get("/api/v1/firewall/old%20name");
    assert_eq!(old["name"], "old name", "{old}");
    let st: Value = d.get("/api/v1/status");
    assert_eq!(
        st["names_against_the_rule"],
        serde_json::json!([{"kind": "firewall", "name": "old name"}])
    );
    let (code, out, _) = common::cli(&p, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("warning: firewall \"old name\""), "{out}");
    d.stop();
}
