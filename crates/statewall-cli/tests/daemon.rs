//! The daemon end to end, with real traffic between two namespaces: start, status, the
//! socket's mode, grants through the CLI, SIGHUP with a bad config, SIGTERM leaving
//! enforcement in place, a restart that adopts the pins (same ids, counters carry on),
//! teardown leaving nothing, the TCP listener's token, and /metrics.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use statewall_harness::netns::Pair;

fn write_config(p: &Paths, pair: &Pair, extra: &str) {
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n{extra}\n[gate]\nprotected = [\"udp/9922\", \"udp/9926\", \"tcp/22\"]\n",
            pair.server_if, pair.server.name
        ),
    )
    .unwrap();
}

fn seen(d: &Daemon) -> u64 {
    d.get("/api/v1/gate")["counters"]["seen"].as_u64().unwrap()
}

#[test]
fn lifecycle_reload_restart_adopt_teardown() {
    let pair = Pair::new("life");
    let p = Paths::new("life");
    write_config(&p, &pair, "");
    let d = Daemon::start(&p, &[]);

    // The socket is 0600.
    let mode = std::fs::metadata(&p.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "API socket mode");

    // Status lists the interface with sw_gate on ingress.
    let st = d.get("/api/v1/status");
    let hook = st["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == "ingress")
        .unwrap()
        .clone();
    assert_eq!(hook["ifname"], pair.server_if.as_str());
    assert_eq!(hook["programs"][0][0], "sw_gate", "{st}");
    assert_eq!(st["adopted"], false);
    let (code, out, err) = cli(&p, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sw_gate#") && out.contains("SW_GATE_GRANTS"),
        "{out}"
    );

    // Real traffic: 9922 is protected, 9923 is not.
    let udp = Udp::new(&pair, &[9922, 9923, 9926]);
    assert!(udp.passes(9923, b"open"));
    assert!(
        !udp.passes(9922, b"shut"),
        "protected port let through without a grant"
    );

    // A grant through the CLI opens it for this source only.
    grant_udp_9922(&p, &pair);
    assert!(udp.passes(9922, b"granted"));
    let grants = d.get("/api/v1/gate/grants");
    assert_eq!(grants.as_array().unwrap().len(), 1);

    // SIGHUP with a broken config: rejected, old config in force.
    std::fs::write(&p.config, "[[interface]]\nname = 42\n").unwrap();
    d.signal(libc::SIGHUP);
    let (code, _, err) = cli(&p, &["reload"]);
    assert_ne!(code, 0, "reload of a broken config succeeded");
    assert!(
        err.contains("statewall.toml") && err.contains("line"),
        "error names file and line: {err}"
    );
    assert!(d.get("/api/v1/gate")["protected"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "udp/9922"));
    assert!(udp.passes(9922, b"still-granted"));
    write_config(&p, &pair, "");

    // SIGTERM: the daemon exits 0, enforcement stays.
    let before = d.get("/api/v1/status");
    let (links0, progs0, maps0) = status_ids(&before);
    assert!(!links0.is_empty());
    let seen0 = seen(&d);
    assert_eq!(d.stop(), 0);
    assert!(p.root.join("links").exists(), "pins removed by SIGTERM");
    assert!(
        !udp.passes(9926, b"down"),
        "protected port opened while the daemon is down"
    );
    assert!(
        udp.passes(9922, b"granted-while-down"),
        "grant lost while the daemon is down"
    );
    std::fs::write(
        &p.config,
        std::fs::read_to_string(&p.config)
            .unwrap()
            .replace("\"tcp/22\"", "\"tcp/22\", \"udp/9925\""),
    )
    .unwrap();

    // Restart: adopts; same link, program and map ids; the counter carried on counting.
    let d = Daemon::start(&p, &[]);
    let after = d.get("/api/v1/status");
    assert_eq!(after["adopted"], true);
    let (links1, progs1, maps1) = status_ids(&after);
    assert_eq!(
        (links0, progs0, maps0),
        (links1, progs1, maps1),
        "ids changed across the restart"
    );
    let seen1 = seen(&d);
    assert!(
        seen1 > seen0,
        "counter did not keep counting across the restart ({seen0} -> {seen1})"
    );
    assert!(
        d.get("/api/v1/gate")["protected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "udp/9925"),
        "new config applied at start"
    );

    // Teardown leaves nothing behind.
    assert_eq!(d.stop(), 0);
    let (code, _, err) = cli(&p, &["teardown"]);
    assert_eq!(code, 0, "{err}");
    assert!(!p.root.exists(), "pins left behind");
    let progs = pair.server.run(|| {
        aya::programs::SchedClassifier::query_tcx(
            &pair.server_if,
            aya::programs::TcAttachType::Ingress,
        )
        .unwrap()
        .1
    });
    assert!(
        progs.iter().all(|i| i.name_as_str() != Some("sw_gate")),
        "sw_gate still attached"
    );
    assert!(
        udp.passes(9922, b"after-teardown"),
        "traffic still filtered after teardown"
    );
}

#[test]
fn tcp_listener_token_and_metrics() {
    let pair = Pair::new("tok");
    let p = Paths::new("tok");
    write_config(&p, &pair, "");
    let free = |()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (api, metrics) = (free(()), free(()));
    let token = p.scratch.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let d = Daemon::start(
        &p,
        &[
            "--listen",
            &api.to_string(),
            "--token-file",
            token.to_str().unwrap(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
    );
    let curl = |args: &[&str]| {
        let o = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let url = format!("http://{api}/api/v1/status");
    assert_eq!(curl(&[&url]), "401", "no token");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer wrong", &url]),
        "401",
        "wrong token"
    );
    assert_eq!(
        curl(&["-H", "Authorization: Bearer s3cret-token", &url]),
        "200"
    );

    // Bad bodies: 400 naming the field, nothing changed.
    let post = |body: &str| {
        let o = std::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                "Authorization: Bearer s3cret-token",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("http://{api}/api/v1/gate/grants"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let r = post(r#"{"addr": "10.0.0.300", "proto": "udp", "port": 9922, "seconds": 5}"#);
    assert!(r.contains("addr"), "{r}");
    let r = post(r#"{"addr": "10.0.0.3", "proto": "udp", "port": 9922, "seconds": 5, "extra": 1}"#);
    assert!(r.contains("extra"), "{r}");
    let r = post(r#"{"addr": "10.0.0.3", "proto": "sctp", "port": 9922, "seconds": 5}"#);
    assert!(r.contains("proto"), "{r}");
    assert_eq!(d.get("/api/v1/gate/grants").as_array().unwrap().len(), 0);

    // Metrics: Prometheus text by default, OpenMetrics on request.
    let o = std::process::Command::new("curl")
        .args(["-s", &format!("http://{metrics}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("# TYPE statewall_gate_packets_total counter"),
        "{text}"
    );
    assert!(
        text.contains("statewall_map_capacity{map=\"SW_GATE_GRANTS\"} 4096"),
        "{text}"
    );
    let o = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
            &format!("http://{metrics}/metrics"),
        ])
        .output()
        .unwrap();
    let om = String::from_utf8_lossy(&o.stdout);
    assert!(
        om.contains("# TYPE statewall_gate_packets counter") && om.ends_with("# EOF\n"),
        "{om}"
    );
    drop(d);
}

#[test]
fn listen_without_token_is_refused_unless_no_auth() {
    let p = Paths::new("noauth");
    std::fs::write(&p.config, "").unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "daemon",
            "--config",
            p.config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
        ])
        .args(p.args())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token_file"), "{err}");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    // A hang guard, not a performance limit.
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn ingress_programs(d: &Daemon) -> Vec<String> {
    d.programs(None, "ingress")
}

#[test]
fn recreated_interface_second_daemon_browsers_and_teardown_guard() {
    let pair = Pair::new("hard");
    let p = Paths::new("hard");
    write_config(&p, &pair, "");
    let d = Daemon::start(&p, &[]);
    assert_eq!(ingress_programs(&d), ["sw_gate"]);

    // The interface goes away and comes back: the daemon attaches again by itself.
    pair.server.exec_ok(&["ip", "link", "del", &pair.server_if]);
    let out = std::process::Command::new("ip")
        .args([
            "link",
            "add",
            &pair.client_if,
            "netns",
            &pair.client.name,
            "type",
            "veth",
            "peer",
            "name",
            &pair.server_if,
            "netns",
            &pair.server.name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (ns, ifn, a4, a6) in [
        (
            &pair.client,
            &pair.client_if,
            pair.client_v4,
            pair.client_v6,
        ),
        (
            &pair.server,
            &pair.server_if,
            pair.server_v4,
            pair.server_v6,
        ),
    ] {
        ns.exec_ok(&["ip", "addr", "add", &format!("{a4}/24"), "dev", ifn]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{a6}/64"),
            "dev",
            ifn,
            "nodad",
        ]);
        ns.exec_ok(&["ip", "link", "set", ifn, "up"]);
    }
    wait_until("sw_gate on the recreated interface", || {
        ingress_programs(&d) == ["sw_gate"]
    });
    let udp = Udp::new(&pair, &[9922]);
    assert!(!udp.passes(9922, b"x"), "recreated interface unprotected");

    // A second daemon on the same bpffs root is refused and changes nothing.
    let before = d.get("/api/v1/status")["links"].clone();
    let other_sock = p.scratch.join("other.sock");
    let out = std::process::Command::new(bin())
        .args([
            "daemon",
            "--config",
            p.config.to_str().unwrap(),
            "--bpffs-root",
            p.root.to_str().unwrap(),
            "--socket",
            other_sock.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.get("/api/v1/status")["links"], before);

    // Grants only for protected ports; browser-style requests are refused.
    let post = |ct: Option<&str>, origin: bool, body: &str| {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
            p.socket.to_str().unwrap(),
            "-X",
            "POST",
            "--data-binary",
            body,
        ]);
        if let Some(ct) = ct {
            c.args(["-H", &format!("Content-Type: {ct}")]);
        } else {
            c.args(["-H", "Content-Type:"]);
        }
        if origin {
            c.args(["-H", "Origin: http://evil.example"]);
        }
        c.arg("http://localhost/api/v1/gate/grants");
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let ok = format!(
        r#"{{"addr": "{}", "proto": "udp", "port": 9922, "seconds": 5}}"#,
        pair.client_v4
    );
    assert_eq!(post(Some("text/plain"), false, &ok), "415");
    assert_eq!(
        post(Some("application/x-www-form-urlencoded"), false, &ok),
        "415"
    );
    assert_eq!(post(Some("application/json"), true, &ok), "403");
    assert_eq!(post(None, false, &ok), "201", "no Content-Type is accepted");
    let unprot = r#"{"addr": "10.0.0.1", "proto": "udp", "port": 9999, "seconds": 5}"#;
    assert_eq!(post(Some("application/json"), false, unprot), "400");

    // Teardown refuses while the daemon answers.
    let (code, _, err) = cli(&p, &["teardown"]);
    assert_ne!(code, 0);
    assert!(err.contains("stop it first"), "{err}");
    assert!(p.root.join("links").exists());
    drop(d);
}

#[test]
fn upgrade_moves_links_to_new_programs_without_a_gap() {
    let pair = Pair::new("upg");
    let p = Paths::new("upg");
    write_config(&p, &pair, "");
    let d = Daemon::start(&p, &[]);
    let (links0, progs0, maps0) = status_ids(&d.get("/api/v1/status"));
    grant_udp_9922(&p, &pair);
    assert_eq!(d.stop(), 0);
    // Pretend the pinned programs came from another build.
    let progs_dir = p.root.join("progs");
    let cur = std::fs::read_dir(&progs_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::rename(&cur, progs_dir.join("0000000000000000")).unwrap();

    let d = Daemon::start(&p, &[]);
    let st = d.get("/api/v1/status");
    assert_eq!(st["adopted"], false);
    let (links1, progs1, maps1) = status_ids(&st);
    assert_eq!(links0, links1, "links were recreated instead of updated");
    assert_eq!(maps0, maps1, "maps were recreated: state lost");
    assert_ne!(progs0, progs1, "links still run the old programs");
    assert!(
        !progs_dir.join("0000000000000000").exists(),
        "old programs left pinned"
    );
    // The grant survived and the new program enforces.
    let udp = Udp::new(&pair, &[9922, 9926]);
    assert!(udp.passes(9922, b"granted"));
    assert!(!udp.passes(9926, b"shut"));
    drop(d);
}

/// `statewall teardown` after a daemon was killed: pins, links, firewall instances and
/// dynamic monitors go (a daemon started again with the same state directory has none of
/// them); the SPA replay cache and the one-time sequences issued stay (the old packet is
/// still a replay) until `--purge`. Its output lists what it removed and what it kept.
#[test]
fn teardown_removes_config_made_state_and_keeps_reuse_protection() {
    let p = Paths::new("tdown");
    let pair = Pair::new("tdown");
    let otp = p.scratch.join("ssh.otp");
    std::fs::write(&otp, "12001,12002,12003\n").unwrap();
    write_config(
        &p,
        &pair,
        &format!(
            "[[knock]]\nname = \"otp\"\none_time_sequences = \"{}\"\nprotected = [\"tcp/2022\"]\n\n\
             [[spa.pkd]]\nname = \"pkd\"\nport = 2200\ntag = \"SSHK\"\nkey = \"test\"\n\
             skew = 3600\n",
            otp.display()
        ),
    );
    let d = Daemon::start(&p, &[]);
    d.firewall_on(
        "fw1",
        &pair,
        r#"[{"l4proto": "TCP", "dport": 22, "action": "ACCEPT"}]"#,
    );
    let pass_all =
        "#include <linux/bpf.h>\n#include <linux/pkt_cls.h>\n#include <bpf/bpf_helpers.h>\n\
        SEC(\"tc\") int pass_all(struct __sk_buff *skb) { return TC_ACT_OK; }\n\
        char LICENSE[] SEC(\"license\") = \"GPL\";\n";
    let body = serde_json::json!({"interface": pair.server_if, "netns": pair.server.name,
        "paths": [{"source": pass_all, "metrics": []}]});
    d.ok("POST", "/api/v1/dynmon/passall", &body.to_string());
    // One pkd packet, kept to be sent again after the teardown and a restart (the wide skew
    // keeps it in time however long those take on a loaded machine: past the default 10 s
    // it would be refused as stale, not as a replay).
    let key = statewall::spa::pkd_bytes::<40>("test").unwrap();
    let ts = statewall::gate::unix_now() as u64;
    let pkt = statewall::spa::pkd_packet(2200, b"SSHK", &key, ts, &[9; 12]);
    let send = || {
        let to = std::net::SocketAddr::from((pair.server_v4, 2200));
        pair.client
            .run(move || statewall::spa::send_udp(to, &pkt))
            .unwrap();
    };
    send();
    common::eventually("accepted", || common::spa_verdict(&d, "accepted") == 1);
    for f in [
        "firewall.json",
        "firewall.journal",
        "dynmon.json",
        "spa-replay",
        "once-issued",
        "xfsm-doors.json",
    ] {
        assert!(p.state.join(f).exists(), "{f} before teardown");
    }
    d.signal(libc::SIGKILL);
    drop(d);

    let (code, out, err) = cli(&p, &["teardown"]);
    assert_eq!(code, 0, "{err}");
    for (f, what) in [
        ("firewall.json", "removed"),
        ("firewall.journal", "removed"),
        ("dynmon.json", "removed"),
        ("xfsm-doors.json", "removed"),
        ("spa-replay", "kept"),
        ("once-issued", "kept"),
    ] {
        let line = format!("{what} {}", p.state.join(f).display());
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
        assert_eq!(p.state.join(f).exists(), what == "kept", "{f}");
    }
    assert!(!p.root.exists(), "pins removed");

    let d = Daemon::start(&p, &[]);
    assert_eq!(d.get("/api/v1/firewall"), serde_json::json!([]));
    assert_eq!(d.get("/api/v1/dynmon"), serde_json::json!([]));
    let fw_links = ingress_programs(&d)
        .iter()
        .filter(|n| n.contains("sw_fw"))
        .count();
    assert_eq!(fw_links, 0, "no firewall attached again");
    send();
    common::eventually("still a replay", || common::spa_verdict(&d, "replay") == 1);
    assert_eq!(d.stop(), 0);

    let (code, out, err) = cli(&p, &["teardown", "--purge"]);
    assert_eq!(code, 0, "{err}");
    for f in ["spa-replay", "once-issued"] {
        let line = format!("removed {}", p.state.join(f).display());
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
        assert!(!p.state.join(f).exists());
    }
}

/// `statewall teardown --config FILE` tears down the pins and state directory that the
/// config's `[daemon]` section names, as the daemon started with that file used them.
#[test]
fn teardown_reads_the_daemons_paths_from_its_config() {
    let p = Paths::new("tdcfg");
    let cfg = p.scratch.join("paths.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nbpffs_root = \"{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\n",
            p.root.display(),
            p.state.display(),
            p.socket.display()
        ),
    )
    .unwrap();
    // A daemon started on the file alone (no path options).
    let child = std::process::Command::new(bin())
        .args(["daemon", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        socket: p.socket.clone(),
    };
    // A hang guard, as in Daemon::start.
    let t0 = std::time::Instant::now();
    while !statewall::client::request_blocking(&p.socket, "GET", "/api/v1/status", None)
        .is_ok_and(|r| r.status == 200)
    {
        assert!(t0.elapsed().as_secs() < 120, "the daemon never answered");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.ok("POST", "/api/v1/firewall/fwcfg", "{}");
    assert!(p.state.join("firewall.json").exists());
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .arg("teardown")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    // While it answers, the socket named in the file stops the teardown.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&p.socket.display().to_string()));
    d.signal(libc::SIGKILL);
    drop(d);
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = format!("removed {}", p.state.join("firewall.json").display());
    assert!(text.contains(&line), "{line:?} not in:\n{text}");
    assert!(!p.state.join("firewall.json").exists());
    assert!(!p.root.exists(), "pins removed");
    // A broken file stops it before anything is removed.
    std::fs::write(&cfg, "[daemon]\nstate_dir = 7\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("state_dir"));
}
