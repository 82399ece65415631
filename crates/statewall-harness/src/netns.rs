//! Network namespaces for tests and the demo: named namespaces joined by veth pairs, with
//! unique names per process and per call, removed on drop (also when a test panics).
//!
//! Traffic in tests only ever goes between such namespaces. A namespace is created with
//! `ip netns add`, so it lives under `/run/netns/NAME` and a daemon in the root namespace can
//! attach programs inside it (see [`statewall::engine::netns::in_netns`]), while bpffs stays
//! the root one.
//!
//! ```no_run
//! let pair = statewall_harness::netns::Pair::new("doc");
//! pair.client.exec_ok(&["ping", "-c1", "-W1", &pair.server_v4.to_string()]);
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub use statewall::engine::netns::in_netns;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by this value.
#[derive(Debug)]
pub struct NetNs {
    /// Its name under `/run/netns`.
    pub name: String,
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run `ip` (iproute2)");
    out
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The process id in `name` after `prefix` (`<prefix><pid>-...` or `<prefix><pid>`): the
/// names test processes give what they make, so that a later one can tell what a killed
/// one left behind.
pub(crate) fn pid_of(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// No process of id `pid` exists.
pub(crate) fn dead(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces left behind by test processes that no longer exist.
fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if pid_of(&n, "swt-").is_some_and(dead) {
            let _ = ip(&["netns", "del", &n]);
        }
    }
}

impl NetNs {
    /// Creates `swt-<pid>-<n>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> Self {
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("swt-{}-{}-{}", std::process::id(), n, tag);
        ip_ok(&["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs a command inside and returns its output.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Runs a command inside and panics (with its stderr) unless it succeeds.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {}: {}{}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace (see [`in_netns`]).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        in_netns(Some(&self.name), f).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Kill what still runs inside, then remove the namespace (its veths go with it).
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A client and a server namespace joined by one veth pair, with IPv4 and IPv6 addresses.
#[derive(Debug)]
pub struct Pair {
    /// The client namespace.
    pub client: NetNs,
    /// The server namespace.
    pub server: NetNs,
    /// The client's veth (inside `client`).
    pub client_if: String,
    /// The server's veth (inside `server`).
    pub server_if: String,
    /// Client IPv4 address.
    pub client_v4: Ipv4Addr,
    /// Server IPv4 address.
    pub server_v4: Ipv4Addr,
    /// Client IPv6 address.
    pub client_v6: Ipv6Addr,
    /// Server IPv6 address.
    pub server_v6: Ipv6Addr,
}

impl Pair {
    /// The server side as a config `[[interface]]` (tcx ingress).
    pub fn server_interface(&self) -> statewall::types::InterfaceConfig {
        statewall::types::InterfaceConfig {
            name: self.server_if.clone(),
            netns: Some(self.server.name.clone()),
            ingress: Default::default(),
        }
    }

    /// Creates both namespaces and the link: client 10.77.0.1/24 + fd00:77::1/64, server
    /// 10.77.0.2/24 + fd00:77::2/64 (the addresses exist only inside these namespaces).
    pub fn new(tag: &str) -> Self {
        Self::with_server_index(tag, None)
    }

    /// As [`Pair::new`], the server's veth taking interface index `index` when given (an
    /// index of its namespace: no other interface there has it).
    pub fn with_server_index(tag: &str, index: Option<u32>) -> Self {
        Self::build(tag, index, 1, 77)
    }

    /// As [`Pair::new`] on network `net` instead of 77: client 10.`net`.0.1/24 and
    /// fd00:`net`::1/64, server .2 and ::2 (the dataset's held-out captures use other
    /// addresses than its training captures).
    pub fn with_net(tag: &str, net: u8) -> Self {
        Self::build(tag, None, 1, net)
    }

    /// Host `i` of the pair's IPv4 network (10.77.0.`i` for [`Pair::new`]'s).
    pub fn host(&self, i: u8) -> String {
        let [a, b, c, _] = self.client_v4.octets();
        Ipv4Addr::new(a, b, c, i).to_string()
    }

    /// The pair's IPv4 network, `10.77.0.0/24` for [`Pair::new`]'s.
    pub fn net24(&self) -> String {
        format!("{}/24", self.host(0))
    }

    /// As [`Pair::new`], each end of the link with `queues` transmit and receive queues
    /// (a veth end with NAPI has a ring per receive queue, and a frame goes to the queue
    /// of the one it was sent on: traffic sent from different CPUs need not share one).
    pub fn with_queues(tag: &str, queues: u32) -> Self {
        Self::build(tag, None, queues, 77)
    }

    fn build(tag: &str, index: Option<u32>, queues: u32, net: u8) -> Self {
        let client = NetNs::new(&format!("{tag}-c"));
        let server = NetNs::new(&format!("{tag}-s"));
        // The x keeps two processes' ids apart (pid 12 link 345, pid 1234 link 5).
        let id = format!(
            "{}x{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let client_if = format!("swc{id}");
        let server_if = format!("sws{id}");
        let q = queues.max(1).to_string();
        match index {
            None => ip_ok(&[
                "link",
                "add",
                &client_if,
                "netns",
                &client.name,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &server_if,
                "netns",
                &server.name,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ]),
            // Made inside the server's namespace, where the index is kept (moved there
            // from another, it would be renumbered).
            Some(index) => {
                server.exec_ok(&[
                    "ip",
                    "link",
                    "add",
                    &server_if,
                    "index",
                    &index.to_string(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &client_if,
                    "netns",
                    &client.name,
                ]);
            }
        }
        let (cv4, sv4) = (Ipv4Addr::new(10, net, 0, 1), Ipv4Addr::new(10, net, 0, 2));
        // (The network's decimal digits read as hex: fd00:77:: for 77.)
        let (cv6, sv6): (Ipv6Addr, Ipv6Addr) = (
            format!("fd00:{net}::1").parse().unwrap(),
            format!("fd00:{net}::2").parse().unwrap(),
        );
        for (ns, ifn, v4, v6) in [
            (&client, &client_if, cv4, cv6),
            (&server, &server_if, sv4, sv6),
        ] {
            // No duplicate address detection at all (the link-local address's would keep the
            // interface from answering neighbour solicitations for a second or two).
            ns.exec_ok(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifn}.accept_dad=0"),
            ]);
            ns.exec_ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", ifn]);
            ns.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifn,
                "nodad",
            ]);
            ns.exec_ok(&["ip", "link", "set", ifn, "up"]);
        }
        // IPv6 ignores neighbour solicitations until the interface is ready (carrier seen
        // by linkwatch, link-local address configured): wait for that, at most 5 s.
        for (ns, ifn) in [(&client, &client_if), (&server, &server_if)] {
            for _ in 0..100 {
                let out = ns.exec(&["ip", "-6", "addr", "show", "dev", ifn, "scope", "link"]);
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("fe80") && !text.contains("tentative") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Pair {
            client,
            server,
            client_if,
            server_if,
            client_v4: cv4,
            server_v4: sv4,
            client_v6: cv6,
            server_v6: sv6,
        }
    }
}

/// A child process killed and waited for when dropped (a server a test or bench runs
/// beside its traffic, gone even when that fails half-way).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `c` (a tool, often `NetNs::command`) with no input or output; a tool that cannot
/// start is a failure that names scripts/setup.sh, which installs them.
pub fn spawn(c: &mut Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{c:?}: {e} (scripts/setup.sh installs the tools)"))
}

/// One non-blocking connect, waiting up to 100 us for the answer: true when connected.
pub fn try_connect(to: SocketAddr) -> bool {
    let IpAddr::V4(a) = to.ip() else { return false };
    // SAFETY: plain socket calls on an fd this function owns and closes.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return false;
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = to.port().to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // Wait up to 100 us with ppoll (ns timeout), asleep: a client spinning here took a
        // core of the two from the daemon that had to answer, and the scheduler then made
        // the daemon wait a time slice (the SPA runs' 4 to 12 ms outliers).
        let start = Instant::now();
        let mut ok = false;
        loop {
            let left = Duration::from_micros(100).saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: left.as_nanos() as libc::c_long,
            };
            if libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) > 0 {
                let mut err: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as u32;
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut err as *mut _ as *mut libc::c_void,
                    &mut len,
                );
                ok = err == 0;
                break;
            }
        }
        libc::close(fd);
        ok
    }
}
