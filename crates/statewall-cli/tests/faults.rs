//! Daemon faults with traffic flowing (`make soak`: 20 times over): an iperf3 TCP stream
//! between the namespaces while
//! the daemon is stopped (SIGTERM) and, separately, killed (`kill -9`), then started
//! again. While it is down a protected port stays shut, a grant stays open and a firewall
//! rule keeps dropping; the iperf3 connection is never cut; afterwards the program, map
//! and link ids are the same, and knock states, grants, conntrack entries, firewall rules
//! and counters, and the SPA replay cache are what they were. Then a reload that removes
//! a stage detaches it cleanly.

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::Stdio,
    time::Duration,
};

use common::*;
use serde_json::Value;
use statewall_harness::netns::Pair;

fn config(pair: &Pair, with_knock: bool) -> String {
    let knock = if with_knock {
        "[[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/2222\"]\nstep_timeout = \"10m\"\nseq_timeout = \"10m\"\n"
    } else {
        ""
    };
    format!(
        "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[gate]\nprotected = [\"udp/9922\", \"udp/9926\"]\n\n{knock}\n[[spa.pkd]]\nname = \"pkd\"\nport = 2200\ntag = \"SSHK\"\nkey = \"test\"\nwindow = 3600\nskew = 3600\n",
        pair.server_if, pair.server.name
    )
}

fn ids(st: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    for l in st["links"].as_array().unwrap() {
        v.push(("link".into(), l["link_id"].as_u64().unwrap()));
        v.push(("prog".into(), l["program_id"].as_u64().unwrap()));
    }
    for m in st["maps"].as_array().unwrap() {
        v.push((
            m["name"].as_str().unwrap().into(),
            m["id"].as_u64().unwrap(),
        ));
    }
    v.sort();
    v
}

fn api(d: &Daemon, method: &str, path: &str, body: &str) -> Value {
    let r =
        statewall::client::request_blocking(&d.socket, method, path, Some(body.into())).unwrap();
    assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// What must survive: knock states in progress, grants, conntrack sessions, the rules with
/// their counters, and the replay cache's size.
#[derive(Debug, PartialEq)]
struct State {
    in_progress: Vec<(String, String)>,
    grants: Vec<String>,
    sessions: Vec<String>,
    rules: Value,
    replay: u64,
}

fn state(d: &Daemon) -> (State, Vec<u64>) {
    let doors = d.get("/api/v1/doors");
    let in_progress = doors
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x["in_progress"].as_array().cloned().unwrap_or_default())
        .map(|x| (x["source"].to_string(), x["state"].to_string()))
        .collect();
    let mut grants: Vec<String> = d
        .get("/api/v1/gate/grants")
        .as_array()
        .unwrap()
        .iter()
        .map(|g| format!("{}:{}:{}", g["addr"], g["proto"], g["port"]))
        .collect();
    grants.sort();
    let mut sessions: Vec<String> = d
        .get("/api/v1/firewall/fw/sessions")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}:{} {}:{}",
                s["l4proto"], s["src"], s["sport"], s["dst"], s["dport"]
            )
        })
        .collect();
    sessions.sort();
    let rules = d.get("/api/v1/firewall/fw/chain/INGRESS/rule");
    let counts: Vec<u64> = d
        .get("/api/v1/firewall/fw/chain/INGRESS/stats")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pkts"].as_u64().unwrap())
        .collect();
    let replay = d.get("/api/v1/spa")["replay_entries"].as_u64().unwrap();
    (
        State {
            in_progress,
            grants,
            sessions,
            rules,
            replay,
        },
        counts,
    )
}

fn connects(pair: &Pair, port: u16) -> bool {
    let to = SocketAddr::from((pair.server_v4, port));
    pair.client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(300)))
        .is_ok()
}

#[test]
fn restart_and_kill_under_traffic_lose_nothing() {
    let p = Paths::new("fault");
    let pair = Pair::new("fault");
    std::fs::write(&p.config, config(&pair, true)).unwrap();
    let mut d = Daemon::start(&p, &[]);
    // Firewall: conntrack on (accept-established), tcp/23 dropped, everything else accepted.
    d.firewall_on(
        "fw",
        &pair,
        r#"[{"l4proto": "TCP", "dport": 23, "action": "drop"}, {"l4proto": "TCP", "dport": 5201, "action": "accept"}]"#,
    );
    api(
        &d,
        "PATCH",
        "/api/v1/firewall/fw/chain/INGRESS",
        r#"{"default": "ACCEPT", "accept-established": true}"#,
    );
    let sv = pair.server_v4;
    let _l23 = pair.server.run(|| TcpListener::bind((sv, 23))).unwrap();
    assert!(!connects(&pair, 23), "rule drops tcp/23");
    // A knock in progress (first step only, over IPv6: strict mode counts the client's
    // IPv4 traffic below as wrong knocks), a grant, an SPA packet in the replay cache.
    let out = pair
        .client
        .exec(&[bin(), "knock", &pair.server_v6.to_string(), "7000"]);
    assert!(out.status.success(), "{out:?}");
    grant_udp_9922(&p, &pair);
    pkd_knock(&pair, &sv.to_string());
    let udp = Udp::new(&pair, &[9922, 9926]);
    // Traffic that flows through every fault: one iperf3 TCP stream.
    let mut srv = pair
        .server
        .command(&["iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // `make soak` repeats the pair of faults 20 times over a longer stream.
    let rounds = soak_cases(1);
    let secs = (6 + 8 * rounds).to_string();
    let cli_iperf = pair
        .client
        .command(&[
            "iperf3",
            "-c",
            &sv.to_string(),
            "-p",
            "5201",
            "-t",
            &secs,
            "-J",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    let mut restarts = 0;
    for sig in (0..rounds).flat_map(|_| [libc::SIGTERM, libc::SIGKILL]) {
        let (before, counts0) = state(&d);
        assert_eq!(before.in_progress.len(), 1, "{before:?}");
        assert_eq!(
            before.grants.len(),
            2,
            "udp/9922 by hand, tcp/2200 by SPA: {before:?}"
        );
        assert!(
            before.sessions.iter().any(|s| s.contains(":5201")),
            "the iperf3 connection is tracked: {before:?}"
        );
        assert!(before.replay >= 1, "{before:?}");
        let ids0 = ids(&d.get("/api/v1/status"));
        d.signal(sig);
        let _ = d.child.wait();
        // Down: enforcement goes on.
        assert!(
            !udp.passes(9926, b"down"),
            "protected port opened while down"
        );
        assert!(udp.passes(9922, b"down"), "grant lost while down");
        assert!(
            !connects(&pair, 23),
            "firewall rule stopped matching while down"
        );
        std::thread::sleep(Duration::from_millis(500));
        d = Daemon::start(&p, &[]);
        let st = d.get("/api/v1/status");
        assert_eq!(st["adopted"], true, "signal {sig}");
        assert_eq!(ids(&st), ids0, "signal {sig}: ids changed");
        let (mut after, counts1) = state(&d);
        // Connections made by the probes while it was down are new; every one from
        // before is still there.
        let before_sessions = before.sessions.clone();
        after.sessions.retain(|s| before_sessions.contains(s));
        assert_eq!(after, before, "signal {sig}: state changed");
        // Counters carried on: the DROP rule counted the probe to tcp/23 made while the
        // daemon was down, on top of what it had (the iperf3 stream is accepted as
        // established, before the rules).
        assert!(
            counts1[0] > counts0[0] && counts1[1] >= counts0[1],
            "signal {sig}: counters {counts0:?} -> {counts1:?}"
        );
        restarts += 1;
    }
    eprintln!("{restarts} restarts (SIGTERM and kill -9) under an iperf3 stream of {secs} s");
    tally("faults: daemon restarts under traffic", restarts as u64);
    // The saved SPA packet is still a replay, and the stream was never cut.
    let out = cli_iperf.wait_with_output().unwrap();
    let _ = srv.wait();
    assert!(
        out.status.success(),
        "iperf3 failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].is_null(), "{}", v["error"]);
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    assert!(bps > 0.0);
    // Every one-second interval moved data: the stream never stalled for a whole second.
    let stalls = v["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["sum"]["bytes"].as_u64() == Some(0))
        .count();
    assert_eq!(stalls, 0, "intervals without data: {stalls}");

    // A reload that removes the knock door: sw_xfsm leaves the hook, the rest stays.
    let has_xfsm = |d: &Daemon| {
        d.get("/api/v1/status")["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| h["programs"].as_array().cloned().unwrap_or_default())
            .any(|p| p[0] == "sw_xfsm")
    };
    assert!(has_xfsm(&d));
    std::fs::write(&p.config, config(&pair, false)).unwrap();
    let (code, _, err) = cli(&p, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !has_xfsm(&d),
        "sw_xfsm still attached after the reload removed the door"
    );
    let q = pair.server.run(|| {
        aya::programs::SchedClassifier::query_tcx(
            &pair.server_if,
            aya::programs::TcAttachType::Ingress,
        )
        .unwrap()
        .1
    });
    assert!(q.iter().all(|i| i.name_as_str() != Some("sw_xfsm")));
    assert!(!udp.passes(9926, b"after"), "gate still enforcing");
    assert!(!connects(&pair, 23), "firewall still enforcing");
    d.stop();
}

/// A ring-buffer follower that dies is started again and counted, and what it serves keeps
/// working: `STATEWALL_FAULTS` (inert unless set) makes the door-event follower and the SPA
/// follower each panic once, right after handling their first record, and the SPA verifier
/// thread once after its first candidate. Afterwards a second knock still opens the door
/// for its source (events read), a second SPA packet is still verified and grants, and
/// `/metrics` counts one restart of each (none of the sweeper or the LOG follower).
#[test]
fn killed_followers_are_restarted_counted_and_keep_working() {
    let p = Paths::new("fault-follow");
    let pair = Pair::new("fault-follow");
    std::fs::write(&p.config, config(&pair, true)).unwrap();
    let mport = free_port();
    let d = Daemon::start_env(
        &p,
        &["--metrics-listen", &format!("127.0.0.1:{mport}")],
        &[(
            "STATEWALL_FAULTS",
            "follower:SW_XFSM_EVENTS,follower:SW_SPA_EVENTS,spa_verifier",
        )],
    );
    let restarts = |task: &str| {
        sample(
            &scrape(mport),
            &format!("statewall_task_restarts_total{{task=\"{task}\"}}"),
        )
    };
    for task in [
        "xfsm_events",
        "spa_events",
        "fw_log",
        "sweeper",
        "spa_verifier",
    ] {
        assert_eq!(restarts(task), Some(0.0), "{task} before any fault");
    }
    let open_sources = |d: &Daemon| -> usize {
        d.get("/api/v1/doors")[0]["open"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    // First knock: the follower handles the first event, then dies; the restarted one
    // reads the rest of the ring, so the door still opens.
    knock_from(&pair, pair.server_v4.into(), &steps("7000,8000,9000"));
    eventually("door-event follower restarted", || {
        restarts("xfsm_events") == Some(1.0)
    });
    eventually("door open after the restart", || open_sources(&d) == 1);
    let (code, _, err) = cli(&p, &["door", "close", "ssh", &pair.client_v4.to_string()]);
    assert_eq!(code, 0, "{err}");
    eventually("door closed", || open_sources(&d) == 0);
    // Second knock, after the restart: events still flow.
    knock_from(&pair, pair.server_v4.into(), &steps("7000,8000,9000"));
    eventually("door opened again by the restarted follower", || {
        open_sources(&d) == 1
    });
    // SPA: the first packet is verified (then the follower dies), the second is verified
    // by the restarted follower.
    for n in 1..=2 {
        pkd_knock(&pair, &pair.server_v4.to_string());
        eventually("pkd accepted", || spa_verdict(&d, "accepted") == n);
    }
    assert_eq!(restarts("spa_events"), Some(1.0));
    assert_eq!(
        restarts("spa_verifier"),
        Some(1.0),
        "the verifier thread too"
    );
    assert_eq!(restarts("xfsm_events"), Some(1.0), "each fault fires once");
    assert_eq!(restarts("sweeper"), Some(0.0));
    assert_eq!(restarts("fw_log"), Some(0.0));
    let log = logs(&p);
    assert!(
        log.contains("fault injected into the follower of SW_XFSM_EVENTS")
            && log.contains("starting it again"),
        "the restart is logged: {log}"
    );
    assert_eq!(d.stop(), 0);
}
