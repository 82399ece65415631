//! Monitors through the daemon, with real traffic between namespaces the test creates:
//! the Polycube Dynmon path with curl (exact field sets, integer encodings, IPv4 only),
//! the native read (IPv6 too), windows that do not overlap, `statewall monitor extract`,
//! `/metrics` checked by promtool and scraped by a real Prometheus server.

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{cli, curl, free_port, Daemon, Paths};
use serde_json::Value;
use statewall_harness::netns::{Pair, Reaped};

fn le(a: std::net::Ipv4Addr) -> u64 {
    u32::from_le_bytes(a.octets()) as u64
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(k: &[&str]) -> BTreeSet<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[test]
fn monitors_through_the_daemon() {
    let p = Paths::new("monapi");
    let pair = Pair::new("monapi");
    std::fs::write(
        &p.config,
        format!(
            "[[monitor]]\nname = \"ddos1\"\nkind = \"ddos\"\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\n\n\
             [[monitor]]\nname = \"crypto1\"\nkind = \"crypto\"\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\ndirection = \"both\"\n",
            i = pair.server_if,
            n = pair.server.name
        ),
    )
    .unwrap();
    let (api, metrics) = (free_port(), free_port());
    let d = Daemon::start(
        &p,
        &[
            "--listen",
            &format!("127.0.0.1:{api}"),
            "--no-auth",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ],
    );
    let (cv, sv) = (pair.client_v4, pair.server_v4);
    // Known traffic: 7 UDP packets 40000 -> 5000 (3 bytes each), 2 over IPv6, one TCP
    // connection to 5001 with data both ways.
    let _sink = pair.server.run(|| UdpSocket::bind((sv, 5000))).unwrap();
    let _sink6 = pair
        .server
        .run(|| UdpSocket::bind((pair.server_v6, 5000)))
        .unwrap();
    let l = pair.server.run(|| TcpListener::bind((sv, 5001))).unwrap();
    let send_udp = |n: usize| {
        pair.client.run(|| {
            let u = UdpSocket::bind((cv, 40000)).unwrap();
            for _ in 0..n {
                u.send_to(b"abc", (sv, 5000)).unwrap();
            }
        })
    };
    send_udp(7);
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v6, 40000)).unwrap();
        for _ in 0..2 {
            u.send_to(b"v6", (pair.server_v6, 5000)).unwrap();
        }
    });
    let to = SocketAddr::from((sv, 5001));
    let mut c = pair
        .client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .unwrap();
    let (mut s, _) = l.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    s.write_all(b"pong").unwrap();
    c.read_exact(&mut b).unwrap();
    drop(c);
    drop(s);
    std::thread::sleep(Duration::from_millis(100));

    // Polycube Dynmon path, bodies and encodings as the original monitors' scripts read them.
    let base = format!("http://127.0.0.1:{api}/polycube/v1/dynmon");
    let (code, v) = curl("GET", &format!("{base}/ddos1"), None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["name"], "ddos1");
    let (code, _) = curl("GET", &format!("{base}/nothing"), None);
    assert_eq!(code, 404);
    let (code, v) = curl("GET", &format!("{base}/ddos1/metrics/"), None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(keys(&v), set(&["ingress-metrics", "egress-metrics"]));
    let m = v["ingress-metrics"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(keys(&m[0]), set(&["name", "value", "timestamp"]));
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let ts = m[0]["timestamp"].as_u64().unwrap();
    assert!(
        ts <= now_us && ts + 60_000_000 > now_us,
        "timestamp in us: {ts}"
    );
    let udp_id = serde_json::json!({
        "saddr": le(cv), "daddr": le(sv),
        "sport": 40000u16.swap_bytes(), "dport": 5000u16.swap_bytes(), "proto": 17,
    });
    let pkts = m[0]["value"].as_array().unwrap();
    let udp: Vec<&Value> = pkts.iter().filter(|p| p["id"] == udp_id).collect();
    assert_eq!(udp.len(), 7, "{}", m[0]);
    for p in &udp {
        assert_eq!(
            keys(p),
            set(&[
                "id",
                "timestamp",
                "ipFlagsFrag",
                "tcpFlags",
                "tcpWin",
                "udpSize",
                "icmpType"
            ])
        );
        assert_eq!(p["udpSize"], 3);
        assert_eq!(p["tcpFlags"], 0);
        let t = p["timestamp"].as_u64().unwrap();
        assert!(
            t / 1000 <= now_us && t / 1000 + 60_000_000 > now_us,
            "ns: {t}"
        );
        assert!(matches!(p["ipFlagsFrag"].as_u64(), Some(0 | 0x4000)), "{p}");
    }
    // Only IPv4 in this shape: the IPv6 packets are not here.
    assert!(pkts.iter().all(|p| p["id"]["saddr"].as_u64().is_some()));
    assert!(pkts
        .iter()
        .any(|p| p["id"]["proto"] == 6 && p["tcpFlags"] == 2));
    let sessions = m[1]["value"].as_array().unwrap();
    let u = sessions
        .iter()
        .find(|s| s["key"] == udp_id)
        .expect("the UDP session");
    assert_eq!(keys(u), set(&["key", "value"]));
    assert_eq!(keys(&u["value"]), set(&["server_ip", "n_packets"]));
    // Both ports above 1023: the lower port's side (5000) is the server.
    assert_eq!(u["value"]["server_ip"], le(sv));
    assert_eq!(u["value"]["n_packets"], 7);
    let t = sessions
        .iter()
        .find(|s| s["key"]["proto"] == 6)
        .expect("the TCP session");
    assert_eq!(
        t["value"]["server_ip"],
        le(sv),
        "SYN: the destination serves"
    );
    // The window was taken: a second read has nothing from before.
    let (_, v) = curl("GET", &format!("{base}/ddos1/metrics"), None);
    assert!(
        v["ingress-metrics"][0]["value"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{v}"
    );

    // Native read: IPv6 too, both directions of the TCP connection (direction both).
    let w = d.get("/api/v1/monitor/crypto1");
    assert_eq!(w["kind"], "crypto");
    let r = statewall::client::request_blocking(
        &d.socket,
        "POST",
        "/api/v1/monitor/crypto1/read",
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let w: Value = r.json().unwrap();
    let ss = w["sessions"].as_array().unwrap();
    let u = ss
        .iter()
        .find(|s| s["proto"] == 17 && s["src"] == cv.to_string())
        .expect("UDP v4");
    assert_eq!(
        (u["n_packets"].as_u64(), u["n_packets_reverse"].as_u64()),
        (Some(7), Some(0))
    );
    assert_eq!(u["n_bytes"], 7 * (20 + 8 + 3));
    assert_eq!(u["method"], 3);
    let u6 = ss
        .iter()
        .find(|s| s["proto"] == 17 && s["src"] == pair.client_v6.to_string())
        .expect("UDP v6");
    assert_eq!(u6["n_packets"], 2);
    let t = ss.iter().find(|s| s["proto"] == 6).expect("TCP");
    assert_eq!(t["method"], 1);
    assert_eq!(t["server"], sv.to_string());
    assert!(
        t["n_packets"].as_u64().unwrap() >= 3 && t["n_packets_reverse"].as_u64().unwrap() >= 3,
        "{t}"
    );

    // extract: 4 more packets, one window into the compat CSV.
    send_udp(4);
    let out = p.scratch.join("extract");
    let (code, _, err) = cli(
        &p,
        &[
            "monitor",
            "extract",
            "ddos1",
            "--interval",
            "0.2",
            "--count",
            "1",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let f = out.join(format!("{cv}-40000___{sv}-5000___UDP-iter0.csv"));
    let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    let rows: Vec<&str> = text.split('\n').collect();
    assert_eq!(rows.len(), 7, "{text}");
    assert!(!text.ends_with('\n'));
    assert_eq!(rows[5], "UDP len     ,\t3,3,3,3");
    assert_eq!(rows[3], "TCP flags   ,\t0,0,0,0");

    // /metrics: promtool accepts the 0.0.4 text; OpenMetrics when asked for.
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    let text = Command::new("curl")
        .args(["-s", &url])
        .output()
        .unwrap()
        .stdout;
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("statewall_monitor_packets_total{monitor=\"ddos1\",what=\"captured\"}"),
        "{text}"
    );
    assert!(text.contains("statewall_monitor_grace_seconds{monitor=\"crypto1\"}"));
    let mut pt = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by scripts/setup.sh)");
    pt.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = pt.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let om = Command::new("curl")
        .args(["-s", "-H", "Accept: application/openmetrics-text", &url])
        .output()
        .unwrap()
        .stdout;
    assert!(String::from_utf8(om).unwrap().ends_with("# EOF\n"));

    // A real Prometheus server scrapes it and reports the target up.
    let dir = p.scratch.join("prom");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: statewall\n    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prom = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    let t0 = Instant::now();
    let mut last = Value::Null;
    let up = loop {
        let (_, v) = curl(
            "GET",
            &format!("http://127.0.0.1:{web}/api/v1/targets"),
            None,
        );
        if v["data"]["activeTargets"][0]["health"] == "up" {
            break true;
        }
        last = v;
        // A hang guard, not a performance limit.
        if t0.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(up, "Prometheus never reported the target up: {last}");
    d.stop();
}
