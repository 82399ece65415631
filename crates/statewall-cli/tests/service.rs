//! Running as a service: the daemon under `setpriv` as an unprivileged user holding exactly
//! CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (the systemd unit's and the DaemonSet's set)
//! enforces and serves; without any one of them it refuses to start, saying why. Readiness
//! reaches the service manager over `$NOTIFY_SOCKET` (READY, RELOADING, STOPPING).

mod common;

use std::{
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    process::{Command, Stdio},
    time::Duration,
};

use common::{bin, Paths, Udp};
use statewall_harness::netns::Pair;

/// The set, as capability names for setpriv, systemd and Kubernetes.
const CAPS: [(&str, &str, &str, u32); 3] = [
    ("bpf", "CAP_BPF", "BPF", 39),
    ("net_admin", "CAP_NET_ADMIN", "NET_ADMIN", 12),
    ("perfmon", "CAP_PERFMON", "PERFMON", 38),
];

const NOBODY: u32 = 65534;

fn chown_r(p: &std::path::Path) {
    let st = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Starts the daemon inside the server's namespace as nobody with `caps`.
fn start(p: &Paths, pair: &Pair, caps: &[&str], notify: &std::path::Path) -> std::process::Child {
    let set = format!(
        "-all{}",
        caps.iter().map(|c| format!(",+{c}")).collect::<String>()
    );
    let log =
        std::fs::File::create(p.scratch.join(format!("daemon-{}.log", caps.join("-")))).unwrap();
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", pair.server.name))
        .args([
            "setpriv",
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            &format!("--inh-caps={set}"),
            &format!("--ambient-caps={set}"),
            &format!("--bounding-set={set}"),
            bin(),
            "daemon",
            "--config",
        ])
        .arg(&p.config)
        .args(p.args())
        .env("NOTIFY_SOCKET", notify)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn next_msg(sock: &UnixDatagram) -> String {
    let mut b = [0u8; 512];
    let n = sock.recv(&mut b).expect("no notification from the daemon");
    String::from_utf8_lossy(&b[..n]).into_owned()
}

#[test]
fn runs_with_exactly_bpf_net_admin_perfmon_and_notifies_readiness() {
    let p = Paths::new("svc");
    let pair = Pair::new("svc");
    // The daemon runs inside the server's namespace: its interface needs no `netns`.
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{}\"\n\n[gate]\nprotected = [\"udp/9922\"]\n",
            pair.server_if
        ),
    )
    .unwrap();
    std::fs::create_dir_all(&p.root).unwrap();
    std::fs::create_dir_all(&p.state).unwrap();
    chown_r(&p.scratch);
    chown_r(&p.root);
    let notify = p.scratch.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A hang guard, not a performance limit.
    sock.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();

    // Without any one of the three, the daemon does not start, and says why.
    for missing in &CAPS {
        let caps: Vec<&str> = CAPS
            .iter()
            .filter(|c| c.0 != missing.0)
            .map(|c| c.0)
            .collect();
        let mut c = start(&p, &pair, &caps, &notify);
        let st = c.wait().unwrap();
        let log = std::fs::read_to_string(p.scratch.join(format!("daemon-{}.log", caps.join("-"))))
            .unwrap();
        assert!(!st.success(), "started without {}: {log}", missing.1);
        assert!(
            log.contains("loading the eBPF object") || log.contains("failed to create map"),
            "without {}: {log}",
            missing.1
        );
        let _ = statewall::engine::teardown(&statewall::engine::pins::Pins::new(&p.root));
    }
    sock.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    assert!(
        sock.recv(&mut b).is_err(),
        "a daemon that failed said READY"
    );
    sock.set_nonblocking(false).unwrap();

    // With the three: ready, enforcing, serving.
    let all: Vec<&str> = CAPS.iter().map(|c| c.0).collect();
    let mut d = start(&p, &pair, &all, &notify);
    let ready = next_msg(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}", d.id())), "{ready}");
    // Ready means serving: the API answers at once.
    let (code, out, err) = common::cli(&p, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    // Exactly the three capabilities, as nobody.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.id())).unwrap();
    let field = |k: &str| -> String {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let want: u64 = CAPS.iter().map(|c| 1u64 << c.3).sum();
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        want,
        "{status}"
    );
    assert_eq!(
        u64::from_str_radix(&field("CapBnd:"), 16).unwrap(),
        want,
        "{status}"
    );
    assert_eq!(field("Uid:"), NOBODY.to_string());

    let udp = Udp::new(&pair, &[9922, 9923]);
    assert!(!udp.passes(9922, b"x"), "protected port open");
    assert!(udp.passes(9923, b"x"));
    common::grant_udp_9922(&p, &pair);
    assert!(udp.passes(9922, b"x"), "grant did not open the port");

    // SIGHUP: RELOADING, then READY again.
    unsafe { libc::kill(d.id() as i32, libc::SIGHUP) };
    assert_eq!(next_msg(&sock), "RELOADING=1");
    assert_eq!(next_msg(&sock), "READY=1");
    // SIGTERM: STOPPING, exit 0, and the port stays shut to others (programs stay).
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    assert_eq!(next_msg(&sock), "STOPPING=1");
    assert!(d.wait().unwrap().success());
}

#[test]
fn unit_and_manifest_grant_the_tested_set() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("packaging/statewall.service")).unwrap();
    let line = |k: &str| -> Vec<String> {
        let l = unit
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no {k} in the unit"));
        let mut v: Vec<String> = l[k.len()..].split_whitespace().map(String::from).collect();
        v.sort();
        v
    };
    let mut want: Vec<String> = CAPS.iter().map(|c| c.1.to_string()).collect();
    want.sort();
    assert_eq!(line("AmbientCapabilities="), want);
    assert_eq!(line("CapabilityBoundingSet="), want);
    assert!(unit.contains("Type=notify"));
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/statewall.yaml")).unwrap();
    let add = format!(
        "add: [{}]",
        CAPS.iter()
            .map(|c| format!("\"{}\"", c.2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(manifest.contains(&add), "{add} not in the DaemonSet");
    assert!(manifest.contains("drop: [\"ALL\"]"));
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    // The unit as installed, with ExecStart pointing at this build's binary (the package's
    // /usr/bin/statewall is checked by `make deb`); man pages are `make deb`'s too.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("packaging/statewall.service")).unwrap();
    let p = Paths::new("unit");
    let f = p.scratch.join("statewall.service");
    std::fs::write(&f, unit.replace("/usr/bin/statewall", bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&f)
        .output()
        .expect("systemd-analyze (package systemd)");
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && msg.trim().is_empty(), "{msg}");
}
