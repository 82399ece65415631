//! The daemon end to end, with real traffic between two namespaces: start, status, the
//! socket's mode, grants through the CLI, SIGHUP with a bad config, SIGTERM leaving
//! enforcement in place, a restart that adopts the pins (same ids, counters carry on),
//! teardown leaving nothing, the TCP listener's token, and /metrics.

mod common;

use std::{net::SocketAddr, os::unix::fs::PermissionsExt};

use common::*;
use statewall::netns::Pair;

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

fn ids(status: &serde_json::Value) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let links = status["links"].as_array().unwrap();
    let maps = status["maps"].as_array().unwrap();
    (
        links
            .iter()
            .map(|l| l["link_id"].as_u64().unwrap())
            .collect(),
        links
            .iter()
            .map(|l| l["program_id"].as_u64().unwrap())
            .collect(),
        maps.iter().map(|m| m["id"].as_u64().unwrap()).collect(),
    )
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
    let srv = udp_in(&pair.server, SocketAddr::from((pair.server_v4, 9922)));
    let srv_open = udp_in(&pair.server, SocketAddr::from((pair.server_v4, 9923)));
    let cli_sock = udp_in(&pair.client, "0.0.0.0:0".parse().unwrap());
    let to = SocketAddr::from((pair.server_v4, 9922));
    assert!(udp_passes(
        &cli_sock,
        &srv_open,
        SocketAddr::from((pair.server_v4, 9923)),
        b"open"
    ));
    assert!(
        !udp_passes(&cli_sock, &srv, to, b"shut"),
        "protected port let through without a grant"
    );

    // A grant through the CLI opens it for this source only.
    let (code, _, err) = cli(
        &p,
        &[
            "gate",
            "grant",
            &pair.client_v4.to_string(),
            "udp/9922",
            "--for",
            "600",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(udp_passes(&cli_sock, &srv, to, b"granted"));
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
    assert!(udp_passes(&cli_sock, &srv, to, b"still-granted"));
    write_config(&p, &pair, "");

    // SIGTERM: the daemon exits 0, enforcement stays.
    let before = d.get("/api/v1/status");
    let (links0, progs0, maps0) = ids(&before);
    assert!(!links0.is_empty());
    let seen0 = seen(&d);
    assert_eq!(d.stop(), 0);
    assert!(p.root.join("links").exists(), "pins removed by SIGTERM");
    let shut = udp_in(&pair.server, SocketAddr::from((pair.server_v4, 9926)));
    assert!(
        !udp_passes(
            &cli_sock,
            &shut,
            SocketAddr::from((pair.server_v4, 9926)),
            b"down"
        ),
        "protected port opened while the daemon is down"
    );
    assert!(
        udp_passes(&cli_sock, &srv, to, b"granted-while-down"),
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
    let (links1, progs1, maps1) = ids(&after);
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
        udp_passes(&cli_sock, &srv, to, b"after-teardown"),
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
