//! A dynamic monitor's metrics as Prometheus/OpenMetrics text.
//!
//! Every metric with `open-metrics-metadata` is one family named after the metric, with
//! the label `dynmon` (the instance), its constant labels, and per entry:
//! - hash maps: one series per key. A key that is a struct of integers gives one label
//!   per field (names from the BTF); any other key gives the label `key`;
//! - arrays: one series per index (label `index`), a one-entry array a single series;
//! - global data (`.bss`, `.data`): one series per variable (label `field`);
//! - per-CPU values are summed; a struct value gives one series per integer field
//!   (label `field`);
//! - queues, stacks and ring buffers: the number of records the read took.
//!
//! `histogram` reads the map as log2 buckets (entry k counts integers below 2^k, the
//! others being in the entries before it) and writes cumulative `_bucket{le="2^k-1"}`
//! series and `_count`; `summary` writes `_count` (entries)
//! and `_sum` (their values). A counter's samples end in `_total`.

use std::{collections::BTreeMap, fmt::Write};

use serde_json::Value;

use super::{
    maps::{MapMeta, T_ARRAY, T_PERCPU_ARRAY, T_QUEUE, T_RINGBUF, T_STACK},
    spec::{Label, MetricConfig, MetricType, PathSpec, Reading},
};

/// What the metrics need of a loaded path: its spec and its maps.
pub trait PathMaps {
    /// The path as asked for.
    fn spec(&self) -> &PathSpec;
    /// Its maps by name.
    fn maps(&self) -> &BTreeMap<String, MapMeta>;
}

/// Running totals of counters whose reads are destructive: metric -> labels -> value.
pub type Totals = BTreeMap<String, BTreeMap<Vec<(String, String)>, f64>>;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value as a sample number: numbers, booleans, per-CPU lists summed.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(*b as u8 as f64),
        Value::String(s) => s.parse().ok(),
        Value::Array(a) if !a.is_empty() && a.iter().all(|x| number(x).is_some()) => {
            Some(a.iter().filter_map(number).sum())
        }
        _ => None,
    }
}

/// (labels, value) pairs of one value: a number, or one per numeric field of an object
/// (per-CPU lists of objects summed field by field).
fn values(v: &Value) -> Vec<(Option<String>, f64)> {
    if let Some(n) = number(v) {
        return vec![(None, n)];
    }
    let obj = match v {
        Value::Object(o) => o.clone(),
        Value::Array(a) if a.iter().all(Value::is_object) && !a.is_empty() => {
            // per-CPU structs: sum each field
            let mut sum = serde_json::Map::new();
            for x in a {
                for (k, f) in x.as_object().unwrap() {
                    if let Some(n) = number(f) {
                        let cur = sum.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                        sum.insert(k.clone(), serde_json::json!(cur + n));
                    }
                }
            }
            sum
        }
        _ => return vec![],
    };
    obj.iter()
        .filter_map(|(k, f)| number(f).map(|n| (Some(k.clone()), n)))
        .collect()
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Label names statewall writes itself.
pub const RESERVED_LABELS: &[&str] = &["dynmon", "field", "index", "le", "key", "quantile"];

/// Whether `n` is a valid label name that is not reserved.
pub fn label_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !n.starts_with("__")
        && !RESERVED_LABELS.contains(&n)
}

/// Key labels of a hash entry: the key's fields when it is a struct of scalars (a name
/// that is not a valid label name, or is taken, becomes `key_<name>` with other
/// characters as `_`), else one label `key`.
fn key_labels(k: &Value, constant: &[Label]) -> Vec<(String, String)> {
    match k {
        Value::Object(o) if o.values().all(|v| !v.is_object() && !v.is_array()) => o
            .iter()
            .map(|(n, v)| {
                let name = if label_name_ok(n) && !constant.iter().any(|l| l.name == *n) {
                    n.clone()
                } else {
                    let clean: String = n
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    format!("key_{clean}")
                };
                (name, label_value(v))
            })
            .collect(),
        other => vec![("key".into(), label_value(other))],
    }
}

fn labels(base: &[(String, String)], more: &[(String, String)]) -> String {
    let all: Vec<String> = base
        .iter()
        .chain(more)
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    format!("{{{}}}", all.join(","))
}

/// A series: labels (without `dynmon` and the constant ones) and value.
type Sample = (Vec<(String, String)>, f64);

/// The series of one reading.
fn samples_of<P: PathMaps>(paths: &[P], r: &Reading, cfg: &MetricConfig) -> Vec<Sample> {
    let constant = cfg
        .open_metrics
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    let mut samples: Vec<Sample> = Vec::new();
    let map_kind = paths[r.path].maps()[&cfg.map_name].map_type;
    match (&r.value, map_kind) {
        (Value::Array(a), T_QUEUE | T_STACK | T_RINGBUF) => samples.push((vec![], a.len() as f64)),
        (Value::Array(a), T_ARRAY | T_PERCPU_ARRAY) => {
            let one = a.len() == 1;
            for (i, v) in a.iter().enumerate() {
                for (field, n) in values(v) {
                    let mut l = Vec::new();
                    if !one {
                        l.push(("index".to_string(), i.to_string()));
                    }
                    if let Some(f) = field {
                        l.push(("field".into(), f));
                    }
                    samples.push((l, n));
                }
            }
        }
        (Value::Array(a), _) => {
            for e in a {
                let kl = key_labels(&e["key"], &constant);
                for (field, n) in values(&e["value"]) {
                    let mut l = kl.clone();
                    if let Some(f) = field {
                        l.push(("field".into(), f));
                    }
                    samples.push((l, n));
                }
            }
        }
        (v, _) => {
            for (field, n) in values(v) {
                let l = field
                    .map(|f| vec![("field".to_string(), f)])
                    .unwrap_or_default();
                samples.push((l, n));
            }
        }
    }
    samples
}

/// The declaration of a reading's metric.
fn config_of<'a, P: PathMaps>(paths: &'a [P], r: &Reading) -> Option<&'a MetricConfig> {
    paths
        .get(r.path)
        .and_then(|p| p.spec().metrics.iter().find(|m| m.name == r.name))
}

/// Whether reading metric `cfg` takes what it reads away (swapped, emptied, popped).
pub fn destructive<P: PathMaps>(paths: &[P], path: usize, cfg: &MetricConfig) -> bool {
    let m = &paths[path].maps()[&cfg.map_name];
    m.swapped || cfg.extraction.empty_on_read || matches!(m.map_type, T_QUEUE | T_STACK | T_RINGBUF)
}

/// The sample names a metric writes besides its own name.
pub fn sample_names(m: &MetricConfig) -> Vec<String> {
    let n = &m.name;
    match m.open_metrics.as_ref().map(|o| o.kind) {
        Some(MetricType::Counter) if !n.ends_with("_total") => vec![format!("{n}_total")],
        Some(MetricType::Histogram) => vec![format!("{n}_bucket"), format!("{n}_count")],
        Some(MetricType::Summary) => vec![format!("{n}_count"), format!("{n}_sum")],
        _ => vec![],
    }
}

/// Most series a counter keeps totals for.
const MAX_TOTALS: usize = 100_000;

/// Adds a read's values into the running totals of counters whose reads are destructive,
/// so that `/metrics` serves counters that only go up whoever took the reads.
pub fn accumulate<P: PathMaps>(paths: &[P], totals: &mut Totals, readings: &[Reading]) {
    for r in readings {
        let Some(cfg) = config_of(paths, r) else {
            continue;
        };
        let counter = cfg
            .open_metrics
            .as_ref()
            .is_some_and(|m| m.kind == MetricType::Counter);
        if !counter || !destructive(paths, r.path, cfg) {
            continue;
        }
        let samples = samples_of(paths, r, cfg);
        let t = totals.entry(r.name.clone()).or_default();
        for (l, n) in samples {
            if let Some(v) = t.get_mut(&l) {
                *v += n;
            } else if t.len() < MAX_TOTALS {
                t.insert(l, n);
            }
        }
    }
}

/// Families being written, by name: instances that declare the same metric share one
/// family (one HELP and TYPE), their series told apart by the `dynmon` label.
#[derive(Default)]
pub struct Families {
    by_name: std::collections::BTreeMap<String, (String, String)>,
    /// Sample name -> the metric that writes it.
    owners: std::collections::BTreeMap<String, String>,
}

impl Families {
    /// Appends every family to `out`.
    pub fn finish(self, out: &mut String) {
        for (head, body) in self.by_name.into_values() {
            out.push_str(&head);
            out.push_str(&body);
        }
    }
}

/// Adds the families of `d`'s readings.
pub fn render<P: PathMaps>(
    instance: &str,
    paths: &[P],
    totals: &Totals,
    readings: &[Reading],
    om: bool,
    fams: &mut Families,
) {
    for r in readings {
        let Some(cfg) = config_of(paths, r) else {
            continue;
        };
        let Some(meta) = &cfg.open_metrics else {
            continue;
        };
        let mut base = vec![("dynmon".to_string(), instance.to_string())];
        base.extend(
            meta.labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone())),
        );
        let samples = samples_of(paths, r, cfg);
        let name = &r.name;
        let help = if meta.help.is_empty() {
            format!("dynmon metric {name} (map {})", cfg.map_name)
        } else {
            meta.help.clone()
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let (mut head, mut body) = (String::new(), String::new());
        match meta.kind {
            MetricType::Counter => {
                let (family, sample) = match name.strip_suffix("_total") {
                    Some(f) => (f.to_string(), name.clone()),
                    None => (name.clone(), format!("{name}_total")),
                };
                let family = if om { family } else { sample.clone() };
                let _ = writeln!(head, "# HELP {family} {help}\n# TYPE {family} counter");
                if destructive(paths, r.path, cfg) {
                    // Running totals over every read (see `accumulate`).
                    for (l, n) in totals.get(name).into_iter().flatten() {
                        let _ = writeln!(body, "{sample}{} {}", labels(&base, l), fmt_num(*n));
                    }
                } else {
                    for (l, n) in &samples {
                        let _ = writeln!(body, "{sample}{} {}", labels(&base, l), fmt_num(*n));
                    }
                }
            }
            MetricType::Gauge | MetricType::Untyped => {
                let t = if meta.kind == MetricType::Gauge {
                    "gauge"
                } else if om {
                    "unknown"
                } else {
                    "untyped"
                };
                let _ = writeln!(head, "# HELP {name} {help}\n# TYPE {name} {t}");
                for (l, n) in &samples {
                    let _ = writeln!(body, "{name}{} {}", labels(&base, l), fmt_num(*n));
                }
            }
            MetricType::Histogram => {
                let _ = writeln!(head, "# HELP {name} {help}\n# TYPE {name} histogram");
                // Bucket k: the sample with index (or key) k.
                let mut buckets: Vec<(u32, f64)> = samples
                    .iter()
                    .filter_map(|(l, n)| {
                        let k = l
                            .iter()
                            .find(|(k, _)| k == "index" || k == "key")
                            .and_then(|(_, v)| v.parse::<u32>().ok())?;
                        Some((k, *n))
                    })
                    .collect();
                buckets.sort_by_key(|b| b.0);
                let mut cum = 0.0;
                for (k, n) in &buckets {
                    cum += n;
                    let le = if *k >= 64 {
                        f64::INFINITY
                    } else {
                        ((1u128 << k) - 1) as f64
                    };
                    let le = (vec![("le".to_string(), fmt_num(le))], cum);
                    let _ = writeln!(
                        body,
                        "{name}_bucket{} {}",
                        labels(&base, &le.0),
                        fmt_num(le.1)
                    );
                }
                let inf = vec![("le".to_string(), "+Inf".to_string())];
                let _ = writeln!(
                    body,
                    "{name}_bucket{} {}",
                    labels(&base, &inf),
                    fmt_num(cum)
                );
                let _ = writeln!(body, "{name}_count{} {}", labels(&base, &[]), fmt_num(cum));
            }
            MetricType::Summary => {
                let _ = writeln!(head, "# HELP {name} {help}\n# TYPE {name} summary");
                let sum: f64 = samples.iter().map(|s| s.1).sum();
                let _ = writeln!(body, "{name}_count{} {}", labels(&base, &[]), samples.len());
                let _ = writeln!(body, "{name}_sum{} {}", labels(&base, &[]), fmt_num(sum));
            }
        }
        let mut writes = sample_names(cfg);
        writes.push(name.clone());
        let clash = writes
            .iter()
            .any(|w| fams.owners.get(w).is_some_and(|o| o != name));
        match fams.by_name.get_mut(name) {
            _ if clash => tracing::warn!(
                dynmon = %instance,
                metric = %name,
                "another dynamic monitor's metric writes the same series names: left out"
            ),
            None => {
                for w in writes {
                    fams.owners.insert(w, name.clone());
                }
                fams.by_name.insert(name.clone(), (head, body));
            }
            Some((h, b)) if h.lines().nth(1) == head.lines().nth(1) => b.push_str(&body),
            Some(_) => tracing::warn!(
                dynmon = %instance,
                metric = %name,
                "another dynamic monitor declares this metric with another type: left out"
            ),
        }
    }
}
