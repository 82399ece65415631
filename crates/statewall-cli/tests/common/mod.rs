//! Helpers shared by the integration tests: a daemon under its own bpffs root, state dir
//! and socket, stopped and torn down on drop (also when the test panics).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use statewall::client;
use statewall_harness::netns::NetNs;

static N: AtomicU32 = AtomicU32::new(0);

/// The `statewall` binary under test: this build's, or the one `STATEWALL_TEST_BIN` names
/// (another build, such as the previous release's when its pin layout is written down in
/// `tests/data/pins-previous.txt`).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("STATEWALL_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_statewall").to_string())
    })
}

/// Unique scratch paths for one daemon.
pub struct Paths {
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub scratch: PathBuf,
}

impl Paths {
    pub fn new(tag: &str) -> Self {
        statewall_harness::leftovers::pins();
        let id = format!(
            "{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let scratch = std::env::temp_dir().join(format!("statewall-test-{id}"));
        std::fs::create_dir_all(&scratch).unwrap();
        Paths {
            root: PathBuf::from(format!("/sys/fs/bpf/statewall-test-{id}")),
            state: scratch.join("state"),
            socket: scratch.join("api.sock"),
            config: scratch.join("statewall.toml"),
            scratch,
        }
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--bpffs-root".into(),
            self.root.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
            "--socket".into(),
            self.socket.display().to_string(),
        ]
    }
}

impl Drop for Paths {
    fn drop(&mut self) {
        let _ = statewall::engine::teardown(&statewall::engine::pins::Pins::new(&self.root));
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    /// Ids of the BPF programs the daemon holds (its file descriptors of programs and of
    /// links, read from `/proc/PID/fdinfo`): unlike the system's list, other tests' loads
    /// and unloads do not change it.
    pub fn held_programs(&self) -> std::collections::BTreeSet<u32> {
        let dir = format!("/proc/{}/fdinfo", self.child.id());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter_map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
            })
            .collect()
    }

    /// Starts `statewall daemon --config <p.config>` plus `extra` and waits until its API answers.
    pub fn start(p: &Paths, extra: &[&str]) -> Daemon {
        Daemon::start_env(p, extra, &[])
    }

    /// As [`Daemon::start`], with these environment variables set for the daemon.
    pub fn start_env(p: &Paths, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::File::create(
            p.scratch
                .join(format!("daemon-{}.log", N.fetch_add(1, Ordering::Relaxed))),
        )
        .unwrap();
        let child = Command::new(bin())
            .arg("daemon")
            .arg("--config")
            .arg(&p.config)
            .args(p.args())
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let mut d = Daemon {
            child,
            socket: p.socket.clone(),
        };
        // A hang guard, not a performance limit.
        let t0 = Instant::now();
        loop {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("daemon exited early with {st}: {}", logs(p));
            }
            if let Ok(r) = client::request_blocking(&p.socket, "GET", "/api/v1/status", None) {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "daemon not ready: {}",
                logs(p)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// An API call that must succeed (2xx): its JSON answer (null when there is none).
    pub fn ok(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let r =
            client::request_blocking(&self.socket, method, path, Some(body.to_string())).unwrap();
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
        serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null)
    }

    /// Creates firewall `name`, attaches it to the server side of `pair`, and appends
    /// `rules` (a JSON array of rules) to its INGRESS chain.
    pub fn firewall_on(&self, name: &str, pair: &statewall_harness::netns::Pair, rules: &str) {
        let base = format!("/api/v1/firewall/{name}");
        self.ok("POST", &base, "{}");
        self.ok(
            "POST",
            &format!("{base}/attach"),
            &format!(
                r#"{{"port": "{}", "netns": "{}"}}"#,
                pair.server_if, pair.server.name
            ),
        );
        let v: serde_json::Value = serde_json::from_str(rules).unwrap();
        let ops: Vec<serde_json::Value> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["operation"] = "append".into();
                r
            })
            .collect();
        self.ok(
            "POST",
            &format!("{base}/chain/INGRESS/batch"),
            &serde_json::json!({ "rules": ops }).to_string(),
        );
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let r = client::request_blocking(&self.socket, "GET", path, None).unwrap();
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json().unwrap()
    }

    /// Program names on `hook` (`ingress`, `egress`, `xdp`) of interface `ifname` (of every
    /// interface: None), in run order, from `/api/v1/status`.
    pub fn programs(&self, ifname: Option<&str>, hook: &str) -> Vec<String> {
        self.get("/api/v1/status")["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["hook"] == hook && ifname.is_none_or(|i| h["ifname"] == i))
            .flat_map(|h| {
                h["programs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p[0].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let st = self.child.wait().unwrap();
        std::mem::forget(self);
        st.code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn logs(p: &Paths) -> String {
    let mut s = String::new();
    if let Ok(rd) = std::fs::read_dir(&p.scratch) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                s += &std::fs::read_to_string(e.path()).unwrap_or_default();
            }
        }
    }
    s
}

/// Runs the CLI with the paths' socket and root; returns (exit code, stdout, stderr).
pub fn cli(p: &Paths, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .args(p.args())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A UDP socket bound inside a namespace, with a short read timeout.
pub fn udp_in(ns: &NetNs, addr: SocketAddr) -> UdpSocket {
    let s = ns.run(|| UdpSocket::bind(addr)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Sends `msg` from `from` to `to` and reports whether `srv` received it.
pub fn udp_passes(from: &UdpSocket, srv: &UdpSocket, to: SocketAddr, msg: &[u8]) -> bool {
    // Drain anything stale first.
    let mut buf = [0u8; 256];
    srv.set_nonblocking(true).unwrap();
    while srv.recv_from(&mut buf).is_ok() {}
    srv.set_nonblocking(false).unwrap();
    from.send_to(msg, to).unwrap();
    match srv.recv_from(&mut buf) {
        Ok((n, _)) => &buf[..n] == msg,
        Err(_) => false,
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Property-test cases, multiplied by `STATEWALL_SOAK` (set by `make soak`).
pub fn soak_cases(n: u32) -> u32 {
    n * std::env::var("STATEWALL_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// UDP servers on the server side of a pair (one per port) and a client socket.
pub struct Udp {
    /// Server sockets, in the order of the ports given.
    pub servers: Vec<(u16, UdpSocket)>,
    /// The client's socket.
    pub client: UdpSocket,
    /// The server's address.
    pub server_ip: std::net::Ipv4Addr,
}

impl Udp {
    /// Binds `ports` on the server and an ephemeral port on the client.
    pub fn new(pair: &statewall_harness::netns::Pair, ports: &[u16]) -> Udp {
        let servers = ports
            .iter()
            .map(|&p| {
                (
                    p,
                    udp_in(&pair.server, SocketAddr::from((pair.server_v4, p))),
                )
            })
            .collect();
        Udp {
            servers,
            client: udp_in(&pair.client, "0.0.0.0:0".parse().unwrap()),
            server_ip: pair.server_v4,
        }
    }

    /// Replaces the client's socket by one on a new ephemeral port: its packets are a new
    /// flow for the gate (flows opened under a grant outlive it).
    pub fn new_flow(&mut self, pair: &statewall_harness::netns::Pair) {
        self.client = udp_in(&pair.client, "0.0.0.0:0".parse().unwrap());
    }

    /// Sends `msg` to `port` and reports whether that port's server received it.
    pub fn passes(&self, port: u16, msg: &[u8]) -> bool {
        let srv = &self
            .servers
            .iter()
            .find(|(p, _)| *p == port)
            .expect("no server on that port")
            .1;
        udp_passes(
            &self.client,
            srv,
            SocketAddr::from((self.server_ip, port)),
            msg,
        )
    }
}

/// An engine under its own bpffs root, torn down on drop (also when the test panics).
pub struct Kernel {
    pub eng: statewall::engine::Engine,
    pub pins: statewall::engine::pins::Pins,
}

impl Kernel {
    pub fn new(tag: &str, cfg: &statewall::config::Config) -> Kernel {
        statewall_harness::leftovers::pins();
        let root = format!("/sys/fs/bpf/statewall-test-{}-{tag}", std::process::id());
        let pins = statewall::engine::pins::Pins::new(&root);
        let mut eng = statewall::engine::Engine::open(&pins, &cfg.map_sizes()).expect("engine");
        statewall::daemon::apply(&mut eng, cfg).expect("apply config");
        Kernel { eng, pins }
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.eng
            .xfsm_counters()
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }

    /// Grants that have not expired.
    pub fn live(&self) -> Vec<statewall_common::maps::GrantKey> {
        let now = self.eng.kernel_now();
        self.eng
            .grants()
            .unwrap()
            .into_iter()
            .filter(|(_, v)| v.expires_ns > now)
            .map(|(k, _)| k)
            .collect()
    }

    pub fn live_grants(&self) -> usize {
        self.live().len()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = statewall::engine::teardown(&self.pins);
    }
}

/// An AF_PACKET socket bound to `ifname` (call inside the namespace), for sending.
pub fn raw_socket(ifname: &str) -> i32 {
    packet_socket(ifname, 0)
}

/// An AF_PACKET socket for `proto` (network order; 0 receives nothing) bound to `ifname`.
fn packet_socket(ifname: &str, proto: u16) -> i32 {
    // SAFETY: plain socket calls; the fd is closed by the process exit of the test.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32);
        assert!(fd >= 0, "AF_PACKET socket");
        let name = std::ffi::CString::new(ifname).unwrap();
        let idx = libc::if_nametoindex(name.as_ptr());
        assert!(idx > 0);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = idx as i32;
        let r = libc::bind(
            fd,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "bind AF_PACKET");
        fd
    }
}

/// Sends one whole frame on a raw socket.
pub fn send_raw(fd: &i32, frame: &[u8]) {
    // SAFETY: sending a buffer we own.
    let r = unsafe { libc::send(*fd, frame.as_ptr() as *const _, frame.len(), 0) };
    assert_eq!(r as usize, frame.len());
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// curl as Polycube's scripts call it: JSON body without a Content-Type header.
pub fn curl(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut args = vec![
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "-H",
        "Content-Type:",
    ];
    if let Some(b) = body {
        args.extend_from_slice(&["--data-binary", b]);
    }
    args.push(url);
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// `statewall gate grant <client> udp/9922 --for 600`, which must succeed.
pub fn grant_udp_9922(p: &Paths, pair: &statewall_harness::netns::Pair) {
    let (code, _, err) = cli(
        p,
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
}

/// The text of the daemon's `/metrics` on 127.0.0.1:`port`.
pub fn scrape(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The value of one series (name with its labels, as written) in a `/metrics` text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A config from TOML `text`, on the server side of `pair`.
pub fn config_on(pair: &statewall_harness::netns::Pair, text: &str) -> statewall::config::Config {
    let mut cfg = statewall::config::Config::parse(text, "test").unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    cfg
}

/// Knock steps from a sequence in knockd's syntax ("7000,8000:udp").
pub fn steps(spec: &str) -> Vec<statewall::config::Step> {
    statewall::config::Sequence::parse(spec).unwrap().0
}

/// Knocks `seq` at `to` from the client namespace, with no delay between steps.
pub fn knock_from(
    pair: &statewall_harness::netns::Pair,
    to: std::net::IpAddr,
    seq: &[statewall::config::Step],
) {
    pair.client
        .run(|| statewall::xfsm::knockclient::knock(to, seq, Duration::ZERO, None))
        .unwrap()
}

/// Counts what a test tried (packets sent, restarts, rounds): printed, and added to the
/// file `STATEWALL_SOAK_REPORT` names when it is set (`make soak` sums them up).
pub fn tally(what: &str, n: u64) {
    use std::io::Write as _;
    eprintln!("{what}: {n}");
    if let Ok(path) = std::env::var("STATEWALL_SOAK_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        // One write(2) per line: test threads share the file (O_APPEND).
        f.write_all(format!("{n}\t{what}\n").as_bytes()).unwrap();
    }
}

/// Waits for a condition (a hang guard of 20 s, not a performance limit).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An AF_PACKET socket that receives every frame on `ifname` (call inside the namespace),
/// not the copies of frames sent from it, with a 200 ms receive timeout and a large buffer.
pub fn raw_listener(ifname: &str) -> i32 {
    let fd = packet_socket(ifname, (libc::ETH_P_ALL as u16).to_be());
    // SAFETY: setsockopt on the socket made above, with values we own.
    unsafe {
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        assert_eq!(r, 0, "SO_RCVTIMEO");
        // Only what arrives: not our own sends' copies.
        let one: i32 = 1;
        let r = libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &one as *const _ as *const libc::c_void,
            4,
        );
        assert_eq!(r, 0, "PACKET_IGNORE_OUTGOING");
        let size: i32 = 8 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const libc::c_void,
            4,
        );
        fd
    }
}

/// Runs Debian's real `fwknop` client in the client namespace (its rc file in a scratch
/// HOME) for `access` ("tcp/22"), with `keys` (encryption, HMAC; base64) and `extra`
/// options.
pub fn fwknop(
    pair: &statewall_harness::netns::Pair,
    p: &Paths,
    access: &str,
    keys: (&str, &str),
    extra: &[&str],
) {
    let home = p.scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let henv = format!("HOME={}", home.display());
    let (sv, cv) = (pair.server_v4.to_string(), pair.client_v4.to_string());
    let mut args = vec!["env", &henv, "fwknop", "-A", access, "-a", &cv, "-D", &sv];
    args.extend_from_slice(&["--key-base64-rijndael", keys.0, "--key-base64-hmac", keys.1]);
    args.push("--use-hmac");
    args.extend_from_slice(extra);
    let out = pair.client.exec(&args);
    assert!(out.status.success(), "fwknop: {out:?}");
}

/// Serves one TCP connection on `l` (the first one, or the one from `peer`): echoes what it
/// reads until the other side closes. A failed write panics the thread (seen at `join`).
pub fn echo(l: std::net::TcpListener, peer: Option<SocketAddr>) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut c = loop {
            let (c, from) = l.accept().unwrap();
            if peer.is_none_or(|p| p == from) {
                break c;
            }
        };
        let mut buf = [0u8; 256];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => c.write_all(&buf[..n]).unwrap(),
            }
        }
    })
}

/// An SPA flood: 300 bytes of garbage to the fwknop port (62201) of `dst` from 2000
/// spoofed sources per round (10.77.x.y, 10.78.x.y, ...), `rounds` rounds.
pub fn spa_garbage(dst: std::net::IpAddr, rounds: u8) -> impl Iterator<Item = Vec<u8>> {
    let garbage = vec![b'A'; 300];
    (0..rounds).flat_map(move |round| {
        let garbage = garbage.clone();
        (0..2000u32).map(move |i| {
            let src = std::net::IpAddr::from([10, 77 + round, (i >> 8) as u8, i as u8]);
            statewall_harness::packet::Packet::udp(src, dst, 40000, 62201)
                .payload(&garbage)
                .build()
        })
    })
}

/// Sends a pkd knock with statewall's own client from the client namespace of `pair` to
/// `to`, with the tag `SSHK` and key `test` the suites' pkd actions use; the client must
/// succeed.
pub fn pkd_knock(pair: &statewall_harness::netns::Pair, to: &str) {
    let out = pair
        .client
        .exec(&[bin(), "spa", to, "--tag", "SSHK", "--key", "test"]);
    assert!(out.status.success(), "{out:?}");
}

/// One SPA verdict count (`accepted`, `replay`, `bad_digest`, ...) from the daemon's API.
pub fn spa_verdict(d: &Daemon, what: &str) -> u64 {
    d.get("/api/v1/spa")["verdicts"][what].as_u64().unwrap()
}

/// The (link, program, map) ids a daemon's `/api/v1/status` lists, in its order.
pub fn status_ids(status: &serde_json::Value) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
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

/// Text of `examples/NAME` with its `[[interface]] eth0` made the server end of `pair`
/// (a daemon config for that pair).
pub fn example_on(pair: &statewall_harness::netns::Pair, name: &str) -> String {
    let text = std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let conf = text.replace(
        "[[interface]]\nname = \"eth0\"\n",
        &format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n",
            pair.server_if, pair.server.name
        ),
    );
    assert!(
        conf.contains(&pair.server_if),
        "{name} has no [[interface]] eth0"
    );
    conf
}

/// Follows the daemon's server-sent events at `path` in the background; the events
/// received so far, as JSON.
pub fn follow_events(
    socket: &Path,
    path: &'static str,
) -> std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (out, sock) = (events.clone(), socket.to_path_buf());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(client::stream_lines(&sock, path, |l| {
            if let Some(j) = l.strip_prefix("data: ") {
                out.lock().unwrap().push(serde_json::from_str(j).unwrap());
            }
        }));
    });
    events
}

/// Packets counted by the transitions whose name (`GET /api/v1/xfsm`, `transitions`)
/// starts with `prefix` ("machine: #N "), summed.
pub fn transition_hits(xfsm: &serde_json::Value, prefix: &str) -> u64 {
    xfsm["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["transition"].as_str().unwrap().starts_with(prefix))
        .map(|t| t["packets"].as_u64().unwrap())
        .sum()
}

/// `statewall detect eval --json` with `args` (captures, labels, detector): the one object
/// it prints; the command must succeed.
#[allow(dead_code)]
pub fn eval_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["detect", "eval", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
