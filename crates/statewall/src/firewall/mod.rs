//! Firewall instances as users manage them (REST, Polycube-compatible subset): named
//! instances with an INGRESS and an EGRESS chain, attached to interfaces; rules with
//! Polycube's fields and positional ids; batches applied all or nothing. The state is kept
//! in `STATE_DIR/firewall.json` and written into the kernel (`crate::firewall::rules`) on every change
//! and at start, so a restart keeps enforcing the same rules with the same counters.
//!
//! Owns the `[firewall]` section (`config`), rules as the classifier sees them (`rule`),
//! their compilation into a chain's tables (`rules`), the classifier's
//! tables (`sets`, `tables`, `write`, and the IPv4 direct table beside the prefix tries,
//! `direct`) and what it writes into the kernel (`kernel`). May import: `engine`, `types`.

pub mod batch;
pub mod change;
pub mod config;
pub mod direct;
pub mod journal;
pub mod kernel;
pub mod log;
mod place;
pub mod rule;
pub mod rules;
mod scrub;
pub mod sets;
pub mod tables;
pub mod write;

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use statewall_common::firewall::{ACT_ACCEPT, ACT_DROP, ACT_LOG, MAX_INSTANCES};

use crate::firewall::rules::{mask, Chain, Rule};

/// A rule as the API takes and shows it (Polycube's field names).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Position (shown; taken by insert/update/delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<usize>,
    /// Source CIDR (host bits are masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Destination CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// TCP, UDP, ICMP, ICMPv6 or ANY (any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4proto: Option<String>,
    /// Source port or range `1000-2000` (a number or a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<PortArg>,
    /// Destination port or range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<PortArg>,
    /// `SYN,!ACK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcpflags: Option<String>,
    /// NEW, ESTABLISHED, RELATED, INVALID (connection tracking: not yet; refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<String>,
    /// DROP, ACCEPT (FORWARD = ACCEPT), LOG; any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A port given as a number or a string (`"22"`, `"1000-2000"`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortArg {
    /// A number.
    N(u64),
    /// A string.
    S(String),
}

/// Read by the JSON value's own type, not as serde's untagged enum (which buffers the
/// value and builds an error for each variant it tries: a third of a 10,000-rule batch's
/// reading).
impl<'de> Deserialize<'de> for PortArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortArg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port: a number, or a string such as \"22\" or \"1000-2000\"")
            }
            fn visit_u64<E>(self, n: u64) -> Result<PortArg, E> {
                Ok(PortArg::N(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<PortArg, E> {
                Ok(PortArg::S(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<PortArg, E> {
                Ok(PortArg::S(s))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the firewall stage refuses, and why. The API maps each kind to its HTTP status
/// (`daemon::api`, in one place).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// Not a port or a port range.
    #[error("{0:?} is not a port (1-65535) or a range (1000-2000)")]
    Port(String),
    /// A range whose low end is above its high end.
    #[error("{0:?}: the range is empty")]
    EmptyRange(String),
    /// Not an address or a CIDR.
    #[error("{0:?} is not an IPv4 or IPv6 CIDR")]
    Cidr(String),
    /// A blank inside or around an address.
    #[error("{0:?} holds a blank: write ADDR or ADDR/LEN")]
    Blank(String),
    /// A prefix length out of range.
    #[error("{text:?}: prefix length 0-{max}")]
    PrefixLen {
        /// The value.
        text: String,
        /// 32 or 128.
        max: u8,
    },
    /// An unknown TCP flag.
    #[error("{0:?} is not a TCP flag (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR)")]
    TcpFlag(String),
    /// An unknown protocol.
    #[error("{0:?} is not TCP, UDP, ICMP, ICMPv6 or ANY")]
    Protocol(String),
    /// An unknown conntrack state.
    #[error("{0:?} is not NEW, ESTABLISHED, RELATED or INVALID")]
    CtState(String),
    /// An unknown action.
    #[error("{0:?} is not DROP, ACCEPT, FORWARD or LOG")]
    Action(String),
    /// An unknown default action.
    #[error("{0:?} is not DROP or ACCEPT")]
    Default(String),
    /// An unknown chain.
    #[error("{0:?} is not a chain (INGRESS, EGRESS)")]
    Chain(String),
    /// A field that needs another (a port needs TCP or UDP, flags need TCP).
    #[error("{0}")]
    Needs(&'static str),
    /// Source and destination of different families.
    #[error("an {dst} address with an {src} src: the rule could never match")]
    Families {
        /// The destination's family.
        dst: &'static str,
        /// The source's.
        src: &'static str,
    },
    /// A batch operation that cannot be read.
    #[error("{0}")]
    Operation(&'static str),
    /// An operation naming one that does not exist.
    #[error("operation {0:?}: insert, append, update or delete")]
    UnknownOperation(String),
    /// A rule whose JSON does not decode.
    #[error("{0}")]
    Json(String),
    /// An id past the end of the chain.
    #[error("id {id}: the chain has {rules} rules")]
    PastEnd {
        /// The id.
        id: usize,
        /// Rules in the chain.
        rules: usize,
    },
    /// An id of no rule.
    #[error("id {id}: no such rule ({rules} rules)")]
    NoSuchRule {
        /// The id.
        id: usize,
        /// Rules in the chain.
        rules: usize,
    },
    /// What is wrong, and in which field or rule.
    #[error("{at}: {source}")]
    At {
        /// The field (`src`, `dport`, ...) or the rule (`INGRESS rules[3]`).
        at: String,
        /// What is wrong with it.
        source: Box<FirewallError>,
    },
    /// A name out of the naming rule.
    #[error("name: {0}")]
    Name(#[from] crate::types::ValueError),
    /// An instance of this name exists.
    #[error("firewall {0:?} exists")]
    Exists(String),
    /// Every instance slot is taken.
    #[error("at most {MAX_INSTANCES} firewall instances")]
    NoSlot,
    /// The instances' file could not be read or written.
    #[error("{path}: {msg}")]
    Store {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        msg: String,
    },
}

impl FirewallError {
    /// This error, said of field or rule `at`.
    pub fn at(self, at: impl Into<String>) -> FirewallError {
        FirewallError::At {
            at: at.into(),
            source: Box::new(self),
        }
    }
}

/// The firewall stage's result.
pub type FwResult<T> = std::result::Result<T, FirewallError>;

fn port_range(p: &PortArg) -> FwResult<(u16, u16)> {
    let s = match p {
        PortArg::N(n) => match u16::try_from(*n) {
            Ok(n) if n != 0 => return Ok((n, n)),
            _ => return Err(FirewallError::Port(n.to_string())),
        },
        PortArg::S(s) => s.trim(),
    };
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let parse = |x: &str| -> FwResult<u16> {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| FirewallError::Port(s.into()))
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        return Err(FirewallError::EmptyRange(s.into()));
    }
    Ok((lo, hi))
}

fn cidr(s: &str) -> FwResult<(IpAddr, u8)> {
    // What is stored must be what was sent: no blanks inside or around.
    if s.chars().any(char::is_whitespace) {
        return Err(FirewallError::Blank(s.into()));
    }
    let (a, l) = s
        .split_once('/')
        .map(|(a, l)| (a, Some(l)))
        .unwrap_or((s, None));
    let addr: IpAddr = a
        .trim()
        .parse()
        .map_err(|_| FirewallError::Cidr(s.into()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match l {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| FirewallError::PrefixLen {
                text: s.into(),
                max,
            })?,
        None => max,
    };
    Ok((mask(addr, len), len))
}

/// The normal text of a prefix that [`cidr`] read from `text`: `text` itself when it is
/// already that (an IPv4 address with no host bits, written `a.b.c.d/len`: Rust reads
/// IPv4 only in its one decimal form, without leading zeros), else written out.
fn cidr_text(text: Option<&str>, (a, l): (IpAddr, u8)) -> String {
    if let (IpAddr::V4(v4), Some(t)) = (a, text) {
        if let Some((addr, len)) = t.split_once('/') {
            let plain_len =
                len.bytes().all(|b| b.is_ascii_digit()) && (len == "0" || !len.starts_with('0'));
            if plain_len && addr.parse() == Ok(v4) && len.parse() == Ok(l) {
                return t.to_string();
            }
        }
    }
    format!("{a}/{l}")
}

/// Parses `SYN,!ACK` (Polycube's flags; any case): (mask, value).
pub fn parse_flags(s: &str) -> FwResult<(u8, u8)> {
    let (mut m, mut v) = (0u8, 0u8);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (neg, name) = match part.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, part),
        };
        let bit = match name.to_ascii_uppercase().as_str() {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            _ => return Err(FirewallError::TcpFlag(part.into())),
        };
        m |= bit;
        if !neg {
            v |= bit;
        }
    }
    Ok((m, v))
}

fn proto(s: &str) -> FwResult<Option<u8>> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "ANY" | "" => None,
        "TCP" => Some(6),
        "UDP" => Some(17),
        "ICMP" => Some(1),
        "ICMPV6" | "ICMP6" => Some(58),
        o => return Err(FirewallError::Protocol(o.into())),
    })
}

fn ct_state(s: &str) -> FwResult<u8> {
    use statewall_common::ct;
    match s.to_ascii_uppercase().as_str() {
        "NEW" => Ok(ct::NEW),
        "ESTABLISHED" => Ok(ct::ESTABLISHED),
        "RELATED" => Ok(ct::RELATED),
        "INVALID" => Ok(ct::INVALID),
        o => Err(FirewallError::CtState(o.into())),
    }
}

fn ct_name(st: u8) -> &'static str {
    ["NEW", "ESTABLISHED", "RELATED", "INVALID"][st as usize & 3]
}

/// Parses an action: DROP, ACCEPT, FORWARD (= ACCEPT), LOG.
pub fn parse_action(s: &str) -> FwResult<u8> {
    match s.to_ascii_uppercase().as_str() {
        "DROP" => Ok(ACT_DROP),
        "ACCEPT" | "FORWARD" => Ok(ACT_ACCEPT),
        "LOG" => Ok(ACT_LOG),
        o => Err(FirewallError::Action(o.into())),
    }
}

fn action_name(a: u8) -> &'static str {
    match a {
        ACT_DROP => "DROP",
        ACT_LOG => "LOG",
        _ => "ACCEPT",
    }
}

impl RuleSpec {
    /// Checks and normalises (masked CIDRs, upper-case protocol and action, ranges as
    /// strings); errors name the field.
    pub fn normalise(&self) -> FwResult<RuleSpec> {
        self.checked().map(|(n, _)| n)
    }

    /// Checks the spec once: its normal form ([`RuleSpec::normalise`]) and the classifier's
    /// rule ([`RuleSpec::rule`] of that form), from the one parse of each field.
    pub fn checked(&self) -> FwResult<(RuleSpec, Rule)> {
        let src = match &self.src {
            Some(s) => Some(cidr(s).map_err(|e| e.at("src"))?),
            None => None,
        };
        let dst = match &self.dst {
            Some(s) => Some(cidr(s).map_err(|e| e.at("dst"))?),
            None => None,
        };
        if let (Some((s, _)), Some((d, _))) = (src, dst) {
            if s.is_ipv6() != d.is_ipv6() {
                let (v6, v4) = ("IPv6", "IPv4");
                let (dst, src) = if d.is_ipv6() { (v6, v4) } else { (v4, v6) };
                return Err(FirewallError::Families { dst, src }.at("dst"));
            }
        }
        let pr = match &self.l4proto {
            Some(p) => proto(p).map_err(|e| e.at("l4proto"))?,
            None => None,
        };
        let mut ports = [None, None];
        for ((name, v), out) in [("sport", &self.sport), ("dport", &self.dport)]
            .into_iter()
            .zip(&mut ports)
        {
            if let Some(p) = v {
                let r = port_range(p).map_err(|e| e.at(name))?;
                if !matches!(pr, Some(6) | Some(17)) {
                    return Err(FirewallError::Needs("a port needs l4proto TCP or UDP").at(name));
                }
                *out = Some(r);
            }
        }
        let flags = match &self.tcpflags {
            Some(f) => {
                let fl = parse_flags(f).map_err(|e| e.at("tcpflags"))?;
                if pr != Some(6) {
                    return Err(FirewallError::Needs("needs l4proto TCP").at("tcpflags"));
                }
                Some(fl)
            }
            None => None,
        };
        let ct = match &self.conntrack {
            Some(c) => Some(ct_state(c).map_err(|e| e.at("conntrack"))?),
            None => None,
        };
        let a =
            parse_action(self.action.as_deref().unwrap_or("DROP")).map_err(|e| e.at("action"))?;
        let port_text = |r: Option<(u16, u16)>| {
            r.map(|(lo, hi)| {
                PortArg::S(if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                })
            })
        };
        let n = RuleSpec {
            id: None,
            src: src.map(|p| cidr_text(self.src.as_deref(), p)),
            dst: dst.map(|p| cidr_text(self.dst.as_deref(), p)),
            l4proto: pr.map(|p| {
                match p {
                    6 => "TCP",
                    17 => "UDP",
                    1 => "ICMP",
                    _ => "ICMPv6",
                }
                .to_string()
            }),
            sport: port_text(ports[0]),
            dport: port_text(ports[1]),
            tcpflags: self
                .tcpflags
                .as_ref()
                .map(|f| f.to_ascii_uppercase().replace(' ', "")),
            conntrack: ct.map(|st| ct_name(st).into()),
            action: Some(action_name(a).into()),
            description: self.description.clone(),
        };
        let rule = Rule {
            src,
            dst,
            proto: pr,
            sport: ports[0],
            dport: ports[1],
            tcpflags: flags,
            ct,
            action: a,
        };
        Ok((n, rule))
    }

    /// The classifier's rule (the spec must be normalised).
    pub fn rule(&self) -> Rule {
        let pr = |p: &Option<PortArg>| p.as_ref().and_then(|p| port_range(p).ok());
        Rule {
            src: self.src.as_deref().and_then(|s| cidr(s).ok()),
            dst: self.dst.as_deref().and_then(|s| cidr(s).ok()),
            proto: self
                .l4proto
                .as_deref()
                .and_then(|p| proto(p).ok().flatten()),
            sport: pr(&self.sport),
            dport: pr(&self.dport),
            tcpflags: self.tcpflags.as_deref().and_then(|f| parse_flags(f).ok()),
            ct: self.conntrack.as_deref().and_then(|c| ct_state(c).ok()),
            action: parse_action(self.action.as_deref().unwrap_or("DROP")).unwrap_or(ACT_DROP),
        }
    }
}

/// One chain of an instance.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ChainState {
    /// Rules in order (normalised; ids are positions), each boxed: an insert or a delete
    /// in the middle of 10,000 moves 80 KB of pointers, not 2.5 MB of rules.
    pub rules: Vec<Box<RuleSpec>>,
    /// Default action: DROP or ACCEPT.
    pub default: String,
    /// Packets of known connections are accepted before the rules.
    #[serde(default)]
    pub accept_established: bool,
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState {
            rules: Vec::new(),
            default: "ACCEPT".into(),
            accept_established: false,
        }
    }
}

/// An interface an instance is attached to.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// Namespace (None = the daemon's).
    pub netns: Option<String>,
    /// Interface name.
    pub ifname: String,
}

/// A firewall instance.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Instance {
    /// Kernel slot (chains `2 * slot` and `2 * slot + 1`).
    pub slot: u32,
    /// Polycube's `type`: `TC`, or `XDP_SKB` / `XDP_DRV`, whose ingress chain runs in XDP
    /// (the kernel picks native or generic XDP; see `kernel::ingress_mode`). Egress chains
    /// run on tcx either way.
    #[serde(default)]
    pub kind: String,
    /// Where it is attached.
    pub ports: Vec<Port>,
    /// INGRESS chain.
    pub ingress: ChainState,
    /// EGRESS chain.
    pub egress: ChainState,
}

/// The direction of the chain called `INGRESS` (0) / `EGRESS` (1), any case.
pub fn chain_dir(name: &str) -> FwResult<u32> {
    match name.to_ascii_uppercase().as_str() {
        "INGRESS" => Ok(0),
        "EGRESS" => Ok(1),
        o => Err(FirewallError::Chain(o.into())),
    }
}

/// A chain's default action: DROP, or ACCEPT (FORWARD = ACCEPT), any case.
pub fn parse_default(s: &str) -> FwResult<&'static str> {
    match s.to_ascii_uppercase().as_str() {
        "DROP" => Ok("DROP"),
        "ACCEPT" | "FORWARD" => Ok("ACCEPT"),
        o => Err(FirewallError::Default(o.into())),
    }
}

impl Instance {
    /// The chain called `INGRESS` / `EGRESS` (any case).
    pub fn chain(&self, name: &str) -> FwResult<&ChainState> {
        Ok(if chain_dir(name)? == 0 {
            &self.ingress
        } else {
            &self.egress
        })
    }

    /// The same, to change it.
    pub fn chain_mut(&mut self, name: &str) -> FwResult<&mut ChainState> {
        Ok(if chain_dir(name)? == 0 {
            &mut self.ingress
        } else {
            &mut self.egress
        })
    }

    /// The kernel chain number of the chain called `name`.
    pub fn chain_no(&self, name: &str) -> FwResult<u32> {
        Ok(self.slot * 2 + chain_dir(name)?)
    }
}

/// Every instance, by name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct FwState {
    /// Instances.
    pub instances: BTreeMap<String, Instance>,
    /// Rulesets applied with `--confirm` and not confirmed yet: what to go back to, and
    /// when (Unix seconds). Kept on disk, so a restart still reverts.
    #[serde(default)]
    pub pending: BTreeMap<String, Pending>,
    /// The journal's records this state holds (`journal`: later ones are replayed on
    /// load).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An unconfirmed apply.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Pending {
    /// Revert at this Unix time unless confirmed.
    pub deadline: u64,
    /// The instance as it was before.
    pub previous: Instance,
}

/// A whole chain as `apply` takes it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    /// DROP or ACCEPT (default: unchanged).
    #[serde(default)]
    pub default: Option<String>,
    /// Rules in order (replacing the chain's).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// accept-established (default: unchanged).
    #[serde(default, rename = "accept-established")]
    pub accept_established: Option<bool>,
}

/// Body of `apply`: the chains to replace, and the confirmation window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApplySpec {
    /// The INGRESS chain.
    #[serde(default, rename = "INGRESS")]
    pub ingress: Option<ChainSpec>,
    /// The EGRESS chain.
    #[serde(default, rename = "EGRESS")]
    pub egress: Option<ChainSpec>,
    /// Seconds to confirm in; absent = applied for good.
    #[serde(default)]
    pub confirm: Option<u64>,
}

impl Instance {
    /// This instance with `spec` applied (rules checked; errors name the chain and rule).
    pub fn with(&self, spec: &ApplySpec) -> FwResult<Instance> {
        let mut n = self.clone();
        for (name, c, cs) in [
            ("INGRESS", &mut n.ingress, &spec.ingress),
            ("EGRESS", &mut n.egress, &spec.egress),
        ] {
            let Some(cs) = cs else { continue };
            c.rules = cs
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    r.normalise()
                        .map(Box::new)
                        .map_err(|e| e.at(format!("{name} rules[{i}]")))
                })
                .collect::<Result<_, _>>()?;
            if let Some(d) = &cs.default {
                c.default = parse_default(d)
                    .map_err(|e| e.at(format!("{name} default")))?
                    .into();
            }
            if let Some(a) = cs.accept_established {
                c.accept_established = a;
            }
        }
        Ok(n)
    }
}

/// Reads the chains a cluster pushes for an instance (`statewall cluster push firewall
/// NAME FILE`): the body of `POST /api/v1/firewall/{name}/apply`, without `confirm`, every
/// rule checked (errors name the chain and rule).
pub fn read_policy(text: &[u8]) -> FwResult<ApplySpec> {
    let spec: ApplySpec =
        serde_json::from_slice(text).map_err(|e| FirewallError::Json(e.to_string()))?;
    if spec.confirm.is_some() {
        return Err(FirewallError::Operation(
            "`confirm` has no meaning in pushed policy (hosts apply it for good)",
        ));
    }
    // Every rule checked here, so that a bad one is named before anything is applied.
    let empty = Instance {
        slot: 0,
        kind: String::new(),
        ports: Vec::new(),
        ingress: ChainState::default(),
        egress: ChainState::default(),
    };
    empty.with(&spec)?;
    Ok(spec)
}

impl FwState {
    /// A new instance, in the first free slot.
    pub fn create(&mut self, name: &str, kind: &str) -> FwResult<&Instance> {
        crate::types::check_name(name)?;
        if self.instances.contains_key(name) {
            return Err(FirewallError::Exists(name.into()));
        }
        let used: Vec<u32> = self.instances.values().map(|i| i.slot).collect();
        let slot = (0..MAX_INSTANCES)
            .find(|s| !used.contains(s))
            .ok_or(FirewallError::NoSlot)?;
        self.instances.insert(
            name.into(),
            Instance {
                slot,
                kind: kind.into(),
                ports: Vec::new(),
                ingress: ChainState::default(),
                egress: ChainState::default(),
            },
        );
        Ok(&self.instances[name])
    }

    /// The classifier's chains, by chain number.
    pub fn chains(&self) -> BTreeMap<u32, Chain> {
        let mut out = BTreeMap::new();
        for inst in self.instances.values() {
            for (dir, c) in [(0, &inst.ingress), (1, &inst.egress)] {
                out.insert(
                    inst.slot * 2 + dir,
                    Chain {
                        rules: c.rules.iter().map(|r| r.rule()).collect(),
                        default_action: parse_action(&c.default).unwrap_or(ACT_ACCEPT),
                        accept_established: c.accept_established,
                    },
                );
            }
        }
        out
    }
}
