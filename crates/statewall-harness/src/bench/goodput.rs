//! Goodput under attack: legitimate iperf3 traffic (capped at 1 Gbit/s) from the client
//! namespace to the server while a UDP flood from a spoofed prefix the bench owns
//! (198.18.0.0/15, in namespaces with no default route and no forwarding) hits the same
//! interface and matches the last of 1,000 DROP rules. For statewall in XDP, statewall on
//! tc and nftables (netdev ingress, the same rules), at increasing offered flood rates:
//! the goodput as a ratio to the same mode without a flood, and the flood's rate as its
//! drop rule counted it at the hook. The same points again with HTTP goodput (1 MiB
//! answers, a new connection each: [`super::http`]), uncapped.
//!
//! The flood comes from BPF_PROG_TEST_RUN's live frames on the client's end of the veth
//! pair: a program that returns `XDP_TX` sends every copy of the frame to the server's
//! end, far faster than a socket could. A veth end receives such frames only with NAPI
//! on: in the XDP row the server's end has statewall's XDP program, in the tc and
//! nftables rows it has GRO on (`ethtool -K ... gro on`), which also keeps the iperf3
//! goodput of those rows comparable. The receiving end does its work in the generator's
//! system call, so flat out the generator runs exactly as fast as the mode drops: the
//! flat-out row gives each mode's drop capacity. (With NAPI threaded on the receiving end
//! the generator does outpace it, but on a machine of 2 CPUs the NAPI thread then takes
//! in a small share of the flood at best, whatever drops it: that measured the
//! scheduler, not the drop path.)
//!
//! Where the kernel refuses live frames (`EPERM`), the flood comes from a packet socket on
//! the client's end instead (`FrameSocket`, past the qdisc), and every row says so: the
//! sender then pays for each frame's skb, and the flat-out row measures the socket as much
//! as the drop path.
//!
//! The veth pair has [`QUEUES`] queues each way. A veth end with NAPI (XDP, or GRO on)
//! takes frames through a ring per receive queue, the queue the frame was sent on; with
//! one queue, the flood and iperf3 share one ring of 256 frames, and in XDP (which turns
//! the peer's TSO off, so iperf3 sends a frame per MTU) iperf3 kept 0.91 of its goodput
//! at 1,000 kpps and 0.03 flat out, against 1.00 with two queues (a run of `statewall
//! bench --only goodput` each, 2026-12-06). A NIC has a queue per CPU.

/// Queues each way on the bench's veth pair (one per CPU of the machines it runs on).
const QUEUES: u32 = 2;

use std::{
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    bench::{
        http,
        nft::{nft, nft_counted, nft_hook, nft_script, spec},
        report::Row,
        rulesets::ruleset,
    },
    netns::Pair,
    packet::Packet,
    testrun::TestBed,
};
use statewall::{
    config::Config,
    engine::{self, ebpf, pins::Pins, Engine},
    firewall::{rules::Rule, ChainState, FwState, Instance, Port},
};
use statewall_common::firewall::ACT_DROP;

const IPERF_PORT: u16 = 5201;
const FLOOD_PORT: u16 = 9;
/// Offered flood rates, packets per second; 0: as fast as the generator goes.
pub const RATES: [u64; 4] = [100_000, 300_000, 1_000_000, 0];
/// Seconds of iperf3 per point.
const SECS: u32 = 2;

/// 999 random DROP rules that match neither the iperf3 traffic nor the flood, then the
/// flood's: UDP to port 9 from 198.18.0.0/15.
fn rules() -> Vec<Rule> {
    let mut r = ruleset(1000, 17);
    r.pop();
    r.push(Rule {
        src: Some(("198.18.0.0".parse().unwrap(), 15)),
        dst: None,
        proto: Some(17),
        sport: None,
        dport: Some((FLOOD_PORT, FLOOD_PORT)),
        tcpflags: None,
        ct: None,
        action: ACT_DROP,
    });
    r
}

/// The three ways of dropping the flood.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Xdp,
    Tc,
    Nft,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Xdp => "statewall XDP",
            Mode::Tc => "statewall tc",
            Mode::Nft => "nftables",
        }
    }
}

fn mac(pair: &Pair, server: bool) -> anyhow::Result<[u8; 6]> {
    let (ns, ifn) = if server {
        (&pair.server, &pair.server_if)
    } else {
        (&pair.client, &pair.client_if)
    };
    let text = ns.exec_ok(&["cat", &format!("/sys/class/net/{ifn}/address")]);
    let mut m = [0u8; 6];
    for (i, b) in text.trim().split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(b, 16).context("interface address")?;
    }
    Ok(m)
}

/// iperf3 goodput in Gbit/s, capped at 1 Gbit/s.
fn goodput(pair: &Pair) -> anyhow::Result<f64> {
    goodput_capped(pair, "1G")
}

/// iperf3 goodput in Gbit/s, capped at `cap` (iperf3's `-b`).
fn goodput_capped(pair: &Pair, cap: &str) -> anyhow::Result<f64> {
    let out = pair.client.exec(&[
        "iperf3",
        "-c",
        &pair.server_v4.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
        "-b",
        cap,
        "-t",
        &SECS.to_string(),
        "-J",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    if !out.status.success() {
        // A run starved of every segment fails: its goodput is nothing.
        if v["error"].is_string() {
            return Ok(0.0);
        }
        bail!("iperf3: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?
        / 1e9)
}

/// Set once the kernel refused live frames (`EPERM`, as 6.18.44-fc-v1300 does) and the
/// flood came from a `FrameSocket` instead: the rows say so.
static SOCKET_FLOOD: AtomicBool = AtomicBool::new(false);

/// A packet socket that sends whole Ethernet frames out of one interface of the calling
/// thread's namespace, past the qdisc: the flood's generator where live frames are
/// refused. It receives nothing (protocol 0). Slower than live frames: a copy of the
/// frame into an skb per packet, 64 packets a system call.
struct FrameSocket {
    fd: std::os::fd::OwnedFd,
    addr: libc::sockaddr_ll,
}

impl FrameSocket {
    fn open(ifindex: u32) -> std::io::Result<FrameSocket> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain system calls; the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: an int option of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        Ok(FrameSocket { fd, addr })
    }

    /// Sends `n` copies of `frame`.
    fn send(&self, frame: &[u8], n: u32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        const BATCH: usize = 64;
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        // SAFETY: all-zero is a valid mmsghdr; the pointers set below outlive the calls.
        let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
            .collect();
        for h in &mut hdrs {
            h.msg_hdr.msg_name = &self.addr as *const libc::sockaddr_ll as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            h.msg_hdr.msg_iov = &mut iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut left = n as usize;
        while left > 0 {
            let k = left.min(BATCH);
            // SAFETY: `k` headers, each naming the frame and the interface.
            let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), k as u32, 0) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                return Err(e);
            }
            left -= r as usize;
        }
        Ok(())
    }
}

/// True when `e` is the kernel's `EPERM`.
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            == Some(libc::EPERM)
    })
}

/// Floods with `gen` (a loaded bed) at `rate` packets per second (0: flat out) until
/// `stop`; returns the frames sent. Live frames, or a `FrameSocket` once the kernel
/// refuses them.
fn flood(
    gen: &mut TestBed,
    pair: &Pair,
    frame: &[u8],
    rate: u64,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let ifn = pair.client_if.clone();
    pair.client.run(move || -> anyhow::Result<u64> {
        let name = std::ffi::CString::new(ifn.as_str())?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no interface {ifn}");
        let mut sent = 0u64;
        let mut socket = None;
        if SOCKET_FLOOD.load(Ordering::Relaxed) {
            socket = Some(FrameSocket::open(ifindex).context("the flood's packet socket")?);
        }
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let burst = if rate == 0 {
                16_384
            } else {
                // Bursts of at most 100 ms' worth, late ones caught up. (A test run of
                // live frames has a fixed cost of its own: with bursts of 10 ms' worth the
                // generator reached about a third of the offered rate.)
                let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
                if due <= sent {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                (due - sent).min(rate / 10 + 1) as u32
            };
            if let Some(s) = &socket {
                s.send(frame, burst).context("the flood's packet socket")?;
            } else if let Err(e) = gen.live_xdp(ebpf::PROG_BENCH_TX, frame, ifindex, burst) {
                let e = anyhow::Error::from(e).context("live frames (the flood's generator)");
                if !refused(&e) {
                    return Err(e);
                }
                eprintln!("goodput: {e:#}: the flood comes from a packet socket instead");
                SOCKET_FLOOD.store(true, Ordering::Relaxed);
                socket = Some(FrameSocket::open(ifindex).context("the flood's packet socket")?);
                continue;
            }
            sent += burst as u64;
        }
        Ok(sent)
    })
}

/// Packets the flood's drop rule counted so far.
fn counted(mode: Mode, pair: &Pair, eng: &Engine, n: usize) -> anyhow::Result<u64> {
    match mode {
        Mode::Nft => nft_counted(pair),
        _ => Ok(eng.fw_stats(0, n)?[n - 1].0),
    }
}

/// Sets `mode` up on the server's interface (and takes the other modes down).
fn set_mode(mode: Mode, pair: &Pair, eng: &mut Engine, rules: &[Rule]) -> anyhow::Result<()> {
    let _ = nft(pair, &["delete table netdev swbench"]);
    let mut st = FwState::default();
    if mode != Mode::Nft {
        st.instances.insert(
            "bench".into(),
            Instance {
                slot: 0,
                kind: if mode == Mode::Xdp { "XDP_DRV" } else { "TC" }.into(),
                ports: vec![Port {
                    netns: Some(pair.server.name.clone()),
                    ifname: pair.server_if.clone(),
                }],
                ingress: ChainState {
                    rules: rules.iter().map(|r| Box::new(spec(r))).collect(),
                    default: "ACCEPT".into(),
                    accept_established: false,
                },
                egress: ChainState::default(),
            },
        );
    }
    eng.apply_firewall(&Config::default().firewall, &[], &st, &[])?;
    if mode == Mode::Nft {
        let script = std::env::temp_dir().join(format!(
            "statewall-bench-goodput-{}.nft",
            std::process::id()
        ));
        std::fs::write(&script, nft_script(rules))?;
        let loaded = nft(pair, &["-f", &script.display().to_string()]);
        let _ = std::fs::remove_file(&script);
        loaded?;
        nft_hook(pair, true)?;
    }
    // GRO on the receiving end (NAPI for the generator's frames) except under XDP.
    let gro = if mode == Mode::Xdp { "off" } else { "on" };
    pair.server
        .exec_ok(&["ethtool", "-K", &pair.server_if, "gro", gro]);
    Ok(())
}

/// One point: goodput (Gbit/s) while flooding at `rate`, the rate sent and the rate the
/// drop rule counted (packets per second).
#[allow(clippy::too_many_arguments)]
fn point(
    gen: &mut TestBed,
    mode: Mode,
    pair: &Pair,
    eng: &Engine,
    n: usize,
    frame: &[u8],
    rate: u64,
    measure: impl FnOnce() -> anyhow::Result<f64> + Send,
) -> anyhow::Result<(f64, f64, f64)> {
    let before = counted(mode, pair, eng, n)?;
    let (gp, sent, secs) = beside_flood(gen, pair, frame, rate, measure)?;
    let after = counted(mode, pair, eng, n)?;
    Ok((gp, sent as f64 / secs, (after - before) as f64 / secs))
}

/// `measure` (a goodput in Gbit/s) while `frame` floods at `rate`: (goodput, frames sent,
/// seconds the flood ran).
fn beside_flood(
    gen: &mut TestBed,
    pair: &Pair,
    frame: &[u8],
    rate: u64,
    measure: impl FnOnce() -> anyhow::Result<f64> + Send,
) -> anyhow::Result<(f64, u64, f64)> {
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (gp, sent) = std::thread::scope(|s| {
        let h = s.spawn(|| flood(gen, pair, frame, rate, &stop));
        std::thread::sleep(Duration::from_millis(200));
        let gp = measure();
        stop.store(true, Ordering::Relaxed);
        (gp, h.join().expect("the flood thread"))
    });
    let secs = t0.elapsed().as_secs_f64();
    Ok((gp?, sent?, secs))
}

/// One row of a flood point: `what` (iperf3 or HTTP) goodput `gp` against `calm`.
fn flood_row(
    what: &str,
    each: &str,
    mode: Mode,
    rate: u64,
    (gp, sent, pps): (f64, f64, f64),
    calm: f64,
) -> Row {
    let offered = if rate == 0 {
        "flat out".to_string()
    } else {
        format!("{} kpps", rate / 1000)
    };
    Row {
        name: format!(
            "{what} under a flood, {}, {offered}: {:.0} kpps sent, {:.0} kpps dropped at the hook",
            mode.name(),
            sent / 1e3,
            pps / 1e3
        ),
        unit: "Gbit/s".into(),
        value: gp,
        runs: vec![gp],
        each: each.into(),
        baseline: format!("{}, no flood", mode.name()),
        baseline_value: calm,
        ratio: gp / calm,
        delta: gp - calm,
        target: None,
        met: None,
    }
}

/// The rows: per mode, goodput without a flood, then at each rate as a ratio to it.
pub fn rows() -> anyhow::Result<Vec<Row>> {
    // Two queues each way, one per CPU, as a NIC has: the flood and the legitimate
    // traffic, sent from different CPUs, reach the server through rings of their own.
    let pair = Pair::with_queues("goodput", QUEUES);
    let server = pair
        .server
        .command(&["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    let root = format!("/sys/fs/bpf/statewall-bench-goodput-{}", std::process::id());
    // Torn down however the group ends (a panic included).
    let guard = Cleanup {
        server,
        pins: Pins::new(&root),
    };
    let pins = &guard.pins;
    let _http = http::HttpServer::start(&pair)?;
    std::thread::sleep(Duration::from_millis(300));
    let rules = rules();
    let n = rules.len();
    let res = (|| -> anyhow::Result<Vec<Row>> {
        let cfg = Config::parse("[firewall]\nbitsets_max = 16384\n", "bench")?;
        let mut eng = Engine::open(pins, &cfg.map_sizes())?;
        let mut frame = Packet::udp(
            "198.18.7.9".parse()?,
            pair.server_v4.into(),
            40000,
            FLOOD_PORT,
        )
        .build();
        frame[0..6].copy_from_slice(&mac(&pair, true)?);
        frame[6..12].copy_from_slice(&mac(&pair, false)?);
        let mut gen = TestBed::new();
        let mut rows = Vec::new();
        for mode in [Mode::Xdp, Mode::Tc, Mode::Nft] {
            set_mode(mode, &pair, &mut eng, &rules)?;
            let calm = goodput(&pair)?;
            anyhow::ensure!(calm > 0.1, "{}: {calm} Gbit/s without a flood", mode.name());
            let each = format!("{SECS} s of iperf3 -b 1G beside the flood");
            for rate in RATES {
                let p = point(&mut gen, mode, &pair, &eng, n, &frame, rate, || {
                    goodput(&pair)
                })?;
                rows.push(flood_row("goodput", &each, mode, rate, p, calm));
            }
            let calm = http::goodput(&pair, SECS)?;
            anyhow::ensure!(
                calm > 0.05,
                "{}: HTTP {calm} Gbit/s without a flood",
                mode.name()
            );
            let each = format!("{SECS} s of 1 MiB HTTP GETs, a connection each, beside the flood");
            for rate in RATES {
                let p = point(&mut gen, mode, &pair, &eng, n, &frame, rate, || {
                    http::goodput(&pair, SECS)
                })?;
                rows.push(flood_row("HTTP goodput", &each, mode, rate, p, calm));
            }
        }
        let _ = nft(&pair, &["delete table netdev swbench"]);
        rows.push(detect_row(&mut gen, &pair, &mut eng)?);
        if SOCKET_FLOOD.load(Ordering::Relaxed) {
            for r in &mut rows {
                r.each
                    .push_str(" (flood from a packet socket: live frames refused)");
            }
        }
        Ok(rows)
    })();
    drop(guard);
    res
}

/// The detect stage's goodput row: iperf3 capped at 200 Mbit/s (about 17,300 segments of
/// 1,448 bytes a second) while a UDP flood of at least ten times that packet rate hits the same
/// destination, with `[detect]` in `enforce` (udp_flood at 1,000 a second, on tcx), as a
/// ratio to the same run without a flood (target at least 0.9).
fn detect_row(gen: &mut TestBed, pair: &Pair, eng: &mut Engine) -> anyhow::Result<Row> {
    const CAP: &str = "200M";
    const SEGMENTS: u64 = 200_000_000 / (1448 * 8);
    eng.apply_firewall(&Config::default().firewall, &[], &FwState::default(), &[])?;
    let text = format!(
        "[[interface]]\nname = \"{}\"\nnetns = \"{}\"\n\n[detect]\nmode = \"enforce\"\n\
         udp_flood = {{ threshold = 1000 }}\n",
        pair.server_if, pair.server.name
    );
    let cfg = Config::parse(&text, "bench")?;
    statewall::daemon::state::apply(eng, &cfg)?;
    pair.server
        .exec_ok(&["ethtool", "-K", &pair.server_if, "gro", "on"]);
    // The flood: UDP to a port with no socket (each datagram that gets through costs the
    // server an ICMP error, rate-limited).
    let mut frame = Packet::udp("198.18.7.9".parse()?, pair.server_v4.into(), 40000, 9999).build();
    frame[0..6].copy_from_slice(&mac(pair, true)?);
    frame[6..12].copy_from_slice(&mac(pair, false)?);
    let frame = &frame[..];
    let calm = goodput_capped(pair, CAP)?;
    anyhow::ensure!(calm > 0.1, "detect: {calm} Gbit/s without a flood");
    // Offered at 11x: the rate measured over the whole run (start and stop included)
    // comes out a little under the offered one.
    let (gp, sent, secs) = beside_flood(gen, pair, frame, 11 * SEGMENTS, || {
        goodput_capped(pair, CAP)
    })?;
    let ratio = gp / calm;
    // The generator sends in the receiver's system call (see the module doc): when the
    // drop path is slower than the offered rate, fewer frames go out. The target holds
    // only for a flood of 10x iperf3's packets.
    let times = sent as f64 / secs / SEGMENTS as f64;
    Ok(Row {
        name: format!(
            "goodput under a flood, detect (enforce, udp_flood), iperf3 at {CAP}: UDP flood offered at {} kpps (11x its packets), {:.0} kpps sent ({times:.1}x)",
            11 * SEGMENTS / 1000,
            sent as f64 / secs / 1e3
        ),
        unit: "Gbit/s".into(),
        value: gp,
        runs: vec![gp],
        each: format!("{SECS} s of iperf3 -b {CAP} beside the flood"),
        baseline: "detect, no flood".into(),
        baseline_value: calm,
        ratio,
        delta: gp - calm,
        target: Some(">= 0.9x, flood >= 10x".into()),
        met: Some(ratio >= 0.9 && times >= 10.0),
    })
}

/// The iperf3 server and the bench's pins, ended and torn down when dropped.
struct Cleanup {
    server: std::process::Child,
    pins: Pins,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = engine::teardown(&self.pins);
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
