//! `statewall top` in a real terminal: tmux runs it against a daemon whose state the test
//! made (a knock in progress, a grant, a block of the detect stage and its classifier, a
//! firewall rule with known hits, gate drops, a monitor window, a link to a one-member
//! etcd), and the test
//! reads the screen as a person would (capture-pane).

mod common;

use std::{
    net::UdpSocket,
    process::Command,
    time::{Duration, Instant},
};

use common::{bin, grant_udp_9922, Daemon, Paths, Udp};
use statewall_harness::{etcd::Etcd, netns::Pair};

struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux (scripts/setup.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }
    /// Waits until the screen shows every one of `want` (a hang guard, not a time limit).
    fn wait_for(&self, want: &[&str]) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if want.iter().all(|w| s.contains(w)) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "screen never showed {want:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

#[test]
fn top_shows_doors_grants_rule_hits_monitors_and_drops() {
    let p = Paths::new("top");
    let pair = Pair::new("top");
    let etcd = Etcd::start(1);
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n\n[gate]\nprotected = [\"udp/9922\", \"udp/9924\"]\n\n\
             [[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/2222\"]\n\
             step_timeout = \"10m\"\nseq_timeout = \"10m\"\n\n\
             [[monitor]]\nname = \"flows\"\nkind = \"crypto\"\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\n\n\
             [detect]\nmode = \"enforce\"\n\n\
             [detect.classifier]\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\nmax_blocks = 77\n\n\
             [cluster]\nendpoints = [{e:?}]\nnode = \"top\"\ngroup = \"top\"\n",
            i = pair.server_if,
            n = pair.server.name,
            e = etcd.endpoints()[0]
        ),
    )
    .unwrap();
    let d = Daemon::start(&p, &[]);
    // A firewall whose first rule drops UDP to 9925: 7 packets hit it.
    d.firewall_on(
        "edge",
        &pair,
        r#"[{"l4proto": "UDP", "dport": 9925, "action": "drop", "description": "no-9925"}]"#,
    );
    let sink = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v4, 9925)))
        .unwrap();
    let _ = sink;
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, 0)).unwrap();
        for _ in 0..7 {
            u.send_to(b"x", (pair.server_v4, 9925)).unwrap();
        }
    });
    // A knock in progress: the first step, over IPv6.
    let out = pair
        .client
        .exec(&[bin(), "knock", &pair.server_v6.to_string(), "7000"]);
    assert!(out.status.success());
    // A grant, and 4 packets the gate drops (9924 is protected, no grant).
    grant_udp_9922(&p, &pair);
    let udp = Udp::new(&pair, &[9924]);
    for _ in 0..4 {
        assert!(!udp.passes(9924, b"x"));
    }
    // A monitor window with the UDP session in it.
    let w = d.ok("POST", "/api/v1/monitor/flows/read", "");
    assert!(
        w["sessions"].as_array().is_some_and(|a| !a.is_empty()),
        "{w}"
    );

    // A block of the detect stage, with its time left.
    d.ok(
        "POST",
        "/api/v1/detect/blocks",
        r#"{"prefix": "198.51.100.0/24", "seconds": 600}"#,
    );
    let gate = d.get("/api/v1/gate");
    let dropped = gate["counters"]["dropped"].as_u64().unwrap();
    // (Refused UDP is answered as from a closed port: counted as unreachable.)
    let unreachable = gate["counters"]["unreachable"].as_u64().unwrap();
    assert!(dropped + unreachable >= 4, "{gate}");

    // The grant and the block reach etcd (the link writes them within a second or so).
    common::eventually("the grant and the block are published", || {
        d.get("/api/v1/status")["cluster"]["counts"]["published"] == 2
    });
    let tmux = Tmux(format!("statewall-top-{}", std::process::id()));
    let cmd = format!(
        "{} top --socket {} --interval 0.5",
        bin(),
        p.socket.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "60",
        &cmd,
    ]);
    let screen = tmux.wait_for(&[
        "Doors",
        "Grants",
        "Mitigations",
        "Firewall rules",
        "Monitors",
        "Drops",
        "Cluster (etcd)",
        "etcd reachable",
    ]);
    let line = |needle: &str| -> String {
        screen
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{screen}"))
            .to_string()
    };
    // The door: the knocking source, part-way through.
    let door = line(&pair.client_v6.to_string());
    assert!(door.contains("ssh") && door.contains("1/3"), "{door}");
    // The grant, with time left (600 s granted).
    let grant = line(&format!("{}", pair.client_v4));
    assert!(
        grant.contains("udp/9922") && grant.contains("left"),
        "{grant}"
    );
    let left: f64 = grant
        .split_whitespace()
        .find(|w| w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok())
        .map(|w| w[..w.len() - 1].parse().unwrap())
        .unwrap();
    assert!((500.0..=600.0).contains(&left), "{grant}");
    // The block: its detector, target and time left.
    let block = line("198.51.100.0/24");
    assert!(
        block.contains("block") && block.contains("0 dropped") && block.contains("left"),
        "{block}"
    );
    // The learned classifier: its model, its windows, the blocks it may hold.
    let classifier = line("classifier (");
    assert!(
        classifier.contains("built-in model")
            && classifier.contains("windows")
            && classifier.contains("of 77 blocks held"),
        "{classifier}"
    );
    // The rule, with exactly its 7 hits.
    let rule = line("no-9925");
    assert!(
        rule.contains("edge") && rule.contains("INGRESS") && rule.contains("rule 0"),
        "{rule}"
    );
    assert!(rule.contains(" 7 pkts"), "{rule}");
    // The gate's drop counter as the API gives it, and the firewall's DROP hits.
    let gate_line = line("gate:");
    assert!(
        gate_line.contains(&format!("gate: {dropped} dropped")),
        "{gate_line}"
    );
    assert!(
        line("firewall:").contains("firewall: 7 dropped"),
        "{screen}"
    );
    // The monitor and its busiest session (the client's UDP to 9925).
    let mon = line("flows (crypto)");
    assert!(mon.contains("windows"), "{mon}");
    assert!(
        screen.contains(&format!("{}:", pair.client_v4)) && screen.contains(":9925"),
        "{screen}"
    );
    // The cluster link: this host, its group, what it published (the grant, the block).
    let link = line("node top of group top");
    assert!(link.contains("0 waiting to be written"), "{link}");
    let counts = line("claims ");
    assert!(counts.contains("published 2,"), "{counts}");
    assert!(
        line("pushed policy in force").contains("in force: -"),
        "{screen}"
    );
    // q quits, and the terminal is left to the shell.
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let t0 = Instant::now();
    while tmux.run(&["list-sessions"]).contains("top:") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "top did not quit on q"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
