//! The daemon's resident memory under a steady mixed load (issue 8): knock sequences that
//! open a door, API grants and revokes, forged SPA packets, firewall batches and LOG rule
//! hits, monitor windows and /metrics scrapes. After a warm-up that fills the bounded
//! buffers (the LOG ring keeps 4096 events), the resident set may grow by less than 10%
//! over the rest of the run. `make test` runs 15 rounds; `make soak` (STATEWALL_SOAK=20)
//! runs 300.

mod common;

use std::{net::UdpSocket, time::Duration};

use common::*;
use statewall::xfsm::knockclient;
use statewall_harness::netns::Pair;

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn api(d: &Daemon, method: &str, path: &str, body: &str) {
    let r =
        statewall::client::request_blocking(&d.socket, method, path, Some(body.into())).unwrap();
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {}",
        r.body
    );
}

#[test]
fn resident_memory_stays_flat_under_load() {
    let p = Paths::new("mem");
    let pair = Pair::new("mem");
    let metrics = free_port();
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n\n[gate]\nprotected = [\"udp/9922\"]\n\n\
             [[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\nopen_for = \"1s\"\n\n\
             [[spa.pkd]]\nname = \"pkd\"\nport = 2200\ntag = \"SSHK\"\nkey = \"test\"\n\n\
             [[monitor]]\nname = \"m\"\nkind = \"crypto\"\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\n",
            i = pair.server_if,
            n = pair.server.name
        ),
    )
    .unwrap();
    let d = Daemon::start(&p, &["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
    let pid = d.child.id();
    d.firewall_on(
        "fwm",
        &pair,
        r#"[{"l4proto": "UDP", "dport": 5353, "action": "log"}]"#,
    );
    let sv = pair.server_v4;
    let client = pair.client_v4;
    let _sink = pair.server.run(|| UdpSocket::bind((sv, 5353))).unwrap();
    let steps = statewall::config::Sequence::parse("7000,8000,9000")
        .unwrap()
        .0;
    let round = |i: u32| {
        // A door opened by knocking (and closed again by its 1 s window).
        pair.client
            .run(|| knockclient::knock(sv.into(), &steps, Duration::ZERO, None))
            .unwrap();
        // Grants by hand.
        api(
            &d,
            "POST",
            "/api/v1/gate/grants",
            &format!(r#"{{"addr": "{client}", "proto": "udp", "port": 9922, "seconds": 5}}"#),
        );
        let r = statewall::client::request_blocking(
            &d.socket,
            "DELETE",
            &format!("/api/v1/gate/grants?addr={client}&proto=udp&port=9922"),
            None,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        pair.client.run(|| {
            let u = UdpSocket::bind((client, 0)).unwrap();
            // Forged pkd knocks (bad digests: nothing enters the replay cache) ...
            let key = statewall::spa::pkd_bytes::<40>("wrong").unwrap();
            for j in 0..20u64 {
                let pkt = statewall::spa::pkd_packet(
                    2200,
                    b"SSHK",
                    &key,
                    1_700_000_000 + j,
                    &[i as u8; 12],
                );
                u.send_to(&pkt, (sv, 2200)).unwrap();
            }
            // ... and LOG rule hits (more than the ring keeps, in the warm-up).
            for _ in 0..2000 {
                u.send_to(b"log me", (sv, 5353)).unwrap();
            }
        });
        // A firewall batch and its undo.
        api(
            &d,
            "POST",
            "/api/v1/firewall/fwm/chain/INGRESS/batch",
            r#"{"rules": [{"operation": "append", "l4proto": "TCP", "dport": 23, "action": "drop"}]}"#,
        );
        api(
            &d,
            "POST",
            "/api/v1/firewall/fwm/chain/INGRESS/batch",
            r#"{"rules": [{"operation": "delete", "id": 1}]}"#,
        );
        api(&d, "POST", "/api/v1/monitor/m/read", "");
        assert!(scrape(metrics).contains("statewall_up"));
        let _ = d.get("/api/v1/firewall/fwm/log");
    };
    for i in 0..5 {
        round(i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let base = rss_kb(pid);
    let rounds = soak_cases(15);
    for i in 0..rounds {
        round(5 + i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kb(pid);
    let growth = after as f64 / base as f64 - 1.0;
    eprintln!(
        "resident memory: {base} kB after warm-up, {after} kB after {rounds} more rounds ({:+.1}%)",
        growth * 100.0
    );
    tally("memory: rounds of mixed load after warm-up", rounds as u64);
    assert!(
        growth < 0.10,
        "resident memory grew {:.1}% ({base} -> {after} kB) over {rounds} rounds",
        growth * 100.0
    );
    // The load did what it says.
    let spa = d.get("/api/v1/spa");
    assert!(
        spa["verdicts"]["bad_digest"].as_u64().unwrap_or(0) > 0,
        "{spa}"
    );
    assert_eq!(
        d.get("/api/v1/firewall/fwm/log").as_array().unwrap().len(),
        4096
    );
    d.stop();
}
