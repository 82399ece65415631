//! `statewall demo`: the classic port-knocking experiment, in a client and a server
//! namespace joined by a veth pair. The server listens on UDP 9922 (and TCP 9922), which a
//! knock door protects; the client sends p1..p3 to UDP 1111, 2222 and 3333 (the secret
//! knocks) and p4..p6 to 9922, which the server receives. Then what the original could not
//! show: the state transitions as the kernel made them, a wrong sequence that stays shut,
//! the door closing when its window ends, and a lockout.
//!
//! Needs no daemon: it drives the same [`Engine`] the daemon uses, under its own bpffs root,
//! and reads the xfsm events from the ring buffer. Exits 0 only when every outcome was as
//! expected. `--keep` leaves namespaces and pins up (for `tcpdump` in them).

use std::{
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{bail, Context};

use crate::netns::Pair;
use statewall::{
    config::{Config, Dur, KnockConfig, Lockout, PortSpec, Sequence},
    engine::pins::Pins,
    engine::{self, Engine},
    xfsm::doors::{event_kind, event_source},
};

/// The protected port (UDP and TCP).
pub const PORT: u16 = 9922;
/// The secret knocks.
pub const KNOCKS: [u16; 3] = [1111, 2222, 3333];
/// How long the door stays open in the demo.
pub const OPEN_FOR_MS: u64 = 2000;

fn recv(sock: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 512];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// The demo's config: the server side of the pair, one door.
pub fn demo_config(pair: &Pair) -> Config {
    let mut cfg = Config::default();
    cfg.interfaces.push(pair.server_interface());
    let seq = KNOCKS
        .iter()
        .map(|p| format!("{p}:udp"))
        .collect::<Vec<_>>()
        .join(",");
    cfg.knocks.push(KnockConfig {
        name: "demo".into(),
        sequence: Sequence::parse(&seq).expect("demo sequence"),
        protected: vec![
            PortSpec {
                proto: 17,
                port: PORT,
            },
            PortSpec {
                proto: 6,
                port: PORT,
            },
        ],
        step_timeout: Dur::secs(2),
        seq_timeout: Dur::secs(10),
        open_for: Dur(Duration::from_millis(OPEN_FOR_MS)),
        lockout: Some(Lockout {
            failures: 3,
            within: Dur::secs(60),
            duration: Dur::secs(60),
        }),
        ..KnockConfig::new("demo")
    });
    cfg
}

struct Show<'a> {
    eng: &'a mut Engine,
    /// Kernel clock at the start.
    start: u64,
    ok: bool,
}

impl Show<'_> {
    /// Prints the xfsm events that arrived; returns their kinds.
    fn events(&mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(30));
        let evs = self.eng.drain_events();
        let c = self.eng.xfsm_compiled().cloned().unwrap_or_default();
        let mut kinds = Vec::new();
        for e in evs {
            let t = e.time_ns.saturating_sub(self.start) as f64 / 1e9;
            let m = e.machine as usize;
            println!(
                "    [xfsm +{t:6.3}s] {} {} -> {} ({}, packet {}/{})",
                event_source(&e),
                c.state_name(m, e.old_state),
                c.state_name(m, e.new_state),
                event_kind(&e),
                statewall::config::proto_name(e.proto),
                e.port
            );
            kinds.push(event_kind(&e).to_string());
        }
        kinds
    }

    fn check(&mut self, what: &str, good: bool) {
        self.ok &= good;
        println!("  {} {what}", if good { "ok:" } else { "UNEXPECTED:" });
    }
}

/// Runs the demo; `keep` leaves everything in place.
pub fn run(keep: bool) -> anyhow::Result<()> {
    let pair = Pair::new("demo");
    crate::leftovers::pins();
    let root = format!("/sys/fs/bpf/statewall-demo-{}", std::process::id());
    let pins = Pins::new(&root);
    let cfg = demo_config(&pair);
    let result = scenes(&pair, &pins, &cfg);
    if keep {
        println!("--keep: namespaces {} and {} and pins under {root} stay; `statewall teardown --bpffs-root {root}` and `ip netns del` remove them", pair.client.name, pair.server.name);
        std::mem::forget(pair);
    } else {
        engine::teardown(&pins)?;
    }
    result
}

fn scenes(pair: &Pair, pins: &Pins, cfg: &Config) -> anyhow::Result<()> {
    let mut eng = Engine::open(pins, &cfg.map_sizes())?;
    statewall::daemon::state::apply(&mut eng, cfg)?;
    let sv = pair.server_v4;
    let srv = pair
        .server
        .run(|| UdpSocket::bind((sv, PORT)))
        .context("server socket")?;
    srv.set_read_timeout(Some(Duration::from_millis(300)))?;
    let tcp_srv = pair
        .server
        .run(|| TcpListener::bind((sv, PORT)))
        .context("server TCP socket")?;
    // Each client socket is a flow of its own for the gate.
    let fresh = || -> anyhow::Result<UdpSocket> {
        pair.client
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .context("client socket")
    };
    let cli = fresh()?;
    let to = |p: u16| SocketAddr::from((sv, p));
    let start = eng.kernel_now();
    let mut show = Show {
        eng: &mut eng,
        start,
        ok: true,
    };
    let send = |cli: &UdpSocket, msg: &str, port: u16| -> anyhow::Result<()> {
        cli.send_to(msg.as_bytes(), to(port))?;
        Ok(())
    };

    // The classic run, as the original printed it.
    let mut got = Vec::new();
    for (i, port) in KNOCKS.iter().chain([PORT; 3].iter()).enumerate() {
        let msg = format!("p{}", i + 1);
        println!("[Client] Sending {msg}...");
        send(&cli, &msg, *port)?;
        if *port == PORT {
            if let Some(m) = recv(&srv) {
                println!("[Server] Received message: [{m}]");
                got.push(m);
            }
        }
    }
    println!("Finished.");
    println!();
    println!("What the kernel did meanwhile (xfsm events from the ring buffer):");
    let kinds = show.events();
    show.check(
        "p4, p5 and p6 arrived, after DEFAULT -> open 1/3 -> open 2/3 -> OPEN",
        got == ["p4", "p5", "p6"] && kinds.iter().filter(|k| *k == "transition").count() == 2,
    );

    println!();
    println!("[Client] TCP connect to {sv}:{PORT} while the door is open...");
    let conn = pair
        .client
        .run(|| TcpStream::connect_timeout(&to(PORT), Duration::from_millis(500)));
    show.check("the TCP variant connects", conn.is_ok());
    drop(conn);
    drop(tcp_srv.set_nonblocking(true));
    while tcp_srv.accept().is_ok() {}

    println!();
    println!("[Server] waiting for the {OPEN_FOR_MS} ms window to end...");
    std::thread::sleep(Duration::from_millis(OPEN_FOR_MS + 300));
    let now = show.eng.kernel_now();
    for (k, v) in show.eng.grants()? {
        println!(
            "    [gate +{:6.3}s] grant for {} {}/{} {}",
            v.expires_ns.saturating_sub(start) as f64 / 1e9,
            statewall_common::maps::key_addr(&k),
            statewall::config::proto_name(k.proto),
            k.port,
            if v.expires_ns <= now {
                "ended"
            } else {
                "still live"
            }
        );
    }
    println!("[Client] Sending p7 to udp/{PORT} from the same socket...");
    send(&cli, "p7", PORT)?;
    let m = recv(&srv);
    show.check(
        "p7 arrives: the flow opened during the window lives on until idle",
        m.as_deref() == Some("p7"),
    );
    println!("[Client] Sending p7b to udp/{PORT} from a new socket...");
    let cli = fresh()?;
    send(&cli, "p7b", PORT)?;
    let m = recv(&srv);
    show.check("after the window, a new flow's p7b is dropped", m.is_none());
    let conn = pair
        .client
        .run(|| TcpStream::connect_timeout(&to(PORT), Duration::from_millis(300)));
    show.check(
        "and a new TCP connection is refused (SYN dropped)",
        conn.is_err(),
    );

    println!();
    println!("[Client] A wrong sequence: 1111, 3333, 2222, then p8 to udp/{PORT}...");
    for p in [1111, 3333, 2222] {
        send(&cli, "k", p)?;
    }
    let kinds = show.events();
    send(&fresh()?, "p8", PORT)?;
    let m = recv(&srv);
    show.check(
        "the out-of-order knock reset the sequence (a failure) and p8 is dropped",
        m.is_none() && kinds.iter().any(|k| k == "reset"),
    );

    println!();
    println!("[Client] Two more wrong sequences (lockout after 3 failures)...");
    for _ in 0..2 {
        for p in [1111, 2222, 1111] {
            send(&cli, "k", p)?;
        }
    }
    let kinds = show.events();
    show.check(
        "the third failure locked the client out",
        kinds.iter().any(|k| k == "lockout"),
    );
    println!("[Client] The right sequence while locked out, then p9...");
    for p in KNOCKS {
        send(&cli, "k", p)?;
    }
    let kinds = show.events();
    send(&fresh()?, "p9", PORT)?;
    let m = recv(&srv);
    show.check(
        "knocks from a locked-out source are ignored: no transition, p9 dropped",
        m.is_none() && kinds.is_empty(),
    );

    println!();
    for (name, v) in show.eng.xfsm_counters()? {
        if v > 0 {
            println!("[xfsm] {name}: {v}");
        }
    }
    if !show.ok {
        bail!("some outcomes were not as expected");
    }
    println!("Every outcome as expected.");
    Ok(())
}
