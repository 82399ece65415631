//! The mining captures' long-lived sessions (`make dataset`'s `mining` kind), on top of the
//! benign background of [`crate::dataset`]:
//! - miners: Stratum sessions ([`crate::stratum`]) from the client namespace's miner
//!   addresses (hosts .204 to .207 of the pair's network, two miners each) to a pool at
//!   host .3 on a port the
//!   seed picks, each miner with its own share interval, reconnecting now and then (a new
//!   session; none in the capture's last minute);
//! - the hard negatives, long-lived and periodic as well, from the benign addresses to
//!   the server (.2): eight ssh sessions with keepalives (idle, or a command printing every few
//!   seconds) to a real OpenSSH server; four MQTT publishers and four subscribers through
//!   a real broker (mosquitto) with their keepalives; four WebSocket dashboards
//!   ([`crate::websocket`]).
//!
//! Everything stops at `until`; the servers are the caller's children or threads that end
//! with the scope.

use std::{
    io::Write,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::{
    netns::{spawn, Pair},
    rng::Rng,
    stratum, websocket,
};

/// The pool's address in `pair`'s network (host .3).
pub fn pool(pair: &Pair) -> String {
    pair.host(3)
}

/// The miners' prefix in `pair`'s network (hosts .204 to .207).
pub fn miners(pair: &Pair) -> String {
    format!("{}/30", pair.host(204))
}

fn benign_addr(pair: &Pair, rng: &mut Rng) -> String {
    pair.host(rng.range(10, 49) as u8)
}

fn sleep_until(t: Instant, stop: &AtomicBool) {
    while Instant::now() < t && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The servers the sessions need, started in the server namespace: an OpenSSH server and
/// a mosquitto broker on the server's address, their files in `dir`; the client key's path.
pub fn servers(pair: &Pair, dir: &Path) -> (Vec<Child>, String) {
    let s = &pair.server;
    let server = pair.server_v4.to_string();
    s.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", pool(pair)),
        "dev",
        &pair.server_if,
    ]);
    for i in 204..208 {
        let a = format!("{}/24", pair.host(i));
        pair.client
            .exec_ok(&["ip", "addr", "add", &a, "dev", &pair.client_if]);
    }
    let d = dir.to_string_lossy().into_owned();
    for k in ["host_key", "client_key"] {
        let _ = std::fs::remove_file(dir.join(k));
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f", &format!("{d}/{k}")])
            .output()
            .expect("ssh-keygen (scripts/setup.sh installs openssh-client)");
        assert!(out.status.success(), "ssh-keygen: {out:?}");
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "ListenAddress {server}\nPort 22\nHostKey {d}/host_key\nPidFile none\nUsePAM no\n\
             PermitRootLogin prohibit-password\nAuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        ),
    )
    .unwrap();
    // sshd's privilege separation needs its directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!("listener 1883 {server}\nallow_anonymous true\npersistence false\nlog_dest none\n"),
    )
    .unwrap();
    let kids = vec![
        spawn(&mut s.command(&["/usr/sbin/sshd", "-D", "-f", &format!("{d}/sshd_config")])),
        spawn(&mut s.command(&["/usr/sbin/mosquitto", "-c", &format!("{d}/mosquitto.conf")])),
    ];
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let ss = s.exec(&["ss", "-Htln"]);
        let t = String::from_utf8_lossy(&ss.stdout);
        t.contains(&format!("{server}:22")) && t.contains(&format!("{server}:1883"))
    });
    assert!(up, "sshd or mosquitto did not start");
    (kids, format!("{d}/client_key"))
}

/// The labels of a mining capture in `pair`'s network: (attackers, victims).
pub fn labels(pair: &Pair) -> (Vec<String>, Vec<String>) {
    (vec![miners(pair)], vec![format!("{}/32", pool(pair))])
}

/// ssh from the pair's client namespace, bound to `from`, to root on its server with the
/// key at `key` (no host key check, no prompt), options `opts` more, running `cmd`.
pub fn ssh(pair: &Pair, key: &str, from: &str, opts: &[&str], cmd: &str) -> Command {
    let to = format!("root@{}", pair.server_v4);
    let mut a = vec![
        "ssh",
        "-i",
        key,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
    ];
    a.extend_from_slice(opts);
    a.extend(["-b", from, &to, cmd]);
    pair.client.command(&a)
}

/// Runs the miners and the long-lived benign sessions until `until`.
pub fn sessions(pair: &Pair, key: &str, seed: u64, until: Instant) {
    let mut rng = Rng(seed ^ 0x6d69_6e65);
    let port = *rng.pick(&[3333u16, 4444, 5555, 7777, 9999, 14444, 443, 8008]);
    let pool_timing = stratum::PoolTiming {
        job: rng.range(10, 40) as f64,
        branch: rng.range(4, 12) as usize,
    };
    let ws_timing = websocket::Timing {
        update: rng.range(2, 15) as f64,
        ping: rng.range(10, 30) as f64,
        message: rng.range(5, 40) as f64,
    };
    let stop = AtomicBool::new(false);
    let (c, s) = (&pair.client, &pair.server);
    let server = &pair.server_v4.to_string();
    let pool_addr: SocketAddr = format!("{}:{port}", pool(pair)).parse().unwrap();
    let ws_addr = SocketAddr::from((pair.server_v4, 8081));
    let stop = &stop;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            sleep_until(until, stop);
            stop.store(true, Ordering::Relaxed);
        });
        sc.spawn(|| {
            s.run(|| {
                let l = TcpListener::bind(pool_addr).expect("the pool binds");
                stratum::pool(l, pool_timing, seed, stop)
            })
        });
        sc.spawn(|| {
            s.run(|| {
                let l = TcpListener::bind(ws_addr).expect("the WebSocket server binds");
                websocket::server(l, ws_timing, seed ^ 5, stop)
            })
        });
        std::thread::sleep(Duration::from_millis(500));
        // Two miners on each miner address.
        for m in 0..8u64 {
            let share = rng.range(2, 30) as f64;
            let mut mrng = Rng(seed ^ (m + 1).wrapping_mul(0x0001_2345_6789));
            sc.spawn(move || {
                let from: SocketAddr = format!("{}:0", pair.host(204 + (m % 4) as u8))
                    .parse()
                    .unwrap();
                sleep_until(Instant::now() + Duration::from_secs(mrng.range(0, 8)), stop);
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    // No new session in the capture's last minute: a miner's session lasts
                    // hours, and one cut short by the end of a capture would be judged on
                    // its first seconds only.
                    if !first
                        && until.saturating_duration_since(Instant::now()) < Duration::from_secs(60)
                    {
                        sleep_until(until, stop);
                        break;
                    }
                    first = false;
                    // A session lasts a while, then the miner reconnects.
                    let ends = Instant::now() + Duration::from_secs(mrng.range(60, 400));
                    let mine = AtomicBool::new(false);
                    std::thread::scope(|ms| {
                        ms.spawn(|| {
                            while Instant::now() < ends && !stop.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            mine.store(true, Ordering::Relaxed);
                        });
                        let t = stratum::MinerTiming { share };
                        let w = format!("wallet{m}.rig");
                        let seed = mrng.next_u64();
                        let n = std::sync::atomic::AtomicU64::new(0);
                        if let Err(e) =
                            c.run(|| stratum::miner(from, pool_addr, &w, t, seed, &mine, &n))
                        {
                            // (When the capture ends, the pool resets its connections.)
                            if !stop.load(Ordering::Relaxed) {
                                eprintln!("dataset: miner {from} -> {pool_addr}: {e}");
                            }
                        }
                    });
                    sleep_until(Instant::now() + Duration::from_secs(mrng.range(1, 5)), stop);
                }
            });
        }
        // WebSocket dashboards.
        for i in 0..4u64 {
            let from: SocketAddr = format!("{}:0", benign_addr(pair, &mut rng))
                .parse()
                .unwrap();
            sc.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = std::sync::atomic::AtomicU64::new(0);
                    let _ =
                        c.run(|| websocket::client(from, ws_addr, ws_timing, seed ^ i, stop, &n));
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
        }
        // ssh: idle with keepalives, or printing every few seconds.
        for i in 0..8u64 {
            let from = benign_addr(pair, &mut rng);
            let alive = rng.range(5, 30).to_string();
            let every = rng.range(2, 20);
            // Each bounded by the capture's length: without a terminal, sshd leaves a
            // remote command running when its client goes.
            let secs = until.saturating_duration_since(Instant::now()).as_secs() + 2;
            let cmd = match i % 3 {
                0 => format!("sleep {secs}"),
                1 => format!("timeout {secs} sh -c 'while sleep {every}; do date || exit; done'"),
                _ => format!(
                    "timeout {secs} sh -c 'while sleep {every}; do uptime && cat /proc/loadavg || exit; done'"
                ),
            };
            sc.spawn(move || {
                let alive = format!("ServerAliveInterval={alive}");
                let opts = ["-o", "LogLevel=ERROR", "-o", &alive];
                let mut k = spawn(&mut ssh(pair, key, &from, &opts, &cmd));
                sleep_until(until, stop);
                let _ = k.kill();
                let _ = k.wait();
            });
        }
        // MQTT: publishers sending readings, subscribers receiving them.
        for i in 0..4u64 {
            let from = benign_addr(pair, &mut rng);
            let keep = rng.range(10, 60).to_string();
            let every = rng.range(1, 15);
            let mut prng = Rng(seed ^ (100 + i));
            sc.spawn(move || {
                let mut k = c
                    .command(&[
                        "mosquitto_pub",
                        "-h",
                        server,
                        "-A",
                        &from,
                        "-k",
                        &keep,
                        "-l",
                        "-t",
                        &format!("sensors/{i}"),
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mosquitto_pub (scripts/setup.sh installs mosquitto-clients)");
                let mut input = k.stdin.take().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let pad = "r".repeat(prng.range(10, 200) as usize);
                    if writeln!(input, "{{\"t\":{},\"v\":\"{pad}\"}}", prng.range(0, 400)).is_err()
                    {
                        break;
                    }
                    let jitter = prng.range(0, 1000) as f64 / 1000.0;
                    sleep_until(
                        Instant::now()
                            + Duration::from_secs_f64(every as f64 * (0.7 + 0.6 * jitter)),
                        stop,
                    );
                }
                drop(input);
                let _ = k.kill();
                let _ = k.wait();
            });
            let sub_from = benign_addr(pair, &mut rng);
            let sub_keep = rng.range(10, 60).to_string();
            sc.spawn(move || {
                let mut k = spawn(&mut c.command(&[
                    "mosquitto_sub",
                    "-h",
                    server,
                    "-A",
                    &sub_from,
                    "-k",
                    &sub_keep,
                    "-t",
                    &format!("sensors/{i}"),
                ]));
                sleep_until(until, stop);
                let _ = k.kill();
                let _ = k.wait();
            });
        }
    });
}
