//! Converts a knockd configuration (`knockd.conf`) into a statewall [`Config`].
//!
//! knockd opens ports by running commands, usually firewall commands that let the knocking
//! address in (`iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT`). statewall opens
//! ports itself, in the gate, so such commands are recognised and replaced: the ports they
//! name become the door's protected ports. Commands that are not firewall commands are
//! kept as argument vectors (through `/bin/sh` when they use shell syntax), with the
//! knocking address passed as an argument, never spliced into shell text.
//!
//! knockd pairs opening and closing as two doors with their own sequences; a door whose
//! command closes what another door opens becomes that door's `close_sequence` (or makes
//! it a toggle when both sequences are the same).
//!
//! Whatever is changed, dropped or defaulted is reported in [`Import::notes`]. A door that
//! cannot be converted safely (a key that cannot be read, a command whose ports cannot be
//! told) is left out and listed in [`Import::skipped`] with its file and line, so that one
//! door never sinks the rest; what is wrong with the file itself (a line outside any
//! section, `[options]`, a door defined twice) is an error naming the file and line.

mod commands;

use crate::import::error::{ImportError, Why};
use std::collections::{BTreeMap, BTreeSet};

use commands::*;

pub use super::Import;

use crate::config::{
    parse_tcpflags, Config, Dur, InterfaceConfig, KnockConfig, PortSpec, Sequence,
};

/// knockd's interface when `Interface` is not given.
const KNOCKD_DEFAULT_INTERFACE: &str = "eth0";
/// knockd's `seq_timeout` default, in seconds.
const KNOCKD_DEFAULT_SEQ_TIMEOUT: u64 = 25;
/// knockd's `cmd_timeout` default (delay before `stop_command`), in seconds.
const KNOCKD_DEFAULT_CMD_TIMEOUT: u64 = 10;
/// How long a converted door stays open when knockd had no `stop_command` (knockd left
/// the port open until something else closed it), in seconds.
pub const DEFAULT_OPEN_FOR_WITHOUT_STOP: u64 = 30;

/// `[options]` keys: lower-case spelling, knockd's spelling.
const OPTION_KEYS: [(&str, &str); 4] = [
    ("usesyslog", "UseSyslog"),
    ("logfile", "LogFile"),
    ("pidfile", "PidFile"),
    ("interface", "Interface"),
];

/// Door keys: lower-case spelling (aliases included), the key it stands for.
const DOOR_KEYS: [(&str, &str); 13] = [
    ("sequence", "sequence"),
    ("one_time_sequences", "one_time_sequences"),
    ("seq_timeout", "seq_timeout"),
    ("timeout", "seq_timeout"),
    ("tcpflags", "tcpflags"),
    ("start_command", "start_command"),
    ("command", "start_command"),
    ("start_command_6", "start_command_6"),
    ("command_6", "start_command_6"),
    ("cmd_timeout", "cmd_timeout"),
    ("stop_command", "stop_command"),
    ("stop_command_6", "stop_command_6"),
    ("target", "target"),
];

/// Converts knockd.conf text; `origin` names it in errors (`origin:LINE: message`) and
/// `protect` gives the ports to protect for doors whose commands do not name them (an
/// nft set element, a rule opening every port, a script).
pub fn import(text: &str, origin: &str, protect: &[PortSpec]) -> Result<Import, ImportError> {
    let err = |line: usize, msg: String| ImportError::At {
        origin: origin.to_string(),
        line,
        msg,
    };
    let parsed = parse(text, &err)?;
    let mut notes = Vec::new();
    let protect: Vec<PortSpec> = {
        let set: BTreeSet<PortSpec> = protect.iter().copied().collect();
        set.into_iter().collect()
    };

    // [options]
    let mut config = Config::default();
    for (key, value) in &parsed.dropped_options {
        let why = match *key {
            "UseSyslog" => "statewall logs to standard error (filter: [daemon] log_level)",
            "LogFile" => "statewall logs to standard error; redirect it or use the journal",
            _ => "statewall keeps no pid file (use `statewall status` or the service manager)",
        };
        let shown = if value.is_empty() {
            String::new()
        } else {
            format!(" = {value}")
        };
        notes.push(format!("[options] {key}{shown} dropped: {why}."));
    }
    let ifname = match &parsed.interface {
        Some(name) => name.clone(),
        None => {
            notes.push(format!(
                "[options] no Interface: using knockd's default {KNOCKD_DEFAULT_INTERFACE}."
            ));
            KNOCKD_DEFAULT_INTERFACE.to_string()
        }
    };
    config.interfaces.push(InterfaceConfig {
        name: ifname,
        netns: None,
        ingress: Default::default(),
    });

    // Which doors close what another door opens.
    let closers = pair_close_doors(&parsed.doors, &protect, &mut notes);

    let mut names = BTreeSet::new();
    let mut skipped = Vec::new();
    for (i, door) in parsed.doors.iter().enumerate() {
        if let Some(why) = &door.broken {
            skipped.push(why.to_string());
            continue;
        }
        if closers.closing.contains(&i) {
            continue;
        }
        let k = match convert_door(door, &protect, &err, &mut notes) {
            Ok(Some(k)) => k,
            Ok(None) => continue,
            Err(why) => {
                skipped.push(why.to_string());
                continue;
            }
        };
        let mut k = k;
        k.name = unique_name(&door.section, &mut names, &mut notes);
        if let Some(&c) = closers.closer_of.get(&i) {
            let close = &parsed.doors[c];
            let (close_seq, _) = close.sequence.clone().expect("closing doors have one");
            if close_seq == k.sequence {
                k.toggle = true;
                notes.push(format!(
                    "[{}] closes what [{}] opens with the same sequence: the door is a toggle (the sequence opens it, and closes it while open).",
                    close.section, door.section
                ));
            } else {
                notes.push(format!(
                    "[{}] closes what [{}] opens: its sequence {} is the door's close_sequence.",
                    close.section, door.section, close_seq
                ));
                k.close_sequence = Some(close_seq);
            }
            note_close_door_extras(close, door, &protect, &mut notes);
        }
        config.knocks.push(k);
    }

    config
        .validate(origin)
        .map_err(|e| ImportError::Config(e.to_string()))?;
    Ok(Import {
        config,
        notes,
        skipped,
    })
}

/// One `[door]` section as read.
#[derive(Debug, Default)]
struct Door {
    section: String,
    line: usize,
    sequence: Option<(Sequence, usize)>,
    one_time_sequences: Option<String>,
    seq_timeout: Option<u64>,
    tcpflags: Option<String>,
    cmd_timeout: Option<(u64, usize)>,
    start: Option<Command>,
    start6: Option<Command>,
    stop: Option<Command>,
    stop6: Option<Command>,
    target: Option<String>,
    /// Why the door cannot be converted (its first unreadable line), when it cannot.
    broken: Option<ImportError>,
}

/// The file as read: options and doors in order.
#[derive(Debug, Default)]
struct Parsed {
    interface: Option<String>,
    dropped_options: Vec<(&'static str, String)>,
    doors: Vec<Door>,
}

/// Where `key = value` lines go.
enum Section {
    Nothing,
    Options,
    Door(usize),
}

fn parse(text: &str, err: &dyn Fn(usize, String) -> ImportError) -> Result<Parsed, ImportError> {
    let mut out = Parsed::default();
    let mut section = Section::Nothing;
    // Keys seen in the current section (canonical name -> line), and door names seen.
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut options_seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut door_lines: BTreeMap<String, usize> = BTreeMap::new();

    for (idx, raw) in text.lines().enumerate() {
        let n = idx + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| err(n, format!("{line:?}: a section header ends with ']'")))?
                .trim();
            if name.is_empty() {
                return Err(err(n, "an empty section name".into()));
            }
            if name.eq_ignore_ascii_case("options") {
                section = Section::Options;
            } else {
                if let Some(first) = door_lines.insert(name.to_string(), n) {
                    return Err(err(
                        n,
                        format!("door [{name}] defined twice (first at line {first})"),
                    ));
                }
                out.doors.push(Door {
                    section: name.to_string(),
                    line: n,
                    ..Door::default()
                });
                section = Section::Door(out.doors.len() - 1);
                seen.clear();
            }
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line, None),
        };
        let lower = key.to_ascii_lowercase();
        match section {
            Section::Nothing => {
                return Err(err(
                    n,
                    format!(
                    "{line:?} before any section (knockd.conf starts with [options] or a [door])"
                ),
                ))
            }
            Section::Options => {
                let Some(&(_, name)) = OPTION_KEYS.iter().find(|(k, _)| *k == lower) else {
                    return Err(err(
                        n,
                        match value {
                            Some(_) => format!(
                                "unknown key {key:?} in [options] (UseSyslog, LogFile, PidFile, Interface)"
                            ),
                            None => format!("{line:?} is not `key = value`"),
                        },
                    ));
                };
                if let Some(first) = options_seen.insert(name, n) {
                    return Err(err(
                        n,
                        format!("{name} given twice in [options] (first at line {first})"),
                    ));
                }
                // UseSyslog is a bare flag; every other key needs a value.
                let value = match value {
                    Some(v) => v,
                    None if name == "UseSyslog" => "",
                    None => return Err(err(n, format!("{line:?} is not `key = value`"))),
                };
                if name == "Interface" {
                    if value.is_empty() {
                        return Err(err(n, "Interface has no value".into()));
                    }
                    out.interface = Some(value.to_string());
                } else {
                    out.dropped_options.push((name, value.to_string()));
                }
            }
            Section::Door(d) => {
                // A line the door cannot be read with leaves the door out (the first such
                // line says why); the rest of the file is still read.
                let door = &mut out.doors[d];
                if let Err(m) = door_line(door, &mut seen, key, &lower, value, n) {
                    door.broken.get_or_insert(err(n, m.0));
                }
            }
        }
    }
    Ok(out)
}

/// Reads one `key = value` line of a door.
fn door_line(
    door: &mut Door,
    seen: &mut BTreeMap<&'static str, usize>,
    key: &str,
    lower: &str,
    value: Option<&str>,
    n: usize,
) -> Result<(), Why> {
    let Some(value) = value else {
        return Err(format!("{key:?} is not `key = value`").into());
    };
    let Some(&(_, canon)) = DOOR_KEYS.iter().find(|(k, _)| *k == lower) else {
        return Err(format!(
            "unknown key {key:?} in door [{}] (sequence, one_time_sequences, seq_timeout, tcpflags, start_command, start_command_6, cmd_timeout, stop_command, stop_command_6, target)",
            door.section
        ).into());
    };
    if let Some(first) = seen.insert(canon, n) {
        return Err(format!(
            "{canon} given twice in door [{}] (first at line {first})",
            door.section
        )
        .into());
    }
    if value.is_empty() {
        return Err(format!("{key} has no value").into());
    }
    read_door_key(door, canon, value, n)
}

/// Cuts a `#` comment: one at the start of the line or after whitespace (a `#` inside a
/// word is kept).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn read_door_key(door: &mut Door, key: &str, value: &str, line: usize) -> Result<(), Why> {
    let secs = |v: &str| -> Result<u64, Why> {
        match v.parse::<u64>() {
            Ok(0) => Err(format!("{key} = 0: at least 1 second").into()),
            Ok(s) if s > 86400 * 365 => Err(format!("{key} = {s}: at most 365 days").into()),
            Ok(s) => Ok(s),
            Err(_) => Err(format!("{key} = {v}: a number of seconds").into()),
        }
    };
    match key {
        "sequence" => {
            let seq = Sequence::parse(value).map_err(|e| format!("sequence: {e}"))?;
            if seq.0.is_empty() {
                return Err("sequence: no steps".into());
            }
            door.sequence = Some((seq, line));
        }
        "one_time_sequences" => door.one_time_sequences = Some(value.to_string()),
        "seq_timeout" => door.seq_timeout = Some(secs(value)?),
        "cmd_timeout" => door.cmd_timeout = Some((secs(value)?, line)),
        "tcpflags" => {
            parse_tcpflags(value).map_err(|e| format!("tcpflags: {e}"))?;
            door.tcpflags = Some(value.to_string());
        }
        "target" => door.target = Some(value.to_string()),
        _ => {
            let cmd = Command::read(value, line).map_err(|e| format!("{key}: {e}"))?;
            let slot = match key {
                "start_command" => &mut door.start,
                "start_command_6" => &mut door.start6,
                "stop_command" => &mut door.stop,
                _ => &mut door.stop6,
            };
            *slot = Some(cmd);
        }
    }
    Ok(())
}

/// Doors that close another door's access, and which door each closes.
#[derive(Default)]
struct Closers {
    closing: BTreeSet<usize>,
    closer_of: BTreeMap<usize, usize>,
}

fn pair_close_doors(doors: &[Door], protect: &[PortSpec], notes: &mut Vec<String>) -> Closers {
    let mut out = Closers::default();
    for (c, close) in doors.iter().enumerate() {
        if close.broken.is_some() {
            continue;
        }
        let Some(rule) = close.start.as_ref().and_then(Command::rule) else {
            continue;
        };
        if rule.open {
            continue;
        }
        out.closing.insert(c);
        if close.sequence.is_none() {
            notes.push(format!(
                "[{}] closes access but has no sequence (one-time close sequences are not converted): not converted.",
                close.section
            ));
            continue;
        }
        let opener = doors.iter().enumerate().find(|(_, d)| {
            d.broken.is_none()
                && d.sequence.is_some()
                && d.start
                    .as_ref()
                    .and_then(Command::rule)
                    .is_some_and(|o| o.open && o.same_target(rule, protect))
        });
        match opener {
            Some((o, _)) if out.closer_of.contains_key(&o) => notes.push(format!(
                "[{}] closes what [{}] opens, like [{}] before it: a door has one close sequence, [{}] is not converted.",
                close.section, doors[o].section, doors[out.closer_of[&o]].section, close.section
            )),
            Some((o, _)) => {
                out.closer_of.insert(o, c);
            }
            None => notes.push(format!(
                "[{}] runs {} that no door opens: not converted.",
                close.section,
                rule.describe()
            )),
        }
    }
    out
}

/// Notes what a closing door had that its merge into the opening door leaves out.
fn note_close_door_extras(
    close: &Door,
    open: &Door,
    protect: &[PortSpec],
    notes: &mut Vec<String>,
) {
    let s = &close.section;
    if close.tcpflags != open.tcpflags || close.seq_timeout != open.seq_timeout {
        notes.push(format!(
            "[{s}]'s tcpflags and seq_timeout are not kept: the close sequence uses [{}]'s.",
            open.section
        ));
    }
    for (key, cmd) in [
        ("stop_command", &close.stop),
        ("stop_command_6", &close.stop6),
    ] {
        if let Some(c) = cmd {
            notes.push(format!(
                "[{s}] {key} (line {}) dropped: a close sequence runs no command of its own: {}",
                c.line, c.text
            ));
        }
    }
    if let (Some(c), Some(rule)) = (&close.start6, close.start.as_ref().and_then(Command::rule)) {
        match c.rule() {
            Some(r6)
                if !r6.open
                    && r6
                        .ports(protect)
                        .is_some_and(|p| Some(p) == rule.ports(protect)) =>
            {
                notes.push(format!(
                    "[{s}] start_command_6 closes the same ports: the gate covers IPv6 too."
                ))
            }
            _ => notes.push(format!(
                "[{s}] start_command_6 (line {}) not converted: {}",
                c.line, c.text
            )),
        }
    }
    if close.one_time_sequences.is_some() {
        notes.push(format!("[{s}] one_time_sequences of a closing door not converted (one-time sequences open doors only)."));
    }
    if close.target.is_some() {
        notes.push(format!("[{s}] target not converted."));
    }
}

/// Converts an opening (or ordinary) door; `Ok(None)` when it is left out (with a note).
fn convert_door(
    door: &Door,
    protect: &[PortSpec],
    err: &dyn Fn(usize, String) -> ImportError,
    notes: &mut Vec<String>,
) -> Result<Option<KnockConfig>, ImportError> {
    let s = &door.section;
    if let Some(t) = &door.target {
        notes.push(format!(
            "[{s}] target = {t} not converted: the door listens on every address of the interface."
        ));
    }
    let sequence = match (door.sequence.clone(), &door.one_time_sequences) {
        (Some((seq, _)), _) => seq,
        (None, Some(_)) => Sequence::default(),
        (None, None) => return Err(err(door.line, format!("door [{s}] has no sequence"))),
    };

    // Protected ports: those the opening firewall command names, else --protect.
    let start_rule = door.start.as_ref().and_then(Command::rule);
    let protected = match start_rule {
        Some(rule) if rule.open => {
            let ports = rule.ports(protect).ok_or_else(|| {
                err(
                    door.start.as_ref().map_or(door.line, |c| c.line),
                    format!(
                        "door [{s}]: its start_command is {}, which does not say which ports to protect: pass --protect tcp/22 (the ports the door opens)",
                        rule.describe()
                    ),
                )
            })?;
            let how = match rule.reach {
                Reach::Ports(_) => String::new(),
                _ => " (from --protect)".into(),
            };
            notes.push(format!(
                "[{s}] start_command is {}: replaced by the gate, protected = {}{how}.",
                rule.describe(),
                join_ports(&ports)
            ));
            if matches!(rule.reach, Reach::Ports(_)) && !protect.is_empty() && ports != protect {
                notes.push(format!(
                    "[{s}] --protect not used: the command names the ports."
                ));
            }
            ports
        }
        _ => {
            if protect.is_empty() {
                let why = match &door.start {
                    None => "it runs no command".to_string(),
                    Some(c) => match c.rule() {
                        Some(r) => format!("its start_command is {}", r.describe()),
                        None => format!("its start_command is not a firewall command ({})", c.text),
                    },
                };
                return Err(err(
                    door.start.as_ref().map_or(door.line, |c| c.line),
                    format!(
                        "door [{s}]: cannot tell which ports it opens ({why}): pass --protect tcp/22 (the ports the door opens)"
                    ),
                ));
            }
            notes.push(format!(
                "[{s}] protected = {} (from --protect).",
                join_ports(protect)
            ));
            protect.to_vec()
        }
    };
    let start_command = match &door.start {
        Some(_) if start_rule.is_some_and(|r| r.open) => None,
        Some(c) => {
            note_kept(s, "start_command", c, notes);
            Some(c.argv())
        }
        None => None,
    };

    // Timing: knockd runs stop_command cmd_timeout after start_command.
    let cmd_timeout = door.cmd_timeout.map(|(t, _)| t);
    let (open_for, stop_command) = match &door.stop {
        Some(stop) => {
            let open_for = cmd_timeout.unwrap_or(KNOCKD_DEFAULT_CMD_TIMEOUT);
            let kept = match stop.rule() {
                Some(r) if !r.open => {
                    notes.push(format!(
                        "[{s}] stop_command is {}: dropped, the gate closes the door after open_for = {open_for}s.",
                        r.describe()
                    ));
                    None
                }
                _ => {
                    note_kept(s, "stop_command", stop, notes);
                    Some(stop.argv())
                }
            };
            if cmd_timeout.is_none() {
                notes.push(format!(
                    "[{s}] open_for = {open_for}s: knockd's default cmd_timeout."
                ));
            }
            (open_for, kept)
        }
        None => {
            let open_for = match cmd_timeout {
                Some(t) => {
                    notes.push(format!(
                        "[{s}] has no stop_command: open_for = cmd_timeout = {t}s."
                    ));
                    t
                }
                None => {
                    notes.push(format!(
                        "[{s}] has no stop_command (knockd leaves the port open): open_for = {DEFAULT_OPEN_FOR_WITHOUT_STOP}s, statewall's default; set it as needed."
                    ));
                    DEFAULT_OPEN_FOR_WITHOUT_STOP
                }
            };
            (open_for, None)
        }
    };

    for (key, cmd, open) in [
        ("start_command_6", &door.start6, true),
        ("stop_command_6", &door.stop6, false),
    ] {
        let Some(c) = cmd else { continue };
        let same = c
            .rule()
            .and_then(|r| (r.open == open).then(|| r.ports(protect)))
            .flatten()
            .is_some_and(|p| p == protected);
        if same {
            notes.push(format!(
                "[{s}] {key} acts on the same ports: the gate covers IPv6 too."
            ));
        } else {
            notes.push(format!(
                "[{s}] {key} (line {}) not converted (statewall runs start_command and stop_command for IPv4 and IPv6 knockers): {}",
                c.line, c.text
            ));
        }
    }

    let tcpflags = match &door.tcpflags {
        Some(f) => f.clone(),
        None => {
            notes.push(format!(
                "[{s}] no tcpflags (knockd checks none): statewall's default syn,!ack applies, so only connection attempts count as knocks."
            ));
            "syn,!ack".into()
        }
    };
    let seq_timeout = Dur::secs(door.seq_timeout.unwrap_or(KNOCKD_DEFAULT_SEQ_TIMEOUT));
    let strict = sequence.0.is_empty() || !consecutive(&sequence);
    if !strict {
        notes.push(format!(
            "[{s}] sequence {sequence} is consecutive ports: strict = false (a packet to another port does not reset a knocker part-way), as statewall refuses strict doors a port scan walks through."
        ));
    }

    Ok(Some(KnockConfig {
        name: String::new(),
        sequence,
        protected,
        tcpflags,
        // knockd only bounds the whole sequence.
        step_timeout: seq_timeout,
        seq_timeout,
        open_for: Dur::secs(open_for),
        strict,
        start_command,
        stop_command,
        cmd_timeout: Dur::secs(cmd_timeout.unwrap_or(KNOCKD_DEFAULT_CMD_TIMEOUT)),
        // The same file and marking as knockd's: the two can share it.
        one_time_sequences: door
            .one_time_sequences
            .as_ref()
            .map(std::path::PathBuf::from),
        ..KnockConfig::new("")
    }))
}

/// Notes a command kept as a command (and how, when it goes through the shell).
fn note_kept(section: &str, key: &str, c: &Command, notes: &mut Vec<String>) {
    match &c.kind {
        CmdKind::Shell(_) => notes.push(format!(
            "[{section}] {key} uses shell syntax: it runs as /bin/sh -c SCRIPT {SHELL_ARGV0} %IP%, with %IP% replaced by \"$1\" in SCRIPT (the address is an argument, never shell text)."
        )),
        CmdKind::Argv(_) => notes.push(format!(
            "[{section}] {key} is not a firewall command statewall recognises: kept as a command."
        )),
        CmdKind::Firewall(r, _) => notes.push(format!(
            "[{section}] {key} is {}: kept as a command.",
            r.describe()
        )),
    }
}

/// Whether every step is the previous port plus one, or every step minus one.
fn consecutive(seq: &Sequence) -> bool {
    let s = &seq.0;
    s.len() >= 2
        && (s
            .windows(2)
            .all(|w| w[1].0.port as i32 - w[0].0.port as i32 == 1)
            || s.windows(2)
                .all(|w| w[1].0.port as i32 - w[0].0.port as i32 == -1))
}

/// The section name made a door name (letters, digits, `-`, `_`), distinct from the others.
fn unique_name(section: &str, taken: &mut BTreeSet<String>, notes: &mut Vec<String>) -> String {
    let base: String = section
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    if name != section {
        notes.push(format!("[{section}] is named {name:?}."));
    }
    taken.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u16) -> PortSpec {
        PortSpec { proto: 6, port }
    }

    fn seq(s: &str) -> Sequence {
        Sequence::parse(s).unwrap()
    }

    /// The imported config written as TOML loads back as the same config.
    fn round_trip(imp: &Import) {
        let text = toml::to_string(&imp.config).unwrap();
        let back = Config::parse(&text, "round-trip").unwrap();
        assert_eq!(back, imp.config, "{text}");
    }

    const DEBIAN: &str = "\
[options]
\tUseSyslog

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn
";

    #[test]
    fn debian_default() {
        let imp = import(DEBIAN, "knockd.conf", &[]).unwrap();
        let c = &imp.config;
        assert_eq!(c.interfaces.len(), 1);
        assert_eq!(c.interfaces[0].name, "eth0");
        assert_eq!(c.knocks.len(), 1);
        let k = &c.knocks[0];
        assert_eq!(k.name, "openSSH");
        assert_eq!(k.sequence, seq("7000,8000,9000"));
        assert_eq!(k.protected, vec![tcp(22)]);
        assert_eq!(k.close_sequence, Some(seq("9000,8000,7000")));
        assert!(!k.toggle);
        assert_eq!(k.tcpflags, "syn");
        assert_eq!(k.seq_timeout, Dur::secs(5));
        assert_eq!(k.step_timeout, Dur::secs(5));
        assert_eq!(k.open_for, Dur::secs(DEFAULT_OPEN_FOR_WITHOUT_STOP));
        assert_eq!(k.cmd_timeout, Dur::secs(10));
        assert!(k.strict);
        assert_eq!(k.start_command, None);
        assert_eq!(k.stop_command, None);
        let notes = imp.notes.join("\n");
        for want in [
            "UseSyslog dropped",
            "replaced by the gate, protected = tcp/22",
            "[closeSSH] closes what [openSSH] opens",
            "open_for = 30s",
            "default eth0",
        ] {
            assert!(notes.contains(want), "{want:?} not in:\n{notes}");
        }
        round_trip(&imp);
    }

    #[test]
    fn compat_nft_set_example_needs_protect() {
        let text = "\
[options]
    interface = enp1s0
    logfile = /var/log/knockd.log

[openSSH]
    sequence      = 7000,8000:udp,9000
    seq_timeout   = 5
    tcpflags      = syn
    start_command = /usr/sbin/nft add element inet filter allowed { %IP% }
    cmd_timeout   = 10
    stop_command  = /usr/sbin/nft delete element inet filter allowed { %IP% }
";
        let e = problem(text, "k.conf", &[]);
        assert!(e.starts_with("k.conf:9: "), "{e}");
        assert!(
            e.contains("--protect tcp/22") && e.contains("[openSSH]"),
            "{e}"
        );

        let imp = import(text, "k.conf", &[tcp(22)]).unwrap();
        let c = &imp.config;
        assert_eq!(c.interfaces[0].name, "enp1s0");
        let k = &c.knocks[0];
        assert_eq!(k.sequence, seq("7000,8000:udp,9000"));
        assert_eq!(k.sequence.0[1].0.proto, 17);
        assert_eq!(k.protected, vec![tcp(22)]);
        assert_eq!(k.open_for, Dur::secs(10));
        assert_eq!(k.cmd_timeout, Dur::secs(10));
        assert_eq!(k.start_command, None);
        assert_eq!(k.stop_command, None);
        assert_eq!(k.close_sequence, None);
        let notes = imp.notes.join("\n");
        assert!(
            notes.contains("LogFile = /var/log/knockd.log dropped"),
            "{notes}"
        );
        assert!(notes.contains("nft set inet filter allowed"), "{notes}");
        assert!(notes.contains("(from --protect)"), "{notes}");
        assert!(
            notes.contains("stop_command is an nft command closing"),
            "{notes}"
        );
        round_trip(&imp);
    }

    #[test]
    fn shell_commands_pass_the_address_as_an_argument() {
        let text = "\
[options]
  Interface = eth1
[web]
  sequence = 2222:udp,3333,4444
  start_command = /usr/local/bin/open-web %IP% && logger \"knock from %IP%\" # trailing
  stop_command = /usr/local/bin/close-web '%IP%' 443
  cmd_timeout = 20
";
        let imp = import(text, "w.conf", &[tcp(443), tcp(80)]).unwrap();
        let k = &imp.config.knocks[0];
        assert_eq!(k.protected, vec![tcp(80), tcp(443)]);
        assert_eq!(
            k.start_command.as_deref().unwrap(),
            [
                "/bin/sh",
                "-c",
                "/usr/local/bin/open-web \"$1\" && logger \"knock from $1\"",
                "statewall-knock",
                "%IP%"
            ]
        );
        // No shell syntax: split into words, quotes removed, %IP% left for the daemon.
        assert_eq!(
            k.stop_command.as_deref().unwrap(),
            ["/usr/local/bin/close-web", "%IP%", "443"]
        );
        assert_eq!(k.open_for, Dur::secs(20));
        assert_eq!(k.cmd_timeout, Dur::secs(20));
        assert_eq!(k.tcpflags, "syn,!ack");
        let notes = imp.notes.join("\n");
        assert!(notes.contains("start_command uses shell syntax"), "{notes}");
        assert!(notes.contains("no tcpflags"), "{notes}");
        round_trip(&imp);

        // The script never holds the address: single-quoted %IP% becomes a quoted "$1" too.
        let s = scan("echo '%IP% knocked' >> /tmp/log").unwrap();
        assert!(s.shell);
        assert_eq!(s.script, "echo ''\"$1\"' knocked' >> /tmp/log");
        assert!(scan("a 'b").is_err());
    }

    /// The import's error, or else the first door it skipped.
    fn problem(text: &str, origin: &str, protect: &[PortSpec]) -> String {
        match import(text, origin, protect) {
            Err(e) => e.to_string(),
            Ok(imp) => imp
                .skipped
                .first()
                .cloned()
                .expect("neither error nor skip"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = problem("[door]\n  sequence = 1,x\n", "f", &[tcp(22)]);
        assert!(e.starts_with("f:2: sequence: "), "{e}");
        let e = problem("# c\n\n[d]\nsequence 7000\n", "f", &[tcp(22)]);
        assert_eq!(e, "f:4: \"sequence 7000\" is not `key = value`");
        let e = import("sequence = 1,2\n", "f", &[tcp(22)])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:1: "), "{e}");
        let e = problem("[d]\nsequence = 7,9\nseq_timeout = 5s\n", "f", &[tcp(22)]);
        assert_eq!(e, "f:3: seq_timeout = 5s: a number of seconds");
        let e = problem(
            "[d]\nsequence = 7,9\ntcpflags = syn,bogus\n",
            "f",
            &[tcp(22)],
        );
        assert!(e.starts_with("f:3: tcpflags: "), "{e}");
        let e = problem(
            "[d]\nsequence = 7,9\ncommand = a\nstart_command = b\n",
            "f",
            &[],
        );
        assert_eq!(
            e,
            "f:4: start_command given twice in door [d] (first at line 3)"
        );
        let e = problem("[d]\nseq_timeout = 5\n", "f", &[tcp(22)]);
        assert_eq!(e, "f:1: door [d] has no sequence");
        let e = problem("[d]\nsequence = 7,9\ncommand = /opt/open %IP%\n", "f", &[]);
        assert!(
            e.starts_with("f:3: door [d]: cannot tell which ports") && e.contains("--protect"),
            "{e}"
        );
        // Validation errors of the result come back too (a protected port knocked on).
        let e = import("[d]\nsequence = 22,23,25\n", "f", &[tcp(22)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("also a step of the sequence"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = import("[options]\n  UseSyslog\n  Foo = 1\n", "f", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:3: unknown key \"Foo\" in [options]"),
            "{e}"
        );
        let e = problem(
            "[a]\n  Sequence = 7,9\n  Timeout = 5\n  colour = blue\n",
            "f",
            &[],
        );
        assert!(
            e.starts_with("f:4: unknown key \"colour\" in door [a]"),
            "{e}"
        );
    }

    #[test]
    fn keys_are_case_insensitive_and_aliases_work() {
        let text = "[Options]\nINTERFACE = eth2\n[x y]\nSEQUENCE = 5000,6000,7000\nTIMEOUT = 7\nCommand = iptables -I INPUT 1 -s %IP% -p udp -m multiport --dports 53,5353 -j ACCEPT\n";
        let imp = import(text, "f", &[]).unwrap();
        let k = &imp.config.knocks[0];
        assert_eq!(k.name, "x_y");
        assert_eq!(k.seq_timeout, Dur::secs(7));
        assert_eq!(
            k.protected,
            vec![
                PortSpec {
                    proto: 17,
                    port: 53
                },
                PortSpec {
                    proto: 17,
                    port: 5353
                }
            ]
        );
        assert_eq!(imp.config.interfaces[0].name, "eth2");
    }

    #[test]
    fn same_sequence_close_door_makes_a_toggle() {
        let text = "\
[on]
sequence = 4000,4100,4050
command = ufw allow from %IP% to any port 22 proto tcp
[off]
sequence = 4000,4100,4050
command = ufw delete allow from %IP% to any port 22 proto tcp
";
        let imp = import(text, "f", &[]).unwrap();
        assert_eq!(imp.config.knocks.len(), 1);
        let k = &imp.config.knocks[0];
        assert!(k.toggle);
        assert_eq!(k.close_sequence, None);
        assert_eq!(k.protected, vec![tcp(22)]);
        round_trip(&imp);
    }

    #[test]
    fn consecutive_sequences_are_not_strict() {
        let text = "[d]\nsequence = 7000,7001,7002\ncommand = nft add rule inet filter input ip saddr %IP% tcp dport { 22, 2222 } accept\nstop_command = /usr/bin/logger closed\n";
        let imp = import(text, "f", &[]).unwrap();
        let k = &imp.config.knocks[0];
        assert!(!k.strict);
        assert_eq!(k.protected, vec![tcp(22), tcp(2222)]);
        assert_eq!(
            k.stop_command.as_deref().unwrap(),
            ["/usr/bin/logger", "closed"]
        );
        assert_eq!(k.open_for, Dur::secs(10));
        assert!(imp.notes.iter().any(|n| n.contains("strict = false")));
        round_trip(&imp);
    }

    #[test]
    fn ipv6_commands_and_unconverted_keys() {
        let text = "\
[ssh]
sequence = 1111,2222,3333
command = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
command_6 = ip6tables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
stop_command = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
stop_command_6 = /usr/local/bin/v6-close %IP%
one_time_sequences = /etc/knockd/ssh.seq
target = 192.0.2.1
";
        let imp = import(text, "f", &[]).unwrap();
        let notes = imp.notes.join("\n");
        assert!(
            notes.contains("start_command_6 acts on the same ports"),
            "{notes}"
        );
        assert!(
            notes.contains("stop_command_6 (line 6) not converted"),
            "{notes}"
        );
        assert!(!notes.contains("one_time_sequences"), "{notes}");
        assert!(notes.contains("target = 192.0.2.1 not converted"));
        let k = &imp.config.knocks[0];
        assert_eq!(
            k.one_time_sequences.as_deref(),
            Some(std::path::Path::new("/etc/knockd/ssh.seq")),
            "the one-time file carries over"
        );
        assert_eq!(k.stop_command, None);
        assert_eq!(k.protected, vec![tcp(22)]);
    }

    #[test]
    fn recognises_firewall_commands() {
        let r = |s: &str| recognise(&scan(s).unwrap().words).unwrap();
        let rule = r(
            "/usr/sbin/iptables -t filter -I INPUT -s %IP%/32 -p tcp --dport 6000:6002 -j ACCEPT",
        )
        .unwrap();
        assert!(rule.open);
        assert_eq!(
            rule.reach,
            Reach::Ports(vec![tcp(6000), tcp(6001), tcp(6002)])
        );
        assert_eq!(
            r("iptables -D INPUT -s %IP% -j ACCEPT").unwrap(),
            FwRule {
                tool: Tool::Iptables,
                open: false,
                reach: Reach::AllPorts
            }
        );
        // Not about the knocking address, negated, or not an accept: not recognised.
        assert!(r("iptables -A INPUT -p tcp --dport 22 -j ACCEPT").is_none());
        assert!(r("iptables -A INPUT ! -s %IP% -p tcp --dport 22 -j DROP").is_none());
        assert!(r("iptables -A INPUT -s %IP% -p tcp --dport 22 -j LOG").is_none());
        assert_eq!(
            r("nft 'add element ip filter knocked { %IP% timeout 30s }'")
                .unwrap()
                .reach,
            Reach::Set("ip filter knocked".into())
        );
        assert_eq!(
            r("nft add element filter knocked {%IP%}").unwrap().reach,
            Reach::Set("ip filter knocked".into())
        );
        assert_eq!(
            r("ufw allow from %IP% to any port 53").unwrap().reach,
            Reach::Ports(vec![
                tcp(53),
                PortSpec {
                    proto: 17,
                    port: 53
                }
            ])
        );
        assert!(
            !r("sudo ufw delete allow from %IP% app OpenSSH")
                .unwrap()
                .open
        );
        assert!(r("ufw allow 22/tcp").is_none());
        assert!(r("/usr/local/bin/open %IP%").is_none());
        let too_many = recognise(
            &scan("iptables -A INPUT -s %IP% -p tcp --dport 1000:2000 -j ACCEPT")
                .unwrap()
                .words,
        );
        assert!(too_many.unwrap_err().to_string().contains("at most 8"));
        // knockd's rule helper, under both names.
        for name in ["/usr/local/sbin/knock_add", "/usr/sbin/knock_helper_ipt.sh"] {
            let open = r(&format!("{name} -i -c INPUT -p tcp -d 443 -f %IP%")).unwrap();
            assert!(open.open);
            assert_eq!(open.reach, Reach::Ports(vec![tcp(443)]));
            let close = r(&format!("{name} -x -c INPUT -p udp -d 53 -f %IP% -m knock")).unwrap();
            assert!(!close.open);
            assert_eq!(
                close.reach,
                Reach::Ports(vec![PortSpec {
                    proto: 17,
                    port: 53
                }])
            );
            assert_eq!(
                r(&format!("{name} -a -f %IP%")).unwrap().reach,
                Reach::AllPorts
            );
            // No verb, no %IP% source, an unknown option, a port without a protocol.
            assert!(r(&format!("{name} -c INPUT -p tcp -d 22 -f %IP%")).is_none());
            assert!(r(&format!("{name} -a -p tcp -d 22 -f 10.0.0.1")).is_none());
            assert!(r(&format!("{name} -a -p tcp -d 22 -f %IP% -z")).is_none());
            assert!(r(&format!("{name} -a -d 22 -f %IP%")).is_none());
        }
    }

    /// Debian's knockd.conf as the package ships it: every door converts, without flags.
    #[test]
    fn debian_package_file() {
        let text = "[options]\n\tUseSyslog\n\n[openSSH]\n\tsequence    = 7000,8000,9000\n\tseq_timeout = 5\n\tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\ttcpflags    = syn\n\n[closeSSH]\n\tsequence    = 9000,8000,7000\n\tseq_timeout = 5\n\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\ttcpflags    = syn\n\n[openHTTPS]\n\tsequence    = 12345,54321,24680,13579\n\tseq_timeout = 5\n\tcommand     = /usr/local/sbin/knock_add -i -c INPUT -p tcp -d 443 -f %IP%\n\ttcpflags    = syn\n";
        let imp = import(text, "knockd.conf", &[]).unwrap();
        assert!(imp.skipped.is_empty(), "{:?}", imp.skipped);
        let doors: Vec<(&str, Vec<PortSpec>)> = imp
            .config
            .knocks
            .iter()
            .map(|k| (k.name.as_str(), k.protected.clone()))
            .collect();
        assert_eq!(
            doors,
            vec![("openSSH", vec![tcp(22)]), ("openHTTPS", vec![tcp(443)])]
        );
    }

    /// One door that cannot be read leaves the others converted.
    #[test]
    fn an_unreadable_door_is_skipped_not_fatal() {
        let text = "[a]\nsequence = 7000,8000\ncommand = /opt/open %IP%\n[b]\nsequence = 7100,8100\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n[c]\nsequence = 1,x\n";
        let imp = import(text, "f", &[]).unwrap();
        assert_eq!(imp.config.knocks.len(), 1);
        assert_eq!(imp.config.knocks[0].name, "b");
        assert_eq!(imp.skipped.len(), 2, "{:?}", imp.skipped);
        assert!(imp.skipped[0].starts_with("f:3: door [a]: cannot tell"));
        assert!(imp.skipped[1].starts_with("f:8: sequence: "));
    }
}
