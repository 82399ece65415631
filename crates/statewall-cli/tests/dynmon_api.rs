//! Dynamic monitors through the daemon, with real traffic between namespaces the test
//! creates: the C example loaded from source by the CLI and from a prebuilt object by
//! Polycube's path, exact values through the native read, Dynmon's metrics and
//! `/metrics` (checked by promtool); the chain order (a monitor's verdict cannot open what
//! the gate keeps shut); rejected programs (verifier, an untranslatable BCC table) leave
//! nothing behind;
//! unloading detaches; instances come back after a restart.

mod common;

use std::net::UdpSocket;

use common::{cli, curl, free_port, scrape, Daemon, Paths, Udp};
use serde_json::{json, Value};
use statewall_harness::netns::Pair;

fn example(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/dynmon/"
    ))
    .join(name)
}

fn le(a: std::net::Ipv4Addr) -> u64 {
    u32::from_le_bytes(a.octets()) as u64
}

/// Names of the BPF programs loaded in the kernel now.
fn loaded_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .collect()
}

/// The ids of the programs named `count_flows` (the flows example's) that the daemon holds
/// (by a program or link descriptor). Other test binaries may load the same example at
/// the same time: the kernel's whole list would count theirs too.
fn count_flows(d: &Daemon) -> std::collections::BTreeSet<u32> {
    let held = d.held_programs();
    still_loaded(&held)
}

/// Those of `ids` that are programs named `count_flows` the kernel still has (program ids
/// are allocated cyclically, so an id does not come back within a test).
fn still_loaded(ids: &std::collections::BTreeSet<u32>) -> std::collections::BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| ids.contains(&p.id()) && p.name_as_str() == Some("count_flows"))
        .map(|p| p.id())
        .collect()
}

/// The dynamic monitors' names, as the daemon lists them.
fn dynmon_names(d: &Daemon) -> Vec<String> {
    d.get("/api/v1/dynmon")
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect()
}

/// Program names on the server interface's tcx ingress, in run order.
fn ingress_chain(d: &Daemon, pair: &Pair) -> Vec<String> {
    d.programs(Some(&pair.server_if), "ingress")
}

fn send_udp(pair: &Pair, dport: u16, n: usize, len: usize) {
    pair.client.run(|| {
        let u = UdpSocket::bind((pair.client_v4, 0)).unwrap();
        for _ in 0..n {
            u.send_to(&vec![1u8; len], (pair.server_v4, dport)).unwrap();
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
}

/// The UDP flow entries of a `flows` reading, by destination port (host order).
fn udp_flows(v: &Value) -> Vec<(u16, Value)> {
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key"]["proto"] == 17)
        .map(|e| {
            (
                (e["key"]["dport"].as_u64().unwrap() as u16).swap_bytes(),
                e["value"].clone(),
            )
        })
        .collect()
}

fn metric<'a>(list: &'a Value, name: &str) -> &'a Value {
    &list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {list}"))["value"]
}

#[test]
fn dynamic_monitors_through_the_daemon() {
    let p = Paths::new("dynapi");
    let pair = Pair::new("dynapi");
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[gate]\nprotected = [\"udp/9922\"]\n",
            pair.server_if, pair.server.name
        ),
    )
    .unwrap();
    let (api, mport) = (free_port(), free_port());
    let args = [
        "--listen".to_string(),
        format!("127.0.0.1:{api}"),
        "--no-auth".into(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{mport}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(&p, &args);
    let udp = Udp::new(&pair, &[9922, 9923]);
    let (cv, sv) = (pair.client_v4, pair.server_v4);

    // 1. The C example from source, by the CLI.
    let (code, out, err) = cli(
        &p,
        &[
            "dynmon",
            "load",
            "flows",
            example("c/flows.c").to_str().unwrap(),
            "--interface",
            &pair.server_if,
            "--netns",
            &pair.server.name,
            "--metrics",
            example("c/flows.toml").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("count_flows attached"), "{out}");
    // Last in the chain, after the gate.
    let chain = ingress_chain(&d, &pair);
    assert_eq!(
        chain.last().map(String::as_str),
        Some("count_flows"),
        "{chain:?}"
    );

    // Known traffic: 5 packets of 100 bytes to 9923 (open), 3 to 9922 (the gate drops
    // them before the monitor sees them).
    let _ = d.ok("POST", "/api/v1/dynmon/flows/read", "");
    send_udp(&pair, 9923, 5, 100);
    send_udp(&pair, 9922, 3, 100);
    let r = d.ok("POST", "/api/v1/dynmon/flows/read", "");
    let flows = udp_flows(metric(&r["metrics"], "flow_packets"));
    assert_eq!(
        flows,
        vec![(9923, json!({"packets": 5, "bytes": 5 * 128}))],
        "{r}"
    );
    let key = &metric(&r["metrics"], "flow_packets")
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"]["proto"] == 17)
        .unwrap()["key"];
    assert_eq!(key["saddr"], le(cv));
    assert_eq!(key["daddr"], le(sv));
    // Length 128 is in bucket 8 (128 <= v < 256); emptied by the previous read.
    let lengths = metric(&r["metrics"], "packet_length").as_array().unwrap();
    assert_eq!(lengths.len(), 16);
    assert_eq!(lengths[8], 5, "{lengths:?}");
    let new_flows = metric(&r["metrics"], "new_flows").as_array().unwrap();
    assert_eq!(
        new_flows
            .iter()
            .filter(|f| f["proto"] == 17 && f["dport"] == 9923u16.swap_bytes())
            .count(),
        1,
        "{new_flows:?}"
    );

    // 2. Polycube's Dynmon path: the same instance, then a read in Dynmon's shape.
    let base = format!("http://127.0.0.1:{api}/polycube/v1/dynmon");
    let (code, v) = curl("GET", &format!("{base}/flows"), None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["dataplane-config"]["ingress-path"]["metric-configs"][0]["name"],
        "flow_packets"
    );
    assert_eq!(
        v["dataplane-config"]["ingress-path"]["metric-configs"][0]["extraction-options"]
            ["swap-on-read"],
        true
    );
    send_udp(&pair, 9923, 2, 10);
    let (code, v) = curl("GET", &format!("{base}/flows/metrics/"), None);
    assert_eq!(code, 200, "{v}");
    let names: Vec<&str> = v["ingress-metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "flow_packets",
            "packets_total",
            "packet_length",
            "new_flows"
        ]
    );
    assert_eq!(v["egress-metrics"], json!([]));
    assert_eq!(
        udp_flows(metric(&v["ingress-metrics"], "flow_packets")),
        vec![(9923, json!({"packets": 2, "bytes": 2 * 38}))]
    );
    // Per-CPU array: one value per CPU.
    let per_cpu = &metric(&v["ingress-metrics"], "packets_total")[0];
    assert_eq!(
        per_cpu.as_array().unwrap().len(),
        aya::util::nr_cpus().unwrap()
    );

    // 3. /metrics, checked by promtool: one series per flow and field, labelled from the
    // key's BTF field names.
    send_udp(&pair, 9923, 3, 100);
    let text = scrape(mport);
    let want = format!(
        "flow_packets{{dynmon=\"flows\",example=\"flows\",daddr=\"{}\",dport=\"{}\",pad=\"0\",proto=\"17\",saddr=\"{}\",field=\"packets\"}} 3",
        le(sv),
        9923u16.swap_bytes(),
        le(cv)
    );
    assert!(text.contains(&want), "{want} not in:\n{text}");
    assert!(text.contains("# TYPE packets_total counter"), "{text}");
    assert!(
        text.contains("packet_length_bucket{dynmon=\"flows\",le=\"+Inf\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("packet_length_bucket{dynmon=\"flows\",le=\"255\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("packet_length_bucket{dynmon=\"flows\",le=\"127\"} 0"),
        "{text}"
    );
    let check = |body: &str| {
        let mut c = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && !msg.contains("error"),
            "promtool: {msg}\n{body}"
        );
    };
    check(&text);

    // 4. The same C program as a prebuilt object, by Polycube's path: created, then
    // attached with /polycube/v1/attach.
    let obj = p.scratch.join("flows.o");
    let clang = statewall::dynmon::find_clang().expect("clang (scripts/setup.sh installs it)");
    let st = std::process::Command::new(clang)
        .args([
            "-target",
            "bpf",
            "-g",
            "-O2",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(example("c/flows.c"))
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap();
    assert!(st.success());
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&obj).unwrap())
    };
    let body = json!({"dataplane-config": {"ingress-path": {"name": "prebuilt", "code": b64,
        "metric-configs": [{"name": "flows2", "map-name": "flows",
            "extraction-options": {"swap-on-read": false, "empty-on-read": true},
            "open-metrics-metadata": {"help": "flows", "type": "counter", "labels": []}}]}}});
    let (code, v) = curl("POST", &format!("{base}/flows2"), Some(&body.to_string()));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["hooks"], json!([]), "not attached before /attach");
    let (code, v) = curl(
        "POST",
        &format!("http://127.0.0.1:{api}/polycube/v1/attach"),
        Some(
            &json!({"cube": "flows2", "port": pair.server_if, "netns": pair.server.name})
                .to_string(),
        ),
    );
    assert_eq!(code, 200, "{v}");
    send_udp(&pair, 9923, 4, 100);
    let (code, v) = curl("GET", &format!("{base}/flows2/metrics"), None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        udp_flows(metric(&v["ingress-metrics"], "flows2")),
        vec![(9923, json!({"packets": 4, "bytes": 4 * 128}))]
    );
    // empty-on-read: the next read has nothing of it.
    let (_, v) = curl("GET", &format!("{base}/flows2/metrics"), None);
    assert_eq!(udp_flows(metric(&v["ingress-metrics"], "flows2")), vec![]);
    // A counter read destructively keeps running totals for /metrics, whoever read.
    let text = scrape(mport);
    let want = format!(
        "flows2_total{{dynmon=\"flows2\",daddr=\"{}\",dport=\"{}\",pad=\"0\",proto=\"17\",saddr=\"{}\",field=\"packets\"}} 4",
        le(sv),
        9923u16.swap_bytes(),
        le(cv)
    );
    assert!(text.contains(&want), "{want} not in:\n{text}");
    check(&text);

    // 5. A program that lets everything through (TC_ACT_OK) cannot open what the gate
    // keeps shut: it runs after it.
    let pass_all =
        "#include <linux/bpf.h>\n#include <linux/pkt_cls.h>\n#include <bpf/bpf_helpers.h>\n\
        SEC(\"tc\") int pass_all(struct __sk_buff *skb) { return TC_ACT_OK; }\n\
        char LICENSE[] SEC(\"license\") = \"GPL\";\n";
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "paths": [{"source": pass_all, "metrics": []}]});
    let v = d.ok("POST", "/api/v1/dynmon/passall", &body.to_string());
    assert_eq!(v["paths"][0]["program"], "pass_all");
    assert!(
        !udp.passes(9922, b"x"),
        "a dynamic monitor's TC_ACT_OK opened the gate"
    );
    assert!(udp.passes(9923, b"x"));
    d.ok("DELETE", "/api/v1/dynmon/passall", "");

    // A client that gives up while its program compiles: the load still ends (the
    // instance appears and can be deleted), and the name is free again.
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "paths": [{"source": pass_all, "metrics": []}]});
    let st = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "0.02",
            "-X",
            "POST",
            "-H",
            "Content-Type:",
        ])
        .args(["--data-binary", &body.to_string()])
        .arg(format!("http://127.0.0.1:{api}/api/v1/dynmon/gaveup"))
        .status()
        .unwrap();
    assert_eq!(
        st.code(),
        Some(28),
        "curl gave up before the answer (timeout)"
    );
    let mut appeared = false;
    for _ in 0..300 {
        let (code, _) = curl(
            "GET",
            &format!("http://127.0.0.1:{api}/api/v1/dynmon/gaveup"),
            None,
        );
        if code == 200 {
            appeared = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(appeared, "the abandoned load never finished");
    d.ok("DELETE", "/api/v1/dynmon/gaveup", "");
    let v = d.ok("POST", "/api/v1/dynmon/gaveup", &body.to_string());
    assert_eq!(v["paths"][0]["program"], "pass_all");
    d.ok("DELETE", "/api/v1/dynmon/gaveup", "");

    // 6. Rejected programs leave nothing behind.
    let before_chain = ingress_chain(&d, &pair);
    let bad = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\
        SEC(\"tcx/ingress\") int bad_reader(struct __sk_buff *skb) {\n\
        unsigned char *p = (void *)(long)skb->data; return p[40]; }\n\
        char LICENSE[] SEC(\"license\") = \"GPL\";\n";
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "paths": [{"source": bad, "metrics": []}]});
    let (code, v) = curl(
        "POST",
        &format!("http://127.0.0.1:{api}/api/v1/dynmon/bad"),
        Some(&body.to_string()),
    );
    assert_eq!(code, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("the verifier rejected the program"), "{e}");
    assert!(
        e.contains("invalid access to packet"),
        "the verifier log is missing: {e}"
    );
    assert!(!loaded_programs().iter().any(|n| n == "bad_reader"));
    assert_eq!(ingress_chain(&d, &pair), before_chain);
    let (code, _) = curl(
        "GET",
        &format!("http://127.0.0.1:{api}/api/v1/dynmon/bad"),
        None,
    );
    assert_eq!(code, 404);
    // Polycube's BCC dialect with a table type statewall does not translate: 400 naming
    // the line and the types it does.
    let bcc = "BPF_TABLE(\"lpm_trie\", u32, u64, counts, 1024);\nstatic __always_inline int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) { return RX_OK; }\n";
    let body = json!({"dataplane-config": {"ingress-path": {"name": "x", "code": bcc, "metric-configs": []}}});
    let (code, v) = curl("POST", &format!("{base}/bcc"), Some(&body.to_string()));
    assert_eq!(code, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("line 1:") && e.contains("\"lpm_trie\"") && e.contains("percpu_hash"),
        "{e}"
    );
    // A metric on a map the object does not have.
    let body = json!({"interface": pair.server_if, "netns": pair.server.name,
        "paths": [{"source": std::fs::read_to_string(example("c/flows.c")).unwrap(),
                   "metrics": [{"name": "x", "map-name": "nope"}]}]});
    let (code, v) = curl(
        "POST",
        &format!("http://127.0.0.1:{api}/api/v1/dynmon/nomap"),
        Some(&body.to_string()),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no map \"nope\""),
        "{v}"
    );
    // A label name that is not one, or that statewall writes itself.
    for bad in ["a-b", "le"] {
        let body = json!({"interface": pair.server_if, "netns": pair.server.name,
            "paths": [{"source": std::fs::read_to_string(example("c/flows.c")).unwrap(),
                       "metrics": [{"name": "x", "map-name": "flows", "open-metrics-metadata":
                           {"type": "gauge", "labels": [{"name": bad, "value": "v"}]}}]}]});
        let (code, v) = curl(
            "POST",
            &format!("http://127.0.0.1:{api}/api/v1/dynmon/badlabel"),
            Some(&body.to_string()),
        );
        assert_eq!(code, 400, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains(&format!("label \"{bad}\"")),
            "{v}"
        );
    }

    // 7. A restart brings the instances back, attached (the specs keep the objects).
    let progs_before = count_flows(&d);
    assert_eq!(progs_before.len(), 3, "flows (two copies) and flows2 (one)");
    assert_eq!(d.stop(), 0);
    assert_eq!(still_loaded(&progs_before).len(), 0, "unloaded on stop");
    let d = Daemon::start(&p, &args);
    assert_eq!(dynmon_names(&d), ["flows", "flows2"]);
    assert_eq!(
        ingress_chain(&d, &pair).last().map(String::as_str),
        Some("count_flows")
    );
    send_udp(&pair, 9923, 6, 100);
    let r = d.ok("POST", "/api/v1/dynmon/flows/read", "");
    assert_eq!(
        udp_flows(metric(&r["metrics"], "flow_packets")),
        vec![(9923, json!({"packets": 6, "bytes": 6 * 128}))]
    );

    // 8. A state file that cannot be written (a directory in its place) refuses a load, an
    //    unload, an attach and a detach, and each leaves the instances as they were.
    let pc = format!("http://127.0.0.1:{api}/polycube/v1");
    let cube = |name: &str| json!({"cube": name, "port": pair.server_if}).to_string();
    let (code, v) = curl("POST", &format!("{pc}/detach"), Some(&cube("flows2")));
    assert_eq!(code, 200, "{v}");
    let file = p.state.join("dynmon.json");
    let saved = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir_all(file.join("in-the-way")).unwrap();
    let progs = count_flows(&d);
    let refused = |(code, v): (u16, Value), what: &str, says: &str| {
        assert_eq!(code, 500, "{what}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("dynmon.json") && msg.contains(says),
            "{what}: {msg}"
        );
    };
    let body = json!({"dataplane-config": {"ingress-path": {"name": "prebuilt", "code": b64,
        "metric-configs": []}}});
    let load = curl("POST", &format!("{base}/flows3"), Some(&body.to_string()));
    refused(load, "load", "(nothing changed)");
    let unload = curl("DELETE", &format!("{base}/flows2"), None);
    refused(unload, "unload", "(still loaded)");
    let attach = curl("POST", &format!("{pc}/attach"), Some(&cube("flows2")));
    refused(attach, "attach", "(nothing changed)");
    let detach = curl("POST", &format!("{pc}/detach"), Some(&cube("flows")));
    refused(detach, "detach", "(nothing changed)");
    assert_eq!(dynmon_names(&d), ["flows", "flows2"]);
    let flows2 = d.get("/api/v1/dynmon/flows2");
    assert_eq!(flows2["hooks"], json!([]), "{flows2}");
    assert_eq!(flows2["interface"], Value::Null, "{flows2}");
    assert_ne!(d.get("/api/v1/dynmon/flows")["hooks"], json!([]));
    assert_eq!(
        count_flows(&d),
        progs,
        "the refused load and attach left no program behind"
    );
    assert!(
        !p.state.join("dynmon.tmp").exists(),
        "a refused write left its temporary file"
    );
    std::fs::remove_dir_all(&file).unwrap();
    std::fs::write(&file, saved).unwrap();

    // 9. Unloading detaches and unloads; the gate is unaffected.
    let (code, out, err) = cli(&p, &["dynmon", "unload", "flows"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _) = curl("DELETE", &format!("{base}/flows2"), None);
    assert_eq!(code, 200);
    assert!(!ingress_chain(&d, &pair).iter().any(|n| n == "count_flows"));
    assert_eq!(count_flows(&d).len(), 0);
    assert_eq!(still_loaded(&progs).len(), 0, "unloaded, not only let go");
    assert!(!udp.passes(9922, b"x"));
    assert!(udp.passes(9923, b"x"));
    assert_eq!(d.get("/api/v1/dynmon"), json!([]));
}
