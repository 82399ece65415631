//! The `[[knock]]` and `[[xfsm]]` sections: knock doors and machines written by hand.

use crate::xfsm::error::XfsmError;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{parse_tcpflags, step_pairs, Dur, PortSpec, Sequence};

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
    pub fn bytes(&self) -> Result<Option<Vec<u8>>, XfsmError> {
        let b = match self {
            PayloadSpec::Canned(false) => return Ok(None),
            PayloadSpec::Canned(true) => DEFAULT_KNOCK_PAYLOAD.to_vec(),
            PayloadSpec::Text(t) => t.as_bytes().to_vec(),
        };
        let max = statewall_common::xfsm::PAYLOAD_MAX;
        if b.is_empty() || b.len() > max {
            return Err(XfsmError::Spec(format!(
                "a payload of {} bytes: 1 to {max}",
                b.len()
            )));
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
    /// Lookup scope: fields of `src_ip`, `dst_ip`, `src_mac`, `dst_mac`, `proto`,
    /// `src_port`, `dst_port` (at most two addresses, MACs counted as addresses, and two
    /// ports).
    pub lookup: Vec<String>,
    /// Update scope (default: the lookup scope); same number of address and port fields
    /// and the protocol in both or neither.
    #[serde(default)]
    pub update: Option<Vec<String>>,
    /// Both directions of a connection are one flow: the key's two (address, port) ends
    /// are put in order. Needs two addresses and no or two ports in the scopes.
    #[serde(default)]
    pub bidirectional: bool,
    /// States besides DEFAULT.
    #[serde(default)]
    pub states: Vec<String>,
    /// Per-flow registers (64 bits each, 0 for a new flow; at most 4), kept per update
    /// key.
    #[serde(default)]
    pub registers: Vec<String>,
    /// Global registers of the machine (at most 8).
    #[serde(default)]
    pub globals: Vec<String>,
    /// Conditions (`[[xfsm.condition]]`, at most 8), evaluated on every packet the machine
    /// looks at.
    #[serde(default, rename = "condition")]
    pub conditions: Vec<XfsmCondition>,
    /// Transitions (`[[xfsm.transition]]`), searched most specific first.
    #[serde(default, rename = "transition")]
    pub transitions: Vec<XfsmTransition>,
    /// Ports a transition with `grant = "open"` opens in the gate for the packet's source
    /// (`["tcp/22"]`, at most 8; protected by the gate like a door's).
    #[serde(default)]
    pub grant: Vec<PortSpec>,
    /// How long such a grant lasts (default 30s).
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    /// `lru` (an evicted flow starts over) or `fixed` (preallocated, never evicts: a new
    /// flow that finds no room stays DEFAULT, and the `table_full` condition holds for it).
    /// Default: `fixed` when a transition drops (an attacker could otherwise evict the
    /// states that stop him), else `lru`.
    #[serde(default)]
    pub table: Option<String>,
    /// Not run for a source on the `[detect]` allowlist: set on the machines `[detect]`
    /// writes (not a key of the file).
    #[serde(skip)]
    pub exempt: bool,
}
/// The machines exempt for allowlisted sources, as a bit per machine index (`machines`
/// follow `doors` doors).
pub fn exempt_mask(machines: &[XfsmConfig], doors: usize) -> u32 {
    machines
        .iter()
        .enumerate()
        .filter(|(_, m)| m.exempt)
        .fold(0, |a, (i, _)| a | 1 << (doors + i))
}

/// `[[xfsm.condition]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XfsmCondition {
    /// Name, used by transitions' `when`.
    pub name: String,
    /// `A OP B` (see `crate::xfsm::expr`).
    pub test: String,
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
    /// Conditions that must hold (`"name"`) or not hold (`"!name"`); the others do not
    /// matter. Among transitions with the same state, direction, protocol and port, the
    /// first declared whose conditions hold is taken.
    #[serde(default)]
    pub when: Vec<String>,
    /// Register updates, run in order when the transition is taken (at most 5).
    #[serde(default)]
    pub update: Vec<String>,
    /// Set the packet mark (tc hooks and switch ports; not on an XDP hook).
    #[serde(default)]
    pub mark: Option<u32>,
    /// Set the DSCP, 0 to 63 (tc hooks and switch ports; not on an XDP hook).
    #[serde(default)]
    pub dscp: Option<u8>,
    /// Send an event carrying the flow's registers when the transition is taken, even
    /// when the state stays (at most 64 per second and CPU per machine).
    #[serde(default)]
    pub event: bool,
    /// `open`: open the machine's `grant` ports for the packet's source; `revoke`: close
    /// them.
    #[serde(default)]
    pub grant: Option<String>,
    /// Machines of a `[[switch]]` only: `flood` (to every other port), or a per-flow
    /// register holding the interface index to forward to (the lookup key's; a frame
    /// whose register is 0 or not a port of the switch is flooded).
    #[serde(default)]
    pub forward: Option<String>,
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
fn default_true() -> bool {
    true
}

/// True when a raw machine has a transition on egress (it needs `sw_xfsm_egress`).
pub fn raw_uses_egress(raws: &[statewall_common::xfsm::raw::RawMachine]) -> bool {
    raws.iter()
        .flat_map(|r| &r.transitions)
        .any(|t| t.dirs.contains(&statewall_common::xfsm::DIR_EGRESS))
}

/// The `[[xfsm]]` machines resolved for [`compile`](fn@crate::xfsm::compile); errors are (section
/// and key, message).
pub fn raw_machines(
    machines: &[XfsmConfig],
) -> Result<Vec<statewall_common::xfsm::raw::RawMachine>, (String, String)> {
    use statewall_common::xfsm::{field, DIR_EGRESS, DIR_INGRESS};
    let mut out = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let sec = format!("[[xfsm]] #{} ({})", i + 1, m.name);
        let at = |key: &str| format!("{sec} {key}");
        crate::types::check_name(&m.name).map_err(|e| (at("name"), e.to_string()))?;
        let scope = |key: &str, v: &[String]| -> Result<Vec<u8>, (String, String)> {
            let ids = v
                .iter()
                .map(|f| match f.as_str() {
                    "src_ip" => Ok(field::SRC_IP),
                    "dst_ip" => Ok(field::DST_IP),
                    "src_mac" => Ok(field::SRC_MAC),
                    "dst_mac" => Ok(field::DST_MAC),
                    "proto" => Ok(field::PROTO),
                    "src_port" => Ok(field::SRC_PORT),
                    "dst_port" => Ok(field::DST_PORT),
                    other => Err((
                        at(key),
                        format!("{other:?}: src_ip, dst_ip, src_mac, dst_mac, proto, src_port or dst_port"),
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
        if m.bidirectional {
            let (a, p, _) = l.shape();
            if a != 2 || p == 1 {
                return Err((
                    at("bidirectional"),
                    "a bidirectional key needs two addresses and no or two ports".into(),
                ));
            }
        }
        if l.shape() != u.shape() || (l.l2 != 0) != (u.l2 != 0) {
            return Err((
                at("update"),
                "the update scope must give keys of the lookup scope's shape (as many addresses and ports, MACs in both or neither, and the protocol in both or neither)".into(),
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
        let reg_names = |key: &str, v: &[String], max: usize| -> Result<(), (String, String)> {
            if v.len() > max {
                return Err((at(key), format!("{} registers: at most {max}", v.len())));
            }
            for (i, r) in v.iter().enumerate() {
                let reserved = [
                    "pkt_len",
                    "src_port",
                    "dst_port",
                    "proto",
                    "tcp_flags",
                    "now",
                    "since",
                    "hash",
                    "min",
                    "max",
                    "ewma",
                    "meta",
                    "in_port",
                ];
                if !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || !r.starts_with(|c: char| c.is_ascii_alphabetic())
                    || reserved.contains(&r.as_str())
                {
                    return Err((
                        at(key),
                        format!("{r:?}: a register name is a letter then letters, digits or _, and not a field or function name"),
                    ));
                }
                if v[..i].contains(r) || (key == "globals" && m.registers.contains(r)) {
                    return Err((at(key), format!("{r:?} is named twice")));
                }
            }
            Ok(())
        };
        reg_names(
            "registers",
            &m.registers,
            statewall_common::xfsm::regs::FLOW_REGS,
        )?;
        reg_names(
            "globals",
            &m.globals,
            statewall_common::xfsm::regs::GLOBAL_REGS,
        )?;
        let names = crate::xfsm::expr::Names {
            flow: &m.registers,
            global: &m.globals,
        };
        if m.conditions.len() > statewall_common::xfsm::regs::MAX_CONDS {
            return Err((
                at("condition"),
                format!(
                    "{} conditions: at most {}",
                    m.conditions.len(),
                    statewall_common::xfsm::regs::MAX_CONDS
                ),
            ));
        }
        let mut conds = Vec::new();
        for (k, c) in m.conditions.iter().enumerate() {
            let at = |key: &str| format!("{sec} condition #{} {key}", k + 1);
            if c.name.is_empty() || m.conditions[..k].iter().any(|o| o.name == c.name) {
                return Err((at("name"), format!("{:?}: empty or named twice", c.name)));
            }
            conds.push(
                crate::xfsm::expr::condition(&c.name, &c.test, &names)
                    .map_err(|e| (at("test"), e.0))?,
            );
        }
        if m.transitions.is_empty() {
            return Err((
                at("transition"),
                "a machine needs at least one transition".into(),
            ));
        }
        let fixed = match m.table.as_deref() {
            None => m.transitions.iter().any(|t| t.action == "drop"),
            Some("fixed") => true,
            Some("lru") => false,
            Some(other) => return Err((at("table"), format!("{other:?}: lru or fixed"))),
        };
        let mut trans = Vec::new();
        for (j, t) in m.transitions.iter().enumerate() {
            let at = |key: &str| format!("{sec} transition #{} {key}", j + 1);
            let state_id = |key: &str, name: &str| -> Result<u8, (String, String)> {
                states
                    .iter()
                    .position(|s| s == name)
                    .map(|i| i as u8)
                    .ok_or_else(|| (at(key), format!("{name:?} is not a state of this machine")))
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
                Some(f) if proto == 6 => {
                    parse_tcpflags(f).map_err(|e| (at("tcpflags"), e.to_string()))?
                }
                Some(_) => return Err((at("tcpflags"), "TCP flags need proto tcp".into())),
                None => (0, 0),
            };
            let payload = match &t.payload {
                Some(p) => {
                    let b = p.bytes().map_err(|e| (at("payload"), e.to_string()))?;
                    if b.is_some() && (proto != 17 || t.port == 0) {
                        return Err((
                            at("payload"),
                            "a payload match needs proto udp and a port".into(),
                        ));
                    }
                    b
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
                Some(other) => return Err((at("keep"), format!("{other:?}: hard, idle or both"))),
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
            let mut when = Vec::new();
            for w in &t.when {
                let (name, holds) = match w.strip_prefix('!') {
                    Some(n) => (n.trim(), false),
                    None => (w.trim(), true),
                };
                if name == "table_full" && !conds.iter().any(|c| c.name == name) {
                    if !fixed || t.state != "DEFAULT" {
                        return Err((
                            at("when"),
                            "table_full: only on transitions from DEFAULT of a machine with table = \"fixed\"".into(),
                        ));
                    }
                    use statewall_common::xfsm::raw::{Cmp, CondDef, Opd};
                    conds.push(CondDef {
                        name: name.into(),
                        a: Opd::TableFull,
                        cmp: Cmp::Eq,
                        b: Opd::Const(1),
                        shr: [0, 0],
                    });
                    if conds.len() > statewall_common::xfsm::regs::MAX_CONDS {
                        return Err((
                            at("when"),
                            "table_full takes a condition slot: at most 8 with it".into(),
                        ));
                    }
                }
                let i = conds
                    .iter()
                    .position(|c: &statewall_common::xfsm::raw::CondDef| c.name == name)
                    .ok_or_else(|| {
                        (
                            at("when"),
                            format!("{name:?} is not a condition of this machine"),
                        )
                    })?;
                if when.iter().any(|&(j, _)| j == i as u8) {
                    return Err((at("when"), format!("{name:?} is listed twice")));
                }
                when.push((i as u8, holds));
            }
            if t.update.len() > statewall_common::xfsm::regs::MAX_UPDATES {
                return Err((
                    at("update"),
                    format!(
                        "{} updates: at most {}",
                        t.update.len(),
                        statewall_common::xfsm::regs::MAX_UPDATES
                    ),
                ));
            }
            let updates = t
                .update
                .iter()
                .map(|u| crate::xfsm::expr::update(u, &names))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| (at("update"), e.0))?;
            if matches!(t.dscp, Some(d) if d > 63) {
                return Err((at("dscp"), "a DSCP is 0 to 63".into()));
            }
            let forward = match t.forward.as_deref() {
                None => None,
                Some("flood") => Some(statewall_common::xfsm::raw::Forward::Flood),
                Some(r) => match m.registers.iter().position(|x| x == r) {
                    Some(i) => Some(statewall_common::xfsm::raw::Forward::Reg(i as u8)),
                    None => {
                        return Err((
                            at("forward"),
                            format!("{r:?}: flood, or a per-flow register of this machine holding an interface index"),
                        ))
                    }
                },
            };
            if forward.is_some() && drop {
                return Err((at("forward"), "a dropped frame is not forwarded".into()));
            }
            let grant = match t.grant.as_deref() {
                None => None,
                Some(g) if m.grant.is_empty() => {
                    return Err((
                        at("grant"),
                        format!("{g:?}: the machine has no grant = [\"tcp/PORT\", ...] to open"),
                    ))
                }
                Some("open") => Some(true),
                Some("revoke") => Some(false),
                Some(other) => return Err((at("grant"), format!("{other:?}: open or revoke"))),
            };
            trans.push(statewall_common::xfsm::raw::RawTrans {
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
                when,
                updates,
                acts: statewall_common::xfsm::raw::Acts {
                    mark: t.mark,
                    dscp: t.dscp,
                    forward,
                    event: t.event,
                },
                grant,
            });
        }
        out.push(statewall_common::xfsm::raw::RawMachine {
            name: m.name.clone(),
            lookup,
            update,
            bidirectional: m.bidirectional,
            states,
            flow_regs: m.registers.clone(),
            globals: m.globals.clone(),
            conds,
            transitions: trans,
            grant: (
                m.grant.iter().map(|p| (p.proto, p.port)).collect(),
                m.open_for.ns(),
            ),
            fixed,
        });
    }
    Ok(out)
}

/// The doors with their fixed sequences only, ready for [`compile`](fn@crate::xfsm::compile) (the
/// config must be valid); [`crate::xfsm::sequences::expand`] adds the one-time and derived
/// ones.
pub fn doors(knocks: &[KnockConfig]) -> Vec<crate::xfsm::door::KnockDoor> {
    knocks
        .iter()
        .map(|k| {
            let (tcp_mask, tcp_value) = parse_tcpflags(&k.tcpflags).unwrap_or((0x12, 0x02));
            crate::xfsm::door::KnockDoor {
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

/// `[[switch]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Name (logs).
    pub name: String,
    /// Network namespace of the ports (a name under `/run/netns`); absent = the daemon's.
    #[serde(default)]
    pub netns: Option<String>,
    /// The ports: 2 to 8 interfaces.
    pub ports: Vec<String>,
    /// `[[xfsm]]` machines the ports run, in this order (they run nowhere else).
    pub machines: Vec<String>,
}

/// What the xfsm stage reads of the config.
pub struct XfsmInput<'a> {
    /// `[[knock]]` doors.
    pub knocks: &'a [KnockConfig],
    /// `[[xfsm]]` machines.
    pub machines: &'a [XfsmConfig],
    /// `[[switch]]` switches.
    pub switches: &'a [SwitchConfig],
    /// Where one-time sequences and counters are recorded.
    pub state_dir: &'a Path,
}
