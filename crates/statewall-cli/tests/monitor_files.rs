//! `statewall monitor extract`'s files against expected files worked out by hand from
//! COMPAT.md section 5: CSV byte for byte, JSON equal after parsing.

use serde_json::{json, Value};
use statewall::monitor::files::{write_window, Format, CRYPTO_HEADER};

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("statewall-mf-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ddos_window() -> Value {
    let k = json!({"src": "10.0.0.1", "sport": 80, "dst": "10.0.0.2", "dport": 40000, "proto": 6});
    let k6 = json!({"src": "2001:db8::1", "sport": 80, "dst": "2001:db8::2", "dport": 40001, "proto": 6});
    let mut s = k.clone();
    s["server"] = json!("10.0.0.1");
    s["n_packets"] = json!(2);
    let mut s6 = k6.clone();
    s6["server"] = json!("2001:db8::1");
    s6["n_packets"] = json!(1);
    let p = |key: &Value, ts: u64, flags: u64, win: u64| {
        json!({"session": key, "timestamp": ts, "ip_flags_frag": 16384, "tcp_flags": flags,
               "tcp_win": win, "udp_size": 0, "icmp_type": 0, "len": 74, "tcp_payload": 0, "tcp_ack": 0})
    };
    json!({
        "name": "d", "kind": "ddos", "window": 1,
        "sessions": [s, s6],
        "packets": [
            p(&k, 1_700_000_000_500_000_000, 2, 64240),
            p(&k6, 1_700_000_000_600_000_000, 2, 1000),
            p(&k, 1_700_000_001_000_000_000, 16, 502),
        ],
    })
}

#[test]
fn ddos_csv_and_json() {
    let d = dir("ddos");
    let files = write_window(&d, &ddos_window(), 0, Format::Compat, false).unwrap();
    // The IPv6 session is not in the compat files.
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0].file_name().unwrap().to_str().unwrap(),
        "10.0.0.2-40000___10.0.0.1-80___TCP-iter0.csv"
    );
    let want = "Seconds     ,\t1700000000,1700000001\nNs          ,\t500000000,0\nIPv4 flags  ,\t16384,16384\nTCP flags   ,\t2,16\nTCP Win     ,\t64240,502\nUDP len     ,\t0,0\nICMP type   ,\t0,0";
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), want);

    let files = write_window(&d, &ddos_window(), 3, Format::Compat, true).unwrap();
    assert_eq!(
        files[0].file_name().unwrap().to_str().unwrap(),
        "result_3.json"
    );
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let want: Value = serde_json::from_str(
        r#"[{"id": ["10.0.0.2", 40000, "10.0.0.1", 80, "TCP"],
             "packets": [[1700000000.5, 16384, 2, 64240, 0, 0],
                         [1700000001.0, 16384, 16, 502, 0, 0]]}]"#,
    )
    .unwrap();
    assert_eq!(got, want);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("\n  {"), "indent 2: {text}");

    // Tidy: every packet, IPv6 too, with a header.
    let files = write_window(&d, &ddos_window(), 0, Format::Tidy, false).unwrap();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("window,timestamp_ns,family,client,client_port,server"));
    assert_eq!(
        lines[2],
        "1,1700000000600000000,6,2001:db8::2,40001,2001:db8::1,80,TCP,16384,2,1000,0,0,74,0,0"
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn crypto_window(n: u64) -> Value {
    json!({
        "name": "c", "kind": "crypto", "window": n, "packets": [],
        "sessions": [
            {"src": "10.0.0.1", "sport": 3333, "dst": "10.0.0.2", "dport": 50000, "proto": 6,
             "server": "10.0.0.1", "method": 2, "n_packets": 10, "n_packets_reverse": 5,
             "n_bytes": 1000, "n_bytes_reverse": 500,
             "start_timestamp": 1_700_000_000_000_000_000u64, "alive_timestamp": 1_700_000_002_000_000_000u64},
            {"src": "10.0.0.3", "sport": 5000, "dst": "10.0.0.4", "dport": 6000, "proto": 17,
             "server": "10.0.0.3", "method": 3, "n_packets": 1, "n_packets_reverse": 0,
             "n_bytes": 100, "n_bytes_reverse": 0,
             "start_timestamp": 1_700_000_003_000_000_000u64, "alive_timestamp": 1_700_000_003_000_000_000u64},
            {"src": "2001:db8::1", "sport": 1, "dst": "2001:db8::2", "dport": 2, "proto": 17,
             "server": "2001:db8::1", "method": 2, "n_packets": 1, "n_packets_reverse": 0,
             "n_bytes": 60, "n_bytes_reverse": 0, "start_timestamp": 5, "alive_timestamp": 5}
        ]
    })
}

#[test]
fn crypto_csv_and_json() {
    let d = dir("crypto");
    let row1 = "1700000002000000000, 10.0.0.2, 10.0.0.1, 50000, 3333, TCP, 2, 10, 5, 8000, 4000, 2000000000, 5.0, 2.5, 4000.0, 2000.0, 800.0, 800.0, 2.0, 2.0";
    let row2 = "1700000003000000000, 10.0.0.4, 10.0.0.3, 6000, 5000, UDP, 3, 1, 0, 800, 0, 0, -, -, -, -, 800.0, -, -, -";
    write_window(&d, &crypto_window(1), 0, Format::Compat, false).unwrap();
    let want = format!("{CRYPTO_HEADER}\n{row1}\n{row2}");
    assert_eq!(
        std::fs::read_to_string(d.join("results.csv")).unwrap(),
        want
    );
    // Appended on the next read, header once, no newline at the end.
    write_window(&d, &crypto_window(2), 1, Format::Compat, false).unwrap();
    let want = format!("{CRYPTO_HEADER}\n{row1}\n{row2}\n{row1}\n{row2}");
    assert_eq!(
        std::fs::read_to_string(d.join("results.csv")).unwrap(),
        want
    );
    assert!(CRYPTO_HEADER.contains("Bits_ server, Bits_ client"));

    let files = write_window(&d, &crypto_window(1), 0, Format::Compat, true).unwrap();
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let want: Value = serde_json::from_str(
        r#"[{"id": ["10.0.0.2", "10.0.0.1", 50000, 3333, "TCP"],
             "value": [1700000002000000000, 2, 10, 5, 8000, 4000, 2000000000, 5.0, 2.5, 4000.0, 2000.0, 800.0, 800.0, 2.0, 2.0]},
            {"id": ["10.0.0.4", "10.0.0.3", 6000, 5000, "UDP"],
             "value": [1700000003000000000, 3, 1, 0, 800, 0, 0, "-", "-", "-", "-", 800.0, "-", "-", "-"]}]"#,
    )
    .unwrap();
    assert_eq!(got, want);

    let files = write_window(&d, &crypto_window(4), 0, Format::Tidy, false).unwrap();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[1],
        "4,4,10.0.0.2,50000,10.0.0.1,3333,TCP,2,5,10,500,1000,1700000000000000000,1700000002000000000"
    );
    assert!(lines[3].starts_with("4,6,2001:db8::2,2,2001:db8::1,1,UDP,"));
    let _ = std::fs::remove_dir_all(&d);
}
