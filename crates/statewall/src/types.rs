//! The value types the config sections and the stages share: durations (`"5s"`), ports
//! (`"tcp/22"`), knock steps and sequences (`"7000,8000:udp"`), protocol names and TCP
//! flag masks, an `[[interface]]`, a prefix as a key. They parse from and write back to
//! the config file's notation; imports nothing of this crate.

use std::{collections::HashMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

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

/// A prefix as a key: (family 4 or 6, address masked to the length, length).
pub type PKey = (u8, [u8; 16], u8);

/// Masks an address to a prefix length (the firewall's rules, the detect stage's
/// prefixes).
pub fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32) as u32)
            };
            IpAddr::from((u32::from(v) & m).to_be_bytes())
        }
        IpAddr::V6(v) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128) as u32)
            };
            IpAddr::from((u128::from(v) & m).to_be_bytes())
        }
    }
}

/// A value written in the config's notation that does not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a number with a unit.
    #[error("{0:?} is not a duration (like 500ms, 5s, 2m, 1h)")]
    Duration(String),
    /// A unit other than ms, s, m, h.
    #[error("unknown unit {unit:?} in {text:?} (ms, s, m, h)")]
    DurationUnit {
        /// The unit.
        unit: String,
        /// The whole value.
        text: String,
    },
    /// A protocol other than tcp or udp.
    #[error("unknown protocol {proto:?} in {text:?} (tcp or udp)")]
    Protocol {
        /// The protocol.
        proto: String,
        /// The whole value.
        text: String,
    },
    /// A port that is no number in 1-65535.
    #[error("bad port in {0:?} (1-65535)")]
    Port(String),
    /// A knock step whose port does not read.
    #[error("knock step {text:?}: {source}")]
    Step {
        /// The step.
        text: String,
        /// What is wrong with its port.
        source: Box<ValueError>,
    },
    /// An unknown TCP flag name.
    #[error("unknown TCP flag {flag:?} in {text:?} (fin, syn, rst, psh, ack, urg)")]
    TcpFlag {
        /// The flag.
        flag: String,
        /// The whole value.
        text: String,
    },
    /// A TCP flag named twice.
    #[error("TCP flag {flag:?} named twice in {text:?}")]
    TcpFlagTwice {
        /// The flag.
        flag: String,
        /// The whole value.
        text: String,
    },
    /// A name out of the naming rule (shown cut to 40 characters).
    #[error(
        "{0}: 1 to {NAME_MAX} letters, digits, '_', '.' and '-', not starting with '.' or '-'"
    )]
    Name(String),
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| ValueError::Duration(s.into()))?;
        let ms = match unit.trim() {
            "ms" => n,
            "" | "s" => n.saturating_mul(1000),
            "m" | "min" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            u => {
                return Err(ValueError::DurationUnit {
                    unit: u.into(),
                    text: s.into(),
                })
            }
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let t = s.trim();
        let (port, proto) = t.split_once(':').unwrap_or((t, "tcp"));
        let spec: PortSpec = format!("{}/{}", proto.trim(), port.trim())
            .parse()
            .map_err(|e| ValueError::Step {
                text: s.into(),
                source: Box::new(e),
            })?;
        Ok(Step(spec))
    }
}
/// A knock sequence: a list of steps, written as a TOML list or knockd's comma-separated
/// string (`"7000,8000:udp,9000"`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Sequence(pub Vec<Step>);
impl Sequence {
    /// Parses knockd's syntax.
    pub fn parse(s: &str) -> Result<Sequence, ValueError> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Step>, ValueError>>()
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
pub fn parse_tcpflags(s: &str) -> Result<(u8, u8), ValueError> {
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
            .ok_or_else(|| ValueError::TcpFlag {
                flag: name.into(),
                text: s.into(),
            })?;
        if mask & bit != 0 {
            return Err(ValueError::TcpFlagTwice {
                flag: name.into(),
                text: s.into(),
            });
        }
        mask |= bit;
        if !neg {
            value |= bit;
        }
    }
    Ok((mask, value))
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (proto, port) = match s.split_once('/') {
            Some((p, n)) => (p, n),
            None => ("tcp", s),
        };
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            other => {
                return Err(ValueError::Protocol {
                    proto: other.into(),
                    text: s.into(),
                })
            }
        };
        let port: u16 = port.parse().map_err(|_| ValueError::Port(s.into()))?;
        if port == 0 {
            return Err(ValueError::Port(s.into()));
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

/// Which hooks of an interface.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Arriving packets.
    #[default]
    Ingress,
    /// Leaving packets.
    Egress,
    /// Both.
    Both,
}

/// The longest name of a firewall, monitor, dynamic monitor, door or machine.
pub const NAME_MAX: usize = 64;

/// Checks a name of a firewall, monitor, dynamic monitor, door or machine: 1 to
/// [`NAME_MAX`] characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-` (names appear
/// in pin paths, file names, metric labels and URLs).
pub fn check_name(name: &str) -> Result<(), ValueError> {
    let shown = if name.chars().count() > 40 {
        format!(
            "{:?}... ({} characters)",
            name.chars().take(40).collect::<String>(),
            name.chars().count()
        )
    } else {
        format!("{name:?}")
    };
    let ok = (1..=NAME_MAX).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(ValueError::Name(shown))
    }
}

/// A fast hasher (a multiply-rotate over 64-bit words). Unseeded ([`FastMap`]) for keys
/// the configuration decides (the firewall's bitsets, their hashes, prefixes), where a
/// collision costs time, never a wrong answer; seeded once per process ([`Seeded`]) for
/// keys traffic chooses (the classifier's flows), so that a colliding set found against
/// one daemon does not carry to another.
#[derive(Default)]
pub struct WordHasher(u64);

/// `HashMap`s with [`WordHasher`].
pub type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<WordHasher>>;

impl std::hash::Hasher for WordHasher {
    fn finish(&self) -> u64 {
        // Every bit of the state into the low bits a map indexes by.
        let h = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_ne_bytes(c.try_into().unwrap_or_default()));
        }
        for b in chunks.remainder() {
            self.write_u64(*b as u64);
        }
    }
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, w: usize) {
        self.write_u64(w as u64);
    }
}

/// Builds [`WordHasher`]s that start from a random seed drawn once per process.
#[derive(Clone, Copy)]
pub struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        Seeded(*SEED.get_or_init(|| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }))
    }
}

impl std::hash::BuildHasher for Seeded {
    type Hasher = WordHasher;
    fn build_hasher(&self) -> WordHasher {
        WordHasher(self.0)
    }
}
