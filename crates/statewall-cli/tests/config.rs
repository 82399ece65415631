//! The example config loads and documents every key; bad configs give errors that say
//! what and where.

mod common;

use statewall::config::{Config, IngressHook};

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/statewall.toml"
    ))
    .unwrap()
}

#[test]
fn example_loads_and_documents_every_key() {
    let cfg = Config::parse(&example(), "examples/statewall.toml").unwrap();
    assert_eq!(cfg.interfaces.len(), 1);
    assert_eq!(cfg.interfaces[0].ingress, IngressHook::Tcx);
    assert_eq!(cfg.gate.grants_max, 4096);
    // Every key of the full config, serialised, appears in the example (set or commented).
    let mut full = Config::default();
    full.daemon.listen = Some("127.0.0.1:9000".parse().unwrap());
    full.daemon.token_file = Some("/t".into());
    full.daemon.metrics_listen = Some("127.0.0.1:9090".parse().unwrap());
    full.interfaces = cfg.interfaces.clone();
    full.interfaces[0].netns = Some("x".into());
    full.knocks = Config::parse(
        r#"[[knock]]
name = "d"
sequence = "7000,8000:udp"
protected = ["tcp/22"]
close_sequence = "9000"
lockout = { failures = 3, within = "60s", duration = "10m" }
start_command = ["/bin/true"]
stop_command = ["/bin/true"]
run_as = "nobody"
udp_payload = true
[knock.step_payload]
"8000" = "x"
"#,
        "t",
    )
    .unwrap()
    .knocks;
    // Every key of a machine: documented in the xfsm examples the main example points to.
    let machines = Config::parse(
        r#"[[xfsm]]
name = "m"
lookup = ["src_ip"]
update = ["src_ip"]
states = ["A"]
registers = ["r"]
globals = ["g"]
grant = ["tcp/22"]
open_for = "5s"
table = "fixed"
[[xfsm.condition]]
name = "c"
test = "r < g"
[[xfsm.transition]]
when = ["c"]
update = ["g += 1"]
state = "DEFAULT"
direction = "any"
proto = "udp"
port = 5
payload = "x"
action = "drop"
next = "A"
idle_timeout = "1s"
idle_rollback = "DEFAULT"
hard_timeout = "2s"
hard_rollback = "DEFAULT"
[[xfsm.transition]]
state = "A"
proto = "tcp"
tcpflags = "syn"
next = "A"
keep = "both"
mark = 1
dscp = 2
grant = "revoke"
[[xfsm]]
name = "s"
lookup = ["dst_mac"]
update = ["src_mac"]
registers = ["port"]
[[xfsm.transition]]
forward = "port"
update = ["port = in_port"]
[[switch]]
name = "sw"
netns = "n"
ports = ["a", "b"]
machines = ["s"]
"#,
        "t",
    )
    .unwrap();
    full.machines = machines.machines;
    full.switches = machines.switches;
    full.spa = Config::parse(
        r#"[[spa.pkd]]
name = "a"
port = 22
tag = "T"
key = "k"
[[spa.fwknop]]
name = "n"
source = ["ANY"]
open_ports = ["tcp/22"]
restrict_ports = ["tcp/23"]
key = "k"
hmac_key = "h"
hmac_digest_type = "sha256"
fw_access_timeout = 30
max_fw_timeout = 60
require_username = "u"
encryption_mode = "cbc"
"#,
        "t",
    )
    .unwrap()
    .spa;
    full.spa.actions_dir = Some("/etc/statewall/actions.d".into());
    full.detect = Some(Default::default());
    full.cluster = Some(statewall::cluster::ClusterConfig {
        ca_file: Some("/ca".into()),
        cert_file: Some("/c".into()),
        key_file: Some("/k".into()),
        server_name: Some("etcd".into()),
        ..Default::default()
    });
    let v: toml::Value = toml::Value::try_from(&full).unwrap();
    let text = example()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/xfsm-udp-return.toml"
        ))
        .unwrap()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/xfsm-ssh-limit.toml"
        ))
        .unwrap()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/efsm/policer.toml"
        ))
        .unwrap()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/efsm/udp-stateful.toml"
        ))
        .unwrap()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/efsm/learning-switch.toml"
        ))
        .unwrap()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/efsm/heavy-hitters.toml"
        ))
        .unwrap()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/efsm/knock-machine.toml"
        ))
        .unwrap()
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/efsm/syn-flood.toml"
        ))
        .unwrap();
    fn keys(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    out.push(k.clone());
                    // (A map whose keys are the user's: ports.)
                    if k != "step_payload" {
                        keys(v, out);
                    }
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    keys(&v, &mut all);
    for k in all {
        let k = if k == "interfaces" {
            "interface".to_string()
        } else {
            k
        };
        assert!(
            text.contains(&format!("{k} ="))
                || text.contains(&format!("[{k}]"))
                || text.contains(&format!("[[{k}]]"))
                || text.contains(&format!(".{k}]]")),
            "example config does not document `{k}`"
        );
    }
}

#[test]
fn errors_say_what_and_where() {
    // Bit-set ids are 16 bits and the top 10,240 name one-rule sets: 55,296 stored sets in
    // both generations, no more (they used to wrap).
    assert!(Config::parse("[firewall]\nbitsets_max = 55296\n", "a.toml").is_ok());
    let e = Config::parse("[firewall]\nbitsets_max = 55297\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[firewall] bitsets_max") && e.contains("256 to 55296"),
        "{e}"
    );
    let e = Config::parse("[daemon]\nbpffs_root = 3\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("a.toml:") && e.contains("line 2"), "{e}");
    let e = Config::parse("[gate]\nprotectd = []\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("protectd") && e.contains("line 2"), "{e}");
    let e = Config::parse("[gate]\nprotected = [\"sctp/5\"]\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sctp"), "{e}");
    let e = Config::parse("[gate]\nprotected = [\"tcp/0\"]\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tcp/0"), "{e}");
    let e = Config::parse(
        "[[interface]]\nname = \"averyveryverylongname\"\n",
        "a.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[[interface]] #1 name"), "{e}");
    let e = Config::parse(
        "[[interface]]\nname = \"eth0\"\n[[interface]]\nname = \"eth0\"\n",
        "a.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("#2") && e.contains("twice"), "{e}");
    let e = Config::parse(
        "[[interface]]\nname = \"eth0\"\ningress = \"tc\"\n",
        "a.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ingress") || e.contains("tc"), "{e}");
    let e = Config::parse("[daemon]\nlisten = \"127.0.0.1:9000\"\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("token_file"), "{e}");
    let e = Config::parse("[daemon]\nlog_level = \"verbose\"\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("log_level") && e.contains("verbose"), "{e}");
    Config::parse("[daemon]\nlog_level = \"info,statewall=debug\"\n", "a.toml").unwrap();
    let e = Config::parse("[daemon]\ntoken_file = \"/t\"\nno_auth = true\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_auth"), "{e}");
    // [cluster]: the file, the key and what is wrong.
    for (text, want) in [
        ("[cluster]\n", "a.toml: [cluster] endpoints: at least one"),
        (
            "[cluster]\nendpoints = [\"127.0.0.1:2379\"]\n",
            "a.toml: [cluster] endpoints[0]: \"127.0.0.1:2379\" is not an http:// or https:// URL",
        ),
        (
            "[cluster]\nendpoints = [\"http://a:1\"]\ncert_file = \"/c\"\n",
            "a.toml: [cluster] cert_file: cert_file and key_file go together",
        ),
        (
            "[cluster]\nendpoints = [\"http://a:1\"]\non_cluster_down = \"open\"\n",
            "on_cluster_down",
        ),
    ] {
        let e = Config::parse(text, "a.toml").unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    // VLAN sub-interfaces have dots; they are fine.
    Config::parse("[[interface]]\nname = \"eth0.100\"\n", "a.toml").unwrap();
}

/// `[maps]` sizes the other tables: refused by name and range, applied when the object is
/// loaded.
#[test]
fn map_sizes_are_checked_and_applied() {
    for (text, names) in [
        ("[maps]\nSW_NOPE = 1024\n", "SW_NOPE"),
        ("[maps]\nSW_XFSM_STATES = 10\n", "SW_XFSM_STATES"),
        ("[maps]\nSW_FW_LOG = 10000\n", "power of two"),
        ("[maps]\nSW_GATE_GRANTS = 4096\n", "[gate] grants_max"),
    ] {
        let e = Config::parse(text, "a.toml").unwrap_err().to_string();
        assert!(e.contains("[maps]") && e.contains(names), "{text}: {e}");
    }
    let cfg = Config::parse(
        "[maps]\nSW_XFSM_STATES = 2048\nSW_XFSM_LOCKS = 512\nSW_FW_LOG = 8192\nSW_SPA_EVENTS = 65536\n",
        "a.toml",
    )
    .unwrap();
    let k = common::Kernel::new("maps", &cfg);
    let cap = |name: &str| {
        k.eng
            .map_states()
            .into_iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no map {name}"))
            .max_entries
    };
    assert_eq!(cap("SW_XFSM_STATES"), 2048);
    assert_eq!(cap("SW_XFSM_LOCKS"), 512);
    assert_eq!(cap("SW_FW_LOG"), 8192);
    assert_eq!(cap("SW_SPA_EVENTS"), 65536);
}

/// `[[monitor]]` errors name the monitor's index and key.
#[test]
fn monitor_errors() {
    for (text, names) in [
        ("[[monitor]]\nname = \"m\"\nkind = \"ddos\"\ninterfaces = []\n", "#1 interfaces"),
        ("[[monitor]]\nname = \"m\"\nkind = \"mining\"\ninterfaces = [\"eth0\"]\n", "mining"),
        ("[[monitor]]\nname = \"m\"\nkind = \"crypto\"\ninterfaces = [\"eth0\"]\npackets_per_session = 5\n", "packets_per_session"),
        ("[[monitor]]\nname = \"m\"\nkind = \"ddos\"\ninterfaces = [\"eth0\"]\nsessions = 0\n", "sessions"),
        ("[[monitor]]\nname = \"m\"\nkind = \"ddos\"\ninterfaces = [\"eth0\"]\n[[monitor]]\nname = \"m\"\nkind = \"crypto\"\ninterfaces = [\"eth0\"]\n", "twice"),
        ("[[monitor]]\nname = \"a b\"\nkind = \"ddos\"\ninterfaces = [\"eth0\"]\n", "name"),
    ] {
        let e = Config::parse(text, "a.toml").unwrap_err().to_string();
        assert!(e.contains(names), "{text}: {e}");
    }
}

#[test]
fn switch_and_action_errors_say_what_and_where() {
    let machine = |extra: &str| {
        format!(
            "[[xfsm]]\nname = \"l\"\nlookup = [\"dst_mac\"]\nupdate = [\"src_mac\"]\nregisters = [\"port\"]\n[[xfsm.transition]]\nupdate = [\"port = in_port\"]\n{extra}"
        )
    };
    let sw = "[[switch]]\nname = \"sw\"\nports = [\"a\", \"b\"]\nmachines = [\"l\"]\n";
    let ok = machine("forward = \"port\"\n") + sw;
    Config::parse(&ok, "a.toml").unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            machine("forward = \"port\"\n"),
            "[[xfsm]] (l) transition #1 forward",
            "[[switch]] ports only",
        ),
        (
            machine("forward = \"nope\"\n") + sw,
            "[[xfsm]] #1 (l) transition #1 forward",
            "\"nope\"",
        ),
        (
            machine("forward = \"flood\"\naction = \"drop\"\n") + sw,
            "transition #1 forward",
            "not forwarded",
        ),
        (machine("dscp = 64\n") + sw, "transition #1 dscp", "0 to 63"),
        (
            machine("") + &sw.replace("[\"a\", \"b\"]", "[\"a\"]"),
            "[[switch]] #1 (sw) ports",
            "2 to 8",
        ),
        (
            machine("") + &sw.replace("[\"a\", \"b\"]", "[\"a\", \"a\"]"),
            "[[switch]] #1 (sw) ports",
            "twice",
        ),
        (
            machine("") + &sw.replace("[\"l\"]", "[\"m\"]"),
            "[[switch]] #1 (sw) machines",
            "not an [[xfsm]] machine",
        ),
        (
            machine("direction = \"any\"\n") + sw,
            "[[xfsm]] (l) transition #1",
            "direction ingress only",
        ),
        (
            "[[interface]]\nname = \"eth0\"\ningress = \"xdp\"\n".to_string()
                + &machine("mark = 7\n"),
            "transition #1 mark",
            "XDP",
        ),
        (
            machine("when = [\"table_full\"]\n"),
            "transition #1 when",
            "table = \"fixed\"",
        ),
        (
            machine("").replace("registers = [", "table = \"big\"\nregisters = ["),
            "[[xfsm]] #1 (l) table",
            "lru or fixed",
        ),
    ];
    for (text, at, what) in cases {
        let e = Config::parse(&text, "a.toml").unwrap_err().to_string();
        assert!(e.contains(at) && e.contains(what), "{text}\n=> {e}");
    }
}

/// A command whose reader goes away (`statewall completions bash | head`) ends quietly by
/// SIGPIPE, as Unix tools do, not with a panic on stderr. The commands print more than a
/// pipe holds (64 KiB): a short output could land whole in the pipe while a process
/// another test forks at that moment still holds its read end, and end with 0.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [["completions", "bash"], ["completions", "zsh"]] {
        let mut child = std::process::Command::new(common::bin())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes its first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(13),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}
