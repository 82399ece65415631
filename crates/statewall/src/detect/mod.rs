//! The `detect` stage: flood detectors that act in the kernel from the first packets, an
//! allowlist no mitigation touches, and source blocks with expiries.
//!
//! The in-kernel detectors are xfsm machines written for the user from `[detect]`
//! ([`DetectConfig::machines`]), one per attack kind, keyed by the destination: each counts
//! the kind's packets per one-second window and, at its threshold, moves the destination
//! to `FLOOD` (an event carries the window's count), where
//! - `enforce` applies the countermeasure: a SYN flood's SYNs pass only on retransmission
//!   (a second machine, keyed by the connection attempt, drops each first SYN: spoofed
//!   sources never send one twice); a UDP or ICMP flood, or reflected traffic from an
//!   amplifier port, is held to the threshold per second, the rest dropped;
//! - `monitor` (the default) changes nothing and reports the same detection.
//!
//! `FLOOD` lasts `expiry` after the last packet over the threshold (re-armed at most once
//! a second: a state write per dropped packet would cost every packet of the flood); the
//! machine sees the packets it drops, so a flood that goes on keeps its mitigation. The
//! machines do not
//! run for a source on the allowlist (the kernel skips them: [`CTL_EXEMPT`]), so a flood
//! that spoofs an allowlisted source is neither counted nor dropped.
//!
//! Source blocks (`statewall detect block`, `kernel`) are dropped first on ingress, in XDP
//! where the interface's ingress runs in XDP; the allowlist wins over a block.
//!
//! The learned flow classifier (`[detect.classifier]`): a ddos monitor instance of its own,
//! read once per model window by the daemon; its records become LUCID-style samples
//! (`windows`, the same code that reads captures: `capture`), a random forest (`model`)
//! classifies them, and under `enforce` each attacking flow's source is blocked for
//! `expiry`, re-armed while the block's drop count grows (`live`, the daemon's task in
//! `daemon::classify`). `learn` trains and evaluates from labelled captures.
//!
//! The mining detector (`[detect.mining]`) is the same loop over a crypto monitor instance
//! of its own: each window's session values join each session's last windows
//! (`sessions`, the same code for captures), a forest trained on sessions classifies them,
//! and under `enforce` the pool a miner talks to is blocked (the miner's host keeps its
//! other traffic).
//!
//! Errors: `invalid` is the section's own ([`DetectError`]); `error` holds the files',
//! captures' and forests' errors and the learned detectors' (wrapping them all). Neither
//! imports this module. This module checks the section's values; `live::check` also
//! loads its models, so that this module does not import the forests.
//!
//! Owns the `[detect]` section and the stage's tables (`kernel`). May import: `engine`,
//! `monitor` (its learned detectors' instances), `types`. The machines it writes are the text of plain `[[xfsm]]`
//! machines, which the config reads as it reads the user's.
//!
//! [`CTL_EXEMPT`]: statewall_common::xfsm::CTL_EXEMPT

pub mod admins;
pub mod capture;
pub mod error;
pub mod gateways;
pub mod invalid;
pub mod kernel;
pub mod learn;
pub mod live;
pub mod model;
pub mod pools;
pub mod sessions;
pub mod spread;
pub mod windows;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::types::Dur;
pub use invalid::DetectError;

/// A mitigation in force, as `GET /api/v1/detect` lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Mitigation {
    /// `syn_flood`, `udp_flood`, `icmp_flood`, `reflection`, `classifier`, `mining`, or
    /// `block` (by hand or API).
    pub detector: String,
    /// What it applies to: a destination under a flood (the classifier's: with protocol,
    /// port and length, [`spread::target`]), or a blocked source prefix.
    pub target: String,
    /// `destination` or `source`.
    pub scope: &'static str,
    /// Why: the window's count against the threshold, or the reason given to a block.
    pub reason: String,
    /// Packets over the threshold since it began (dropped under `enforce`; a SYN flood's
    /// are the SYNs held for retransmission, all destinations together), or dropped by a
    /// block or a destination mitigation (a verifying one: the first SYNs it held).
    pub dropped: u64,
    /// Seconds left (None: no expiry).
    pub left_s: Option<f64>,
}

/// The SYN verifier's machine name (`enforce` only).
pub const SYN_VERIFIER: &str = "detect-syn-verify";
/// The state of a destination under a flood.
pub const FLOOD: &str = "FLOOD";

/// `[detect]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// `monitor` (detect and report) or `enforce` (also counter).
    pub mode: Mode,
    /// Prefixes never mitigated: the admin's addresses, the gateway (`"192.0.2.1"`,
    /// `"10.0.0.0/8"`, `"2001:db8::/32"`).
    pub allowlist: Vec<String>,
    /// The gateways of the watched namespaces (their routes' next hops, read when the
    /// config is applied) join the allowlist (`detect/gateways.rs`).
    pub allow_gateways: bool,
    /// The remote addresses of the users logged in to this host (utmp's login records)
    /// join the allowlist: at apply, and within a second of a login (`detect/admins.rs`).
    pub allow_admins: bool,
    /// How long a mitigation lasts after the last packet over its threshold.
    pub expiry: Dur,
    /// SYNs per second to one destination.
    pub syn_flood: Detector,
    /// UDP packets per second to one destination.
    pub udp_flood: Detector,
    /// ICMP and ICMPv6 packets per second to one destination.
    pub icmp_flood: Detector,
    /// UDP packets per second to one destination from the amplifier ports.
    pub reflection: Reflection,
    /// The learned flow classifier (off without the table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierConfig>,
    /// The learned mining detector (off without the table): the same keys, a crypto
    /// monitor instance of its own, and a model of sessions; under `enforce` it blocks
    /// the pool a miner talks to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mining: Option<ClassifierConfig>,
}

/// `[detect.classifier]`: the learned flow classifier, run by the daemon on each window of
/// its own ddos monitor instance.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Interfaces its monitor watches (both directions).
    pub interfaces: Vec<String>,
    /// Their network namespace (none: the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// A model file (`statewall detect train`); none: the model built into the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<std::path::PathBuf>,
    /// Sessions its monitor records per window; flows past them are turned away.
    #[serde(default = "classifier_sessions")]
    pub sessions: u32,
    /// Sources it may hold blocked at once (when reached, it blocks no more and counts).
    #[serde(default = "classifier_max_blocks")]
    pub max_blocks: usize,
    /// Floods: sources whose attack flows to one (destination, protocol, port) in one
    /// window make a destination mitigation instead of blocks ([`spread`]); 0: never.
    #[serde(default = "classifier_destination_sources")]
    pub destination_sources: usize,
    /// Floods: packets per second a destination mitigation lets through when the flood's
    /// packets share no length.
    #[serde(default = "classifier_destination_limit")]
    pub destination_limit: u32,
}

fn classifier_sessions() -> u32 {
    16_384
}

fn classifier_max_blocks() -> usize {
    4096
}

fn classifier_destination_sources() -> usize {
    16
}

fn classifier_destination_limit() -> u32 {
    1000
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            mode: Mode::Monitor,
            allowlist: Vec::new(),
            allow_gateways: true,
            allow_admins: true,
            expiry: Dur::secs(30),
            syn_flood: Detector::default(),
            udp_flood: Detector::default(),
            icmp_flood: Detector::default(),
            reflection: Reflection::default(),
            classifier: None,
            mining: None,
        }
    }
}

/// What the stage does on a detection.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Report only.
    #[default]
    Monitor,
    /// Report and counter.
    Enforce,
}

/// One detector.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Detector {
    /// Whether it runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Packets per second to one destination at which it fires (absent: the detector's
    /// default, [`DEFAULT_THRESHOLDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            enabled: true,
            threshold: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// The reflection detector: UDP from well-known amplifier ports.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reflection {
    /// Whether it runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Packets per second to one destination from these ports at which it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// Amplifier source ports (at most [`MAX_AMP_PORTS`]).
    #[serde(default = "amp_ports")]
    pub ports: Vec<u16>,
}

/// Amplifier ports a reflection detector can watch (its machine has 8 conditions, three
/// of them its own).
pub const MAX_AMP_PORTS: usize = 5;

fn amp_ports() -> Vec<u16> {
    // DNS, NTP, SSDP, memcached.
    vec![53, 123, 1900, 11211]
}

impl Default for Reflection {
    fn default() -> Self {
        Reflection {
            enabled: true,
            threshold: None,
            ports: amp_ports(),
        }
    }
}

/// The detectors' default thresholds, in [`DETECTORS`] order.
pub const DEFAULT_THRESHOLDS: [u64; 4] = [1000, 20000, 1000, 1000];

/// One detector as configured: its name in `[detect]`, whether it runs, its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Configured {
    /// `syn_flood`, `udp_flood`, `icmp_flood`, `reflection`.
    pub name: &'static str,
    /// Its machine's name.
    pub machine: &'static str,
    /// What it counts.
    pub what: &'static str,
    /// Whether it runs.
    pub enabled: bool,
    /// Packets per second to one destination at which it fires.
    pub threshold: u64,
}

fn bad(key: &str, msg: impl Into<String>) -> DetectError {
    DetectError {
        key: key.into(),
        msg: msg.into(),
    }
}

/// An address or prefix that cannot be read: what was given and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrefixError(String);

/// A prefix of the allowlist or a block: an address and a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The address, with the bits past `len` cleared.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Prefix {
    /// Parses `"ADDR"` or `"ADDR/LEN"`; an IPv4-mapped IPv6 address is its IPv4 address.
    /// Host bits set past the length are an error (they would say another prefix).
    pub fn parse(s: &str) -> Result<Prefix, PrefixError> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map(statewall_common::maps::unmapped)
            .map_err(|_| PrefixError(format!("{s:?}: not an IP address or prefix")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(PrefixError(format!("{s:?}: the length must be 0 to {max}"))),
            },
        };
        let p = Prefix::new(addr, len);
        if p.addr != addr {
            return Err(PrefixError(format!(
                "{s:?}: bits set past /{len} (did you mean {p}?)"
            )));
        }
        Ok(p)
    }

    /// The prefix of `len` bits (at most the address's) holding `addr`.
    pub fn new(addr: IpAddr, len: u8) -> Prefix {
        let addr = statewall_common::maps::unmapped(addr);
        let len = len.min(if addr.is_ipv4() { 32 } else { 128 });
        Prefix {
            addr: crate::types::mask(addr, len),
            len,
        }
    }

    /// The host prefix of `addr` (a /32 or a /128).
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix::new(addr, 128)
    }

    /// Adds to `list` the prefixes of `more` it does not hold yet, in order; true when it
    /// added any.
    pub fn join(list: &mut Vec<Prefix>, more: impl IntoIterator<Item = Prefix>) -> bool {
        let n = list.len();
        for p in more {
            if !list.contains(&p) {
                list.push(p);
            }
        }
        list.len() > n
    }

    /// The kernel's LPM key of the prefix (`statewall_common::detect::lpm_key`).
    pub fn lpm_key(&self) -> (u32, [u8; 20]) {
        let (family, bytes) = statewall_common::maps::ip_bytes(self.addr);
        statewall_common::detect::lpm_key(family, &bytes, self.len as u32)
    }

    /// True when `a` is inside.
    pub fn contains(&self, a: IpAddr) -> bool {
        let a = statewall_common::maps::unmapped(a);
        a.is_ipv4() == self.addr.is_ipv4() && crate::types::mask(a, self.len) == self.addr
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The detectors, by name as `[detect]` and the API call them: (name, machine name,
/// what it counts).
pub const DETECTORS: [(&str, &str, &str); 4] = [
    ("syn_flood", "detect-syn", "SYNs"),
    ("udp_flood", "detect-udp", "UDP packets"),
    ("icmp_flood", "detect-icmp", "ICMP packets"),
    (
        "reflection",
        "detect-reflection",
        "UDP packets from amplifier ports",
    ),
];

impl DetectConfig {
    /// Checks every value but the learned detectors' models ([`live::check`] reads them as
    /// well); the machines are checked with the other machines.
    pub fn validate(&self) -> Result<(), DetectError> {
        self.validate_with(|_, _| Ok(()))
    }

    /// [`Self::validate`], with `model` run on each learned detector's section (and the kind
    /// of samples it takes) once that section's values are checked.
    pub fn validate_with(
        &self,
        model: impl Fn(&ClassifierConfig, windows::SampleKind) -> Result<(), DetectError>,
    ) -> Result<(), DetectError> {
        self.allow_prefixes()?;
        // (The expiry is re-armed once a second: a shorter one could lapse under a flood.)
        if self.expiry.0 < std::time::Duration::from_secs(2) {
            return Err(bad("expiry", "at least 2s"));
        }
        for d in self.detectors() {
            if d.enabled && d.threshold == 0 {
                return Err(bad(&format!("{}.threshold", d.name), "at least 1 a second"));
            }
        }
        let r = &self.reflection;
        if r.enabled && (r.ports.is_empty() || r.ports.len() > MAX_AMP_PORTS) {
            return Err(bad(
                "reflection.ports",
                format!("1 to {MAX_AMP_PORTS} ports, not {}", r.ports.len()),
            ));
        }
        if r.ports.contains(&0) {
            return Err(bad("reflection.ports", "port 0"));
        }
        for (section, c, kind) in [
            ("classifier", &self.classifier, windows::SampleKind::Packets),
            ("mining", &self.mining, windows::SampleKind::Sessions),
        ] {
            let Some(c) = c else { continue };
            if c.interfaces.is_empty() {
                return Err(bad(&format!("{section}.interfaces"), "name at least one"));
            }
            if !(1..=1 << 20).contains(&c.sessions) {
                return Err(bad(
                    &format!("{section}.sessions"),
                    format!("{}: 1 to 1048576", c.sessions),
                ));
            }
            if c.max_blocks == 0 {
                return Err(bad(&format!("{section}.max_blocks"), "at least 1"));
            }
            if c.destination_limit == 0 {
                return Err(bad(
                    &format!("{section}.destination_limit"),
                    "at least 1 packet a second (destination_sources = 0 turns destination mitigations off)",
                ));
            }
            model(c, kind)?;
        }
        Ok(())
    }

    /// The four detectors, in [`DETECTORS`] order, with their thresholds resolved.
    pub fn detectors(&self) -> [Configured; 4] {
        let set = [
            (self.syn_flood.enabled, self.syn_flood.threshold),
            (self.udp_flood.enabled, self.udp_flood.threshold),
            (self.icmp_flood.enabled, self.icmp_flood.threshold),
            (self.reflection.enabled, self.reflection.threshold),
        ];
        std::array::from_fn(|i| Configured {
            name: DETECTORS[i].0,
            machine: DETECTORS[i].1,
            what: DETECTORS[i].2,
            enabled: set[i].0,
            threshold: set[i].1.unwrap_or(DEFAULT_THRESHOLDS[i]),
        })
    }

    /// The allowlist, parsed.
    pub fn allow_prefixes(&self) -> Result<Vec<Prefix>, DetectError> {
        self.allowlist
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Prefix::parse(s).map_err(|m| bad(&format!("allowlist[{i}]"), m.to_string()))
            })
            .collect()
    }

    /// The detectors' machines, in the order they run, as the TOML of one `[[xfsm]]`
    /// table each (the config reads them and marks them exempt for allowlisted sources).
    pub fn machines(&self) -> Vec<String> {
        let enforce = self.mode == Mode::Enforce;
        let exp = self.expiry;
        let [syn, udp, icmp, refl] = self.detectors().map(|d| d.threshold);
        let mut out = Vec::new();
        let mut add = |text: String| out.push(text);
        if self.syn_flood.enabled {
            let filter = "proto = \"tcp\"\ntcpflags = \"syn,!ack\"\n";
            // Under a flood the SYNs go on to the verifier, which admits retransmissions.
            let meta = if enforce {
                format!(", \"meta = {SYN_FLOOD_META:#x}\"")
            } else {
                String::new()
            };
            add(counter(
                "detect-syn",
                syn,
                exp,
                &[("", filter.into())],
                &meta,
                false,
            ));
            if enforce {
                add(syn_verifier());
            }
        }
        if self.udp_flood.enabled {
            add(counter(
                "detect-udp",
                udp,
                exp,
                &[("", "proto = \"udp\"\n".into())],
                "",
                enforce,
            ));
        }
        if self.icmp_flood.enabled {
            add(counter(
                "detect-icmp",
                icmp,
                exp,
                &[
                    ("", "proto = \"icmp\"\n".into()),
                    ("", "proto = \"icmpv6\"\n".into()),
                ],
                "",
                enforce,
            ));
        }
        if self.reflection.enabled {
            let ports = &self.reflection.ports;
            let conds: Vec<(&str, String)> = ports
                .iter()
                .enumerate()
                .map(|(i, _)| (AMP[i], "proto = \"udp\"\n".to_string()))
                .collect();
            let mut text = counter("detect-reflection", refl, exp, &conds, "", enforce);
            for (i, p) in ports.iter().enumerate() {
                text.push_str(&format!(
                    "[[condition]]\nname = \"{}\"\ntest = \"src_port == {p}\"\n",
                    AMP[i]
                ));
            }
            add(text);
        }
        out
    }
}

/// Condition names of the amplifier ports.
const AMP: [&str; MAX_AMP_PORTS] = ["amp0", "amp1", "amp2", "amp3", "amp4"];

/// A per-destination counter machine: one-second windows; at `threshold` packets of the
/// window, `FLOOD` for `expiry` after the last packet over it. `filters` are the packets
/// it counts: (a condition that must hold, or "", transition match keys). `meta` adds
/// updates to every transition in `FLOOD`; `drop` drops the packets over the threshold
/// there.
fn counter(
    name: &str,
    threshold: u64,
    expiry: Dur,
    filters: &[(&str, String)],
    meta: &str,
    drop: bool,
) -> String {
    let mut t = format!(
        "name = \"{name}\"\nlookup = [\"dst_ip\"]\nstates = [\"{FLOOD}\"]\n\
         registers = [\"window\", \"count\", \"excess\", \"rearmed\"]\ntable = \"lru\"\n\
         [[condition]]\nname = \"new_window\"\ntest = \"since(window) >= 1s\"\n\
         [[condition]]\nname = \"over\"\ntest = \"count >= {threshold}\"\n\
         [[condition]]\nname = \"armed\"\ntest = \"since(rearmed) < 1s\"\n"
    );
    let exp = format!("\"{}ms\"", expiry.0.as_millis());
    let action = if drop { "action = \"drop\"\n" } else { "" };
    for (cond, m) in filters {
        let w = |more: &str| {
            if cond.is_empty() {
                format!("when = [{more}]\n")
            } else {
                format!("when = [\"{cond}\", {more}]\n")
            }
        };
        let flood = format!("state = \"{FLOOD}\"\n");
        let to_flood = format!("next = \"{FLOOD}\"\nhard_timeout = {exp}\n");
        // (state, conditions, updates, the rest). DEFAULT: a new window starts the count;
        // under the threshold, counted; at it, FLOOD (reported). FLOOD: the same windows;
        // over the threshold, the countermeasure, and the expiry starts again, once a
        // second at most (a state write per dropped packet would cost the flood's every
        // packet a map update).
        let rows = [
            (
                "",
                "\"new_window\"",
                "\"window = now\", \"count = 1\"",
                "",
                String::new(),
            ),
            (
                "",
                "\"!new_window\", \"!over\"",
                "\"count += 1\"",
                "",
                String::new(),
            ),
            (
                "",
                "\"!new_window\", \"over\"",
                "\"count += 1\", \"excess = 1\", \"rearmed = now\"",
                meta,
                format!("{to_flood}event = true\n{action}"),
            ),
            (
                &flood,
                "\"new_window\"",
                "\"window = now\", \"count = 1\"",
                meta,
                String::new(),
            ),
            (
                &flood,
                "\"!new_window\", \"!over\"",
                "\"count += 1\"",
                meta,
                String::new(),
            ),
            (
                &flood,
                "\"!new_window\", \"over\", \"armed\"",
                "\"count += 1\", \"excess += 1\"",
                meta,
                action.to_string(),
            ),
            (
                &flood,
                "\"!new_window\", \"over\", \"!armed\"",
                "\"count += 1\", \"excess += 1\", \"rearmed = now\"",
                meta,
                format!("{to_flood}{action}"),
            ),
        ];
        for (state, when, update, meta, rest) in rows {
            t.push_str(&format!(
                "[[transition]]\n{state}{m}{}update = [{update}{meta}]\n{rest}",
                w(when)
            ));
        }
    }
    t
}

/// The `meta` value the SYN detector hands its verifier while the destination is under a
/// flood (a value of its own: a user's machine that sets `meta` to a small number must
/// not turn the verifier on).
pub const SYN_FLOOD_META: u64 = 0x5357_de7e_c75f_1d00;

/// The SYN verifier of `enforce`: while the destination is under a SYN flood (`meta` is
/// [`SYN_FLOOD_META`]),
/// the first SYN of each (source, source port, destination, port) is dropped and
/// remembered for 3 s; its retransmission passes. `dropped` (a global) counts the drops.
fn syn_verifier() -> String {
    format!(
        "name = \"{SYN_VERIFIER}\"\n\
     lookup = [\"src_ip\", \"dst_ip\", \"src_port\", \"dst_port\"]\n\
     states = [\"PROBED\"]\nglobals = [\"dropped\"]\ntable = \"lru\"\n\
     [[condition]]\nname = \"flood\"\ntest = \"meta == {SYN_FLOOD_META:#x}\"\n\
     [[transition]]\nproto = \"tcp\"\ntcpflags = \"syn,!ack\"\nwhen = [\"flood\"]\n\
     action = \"drop\"\nnext = \"PROBED\"\nidle_timeout = \"3s\"\nupdate = [\"dropped += 1\"]\n\
     [[transition]]\nstate = \"PROBED\"\nproto = \"tcp\"\ntcpflags = \"syn,!ack\"\nnext = \"DEFAULT\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_refuse_host_bits() {
        let p = Prefix::parse("10.1.0.0/16").unwrap();
        assert!(p.contains("10.1.200.3".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert_eq!(Prefix::parse("192.0.2.7").unwrap().len, 32);
        assert_eq!(
            Prefix::parse("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        let e = Prefix::parse("10.1.2.3/16").unwrap_err().to_string();
        assert!(e.contains("10.1.0.0/16"), "{e}");
        let e = Prefix::parse("10.0.0.0/33").unwrap_err().to_string();
        assert!(e.contains("0 to 32"), "{e}");
        assert!(Prefix::parse("host").is_err());
        assert!(Prefix::parse("2001:db8::/32").is_ok());
    }

    #[test]
    fn every_detector_writes_a_machine_that_compiles_in_both_modes() {
        for mode in [Mode::Monitor, Mode::Enforce] {
            let d = DetectConfig {
                mode,
                ..Default::default()
            };
            let ms: Vec<crate::xfsm::config::XfsmConfig> = d
                .machines()
                .iter()
                .map(|t| toml::from_str(t).unwrap())
                .collect();
            let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
            let want: &[&str] = if mode == Mode::Enforce {
                &[
                    "detect-syn",
                    "detect-syn-verify",
                    "detect-udp",
                    "detect-icmp",
                    "detect-reflection",
                ]
            } else {
                &[
                    "detect-syn",
                    "detect-udp",
                    "detect-icmp",
                    "detect-reflection",
                ]
            };
            assert_eq!(names, want);
            let raws = crate::xfsm::config::raw_machines(&ms).expect("the machines check");
            crate::xfsm::compile(&[], &raws).expect("and compile");
            let drops = ms
                .iter()
                .flat_map(|m| &m.transitions)
                .any(|t| t.action == "drop");
            assert_eq!(drops, mode == Mode::Enforce, "{mode:?}");
        }
    }

    #[test]
    fn a_detector_turns_off_without_a_threshold_and_defaults_fill_in() {
        let d: DetectConfig =
            toml::from_str("syn_flood = { enabled = false }\nudp_flood = { threshold = 7 }\n")
                .unwrap();
        d.validate().unwrap();
        let c = d.detectors();
        assert!(!c[0].enabled);
        assert_eq!(c.map(|c| c.threshold), [1000, 7, 1000, 1000]);
        let names: Vec<String> = d
            .machines()
            .iter()
            .map(|t| {
                toml::from_str::<crate::xfsm::config::XfsmConfig>(t)
                    .unwrap()
                    .name
            })
            .collect();
        assert_eq!(names, ["detect-udp", "detect-icmp", "detect-reflection"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut d = DetectConfig {
            allowlist: vec!["10.0.0.1".into(), "10.0.0.1/8".into()],
            ..Default::default()
        };
        assert_eq!(d.validate().unwrap_err().key, "allowlist[1]");
        d.allowlist.clear();
        d.udp_flood.threshold = Some(0);
        assert_eq!(d.validate().unwrap_err().key, "udp_flood.threshold");
        d.udp_flood.enabled = false;
        assert!(d.validate().is_ok(), "a detector turned off is not checked");
        d.udp_flood.threshold = Some(5);
        d.reflection.ports = vec![1, 2, 3, 4, 5, 6];
        assert_eq!(d.validate().unwrap_err().key, "reflection.ports");
        d.reflection.ports = vec![53];
        let mut c: ClassifierConfig = toml::from_str("interfaces = []").unwrap();
        assert_eq!(
            (c.sessions, c.max_blocks, c.model.clone()),
            (16_384, 4096, None)
        );
        d.classifier = Some(c.clone());
        assert_eq!(d.validate().unwrap_err().key, "classifier.interfaces");
        c.interfaces = vec!["eth0".into()];
        c.model = Some("/nonexistent/model.json".into());
        d.classifier = Some(c.clone());
        let e = live::check(&d).unwrap_err();
        assert_eq!(e.key, "classifier.model");
        assert!(e.msg.contains("/nonexistent/model.json"), "{e}");
        c.model = None;
        c.max_blocks = 0;
        d.classifier = Some(c.clone());
        assert_eq!(d.validate().unwrap_err().key, "classifier.max_blocks");
        c.max_blocks = 1;
        d.classifier = Some(c.clone());
        assert!(d.validate().is_ok());
        // A mining section takes a mining model: the flood model is refused by name.
        let flood_model = std::env::temp_dir().join(format!("sw-ddos-{}.json", std::process::id()));
        std::fs::write(&flood_model, model::Model::builtin().to_json()).unwrap();
        c.model = Some(flood_model.clone());
        d.mining = Some(c.clone());
        assert!(d.validate().is_ok(), "validate reads no model");
        let e = live::check(&d).unwrap_err();
        std::fs::remove_file(&flood_model).unwrap();
        assert_eq!(e.key, "mining.model");
        assert!(e.msg.contains("--detector mining"), "{e}");
        c.model = None;
        d.mining = Some(c);
        assert!(live::check(&d).is_ok());
        assert!(toml::from_str::<ClassifierConfig>("interfaces = [\"a\"]\nwindow = 3").is_err());
    }
}
