//! Reading knockd's commands: which are firewall commands (iptables, ip6tables, nft, ufw,
//! knockd's rule helper) and what they let in or out, and which are plain commands kept
//! as argument vectors.

use crate::import::error::Why;
use std::collections::BTreeSet;

use crate::types::PortSpec;

/// A firewall front end whose commands are recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tool {
    /// iptables and ip6tables (legacy or nft back end).
    Iptables,
    Nft,
    Ufw,
    /// knockd's iptables rule helper: `knock_add` upstream, `knock_helper_ipt.sh` in
    /// Debian's package.
    Helper,
}
impl Tool {
    pub(super) fn name(self) -> &'static str {
        match self {
            Tool::Iptables => "iptables",
            Tool::Nft => "nft",
            Tool::Ufw => "ufw",
            Tool::Helper => "knock_add",
        }
    }
}
/// What a recognised firewall command lets the knocking address reach.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Reach {
    /// These ports.
    Ports(Vec<PortSpec>),
    /// Every port (a rule that names none).
    AllPorts,
    /// Whatever an nft set (`family table set`) is used for elsewhere.
    Set(String),
    /// A ufw application profile.
    App(String),
}
/// A recognised firewall command: opening (add/insert) or closing (delete) access for the
/// knocking address.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct FwRule {
    pub(super) tool: Tool,
    pub(super) open: bool,
    pub(super) reach: Reach,
}
impl FwRule {
    /// The ports to protect: the named ones, else `protect` (None when that is empty).
    pub(super) fn ports(&self, protect: &[PortSpec]) -> Option<Vec<PortSpec>> {
        match &self.reach {
            Reach::Ports(p) => Some(p.clone()),
            _ if protect.is_empty() => None,
            _ => Some(protect.to_vec()),
        }
    }

    /// Whether `other` acts on the same access as `self` (same tool, same set or same
    /// ports), whatever the direction.
    pub(super) fn same_target(&self, other: &FwRule, protect: &[PortSpec]) -> bool {
        if self.tool != other.tool {
            return false;
        }
        match (&self.reach, &other.reach) {
            (Reach::Set(a), Reach::Set(b)) => a == b,
            (Reach::App(a), Reach::App(b)) => a == b,
            (Reach::Set(_), _) | (_, Reach::Set(_)) => false,
            _ => match (self.ports(protect), other.ports(protect)) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }

    pub(super) fn describe(&self) -> String {
        let what = match &self.reach {
            Reach::Ports(p) => join_ports(p),
            Reach::AllPorts => "every port".into(),
            Reach::Set(s) => format!("nft set {s}"),
            Reach::App(a) => format!("ufw application {a}"),
        };
        let verb = if self.open { "opening" } else { "closing" };
        format!("an {} command {verb} {what}", self.tool.name())
    }
}
/// A knockd command, classified.
#[derive(Clone, Debug)]
pub(super) struct Command {
    pub(super) text: String,
    pub(super) line: usize,
    pub(super) kind: CmdKind,
}
#[derive(Clone, Debug)]
pub(super) enum CmdKind {
    /// A recognised firewall command (replaced by the gate), and its words.
    Firewall(FwRule, Vec<String>),
    /// A simple command: its arguments, `%IP%` left for the daemon to fill in.
    Argv(Vec<String>),
    /// A command using shell syntax: `/bin/sh -c SCRIPT statewall-knock %IP%`.
    Shell(Vec<String>),
}
impl Command {
    pub(super) fn read(text: &str, line: usize) -> Result<Command, Why> {
        let scan = scan(text)?;
        let kind = if scan.shell {
            CmdKind::Shell(vec![
                "/bin/sh".into(),
                "-c".into(),
                scan.script,
                SHELL_ARGV0.into(),
                "%IP%".into(),
            ])
        } else if scan.words.is_empty() {
            return Err("an empty command".into());
        } else {
            match recognise(&scan.words)? {
                Some(rule) => CmdKind::Firewall(rule, scan.words),
                None => CmdKind::Argv(scan.words),
            }
        };
        Ok(Command {
            text: text.to_string(),
            line,
            kind,
        })
    }

    pub(super) fn rule(&self) -> Option<&FwRule> {
        match &self.kind {
            CmdKind::Firewall(r, _) => Some(r),
            _ => None,
        }
    }

    /// The argument vector, for a command that is kept.
    pub(super) fn argv(&self) -> Vec<String> {
        match &self.kind {
            CmdKind::Firewall(_, v) | CmdKind::Argv(v) | CmdKind::Shell(v) => v.clone(),
        }
    }
}
/// A command split into words the way `/bin/sh` would for a simple command.
pub(super) struct Scan {
    pub(super) words: Vec<String>,
    /// Whether it uses shell syntax beyond quoting (so words alone would change it).
    pub(super) shell: bool,
    /// The text with each `%IP%` replaced by a quoted `$1`, fit for `sh -c`.
    pub(super) script: String,
}
/// Splits on unquoted whitespace, honouring single and double quotes, and notes shell
/// syntax: pipes, lists, redirections, expansions, globs, escapes, subshells.
pub(super) fn scan(text: &str) -> Result<Scan, Why> {
    #[derive(PartialEq)]
    enum Quote {
        No,
        Single,
        Double,
    }
    let mut quote = Quote::No;
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut shell = false;
    let mut script = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("%IP%") {
            // $1 expanded inside double quotes: one argument, never parsed as shell text.
            script.push_str(match quote {
                Quote::No => "\"$1\"",
                Quote::Double => "$1",
                Quote::Single => "'\"$1\"'",
            });
            word.push_str("%IP%");
            in_word = true;
            rest = after;
            continue;
        }
        script.push(c);
        rest = &rest[c.len_utf8()..];
        match quote {
            Quote::Single => {
                if c == '\'' {
                    quote = Quote::No;
                } else {
                    word.push(c);
                }
            }
            Quote::Double => match c {
                '"' => quote = Quote::No,
                '$' | '`' | '\\' => {
                    shell = true;
                    word.push(c);
                }
                _ => word.push(c),
            },
            Quote::No => match c {
                '\'' => {
                    quote = Quote::Single;
                    in_word = true;
                }
                '"' => {
                    quote = Quote::Double;
                    in_word = true;
                }
                c if c.is_whitespace() => {
                    if c == '\n' {
                        shell = true;
                    }
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                '|' | '&' | ';' | '<' | '>' | '$' | '`' | '\\' | '(' | ')' | '*' | '?' | '['
                | '~' => {
                    shell = true;
                    word.push(c);
                    in_word = true;
                }
                _ => {
                    word.push(c);
                    in_word = true;
                }
            },
        }
    }
    if quote != Quote::No {
        return Err(format!("unterminated quote in {text:?}").into());
    }
    if in_word {
        words.push(word);
    }
    Ok(Scan {
        words,
        shell,
        script,
    })
}
/// Recognises iptables/ip6tables, nft and ufw commands that give or take away the knocking
/// address's access. `Ok(None)`: not such a command (kept as a command).
pub(super) fn recognise(words: &[String]) -> Result<Option<FwRule>, Why> {
    let mut w = words;
    if w.len() > 1 && basename(&w[0]) == "sudo" {
        w = &w[1..];
    }
    let args = &w[1..];
    match basename(&w[0]) {
        "iptables" | "ip6tables" | "iptables-legacy" | "ip6tables-legacy" | "iptables-nft"
        | "ip6tables-nft" => iptables(args),
        "nft" => nft(args),
        "ufw" => ufw(args),
        "knock_add" | "knock_helper_ipt.sh" => helper(args),
        _ => Ok(None),
    }
}

/// knockd's rule helper, `knock_add` (upstream) or `knock_helper_ipt.sh` (Debian):
/// `-a` append or `-i` insert (opening), `-x` delete (closing); `-f` the source (the
/// knocking address), `-d` the destination port, `-p` the protocol, `-c` the chain, `-m` a
/// comment. Without `-d` it lets the source reach every port.
pub(super) fn helper(args: &[String]) -> Result<Option<FwRule>, Why> {
    let (mut open, mut from_ip) = (None, false);
    let (mut proto, mut dport) = (None::<String>, None::<String>);
    let mut i = 0;
    while i < args.len() {
        let next = args.get(i + 1).map(String::as_str);
        let mut step = 2;
        match (args[i].as_str(), next) {
            ("-a" | "-i" | "-x", _) => {
                if open.replace(args[i] != "-x").is_some() {
                    return Ok(None);
                }
                step = 1;
            }
            ("-f", Some(v)) => from_ip = has_ip(v),
            ("-p", Some(v)) => proto = Some(v.to_string()),
            ("-d", Some(v)) => dport = Some(v.to_string()),
            ("-c" | "-m", Some(_)) => {}
            // An option the helper does not have: not a command we can read.
            _ => return Ok(None),
        }
        i += step;
    }
    let Some(open) = open else { return Ok(None) };
    if !from_ip {
        return Ok(None);
    }
    let reach = match (proto.as_deref(), dport) {
        (_, None) => Reach::AllPorts,
        (Some(p), Some(list)) => match protocol(p) {
            Some(proto) => Reach::Ports(port_list(&list, proto, ':')?),
            None => return Ok(None),
        },
        // A port without a protocol: the helper would pass `--dport` alone, which
        // iptables refuses.
        (None, Some(_)) => return Ok(None),
    };
    Ok(Some(FwRule {
        tool: Tool::Helper,
        open,
        reach,
    }))
}
pub(super) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
pub(super) fn has_ip(s: &str) -> bool {
    s.contains("%IP%")
}
pub(super) fn protocol(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "tcp" | "6" => Some(6),
        "udp" | "17" => Some(17),
        _ => None,
    }
}
/// Parses a port list (`22`, `22,80`, `6000:6003` with `range` as the range mark).
pub(super) fn port_list(text: &str, proto: u8, range: char) -> Result<Vec<PortSpec>, Why> {
    let gmax = statewall_common::xfsm::GRANT_SET_PORTS;
    let bad = || Why(format!("{text:?} is not a port list"));
    let port = |s: &str| -> Result<u16, Why> {
        match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad()),
        }
    };
    let mut out = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (lo, hi) = match item.split_once(range) {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(item)?, port(item)?),
        };
        if lo > hi || (hi - lo) as usize >= gmax {
            return Err(format!("port range {item}: a door opens at most {gmax} ports").into());
        }
        out.extend((lo..=hi).map(|port| PortSpec { proto, port }));
    }
    if out.is_empty() {
        return Err(bad());
    }
    if out.len() > gmax {
        return Err(format!("{text}: {} ports, a door opens at most {gmax}", out.len()).into());
    }
    Ok(out.into_iter().collect())
}
/// `iptables -A|-I|-D CHAIN -s %IP% [-p tcp|udp [--dport N | -m multiport --dports L]] -j ACCEPT`.
pub(super) fn iptables(args: &[String]) -> Result<Option<FwRule>, Why> {
    let (mut open, mut from_ip, mut accept) = (None, false, false);
    let (mut proto, mut dports) = (None::<String>, None::<String>);
    let mut i = 0;
    while i < args.len() {
        let next = args.get(i + 1).map(String::as_str).unwrap_or("");
        let mut step = 2;
        match args[i].as_str() {
            "-A" | "--append" | "-I" | "--insert" | "-D" | "--delete" => {
                if open.is_some() {
                    return Ok(None);
                }
                open = Some(!matches!(args[i].as_str(), "-D" | "--delete"));
                // `-I CHAIN 1`: a rule number may follow the chain.
                if args.get(i + 2).is_some_and(|n| n.parse::<u32>().is_ok()) {
                    step = 3;
                }
            }
            "-s" | "--source" | "--src" => from_ip = has_ip(next),
            "-p" | "--protocol" => proto = Some(next.to_string()),
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                dports = Some(next.to_string())
            }
            "-j" | "--jump" => accept = next.eq_ignore_ascii_case("ACCEPT"),
            "-t" | "--table" if next != "filter" => return Ok(None),
            // A negation changes what the rule matches: leave such rules alone.
            "!" => return Ok(None),
            _ => step = 1,
        }
        i += step;
    }
    let Some(open) = open else { return Ok(None) };
    if !from_ip || !accept {
        return Ok(None);
    }
    let reach = match (proto.as_deref(), dports) {
        (None | Some("all"), None) => Reach::AllPorts,
        (Some(p), None) if protocol(p).is_some() => Reach::AllPorts,
        (Some(p), Some(list)) => match protocol(p) {
            Some(proto) => Reach::Ports(port_list(&list, proto, ':')?),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(FwRule {
        tool: Tool::Iptables,
        open,
        reach,
    }))
}
/// nft's words, braces and commas split off (nft reads its arguments as one line).
pub(super) fn nft_words(args: &[String]) -> Vec<String> {
    let joined = args.join(" ");
    let spaced: String = joined
        .chars()
        .flat_map(|c| match c {
            '{' | '}' | ',' => vec![' ', c, ' '],
            _ => vec![c],
        })
        .collect();
    spaced.split_whitespace().map(str::to_string).collect()
}
pub(super) const NFT_FAMILIES: [&str; 6] = ["ip", "ip6", "inet", "arp", "bridge", "netdev"];
/// `nft add|delete element [FAMILY] TABLE SET { %IP% }` and
/// `nft add|insert rule [FAMILY] TABLE CHAIN ... saddr %IP% [tcp|udp dport P] accept`.
pub(super) fn nft(args: &[String]) -> Result<Option<FwRule>, Why> {
    let words = nft_words(args);
    let w: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .skip_while(|a| a.starts_with('-'))
        .collect();
    if w.len() < 3 {
        return Ok(None);
    }
    let open = match w[0] {
        "add" | "insert" | "create" => true,
        "delete" | "destroy" => false,
        _ => return Ok(None),
    };
    match w[1] {
        "element" => {
            let Some(brace) = w.iter().position(|a| *a == "{") else {
                return Ok(None);
            };
            let mut set: Vec<&str> = w[2..brace].to_vec();
            if set.len() == 2 {
                set.insert(0, "ip");
            }
            if set.len() != 3 || !NFT_FAMILIES.contains(&set[0]) {
                return Ok(None);
            }
            // The element must be the knocking address itself (maybe with a timeout), not
            // a concatenation that also holds other fields.
            let elems = &w[brace + 1..];
            let ip_elem = elems.first().is_some_and(|e| *e == "%IP%") && !elems.contains(&".");
            if !ip_elem {
                return Ok(None);
            }
            Ok(Some(FwRule {
                tool: Tool::Nft,
                open,
                reach: Reach::Set(set.join(" ")),
            }))
        }
        "rule" if open => {
            let from_ip = w.windows(2).any(|p| p[0] == "saddr" && p[1] == "%IP%");
            if !from_ip || w.last() != Some(&"accept") {
                return Ok(None);
            }
            let mut ports = Vec::new();
            let mut i = 0;
            while i < w.len() {
                if w[i] == "dport" {
                    let Some(proto) = i.checked_sub(1).and_then(|j| protocol(w[j])) else {
                        return Ok(None);
                    };
                    let list = match w.get(i + 1) {
                        Some(&"{") => {
                            let end = w[i + 1..]
                                .iter()
                                .position(|a| *a == "}")
                                .map(|e| i + 1 + e)
                                .ok_or_else(|| "an nft set without '}'".to_string())?;
                            let items = w[i + 2..end].concat();
                            i = end;
                            items
                        }
                        Some(p) => {
                            i += 1;
                            p.to_string()
                        }
                        None => return Ok(None),
                    };
                    ports.extend(port_list(&list, proto, '-')?);
                }
                i += 1;
            }
            let reach = if ports.is_empty() {
                Reach::AllPorts
            } else {
                let set: BTreeSet<PortSpec> = ports.into_iter().collect();
                Reach::Ports(set.into_iter().collect())
            };
            Ok(Some(FwRule {
                tool: Tool::Nft,
                open,
                reach,
            }))
        }
        _ => Ok(None),
    }
}
/// `ufw [delete|insert N] allow [in] [on IF] from %IP% [to ADDR] [port P] [proto tcp|udp]`
/// (also `app NAME`).
pub(super) fn ufw(args: &[String]) -> Result<Option<FwRule>, Why> {
    let mut w: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut open = true;
    match w.first() {
        Some(&"delete") => {
            open = false;
            w.remove(0);
        }
        Some(&"insert") if w.len() > 1 => {
            w.drain(..2);
        }
        Some(&"prepend") => {
            w.remove(0);
        }
        _ => {}
    }
    if w.first() != Some(&"allow") {
        return Ok(None);
    }
    let (mut from_ip, mut port, mut proto, mut app) = (false, None, None, None);
    let mut i = 1;
    while i < w.len() {
        let next = w.get(i + 1).copied();
        match (w[i], next) {
            ("in", _) => {
                i += 1;
                continue;
            }
            ("out", _) => return Ok(None),
            ("on" | "to" | "comment", Some(_)) => {}
            ("from", Some(a)) => from_ip = has_ip(a),
            ("port", Some(p)) => port = Some(p),
            ("proto", Some(p)) => match protocol(p) {
                Some(n) => proto = Some(n),
                None => return Ok(None),
            },
            ("app", Some(a)) => app = Some(a),
            _ => return Ok(None),
        }
        i += 2;
    }
    if !from_ip {
        return Ok(None);
    }
    let reach = match (port, app) {
        (Some(list), None) => {
            // ufw opens both protocols when none is named.
            let mut ports = Vec::new();
            for p in proto.map_or(vec![6, 17], |p| vec![p]) {
                ports.extend(port_list(list, p, ':')?);
            }
            let gmax = statewall_common::xfsm::GRANT_SET_PORTS;
            if ports.len() > gmax {
                return Err(format!(
                    "port {list} on tcp and udp: {} ports, a door opens at most {gmax}",
                    ports.len()
                )
                .into());
            }
            ports.sort();
            Reach::Ports(ports)
        }
        (None, Some(a)) => Reach::App(a.to_string()),
        (None, None) => Reach::AllPorts,
        (Some(_), Some(_)) => return Ok(None),
    };
    Ok(Some(FwRule {
        tool: Tool::Ufw,
        open,
        reach,
    }))
}

/// The name `$0` of the shell that runs a converted shell command.
pub(super) const SHELL_ARGV0: &str = "statewall-knock";

pub(super) fn join_ports(p: &[PortSpec]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
