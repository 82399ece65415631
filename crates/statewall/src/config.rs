//! The daemon's configuration file (TOML). `examples/statewall.toml` documents every key;
//! without a file the defaults below apply.
//!
//! Errors name the file, and the line and column (parse errors) or the section and key
//! (validation errors). A config that fails to load changes nothing.

use std::{
    collections::BTreeSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// A configuration error: what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type (the message has line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{path}: {at}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Section and key, e.g. `[[interface]] #2 name`.
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[daemon]`: paths and listeners.
    pub daemon: DaemonConfig,
    /// `[[interface]]`: where the stages attach.
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// `[gate]`: protected ports.
    pub gate: GateConfig,
    /// `[[knock]]`: port-knocking doors (compiled to xfsm machines).
    #[serde(rename = "knock")]
    pub knocks: Vec<KnockConfig>,
    /// `[[xfsm]]`: machines written by hand (after the doors, in file order).
    #[serde(rename = "xfsm")]
    pub machines: Vec<XfsmConfig>,
    /// `[spa]`: Single Packet Authorization (pkd and fwknop).
    pub spa: crate::spaconfig::SpaConfig,
    /// `[firewall]`: sizes of the firewall's tables (instances and rules are managed
    /// through the API and kept under the state directory).
    pub firewall: FirewallConfig,
    /// `[[monitor]]`: traffic monitors (ddos, crypto).
    #[serde(rename = "monitor")]
    pub monitors: Vec<crate::monitor::MonitorSpec>,
    /// `[maps]`: sizes of the other tables, by map name ([`RESIZABLE_MAPS`]); set at the
    /// first start (a change needs `statewall teardown`).
    pub maps: std::collections::BTreeMap<String, u32>,
}

/// Tables `[maps]` may size: (name, smallest, largest, ring buffer). A ring buffer's size
/// is in bytes, a power of two; the others count entries.
pub const RESIZABLE_MAPS: [(&str, u32, u32, bool); 6] = [
    (statewall_common::xfsm::MAP_STATES, 1024, 1 << 22, false),
    (statewall_common::xfsm::MAP_LOCKS, 64, 1 << 22, false),
    (statewall_common::spa::MAP_SPA_RATE, 64, 1 << 22, false),
    (statewall_common::xfsm::MAP_EVENTS, 4096, 1 << 28, true),
    (statewall_common::spa::MAP_SPA_EVENTS, 4096, 1 << 28, true),
    (statewall_common::fw::MAP_FW_LOG, 4096, 1 << 28, true),
];

/// `[firewall]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Distinct rule sets the classifier can hold (half per table generation); each takes
    /// 1.3 KB of kernel memory. Set at the first start (a change needs `statewall teardown`).
    pub bitsets_max: u32,
    /// Connection table size (LRU: when full, the least recently seen connections go
    /// first). Set at the first start.
    pub conntrack_max: u32,
    /// Idle timeouts of tracked connections: TCP during the handshake ...
    pub ct_tcp_syn: Dur,
    /// ... TCP established ...
    pub ct_tcp_established: Dur,
    /// ... TCP after a FIN ...
    pub ct_tcp_closing: Dur,
    /// ... UDP and ICMP echo.
    pub ct_udp: Dur,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            bitsets_max: 4096,
            conntrack_max: 65536,
            ct_tcp_syn: Dur::secs(60),
            ct_tcp_established: Dur::secs(86400),
            ct_tcp_closing: Dur::secs(10),
            ct_udp: Dur::secs(60),
        }
    }
}

/// A duration written `"500ms"`, `"5s"`, `"2m"`, `"1h"` or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub std::time::Duration);

impl Dur {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(std::time::Duration::from_secs(s))
    }
    /// Nanoseconds (saturating).
    pub fn ns(&self) -> u64 {
        self.0.as_nanos().min(u64::MAX as u128) as u64
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (like 500ms, 5s, 2m, 1h)"))?;
        let ms = match unit.trim() {
            "ms" => n,
            "" | "s" => n.saturating_mul(1000),
            "m" | "min" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            u => return Err(format!("unknown unit {u:?} in {s:?} (ms, s, m, h)")),
        };
        Ok(Dur(std::time::Duration::from_millis(ms)))
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Dur::secs(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// One knock step: a port and protocol, written knockd's way: `7000`, `8000:udp`,
/// `9000:tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Step(pub PortSpec);

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.port, proto_name(self.0.proto))
    }
}

impl std::str::FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (port, proto) = t.split_once(':').unwrap_or((t, "tcp"));
        let spec: PortSpec = format!("{}/{}", proto.trim(), port.trim())
            .parse()
            .map_err(|e: String| format!("knock step {s:?}: {e}"))?;
        Ok(Step(spec))
    }
}

/// A knock sequence: a list of steps, written as a TOML list or knockd's comma-separated
/// string (`"7000,8000:udp,9000"`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Sequence(pub Vec<Step>);

impl Sequence {
    /// Parses knockd's syntax.
    pub fn parse(s: &str) -> Result<Sequence, String> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Step>, String>>()
            .map(Sequence)
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<String> = self.0.iter().map(|s| s.to_string()).collect();
        f.write_str(&v.join(","))
    }
}

impl Serialize for Sequence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sequence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            L(Vec<toml::Value>),
        }
        let text = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::L(l) => l
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!("knock step {other}: a port or \"port:proto\"")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(serde::de::Error::custom)?
                .join(","),
        };
        Sequence::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Brute-force cut-off: `failures` wrong knocks within `within` lock the source out for
/// `duration`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lockout {
    /// Failures that lock a source out.
    pub failures: u32,
    /// Window in which they are counted.
    pub within: Dur,
    /// How long the lockout lasts.
    pub duration: Dur,
}

/// `[[knock]]`: one door.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnockConfig {
    /// Door name (events, logs, API).
    pub name: String,
    /// Knock sequence: `"7000,8000:udp,9000"` or `[7000, "8000:udp", 9000]`. May be left
    /// out when the door has one-time, time-based or counter-based sequences.
    #[serde(default)]
    pub sequence: Sequence,
    /// knockd's one-time sequences: a file with one sequence a line; each opens once, and
    /// its line is then overwritten with `#` (knockd's marking).
    #[serde(default)]
    pub one_time_sequences: Option<PathBuf>,
    /// Time-based sequences: a file holding a shared secret; the sequence of the current
    /// `time_period` (and of the neighbouring ones, for clock skew) opens the door.
    #[serde(default)]
    pub time_secret: Option<PathBuf>,
    /// Length of a time window.
    #[serde(default = "default_time_period")]
    pub time_period: Dur,
    /// Counter-based sequences: a file holding a shared secret; the sequences of the next
    /// `counter_window` counters open the door, each once, and using one moves the counter
    /// past it (kept under the state directory).
    #[serde(default)]
    pub counter_secret: Option<PathBuf>,
    /// How many counters ahead are accepted (a client that knocked without reaching the
    /// door is not lost).
    #[serde(default = "default_counter_window")]
    pub counter_window: u32,
    /// Steps of a derived (time- or counter-based) sequence.
    #[serde(default = "default_derived_steps")]
    pub derived_steps: usize,
    /// Protocol of derived steps: `tcp` or `udp`.
    #[serde(default = "default_derived_proto")]
    pub derived_proto: String,
    /// Ports the door opens for the knocking source (`tcp/22`, `udp/9922`); they are
    /// protected (dropped for everyone else).
    pub protected: Vec<PortSpec>,
    /// TCP flags a TCP knock must carry, knockd's syntax (`syn,!ack`; `!` = must be clear).
    #[serde(default = "default_tcpflags")]
    pub tcpflags: String,
    /// Time allowed between consecutive knocks.
    #[serde(default = "default_step_timeout")]
    pub step_timeout: Dur,
    /// Time allowed for the whole sequence from its first knock (knockd's `seq_timeout`).
    #[serde(default = "default_seq_timeout")]
    pub seq_timeout: Dur,
    /// How long the door stays open for new connections (established ones keep working).
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    /// Reset a source part-way through on a packet to any other port.
    #[serde(default = "default_true")]
    pub strict: bool,
    /// A sequence that closes the door again (revokes the source's grants).
    #[serde(default)]
    pub close_sequence: Option<Sequence>,
    /// The sequence opens the door, and the same sequence knocked while open closes it.
    #[serde(default)]
    pub toggle: bool,
    /// Brute-force cut-off (absent = none).
    #[serde(default)]
    pub lockout: Option<Lockout>,
    /// Command run when the door opens, as an argument vector; `%IP%` is the source.
    #[serde(default)]
    pub start_command: Option<Vec<String>>,
    /// Command run when the door closes (window over), as an argument vector.
    #[serde(default)]
    pub stop_command: Option<Vec<String>>,
    /// Time limit for each command (killed after it).
    #[serde(default = "default_cmd_timeout")]
    pub cmd_timeout: Dur,
    /// User the commands run as (absent = the daemon's user).
    #[serde(default)]
    pub run_as: Option<String>,
    /// UDP payload every UDP knock must carry: `true` for the canned default
    /// ([`DEFAULT_KNOCK_PAYLOAD`]) or a string; absent or `false` = any payload.
    #[serde(default)]
    pub udp_payload: Option<PayloadSpec>,
    /// Payload per UDP step port (`"2222" = "text"`), overriding `udp_payload` there.
    #[serde(default)]
    pub step_payload: std::collections::BTreeMap<String, PayloadSpec>,
}

/// The payload `udp_payload = true` asks for (what `statewall knock --default-payload`
/// sends).
pub const DEFAULT_KNOCK_PAYLOAD: &[u8] = b"statewall-knock";

/// A UDP payload to match: `true` (the canned default), `false` (none) or a string.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PayloadSpec {
    /// `true` = [`DEFAULT_KNOCK_PAYLOAD`], `false` = no match on the payload.
    Canned(bool),
    /// These bytes (UTF-8).
    Text(String),
}

impl PayloadSpec {
    /// The bytes to match (`None` for `false`), checked: 1 to 64 bytes.
    pub fn bytes(&self) -> Result<Option<Vec<u8>>, String> {
        let b = match self {
            PayloadSpec::Canned(false) => return Ok(None),
            PayloadSpec::Canned(true) => DEFAULT_KNOCK_PAYLOAD.to_vec(),
            PayloadSpec::Text(t) => t.as_bytes().to_vec(),
        };
        let max = statewall_common::xfsm::PAYLOAD_MAX;
        if b.is_empty() || b.len() > max {
            return Err(format!("a payload of {} bytes: 1 to {max}", b.len()));
        }
        Ok(Some(b))
    }
}

/// `[[xfsm]]`: a machine written by hand.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XfsmConfig {
    /// Name (events, counters).
    pub name: String,
    /// Lookup scope: fields of `src_ip`, `dst_ip`, `proto`, `src_port`, `dst_port` (at most
    /// two addresses and two ports).
    pub lookup: Vec<String>,
    /// Update scope (default: the lookup scope); same number of address and port fields
    /// and the protocol in both or neither.
    #[serde(default)]
    pub update: Option<Vec<String>>,
    /// States besides DEFAULT.
    #[serde(default)]
    pub states: Vec<String>,
    /// Transitions (`[[xfsm.transition]]`), searched most specific first.
    #[serde(default, rename = "transition")]
    pub transitions: Vec<XfsmTransition>,
}

/// `[[xfsm.transition]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XfsmTransition {
    /// State it leaves.
    #[serde(default = "default_state")]
    pub state: String,
    /// `ingress`, `egress` or `any`.
    #[serde(default = "default_direction")]
    pub direction: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or `any`.
    #[serde(default = "default_any")]
    pub proto: String,
    /// Destination port (TCP/UDP), 0 = any.
    #[serde(default)]
    pub port: u16,
    /// TCP flags in knockd's syntax (`syn,!ack`); absent = any.
    #[serde(default)]
    pub tcpflags: Option<String>,
    /// UDP payload the packet must carry.
    #[serde(default)]
    pub payload: Option<PayloadSpec>,
    /// `pass` (hand on to the next stage) or `drop`.
    #[serde(default = "default_pass")]
    pub action: String,
    /// State to go to; absent = stay (timers kept, nothing written).
    #[serde(default)]
    pub next: Option<String>,
    /// Idle timeout to arm on the state gone to.
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// State the idle timeout rolls back to (default DEFAULT).
    #[serde(default)]
    pub idle_rollback: Option<String>,
    /// Hard timeout to arm.
    #[serde(default)]
    pub hard_timeout: Option<Dur>,
    /// State the hard timeout rolls back to (default DEFAULT).
    #[serde(default)]
    pub hard_rollback: Option<String>,
    /// `hard`, `idle` or `both`: the state gone to keeps the current deadline (and its
    /// rollback) instead of arming a new one (a sequence's timer keeps running).
    #[serde(default)]
    pub keep: Option<String>,
}

fn default_state() -> String {
    "DEFAULT".into()
}
fn default_direction() -> String {
    "ingress".into()
}
fn default_any() -> String {
    "any".into()
}
fn default_pass() -> String {
    "pass".into()
}

impl KnockConfig {
    /// A door with every key at its default and no sequence or port yet.
    pub fn new(name: &str) -> KnockConfig {
        KnockConfig {
            name: name.into(),
            sequence: Sequence::default(),
            one_time_sequences: None,
            time_secret: None,
            time_period: default_time_period(),
            counter_secret: None,
            counter_window: default_counter_window(),
            derived_steps: default_derived_steps(),
            derived_proto: default_derived_proto(),
            protected: Vec::new(),
            tcpflags: default_tcpflags(),
            step_timeout: default_step_timeout(),
            seq_timeout: default_seq_timeout(),
            open_for: default_open_for(),
            strict: true,
            close_sequence: None,
            toggle: false,
            lockout: None,
            start_command: None,
            stop_command: None,
            cmd_timeout: default_cmd_timeout(),
            run_as: None,
            udp_payload: None,
            step_payload: Default::default(),
        }
    }
}

fn default_tcpflags() -> String {
    "syn,!ack".into()
}
fn default_step_timeout() -> Dur {
    Dur::secs(5)
}
fn default_seq_timeout() -> Dur {
    Dur::secs(25)
}
fn default_open_for() -> Dur {
    Dur::secs(30)
}
fn default_cmd_timeout() -> Dur {
    Dur::secs(10)
}
fn default_time_period() -> Dur {
    Dur::secs(30)
}
fn default_counter_window() -> u32 {
    3
}
fn default_derived_steps() -> usize {
    4
}
fn default_derived_proto() -> String {
    "udp".into()
}

/// Name of protocol 6 or 17 (`tcp` for anything but 17).
pub fn proto_name(p: u8) -> &'static str {
    if p == 17 {
        "udp"
    } else {
        "tcp"
    }
}

/// Steps as (protocol, port) pairs, the form the door compiler takes.
pub fn step_pairs(steps: &[Step]) -> Vec<(u8, u16)> {
    steps.iter().map(|s| (s.0.proto, s.0.port)).collect()
}

/// Protocol number of `tcp` / `udp`.
pub fn proto_number(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(6),
        "udp" => Some(17),
        _ => None,
    }
}
fn default_true() -> bool {
    true
}

/// TCP flag bits by knockd name.
const TCP_FLAG_NAMES: [(&str, u8); 6] = [
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
];

/// Parses knockd's `tcpflags` (`syn,!ack`): returns (mask, value).
pub fn parse_tcpflags(s: &str) -> Result<(u8, u8), String> {
    let (mut mask, mut value) = (0u8, 0u8);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (neg, name) = match part.strip_prefix('!') {
            Some(n) => (true, n.trim()),
            None => (false, part),
        };
        let bit = TCP_FLAG_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                format!("unknown TCP flag {name:?} in {s:?} (fin, syn, rst, psh, ack, urg)")
            })?;
        if mask & bit != 0 {
            return Err(format!("TCP flag {name:?} named twice in {s:?}"));
        }
        mask |= bit;
        if !neg {
            value |= bit;
        }
    }
    Ok((mask, value))
}

/// `[daemon]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// bpffs directory holding the pins.
    pub bpffs_root: PathBuf,
    /// Directory for durable user-space state.
    pub state_dir: PathBuf,
    /// Unix socket of the REST API (mode 0600).
    pub socket: PathBuf,
    /// Optional TCP listener for the REST API (loopback advised); needs `token_file`
    /// unless `no_auth`.
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token the TCP listener requires.
    pub token_file: Option<PathBuf>,
    /// Serve the TCP listener without a token (only when asked for explicitly).
    pub no_auth: bool,
    /// Listener for `/metrics` (OpenMetrics / Prometheus text).
    pub metrics_listen: Option<SocketAddr>,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or an env-filter string).
    pub log_level: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            bpffs_root: crate::pins::DEFAULT_ROOT.into(),
            state_dir: "/var/lib/statewall".into(),
            socket: "/run/statewall/api.sock".into(),
            listen: None,
            token_file: None,
            no_auth: false,
            metrics_listen: None,
            log_level: "info".into(),
        }
    }
}

/// How the ingress stages attach.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IngressHook {
    /// tcx ingress (default): every stage is its own program, chained in order.
    #[default]
    Tcx,
    /// XDP: one program running the ingress stages in the same order, before the stack.
    Xdp,
    /// Nothing on ingress.
    Off,
}

/// `[[interface]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Interface name.
    pub name: String,
    /// Network namespace (a name under `/run/netns`) the interface lives in; absent = the
    /// daemon's own.
    #[serde(default)]
    pub netns: Option<String>,
    /// Ingress hook: `tcx` (default), `xdp` or `off`.
    #[serde(default)]
    pub ingress: IngressHook,
}

/// `[gate]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Protected ports, `tcp/22`, `udp/9922` (a bare number means TCP): dropped unless the
    /// source holds a grant.
    pub protected: Vec<PortSpec>,
    /// Size of the grant table (preallocated; a full table refuses new grants).
    pub grants_max: u32,
    /// Size of the table of flows opened under a grant (preallocated; when full, a granted
    /// connection still opens but lives only as long as its grant, counted as `flows_full`).
    pub flows_max: u32,
    /// A TCP connection opened under a grant keeps working after the grant ends until it
    /// has been idle this long; `0` = connections live only as long as the grant.
    pub flow_idle_tcp: Dur,
    /// The same after a FIN or RST was seen.
    pub flow_closing_tcp: Dur,
    /// The same for UDP flows.
    pub flow_idle_udp: Dur,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            protected: Vec::new(),
            grants_max: 4096,
            flows_max: 16384,
            flow_idle_tcp: Dur::secs(7200),
            flow_closing_tcp: Dur::secs(10),
            flow_idle_udp: Dur::secs(60),
        }
    }
}

/// A protocol and port, written `tcp/22` or `udp/53`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Port.
    pub port: u16,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", proto_name(self.proto), self.port)
    }
}

impl std::str::FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (proto, port) = match s.split_once('/') {
            Some((p, n)) => (p, n),
            None => ("tcp", s),
        };
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            other => return Err(format!("unknown protocol {other:?} in {s:?} (tcp or udp)")),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("bad port in {s:?} (1-65535)"))?;
        if port == 0 {
            return Err(format!("bad port in {s:?} (1-65535)"));
        }
        Ok(PortSpec { proto, port })
    }
}

impl Serialize for PortSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: e.to_string().trim_end().into(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Checks what the types cannot.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |at: String, message: String| ConfigError::Invalid {
            path: origin.into(),
            at,
            message,
        };
        let mut seen = BTreeSet::new();
        for (i, ifc) in self.interfaces.iter().enumerate() {
            let at = format!("[[interface]] #{} name", i + 1);
            if ifc.name.is_empty() || ifc.name.len() > 15 || ifc.name.contains(['/', ' ', ':']) {
                return Err(bad(
                    at,
                    format!(
                        "{:?} is not an interface name (1-15 characters, no '/', ':' or space)",
                        ifc.name
                    ),
                ));
            }
            if let Some(ns) = &ifc.netns {
                if ns.is_empty() || ns.contains('/') || ns == "-" || ns.starts_with('.') {
                    return Err(bad(
                        format!("[[interface]] #{} netns", i + 1),
                        format!("{ns:?} is not a namespace name"),
                    ));
                }
            }
            if !seen.insert((ifc.netns.clone(), ifc.name.clone())) {
                return Err(bad(at, format!("interface {:?} listed twice", ifc.name)));
            }
        }
        if self.gate.grants_max == 0 || self.gate.grants_max > 1 << 20 {
            return Err(bad(
                "[gate] grants_max".into(),
                format!("{} is out of range 1..=1048576", self.gate.grants_max),
            ));
        }
        if self.gate.flows_max == 0 || self.gate.flows_max > 1 << 22 {
            return Err(bad(
                "[gate] flows_max".into(),
                format!("{} is out of range 1..=4194304", self.gate.flows_max),
            ));
        }
        if !self.gate.flow_idle_tcp.0.is_zero() && self.gate.flow_closing_tcp.0.is_zero() {
            return Err(bad(
                "[gate] flow_closing_tcp".into(),
                "must be above 0 while flow_idle_tcp is (a closing connection would be cut at once)".into(),
            ));
        }
        let mut ports = BTreeSet::new();
        for p in &self.gate.protected {
            if !ports.insert(*p) {
                return Err(bad("[gate] protected".into(), format!("{p} listed twice")));
            }
        }
        if self.firewall.conntrack_max < 16 || self.firewall.conntrack_max > 1 << 24 {
            return Err(bad(
                "[firewall] conntrack_max".into(),
                format!("{}: 16 to 16777216", self.firewall.conntrack_max),
            ));
        }
        for (k, d) in [
            ("ct_tcp_syn", self.firewall.ct_tcp_syn),
            ("ct_tcp_established", self.firewall.ct_tcp_established),
            ("ct_tcp_closing", self.firewall.ct_tcp_closing),
            ("ct_udp", self.firewall.ct_udp),
        ] {
            if d.0.is_zero() {
                return Err(bad(format!("[firewall] {k}"), "must be above 0".into()));
            }
        }
        if self.firewall.bitsets_max < 64 || self.firewall.bitsets_max > 1 << 17 {
            return Err(bad(
                "[firewall] bitsets_max".into(),
                format!("{}: 64 to 131072", self.firewall.bitsets_max),
            ));
        }
        for (name, &n) in &self.maps {
            let at = format!("[maps] {name}");
            let own_key = [
                (statewall_common::maps::MAP_GATE_GRANTS, "[gate] grants_max"),
                (statewall_common::maps::MAP_GATE_FLOWS, "[gate] flows_max"),
                (statewall_common::ct::MAP_CT, "[firewall] conntrack_max"),
                (
                    statewall_common::fw::MAP_FW_BITSETS,
                    "[firewall] bitsets_max",
                ),
            ];
            if let Some((_, key)) = own_key.iter().find(|k| k.0 == name) {
                return Err(bad(at, format!("sized by {key}")));
            }
            let Some(&(_, lo, hi, ring)) = RESIZABLE_MAPS.iter().find(|m| m.0 == name) else {
                let names: Vec<&str> = RESIZABLE_MAPS.iter().map(|m| m.0).collect();
                return Err(bad(
                    at,
                    format!("not a table [maps] sizes (those are: {})", names.join(", ")),
                ));
            };
            if !(lo..=hi).contains(&n) || (ring && !n.is_power_of_two()) {
                return Err(bad(
                    at,
                    format!(
                        "{n}: {lo} to {hi}{}",
                        if ring {
                            " bytes, a power of two"
                        } else {
                            " entries"
                        }
                    ),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.monitors.iter().enumerate() {
            m.validate()
                .map_err(|(k, msg)| bad(format!("[[monitor]] #{} {k}", i + 1), msg))?;
            if !names.insert(m.name.as_str()) {
                return Err(bad(
                    format!("[[monitor]] #{} name", i + 1),
                    format!("{:?} is used twice", m.name),
                ));
            }
        }
        self.validate_knocks(&bad)?;
        self.spa.resolve().map_err(|(at, msg)| bad(at, msg))?;
        for t in self.spa.trigger_doors() {
            if self.knocks.iter().any(|k| k.name == t.name) {
                return Err(bad(
                    "[spa]".into(),
                    format!(
                        "{:?}: an SPA action or stanza with commands has the name of a knock door",
                        t.name
                    ),
                ));
            }
        }
        if self.daemon.token_file.is_some() && self.daemon.no_auth {
            return Err(bad(
                "[daemon] no_auth".into(),
                "no_auth = true with a token_file: say which one you mean (the token would be ignored)".into(),
            ));
        }
        let level_ok = |d: &str| {
            let d = d.trim();
            matches!(d, "error" | "warn" | "info" | "debug" | "trace" | "off")
                || (d.contains('=') && !d.starts_with('='))
        };
        if self.daemon.log_level.trim().is_empty()
            || !self.daemon.log_level.split(',').all(level_ok)
            || tracing_subscriber::EnvFilter::try_new(&self.daemon.log_level).is_err()
        {
            return Err(bad(
                "[daemon] log_level".into(),
                format!(
                    "{:?} is not a log filter (error, warn, info, debug, trace)",
                    self.daemon.log_level
                ),
            ));
        }
        if self.daemon.listen.is_some() && self.daemon.token_file.is_none() && !self.daemon.no_auth
        {
            return Err(bad(
                "[daemon] listen".into(),
                "a TCP listener needs token_file (or no_auth = true, which lets anyone who can reach it change the firewall)".into(),
            ));
        }
        Ok(())
    }

    fn validate_knocks(
        &self,
        bad: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let max = statewall_common::xfsm::MAX_MACHINES;
        if self.knocks.len() > max {
            return Err(bad(
                format!("[[knock]] #{}", max + 1),
                format!("{} doors: at most {max}", self.knocks.len()),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, k) in self.knocks.iter().enumerate() {
            let at = |key: &str| format!("[[knock]] #{} ({}) {key}", i + 1, k.name);
            if k.name.is_empty()
                || !k
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    format!("[[knock]] #{} name", i + 1),
                    format!("{:?}: use letters, digits, '-' and '_'", k.name),
                ));
            }
            if !names.insert(k.name.clone()) {
                return Err(bad(at("name"), "two doors with this name".into()));
            }
            let n = k.sequence.0.len();
            let other = k.one_time_sequences.is_some()
                || k.time_secret.is_some()
                || k.counter_secret.is_some();
            if (n == 0 && !other) || n > 32 {
                return Err(bad(
                    at("sequence"),
                    format!("{n} steps: 1 to 32 (or give one_time_sequences, time_secret or counter_secret)"),
                ));
            }
            if k.time_secret.is_some() || k.counter_secret.is_some() {
                let max = crate::knockclient::DERIVE_MAX_STEPS;
                if k.derived_steps < 2 || k.derived_steps > max {
                    return Err(bad(
                        at("derived_steps"),
                        format!("{}: 2 to {max}", k.derived_steps),
                    ));
                }
                if proto_number(&k.derived_proto).is_none() {
                    return Err(bad(
                        at("derived_proto"),
                        format!("{:?}: tcp or udp", k.derived_proto),
                    ));
                }
            }
            if k.time_period.0 < std::time::Duration::from_secs(1) {
                return Err(bad(
                    at("time_period"),
                    format!("{}: at least 1s", k.time_period),
                ));
            }
            if k.counter_window == 0 || k.counter_window > 16 {
                return Err(bad(
                    at("counter_window"),
                    format!("{}: 1 to 16", k.counter_window),
                ));
            }
            if k.strict && n >= 2 {
                let d: Vec<i32> = k
                    .sequence
                    .0
                    .windows(2)
                    .map(|w| w[1].0.port as i32 - w[0].0.port as i32)
                    .collect();
                if d.iter().all(|&x| x == 1) || d.iter().all(|&x| x == -1) {
                    return Err(bad(
                        at("sequence"),
                        format!(
                            "{} is consecutive ports in order: a port scan would walk through it",
                            k.sequence
                        ),
                    ));
                }
            }
            let gmax = statewall_common::xfsm::GRANT_SET_PORTS;
            if k.protected.is_empty() || k.protected.len() > gmax {
                return Err(bad(
                    at("protected"),
                    format!("{} ports: 1 to {gmax}", k.protected.len()),
                ));
            }
            for p in &k.protected {
                if k.sequence.0.iter().any(|s| s.0 == *p) {
                    return Err(bad(
                        at("protected"),
                        format!("{p} is also a step of the sequence"),
                    ));
                }
            }
            parse_tcpflags(&k.tcpflags).map_err(|e| bad(at("tcpflags"), e))?;
            for (key, d) in [
                ("step_timeout", k.step_timeout),
                ("seq_timeout", k.seq_timeout),
                ("open_for", k.open_for),
                ("cmd_timeout", k.cmd_timeout),
            ] {
                if d.0.is_zero() || d.0 > std::time::Duration::from_secs(86400 * 365) {
                    return Err(bad(at(key), format!("{d}: from 1ms to 365 days")));
                }
            }
            if let Some(l) = &k.lockout {
                if l.failures == 0 || l.within.0.is_zero() || l.duration.0.is_zero() {
                    return Err(bad(
                        at("lockout"),
                        "failures, within and duration must all be above zero (leave lockout out to turn it off)".into(),
                    ));
                }
            }
            for (key, c) in [
                ("start_command", &k.start_command),
                ("stop_command", &k.stop_command),
            ] {
                if let Some(c) = c {
                    if c.is_empty() || c[0].is_empty() {
                        return Err(bad(at(key), "an empty command".into()));
                    }
                }
            }
            if let Some(u) = &k.run_as {
                if u.is_empty() {
                    return Err(bad(at("run_as"), "an empty user name".into()));
                }
            }
            if let Some(p) = &k.udp_payload {
                p.bytes().map_err(|e| bad(at("udp_payload"), e))?;
            }
            let udp_steps: BTreeSet<u16> = k
                .sequence
                .0
                .iter()
                .chain(k.close_sequence.iter().flat_map(|s| &s.0))
                .filter(|s| s.0.proto == 17)
                .map(|s| s.0.port)
                .collect();
            for (port, p) in &k.step_payload {
                let at = at(&format!("step_payload.{port:?}"));
                match port.trim().parse::<u16>() {
                    Ok(n) if udp_steps.contains(&n) => {}
                    _ => {
                        return Err(bad(
                            at,
                            format!(
                                "{port:?} is not the port of a UDP step of this door's sequences"
                            ),
                        ))
                    }
                }
                p.bytes().map_err(|e| bad(at, e))?;
            }
        }
        let total = self.knocks.len() + self.machines.len();
        if total > max {
            return Err(bad(
                "[[xfsm]]".into(),
                format!(
                    "{} doors and {} machines: at most {max} in all",
                    self.knocks.len(),
                    self.machines.len()
                ),
            ));
        }
        for (i, m) in self.machines.iter().enumerate() {
            if !names.insert(m.name.clone()) {
                return Err(bad(
                    format!("[[xfsm]] #{} ({}) name", i + 1, m.name),
                    "a door or machine with this name exists".into(),
                ));
            }
        }
        self.raw_machines()
            .map(|_| ())
            .map_err(|(at, msg)| bad(at, msg))?;
        let doors = self.doors();
        let raws = self.raw_machines().unwrap_or_default();
        crate::xfsm::compile(&doors, &raws).map_err(|e| bad("[[knock]]/[[xfsm]]".into(), e))?;
        Ok(())
    }

    /// The `[[xfsm]]` machines resolved for [`crate::xfsm::compile`]; errors are (section
    /// and key, message).
    pub fn raw_machines(&self) -> Result<Vec<crate::xfsm::RawMachine>, (String, String)> {
        use statewall_common::xfsm::{field, DIR_EGRESS, DIR_INGRESS};
        let mut out = Vec::new();
        for (i, m) in self.machines.iter().enumerate() {
            let sec = format!("[[xfsm]] #{} ({})", i + 1, m.name);
            let at = |key: &str| format!("{sec} {key}");
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    at("name"),
                    format!("{:?}: use letters, digits, '-' and '_'", m.name),
                ));
            }
            let scope = |key: &str, v: &[String]| -> Result<Vec<u8>, (String, String)> {
                let ids = v
                    .iter()
                    .map(|f| match f.as_str() {
                        "src_ip" => Ok(field::SRC_IP),
                        "dst_ip" => Ok(field::DST_IP),
                        "proto" => Ok(field::PROTO),
                        "src_port" => Ok(field::SRC_PORT),
                        "dst_port" => Ok(field::DST_PORT),
                        other => Err((
                            at(key),
                            format!("{other:?}: src_ip, dst_ip, proto, src_port or dst_port"),
                        )),
                    })
                    .collect::<Result<Vec<u8>, _>>()?;
                if statewall_common::xfsm::Scope::compile(&ids).is_none() {
                    return Err((
                        at(key),
                        "each field at most once, at most two addresses and two ports".into(),
                    ));
                }
                Ok(ids)
            };
            let lookup = scope("lookup", &m.lookup)?;
            let update = match &m.update {
                Some(u) => scope("update", u)?,
                None => lookup.clone(),
            };
            let (l, u) = (
                statewall_common::xfsm::Scope::compile(&lookup).unwrap(),
                statewall_common::xfsm::Scope::compile(&update).unwrap(),
            );
            if l.shape() != u.shape() {
                return Err((
                    at("update"),
                    "the update scope must give keys of the lookup scope's shape (as many addresses and ports, and the protocol in both or neither)".into(),
                ));
            }
            let mut states = vec!["DEFAULT".to_string()];
            for s in &m.states {
                if s.is_empty() || states.contains(s) {
                    return Err((at("states"), format!("{s:?}: empty or listed twice")));
                }
                states.push(s.clone());
            }
            if states.len() > 255 {
                return Err((at("states"), "at most 254 states besides DEFAULT".into()));
            }
            if m.transitions.is_empty() {
                return Err((
                    at("transition"),
                    "a machine needs at least one transition".into(),
                ));
            }
            let mut trans = Vec::new();
            for (j, t) in m.transitions.iter().enumerate() {
                let at = |key: &str| format!("{sec} transition #{} {key}", j + 1);
                let state_id = |key: &str, name: &str| -> Result<u8, (String, String)> {
                    states
                        .iter()
                        .position(|s| s == name)
                        .map(|i| i as u8)
                        .ok_or_else(|| {
                            (at(key), format!("{name:?} is not a state of this machine"))
                        })
                };
                let dirs = match t.direction.as_str() {
                    "ingress" => vec![DIR_INGRESS],
                    "egress" => vec![DIR_EGRESS],
                    "any" => vec![DIR_INGRESS, DIR_EGRESS],
                    other => {
                        return Err((
                            at("direction"),
                            format!("{other:?}: ingress, egress or any"),
                        ))
                    }
                };
                let proto = match t.proto.as_str() {
                    "any" => 0,
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    "icmpv6" => 58,
                    other => {
                        return Err((
                            at("proto"),
                            format!("{other:?}: tcp, udp, icmp, icmpv6 or any"),
                        ))
                    }
                };
                if t.port != 0 && proto != 6 && proto != 17 {
                    return Err((at("port"), "a port needs proto tcp or udp".into()));
                }
                let tcp_flags = match &t.tcpflags {
                    Some(f) if proto == 6 => parse_tcpflags(f).map_err(|e| (at("tcpflags"), e))?,
                    Some(_) => return Err((at("tcpflags"), "TCP flags need proto tcp".into())),
                    None => (0, 0),
                };
                let payload = match &t.payload {
                    Some(p) => {
                        let b = p.bytes().map_err(|e| (at("payload"), e))?;
                        if b.is_some() && (proto != 17 || t.port == 0) {
                            return Err((
                                at("payload"),
                                "a payload match needs proto udp and a port".into(),
                            ));
                        }
                        b.and_then(|b| statewall_common::xfsm::Payload::from_bytes(&b))
                    }
                    None => None,
                };
                let drop = match t.action.as_str() {
                    "pass" => false,
                    "drop" => true,
                    other => return Err((at("action"), format!("{other:?}: pass or drop"))),
                };
                let timer = |key: &str, d: &Option<Dur>, rb: &Option<String>, rkey: &str| {
                    let ns = d.map(|d| d.ns()).unwrap_or(0);
                    if d.is_some() && (ns == 0 || ns > 86400 * 365 * 1_000_000_000) {
                        return Err((at(key), "from 1ms to 365 days".into()));
                    }
                    let r = match rb {
                        Some(n) if d.is_none() => {
                            return Err((at(rkey), format!("{n:?} without {key}")))
                        }
                        Some(n) => state_id(rkey, n)?,
                        None => 0,
                    };
                    Ok((ns, r))
                };
                let idle = timer(
                    "idle_timeout",
                    &t.idle_timeout,
                    &t.idle_rollback,
                    "idle_rollback",
                )?;
                let hard = timer(
                    "hard_timeout",
                    &t.hard_timeout,
                    &t.hard_rollback,
                    "hard_rollback",
                )?;
                use statewall_common::xfsm::{E_KEEP_HARD, E_KEEP_IDLE};
                let keep = match t.keep.as_deref() {
                    None => 0,
                    Some("hard") => E_KEEP_HARD,
                    Some("idle") => E_KEEP_IDLE,
                    Some("both") => E_KEEP_HARD | E_KEEP_IDLE,
                    Some(other) => {
                        return Err((at("keep"), format!("{other:?}: hard, idle or both")))
                    }
                };
                if (keep & E_KEEP_HARD != 0 && t.hard_timeout.is_some())
                    || (keep & E_KEEP_IDLE != 0 && t.idle_timeout.is_some())
                {
                    return Err((
                        at("keep"),
                        "a kept timer cannot also be armed (drop its *_timeout)".into(),
                    ));
                }
                if t.next.is_none() && keep != 0 {
                    return Err((
                        at("keep"),
                        "without next the state stays with both timers kept already".into(),
                    ));
                }
                let next = match &t.next {
                    Some(n) => Some(state_id("next", n)?),
                    None => {
                        if t.idle_timeout.is_some() || t.hard_timeout.is_some() {
                            return Err((
                                at("next"),
                                "timeouts are armed on the state gone to: give next (the same state to re-arm them)".into(),
                            ));
                        }
                        None
                    }
                };
                trans.push(crate::xfsm::RawTrans {
                    state: state_id("state", &t.state)?,
                    dirs,
                    proto,
                    port: t.port,
                    tcp_flags,
                    payload,
                    drop,
                    next,
                    idle,
                    hard,
                    keep,
                });
            }
            out.push(crate::xfsm::RawMachine {
                name: m.name.clone(),
                lookup,
                update,
                states,
                transitions: trans,
            });
        }
        Ok(out)
    }

    /// Every protected (protocol, port): `[gate] protected` and the doors' ports.
    pub fn protected_ports(&self) -> Vec<PortSpec> {
        let mut all: BTreeSet<PortSpec> = self.gate.protected.iter().copied().collect();
        for k in &self.knocks {
            all.extend(k.protected.iter().copied());
        }
        all.extend(
            self.spa
                .protected()
                .into_iter()
                .map(|(proto, port)| PortSpec { proto, port }),
        );
        all.into_iter().collect()
    }

    /// The doors with their fixed sequences only, ready for [`crate::xfsm::compile`] (the
    /// config must be valid); [`crate::sequences::expand`] adds the one-time and derived
    /// ones.
    pub fn doors(&self) -> Vec<crate::xfsm::KnockDoor> {
        self.knocks
            .iter()
            .map(|k| {
                let (tcp_mask, tcp_value) = parse_tcpflags(&k.tcpflags).unwrap_or((0x12, 0x02));
                crate::xfsm::KnockDoor {
                    name: k.name.clone(),
                    sequences: if k.sequence.0.is_empty() {
                        Vec::new()
                    } else {
                        vec![step_pairs(&k.sequence.0)]
                    },
                    once: Vec::new(),
                    close: k.close_sequence.iter().map(|s| step_pairs(&s.0)).collect(),
                    toggle: k.toggle,
                    protected: k.protected.iter().map(|p| (p.proto, p.port)).collect(),
                    tcp_mask,
                    tcp_value,
                    step_timeout_ns: k.step_timeout.ns(),
                    seq_timeout_ns: k.seq_timeout.ns(),
                    open_for_ns: k.open_for.ns(),
                    strict: k.strict,
                    lockout: k
                        .lockout
                        .as_ref()
                        .map(|l| (l.failures, l.within.ns(), l.duration.ns())),
                    payload_all: k
                        .udp_payload
                        .as_ref()
                        .and_then(|p| p.bytes().ok().flatten())
                        .and_then(|b| statewall_common::xfsm::Payload::from_bytes(&b)),
                    payloads: k
                        .step_payload
                        .iter()
                        .filter_map(|(port, p)| {
                            let b = p.bytes().ok().flatten()?;
                            Some((
                                port.trim().parse().ok()?,
                                statewall_common::xfsm::Payload::from_bytes(&b)?,
                            ))
                        })
                        .collect(),
                }
            })
            .collect()
    }
}
