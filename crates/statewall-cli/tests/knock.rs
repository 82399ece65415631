//! Port knocking end to end, with real traffic between two namespaces the tests create:
//! the demo's outcomes, Debian's `knock` client against Debian's own knockd.conf imported
//! by `statewall import knockd`, one-time,
//! counter and time sequences, a connection that outlives the door's window, and knock
//! ports that answer like any closed port. (Scans, brute force and floods against the
//! doors are in `tests/attacks.rs`.)

mod common;

use common::{config_on, eventually, knock_from, steps, Kernel};

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use statewall::{config::Step, xfsm::knockclient};
use statewall_harness::netns::Pair;

/// TCP connect from the client namespace: true when the server answered.
fn connects(pair: &Pair, to: SocketAddr) -> bool {
    pair.client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(400)))
        .is_ok()
}

#[test]
fn demo_outcomes() {
    statewall_harness::demo::run(false).expect("every demo outcome as expected");
}

/// Runs the CLI: (exit code, stdout, stderr).
fn statewall(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Debian's knockd.conf exactly as the knockd package ships it: `/etc/knockd.conf` when its
/// MD5 equals the conffile hash dpkg records, else the file taken out of the package
/// (`apt-get download knockd`, `dpkg-deb -x`).
fn debian_knockd_conf(scratch: &std::path::Path) -> std::path::PathBuf {
    let run = |cmd: &mut std::process::Command| -> String {
        let out = cmd.output().expect("running a Debian tool");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let conffiles =
        run(std::process::Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "knockd"]));
    let want = conffiles
        .lines()
        .find_map(|l| l.trim().strip_prefix("/etc/knockd.conf "))
        .expect("dpkg records /etc/knockd.conf as a conffile of knockd")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let etc = std::path::PathBuf::from("/etc/knockd.conf");
    if etc.exists() {
        let sum = run(std::process::Command::new("md5sum").arg(&etc));
        if sum.split_whitespace().next() == Some(want.as_str()) {
            return etc;
        }
    }
    let dir = scratch.join("knockd-pkg");
    std::fs::create_dir_all(&dir).unwrap();
    run(std::process::Command::new("apt-get")
        .args(["download", "knockd"])
        .current_dir(&dir));
    let deb = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("the downloaded package");
    run(std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root")));
    let f = dir.join("root/etc/knockd.conf");
    let sum = run(std::process::Command::new("md5sum").arg(&f));
    assert_eq!(sum.split_whitespace().next(), Some(want.as_str()));
    f
}

/// Debian's knockd.conf, converted by `statewall import knockd` without flags, opened by
/// Debian's `knock` client: tcp/22 and tcp/443, each for the knocking source only, and
/// closed again by the close sequence.
#[test]
fn debian_knock_client_opens_an_imported_door() {
    let p = common::Paths::new("kd");
    let file = debian_knockd_conf(&p.scratch);
    let (code, toml_text, err) = statewall(&["import", "knockd", file.to_str().unwrap()]);
    assert_eq!(code, 0, "import of Debian's file: {err}");
    assert!(!err.contains("skipped"), "{err}");
    let pair = Pair::new("kd");
    let mut cfg = statewall::config::Config::parse(&toml_text, "imported").unwrap();
    let doors: Vec<_> = cfg.knocks.iter().map(|k| k.name.clone()).collect();
    assert_eq!(
        doors,
        ["openSSH", "openHTTPS"],
        "open and close doors merge"
    );
    cfg.interfaces = vec![pair.server_interface()];
    let k = Kernel::new("kd", &cfg);
    let sv = pair.server_v4;
    let listeners: Vec<TcpListener> = [22, 443]
        .into_iter()
        .map(|port| {
            pair.server
                .run(|| TcpListener::bind((sv, port)))
                .expect("service stand-in")
        })
        .collect();
    let (ssh, https) = (SocketAddr::from((sv, 22)), SocketAddr::from((sv, 443)));
    assert!(
        !connects(&pair, ssh) && !connects(&pair, https),
        "protected before knocking"
    );
    let knock = |ports: &[&str]| {
        let sv = sv.to_string();
        let mut args = vec!["knock", "-d", "50", sv.as_str()];
        args.extend_from_slice(ports);
        let out = pair.client.exec(&args);
        assert!(out.status.success(), "knock: {out:?}");
    };
    let granted = |k: &Kernel| -> Vec<(IpAddr, u16)> {
        let mut v: Vec<(IpAddr, u16)> = k
            .live()
            .iter()
            .map(|g| (statewall_common::maps::addr_ip(g.family, &g.addr), g.port))
            .collect();
        v.sort();
        v
    };
    let me = IpAddr::from(pair.client_v4);
    knock(&["7000", "8000", "9000"]);
    assert!(connects(&pair, ssh), "the knock client opened tcp/22");
    assert!(!connects(&pair, https), "and not 443");
    assert_eq!(granted(&k), vec![(me, 22)], "for the knocking source only");
    knock(&["12345", "54321", "24680", "13579"]);
    assert!(connects(&pair, https), "the knock client opened tcp/443");
    assert_eq!(granted(&k), vec![(me, 22), (me, 443)]);
    knock(&["9000", "8000", "7000"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        granted(&k),
        vec![(me, 443)],
        "the close sequence revoked tcp/22"
    );
    assert!(!connects(&pair, ssh), "closed again");
    drop(listeners);
}

/// A connection opened while the door is open keeps working after the window ends
/// (the gate tracks it), while new connections are refused again; with flow tracking off
/// the same connection is cut.
#[test]
fn established_connection_survives_window_end() {
    for track in [true, false] {
        let pair = Pair::new(if track { "flow" } else { "noflow" });
        let idle = if track { "\"2h\"" } else { "0" };
        let cfg = config_on(
            &pair,
            &format!("[gate]\nflow_idle_tcp = {idle}\n\n[[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\nopen_for = \"1s\"\n"),
        );
        let k = Kernel::new(if track { "flow" } else { "noflow" }, &cfg);
        let sv = pair.server_v4;
        let listener = pair
            .server
            .run(|| TcpListener::bind((sv, 22)))
            .expect("ssh stand-in");
        // An echo server: one line in, the same line out, until the peer closes.
        let echo = std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut w = s.try_clone().unwrap();
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                    break;
                }
            }
        });
        let ssh = SocketAddr::from((sv, 22));
        knock_from(&pair, IpAddr::V4(sv), &steps("7000,8000,9000"));
        let conn = pair
            .client
            .run(|| TcpStream::connect_timeout(&ssh, Duration::from_millis(500)))
            .expect("connect while the door is open");
        conn.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let roundtrip = |msg: &str| -> bool {
            use std::io::{BufRead, BufReader, Write};
            let mut w = &conn;
            if w.write_all(format!("{msg}\n").as_bytes()).is_err() {
                return false;
            }
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).is_ok() && line == format!("{msg}\n")
        };
        assert!(roundtrip("in the window"), "echo while the door is open");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(k.live_grants(), 0, "the window has ended");
        assert!(
            !connects(&pair, ssh),
            "a new connection after the window is refused"
        );
        if track {
            for i in 0..3 {
                assert!(
                    roundtrip(&format!("after the window {i}")),
                    "the established connection lives on"
                );
            }
            assert_eq!(k.eng.flows().unwrap().len(), 1, "one flow tracked");
            let flow = k
                .eng
                .gate_counters()
                .unwrap()
                .into_iter()
                .find(|(n, _)| *n == "flow")
                .unwrap()
                .1;
            assert!(flow >= 3, "packets passed on the flow: {flow}");
        } else {
            assert!(
                !roundtrip("after the window"),
                "without flow tracking the connection is cut"
            );
        }
        drop(conn);
        let _ = echo.join();
    }
}

fn granted(k: &Kernel, addr: IpAddr, port: u16) -> bool {
    k.live()
        .contains(&statewall_common::maps::key_for(addr, 6, port))
}

/// One-time sequences (knockd's file), counter-based and time-based sequences: each
/// one-time sequence opens once, also when a second source races with it before user space
/// notices; the use is recorded durably (line overwritten with `#`, counter moved), also
/// across a restart that missed it; time-based doors take the current window only.
#[test]
fn one_time_counter_and_time_sequences() {
    let pair = Pair::new("once");
    let dir = std::env::temp_dir().join(format!("sw-once-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let otp = dir.join("ssh.otp");
    let lines = ["12001,12002:udp,12003", "13001:udp 13002 13003:udp"];
    std::fs::write(
        &otp,
        format!("# handed out 2026-11-21\n{}\n{}\n", lines[0], lines[1]),
    )
    .unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    let mut cfg = config_on(
        &pair,
        &format!(
            "[[knock]]\nname = \"otp\"\none_time_sequences = \"{}\"\nprotected = [\"tcp/22\"]\n\n\
             [[knock]]\nname = \"ctr\"\ncounter_secret = \"{s}\"\nprotected = [\"tcp/23\"]\n\n\
             [[knock]]\nname = \"totp\"\ntime_secret = \"{s}\"\ntime_period = \"1h\"\nderived_proto = \"tcp\"\nprotected = [\"tcp/24\"]\n",
            otp.display(),
            s = secret.display()
        ),
    );
    cfg.daemon.state_dir = dir.join("state");
    let mut k = Kernel::new("once", &cfg);
    let (v4, v6) = (IpAddr::V4(pair.client_v4), IpAddr::V6(pair.client_v6));
    let (sv4, sv6) = (IpAddr::V4(pair.server_v4), IpAddr::V6(pair.server_v6));
    let knock = |to: IpAddr, seq: &[Step]| knock_from(&pair, to, seq);

    // Resolve the IPv6 neighbour first (the kernel may drop what it queued for an
    // unresolved neighbour once the knocking socket is closed).
    knock(sv6, &steps("9:udp"));
    std::thread::sleep(Duration::from_millis(200));

    // The first line opens for v4; the same line from v6 right after is refused in the
    // kernel, before user space has seen anything.
    knock(sv4, &steps(lines[0]));
    assert!(granted(&k, v4, 22), "the one-time sequence opened");
    knock(sv6, &steps(lines[0]));
    assert!(!granted(&k, v6, 22), "a used sequence does not open again");
    assert_eq!(
        k.counter("once_refused"),
        1,
        "{:?}",
        k.eng.xfsm_counters().unwrap()
    );
    // User space records the use: the line is overwritten with '#' and leaves the tables.
    assert!(
        k.eng.refresh_sequences(&cfg.xfsm_input()).unwrap(),
        "a recompile was due"
    );
    let text = std::fs::read_to_string(&otp).unwrap();
    assert!(text.contains("\n#2001,12002:udp,12003\n"), "{text}");
    knock(sv6, &steps(lines[0]));
    assert!(!granted(&k, v6, 22));
    assert_eq!(
        k.counter("once_refused"),
        1,
        "the used sequence is gone from the tables"
    );

    // The second line is used, and the daemon "crashes" before recording it: the next start
    // finds its key issued and gone, and marks the line.
    knock(sv6, &steps("13001:udp,13002,13003:udp"));
    assert!(granted(&k, v6, 22), "the second one-time sequence opened");
    assert!(!std::fs::read_to_string(&otp).unwrap().contains("#3001"));
    {
        let mut restarted =
            statewall::engine::Engine::open(&k.pins, &cfg.map_sizes()).expect("engine");
        statewall::daemon::apply(&mut restarted, &cfg).expect("apply");
        assert!(
            restarted.adopted,
            "the restart adopted the running programs"
        );
    }
    let text = std::fs::read_to_string(&otp).unwrap();
    assert!(text.contains("\n#3001:udp 13002 13003:udp\n"), "{text}");
    // Every line used: the door no longer opens by knocking (the API still opens it).
    k.eng.apply_xfsm(&cfg.xfsm_input()).unwrap();
    let otp_door = k.eng.xfsm_compiled().unwrap().state_names[0].len();
    assert_eq!(otp_door, 2, "only DEFAULT and OPEN are left");

    // Counter-based: counters 0, 1, 2 are in force; using 1 moves past it.
    let sec = knockclient::read_secret(&secret).unwrap();
    let ctr = |c| knockclient::derive(&sec, c, 4, 17);
    knock(sv4, &ctr(1));
    assert!(granted(&k, v4, 23), "counter 1 opened");
    assert!(k.eng.refresh_sequences(&cfg.xfsm_input()).unwrap());
    let next = std::fs::read_to_string(cfg.daemon.state_dir.join("knock-counter-ctr")).unwrap();
    assert_eq!(next.trim(), "2");
    knock(sv6, &ctr(1));
    knock(sv6, &ctr(0));
    assert!(
        !granted(&k, v6, 23),
        "used and skipped counters do not open"
    );
    knock(sv6, &ctr(4));
    assert!(granted(&k, v6, 23), "counter 4 is within the window 2..5");
    assert!(k.eng.refresh_sequences(&cfg.xfsm_input()).unwrap());
    let next = std::fs::read_to_string(cfg.daemon.state_dir.join("knock-counter-ctr")).unwrap();
    assert_eq!(next.trim(), "5");

    // Time-based: the current hour's sequence opens, one three hours ahead does not.
    let now = statewall::engine::clock::realtime_ns() / 1_000_000_000;
    let c = knockclient::time_counter(now, 3600);
    knock(sv6, &knockclient::derive(&sec, c + 3, 4, 6));
    assert!(!granted(&k, v6, 24), "a far window does not open");
    knock(sv4, &knockclient::derive(&sec, c, 4, 6));
    assert!(granted(&k, v4, 24), "the current window opens");
    assert!(
        !k.eng.refresh_sequences(&cfg.xfsm_input()).unwrap(),
        "nothing used, same window"
    );
    drop(k);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A knock port answers exactly like a random closed port: TCP with a reset, UDP with
/// ICMP port unreachable (both seen by the client as "connection refused"); so does the
/// protected port.
#[test]
fn knock_ports_look_like_closed_ports() {
    let pair = Pair::new("look");
    let cfg = config_on(
        &pair,
        "[[knock]]\nname = \"ssh\"\nsequence = \"7000,8000:udp,9000\"\nprotected = [\"tcp/22\"]\n",
    );
    let _k = Kernel::new("look", &cfg);
    let sv = pair.server_v4;
    let tcp = |port: u16| -> ErrorKind {
        match pair.client.run(|| {
            TcpStream::connect_timeout(&SocketAddr::from((sv, port)), Duration::from_millis(500))
        }) {
            Ok(_) => ErrorKind::Other,
            Err(e) => e.kind(),
        }
    };
    let udp = |port: u16| -> ErrorKind {
        pair.client.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect((sv, port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s.send(b"x").unwrap();
            let mut b = [0u8; 8];
            match s.recv(&mut b) {
                Ok(_) => ErrorKind::Other,
                Err(e) => e.kind(),
            }
        })
    };
    for (knock, closed) in [(7000, 7777), (9000, 40123)] {
        let (a, b) = (tcp(knock), tcp(closed));
        assert_eq!(a, b, "tcp/{knock} answers differently from tcp/{closed}");
        assert_eq!(a, ErrorKind::ConnectionRefused);
    }
    let (a, b) = (udp(8000), udp(8888));
    assert_eq!(a, b, "udp/8000 answers differently from udp/8888");
    assert_eq!(a, ErrorKind::ConnectionRefused);
    // The protected port too answers as a closed port ([gate] reject = "closed").
    assert_eq!(tcp(22), ErrorKind::ConnectionRefused);
}

/// The daemon with a door: `statewall knock` from the client opens it, the start command
/// runs with the source address, the door shows in the API, events stream, the window
/// ends and the stop command runs; manual open and close from the CLI; metrics.
#[test]
fn daemon_runs_doors_end_to_end() {
    use common::{cli, Daemon, Paths};
    let p = Paths::new("door");
    let pair = Pair::new("door");
    let marks = p.scratch.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // The commands run as nobody: it must be able to write the marks.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = format!(
        "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[[knock]]\nname = \"ssh\"\nsequence = \"7000,8000:udp,9000\"\nprotected = [\"tcp/22\"]\nopen_for = \"1s\"\nrun_as = \"nobody\"\nstart_command = [\"/usr/bin/touch\", \"{m}/opened-%IP%\"]\nstop_command = [\"/usr/bin/touch\", \"{m}/closed-%IP%\"]\n",
        pair.server_if,
        pair.server.name,
        m = marks.display()
    );
    std::fs::write(&p.config, conf).unwrap();
    let d = Daemon::start(&p, &[]);
    // Follow the event stream in the background.
    let events = common::follow_events(&p.socket, "/api/v1/xfsm/events");
    std::thread::sleep(Duration::from_millis(200));
    let client = pair.client_v4.to_string();
    let out = pair.client.exec(&[
        common::bin(),
        "knock",
        &pair.server_v4.to_string(),
        "7000",
        "8000:udp",
        "9000",
    ]);
    assert!(out.status.success(), "statewall knock: {out:?}");
    let opened = marks.join(format!("opened-{client}"));
    let closed = marks.join(format!("closed-{client}"));
    eventually("start command ran", || opened.exists());
    assert_eq!(
        std::fs::metadata(&opened).unwrap().uid(),
        65534,
        "the start command ran as nobody (run_as)"
    );
    let doors = d.get("/api/v1/doors");
    assert_eq!(doors[0]["name"], "ssh");
    // The window is 1 s: the sweeper closes the door and runs the stop command.
    eventually("stop command ran", || closed.exists());
    eventually("events streamed", || {
        let e = events.lock().unwrap();
        let kinds: Vec<String> = e.iter().map(|j| j["kind"].to_string()).collect();
        ["\"transition\"", "\"opened\"", "\"window_end\""]
            .iter()
            .all(|k| kinds.iter().any(|x| x == k))
    });
    // Manual open and close.
    std::fs::remove_file(&opened).unwrap();
    let (code, _, err) = cli(&p, &["door", "open", "ssh", &client, "--for", "60"]);
    assert_eq!(code, 0, "{err}");
    eventually("start command ran again", || opened.exists());
    let v = d.get("/api/v1/doors");
    assert_eq!(v[0]["open"][0]["source"], client.as_str());
    std::fs::remove_file(&closed).unwrap();
    let (code, _, err) = cli(&p, &["door", "close", "ssh", &client]);
    assert_eq!(code, 0, "{err}");
    eventually("stop command ran again", || closed.exists());
    assert!(d.get("/api/v1/doors")[0]["open"]
        .as_array()
        .unwrap()
        .is_empty());
    let (code, _, err) = cli(&p, &["door", "open", "nope", &client]);
    assert_ne!(code, 0);
    assert!(err.contains("no door"), "{err}");
    let x = d.get("/api/v1/xfsm");
    assert!(x["counters"]["transitions"].as_u64().unwrap() >= 3);
    drop(d);
}

/// `statewall import knockd`: a door that cannot be converted is named on stderr and left
/// out, the rest converted (exit 0); with `--strict` the exit status says so.
#[test]
fn import_skips_a_door_it_cannot_read_unless_strict() {
    let p = common::Paths::new("kdskip");
    let file = p.scratch.join("knockd.conf");
    std::fs::write(
        &file,
        "[options]\n  Interface = eth1\n[script]\n  sequence = 7000,8000\n  command = /opt/open-door %IP%\n[ssh]\n  sequence = 7100,8100\n  command = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = statewall(&["import", "knockd", f]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("skipped: ") && err.contains("door [script]: cannot tell which ports"),
        "{err}"
    );
    let cfg = statewall::config::Config::parse(&out, "imported").unwrap();
    assert_eq!(cfg.knocks.len(), 1);
    assert_eq!(cfg.knocks[0].name, "ssh");
    let (code, out_strict, err) = statewall(&["import", "knockd", "--strict", f]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--strict"), "{err}");
    assert_eq!(out_strict, out, "the same conversion is printed");
}

/// A knock in progress survives a restart onto an activity filter whose buckets another
/// release's hash chose (the filter is pinned, so an upgrade keeps it): writing the stage
/// marks every state entry's bucket again. A filter set to zero stands for those buckets,
/// which are elsewhere; without the marking, the second knock finds its source's bucket
/// empty, does not look its state up, and the sequence starts over.
#[test]
fn a_knock_in_progress_survives_a_restart_onto_other_buckets() {
    use aya::maps::{Array, Map, MapData};
    use statewall_common::xfsm::{ACTIVE_BUCKETS, MAP_ACTIVE};
    let pair = Pair::new("kbuck");
    let dir = std::env::temp_dir().join(format!("sw-kbuck-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = config_on(
        &pair,
        "[[knock]]\nname = \"ssh\"\nsequence = \"7000,8000,9000\"\nprotected = [\"tcp/22\"]\n",
    );
    cfg.daemon.state_dir = dir.join("state");
    let k = Kernel::new("kbuck", &cfg);
    let (v4, sv4) = (IpAddr::V4(pair.client_v4), IpAddr::V4(pair.server_v4));
    knock_from(&pair, sv4, &steps("7000"));
    assert_eq!(
        k.eng.xfsm_states().unwrap().len(),
        1,
        "the first step made a state"
    );
    let zero_filter = || {
        let md = MapData::from_pin(k.pins.map(MAP_ACTIVE)).unwrap();
        let mut a: Array<MapData, u64> = Array::try_from(Map::Array(md)).unwrap();
        for b in 0..ACTIVE_BUCKETS {
            a.set(b, 0, 0).unwrap();
        }
    };
    zero_filter();
    {
        use statewall::xfsm::kernel::Installed;
        let mut restarted =
            statewall::engine::Engine::open(&k.pins, &cfg.map_sizes()).expect("engine");
        assert!(
            restarted.adopted,
            "the restart adopted the running programs"
        );
        // The doors last written, as the daemon reads them back from its state directory:
        // states of doors that did not change are kept.
        restarted.stage::<Installed>().door_sigs =
            k.eng.stage_ref::<Installed>().unwrap().door_sigs.clone();
        statewall::daemon::apply(&mut restarted, &cfg).expect("apply");
        assert_eq!(
            restarted.xfsm_states().unwrap().len(),
            1,
            "the state was kept"
        );
    }
    knock_from(&pair, sv4, &steps("8000,9000"));
    assert!(
        granted(&k, v4, 22),
        "the sequence went on after the restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
