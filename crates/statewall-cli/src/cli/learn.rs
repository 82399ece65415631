//! `statewall detect train`, `statewall detect eval` and `statewall dataset`: the learned
//! classifier from labelled captures, offline.

// (Not the CLI prelude: these commands need no daemon, and importing the prelude would
// put this file above every other subcommand's.)
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

use statewall::detect::{
    learn::{evaluate, read_capture, Eval, Labels, Manifest},
    model::{Model, Params},
    windows::{SampleKind, Shape},
};

/// Which learned detector.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detector {
    /// Floods: flows' first packets in a window (the ddos monitor's records).
    Ddos,
    /// Crypto-mining sessions: per-session counts over the last windows (the crypto
    /// monitor's values).
    Mining,
}
use statewall_harness::dataset;

/// Where the labelled captures come from.
#[derive(Args, Clone, Debug)]
pub struct Source {
    /// A dataset's manifest (`make dataset` writes `data/manifest.json`); captures named
    /// on the command line are looked up in it, else all of its captures of `--set` are used.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// With `--manifest`: only its captures of these sets (`train`, `held-out`, or several:
    /// `train,train-apps`).
    #[arg(long, value_delimiter = ',')]
    set: Vec<String>,
    /// Attacker prefixes (`10.100.0.0/14,198.51.100.7`), without a manifest.
    #[arg(long, value_delimiter = ',')]
    attackers: Vec<String>,
    /// Victim prefixes, without a manifest.
    #[arg(long, value_delimiter = ',')]
    victims: Vec<String>,
}

impl Source {
    /// Each capture with its labels. From a manifest without files named, its captures of
    /// `--set` for `detector`: for ddos the flood and benign captures; for mining the mining
    /// captures, and every other capture with no flow labelled (a flood or benign traffic
    /// is no mining: the mining detector learns that too).
    fn captures(
        &self,
        files: &[PathBuf],
        detector: Detector,
    ) -> anyhow::Result<Vec<(PathBuf, Labels)>> {
        let Some(mpath) = &self.manifest else {
            if files.is_empty() {
                anyhow::bail!("no capture: name pcap files, or give --manifest");
            }
            let l = Labels::new(&self.attackers, &self.victims)
                .map_err(|e| anyhow::anyhow!("{e} (--attackers and --victims, or --manifest)"))?;
            return Ok(files.iter().map(|f| (f.clone(), l.clone())).collect());
        };
        if !self.attackers.is_empty() || !self.victims.is_empty() {
            anyhow::bail!(
                "--manifest labels its captures: --attackers and --victims go without it"
            );
        }
        let (m, dir) = Manifest::load(mpath).map_err(anyhow::Error::msg)?;
        let mining = |e: &statewall::detect::learn::Entry| e.kind == "mining";
        let labels = |e: &statewall::detect::learn::Entry| {
            if detector == Detector::Mining && !mining(e) {
                return Labels::default();
            }
            Labels::new(&e.attackers, &e.victims).expect("checked by Manifest::load")
        };
        if files.is_empty() {
            let v: Vec<_> = m
                .captures
                .iter()
                .filter(|e| self.set.is_empty() || self.set.contains(&e.set))
                .filter(|e| detector == Detector::Mining || !mining(e))
                .map(|e| (dir.join(&e.file), labels(e)))
                .collect();
            if v.is_empty() {
                let sets = match self.set.is_empty() {
                    true => "any set".to_string(),
                    false => format!("set {}", self.set.join(" or ")),
                };
                anyhow::bail!("{}: no {detector:?} capture of {sets}", mpath.display());
            }
            return Ok(v);
        }
        files
            .iter()
            .map(|f| {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                let e = m
                    .captures
                    .iter()
                    .find(|e| Some(&e.file) == name.as_ref())
                    .with_context(|| format!("{}: not in {}", f.display(), mpath.display()))?;
                Ok((f.clone(), labels(e)))
            })
            .collect()
    }
}

/// `statewall detect train`.
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    source: Source,
    /// Captures (pcap or pcapng).
    #[arg(long = "pcap", num_args = 1..)]
    pcap: Vec<PathBuf>,
    /// Where to write the model (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Window length, seconds.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    /// ddos: packets per flow and window.
    #[arg(long, default_value_t = 10)]
    packets: usize,
    /// What to detect.
    #[arg(long, value_enum, default_value_t = Detector::Ddos)]
    detector: Detector,
    /// mining: the windows a session's features look back over.
    #[arg(long, default_value_t = 6)]
    history: usize,
    /// Trees in the forest.
    #[arg(long, default_value_t = Params::default().trees)]
    trees: u16,
    /// Deepest a tree grows.
    #[arg(long, default_value_t = Params::default().max_depth)]
    depth: u16,
    /// Seed of the forest's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Trees that must vote "attack" for a sample to be one (default: more than half).
    #[arg(long)]
    min_votes: Option<u16>,
    /// ddos: a model (same window and packets) to attach to this one as its forest for
    /// samples with payload: a sample is an attack when this model's forest says so, or it
    /// carries TCP or UDP payload and that one does.
    #[arg(long)]
    payload_model: Option<PathBuf>,
}

/// Runs `statewall detect train`.
pub fn train(a: TrainArgs) -> anyhow::Result<i32> {
    if !(a.window > 0.0 && a.window <= 3600.0) {
        anyhow::bail!("--window {}: more than 0, at most 3600 seconds", a.window);
    }
    if !(1..=statewall::detect::model::MAX_PACKETS).contains(&a.packets) {
        anyhow::bail!(
            "--packets {}: 1 to {}",
            a.packets,
            statewall::detect::model::MAX_PACKETS
        );
    }
    if a.window < 1e-6 {
        anyhow::bail!("--window {}: at least a microsecond", a.window);
    }
    let max = statewall::detect::windows::session::MAX_HISTORY;
    if a.detector == Detector::Mining && !(1..=max).contains(&a.history) {
        anyhow::bail!("--history {}: 1 to {max} windows", a.history);
    }
    let shape = match a.detector {
        Detector::Ddos => Shape {
            t_ns: (a.window * 1e9) as u64,
            n: a.packets,
            ..Shape::default()
        },
        Detector::Mining => Shape {
            t_ns: (a.window * 1e9) as u64,
            n: a.history,
            max_flows: statewall_common::monitor::CRYPTO_SESSIONS as usize,
            kind: SampleKind::Sessions,
        },
    };
    if let Some(k) = a.min_votes {
        if k == 0 || k > a.trees {
            anyhow::bail!("--min-votes {k}: 1 to the {} trees", a.trees);
        }
    }
    if a.detector == Detector::Mining && a.payload_model.is_some() {
        anyhow::bail!("--payload-model is for --detector ddos");
    }
    // Read before training: a bad file fails at once.
    let payload = match &a.payload_model {
        Some(path) => Some((path, Model::load(path).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let params = Params {
        trees: a.trees,
        max_depth: a.depth,
        seed: a.seed,
        min_votes: a.min_votes.unwrap_or(0),
        payload_only: false,
    };
    let caps = a.source.captures(&a.pcap, a.detector)?;
    let t = std::time::Instant::now();
    let mut m =
        statewall::detect::learn::train(&caps, shape, params).map_err(anyhow::Error::msg)?;
    if let Some((path, p)) = payload {
        m = m
            .with_payload(p)
            .map_err(|e| anyhow::anyhow!("--payload-model {}: {e}", path.display()))?;
    }
    std::fs::write(&a.out, m.to_json() + "\n").with_context(|| a.out.display().to_string())?;
    let what = match &a.payload_model {
        Some(p) => format!(" (with {} as its payload forest)", p.display()),
        None => String::new(),
    };
    println!(
        "trained on {} captures: {} benign and {} attack samples, {} trees, {:.1}s; wrote {}{what}",
        caps.len(),
        m.trained_on.0,
        m.trained_on.1,
        params.trees,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(0)
}

/// `statewall detect eval`.
#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// Captures (pcap or pcapng); with `--manifest` and none, its captures.
    files: Vec<PathBuf>,
    #[command(flatten)]
    source: Source,
    /// A model file (default: the one built in for `--detector`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Without `--model`: which built-in model.
    #[arg(long, value_enum, default_value_t = Detector::Ddos)]
    detector: Detector,
    /// Print one JSON object of the counts over all the captures.
    #[arg(long)]
    json: bool,
    /// Also list the flows predicted attacks, each with its label.
    #[arg(long)]
    flows: bool,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

fn line(what: &str, e: &Eval) -> String {
    format!(
        "{what:<36} flows {:>6}  tp {:>5} fp {:>4} tn {:>5} fn {:>4}  precision {} recall {} f1 {} fpr {}",
        e.flows, e.tp, e.fp, e.tn, e.fn_, pct(e.precision), pct(e.recall), pct(e.f1), pct(e.fpr)
    )
}

/// Runs `statewall detect eval`.
pub fn eval(a: EvalArgs) -> anyhow::Result<i32> {
    let model = match (&a.model, a.detector) {
        (Some(p), _) => Model::load(p).map_err(anyhow::Error::msg)?,
        (None, Detector::Ddos) => Model::builtin(),
        (None, Detector::Mining) => Model::builtin_mining(),
    };
    let detector = match model.shape.kind {
        SampleKind::Packets => Detector::Ddos,
        SampleKind::Sessions => Detector::Mining,
    };
    let caps = a.source.captures(&a.files, detector)?;
    let mut total = Eval::default();
    for (path, labels) in &caps {
        let c = read_capture(path, model.shape.kind).map_err(anyhow::Error::msg)?;
        let e = evaluate(&c, &model, labels).map_err(anyhow::Error::msg)?;
        if !a.json {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            println!("{}", line(&name, &e));
            println!("{}", line("  (everything an attack)", &e.baseline()));
            println!(
                "  windows {}, samples {}, unclassified flows {}; frames {}, not flows {}, malformed {}",
                e.windows, e.samples, e.unclassified, c.frames, c.skipped, c.malformed
            );
            if a.flows {
                for (k, truth) in &e.predicted {
                    let label = if *truth { "attack" } else { "BENIGN" };
                    println!("    {label:<7} {}", statewall::detect::live::flow_text(k));
                }
            }
        }
        total = total.add(&e);
    }
    if a.json {
        println!("{}", serde_json::to_string(&total)?);
    } else if caps.len() > 1 {
        println!("{}", line("all", &total));
        println!("{}", line("  (everything an attack)", &total.baseline()));
    }
    Ok(0)
}

/// `statewall dataset`.
#[derive(Args, Clone, Debug)]
pub struct DatasetArgs {
    /// Folder of the captures and their `manifest.json` (extended when it exists).
    #[arg(long, default_value = "data")]
    out: PathBuf,
    /// `train` or `held-out` (the floods), `train-apps` or `held-out-apps` (the
    /// application attacks, kept apart: only the payload forest trains on them). The
    /// held-out sets' captures use other addresses than the training sets' (10.177.0.0/24,
    /// spoofed sources from 10.180.0.0/14, where training has 10.77.0.0/24 and
    /// 10.100.0.0/14).
    #[arg(long, default_value = "train")]
    set: String,
    /// First seed (each capture takes its own from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Captures of each attack kind, answered and spoofed (each with its own seed).
    #[arg(long, default_value_t = 1)]
    rounds: u64,
    /// Length of each attack capture, seconds.
    #[arg(long, default_value_t = 25)]
    seconds: u64,
    /// Length of the benign-only capture, seconds.
    #[arg(long, default_value_t = 60)]
    benign_seconds: u64,
    /// `ddos`: floods, each kind answered and spoofed, and a benign capture; `mining`:
    /// `--rounds` captures of Stratum miners among long-lived benign sessions.
    #[arg(long, value_enum, default_value_t = Detector::Ddos)]
    detector: Detector,
    /// `ddos`: the attack kinds, comma-separated: syn, udp, icmp (floods), http (ab),
    /// slow (slowhttptest), dns (reflection through dnsmasq).
    #[arg(long, default_value = "syn,udp,icmp", value_delimiter = ',')]
    kinds: Vec<String>,
}

/// Runs `statewall dataset`.
pub fn dataset(a: DatasetArgs) -> anyhow::Result<i32> {
    if !matches!(
        a.set.as_str(),
        "train" | "held-out" | "train-apps" | "held-out-apps"
    ) {
        anyhow::bail!(
            "--set is train, held-out, train-apps or held-out-apps, not {:?}",
            a.set
        );
    }
    let plans = match a.detector {
        Detector::Ddos => {
            let kinds = a
                .kinds
                .iter()
                .map(|k| match dataset::Kind::parse(k) {
                    Some(k) if k.is_app() || dataset::Kind::ATTACKS.contains(&k) => Ok(k),
                    _ => anyhow::bail!(
                        "--kinds: {k:?} is not an attack kind (syn, udp, icmp, http, slow, dns)"
                    ),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            dataset::plans(
                &a.set,
                a.seed,
                a.rounds,
                a.seconds,
                a.benign_seconds,
                &kinds,
            )
        }
        Detector::Mining => dataset::mining_plans(&a.set, a.seed, a.rounds, a.seconds),
    };
    let m = dataset::make(&a.out, &plans).map_err(anyhow::Error::msg)?;
    println!(
        "{} captures in {}/manifest.json",
        m.captures.len(),
        a.out.display()
    );
    Ok(0)
}
