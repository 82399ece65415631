//! SPA: packets made by Debian's real `fwknop` client (`tests/data/fwknop/*.pkt`, saved
//! with `--save-packet --test` and the keys in `keys.txt`) decoded and verified, and what
//! each kind of tampering gets; then end to end through the daemon between namespaces the
//! tests create: the real `fwknop` client opens SSH-like access and nothing else, replays
//! (also after a restart), stale packets and forged HMACs are refused, an established
//! connection outlives its grant, a flood of garbage from 1000+ sources does not keep a
//! legitimate packet out, and statewall's own clients (pkd and fwknop) work over IPv6.

mod common;

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{bin, eventually, pkd_knock, raw_socket, send_raw, spa_verdict, Daemon, Paths};
use statewall_harness::{netns::Pair, packet::Packet};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use statewall::spa::{fwknop_check, FwknopStanza, Reject};

const TS: u64 = 1795259832;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/fwknop/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn key(name: &str) -> Vec<u8> {
    let text = String::from_utf8(data("keys.txt")).unwrap();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap();
    STANDARD
        .decode(line.split_whitespace().nth(1).unwrap())
        .unwrap()
}

fn stanza() -> FwknopStanza {
    FwknopStanza {
        sources: vec![("0.0.0.0".parse().unwrap(), 0)],
        ..FwknopStanza::any_source("s", key("KEY_BASE64"), key("HMAC_KEY_BASE64"))
    }
}

fn src() -> IpAddr {
    "10.1.0.2".parse().unwrap()
}

#[test]
fn real_client_packets_verify() {
    let s = [stanza()];
    let r = fwknop_check(&data("access.pkt"), src(), TS, &s).unwrap();
    assert_eq!(r.user, "root");
    assert_eq!(r.msg_type, 1);
    assert_eq!(r.ports, vec![(6, 22)]);
    assert_eq!(r.seconds, 30);
    assert_eq!(r.addr, src());
    let r = fwknop_check(&data("timeout.pkt"), src(), TS + 100, &s).unwrap();
    assert_eq!(r.msg_type, 3);
    assert_eq!(r.ports, vec![(6, 22), (17, 9922)]);
    assert_eq!(r.seconds, 45, "the client's timeout");
    let mut capped = stanza();
    capped.max_timeout = 20;
    let r = fwknop_check(&data("timeout.pkt"), src(), TS, &[capped]).unwrap();
    assert_eq!(r.seconds, 20, "MAX_FW_TIMEOUT caps it");
    // `-s`: 0.0.0.0 means the packet's source.
    let r = fwknop_check(&data("source.pkt"), "10.9.9.9".parse().unwrap(), TS, &s).unwrap();
    assert_eq!(r.addr, "10.9.9.9".parse::<IpAddr>().unwrap());
    let mut strict = stanza();
    strict.require_source_address = true;
    assert_eq!(
        fwknop_check(&data("source.pkt"), src(), TS, &[strict]).unwrap_err(),
        Reject::NotAllowed
    );
    // SHA-512 HMAC needs the stanza to say so.
    assert_eq!(
        fwknop_check(&data("sha512.pkt"), src(), TS, &s).unwrap_err(),
        Reject::BadDigest
    );
    let mut s512 = stanza();
    s512.hmac_bits = 512;
    fwknop_check(&data("sha512.pkt"), src(), TS, &[s512]).unwrap();
}

#[test]
fn tampering_and_policy_are_refused() {
    let s = [stanza()];
    let good = data("access.pkt");
    // Stale and future timestamps.
    assert_eq!(
        fwknop_check(&good, src(), TS + 121, &s).unwrap_err(),
        Reject::Stale
    );
    assert_eq!(
        fwknop_check(&good, src(), TS - 121, &s).unwrap_err(),
        Reject::Stale
    );
    // Every single-character change in the body or the HMAC is caught by the HMAC.
    let text = String::from_utf8(good.clone()).unwrap();
    let text = text.trim_end();
    for i in 0..text.len() {
        let mut b = text.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let e = fwknop_check(&b, src(), TS, &s).unwrap_err();
        assert!(
            e == Reject::BadDigest || e == Reject::Malformed,
            "change at {i}: {e:?}"
        );
    }
    // A wrong HMAC key, a wrong encryption key.
    let mut wrong = stanza();
    wrong.hmac_key[0] ^= 1;
    assert_eq!(
        fwknop_check(&good, src(), TS, &[wrong]).unwrap_err(),
        Reject::BadDigest
    );
    let mut wrong = stanza();
    wrong.key[0] ^= 1;
    assert_eq!(
        fwknop_check(&good, src(), TS, &[wrong]).unwrap_err(),
        Reject::BadDigest
    );
    // Ports outside OPEN_PORTS, inside RESTRICT_PORTS.
    let mut only = stanza();
    only.open_ports = vec![(6, 2222)];
    assert_eq!(
        fwknop_check(&good, src(), TS, &[only]).unwrap_err(),
        Reject::NotAllowed
    );
    let mut restrict = stanza();
    restrict.restrict_ports = vec![(6, 22)];
    assert_eq!(
        fwknop_check(&good, src(), TS, &[restrict]).unwrap_err(),
        Reject::NotAllowed
    );
    // The source must match a stanza's SOURCE, and the message's address the source.
    let mut net = stanza();
    net.sources = vec![("192.168.0.0".parse().unwrap(), 16)];
    assert_eq!(
        fwknop_check(&good, src(), TS, &[net]).unwrap_err(),
        Reject::NoMatch
    );
    assert_eq!(
        fwknop_check(&good, "10.1.0.3".parse().unwrap(), TS, &s).unwrap_err(),
        Reject::NotAllowed
    );
    // Username.
    let mut user = stanza();
    user.require_username = Some("alice".into());
    assert_eq!(
        fwknop_check(&good, src(), TS, &[user]).unwrap_err(),
        Reject::NotAllowed
    );
    // Command messages: refused unless enabled.
    assert_eq!(
        fwknop_check(&data("command.pkt"), src(), TS, &s).unwrap_err(),
        Reject::NotAllowed
    );
    let mut cmd = stanza();
    cmd.enable_cmd = true;
    let r = fwknop_check(&data("command.pkt"), src(), TS, &[cmd]).unwrap();
    assert_eq!(r.msg_type, 0);
    assert!(r.ports.is_empty());
    // The encrypted prefix left in, short and long packets, non-base64.
    let mut pre = b"U2FsdGVkX1".to_vec();
    pre.extend_from_slice(&good);
    assert_eq!(
        fwknop_check(&pre, src(), TS, &s).unwrap_err(),
        Reject::Malformed
    );
    assert_eq!(
        fwknop_check(&good[..139], src(), TS, &s).unwrap_err(),
        Reject::Malformed
    );
    assert_eq!(
        fwknop_check(&[b'A'; 1501], src(), TS, &s).unwrap_err(),
        Reject::Malformed
    );
    let mut bad = good.clone();
    bad[20] = b'*';
    assert_eq!(
        fwknop_check(&bad, src(), TS, &s).unwrap_err(),
        Reject::Malformed
    );
}

const K: &str = "Toe6r3nv+JnMD6CE9bdcXl9qrFuJ6PB8DXcY/fNm+Uw=";
const H: &str =
    "Pb3qth89EgpqbYUgIjXvKnd4ENXC0bBBnohof500GLEJK7zwxWpFrtwVx9Y3otV8zPi/rIVigsuRPF2bwzemZg==";

/// A daemon guarding `pair`'s server side with one fwknop stanza (tcp/22, grants of
/// `timeout` seconds), one pkd action (tcp/2200) and a protected tcp/2222 nobody opens.
fn spa_daemon(p: &Paths, pair: &Pair, timeout: u64) -> Daemon {
    let conf = format!(
        r#"[[interface]]
name = "{ifname}"
netns = "{ns}"

[gate]
protected = ["tcp/2222"]

[spa]
rate_interval = "10ms"
rate_burst = 5

[[spa.fwknop]]
source = ["ANY"]
open_ports = ["tcp/22"]
key_base64 = "{K}"
hmac_key_base64 = "{H}"
fw_access_timeout = {timeout}
start_command = ["/usr/bin/touch", "{marks}/open-%IP%"]
stop_command = ["/usr/bin/touch", "{marks}/closed-%IP%"]

[[spa.pkd]]
name = "pkd22"
port = 2200
tag = "SSHK"
key = "test"
window = {timeout}
"#,
        ifname = pair.server_if,
        ns = pair.server.name,
        marks = marks(p).display(),
    );
    std::fs::write(&p.config, conf).unwrap();
    Daemon::start(p, &[])
}

/// Where the fwknop stanza's start and stop commands leave their marks.
fn marks(p: &Paths) -> std::path::PathBuf {
    let m = p.scratch.join("marks");
    std::fs::create_dir_all(&m).unwrap();
    m
}

fn connects(pair: &Pair, to: SocketAddr) -> bool {
    pair.client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(400)))
        .is_ok()
}

/// Runs the real fwknop client for tcp/22 with this suite's keys.
fn fwknop(pair: &Pair, p: &Paths, extra: &[&str]) {
    common::fwknop(pair, p, "tcp/22", (K, H), extra)
}

/// Sends a saved packet again from the client namespace.
fn resend(pair: &Pair, pkt: &[u8]) {
    let to = SocketAddr::from((pair.server_v4, 62201));
    let pkt = pkt.to_vec();
    pair.client
        .run(move || statewall::spa::send_udp(to, &pkt))
        .unwrap();
}

#[test]
fn fwknop_client_end_to_end() {
    let p = Paths::new("spa");
    let pair = Pair::new("spa");
    let sv = pair.server_v4;
    let _l22 = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let _l2222 = pair.server.run(|| TcpListener::bind((sv, 2222))).unwrap();
    let ssh = SocketAddr::from((sv, 22));
    let other = SocketAddr::from((sv, 2222));
    let d = spa_daemon(&p, &pair, 2);
    assert!(!connects(&pair, ssh), "tcp/22 is shut before SPA");
    // The real client opens tcp/22 and nothing else.
    let saved = p.scratch.join("spa.pkt");
    fwknop(&pair, &p, &["--save-packet", saved.to_str().unwrap()]);
    eventually("the packet was accepted", || {
        spa_verdict(&d, "accepted") == 1
    });
    assert!(connects(&pair, ssh), "the fwknop client opened tcp/22");
    assert!(!connects(&pair, other), "and nothing else");
    let cv = pair.client_v4;
    eventually("the start command ran", || {
        marks(&p).join(format!("open-{cv}")).exists()
    });
    // A connection opened now outlives the 2 s grant; a new one after it is refused.
    let mut conn = pair
        .client
        .run(|| TcpStream::connect_timeout(&ssh, Duration::from_millis(400)))
        .unwrap();
    // (Earlier probes sit in the accept queue too: take this connection's.)
    let me = conn.local_addr().unwrap();
    let mut srv_side = loop {
        let (c, peer) = _l22.accept().unwrap();
        if peer == me {
            break c;
        }
    };
    std::thread::sleep(Duration::from_millis(2300));
    assert!(!connects(&pair, ssh), "the grant ended");
    eventually("the stop command ran", || {
        marks(&p).join(format!("closed-{cv}")).exists()
    });
    use std::io::{Read, Write};
    conn.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    srv_side
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    srv_side.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here", "the established connection survived");
    // The same packet again: a replay, even now that its grant is over.
    let pkt = std::fs::read(&saved).unwrap();
    let pkt = String::from_utf8(pkt).unwrap();
    let pkt = pkt.trim_end().as_bytes().to_vec();
    resend(&pair, &pkt);
    eventually("replay refused", || spa_verdict(&d, "replay") == 1);
    assert!(!connects(&pair, ssh));
    // After a restart too (the replay cache is on disk).
    assert_eq!(d.stop(), 0);
    let d = spa_daemon(&p, &pair, 2);
    resend(&pair, &pkt);
    eventually("replay refused after a restart", || {
        spa_verdict(&d, "replay") == 1
    });
    assert!(!connects(&pair, ssh));
    // A stale packet (the client's clock 5 minutes behind).
    fwknop(&pair, &p, &["--time-offset-minus", "5m"]);
    eventually("stale refused", || spa_verdict(&d, "stale") == 1);
    assert!(!connects(&pair, ssh));
    // A forged HMAC: right encryption key, wrong HMAC key (statewall's client).
    let forged = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 64]);
    let out = pair.client.exec(&[
        bin(),
        "spa",
        "--fwknop",
        &sv.to_string(),
        "-A",
        "tcp/22",
        "--key-base64-rijndael",
        K,
        "--key-base64-hmac",
        &forged,
    ]);
    assert!(out.status.success(), "{out:?}");
    eventually("forged refused", || spa_verdict(&d, "bad_digest") == 1);
    assert!(!connects(&pair, ssh));
    // And a fresh packet from the real client still works.
    fwknop(&pair, &p, &[]);
    eventually("accepted again", || spa_verdict(&d, "accepted") == 1);
    assert!(connects(&pair, ssh));
    let m = d.get("/api/v1/status");
    assert!(m.is_object());
    d.stop();
}

/// statewall's own clients: pkd and fwknop, over IPv4 and IPv6.
#[test]
fn statewall_clients_over_v4_and_v6() {
    let p = Paths::new("spa6");
    let pair = Pair::new("spa6");
    let d = spa_daemon(&p, &pair, 30);
    for server in [IpAddr::V6(pair.server_v6), IpAddr::V4(pair.server_v4)] {
        let _l22 = pair.server.run(|| TcpListener::bind((server, 22))).unwrap();
        let _l2200 = pair
            .server
            .run(|| TcpListener::bind((server, 2200)))
            .unwrap();
        let to22 = SocketAddr::new(server, 22);
        let to2200 = SocketAddr::new(server, 2200);
        assert!(
            !connects(&pair, to22) && !connects(&pair, to2200),
            "{server}"
        );
        let before = spa_verdict(&d, "accepted");
        pkd_knock(&pair, &server.to_string());
        eventually("pkd accepted", || spa_verdict(&d, "accepted") == before + 1);
        assert!(connects(&pair, to2200), "pkd opened tcp/2200 over {server}");
        assert!(!connects(&pair, to22));
        let out = pair.client.exec(&[
            bin(),
            "spa",
            "--fwknop",
            &server.to_string(),
            "-A",
            "tcp/22",
            "--key-base64-rijndael",
            K,
            "--key-base64-hmac",
            H,
        ]);
        assert!(out.status.success(), "{out:?}");
        eventually("fwknop accepted", || {
            spa_verdict(&d, "accepted") == before + 2
        });
        assert!(connects(&pair, to22), "fwknop opened tcp/22 over {server}");
    }
    // A pkd knock with a wrong key.
    let out = pair.client.exec(&[
        bin(),
        "spa",
        &pair.server_v4.to_string(),
        "--tag",
        "SSHK",
        "--key",
        "wrong",
        "--port",
        "999",
    ]);
    assert!(out.status.success());
    eventually("bad pkd digest", || spa_verdict(&d, "bad_digest") == 1);
    d.stop();
}

/// Garbage to the fwknop port from 2000 spoofed sources while a legitimate packet is
/// sent from the client's real address: the legitimate one is still granted.
#[test]
fn flood_from_many_sources_does_not_keep_a_legit_packet_out() {
    let p = Paths::new("spaf");
    let pair = Pair::new("spaf");
    let sv = pair.server_v4;
    let _l22 = pair.server.run(|| TcpListener::bind((sv, 22))).unwrap();
    let d = spa_daemon(&p, &pair, 30);
    let ifname = pair.client_if.clone();
    let svip = IpAddr::V4(sv);
    let flood = std::thread::spawn({
        let client = pair.client.name.clone();
        move || {
            statewall::engine::netns::in_netns(Some(&client), move || {
                let sock = raw_socket(&ifname);
                let mut n = 0u32;
                for f in common::spa_garbage(svip, 3) {
                    send_raw(&sock, &f);
                    n += 1;
                }
                n
            })
            .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    fwknop(&pair, &p, &[]);
    let sent = flood.join().unwrap();
    assert_eq!(sent, 6000);
    eventually("the legit packet was accepted", || {
        spa_verdict(&d, "accepted") == 1
    });
    assert!(connects(&pair, SocketAddr::from((sv, 22))));
    let spa = d.get("/api/v1/spa");
    let cand = spa["kernel"]["candidates"].as_u64().unwrap();
    assert!(cand >= 2000, "the flood reached the stage: {spa}");
    assert!(
        spa_verdict(&d, "malformed") + spa_verdict(&d, "bad_digest") >= 1000,
        "the garbage was verified and refused: {spa}"
    );
    d.stop();
}

/// The kernel's candidate filter and per-source limiter (BPF_PROG_TEST_RUN of the tc gate
/// program and the XDP ingress program, alternately) against the reference in
/// `statewall_common::spa`, on packets drawn from the config: pkd tags at and around 56
/// bytes, the fwknop port, other ports, a few sources, time moving on. Verdicts and every
/// queued record must match; every outcome must occur.
#[test]
fn kernel_filter_equals_reference() {
    use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use statewall_common::{
        parse::parse_packet,
        spa::{
            gcra,
            packet::{classify, rate_key, Class},
            SpaConf, SpaHeader, KIND_FWKNOP, KIND_PKD, MAP_SPA_CONF, MAP_SPA_EVENTS, MAP_SPA_TAGS,
        },
        TCX_NEXT,
    };
    use statewall_harness::testrun::TestBed;
    let mut bed = TestBed::new();
    let conf = SpaConf {
        pkd: 1,
        _pad: 0,
        fwknop_port: 62201,
        _pad2: 0,
        interval_ns: 100_000_000,
        tau_ns: 200_000_000,
    };
    let tags = [*b"SSHK", *b"WEB1"];
    {
        let mut a: Array<&mut MapData, SpaConf> = bed.map(MAP_SPA_CONF).try_into().unwrap();
        a.set(0, conf, 0).unwrap();
        let mut h: BpfHashMap<&mut MapData, u32, u8> = bed.map(MAP_SPA_TAGS).try_into().unwrap();
        for t in tags {
            h.insert(u32::from_ne_bytes(t), 1, 0).unwrap();
        }
    }
    let mut rng = StdRng::seed_from_u64(0x5ba);
    let sources: Vec<IpAddr> = vec![
        "10.5.0.1".parse().unwrap(),
        "10.5.0.2".parse().unwrap(),
        "fd00:5::1".parse().unwrap(),
    ];
    let mut tat: std::collections::HashMap<_, u64> = Default::default();
    let mut now = 1_000_000_000_000u64;
    let mut want_records = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut damage = std::collections::BTreeSet::new();
    let mut damaged = 0u64;
    let mut got = Vec::new();
    // The records the kernel queued: (kind, source, port, payload).
    let drain = |bed: &mut TestBed, got: &mut Vec<_>| {
        let mut rb: RingBuf<&mut MapData> = bed.map(MAP_SPA_EVENTS).try_into().unwrap();
        while let Some(item) = rb.next() {
            // SAFETY: every record starts with a SpaHeader (the kernel program writes it).
            let h = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const SpaHeader) };
            let n = std::mem::size_of::<SpaHeader>();
            got.push((
                h.kind,
                h.saddr,
                h.dport,
                item[n..n + h.len as usize].to_vec(),
            ));
        }
    };
    let frames = common::soak_cases(3000);
    for i in 0..frames {
        now += rng.random_range(0..60) * 1_000_000;
        let src = sources[rng.random_range(0..sources.len())];
        let dst: IpAddr = if src.is_ipv4() {
            "10.5.0.100".parse().unwrap()
        } else {
            "fd00:5::100".parse().unwrap()
        };
        let (dport, mut body) = match rng.random_range(0..4) {
            0 => (62201, vec![b'A'; rng.random_range(0..200)]),
            1 | 2 => {
                let mut b = vec![0u8; [55, 56, 56, 56, 57][rng.random_range(0..5)]];
                rng.fill(&mut b[..]);
                (rng.random_range(1..65535), b)
            }
            _ => (rng.random_range(1..65535), vec![1u8; 56]),
        };
        if body.len() >= 4 && rng.random_bool(0.7) {
            body[..4].copy_from_slice(&tags[rng.random_range(0..2)]);
        }
        // A first fragment (more to come) of a tagged datagram: 56 bytes of a longer one.
        let first_fragment = rng.random_bool(0.05);
        let frame = if rng.random_bool(0.1) {
            Packet::tcp(src, dst, 40000, dport, 0x02).build()
        } else if first_fragment {
            let mut b = vec![7u8; 56];
            b[..4].copy_from_slice(&tags[0]);
            Packet::udp(src, dst, 40000, dport)
                .payload(&b)
                .fragment(0, true)
                .build()
        } else {
            Packet::udp(src, dst, 40000, dport).payload(&body).build()
        };
        // Now and then damaged by the malformed-frame generator (a malformed frame is never
        // a candidate, in the kernel as in the reference; a later fragment has no ports).
        let (frame, bad) = if rng.random_bool(0.08) {
            let (kind, f) = statewall_harness::packet::malform(&frame, rng.random());
            damage.insert(kind);
            damaged += 1;
            let p = parse_packet(&f);
            let bad = p.status == statewall_common::parse::Status::Malformed as u8
                || p.flags & statewall_common::parse::FLAG_NONFIRST_FRAG != 0;
            if bad {
                seen.insert("malformed");
            }
            (f, bad)
        } else {
            (frame, false)
        };
        bed.freeze(now);
        let xdp = i % 2 == 1;
        let passed = if xdp {
            bed.run_xdp(statewall::engine::ebpf::PROG_XDP_INGRESS, &frame) == 2
        } else {
            bed.run_tc(statewall::engine::ebpf::PROG_GATE, &frame) == TCX_NEXT
        };
        // The reference.
        let p = parse_packet(&frame);
        let kind = match classify(&p, &conf) {
            Class::Other => None,
            Class::Fwknop => Some(KIND_FWKNOP),
            Class::MaybePkd => {
                let off = p.payload_off as usize;
                let tag: [u8; 4] = frame[off..off + 4].try_into().unwrap();
                tags.contains(&tag).then_some(KIND_PKD)
            }
        };
        let want_pass = kind.is_none();
        assert_eq!(passed, want_pass, "packet {i}: verdict");
        if first_fragment {
            assert!(passed, "packet {i}: a first fragment is a candidate");
            seen.insert("first fragment");
        }
        assert!(
            !bad || want_pass,
            "packet {i}: a malformed frame is a candidate"
        );
        let Some(kind) = kind else {
            seen.insert("not a candidate");
            continue;
        };
        let k = rate_key(&p);
        match gcra(tat.get(&k).copied().unwrap_or(0), now, &conf) {
            None => {
                seen.insert("rate limited");
                continue;
            }
            Some(t) => {
                tat.insert(k, t);
            }
        }
        let n = p.payload_len as usize;
        if n == 0 || n > 1500 {
            seen.insert("empty");
            continue;
        }
        seen.insert(if kind == KIND_PKD {
            "pkd queued"
        } else {
            "fwknop queued"
        });
        let off = p.payload_off as usize;
        want_records.push((kind, p.saddr, p.dport, frame[off..off + n].to_vec()));
        if i % 1000 == 999 {
            // (Soak runs queue more than the ring holds.)
            drain(&mut bed, &mut got);
        }
    }
    drain(&mut bed, &mut got);
    assert_eq!(got.len(), want_records.len(), "records queued");
    assert_eq!(got, want_records);
    for s in [
        "not a candidate",
        "rate limited",
        "pkd queued",
        "fwknop queued",
        "empty",
        "malformed",
        "first fragment",
    ] {
        assert!(seen.contains(s), "no '{s}' case: {seen:?}");
    }
    for k in statewall_harness::packet::MALFORM_KINDS {
        assert!(damage.contains(k), "no '{k}' frame: {damage:?}");
    }
    common::tally(
        "property: SPA filter frames, kernel = reference",
        frames as u64,
    );
    common::tally("property: malformed frames among them", damaged);
}

/// nf-pkd action files load from `actions_dir` (COMPAT.md's example), and bad input in
/// the config or a file is refused with where and what.
#[test]
fn action_files_and_config_errors() {
    use statewall::config::Config;
    let dir = std::env::temp_dir().join(format!("sw-actions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("10-ssh.json"),
        r#"[{"name": "port22", "port": 22, "protocol": "tcp", "tag": "SSHK", "key": "test", "window": 60, "skew": 10, "reject": "drop"},
            {"name": "web", "port": 443, "protocol": "any", "tag": "0x57454231", "key": "0x0102", "window": 5, "skew": -1}]"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not an action file").unwrap();
    let cfg = Config::parse(
        &format!("[spa]\nactions_dir = \"{}\"\n", dir.display()),
        "t.toml",
    )
    .unwrap();
    let s = cfg.spa.resolve().unwrap();
    assert_eq!(s.pkd.len(), 2);
    assert_eq!(s.pkd[1].tag, *b"WEB1");
    assert_eq!(&s.pkd[1].key[..3], &[1, 2, 0]);
    assert_eq!(s.pkd[1].protos, vec![6, 17]);
    assert_eq!(s.pkd[1].skew, None);
    let ports: Vec<String> = cfg
        .protected_ports()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(ports, ["tcp/22", "tcp/443", "udp/443"]);
    std::fs::write(
        dir.join("20-bad.json"),
        r#"[{"name": "x", "port": 22, "tag": "TOOLONG", "key": "k"}]"#,
    )
    .unwrap();
    let e = Config::parse(
        &format!("[spa]\nactions_dir = \"{}\"\n", dir.display()),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("20-bad.json action #1 (x) tag") && e.contains("at most 4"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    for (text, want) in [
        (
            "[[spa.pkd]]\nname = \"a\"\nport = 22\ntag = \"T\"\nkey = \"k\"\nreject = \"reject\"\n",
            "[[spa.pkd]] #1 (a) reject",
        ),
        (
            "[[spa.pkd]]\nname = \"a\"\nport = 22\ntag = \"T\"\nkey = \"k\"\nskew = -2\n",
            "[[spa.pkd]] #1 (a) skew",
        ),
        (
            "[[spa.fwknop]]\nsource = [\"ANY\"]\nkey = \"k\"\n",
            "[[spa.fwknop]] #1 hmac_key",
        ),
        (
            "[[spa.fwknop]]\nsource = [\"10.0.0.0/33\"]\nkey = \"k\"\nhmac_key = \"h\"\n",
            "[[spa.fwknop]] #1 source",
        ),
        (
            "[[spa.fwknop]]\nsource = [\"ANY\"]\nkey = \"k\"\nhmac_key = \"h\"\nopen_ports = [\"tcp/0\"]\n",
            "[[spa.fwknop]] #1 open_ports",
        ),
        (
            "[[spa.fwknop]]\nsource = [\"ANY\"]\nkey_base64 = \"***\"\nhmac_key = \"h\"\n",
            "[[spa.fwknop]] #1 key_base64",
        ),
        ("[spa]\nrate_burst = 0\n", "[spa] rate_burst"),
    ] {
        let e = Config::parse(text, "t.toml").unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

/// Interoperability the other way: Debian's real fwknopd (fwknop-server) accepts the
/// packets `statewall spa --fwknop` sends, and opens the port with its iptables rule.
#[test]
fn real_fwknopd_accepts_statewall_client() {
    let p = Paths::new("fwd");
    let pair = Pair::new("fwd");
    let sv = pair.server_v4;
    let _l = pair.server.run(|| TcpListener::bind((sv, 2222))).unwrap();
    let to = SocketAddr::from((sv, 2222));
    let sv_s = sv.to_string();
    let cv_s = pair.client_v4.to_string();
    // With 0.0.0.0 in the message (the packet's source) and with the client's address;
    // fwknopd starts afresh each time (it flushes its chain at start: the port is shut).
    for (i, allow) in [None, Some(cv_s.as_str())].into_iter().enumerate() {
        let d = statewall_harness::fwknopd::Fwknopd::start(
            &pair.server,
            &pair.server_if,
            &p.scratch.join(format!("fwknopd{i}")),
            2222,
            K,
            H,
        )
        .unwrap();
        assert!(!connects(&pair, to), "iptables drops tcp/2222 before SPA");
        let mut args = vec![
            bin(),
            "spa",
            "--fwknop",
            &sv_s,
            "-A",
            "tcp/2222",
            "--key-base64-rijndael",
            K,
            "--key-base64-hmac",
            H,
        ];
        if let Some(a) = allow {
            args.extend_from_slice(&["-a", a]);
        }
        let out = pair.client.exec(&args);
        assert!(out.status.success(), "{out:?}");
        eventually("fwknopd opened the port", || connects(&pair, to));
        assert!(d.log().contains("Added access rule"), "{}", d.log());
    }
}

/// An action's `reject = "reset"`: a SYN to the port without a grant gets a TCP reset (the
/// client sees "connection refused" at once, as from a closed port) even where `[gate]
/// reject = "drop"` leaves the other ports hanging; with a grant the connection opens.
#[test]
fn reset_style_refuses_like_a_closed_port() {
    use statewall::config::Config;
    use std::io::ErrorKind;
    let pair = Pair::new("rst");
    let mut cfg = Config::parse(
        "[gate]\nreject = \"drop\"\n\n[[spa.pkd]]\nname = \"r\"\nport = 2201\ntag = \"RST1\"\nkey = \"k\"\nreject = \"reset\"\n\n[[spa.pkd]]\nname = \"d\"\nport = 2202\ntag = \"DRP1\"\nkey = \"k\"\n",
        "t",
    )
    .unwrap();
    cfg.interfaces = vec![pair.server_interface()];
    let mut k = common::Kernel::new("rst", &cfg);
    for server in [IpAddr::V4(pair.server_v4), IpAddr::V6(pair.server_v6)] {
        let _a = pair
            .server
            .run(|| TcpListener::bind((server, 2201)))
            .unwrap();
        let _b = pair
            .server
            .run(|| TcpListener::bind((server, 2202)))
            .unwrap();
        let attempt = |port| {
            let to = SocketAddr::new(server, port);
            pair.client
                .run(|| TcpStream::connect_timeout(&to, Duration::from_millis(500)))
                .map(|_| ())
                .map_err(|e| e.kind())
        };
        assert_eq!(
            attempt(2201),
            Err(ErrorKind::ConnectionRefused),
            "{server}: reset"
        );
        assert_eq!(attempt(2202), Err(ErrorKind::TimedOut), "{server}: drop");
        let client = if server.is_ipv4() {
            IpAddr::V4(pair.client_v4)
        } else {
            IpAddr::V6(pair.client_v6)
        };
        k.eng
            .grant(statewall_common::maps::key_for(client, 6, 2201), 30, 1)
            .unwrap();
        assert_eq!(attempt(2201), Ok(()), "{server}: granted");
    }
    let resets = k
        .eng
        .gate_counters()
        .unwrap()
        .into_iter()
        .find(|(n, _)| *n == "reset")
        .unwrap()
        .1;
    assert!(resets >= 2, "{resets}");
}

/// nf-pkd action files are read from `actions_dir` at start and again on reload: a tag
/// added by a new file works after `POST /api/v1/reload` (the kernel learns the tag too),
/// knocked with nf-pkd-knock's flags (`--host`, `--port`).
#[test]
fn action_files_reload() {
    let p = Paths::new("spar");
    let pair = Pair::new("spar");
    let dir = p.scratch.join("actions.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.json"),
        r#"[{"name": "a", "port": 2300, "protocol": "tcp", "tag": "AAAA", "key": "ka"}]"#,
    )
    .unwrap();
    std::fs::write(
        &p.config,
        format!(
            "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[spa]\nactions_dir = \"{}\"\n",
            pair.server_if,
            pair.server.name,
            dir.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&p, &[]);
    let sv = pair.server_v4.to_string();
    let knock = |tag: &str, key: &str| {
        let out = pair.client.exec(&[
            bin(),
            "spa",
            "--host",
            &sv,
            "--tag",
            tag,
            "--key",
            key,
            "--port",
            "4444",
        ]);
        assert!(out.status.success(), "{out:?}");
    };
    knock("AAAA", "ka");
    eventually("tag AAAA accepted", || spa_verdict(&d, "accepted") == 1);
    knock("BBBB", "kb");
    std::thread::sleep(Duration::from_millis(300));
    let spa = d.get("/api/v1/spa");
    assert_eq!(
        spa["kernel"]["candidates"], 1,
        "an unknown tag is not even a candidate: {spa}"
    );
    std::fs::write(
        dir.join("b.json"),
        r#"[{"name": "b", "port": 2301, "protocol": "tcp", "tag": "BBBB", "key": "kb"}]"#,
    )
    .unwrap();
    let r = statewall::client::request_blocking(&d.socket, "POST", "/api/v1/reload", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.get("/api/v1/spa")["pkd"].as_array().unwrap().len(), 2);
    knock("BBBB", "kb");
    eventually("tag BBBB accepted after the reload", || {
        spa_verdict(&d, "accepted") == 2
    });
    d.stop();
}

/// A message from statewall's own encoder (valid keys) asking for `timeout` seconds.
fn asking(timeout: u128, ts: u64, keys: (&[u8], &[u8])) -> String {
    let m = statewall::spa::FwknopMessage {
        user: "root".into(),
        ts,
        allow: "0.0.0.0".parse().unwrap(),
        access: vec![(6, 22)],
        timeout: Some(timeout),
    };
    statewall::spa::fwknop_packet(&m, keys.0, keys.1, 256).unwrap()
}

/// Client timeouts: 0 takes the server's default, anything above the maximum (300 s by
/// default) is cut to it, and one that does not fit in 64 bits is a malformed message.
#[test]
fn client_timeouts_are_capped_and_checked() {
    let s = [stanza()];
    let (k, h) = (key("KEY_BASE64"), key("HMAC_KEY_BASE64"));
    let twenty_five_digits: u128 = 3_141_592_653_589_793_238_462_643;
    assert_eq!(twenty_five_digits.to_string().len(), 25);
    for (t, want) in [
        (0u128, Ok(30)),
        (45, Ok(45)),
        (1 << 32, Ok(300)),
        (1 << 63, Ok(300)),
        (u64::MAX as u128, Ok(300)),
        (twenty_five_digits, Err(Reject::Malformed)),
    ] {
        let pkt = asking(t, TS, (&k, &h));
        let got = fwknop_check(pkt.as_bytes(), src(), TS, &s).map(|r| r.seconds);
        assert_eq!(got, want, "timeout {t}");
    }
}

/// Through the daemon: huge timeouts neither stop SPA nor make a grant longer than the
/// maximum; the follower keeps answering afterwards.
#[test]
fn huge_client_timeouts_keep_spa_working() {
    let p = Paths::new("spatime");
    let pair = Pair::new("spatime");
    let d = spa_daemon(&p, &pair, 2);
    let keys = (STANDARD.decode(K).unwrap(), STANDARD.decode(H).unwrap());
    let now = statewall::gate::unix_now() as u64;
    for (i, t) in [1u128 << 63, u64::MAX as u128, 1 << 32]
        .into_iter()
        .enumerate()
    {
        resend(&pair, asking(t, now, (&keys.0, &keys.1)).as_bytes());
        eventually("accepted", || spa_verdict(&d, "accepted") == i as u64 + 1);
        let grants = d.get("/api/v1/gate/grants");
        let left: Vec<f64> = grants
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["seconds_left"].as_f64().unwrap())
            .collect();
        assert!(
            !left.is_empty() && left.iter().all(|s| *s <= 300.0),
            "timeout {t}: {grants}"
        );
    }
    let twenty_five = asking(3_141_592_653_589_793_238_462_643, now, (&keys.0, &keys.1));
    resend(&pair, twenty_five.as_bytes());
    eventually("malformed", || spa_verdict(&d, "malformed") == 1);
    // Still working.
    resend(&pair, asking(10, now, (&keys.0, &keys.1)).as_bytes());
    eventually("accepted after", || spa_verdict(&d, "accepted") == 4);
    assert_eq!(d.stop(), 0);
}
