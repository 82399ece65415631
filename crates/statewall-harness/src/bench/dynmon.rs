//! Dynamic monitor benchmarks (group `dynmon`): the time to load and attach the C example
//! (from a prebuilt object, and from source with clang), against aya loading and attaching
//! the same object once with nothing of dynmon's around it; and one swapped read of its
//! `flows` map holding 10k entries (switch + grace period, then batch read and BTF decode).

use std::time::Instant;

use anyhow::{bail, Context};
use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};

use crate::bench::report::{median, Row, RUNS};
use statewall::dynmon::{self, Direction, Dynmon, DynmonSpec, MetricsFile, PathSpec};

fn spec(source: Option<String>, object: Option<String>) -> anyhow::Result<DynmonSpec> {
    let m: MetricsFile = toml::from_str(dynmon::EXAMPLE_C_METRICS)?;
    Ok(DynmonSpec {
        interface: Some("lo".into()),
        netns: None,
        paths: vec![PathSpec {
            name: "bench".into(),
            direction: Direction::Ingress,
            source,
            object,
            program: None,
            shared: vec![],
            xdp: false,
            metrics: m.metric,
        }],
    })
}

fn row(name: &str, unit: &str, v: Vec<f64>, each: &str, baseline: &str, b: &[f64]) -> Row {
    let (value, bv) = (median(&v), median(b));
    Row {
        name: name.into(),
        unit: unit.into(),
        value,
        runs: v,
        each: each.into(),
        baseline: baseline.into(),
        baseline_value: bv,
        ratio: value / bv,
        delta: value - bv,
        target: None,
        met: None,
    }
}

/// The rows.
pub fn rows() -> anyhow::Result<Vec<Row>> {
    use base64::Engine;
    let object = dynmon::compile_c(dynmon::EXAMPLE_C_SOURCE, dynmon::Direction::Ingress)
        .map_err(anyhow::Error::msg)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&object);
    let normalised = dynmon::elf::normalise(&object).map_err(anyhow::Error::msg)?;
    let (mut plain, mut from_obj, mut from_src) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        // aya alone: one load, the program verified, attached last on lo's ingress.
        let t = Instant::now();
        let mut e = aya::Ebpf::load(&normalised).context("aya load")?;
        let p: &mut SchedClassifier = e
            .program_mut("count_flows")
            .context("no count_flows")?
            .try_into()?;
        p.load()?;
        p.attach_with_options(
            "lo",
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::last()),
        )?;
        plain.push(t.elapsed().as_secs_f64() * 1e3);
        drop(e);
        let d =
            Dynmon::load("bench", spec(None, Some(b64.clone()))?).map_err(anyhow::Error::msg)?;
        from_obj.push(d.load_time.as_secs_f64() * 1e3);
        drop(d);
        let d = Dynmon::load("bench", spec(Some(dynmon::EXAMPLE_C_SOURCE.into()), None)?)
            .map_err(anyhow::Error::msg)?;
        from_src.push(d.load_time.as_secs_f64() * 1e3);
        drop(d);
    }
    let mut rows = vec![
        row(
            "dynmon load + attach, prebuilt object (BTF read, two copies for swap-on-read)",
            "ms",
            from_obj.clone(),
            "1 load",
            "aya: one load + attach of the same object",
            &plain,
        ),
        row(
            "dynmon load + attach from C source (clang, then as above)",
            "ms",
            from_src,
            "1 load",
            "the prebuilt object",
            &from_obj,
        ),
    ];

    // One swapped read of 10k entries.
    let n = 10_000u32;
    let mut d = Dynmon::load("bench", spec(None, Some(b64))?).map_err(anyhow::Error::msg)?;
    let (mut switch, mut read) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let fd = d.active_map_fd(0, "flows").context("flows map")?;
        for i in 0..n {
            // struct flow { saddr, daddr, dport, proto, pad } -> struct counts { packets, bytes }
            let mut k = [0u8; 12];
            k[0..4].copy_from_slice(&(0x0a00_0000u32 | i).to_le_bytes());
            k[4..8].copy_from_slice(&[10, 9, 0, 2]);
            k[8..10].copy_from_slice(&443u16.to_be_bytes());
            k[10] = 6;
            let mut v = [0u8; 16];
            v[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            v[8..16].copy_from_slice(&(100 * (i as u64 + 1)).to_le_bytes());
            statewall::engine::sys::map_update(fd, &k, &v).context("filling flows")?;
        }
        let r = d.read().map_err(anyhow::Error::msg)?;
        let got = r
            .iter()
            .find(|m| m.name == "flow_packets")
            .and_then(|m| m.value.as_array().map(|a| a.len()))
            .unwrap_or(0);
        if got != n as usize {
            bail!("{n} entries written, {got} read");
        }
        switch.push(d.last.0.as_secs_f64() * 1e3);
        read.push(d.last.1.as_secs_f64() * 1e3);
    }
    rows.push(row(
        "dynmon swapped read of 10k entries: batch read + BTF decode of every metric",
        "ms",
        read,
        "1 read",
        "switch + grace period of the same read",
        &switch,
    ));
    Ok(rows)
}
