//! Training and evaluation from labelled captures: the manifest that names them, the
//! labels of flows, and the flow-level confusion counts `statewall detect eval` prints.
//!
//! A flow is an attack when one of its addresses is in the attacker prefixes and the other
//! in the victim prefixes. A flow is predicted an attack when any of its samples is; a flow
//! with no sample (turned away in every window it had packets in) is `unclassified` and
//! counts as predicted benign.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use statewall_common::monitor::SessKey;

use super::{
    capture,
    error::{FileError, LearnError},
    model::{Model, Params},
    sessions,
    windows::{samples, Sample, SampleKind, Shape, Windows},
    Prefix,
};
use statewall_common::maps::addr_ip;

/// Reads a capture file, for samples of `kind`.
pub fn read_capture(path: &Path, kind: SampleKind) -> Result<capture::Capture, LearnError> {
    let b = std::fs::read(path).map_err(|e| FileError::new(path, e))?;
    match kind {
        SampleKind::Packets => capture::read(&b),
        SampleKind::Sessions => capture::read_sessions(&b),
    }
    .map_err(|err| LearnError::Capture {
        path: path.display().to_string(),
        err,
    })
}

/// Who attacks whom.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// Attacker prefixes.
    pub attackers: Vec<Prefix>,
    /// Victim prefixes.
    pub victims: Vec<Prefix>,
}

fn prefixes(list: &[String], what: &str) -> Result<Vec<Prefix>, LearnError> {
    list.iter()
        .flat_map(|s| s.split(','))
        .map(|s| Prefix::parse(s.trim()).map_err(|e| LearnError::Labels(format!("{what}: {e}"))))
        .collect()
}

impl Labels {
    /// From lists of prefixes (each may hold several, comma-separated).
    pub fn new(attackers: &[String], victims: &[String]) -> Result<Labels, LearnError> {
        let l = Labels {
            attackers: prefixes(attackers, "attackers")?,
            victims: prefixes(victims, "victims")?,
        };
        if l.attackers.is_empty() || l.victims.is_empty() {
            return Err(LearnError::Labels(
                "labels need attacker and victim prefixes".into(),
            ));
        }
        Ok(l)
    }

    /// Whether the flow is an attack.
    pub fn attack(&self, k: &SessKey) -> bool {
        let (a, b) = (addr_ip(k.family, &k.saddr), addr_ip(k.family, &k.daddr));
        let is = |l: &[Prefix], x| l.iter().any(|p| p.contains(x));
        (is(&self.attackers, a) && is(&self.victims, b))
            || (is(&self.attackers, b) && is(&self.victims, a))
    }
}

/// `manifest.json`: the captures of a dataset.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Its captures.
    pub captures: Vec<Entry>,
}

/// One capture of a manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The file, relative to the manifest.
    pub file: String,
    /// The attack it holds (`benign` for none).
    pub kind: String,
    /// Attacker prefixes.
    pub attackers: Vec<String>,
    /// Victim prefixes.
    pub victims: Vec<String>,
    /// The generator's seed.
    pub seed: u64,
    /// `train` or `held-out`.
    pub set: String,
}

impl Manifest {
    /// Reads one; entries resolved against its folder.
    pub fn load(path: &Path) -> Result<(Manifest, PathBuf), LearnError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError::new(path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| FileError::new(path, e))?;
        for (i, e) in m.captures.iter().enumerate() {
            Labels::new(&e.attackers, &e.victims).map_err(|err| {
                LearnError::Labels(format!(
                    "{}: capture {i} ({}): {err}",
                    path.display(),
                    e.file
                ))
            })?;
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok((m, dir))
    }
}

/// A capture's samples with their labels.
pub struct Labelled {
    /// The packets' flows, in windows.
    pub windows: Windows,
    /// Every flow of the capture, with its label.
    pub flows: HashMap<SessKey, bool>,
}

/// Reads a capture's packets into labelled samples of `shape`'s kind: its flows are the
/// flows the kind's monitor sees (packets: TCP, UDP and ICMP; sessions: TCP and UDP).
pub fn labelled(c: &capture::Capture, shape: Shape, labels: &Labels) -> Labelled {
    match shape.kind {
        SampleKind::Packets => Labelled {
            windows: samples(&c.packets, shape),
            flows: c
                .packets
                .iter()
                .map(|p| (p.key, labels.attack(&p.key)))
                .collect(),
        },
        SampleKind::Sessions => Labelled {
            windows: sessions::from_packets(&c.sessions, shape),
            flows: sessions::keys(&c.sessions)
                .map(|k| (k, labels.attack(&k)))
                .collect(),
        },
    }
}

/// Trains on captures.
pub fn train(
    captures: &[(PathBuf, Labels)],
    shape: Shape,
    params: Params,
) -> Result<Model, LearnError> {
    let mut all: Vec<Sample> = Vec::new();
    let mut y = Vec::new();
    for (path, labels) in captures {
        let c = read_capture(path, shape.kind)?;
        let l = labelled(&c, shape, labels);
        for s in l.windows.samples {
            y.push(labels.attack(&s.key));
            all.push(s);
        }
    }
    let refs: Vec<&Sample> = all.iter().collect();
    Ok(Model::train(&refs, &y, shape, params)?)
}

/// Flow-level results.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Eval {
    /// Flows (bidirectional 5-tuples over the capture).
    pub flows: usize,
    /// Windows.
    pub windows: usize,
    /// Samples (a flow in a window).
    pub samples: usize,
    /// Flows with no sample.
    pub unclassified: usize,
    /// Attacks predicted attacks.
    pub tp: usize,
    /// Benign flows predicted attacks.
    pub fp: usize,
    /// Benign flows predicted benign.
    pub tn: usize,
    /// Attacks predicted benign.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// tp / (tp + fp).
    pub precision: Option<f64>,
    /// tp / (tp + fn).
    pub recall: Option<f64>,
    /// 2 tp / (2 tp + fp + fn).
    pub f1: Option<f64>,
    /// fp / (fp + tn).
    pub fpr: Option<f64>,
    /// The flows predicted attacks, with their labels (true: an attack).
    #[serde(skip)]
    pub predicted: Vec<(SessKey, bool)>,
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Eval {
    /// From the counts.
    pub fn from_counts(tp: usize, fp: usize, tn: usize, fn_: usize) -> Eval {
        Eval {
            flows: tp + fp + tn + fn_,
            tp,
            fp,
            tn,
            fn_,
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
            fpr: ratio(fp, fp + tn),
            ..Default::default()
        }
    }

    /// The "everything is an attack" baseline of the same flows.
    pub fn baseline(&self) -> Eval {
        let (attacks, benign) = (self.tp + self.fn_, self.fp + self.tn);
        let mut b = Eval::from_counts(attacks, benign, 0, 0);
        (b.windows, b.samples, b.unclassified) = (self.windows, self.samples, self.unclassified);
        b
    }

    /// Adds another capture's counts.
    pub fn add(&self, o: &Eval) -> Eval {
        let mut e = Eval::from_counts(
            self.tp + o.tp,
            self.fp + o.fp,
            self.tn + o.tn,
            self.fn_ + o.fn_,
        );
        e.windows = self.windows + o.windows;
        e.samples = self.samples + o.samples;
        e.unclassified = self.unclassified + o.unclassified;
        e
    }
}

/// Classifies a capture's packets and counts, by flow.
pub fn evaluate(c: &capture::Capture, model: &Model, labels: &Labels) -> Result<Eval, LearnError> {
    let l = labelled(c, model.shape, labels);
    let refs: Vec<&Sample> = l.windows.samples.iter().collect();
    let mut predicted = model.predict(&refs)?;
    if model.shape.kind == SampleKind::Sessions {
        let servers = &l.windows.servers;
        super::pools::over_windows(
            &l.windows.samples,
            model.shape.n,
            |w, k| servers.get(&(w, *k)).copied(),
            &mut predicted,
        );
    }
    let mut attack: HashSet<SessKey> = HashSet::new();
    let mut seen: HashSet<SessKey> = HashSet::new();
    for (s, p) in l.windows.samples.iter().zip(&predicted) {
        seen.insert(s.key);
        if *p {
            attack.insert(s.key);
        }
    }
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for (k, truth) in &l.flows {
        match (*truth, attack.contains(k)) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
            (true, false) => fn_ += 1,
        }
    }
    let mut e = Eval::from_counts(tp, fp, tn, fn_);
    e.predicted = attack.iter().map(|k| (*k, l.flows[k])).collect();
    e.predicted.sort();
    e.windows = l.windows.windows;
    e.samples = l.windows.samples.len();
    e.unclassified = l.flows.keys().filter(|k| !seen.contains(k)).count();
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_with_no_denominator_are_none() {
        let e = Eval::from_counts(0, 0, 5, 0);
        assert_eq!(e.flows, 5);
        assert_eq!((e.precision, e.recall, e.f1), (None, None, None));
        assert_eq!(e.fpr, Some(0.0));
        let b = Eval::from_counts(9, 1, 89, 1).baseline();
        assert_eq!((b.tp, b.fp, b.tn, b.fn_), (10, 90, 0, 0));
        assert_eq!(b.fpr, Some(1.0));
        assert_eq!(b.precision, Some(0.1));
    }

    #[test]
    fn a_flow_is_an_attack_between_an_attacker_and_a_victim_either_way() {
        let l = Labels::new(&["10.100.0.0/14,10.77.0.66".into()], &["10.77.0.2".into()]).unwrap();
        let key = |a: [u8; 4], b: [u8; 4]| {
            let mut k = SessKey {
                family: 4,
                ..Default::default()
            };
            k.saddr[..4].copy_from_slice(&a);
            k.daddr[..4].copy_from_slice(&b);
            k
        };
        assert!(l.attack(&key([10, 77, 0, 2], [10, 101, 3, 4])));
        assert!(l.attack(&key([10, 77, 0, 66], [10, 77, 0, 2])));
        assert!(!l.attack(&key([10, 77, 0, 1], [10, 77, 0, 2])));
        assert!(!l.attack(&key([10, 100, 0, 1], [10, 77, 0, 66])));
        assert!(Labels::new(&[], &["10.0.0.1".into()]).is_err());
        assert!(Labels::new(&["10.0.0.300".into()], &["10.0.0.1".into()]).is_err());
    }
}
