//! A real etcd cluster for tests and benchmarks: Debian's `etcd` members on loopback, on
//! ports chosen here, data in a temporary directory; members can be stopped and started
//! again; everything is killed and removed on drop.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One member.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A cluster of members on 127.0.0.1.
pub struct Etcd {
    dir: PathBuf,
    members: Vec<Member>,
    initial: String,
    tls: Option<Certs>,
}

/// Certificates made for a test with `openssl`: a CA, etcd's server certificate (for
/// 127.0.0.1) and a client certificate, each with its key (PEM files).
#[derive(Clone, Debug)]
pub struct Certs {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// etcd's certificate and key.
    pub server: (PathBuf, PathBuf),
    /// The client's certificate and key.
    pub client: (PathBuf, PathBuf),
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/setup.sh installs it)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

impl Certs {
    /// Makes a CA and the two certificates under `dir` (valid for a day).
    pub fn make(dir: &std::path::Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=statewall-test-ca",
            "-days",
            "1",
        ]);
        openssl(dir, &ca);
        for (name, cn, ext) in [
            (
                "server",
                "etcd",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "statewall", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, crt, extf) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            std::fs::write(dir.join(&extf), ext).unwrap();
            let subj = format!("/CN={cn}");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(dir, &req);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "1",
                    "-extfile",
                    &extf,
                ],
            );
        }
        Certs {
            ca: dir.join("ca.crt"),
            server: (dir.join("server.crt"), dir.join("server.key")),
            client: (dir.join("client.crt"), dir.join("client.key")),
        }
    }
}

/// `n` free loopback ports (held together while chosen, so that they differ), below the
/// kernel's ephemeral range: a port the kernel hands out for `bind(0)` or an outgoing
/// connection was free when chosen here and could be taken by another process (another
/// test binary) before etcd bound it, or while a stopped member was down ("bind: address
/// already in use", seen once in `make test`). Below that range only a process that picks
/// ports as this does could take one; the start is drawn from the process id and a counter.
fn free_ports(n: usize) -> Vec<u16> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FLOOR: u32 = 10_000;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|l| *l > FLOOR + 1024)
        .unwrap_or(32_768);
    let span = low - FLOOR;
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = (std::process::id().wrapping_mul(7919) ^ seq.wrapping_mul(104_729)) % span;
    let mut held = Vec::with_capacity(n);
    for i in 0..span {
        if held.len() == n {
            break;
        }
        let port = (FLOOR + (start + i) % span) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "{n} free loopback ports below {low}");
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Etcd {
    /// Starts `n` members (a new cluster) and waits until it has a leader.
    pub fn start(n: usize) -> Etcd {
        Etcd::start_with(n, false)
    }

    /// As [`Etcd::start`]; with `tls`, clients reach the members over TLS only and must
    /// show a certificate of the CA made for it ([`Etcd::certs`]).
    pub fn start_with(n: usize, tls: bool) -> Etcd {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "statewall-etcd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let tls = tls.then(|| Certs::make(&dir.join("certs")));
        let mut e = Etcd {
            dir,
            members,
            initial,
            tls,
        };
        for i in 0..n {
            e.spawn(i);
        }
        e.wait_healthy();
        e
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name))).unwrap();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new("etcd");
        if let Some(c) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&c.server.0)
                .arg("--key-file")
                .arg(&c.server.1)
                .arg("--trusted-ca-file")
                .arg(&c.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "statewall-test"])
            // Fast elections: a member killed by a test is replaced within a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (Debian's etcd-server; scripts/setup.sh installs it)");
        self.members[i].child = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The certificates, when the members speak TLS.
    pub fn certs(&self) -> Option<&Certs> {
        self.tls.as_ref()
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.members[i].client)
    }

    /// Runs `etcdctl` against the running members; its output.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        let eps: Vec<String> = (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .map(|i| self.endpoint(i))
            .collect();
        let mut cmd = Command::new("etcdctl");
        if let Some(c) = &self.tls {
            cmd.arg(format!("--cacert={}", c.ca.display()))
                .arg(format!("--cert={}", c.client.0.display()))
                .arg(format!("--key={}", c.client.1.display()));
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .args(["--command-timeout", "5s"])
            .args(args)
            .output()
            .expect("run etcdctl (Debian's etcd-client)")
    }

    /// Waits (at most a minute: a hang guard) until every running member is healthy.
    pub fn wait_healthy(&self) {
        let t0 = Instant::now();
        loop {
            let out = self.ctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "etcd not healthy: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// The members' logs.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            let p = self.dir.join(format!("{}.log", m.name));
            if let Ok(t) = std::fs::read_to_string(&p) {
                let tail: Vec<&str> = t.lines().rev().take(20).collect();
                s.push_str(&format!("--- {} ---\n", m.name));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
