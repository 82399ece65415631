//! One-rule changes to a firewall chain through the daemon's REST API, at 10 and 10,000
//! rules: an insert at id 0, in the middle and at the end, an update and a delete, timed
//! by the daemon itself (its `Server-Timing`: from the request read to the response made,
//! the change durable), the client's round trip beside it; and the whole ruleset in one
//! batch. The baselines: the same change at 10 rules, and nftables on a chain of the same
//! size in a namespace of the bench's own (`nft add rule`, `nft -f` of the ruleset).

use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use crate::{
    bench::{
        daemon::Daemon,
        nft::{nft_script, spec},
        report::{median, ratio_row, Row, RUNS},
        rulesets::{ruleset, V4_BLOCKS},
    },
    netns::NetNs,
};
use statewall::firewall::rules::Rule;

/// Chain sizes.
pub const SIZES: [usize; 2] = [10, 10_000];

/// The changes measured.
const OPS: [&str; 5] = [
    "insert at id 0",
    "insert in the middle",
    "append at the end",
    "update in the middle",
    "delete in the middle",
];

fn op(operation: &str, id: Option<usize>, r: &Rule) -> Value {
    let mut v = serde_json::to_value(spec(r)).unwrap_or_default();
    v["operation"] = operation.into();
    if let Some(id) = id {
        v["id"] = id.into();
    }
    v
}

/// One batch's times, in ms: the server's, the client's round trip, and the phases of
/// the server's (`Server-Timing`: parse, plan, kernel, journal, ...).
struct Timed {
    server: f64,
    rt: f64,
    phases: Vec<(String, f64)>,
}

impl Timed {
    /// Phase `name`'s time (0 when the server did not report it).
    fn phase(&self, name: &str) -> f64 {
        self.phases
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, ms)| *ms)
    }
}

/// Median of phase `name` over `runs`.
fn phase_median(runs: &[Timed], name: &str) -> f64 {
    median(&runs.iter().map(|t| t.phase(name)).collect::<Vec<_>>())
}

/// The phases the server reported for `runs` (as the first run names them), their medians
/// from `min` ms up, with `digits` decimals: "parse 0.01, kernel 0.12".
fn phase_list(runs: &[Timed], min: f64, digits: usize) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    first
        .phases
        .iter()
        .map(|(name, _)| (name, phase_median(runs, name)))
        .filter(|(_, ms)| *ms >= min)
        .map(|(name, ms)| format!("{name} {ms:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts `extra` at `at` (timed), then deletes it again (not timed).
fn insert_undone(d: &Daemon, path: &str, at: usize, extra: &Rule) -> anyhow::Result<Timed> {
    let t = timed(d, path, vec![op("insert", Some(at), extra)])?;
    timed(d, path, vec![json!({"operation": "delete", "id": at})])?;
    Ok(t)
}

fn timed(d: &Daemon, path: &str, ops: Vec<Value>) -> anyhow::Result<Timed> {
    let body = json!({ "rules": ops }).to_string();
    let t0 = Instant::now();
    let r = d.call("POST", path, &body)?;
    let rt = t0.elapsed().as_secs_f64() * 1e3;
    Ok(Timed {
        server: r.server_ms.context("no Server-Timing header")?,
        rt,
        phases: r.server_phases,
    })
}

/// Batches of the whole ruleset per chain size, each into a firewall made anew, and the
/// first change after each: single changes after an idle moment, which the disk's sync
/// decides, so more than one.
const BATCH_RUNS: usize = 5;

/// Where inserts go into the chain as the batch laid it out (tenths of the chain: no
/// change has been there yet; at 10,000 rules no free position is left between most
/// neighbours, so the new rule passes over its neighbours to the nearest free one, or
/// rules move to make room).
const UNTOUCHED: [usize; 5] = [3, 4, 5, 6, 7];

/// One-rule changes per op and chain size. A change takes well under a millisecond, and
/// its synced journal line takes from 0.05 to 1 ms on a VM depending on how long the disk
/// was idle: the median of 5 would be decided by that, so each op runs this often.
const CHANGE_RUNS: usize = 25;

/// A chain of `n` rules through a batch, [`BATCH_RUNS`] times, timed; the server ms of
/// the first insert at id 0, 0.2 s after each batch, and of the inserts at [`UNTOUCHED`].
struct SizedChain {
    n: usize,
    path: String,
    rules: Vec<Rule>,
    batches: Vec<Timed>,
    firsts: Vec<Timed>,
    untouched: Vec<f64>,
}

fn setup(d: &Daemon, n: usize, extra: &Rule) -> anyhow::Result<SizedChain> {
    let name = format!("chg{n}");
    let fw = format!("/api/v1/firewall/{name}");
    let path = format!("{fw}/chain/INGRESS/batch");
    let rules = ruleset(n, 17);
    let (mut batches, mut firsts) = (Vec::new(), Vec::new());
    for i in 0..BATCH_RUNS {
        if i > 0 {
            d.call("DELETE", &fw, "")?;
        }
        d.call("POST", &fw, "{}")?;
        batches.push(timed(
            d,
            &path,
            rules.iter().map(|r| op("append", None, r)).collect(),
        )?);
        // The first change a moment after the batch (the daemon brings the generation
        // the batch retired up to date after answering it, not in the next change).
        std::thread::sleep(std::time::Duration::from_millis(200));
        firsts.push(insert_undone(d, &path, 0, extra)?);
    }
    let mut untouched = Vec::new();
    for tenth in UNTOUCHED {
        untouched.push(insert_undone(d, &path, n * tenth / 10, extra)?.server);
    }
    Ok(SizedChain {
        n,
        path,
        rules,
        batches,
        firsts,
        untouched,
    })
}

/// One round of the five changes (each undone after) on chain `c`, pushed into `out`.
/// It opens with an untimed change on `c` (its middle rule written as it is), so that
/// each timed change follows one on its own chain, whose background work it may wait
/// for, and never the other chain's.
fn round(d: &Daemon, c: &SizedChain, extra: &Rule, out: &mut [Vec<Timed>]) -> anyhow::Result<()> {
    let (n, path, mid) = (c.n, c.path.as_str(), c.n / 2);
    timed(d, path, vec![op("update", Some(mid), &c.rules[mid])])?;
    out[0].push(insert_undone(d, path, 0, extra)?);
    out[1].push(timed(d, path, vec![op("insert", Some(mid), extra)])?);
    out[4].push(timed(
        d,
        path,
        vec![json!({"operation": "delete", "id": mid})],
    )?);
    out[2].push(timed(d, path, vec![op("append", None, extra)])?);
    timed(d, path, vec![json!({"operation": "delete", "id": n})])?;
    out[3].push(timed(d, path, vec![op("update", Some(mid), extra)])?);
    timed(d, path, vec![op("update", Some(mid), &c.rules[mid])])?;
    Ok(())
}

/// Both chain sizes set up, then their changes measured in alternation (a round on the
/// small chain, then one on the large), so that both meet the machine, and the disk, in
/// the same state: per size, the chain as set up and, per op, its runs.
fn changes(d: &Daemon) -> anyhow::Result<[(SizedChain, Vec<Vec<Timed>>); 2]> {
    let extra = ruleset(3, 6).remove(0);
    let chains = [setup(d, SIZES[0], &extra)?, setup(d, SIZES[1], &extra)?];
    let mut out: [Vec<Vec<Timed>>; 2] =
        std::array::from_fn(|_| (0..OPS.len()).map(|_| Vec::new()).collect());
    for _ in 0..CHANGE_RUNS {
        for (c, o) in chains.iter().zip(out.iter_mut()) {
            round(d, c, &extra, o)?;
        }
    }
    for n in SIZES {
        d.call("DELETE", &format!("/api/v1/firewall/chg{n}"), "")?;
    }
    let [small, big] = chains;
    let [o_small, o_big] = out;
    Ok([(small, o_small), (big, o_big)])
}

/// nftables on a chain of `n` rules: (`nft -f` of the ruleset, each of [`BATCH_RUNS`] into
/// a table made anew; median `nft add rule`), ms.
fn nft_times(ns: &NetNs, n: usize) -> anyhow::Result<(Vec<f64>, f64)> {
    let rules = ruleset(n, 17);
    let script = std::env::temp_dir().join(format!(
        "statewall-bench-fwchange-{}-{n}.nft",
        std::process::id()
    ));
    std::fs::write(&script, nft_script(&rules))?;
    let mut load = Vec::new();
    for _ in 0..BATCH_RUNS {
        let _ = ns.exec(&["nft", "delete table netdev swbench"]);
        let t0 = Instant::now();
        let out = ns.exec(&["nft", "-f", &script.display().to_string()]);
        load.push(t0.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            let _ = std::fs::remove_file(&script);
            anyhow::bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let _ = std::fs::remove_file(&script);
    let mut add = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let out = ns.exec(&["nft", "add rule netdev swbench rules udp dport 7 drop"]);
        add.push(t0.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(out.status.success(), "nft add rule");
    }
    let _ = ns.exec(&["nft", "delete table netdev swbench"]);
    Ok((load, median(&add)))
}

fn ms_row(name: String, v: Vec<f64>, each: &str, base: &str, b: f64, target: Option<f64>) -> Row {
    ratio_row(&name, "ms", v, each.into(), base, b, target)
}

/// The rows.
pub fn rows() -> anyhow::Result<Vec<Row>> {
    // 10,000 random rules make about 29,000 distinct bit sets.
    // The IPv4 direct table sized for the ruleset, as the per-packet bench sizes it.
    let d = Daemon::start(
        "fwchange",
        &format!(
            "[firewall]\nbitsets_max = 55296\n[maps]\nSW_FW_V4 = {}\n",
            V4_BLOCKS
        ),
    )?;
    let ns = NetNs::new("fwchg");
    let [(small_chain, small), (big_chain, big)] = changes(&d)?;
    let n = &SIZES[1];
    let (nft_load, nft_add) = &nft_times(&ns, *n)?;
    let mut rows = Vec::new();
    let server = |runs: &[Timed]| runs.iter().map(|t| t.server).collect::<Vec<f64>>();
    let each = format!(
        "1 change through REST (median of {CHANGE_RUNS}, alternating with the 10-rule chain's)"
    );
    for (i, what) in OPS.iter().enumerate() {
        let base = median(&server(&small[i]));
        let rt = median(&big[i].iter().map(|t| t.rt).collect::<Vec<_>>());
        let (k, j) = (
            phase_median(&big[i], "kernel"),
            phase_median(&big[i], "journal"),
        );
        rows.push(ms_row(
            format!(
                "firewall change at {n} rules, {what} (server: kernel {k:.2}, journal {j:.2} ms; round trip {rt:.2} ms)"
            ),
            server(&big[i]),
            &each,
            &format!("the same at {} rules", SIZES[0]),
            base,
            Some(1.5),
        ));
        rows.push(ms_row(
            format!("firewall change at {n} rules, {what}, against nftables"),
            server(&big[i]),
            &each,
            &format!("nft add rule, chain of {n}"),
            *nft_add,
            Some(0.05),
        ));
    }
    rows.push(ms_row(
        format!(
            "firewall change at {n} rules, the first insert at id 0, 0.2 s after the batch (server, medians: {} ms; at {}: {} ms)",
            phase_list(&big_chain.firsts, 0.01, 2),
            SIZES[0],
            phase_list(&small_chain.firsts, 0.01, 2),
        ),
        server(&big_chain.firsts),
        &format!("1 change through REST, after each of {BATCH_RUNS} batches"),
        &format!("the same at {} rules", SIZES[0]),
        median(&server(&small_chain.firsts)),
        Some(1.5),
    ));
    rows.push(ms_row(
        format!("firewall change at {n} rules, insert where the batch left no free position between the neighbours (server)"),
        big_chain.untouched,
        "1 change through REST, at 3/10 to 7/10 of the chain",
        &format!("the same at {} rules", SIZES[0]),
        median(&small_chain.untouched),
        Some(1.5),
    ));
    let batches = &big_chain.batches;
    rows.push(ms_row(
        format!(
            "firewall batch of {n} rules (server, medians: {} ms)",
            phase_list(batches, 0.05, 1)
        ),
        batches.iter().map(|t| t.server).collect(),
        &format!("1 batch through REST, into a firewall made anew ({BATCH_RUNS} runs)"),
        &format!(
            "nft -f of the same {n} rules (median of {BATCH_RUNS}, each into a table made anew)"
        ),
        median(nft_load),
        Some(0.5),
    ));
    Ok(rows)
}
