//! The fleet files (`deploy/`) checked by the real tools: `promtool check config`,
//! `promtool check rules` and `promtool test rules` (each alert fires on its series),
//! `kubernetes-validate` against Kubernetes' schemas (installed by scripts/setup.sh); the
//! ConfigMap's policy parses as a statewall config; and every metric the alerts use is
//! served by a real daemon.

mod common;

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use common::{free_port, Daemon, Paths};
use statewall_harness::netns::Pair;

fn deploy(p: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/")).join(p)
}

fn run(cmd: &str, args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/setup.sh installs it)"));
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}: {msg}");
    msg
}

#[test]
fn prometheus_files_pass_promtool() {
    let dir = deploy("prometheus");
    let msg = run("promtool", &["check", "config", "prometheus.yml"], &dir);
    assert!(msg.contains("SUCCESS: 8 rules found"), "{msg}");
    run("promtool", &["check", "rules", "statewall-rules.yml"], &dir);
    let msg = run(
        "promtool",
        &["test", "rules", "statewall-rules.test.yml"],
        &dir,
    );
    assert!(msg.contains("SUCCESS"), "{msg}");
}

#[test]
fn kubernetes_manifest_passes_the_schemas() {
    let msg = run(
        "/opt/statewall-tools/bin/kubernetes-validate",
        &["--strict", "statewall.yaml"],
        &deploy("kubernetes"),
    );
    for r in [
        "namespace/statewall",
        "configmap/statewall-config",
        "daemonset/statewall",
        "service/statewall-metrics",
    ] {
        assert!(msg.contains(&format!("passed for resource {r}")), "{msg}");
    }
}

/// The `statewall.toml` embedded in the ConfigMap.
fn configmap_policy() -> String {
    let m = std::fs::read_to_string(deploy("kubernetes/statewall.yaml")).unwrap();
    let start = m.find("  statewall.toml: |\n").unwrap() + "  statewall.toml: |\n".len();
    m[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn configmap_policy_is_a_valid_config() {
    let text = configmap_policy();
    assert!(text.contains("[[knock]]"), "{text}");
    let cfg = statewall::config::Config::parse(&text, "statewall.yaml:statewall.toml").unwrap();
    // The etcd client's files are where the DaemonSet mounts the Secret.
    let c = cfg.cluster.expect("the ConfigMap has a [cluster] section");
    let manifest = std::fs::read_to_string(deploy("kubernetes/statewall.yaml")).unwrap();
    assert!(
        manifest.contains("mountPath: /etc/statewall/etcd\n"),
        "{manifest}"
    );
    assert!(manifest.contains("secretName: statewall-etcd-client"));
    for f in [&c.ca_file, &c.cert_file, &c.key_file] {
        let f = f.as_ref().expect("TLS files set").display().to_string();
        assert!(f.starts_with("/etc/statewall/etcd/"), "{f}");
        assert!(
            manifest.contains(&format!("--from-file={}", f.rsplit('/').next().unwrap())),
            "{f} is not among the Secret's files"
        );
    }
    assert!(c.endpoints.iter().all(|e| e.starts_with("https://")));
}

#[test]
fn alerts_use_metrics_the_daemon_serves() {
    let rules = std::fs::read_to_string(deploy("prometheus/statewall-rules.yml")).unwrap();
    let used: BTreeSet<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("statewall_"))
        .map(String::from)
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    let p = Paths::new("fleet");
    let pair = Pair::new("fleet");
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n\n[gate]\nprotected = [\"tcp/22\"]\n\n\
             [[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\n\n\
             [[monitor]]\nname = \"m\"\nkind = \"crypto\"\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\n",
            i = pair.server_if,
            n = pair.server.name
        ),
    )
    .unwrap();
    // With a [cluster] (a one-member etcd of its own), so that the cluster's gauge is served.
    let etcd = statewall_harness::etcd::Etcd::start(1);
    let mut conf = std::fs::read_to_string(&p.config).unwrap();
    conf.push_str(&format!(
        "\n[cluster]\nendpoints = [{:?}]\nnode = \"fleet\"\n",
        etcd.endpoint(0)
    ));
    std::fs::write(&p.config, conf).unwrap();
    let port = free_port();
    let _d = Daemon::start(&p, &["--metrics-listen", &format!("127.0.0.1:{port}")]);
    let text = common::scrape(port);
    let served: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for m in &used {
        assert!(served.contains(m.as_str()), "{m} is not served:\n{text}");
    }
    // And the label values the alerts match on.
    for (m, l) in [
        ("statewall_xfsm_total", "what=\"lockouts\""),
        ("statewall_xfsm_total", "what=\"lock_table_full\""),
        ("statewall_xfsm_total", "what=\"events_lost\""),
        ("statewall_gate_packets_total", "outcome=\"dropped\""),
        ("statewall_gate_packets_total", "outcome=\"flows_full\""),
        ("statewall_spa_candidates_total", "what=\"rate_limited\""),
        ("statewall_monitor_packets_total", "what=\"table_full\""),
    ] {
        assert!(
            text.lines().any(|x| x.starts_with(m) && x.contains(l)),
            "{m}{{{l}}} is not served:\n{text}"
        );
    }
}
