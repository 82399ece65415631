//! A fleet of three hosts sharing state through a real 3-member etcd cluster (Debian's
//! etcd on loopback, ports and data directory chosen here): three daemons, each with its
//! own bpffs root, state directory and namespaces. Every host's client namespace has the
//! same address (10.77.0.1) and every server the same (10.77.0.2), as behind a balancer:
//! the same bytes can be sent to any host.

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{eventually, knock_from, spa_verdict, steps, Daemon, Paths};
use statewall_harness::{etcd::Etcd, netns::Pair};

const K: &str = "Toe6r3nv+JnMD6CE9bdcXl9qrFuJ6PB8DXcY/fNm+Uw=";
const H: &str =
    "Pb3qth89EgpqbYUgIjXvKnd4ENXC0bBBnohof500GLEJK7zwxWpFrtwVx9Y3otV8zPi/rIVigsuRPF2bwzemZg==";

/// One host: its namespaces, scratch paths, listeners on the protected ports and daemon.
struct Host {
    // (Field order: the daemon stops before its paths are torn down.)
    d: Option<Daemon>,
    p: Paths,
    pair: Pair,
    _listeners: Vec<TcpListener>,
}

/// tcp/22: SPA (fwknop, grants of `spa_secs`); tcp/23: the knock door `door`
/// (7000,8000,9000, open `open_for`); tcp/24: protected, opened by hand only; tcp/25:
/// open, for the firewall.
fn conf(h: &Host, etcd: &Etcd, node: usize, on_down: &str, spa_secs: u64) -> String {
    let eps: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    format!(
        r#"[[interface]]
name = "{ifname}"
netns = "{ns}"

[gate]
protected = ["tcp/24"]

[[knock]]
name = "door"
sequence = "7000,8000,9000"
protected = ["tcp/23"]
open_for = "3s"

[spa]
rate_interval = "10ms"
rate_burst = 5

[[spa.fwknop]]
source = ["ANY"]
open_ports = ["tcp/22"]
key_base64 = "{K}"
hmac_key_base64 = "{H}"
fw_access_timeout = {spa_secs}

[detect]
mode = "monitor"

[cluster]
endpoints = [{eps}]
node = "h{node}"
group = "test"
request_timeout = "1s"
connect_timeout = "500ms"
on_cluster_down = "{on_down}"
"#,
        ifname = h.pair.server_if,
        ns = h.pair.server.name,
        eps = eps.join(", "),
    )
}

fn hosts(tag: &str, etcd: &Etcd, on_down: [&str; 3], spa_secs: u64) -> Vec<Host> {
    (0..3)
        .map(|i| {
            let pair = Pair::new(&format!("{tag}{i}"));
            let sv = pair.server_v4;
            let listeners = [22, 23, 24, 25]
                .iter()
                .map(|port| pair.server.run(|| TcpListener::bind((sv, *port))).unwrap())
                .collect();
            let mut h = Host {
                d: None,
                p: Paths::new(&format!("{tag}{i}")),
                pair,
                _listeners: listeners,
            };
            std::fs::write(&h.p.config, conf(&h, etcd, i, on_down[i], spa_secs)).unwrap();
            h.d = Some(Daemon::start(&h.p, &[]));
            h
        })
        .collect()
}

impl Drop for Host {
    /// A failing test shows what each daemon logged (its scratch directory goes with it).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- daemon {} ---\n{}",
                self.p.config.display(),
                common::logs(&self.p)
            );
        }
    }
}

impl Host {
    fn d(&self) -> &Daemon {
        self.d.as_ref().unwrap()
    }

    /// Whether a new TCP connection from the client to `port` opens.
    fn opens(&self, port: u16) -> bool {
        let to = SocketAddr::from((self.pair.server_v4, port));
        self.pair
            .client
            .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(300)))
            .is_ok()
    }

    fn restart(&mut self) {
        assert_eq!(self.d.take().unwrap().stop(), 0);
        self.d = Some(Daemon::start(&self.p, &[]));
    }

    fn cluster(&self) -> serde_json::Value {
        self.d().get("/api/v1/status")["cluster"].clone()
    }

    /// Runs the real fwknop client from this host's client namespace to its server.
    fn fwknop(&self, extra: &[&str]) {
        common::fwknop(&self.pair, &self.p, "tcp/22", (K, H), extra)
    }

    /// Sends saved SPA bytes from this host's client to its server.
    fn resend(&self, pkt: &[u8]) {
        let to = SocketAddr::from((self.pair.server_v4, 62201));
        let pkt = pkt.to_vec();
        self.pair
            .client
            .run(move || statewall::spa::send_udp(to, &pkt))
            .unwrap();
    }
}

#[test]
fn fwknop_opens_every_host_and_its_replay_is_refused_on_each() {
    let etcd = Etcd::start(3);
    let mut hs = hosts("clspa", &etcd, ["refuse"; 3], 4);
    for h in &hs {
        assert!(!h.opens(22), "shut before SPA");
        eventually("the link is up", || h.cluster()["up"] == true);
    }
    // The real client's packet reaches host 0 only; all three open for the source.
    let saved = hs[0].p.scratch.join("spa.pkt");
    hs[0].fwknop(&["--save-packet", saved.to_str().unwrap()]);
    eventually("host 0 accepted", || {
        spa_verdict(hs[0].d(), "accepted") == 1
    });
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} lets the source in"), || h.opens(22));
    }
    assert!(!hs[1].opens(24), "and nothing else");
    assert_eq!(
        hs[1].cluster()["counts"]["installed"],
        1,
        "{}",
        hs[1].cluster()
    );
    // The same bytes to the other hosts: replays, although neither has seen them.
    let pkt = std::fs::read_to_string(&saved).unwrap();
    let pkt = pkt.trim_end().as_bytes().to_vec();
    for i in [1, 2] {
        hs[i].resend(&pkt);
        eventually(&format!("host {i} refused the replay"), || {
            spa_verdict(hs[i].d(), "replay") == 1
        });
        assert_eq!(spa_verdict(hs[i].d(), "accepted"), 0);
        assert_eq!(hs[i].cluster()["counts"]["replays"], 1);
    }
    // The grant's expiry closes tcp/22 on all three.
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} closed when the grant ended"), || {
            !h.opens(22)
        });
    }
    // Every daemon restarts: the replay is still refused on each (host 2 never saw the
    // packet: only the cluster's claim knows it), and nothing opens.
    for h in hs.iter_mut() {
        h.restart();
    }
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i}'s link is up again"), || {
            h.cluster()["up"] == true
        });
        h.resend(&pkt);
        eventually(
            &format!("host {i} refused the replay after a restart"),
            || spa_verdict(h.d(), "replay") == 1,
        );
        assert!(!h.opens(22));
    }
    // A fresh packet still works, sent to another host.
    hs[2].fwknop(&[]);
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} opens for the fresh packet"), || {
            h.opens(22)
        });
    }
}

#[test]
fn a_knock_a_grant_and_a_block_reach_every_host_and_leave_together() {
    let etcd = Etcd::start(3);
    let hs = hosts("clknock", &etcd, ["refuse"; 3], 30);
    for h in &hs {
        eventually("the link is up", || h.cluster()["up"] == true);
        assert!(!h.opens(23));
    }
    // A knock on host 1 opens the door on all three; its expiry (3 s) closes it on all.
    knock_from(
        &hs[1].pair,
        hs[1].pair.server_v4.into(),
        &steps("7000,8000,9000"),
    );
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} opened the door"), || h.opens(23));
    }
    assert!(!hs[0].opens(22), "the knock opened its own port only");
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} closed the door at its expiry"), || {
            !h.opens(23)
        });
    }
    // A grant by hand on host 0, revoked by hand on host 2: revoked on all three.
    hs[0].d().ok(
        "POST",
        "/api/v1/gate/grants",
        r#"{"addr": "10.77.0.1", "proto": "tcp", "port": 24, "seconds": 600}"#,
    );
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} has the grant by hand"), || h.opens(24));
    }
    hs[2].d().ok(
        "DELETE",
        "/api/v1/gate/grants?addr=10.77.0.1&proto=tcp&port=24",
        "",
    );
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} revoked it"), || !h.opens(24));
    }
    assert!(hs[0].cluster()["counts"]["revoked"].as_u64().unwrap() >= 1);
    // A block on host 0 (the detection stage's mitigation, by hand for 600 s) drops the
    // source on all three, with the same expiry; released on host 1, it is gone from all.
    for h in &hs {
        assert!(h.opens(25));
    }
    hs[0].d().ok(
        "POST",
        "/api/v1/detect/blocks",
        r#"{"prefix": "10.77.0.1", "seconds": 600}"#,
    );
    let left = |h: &Host| -> Option<f64> {
        let v = h.d().get("/api/v1/detect");
        v["mitigations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                m["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("10.77.0.1"))
            })
            .and_then(|m| m["left_s"].as_f64())
    };
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} drops the blocked source"), || {
            !h.opens(25)
        });
    }
    let l0 = left(&hs[0]).unwrap();
    for (i, h) in hs.iter().enumerate().skip(1) {
        let l = left(h).unwrap_or_else(|| panic!("host {i} lists no block"));
        assert!((l - l0).abs() < 2.0, "host {i}: {l} s left, host 0: {l0} s");
    }
    hs[1].d().ok("DELETE", "/api/v1/detect/10.77.0.1", "");
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} released the block"), || h.opens(25));
    }
}

#[test]
fn etcd_outages_keep_enforcement_and_everything_catches_up() {
    let mut etcd = Etcd::start(3);
    // Hosts 0 and 1 refuse SPA while etcd is away; host 2 checks locally.
    let hs = hosts("clout", &etcd, ["refuse", "refuse", "local"], 600);
    for h in &hs {
        eventually("the link is up", || h.cluster()["up"] == true);
    }
    // One member down: nothing changes.
    etcd.kill(0);
    hs[0].d().ok(
        "POST",
        "/api/v1/gate/grants",
        r#"{"addr": "10.77.0.1", "proto": "tcp", "port": 24, "seconds": 600}"#,
    );
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} has the grant (one member down)"), || {
            h.opens(24)
        });
    }
    // The member that is down is out of each host's balance, and the links stay up: no
    // request goes to it and fails, so no stretch ends (the client's balancer alone kept
    // sending it a share of the requests: the links went down and read everything again
    // every second or two).
    let dead = etcd.endpoints()[0].clone();
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} took {dead} out"), || {
            h.cluster()["members_out"] == serde_json::json!([dead])
        });
    }
    let resyncs = |h: &Host| h.cluster()["counts"]["resyncs"].as_u64().unwrap();
    let before: Vec<u64> = hs.iter().map(resyncs).collect();
    for _ in 0..30 {
        for (i, h) in hs.iter().enumerate() {
            assert_eq!(h.cluster()["up"], true, "host {i}: {}", h.cluster());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after: Vec<u64> = hs.iter().map(resyncs).collect();
    assert_eq!(before, after, "full reads while one member was down");
    let out = common::cli(&hs[1].p, &["status"]).1;
    assert!(
        out.contains(&format!(
            "etcd reachable (member refusing connections: {dead})"
        )),
        "{out}"
    );
    // Every member down: what is installed is enforced, SPA as each host says.
    etcd.kill(1);
    etcd.kill(2);
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} sees etcd gone"), || {
            h.cluster()["up"] == false
        });
        assert!(h.opens(24), "host {i} still enforces the grant it had");
        assert!(!h.opens(22));
    }
    hs[0].fwknop(&[]);
    eventually("host 0 refused (on_cluster_down = refuse)", || {
        spa_verdict(hs[0].d(), "cluster_down") == 1
    });
    assert!(!hs[0].opens(22));
    hs[2].fwknop(&[]);
    eventually("host 2 accepted on its own check (local)", || {
        spa_verdict(hs[2].d(), "accepted") == 1
    });
    assert!(hs[2].opens(22));
    assert!(!hs[1].opens(22), "not shared while etcd is away");
    assert!(
        hs[2].cluster()["pending"].as_u64().unwrap() >= 2,
        "{}",
        hs[2].cluster()
    );
    // `statewall status` says so.
    let status = |h: &Host| {
        let (code, out, err) = common::cli(&h.p, &["status"]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = status(&hs[0]);
    assert!(
        out.contains("cluster: node h0 of group test: etcd UNREACHABLE")
            && out.contains("SPA: refuse"),
        "{out}"
    );
    // etcd returns: the links recover by themselves, and the grant host 2 made meanwhile
    // reaches the others.
    for i in 0..3 {
        etcd.restart(i);
    }
    etcd.wait_healthy();
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i}'s link recovered"), || {
            h.cluster()["up"] == true
        });
        eventually(&format!("host {i} has host 2's grant"), || h.opens(22));
        assert!(h.opens(24));
    }
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} put every member back"), || {
            h.cluster()["members_out"] == serde_json::json!([])
        });
    }
    eventually("host 2's outbox is empty", || {
        hs[2].cluster()["pending"] == 0
    });
    let out = status(&hs[2]);
    assert!(
        out.contains("cluster: node h2 of group test: etcd reachable") && out.contains("0 waiting"),
        "{out}"
    );
    assert!(hs[2].cluster()["counts"]["claims"].as_u64().unwrap() >= 1);
}

/// `statewall cluster` with host `h`'s config: (exit code, stdout, stderr).
fn cluster_cli(h: &Host, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::bin())
        .arg("cluster")
        .arg("--config")
        .arg(&h.p.config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_pushed_ruleset_is_enforced_everywhere_and_a_bad_one_is_refused() {
    let etcd = Etcd::start(3);
    let hs = hosts("clpol", &etcd, ["refuse"; 3], 30);
    // Each host attaches its own instance `web` (ports are local); no rules yet.
    for h in &hs {
        eventually("the link is up", || h.cluster()["up"] == true);
        h.d().ok("POST", "/api/v1/firewall/web", "{}");
        h.d().ok(
            "POST",
            "/api/v1/firewall/web/attach",
            &format!(
                r#"{{"port": "{}", "netns": "{}"}}"#,
                h.pair.server_if, h.pair.server.name
            ),
        );
        assert!(h.opens(25));
    }
    // A ruleset pushed once is enforced on all three.
    let good = hs[0].p.scratch.join("web.json");
    std::fs::write(
        &good,
        r#"{"INGRESS": {"default": "ACCEPT", "rules": [
            {"l4proto": "tcp", "dport": 25, "action": "drop", "description": "no smtp"}]}}"#,
    )
    .unwrap();
    let (code, out, err) =
        cluster_cli(&hs[0], &["push", "firewall", "web", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // (The ruleset in force first: a connect that times out under load is no proof.)
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} has the pushed ruleset"), || {
            let rules = h.d().get("/api/v1/firewall/web/chain/INGRESS/rule");
            rules[0]["description"] == "no smtp"
        });
        assert!(!h.opens(25), "host {i} enforces the pushed ruleset");
    }
    // Local changes to an instance under cluster policy: 409, naming where it comes from.
    let r = statewall::client::request_blocking(
        &hs[1].d().socket,
        "POST",
        "/api/v1/firewall/web/chain/INGRESS/batch",
        Some(r#"{"rules": [{"operation": "delete", "id": 0}]}"#.into()),
    )
    .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body
            .contains("/statewall/groups/test/policy/firewall/web"),
        "{}",
        r.body
    );
    // A bad ruleset: the CLI refuses to push it, naming the rule...
    let bad = r#"{"INGRESS": {"rules": [{"l4proto": "tcp", "dport": 99999, "action": "drop"}]}}"#;
    let bad_file = hs[0].p.scratch.join("bad.json");
    std::fs::write(&bad_file, bad).unwrap();
    let (code, _, err) = cluster_cli(
        &hs[0],
        &["push", "firewall", "web", bad_file.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("INGRESS rules[0]"), "{err}");
    // ...and written into etcd behind its back, every host refuses it and keeps the
    // ruleset it had.
    let out = etcd.ctl(&["put", "/statewall/groups/test/policy/firewall/web", bad]);
    assert!(out.status.success(), "{out:?}");
    let status = || -> serde_json::Value {
        let (code, out, err) = cluster_cli(&hs[2], &["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    eventually("all three report the refusal", || {
        let st = status();
        let nodes = st["nodes"].as_array().unwrap().clone();
        nodes.len() == 3
            && nodes.iter().all(|n| {
                n["refused"]["firewall/web"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("99999"))
            })
    });
    let st = status();
    for n in st["nodes"].as_array().unwrap() {
        assert!(
            n["applied"]["firewall/web"].as_i64().unwrap()
                < st["policy"]["firewall/web"].as_i64().unwrap(),
            "{st}"
        );
    }
    for h in &hs {
        assert!(!h.opens(25), "the old ruleset stays in force");
    }
    // A good one again: applied everywhere.
    std::fs::write(&good, r#"{"INGRESS": {"default": "ACCEPT", "rules": []}}"#).unwrap();
    let (code, out, err) =
        cluster_cli(&hs[1], &["push", "firewall", "web", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} applied the new ruleset"), || h.opens(25));
    }
    let (code, out, _) = cluster_cli(&hs[0], &["status"]);
    assert_eq!(code, 0);
    for n in ["h0", "h1", "h2"] {
        assert!(out.contains(n), "{out}");
    }
    // Reports live under a lease: a host that stops leaves the list by itself.
    let out = etcd.ctl(&["get", "/statewall/groups/test/nodes/h1", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["kvs"][0]["lease"].as_i64().unwrap_or(0) != 0, "{v}");
}

/// SPA packets a host refused, whatever the reason.
fn spa_refusals(h: &Host) -> u64 {
    let v = h.d().get("/api/v1/spa")["verdicts"].clone();
    let all: u64 = v
        .as_object()
        .unwrap()
        .values()
        .filter_map(|n| n.as_u64())
        .sum();
    all - v["accepted"].as_u64().unwrap_or(0)
}

/// Pushes section `what` with `text` from host `h`; the revision it was stored at.
fn push_section(h: &Host, what: &str, text: &str) -> i64 {
    let file = h.p.scratch.join(format!("{what}.toml"));
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = cluster_cli(h, &["push", what, file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    out.trim_end().rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn pushed_knock_spa_and_detect_sections_replace_each_hosts_own() {
    let mut etcd = Etcd::start(3);
    let mut hs = hosts("clsec", &etcd, ["refuse"; 3], 30);
    for h in &hs {
        eventually("the link is up", || h.cluster()["up"] == true);
    }
    let runs = |h: &Host, key: &str, rev: i64| h.cluster()["policy"][key] == rev;
    // Every host runs what was pushed as `what` at `rev`.
    let everywhere = |hs: &[Host], what: &str, rev: i64| {
        for (i, h) in hs.iter().enumerate() {
            eventually(&format!("host {i} runs the pushed {what}"), || {
                runs(h, what, rev)
            });
        }
    };
    // [[knock]]: a new sequence for the door replaces each file's 7000,8000,9000.
    let knock = r#"[[knock]]
name = "door"
sequence = "7100,8100,9100"
protected = ["tcp/23"]
open_for = "3s"
"#;
    let rev = push_section(&hs[0], "knock", knock);
    everywhere(&hs, "knock", rev);
    knock_from(
        &hs[1].pair,
        hs[1].pair.server_v4.into(),
        &steps("7000,8000,9000"),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!hs[1].opens(23), "the file's sequence no longer opens");
    let new_knock =
        |h: &Host| knock_from(&h.pair, h.pair.server_v4.into(), &steps("7100,8100,9100"));
    new_knock(&hs[1]);
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} opened for the pushed sequence"), || {
            h.opens(23)
        });
    }
    let door = hs[2].d().get("/api/v1/doors");
    assert!(door.to_string().contains("7100"), "{door}");
    assert!(!door.to_string().contains("7000"), "{door}");
    // [spa]: the file's stanza opens tcp/22 only; a pushed one opens tcp/24 too.
    let before = spa_refusals(&hs[2]);
    common::fwknop(&hs[2].pair, &hs[2].p, "tcp/24", (K, H), &[]);
    eventually("host 2 refused tcp/24 under its own [spa]", || {
        spa_refusals(&hs[2]) > before
    });
    assert!(!hs[2].opens(24));
    let spa = format!(
        r#"[spa]
rate_interval = "10ms"
rate_burst = 5

[[spa.fwknop]]
source = ["ANY"]
open_ports = ["tcp/22", "tcp/24"]
key_base64 = "{K}"
hmac_key_base64 = "{H}"
fw_access_timeout = 30
"#
    );
    let rev = push_section(&hs[1], "spa", &spa);
    everywhere(&hs, "spa", rev);
    common::fwknop(&hs[2].pair, &hs[2].p, "tcp/24", (K, H), &[]);
    for (i, h) in hs.iter().enumerate() {
        eventually(
            &format!("host {i} opened tcp/24 by the pushed stanza"),
            || h.opens(24),
        );
    }
    // [detect]: from monitor to enforce everywhere.
    let rev = push_section(&hs[2], "detect", "[detect]\nmode = \"enforce\"\n");
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} runs the pushed [detect]"), || {
            runs(h, "detect", rev) && h.d().get("/api/v1/detect")["mode"] == "enforce"
        });
    }
    // [[xfsm]]: a machine written by hand, on every host: the third SYN a source sends to
    // tcp/25 within a minute is dropped (each host counts its own).
    let xfsm = r#"[[xfsm]]
name = "smtp-limit"
lookup = ["src_ip"]
states = ["ONE", "TWO"]

[[xfsm.transition]]
proto = "tcp"
port = 25
tcpflags = "syn,!ack"
next = "ONE"
hard_timeout = "60s"

[[xfsm.transition]]
state = "ONE"
proto = "tcp"
port = 25
tcpflags = "syn,!ack"
next = "TWO"
keep = "hard"

[[xfsm.transition]]
state = "TWO"
proto = "tcp"
port = 25
tcpflags = "syn,!ack"
action = "drop"
"#;
    let rev = push_section(&hs[2], "xfsm", xfsm);
    everywhere(&hs, "xfsm", rev);
    for h in &hs[..2] {
        assert!(h.opens(25) && h.opens(25), "two SYNs pass");
        assert!(!h.opens(25), "the third is dropped by the pushed machine");
    }
    // A host whose own file does not read refuses a push; mended and reloaded, it runs it.
    let conf0 = std::fs::read_to_string(&hs[0].p.config).unwrap();
    std::fs::write(&hs[0].p.config, format!("{conf0}\n[gate\n")).unwrap();
    let rev = push_section(&hs[1], "detect", "[detect]\nmode = \"monitor\"\n");
    eventually("host 0 refused it", || {
        hs[0].cluster()["refused"]["detect"]["revision"] == rev
    });
    let reason = hs[0].cluster()["refused"]["detect"]["reason"].clone();
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains(hs[0].p.config.to_str().unwrap()),
        "{reason}"
    );
    for (i, h) in hs.iter().enumerate().skip(1) {
        eventually(&format!("host {i} runs it"), || runs(h, "detect", rev));
    }
    std::fs::write(&hs[0].p.config, &conf0).unwrap();
    hs[0].d().ok("POST", "/api/v1/reload", "");
    eventually("host 0 runs it after the reload", || {
        runs(&hs[0], "detect", rev) && hs[0].d().get("/api/v1/detect")["mode"] == "monitor"
    });
    // A bad section: the CLI refuses it, naming the key...
    let bad = knock.replace("7100,8100,9100", "7100,81000,9100");
    let file = hs[0].p.scratch.join("bad.toml");
    std::fs::write(&file, &bad).unwrap();
    let (code, _, err) = cluster_cli(&hs[0], &["push", "knock", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("81000"), "{err}");
    let (code, _, err) = cluster_cli(&hs[0], &["push", "spa", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("a push of [spa] holds that section only, not `knock`"),
        "{err}"
    );
    // ...and written behind its back, every host refuses it and keeps the doors it had.
    let out = etcd.ctl(&["put", "/statewall/groups/test/policy/knock", &bad]);
    assert!(out.status.success(), "{out:?}");
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} refused the bad [[knock]]"), || {
            h.cluster()["refused"]["knock"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("81000"))
        });
        eventually(&format!("host {i} closed the door at its expiry"), || {
            !h.opens(23)
        });
    }
    let (_, out, _) = common::cli(&hs[0].p, &["status"]);
    assert!(out.contains("cluster policy in force: detect@"), "{out}");
    assert!(out.contains("cluster policy REFUSED: knock@"), "{out}");
    new_knock(&hs[0]);
    eventually("the pushed doors stay in force", || hs[0].opens(23));
    // All of etcd away, host 2 restarts: it runs the sections it ran, not its file's.
    for m in 0..3 {
        etcd.kill(m);
    }
    hs[2].restart();
    assert_eq!(hs[2].cluster()["up"], false);
    assert!(
        hs[2].cluster()["policy"]["knock"].is_i64(),
        "{}",
        hs[2].cluster()
    );
    eventually("host 2 closed the door", || !hs[2].opens(23));
    new_knock(&hs[2]);
    eventually(
        "host 2 opens for the pushed sequence with etcd away",
        || hs[2].opens(23),
    );
    for m in 0..3 {
        etcd.restart(m);
    }
    etcd.wait_healthy();
    // Withdrawn: every host is back to its file's doors.
    let (code, out, err) = cluster_cli(&hs[1], &["withdraw", "knock"]);
    assert_eq!(code, 0, "{out}{err}");
    for (i, h) in hs.iter().enumerate() {
        eventually(&format!("host {i} runs its own doors again"), || {
            h.cluster()["policy"].get("knock").is_none()
                && h.d().get("/api/v1/doors").to_string().contains("7000")
        });
    }
    knock_from(
        &hs[0].pair,
        hs[0].pair.server_v4.into(),
        &steps("7000,8000,9000"),
    );
    eventually("the file's sequence opens again", || hs[0].opens(23));
    let (code, out, err) = cluster_cli(&hs[1], &["withdraw", "xfsm"]);
    assert_eq!(code, 0, "{out}{err}");
    eventually("host 1 runs no machine of its own again", || {
        hs[1].cluster()["policy"].get("xfsm").is_none()
    });
    assert!(hs[1].opens(25), "tcp/25 answers again");
    let (code, _, err) = cluster_cli(&hs[1], &["withdraw", "knock"]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing pushed there"), "{err}");
}
