//! The detect stage under BPF_PROG_TEST_RUN: how many packets of a flood from spoofed
//! sources reach the server before the in-kernel detector's first drop, against its
//! threshold (the kernel clock stands still, so the flood falls in one window), and what
//! the stage costs a packet it lets through.

use aya::maps::{lpm_trie::Key, LpmTrie, MapData};
use statewall::{config::Config, detect::Prefix, engine::ebpf};
use statewall_common::{
    detect::{Block, MAP_BLOCK},
    TC_ACT_SHOT,
};

use crate::{
    bench::report::{median, ratio_row, row, Row, RUNS},
    packet::Packet,
    rng::Rng,
    testrun::{interleave, TestBed},
};

/// The detectors' threshold in this bench (packets a second to one destination).
const THRESHOLD: u64 = 1000;

/// A flood frame of `kind` towards `dst`, from a random source of 10.100.0.0/14.
fn frame(kind: &str, rng: &mut Rng, dst: std::net::IpAddr) -> Vec<u8> {
    let r = rng.next_u64().to_le_bytes();
    let src = std::net::IpAddr::from([10, 100 + (r[0] & 3), r[1], r[2]]);
    let port = 1024 + u16::from_le_bytes([r[3], r[4]]) % 64000;
    match kind {
        "syn_flood" => Packet::tcp(src, dst, port, 80, 0x02),
        "udp_flood" => Packet::udp(src, dst, port, 9999),
        "icmp_flood" => Packet::echo_request(src, dst, port),
        _ => Packet::udp(src, dst, 53, port),
    }
    .build()
}

/// The rows.
pub fn rows(repeat: u32) -> anyhow::Result<Vec<Row>> {
    let mut bed = TestBed::new();
    let text = format!(
        "[detect]\nmode = \"enforce\"\nsyn_flood.threshold = {THRESHOLD}\n\
         udp_flood.threshold = {THRESHOLD}\nicmp_flood.threshold = {THRESHOLD}\n\
         reflection.threshold = {THRESHOLD}\n"
    );
    let cfg = Config::parse(&text, "bench")?;
    let raws = cfg
        .raw_machines()
        .map_err(|(a, m)| anyhow::anyhow!("{a}: {m}"))?;
    let mut compiled = statewall::xfsm::compile(&[], &raws)?;
    compiled.exempt_mask = statewall::xfsm::config::exempt_mask(&cfg.machines, 0);
    statewall::xfsm::write_tables(&mut bed, &compiled, None)?;
    let now = bed.kernel_now();
    bed.freeze(now);
    let mut out = Vec::new();
    let mut dst_n = 0u8;
    for kind in ["syn_flood", "udp_flood", "icmp_flood", "reflection"] {
        let mut runs = Vec::new();
        for run in 0..RUNS {
            // A fresh destination per run: a new flood.
            dst_n += 1;
            let dst = std::net::IpAddr::from([10, 77, 1, dst_n]);
            let mut rng = Rng(run as u64);
            let mut passed = 0u64;
            loop {
                let f = frame(kind, &mut rng, dst);
                if bed.run_tc(ebpf::PROG_XFSM, &f) == TC_ACT_SHOT {
                    break;
                }
                passed += 1;
                anyhow::ensure!(
                    passed < 100 * THRESHOLD,
                    "{kind}: no drop after {passed} packets"
                );
            }
            runs.push(passed as f64);
        }
        out.push(ratio_row(
            &format!("detect, {kind}: flood packets passed before the first drop"),
            "packets",
            runs,
            "one flood from spoofed sources".into(),
            "the detector's threshold",
            THRESHOLD as f64,
            Some(1.01),
        ));
    }
    bed.freeze(0);
    // The cost of the stage on a packet it lets through: the blocks (1,000 of them, none
    // matching), then the xfsm stage with the detectors on a UDP packet under threshold.
    {
        let mut t: LpmTrie<&mut MapData, [u8; 20], Block> = bed.map(MAP_BLOCK).try_into()?;
        for i in 0..1000u32 {
            let p = Prefix::parse(&format!("198.18.{}.{}/32", i / 250, i % 250))?;
            let (len, data) = p.lpm_key();
            t.insert(&Key::new(len, data), Block::default(), 0)?;
        }
    }
    let (a, b) = ("10.1.0.7".parse()?, "10.1.0.2".parse()?);
    let ack = Packet::tcp(a, b, 40000, 5000, 0x10).build();
    let (base, d) = interleave(
        &mut bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &ack),
        (false, ebpf::PROG_DETECT, &ack),
    );
    out.push(row(
        "detect, blocks (1,000, none matching): packet let through",
        "empty tc program",
        &base,
        d,
        repeat,
        None,
    ));
    let (base, x) = interleave(
        &mut bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &ack),
        (false, ebpf::PROG_XFSM, &ack),
    );
    out.push(row(
        "detect, the detectors' machines: TCP ACK (no detector counts it)",
        "empty tc program",
        &base,
        x,
        repeat,
        None,
    ));
    // A UDP flood's packet once the destination is under the flood: dropped.
    let udp = Packet::udp(a, b, 40000, 9999).build();
    for _ in 0..=THRESHOLD {
        bed.run_tc(ebpf::PROG_XFSM, &udp);
    }
    let (base, x) = interleave(
        &mut bed,
        repeat,
        (false, ebpf::PROG_EMPTY_TC, &udp),
        (false, ebpf::PROG_XFSM, &udp),
    );
    out.push(row(
        "detect, the detectors' machines: UDP packet of a flood (dropped)",
        "empty tc program",
        &base,
        x,
        repeat,
        None,
    ));
    out.extend(classifier_rows()?);
    out.extend(mining_rows()?);
    out.push(classifier_acts()?);
    Ok(out)
}

/// How soon the learned classifier acts, live: a daemon of this build with
/// `[detect.classifier]` in `enforce` (the in-kernel detectors off) on a fresh pair's
/// server. Each run waits for a window's read (the API's window count moves), then, half a
/// window later, hping3 sends a SYN flood from four spoofed sources of the run's own, 500
/// a second each; the time from its start to the first packet a classifier block drops is
/// compared with the end of the first full window after that start (one and a half
/// windows later). Target: no later. A run that never acts counts the time waited (six
/// windows) and misses the target.
fn classifier_acts() -> anyhow::Result<Row> {
    use std::time::{Duration, Instant};
    let pair = crate::netns::Pair::new("bcls");
    let config = format!(
        "[[interface]]\nname = \"{i}\"\nnetns = \"{n}\"\n\n[detect]\nmode = \"enforce\"\n\
         expiry = \"2s\"\nsyn_flood = {{ enabled = false }}\nudp_flood = {{ enabled = false }}\n\
         icmp_flood = {{ enabled = false }}\nreflection = {{ enabled = false }}\n\n\
         [detect.classifier]\ninterfaces = [\"{i}\"]\nnetns = \"{n}\"\n",
        i = pair.server_if,
        n = pair.server.name
    );
    let d = crate::bench::daemon::Daemon::start("classifier", &config)?;
    let window = statewall::detect::model::Model::builtin().shape.t_ns as f64 / 1e9;
    let detect = || -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &d.call("GET", "/api/v1/detect", "")?.body,
        )?)
    };
    let server = pair.server_v4.to_string();
    let mut runs = Vec::new();
    let mut missed = false;
    for run in 0..RUNS {
        // A window boundary: the count of windows read moves.
        let seen = detect()?["classifier"]["stats"]["windows"].as_u64();
        let t = Instant::now();
        while detect()?["classifier"]["stats"]["windows"].as_u64() == seen {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs_f64(window * 3.0),
                "no window read"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs_f64(window / 2.0));
        let t0 = Instant::now();
        let mut kids: Vec<std::process::Child> = (1..=4)
            .map(|i| {
                pair.client
                    .command(&[
                        "hping3",
                        "-q",
                        "-k",
                        "-S",
                        "-p",
                        "8080",
                        "-s",
                        &format!("3000{i}"),
                        "-a",
                        &format!("10.{}.{run}.{i}", 100 + i % 4),
                        "-i",
                        "u2000",
                        "-c",
                        "7500",
                        &server,
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        let mut acted = None;
        while t0.elapsed() < Duration::from_secs_f64(window * 6.0) {
            let v = detect()?;
            let dropped = v["mitigations"].as_array().is_some_and(|ms| {
                ms.iter().any(|m| {
                    m["detector"] == "classifier"
                        && m["target"]
                            .as_str()
                            .is_some_and(|t| t.contains(&format!(".{run}.")))
                        && m["dropped"].as_u64() > Some(0)
                })
            });
            if dropped {
                acted = Some(t0.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        missed |= acted.is_none();
        runs.push(acted.unwrap_or(window * 6.0));
    }
    let base = 1.5 * window;
    let value = median(&runs);
    Ok(Row {
        name:
            "detect, classifier: SYN flood (4 spoofed sources) start to its first drop by a block"
                .into(),
        unit: "s".into(),
        value,
        runs,
        each: "one flood against a running daemon, half a window after a read".into(),
        baseline: format!("end of the first full {window:.0} s window after the start"),
        baseline_value: base,
        ratio: value / base,
        delta: value - base,
        target: Some("<= 1x".into()),
        met: Some(!missed && value <= base),
    })
}

/// A learned detector's section for the bench: its monitor on `lo`, the built-in model.
fn bench_config() -> statewall::detect::ClassifierConfig {
    statewall::detect::ClassifierConfig {
        interfaces: vec!["lo".into()],
        netns: None,
        model: None,
        sessions: 16_384,
        max_blocks: 4096,
        destination_sources: 16,
        destination_limit: 1000,
    }
}

/// Flows in the classifier's bench window.
const CLASSIFIER_FLOWS: u32 = 10_000;

/// A learned detector's two rows over `RUNS` windows of `mon`, each filled by `fill` (at
/// least 90% of [`CLASSIFIER_FLOWS`] flows, as `held` counts them): the window read, made
/// into samples by `build` and classified by `model`, both timed against reading and
/// decoding the window. `names`: the inference row (target: at most the read), the
/// samples row, what one run is.
fn learned_rows(
    model: &statewall::detect::model::Model,
    mon: &mut statewall::monitor::Monitor,
    mut fill: impl FnMut(&mut statewall::monitor::Monitor) -> anyhow::Result<()>,
    held: impl Fn(&statewall::monitor::Window) -> usize,
    mut build: impl FnMut(&statewall::monitor::Window) -> Vec<statewall::detect::windows::Sample>,
    names: [&str; 3],
) -> anyhow::Result<Vec<Row>> {
    let [infer_row, build_row, each] = names;
    let (mut read, mut built, mut infer) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        fill(mon)?;
        let w = mon.read()?;
        anyhow::ensure!(
            held(&w) as u32 >= CLASSIFIER_FLOWS * 9 / 10,
            "the window holds {} flows",
            held(&w)
        );
        let t = std::time::Instant::now();
        let samples = build(&w);
        built.push(t.elapsed().as_secs_f64() * 1e3);
        let refs: Vec<_> = samples.iter().collect();
        let t = std::time::Instant::now();
        let v = model.predict(&refs).map_err(anyhow::Error::msg)?;
        infer.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(v);
        read.push(w.read.as_secs_f64() * 1e3);
    }
    let base = median(&read);
    let window = "reading and decoding that window";
    Ok(vec![
        ratio_row(infer_row, "ms", infer, each.into(), window, base, Some(1.0)),
        ratio_row(build_row, "ms", built, each.into(), window, base, None),
    ])
}

/// The learned classifier on a window of 10,000 flows of 10 packets each (recorded by its
/// monitor under BPF_PROG_TEST_RUN): inference, and the records turned into samples
/// before it, against reading and decoding the same window.
fn classifier_rows() -> anyhow::Result<Vec<Row>> {
    use statewall::{
        detect::{live::monitor_spec, model::Model, windows::samples},
        monitor::Monitor,
    };
    let model = Model::builtin();
    let mut mon = Monitor::open(monitor_spec(&bench_config(), &model))?;
    let mut rng = Rng(7);
    let dst = std::net::IpAddr::from([10, 77, 0, 2]);
    let kinds = ["syn_flood", "udp_flood", "icmp_flood", "reflection"];
    let frames: Vec<Vec<u8>> = (0..CLASSIFIER_FLOWS)
        .map(|i| frame(kinds[i as usize % 4], &mut rng, dst))
        .collect();
    learned_rows(
        &model,
        &mut mon,
        |mon| {
            for f in &frames {
                for _ in 0..model.shape.n {
                    mon.test_run(f)?;
                }
            }
            Ok(())
        },
        |w| w.ddos_sessions.len(),
        |w| samples(&w.packets, model.shape).samples,
        [
            "detect, classifier: inference, a window of 10,000 flows",
            "detect, classifier: the window's records into samples, 10,000 flows",
            "10,000 flows x 10 packets",
        ],
    )
}

/// The mining detector on windows of 10,000 TCP sessions (counted by its crypto monitor
/// under BPF_PROG_TEST_RUN, four packets each, both ways): inference, and the window's
/// values joined to each session's history before it, against reading and decoding the
/// same window. The same sessions come back every window, so later windows carry their
/// history.
fn mining_rows() -> anyhow::Result<Vec<Row>> {
    use statewall::{
        detect::{live::monitor_spec, model::Model, sessions::History},
        monitor::Monitor,
    };
    let model = Model::builtin_mining();
    let mut mon = Monitor::open(monitor_spec(&bench_config(), &model))?;
    let mut rng = Rng(11);
    let pool = std::net::IpAddr::from([10, 77, 0, 3]);
    let frames: Vec<[Vec<u8>; 2]> = (0..CLASSIFIER_FLOWS)
        .map(|_| {
            let r = rng.next_u64().to_le_bytes();
            let host = std::net::IpAddr::from([10, 20 + (r[0] & 3), r[1], r[2]]);
            let port = 1024 + u16::from_le_bytes([r[3], r[4]]) % 64000;
            [
                Packet::tcp(host, pool, port, 3333, 0x18)
                    .payload(&[b's'; 160])
                    .build(),
                Packet::tcp(pool, host, 3333, port, 0x18)
                    .payload(&[b'j'; 40])
                    .build(),
            ]
        })
        .collect();
    let mut hist = History::new(model.shape);
    learned_rows(
        &model,
        &mut mon,
        |mon| {
            for f in &frames {
                for _ in 0..2 {
                    mon.test_run(&f[0])?;
                    mon.test_run(&f[1])?;
                }
            }
            Ok(())
        },
        |w| w.crypto.len(),
        |w| {
            let vals: Vec<_> = w.crypto.iter().map(|s| (s.key, s.total)).collect();
            hist.window(&vals)
        },
        [
            "detect, mining: inference, a window of 10,000 sessions",
            "detect, mining: the window's sessions into samples (with their history), 10,000",
            "10,000 sessions x 4 packets",
        ],
    )
}
