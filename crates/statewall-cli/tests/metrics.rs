//! `/metrics` names every series once: for each example config, for Debian's knockd.conf
//! converted by `statewall import knockd`, and for a config with every stage (a protected
//! port, knock doors with TCP and UDP steps in strict mode, SPA in both formats, a raw
//! machine, both monitors, a firewall instance, a dynamic monitor), scraped in the Prometheus text format
//! and in OpenMetrics, no (name, labels) pair repeats.

mod common;

use std::{collections::BTreeMap, process::Command};

use common::{free_port, Daemon, Paths};
use statewall_harness::netns::Pair;

/// The (name, labels) of every sample line.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.rfind('}') {
            Some(i) => l[..=i].to_string(),
            None => l.split(' ').next().unwrap().to_string(),
        })
        .collect()
}

fn scrape(port: u16, openmetrics: bool) -> String {
    let mut args = vec!["-s".to_string()];
    if openmetrics {
        args.extend(["-H".into(), "Accept: application/openmetrics-text".into()]);
    }
    args.push(format!("http://127.0.0.1:{port}/metrics"));
    let out = Command::new("curl").args(&args).output().unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Starts a daemon on `config` (its interfaces and its monitors' replaced by the pair's
/// server side, its paths by the test's), lets `more` add what the API adds, and checks both formats.
fn check(what: &str, config: &str, more: impl FnOnce(&Daemon, &Pair, &Paths)) {
    let p = Paths::new("metrics");
    let pair = Pair::new("metrics");
    let mut v: toml::Table = toml::from_str(config).unwrap_or_else(|e| panic!("{what}: {e}"));
    v.remove("daemon");
    let port = free_port();
    let mut daemon = toml::Table::new();
    daemon.insert("metrics_listen".into(), format!("127.0.0.1:{port}").into());
    v.insert("daemon".into(), daemon.into());
    let mut iface = toml::Table::new();
    iface.insert("name".into(), pair.server_if.clone().into());
    iface.insert("netns".into(), pair.server.name.clone().into());
    v.insert("interface".into(), toml::Value::Array(vec![iface.into()]));
    // Monitors watch the same interface.
    if let Some(toml::Value::Array(ms)) = v.get_mut("monitor") {
        for m in ms.iter_mut().filter_map(|m| m.as_table_mut()) {
            m.insert(
                "interfaces".into(),
                toml::Value::Array(vec![pair.server_if.clone().into()]),
            );
            m.insert("netns".into(), pair.server.name.clone().into());
        }
    }
    std::fs::write(&p.config, toml::to_string(&v).unwrap()).unwrap();
    let d = Daemon::start(&p, &[]);
    more(&d, &pair, &p);
    for openmetrics in [false, true] {
        let text = scrape(port, openmetrics);
        let all = series(&text);
        assert!(all.len() > 20, "{what}: only {} series:\n{text}", all.len());
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &all {
            *seen.entry(s).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{what} ({}): series named more than once: {twice:?}",
            if openmetrics { "OpenMetrics" } else { "text" }
        );
        common::tally("metric series checked", all.len() as u64);
    }
    assert_eq!(d.stop(), 0);
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn every_example_config_names_each_series_once() {
    for name in [
        "statewall.toml",
        "xfsm-ssh-limit.toml",
        "xfsm-udp-return.toml",
    ] {
        check(name, &example(name), |_, _, _| {});
    }
}

#[test]
fn debian_knockd_conf_converted_names_each_series_once() {
    let text = "[options]\n\tUseSyslog\n\n[openSSH]\n\tsequence    = 7000,8000,9000\n\tseq_timeout = 5\n\tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\ttcpflags    = syn\n\n[closeSSH]\n\tsequence    = 9000,8000,7000\n\tseq_timeout = 5\n\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\ttcpflags    = syn\n\n[openHTTPS]\n\tsequence    = 12345,54321,24680,13579\n\tseq_timeout = 5\n\tcommand     = /usr/local/sbin/knock_add -i -c INPUT -p tcp -d 443 -f %IP%\n\ttcpflags    = syn\n";
    let imp = statewall::import::knockd::import(text, "knockd.conf", &[]).unwrap();
    assert!(imp.config.knocks.iter().all(|k| k.strict));
    check(
        "Debian's knockd.conf",
        &toml::to_string(&imp.config).unwrap(),
        |_, _, _| {},
    );
}

#[test]
fn a_config_with_every_stage_names_each_series_once() {
    let k = "Toe6r3nv+JnMD6CE9bdcXl9qrFuJ6PB8DXcY/fNm+Uw=";
    let config = format!(
        r#"[gate]
protected = ["udp/9922"]

[[knock]]
name = "ssh"
sequence = "7000,8000:udp,9000"
protected = ["tcp/22"]
close_sequence = "9000,8000:udp,7000"

[[knock]]
name = "web"
sequence = "7100:udp,7200:udp"
protected = ["tcp/443", "udp/443"]
toggle = true

[spa]
fwknop_port = 62201

[[spa.pkd]]
name = "pkd"
port = 2200
tag = "SSHK"
key = "test"

[[spa.fwknop]]
source = ["ANY"]
open_ports = ["tcp/2222"]
key_base64 = "{k}"
hmac_key_base64 = "{k}"

[[monitor]]
name = "d"
kind = "ddos"
interfaces = ["lo"]

[[monitor]]
name = "c"
kind = "crypto"
interfaces = ["lo"]

{raw}
"#,
        raw = example("xfsm-ssh-limit.toml")
            .lines()
            .skip_while(|l| !l.starts_with("[[xfsm]]"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    check("every stage", &config, |d, pair, p| {
        d.firewall_on(
            "fw1",
            pair,
            r#"[{"l4proto": "TCP", "dport": 22, "action": "ACCEPT"}, {"l4proto": "UDP", "action": "LOG"}]"#,
        );
        // A dynamic monitor with declared metrics: the C example, by the CLI.
        let ex = |f: &str| format!("{}/../../examples/dynmon/{f}", env!("CARGO_MANIFEST_DIR"));
        let (code, out, err) = common::cli(
            p,
            &[
                "dynmon",
                "load",
                "flows",
                &ex("c/flows.c"),
                "--interface",
                &pair.server_if,
                "--netns",
                &pair.server.name,
                "--metrics",
                &ex("c/flows.toml"),
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    });
}
