//! What a dynamic monitor is made of, as users write it: paths, metric declarations and
//! their options (Polycube Dynmon's shapes).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::Direction;

/// What the extraction of a metric does on each read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExtractionOptions {
    /// Read from the copy that was active, after switching to the other one.
    #[serde(rename = "swap-on-read", default)]
    pub swap_on_read: bool,
    /// Empty the map after reading it.
    #[serde(rename = "empty-on-read", default)]
    pub empty_on_read: bool,
}
/// OpenMetrics type of a metric.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Monotonic count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// log2 buckets: entry k counts values below 2^k.
    Histogram,
    /// Count and sum of the entries' values.
    Summary,
    /// Anything else.
    #[default]
    Untyped,
}
/// A constant label.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value.
    pub value: String,
}
/// How a metric is exported as OpenMetrics.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OpenMetricsMetadata {
    /// HELP text.
    #[serde(default)]
    pub help: String,
    /// TYPE.
    #[serde(rename = "type", default)]
    pub kind: MetricType,
    /// Constant labels.
    #[serde(default)]
    pub labels: Vec<Label>,
}
/// A metric declaration, as Dynmon's `metric-configs` entries.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Metric name (also its OpenMetrics family name).
    pub name: String,
    /// The map it reads.
    #[serde(rename = "map-name")]
    pub map_name: String,
    /// swap-on-read / empty-on-read.
    #[serde(rename = "extraction-options", default)]
    pub extraction: ExtractionOptions,
    /// OpenMetrics export (none: JSON only).
    #[serde(
        rename = "open-metrics-metadata",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub open_metrics: Option<OpenMetricsMetadata>,
    /// statewall extension: the BTF type of a ring buffer's records (`struct event`).
    #[serde(
        rename = "value-type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub value_type: Option<String>,
}
/// A metrics file for `statewall dynmon load --metrics` (TOML: `[[metric]]` tables).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// The declarations.
    #[serde(default)]
    pub metric: Vec<MetricConfig>,
}
/// One path: its code, where it runs, what it exports.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// A name for people (Dynmon's path `name`).
    #[serde(default)]
    pub name: String,
    /// Hooks.
    #[serde(default)]
    pub direction: Direction,
    /// libbpf-style C source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An eBPF object, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The program to attach, when the object has more than one that fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Maps this path takes from the monitor's other path, by name, instead of its own
    /// (a BCC-dialect program's `"extern"` tables; set by the translation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
    /// A program in Polycube's BCC dialect on the ingress path, translated for XDP
    /// (Polycube's `XDP_SKB`/`XDP_DRV` cubes) instead of tc.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xdp: bool,
    /// Metric declarations.
    #[serde(default)]
    pub metrics: Vec<MetricConfig>,
}
/// A dynamic monitor instance.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DynmonSpec {
    /// Interface it is attached to (none: loaded and verified, not attached yet).
    #[serde(default)]
    pub interface: Option<String>,
    /// Network namespace of the interface (none: the daemon's).
    #[serde(default)]
    pub netns: Option<String>,
    /// One or two paths.
    pub paths: Vec<PathSpec>,
}
/// A name statewall accepts for instances and metrics.
pub fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// One metric's reading.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Metric name.
    pub name: String,
    /// Path index.
    pub path: usize,
    /// The decoded value (Dynmon's shapes).
    pub value: Value,
    /// Unix time of the read, microseconds.
    pub timestamp_us: u64,
}
