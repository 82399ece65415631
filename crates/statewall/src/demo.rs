//! `statewall demo`: a client and a server namespace joined by a veth pair; the gate stage
//! attached to the server's side protects UDP port 9922. The client sends to an unprotected
//! port (received), to 9922 (dropped), then the server grants the client and 9922 answers.
//! Needs no daemon: it drives the same [`Engine`] the daemon uses, under its own bpffs root.
//! Exits 0 only when every outcome was as expected. `--keep` leaves namespaces and pins up.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{bail, Context};

use crate::{
    api::grant_key,
    config::{Config, InterfaceConfig, PortSpec},
    engine::{self, Engine},
    netns::Pair,
    pins::Pins,
};

/// The protected port.
pub const PORT: u16 = 9922;
/// An unprotected port, for contrast.
pub const OPEN_PORT: u16 = 9923;

fn recv(sock: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 512];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Runs the demo; `keep` leaves everything in place.
pub fn run(keep: bool) -> anyhow::Result<()> {
    let pair = Pair::new("demo");
    let root = format!("/sys/fs/bpf/statewall-demo-{}", std::process::id());
    let pins = Pins::new(&root);
    let mut cfg = Config::default();
    cfg.interfaces.push(InterfaceConfig {
        name: pair.server_if.clone(),
        netns: Some(pair.server.name.clone()),
        ingress: Default::default(),
    });
    cfg.gate.protected.push(PortSpec {
        proto: 17,
        port: PORT,
    });

    let result = (|| -> anyhow::Result<()> {
        let mut eng = Engine::open(&pins, &cfg)?;
        eng.reconcile(&cfg)?;
        eng.apply_gate(&cfg)?;
        println!(
            "[Setup] client {} ({}) <-> server {} ({})",
            pair.client.name, pair.client_v4, pair.server.name, pair.server_v4
        );
        println!(
            "[Setup] gate attached to {} ingress; udp/{PORT} protected",
            pair.server_if
        );

        let sv = pair.server_v4;
        let srv = pair
            .server
            .run(|| UdpSocket::bind((sv, PORT)))
            .context("server socket")?;
        let srv_open = pair
            .server
            .run(|| UdpSocket::bind((sv, OPEN_PORT)))
            .context("server socket")?;
        for s in [&srv, &srv_open] {
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
        }
        let cli = pair
            .client
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .context("client socket")?;
        let to = |p: u16| SocketAddr::from((sv, p));

        let mut ok = true;
        let mut check = |what: &str, got: Option<String>, want: Option<&str>| {
            let good = got.as_deref() == want;
            ok &= good;
            match &got {
                Some(m) => println!("[Server] Received message: [{m}]"),
                None => println!("[Server] (nothing arrived)"),
            }
            println!("  {} {what}", if good { "ok:" } else { "UNEXPECTED:" });
        };

        println!("[Client] Sending p1 to udp/{OPEN_PORT} (not protected)...");
        cli.send_to(b"p1", to(OPEN_PORT))?;
        check("unprotected port passes", recv(&srv_open), Some("p1"));

        println!("[Client] Sending p2 to udp/{PORT} (protected, no grant)...");
        cli.send_to(b"p2", to(PORT))?;
        check("protected port drops", recv(&srv), None);

        let key =
            grant_key(pair.client_v4.into(), "udp", PORT).map_err(|e| anyhow::anyhow!(e.1))?;
        eng.grant(key, 30, statewall_common::maps::GRANT_BY_API)?;
        println!("[Server] Granted {} udp/{PORT} for 30 s", pair.client_v4);

        println!("[Client] Sending p3 to udp/{PORT} (granted)...");
        cli.send_to(b"p3", to(PORT))?;
        check("granted source passes", recv(&srv), Some("p3"));

        for (name, v) in eng.gate_counters()? {
            println!("[Gate] {name}: {v}");
        }
        if !ok {
            bail!("some outcomes were not as expected");
        }
        println!("Finished.");
        Ok(())
    })();

    if keep {
        println!("--keep: namespaces {} and {} and pins under {root} stay; `statewall teardown --bpffs-root {root}` and `ip netns del` remove them", pair.client.name, pair.server.name);
        std::mem::forget(pair);
    } else {
        engine::teardown(&pins)?;
    }
    result
}
