//! The learned flow classifier: a random forest (smartcore's) over the flattened samples of
//! [`super::windows`], saved as JSON with the window shape it was trained for.
//!
//! Why a forest and not LUCID's CNN: on this project's captures a forest of 25 trees of
//! depth at most 12 separates the flows as well (README, "Learned classifier"), needs no
//! tensor runtime, trains in seconds on two cores, and classifies a sample in about as many
//! comparisons as the trees are deep; smartcore reads and writes it with serde.

use serde::{Deserialize, Serialize};
use smartcore::{
    ensemble::random_forest_classifier::{
        RandomForestClassifier, RandomForestClassifierParameters,
    },
    linalg::basic::matrix::DenseMatrix,
};

use super::error::{FileError, ModelError};
use super::windows::{carries_payload, session, Sample, SampleKind, Shape, FEATURES};

type Forest = RandomForestClassifier<f32, u8, DenseMatrix<f32>, Vec<u8>>;

/// The most packets a flow's sample may hold.
pub const MAX_PACKETS: usize = 64;

/// Samples from which a prediction is split over two threads.
const PARALLEL_FROM: usize = 2048;

/// The model file's `format`.
pub const FORMAT: &str = "statewall-detect-model";

/// The model built into the binary (`make model` rebuilds it: README).
const BUILTIN: &str = include_str!("ddos-model.json");

/// The mining model built into the binary (`make model` rebuilds it: README).
const BUILTIN_MINING: &str = include_str!("mining-model.json");

/// Training parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Params {
    /// Trees.
    pub trees: u16,
    /// Deepest a tree grows.
    pub max_depth: u16,
    /// The random generator's seed (bootstrap samples, features tried per split).
    pub seed: u64,
    /// Trees that must vote "attack" for a sample to be one (0: more than half, the
    /// forest's majority). A higher bar takes fewer benign samples for attacks, at the
    /// price of attack samples the trees disagree on. (Absent from models made before it:
    /// 0.)
    #[serde(default)]
    pub min_votes: u16,
    /// The forest judges only the flow samples that carry payload ([`carries_payload`]):
    /// set on a model's [`Model::payload`] forest when it is attached. (Absent from models
    /// made before it: false.)
    #[serde(default)]
    pub payload_only: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            trees: 25,
            max_depth: 12,
            seed: 1,
            min_votes: 0,
            payload_only: false,
        }
    }
}

/// A trained classifier.
#[derive(Serialize, Deserialize)]
pub struct Model {
    /// [`FORMAT`].
    pub format: String,
    /// The windows it classifies.
    pub shape: Shape,
    /// How it was trained.
    pub params: Params,
    /// Samples it was trained on: (benign, attack).
    pub trained_on: (usize, usize),
    forest: Forest,
    /// The forest's trees as flat arrays, for inference (made from `forest`).
    #[serde(skip)]
    flat: Flat,
    /// A second forest, for the application attacks: it judges the samples that carry
    /// payload ([`Params::payload_only`]) and that the first forest takes for benign; a
    /// sample is an attack when either forest says so. (Absent: none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<Model>>,
}

/// One node of a flat tree: a split (`feature`, `threshold`, children) or a leaf (`output`:
/// the class index it votes for).
#[derive(Clone, Copy, Debug, Default)]
struct Node {
    threshold: f64,
    feature: u32,
    left: u32,
    right: u32,
    /// `u32::MAX` for a split.
    output: u32,
}

/// The trees smartcore trained, laid out for inference: smartcore's own walk allocates a
/// list cell per node visited (about 40 ns a node here), this one does not; it reads the
/// nodes smartcore serialises (split feature and value, children, output) and decides as
/// smartcore does (a value at or below the split goes to the first child; the votes' first
/// maximum wins). A unit test holds the two to the same answers.
#[derive(Clone, Debug, Default)]
struct Flat {
    /// Each tree's root.
    roots: Vec<u32>,
    nodes: Vec<Node>,
    /// Class values, by the index the leaves vote for.
    classes: Vec<u8>,
}

impl Flat {
    fn of(forest: &Forest) -> Result<Flat, ModelError> {
        let v = serde_json::to_value(forest).map_err(|e| ModelError::Model(e.to_string()))?;
        let bad = |what: &str| {
            ModelError::Model(format!(
                "the forest's {what} do not read as smartcore 0.4 writes them"
            ))
        };
        let classes = v["classes"]
            .as_array()
            .ok_or_else(|| bad("classes"))?
            .iter()
            .map(|c| c.as_u64().map(|c| c as u8).ok_or_else(|| bad("classes")))
            .collect::<Result<Vec<u8>, ModelError>>()?;
        let mut f = Flat {
            classes,
            ..Default::default()
        };
        for t in v["trees"].as_array().ok_or_else(|| bad("trees"))? {
            let nodes = t["nodes"].as_array().ok_or_else(|| bad("nodes"))?;
            let base = f.nodes.len() as u32;
            f.roots.push(base);
            for n in nodes {
                let idx = |k: &str| n[k].as_u64().map(|i| base + i as u32);
                let node = match (idx("true_child"), idx("false_child")) {
                    (Some(l), Some(r)) => Node {
                        threshold: n["split_value"].as_f64().unwrap_or(f64::NAN),
                        feature: n["split_feature"].as_u64().ok_or_else(|| bad("nodes"))? as u32,
                        left: l,
                        right: r,
                        output: u32::MAX,
                    },
                    _ => Node {
                        output: n["output"].as_u64().ok_or_else(|| bad("nodes"))? as u32,
                        ..Default::default()
                    },
                };
                f.nodes.push(node);
            }
            let end = f.nodes.len() as u32;
            if end == base {
                return Err(bad("trees (one has no node)"));
            }
            // Children after their parent and inside the tree: a walk always ends.
            if f.nodes[base as usize..].iter().enumerate().any(|(i, n)| {
                let at = base + i as u32;
                n.output == u32::MAX
                    && !(n.left > at && n.left < end && n.right > at && n.right < end)
            }) {
                return Err(bad("children"));
            }
            if f.nodes[base as usize..]
                .iter()
                .any(|n| n.output != u32::MAX && n.output as usize >= f.classes.len())
            {
                return Err(bad("leaves"));
            }
        }
        if f.roots.is_empty() || f.classes.is_empty() {
            return Err(bad("trees"));
        }
        Ok(f)
    }

    /// The class index the tree at `root` gives `row`.
    #[inline]
    fn leaf(&self, root: u32, row: &[f32]) -> Result<u32, ModelError> {
        let mut n = self.nodes[root as usize];
        // (Each tree's children lie after their parent: a walk ends within its nodes.)
        while n.output == u32::MAX {
            let x = *row.get(n.feature as usize).ok_or_else(|| {
                ModelError::Model("a split on a feature the sample does not have".into())
            })?;
            n = self.nodes[if (x as f64) <= n.threshold {
                n.left
            } else {
                n.right
            } as usize];
        }
        Ok(n.output)
    }

    /// Whether at least `k` trees vote for class 1 (attack): the same answer as counting
    /// every vote, with the walk stopped once the count is reached or can no longer be.
    fn reaches(&self, row: &[f32], k: usize) -> Result<bool, ModelError> {
        let Some(attack) = self.classes.iter().position(|c| *c == 1) else {
            return Ok(false);
        };
        let trees = self.roots.len();
        let (mut yes, mut no) = (0, 0);
        for &root in &self.roots {
            if self.leaf(root, row)? as usize == attack {
                yes += 1;
                if yes >= k {
                    return Ok(true);
                }
            } else {
                no += 1;
                if trees - no < k {
                    return Ok(false);
                }
            }
        }
        Ok(yes >= k)
    }

    /// The class a row gets by the majority of the trees, and the trees that voted for
    /// class 1 (attack).
    fn predict(&self, row: &[f32]) -> Result<(u8, usize), ModelError> {
        let mut votes = [0usize; 8];
        for &root in &self.roots {
            let out = self.leaf(root, row)?;
            *votes
                .get_mut(out as usize)
                .ok_or_else(|| ModelError::Model("more than 8 classes".into()))? += 1;
        }
        let mut best = 0;
        for i in 1..self.classes.len() {
            if votes[i] > votes[best] {
                best = i;
            }
        }
        let attack = self
            .classes
            .iter()
            .position(|c| *c == 1)
            .map_or(0, |i| votes[i]);
        Ok((self.classes[best], attack))
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("shape", &self.shape)
            .field("params", &self.params)
            .field("trained_on", &self.trained_on)
            .finish()
    }
}

/// The time a sample's recorded packets span, as a share of the window.
fn span(s: &Sample, shape: Shape) -> f32 {
    let last = s.packets.clamp(1, shape.n) - 1;
    s.x[last * FEATURES] - s.x[0]
}

/// Whether the forest judges `s` (every flow sample, or with `payload_only` those that
/// carry payload; a session sample once the session is [`session::MIN_AGE`] windows old).
fn judged(s: &Sample, shape: Shape, payload_only: bool) -> bool {
    match shape.kind {
        SampleKind::Packets => !payload_only || carries_payload(s, shape.n),
        SampleKind::Sessions => session::judged(s, shape),
    }
}

/// The values of a sample (packets: the rows, then the span from the first packet to the
/// last; sessions: the features as they are).
fn cols(shape: Shape) -> usize {
    match shape.kind {
        SampleKind::Packets => shape.n * FEATURES + 1,
        SampleKind::Sessions => session::FEATURES,
    }
}

/// Appends the forest's input for one sample to `out`: a flow sample's rows, then the time
/// its recorded packets span (a tree splits on one value at a time; the rows' times alone
/// would take two); a session sample's features as they are.
fn input_row(s: &Sample, shape: Shape, out: &mut Vec<f32>) -> Result<(), ModelError> {
    let want = match shape.kind {
        SampleKind::Packets => shape.n * FEATURES,
        SampleKind::Sessions => session::FEATURES,
    };
    if s.x.len() != want {
        return Err(ModelError::Model(format!(
            "a sample of {} values where the model takes {want}",
            s.x.len()
        )));
    }
    out.extend_from_slice(&s.x);
    if shape.kind == SampleKind::Packets {
        out.push(span(s, shape));
    }
    Ok(())
}

/// Checks that `p` can be `m`'s forest for samples with payload.
fn check_payload(m: &Model, p: &Model) -> Result<(), ModelError> {
    let bad = |why: &str| Err(ModelError::Model(format!("the payload forest: {why}")));
    if m.shape.kind != SampleKind::Packets || m.params.payload_only {
        return bad("only a flow model that judges every sample takes one");
    }
    if (p.shape.t_ns, p.shape.n, p.shape.kind) != (m.shape.t_ns, m.shape.n, m.shape.kind) {
        return bad("its window and packets differ from the model's");
    }
    if !p.params.payload_only {
        return bad("it judges samples without payload");
    }
    if p.payload.is_some() {
        return bad("it has a payload forest of its own");
    }
    Ok(())
}

/// The forest's input for `samples`, one row each.
fn matrix(samples: &[&Sample], shape: Shape) -> Result<DenseMatrix<f32>, ModelError> {
    let cols = cols(shape);
    let mut v = Vec::with_capacity(samples.len() * cols);
    for s in samples {
        input_row(s, shape, &mut v)?;
    }
    DenseMatrix::new(samples.len(), cols, v, false).map_err(|e| ModelError::Model(e.to_string()))
}

impl Model {
    /// Trains on `samples` labelled by `attack` (the same length).
    pub fn train(
        samples: &[&Sample],
        attack: &[bool],
        shape: Shape,
        params: Params,
    ) -> Result<Model, ModelError> {
        // Sessions too young to be judged are not trained on.
        let (samples, attack): (Vec<&Sample>, Vec<bool>) = samples
            .iter()
            .zip(attack)
            .filter(|(s, _)| judged(s, shape, false))
            .map(|(s, a)| (*s, *a))
            .unzip();
        let (samples, attack) = (&samples[..], &attack[..]);
        let n_attack = attack.iter().filter(|a| **a).count();
        if n_attack == 0 || n_attack == attack.len() {
            return Err(ModelError::Train(format!(
                "training needs both benign and attack samples ({} benign, {n_attack} attack)",
                attack.len() - n_attack
            )));
        }
        let x = matrix(samples, shape)?;
        let y: Vec<u8> = attack.iter().map(|a| *a as u8).collect();
        let p = RandomForestClassifierParameters::default()
            .with_n_trees(params.trees)
            .with_max_depth(params.max_depth)
            .with_seed(params.seed);
        let forest = Forest::fit(&x, &y, p).map_err(|e| ModelError::Train(e.to_string()))?;
        Ok(Model {
            format: FORMAT.into(),
            shape,
            params,
            trained_on: (attack.len() - n_attack, n_attack),
            flat: Flat::of(&forest)?,
            forest,
            payload: None,
        })
    }

    /// Whether each sample is an attack.
    pub fn predict(&self, samples: &[&Sample]) -> Result<Vec<bool>, ModelError> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        // Large windows in two halves, on two threads.
        if samples.len() >= PARALLEL_FROM {
            let (a, b) = samples.split_at(samples.len() / 2);
            let (first, second) = std::thread::scope(|s| {
                let h = s.spawn(|| self.predict_on(a));
                let second = self.predict_on(b);
                (h.join(), second)
            });
            let mut v =
                first.map_err(|_| ModelError::Model("a classifier thread panicked".into()))??;
            v.extend(second?);
            return Ok(v);
        }
        self.predict_on(samples)
    }

    fn predict_on(&self, samples: &[&Sample]) -> Result<Vec<bool>, ModelError> {
        let mut row = Vec::with_capacity(cols(self.shape));
        samples
            .iter()
            .map(|s| {
                let mut filled = false;
                if self.judges(s, &mut row, &mut filled)? {
                    return Ok(true);
                }
                match &self.payload {
                    Some(p) => p.judges(s, &mut row, &mut filled),
                    None => Ok(false),
                }
            })
            .collect()
    }

    /// Whether this model's own forest takes `s` for an attack; `row` holds the sample's
    /// input once `filled` (the same for both forests of a model: one shape).
    fn judges(
        &self,
        s: &Sample,
        row: &mut Vec<f32>,
        filled: &mut bool,
    ) -> Result<bool, ModelError> {
        if !judged(s, self.shape, self.params.payload_only) {
            return Ok(false);
        }
        if !*filled {
            row.clear();
            input_row(s, self.shape, row)?;
            *filled = true;
        }
        match self.params.min_votes {
            0 => Ok(self.flat.predict(row)?.0 == 1),
            k => self.flat.reaches(row, k as usize),
        }
    }

    /// The score behind a verdict on `s`: (the trees that take it for an attack, the trees
    /// of the forest that judged it), from the first forest whose bar it reaches (the
    /// flow forest, then the payload forest), else from the last that judged it; `None`
    /// when no forest judges it (a session's first window, a payload forest's sample
    /// without payload). Counts every tree, where [`Model::predict`] stops at the bar: for
    /// the samples taken, to say why.
    pub fn votes(&self, s: &Sample) -> Result<Option<(usize, usize)>, ModelError> {
        let mut row = Vec::with_capacity(cols(self.shape));
        let mut filled = false;
        let mut out = None;
        for m in std::iter::once(self).chain(self.payload.as_deref()) {
            if !judged(s, m.shape, m.params.payload_only) {
                continue;
            }
            if !filled {
                input_row(s, m.shape, &mut row)?;
                filled = true;
            }
            let (class, v) = m.flat.predict(&row)?;
            out = Some((v, m.flat.roots.len()));
            let taken = match m.params.min_votes {
                0 => class == 1,
                k => v >= k as usize,
            };
            if taken {
                break;
            }
        }
        Ok(out)
    }

    /// Attaches the flow model `p` (of the same window and packets, with no second forest
    /// of its own) as the forest for samples with payload ([`Model::payload`]).
    pub fn with_payload(mut self, mut p: Model) -> Result<Model, ModelError> {
        p.params.payload_only = true;
        check_payload(&self, &p)?;
        self.payload = Some(Box::new(p));
        Ok(self)
    }

    /// smartcore's own prediction (what the flat trees are checked against).
    pub fn predict_smartcore(&self, samples: &[&Sample]) -> Result<Vec<bool>, ModelError> {
        let x = matrix(samples, self.shape)?;
        let y = self
            .forest
            .predict(&x)
            .map_err(|e| ModelError::Model(e.to_string()))?;
        Ok(y.into_iter().map(|v| v == 1).collect())
    }

    /// Reads a model from its JSON text.
    pub fn from_json(text: &str) -> Result<Model, ModelError> {
        let mut m: Model = serde_json::from_str(text)
            .map_err(|e| ModelError::Model(format!("not a model: {e}")))?;
        m.ready()?;
        if let Some(mut p) = m.payload.take() {
            p.ready()?;
            check_payload(&m, &p)?;
            m.payload = Some(p);
        }
        Ok(m)
    }

    /// Makes a model read from a file ready: its flat trees, then its checks (format,
    /// window, splits within its samples).
    fn ready(&mut self) -> Result<(), ModelError> {
        self.flat = Flat::of(&self.forest)?;
        let m = self;
        if m.format != FORMAT {
            return Err(ModelError::Model(format!(
                "format {:?}, expected {FORMAT:?}",
                m.format
            )));
        }
        let (most, what) = match m.shape.kind {
            SampleKind::Packets => (MAX_PACKETS, "packets a flow"),
            SampleKind::Sessions => (session::MAX_HISTORY, "windows of history"),
        };
        if !(1..=most).contains(&m.shape.n) || m.shape.t_ns == 0 {
            return Err(ModelError::Model(format!(
                "a window of {} ns and {} {what} (1 to {most})",
                m.shape.t_ns, m.shape.n
            )));
        }
        let cols = cols(m.shape);
        if m.flat
            .nodes
            .iter()
            .any(|n| n.output == u32::MAX && n.feature as usize >= cols)
        {
            return Err(ModelError::Model(format!(
                "a split on feature past the {cols} a sample has"
            )));
        }
        Ok(())
    }

    /// Reads a model file.
    pub fn load(path: &std::path::Path) -> Result<Model, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError::new(path, e))?;
        Model::from_json(&text).map_err(|e| FileError::new(path, e).into())
    }

    /// The model built into the binary.
    pub fn builtin() -> Model {
        Model::from_json(BUILTIN).expect("the built-in model reads (a unit test checks it)")
    }

    /// The mining model built into the binary.
    pub fn builtin_mining() -> Model {
        Model::from_json(BUILTIN_MINING)
            .expect("the built-in mining model reads (a unit test checks it)")
    }

    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a model serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statewall_common::monitor::SessKey;

    /// Values in [0, 1) from a xorshift generator seeded with `seed`.
    fn uniform(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1000) as f32 / 1000.0
        }
    }

    /// Random samples: the flat trees answer as smartcore's walk does, on data the forest
    /// was trained on and on data it never saw.
    #[test]
    fn the_flat_trees_decide_as_smartcore_does() {
        let shape = Shape {
            t_ns: 1,
            n: 3,
            max_flows: 10,
            ..Shape::default()
        };
        let mut rnd = uniform(0x1234_5678_9abc_def0);
        let mut make = |n: usize| -> (Vec<Sample>, Vec<bool>) {
            let mut v = Vec::new();
            let mut y = Vec::new();
            for _ in 0..n {
                let x: Vec<f32> = (0..shape.n * FEATURES).map(|_| rnd()).collect();
                // A rule of three features, and noise.
                y.push(x[1] + x[5] > 0.9 || x[20] < 0.1);
                v.push(Sample {
                    key: SessKey::default(),
                    window: 0,
                    packets: 1 + (x[0] * 3.0) as usize,
                    x,
                });
            }
            (v, y)
        };
        let (train, y) = make(600);
        let refs: Vec<&Sample> = train.iter().collect();
        let m = Model::train(
            &refs,
            &y,
            shape,
            Params {
                trees: 9,
                max_depth: 8,
                seed: 3,
                min_votes: 0,
                payload_only: false,
            },
        )
        .unwrap();
        let m = Model::from_json(&m.to_json()).unwrap();
        let (test, _) = make(3000);
        let trefs: Vec<&Sample> = test.iter().collect();
        let (flat, theirs) = (
            m.predict(&trefs).unwrap(),
            m.predict_smartcore(&trefs).unwrap(),
        );
        assert_eq!(flat, theirs);
        assert!(flat.iter().any(|a| *a) && flat.iter().any(|a| !*a));
        let seen = m.predict(&refs).unwrap();
        assert_eq!(seen, m.predict_smartcore(&refs).unwrap());
        // A bar on the trees' votes: all nine take fewer samples for attacks than the
        // majority, one tree more, each a subset of the next; a saved model keeps its bar.
        let mut bars = Vec::new();
        for k in [9u16, 0, 1] {
            let mut mk = Model::from_json(&m.to_json()).unwrap();
            mk.params.min_votes = k;
            let mk = Model::from_json(&mk.to_json()).unwrap();
            assert_eq!(mk.params.min_votes, k);
            bars.push(mk.predict(&trefs).unwrap());
        }
        let count = |v: &Vec<bool>| v.iter().filter(|a| **a).count();
        assert!(count(&bars[0]) < count(&bars[1]) && count(&bars[1]) < count(&bars[2]));
        for w in bars.windows(2) {
            assert!(w[0].iter().zip(&w[1]).all(|(a, b)| !a || *b));
        }
        assert_eq!(bars[1], flat);
        // The bar's walk stops early: the same answer as counting every tree's vote.
        let mut row = Vec::new();
        for s in &trefs {
            if !judged(s, m.shape, false) {
                continue;
            }
            row.clear();
            input_row(s, m.shape, &mut row).unwrap();
            let votes = m.flat.predict(&row).unwrap().1;
            for k in 1..=9 {
                assert_eq!(
                    m.flat.reaches(&row, k).unwrap(),
                    votes >= k,
                    "{k} of {votes}"
                );
            }
        }
        // The score a verdict is reported with: every tree counted, the bar's verdict.
        let mut m9 = Model::from_json(&m.to_json()).unwrap();
        m9.params.min_votes = 9;
        for (s, taken) in trefs.iter().zip(&bars[0]) {
            match m9.votes(s).unwrap() {
                Some((v, trees)) => {
                    assert_eq!(trees, 9);
                    assert_eq!(*taken, v >= 9, "{v} of 9");
                }
                None => assert!(!judged(s, m.shape, false) && !taken),
            }
        }
        // Model files that would make a walk loop, panic or allocate without bound are
        // refused.
        let good: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        let split = good["forest"]["trees"][0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .position(|n| !n["true_child"].is_null())
            .unwrap();
        let mut bad = good.clone();
        bad["forest"]["trees"][0]["nodes"][split]["true_child"] = split.into();
        assert!(Model::from_json(&bad.to_string()).is_err(), "a loop");
        let mut bad = good.clone();
        bad["forest"]["trees"][1]["nodes"] = serde_json::json!([]);
        assert!(Model::from_json(&bad.to_string()).is_err(), "an empty tree");
        let mut bad = good.clone();
        bad["forest"]["trees"][0]["nodes"][split]["split_feature"] = 5000.into();
        assert!(
            Model::from_json(&bad.to_string()).is_err(),
            "a feature past the sample"
        );
        let mut bad = good.clone();
        bad["shape"]["n"] = 1_000_000_000u64.into();
        assert!(Model::from_json(&bad.to_string()).is_err(), "n past 64");
        assert!(Model::from_json(&good.to_string()).is_ok());
    }

    /// A model with a payload forest: a sample is an attack when the first forest says so,
    /// or it carries payload and the second does; a sample without payload is never
    /// judged by the second (which alone takes some for attacks); models that cannot be
    /// each other's payload forest are refused, read from a file too.
    #[test]
    fn a_payload_forest_judges_only_samples_with_payload() {
        let shape = Shape {
            t_ns: 1,
            n: 2,
            max_flows: 10,
            ..Shape::default()
        };
        let bits = |payload: bool| {
            let b = 0x40 | 0x400 | if payload { 0x10 } else { 0 };
            b as f32 / 4096.0
        };
        let mut rnd = uniform(0x0bad_cafe_f00d_1234);
        let mut make = |n: usize| -> Vec<Sample> {
            (0..n)
                .map(|i| {
                    let mut x: Vec<f32> = (0..shape.n * FEATURES).map(|_| rnd()).collect();
                    x[4] = bits(i % 2 == 0);
                    x[FEATURES + 4] = bits(false);
                    Sample {
                        key: SessKey::default(),
                        window: 0,
                        packets: 2,
                        x,
                    }
                })
                .collect()
        };
        let params = Params {
            trees: 9,
            max_depth: 8,
            seed: 5,
            ..Params::default()
        };
        let train = make(800);
        let refs: Vec<&Sample> = train.iter().collect();
        let ya: Vec<bool> = train.iter().map(|s| s.x[1] > 0.7).collect();
        let yb: Vec<bool> = train.iter().map(|s| s.x[5] > 0.5).collect();
        let (a, b) = (
            Model::train(&refs, &ya, shape, params).unwrap().to_json(),
            Model::train(&refs, &yb, shape, params).unwrap().to_json(),
        );
        let read = |j: &str| Model::from_json(j).unwrap();
        let both = read(&read(&a).with_payload(read(&b)).unwrap().to_json());
        let test = make(2000);
        let t: Vec<&Sample> = test.iter().collect();
        let (pa, pb, p) = (
            read(&a).predict(&t).unwrap(),
            read(&b).predict(&t).unwrap(),
            both.predict(&t).unwrap(),
        );
        for i in 0..t.len() {
            let payload = carries_payload(t[i], shape.n);
            assert_eq!(payload, i % 2 == 0);
            assert_eq!(p[i], pa[i] || (payload && pb[i]), "sample {i}");
        }
        assert!(
            (0..t.len()).any(|i| p[i] && !pa[i]),
            "the second forest adds none"
        );
        assert!(
            (0..t.len()).any(|i| i % 2 == 1 && pb[i] && !p[i]),
            "no sample without payload that the second forest alone takes for an attack"
        );
        // Refused: a second forest of another shape; one on a payload forest; a file whose
        // payload forest judges every sample.
        let refused = |m: Result<Model, ModelError>, why: &str| {
            let e = m.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(why), "{why}: {e}");
        };
        let mut other: serde_json::Value = serde_json::from_str(&b).unwrap();
        other["shape"]["t_ns"] = 2.into();
        refused(
            read(&a).with_payload(read(&other.to_string())),
            "window and packets",
        );
        let gated = *read(&both.to_json()).payload.unwrap();
        refused(gated.with_payload(read(&b)), "only a flow model");
        let mut file: serde_json::Value = serde_json::from_str(&both.to_json()).unwrap();
        file["payload"]["params"]["payload_only"] = false.into();
        refused(Model::from_json(&file.to_string()), "without payload");
    }

    /// Both built-in models read; a forest is checked against its own sample kind's width
    /// (the flood forest, relabelled as a session model, splits past the 17 features).
    #[test]
    fn models_are_checked_against_their_sample_kind() {
        assert_eq!(Model::builtin().shape.kind, SampleKind::Packets);
        assert_eq!(Model::builtin_mining().shape.kind, SampleKind::Sessions);
        let mut v: serde_json::Value = serde_json::from_str(&Model::builtin().to_json()).unwrap();
        v["shape"]["kind"] = "sessions".into();
        v["shape"]["n"] = 6.into();
        let e = Model::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("past the 17"), "{e}");
        v["shape"]["n"] = 65.into();
        let e = Model::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("windows of history"), "{e}");
    }
}
