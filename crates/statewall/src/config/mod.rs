//! The daemon's configuration file (TOML). `examples/statewall.toml` documents every key;
//! without a file the defaults below apply.
//!
//! Errors name the file, and the line and column (parse errors) or the section and key
//! (validation errors). A config that fails to load changes nothing.
//!
//! `sections` holds the data (`Config` and its sections, re-exported here, where the
//! shell and the tools name them); this file reads and checks a file, running the stages'
//! own checks (`[detect]` with its models: [`crate::detect::live::check`]; the machines:
//! the xfsm compiler and the switch check).
//!
//! May import: the stages' config sections and checks, `engine` (program and map names),
//! `types`. Imported by the shell, the importers and the tools; never by a stage.

use std::{collections::BTreeSet, path::Path};

pub mod sections;
pub use sections::*;

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
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: e.to_string().trim_end().into(),
        })?;
        if let Some(d) = &cfg.detect {
            crate::detect::live::check(d).map_err(|e| ConfigError::Invalid {
                path: origin.into(),
                at: format!("[detect] {}", e.key),
                message: e.msg,
            })?;
            for text in d.machines() {
                let mut m: XfsmConfig =
                    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                        path: origin.into(),
                        at: "[detect]".into(),
                        message: format!("a detector's machine does not read back: {e}"),
                    })?;
                m.exempt = true;
                cfg.machines.push(m);
            }
        }
        if let Some(c) = &cfg.cluster {
            c.validate().map_err(|e| ConfigError::Invalid {
                path: origin.into(),
                at: format!("[cluster] {}", e.key),
                message: e.msg,
            })?;
        }
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
        for (key, v, max) in [
            (
                "[gate] reset_per_sec",
                self.gate.reset_per_sec,
                1_000_000_000,
            ),
            ("[gate] reset_burst", self.gate.reset_burst, 1_000_000),
        ] {
            if v == 0 || v > max {
                return Err(bad(key.into(), format!("{v} is out of range 1..={max}")));
            }
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
        let (n, most) = (
            self.firewall.bitsets_max,
            crate::firewall::config::BITSETS_MAX_LIMIT,
        );
        if !(256..=most).contains(&n) {
            let m = format!(
                "{n}: 256 to {most} (bit-set ids are 16 bits, the top 10240 name one-rule sets; 128 are the wild sets)"
            );
            return Err(bad("[firewall] bitsets_max".into(), m));
        }
        self.validate_maps(&bad)?;
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
        for t in spa_trigger_doors(&self.spa) {
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

    /// `[maps]`: only the tables it may size, within their bounds.
    fn validate_maps(
        &self,
        bad: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        for (name, &n) in &self.maps {
            let at = format!("[maps] {name}");
            let own_key = [
                (statewall_common::maps::MAP_GATE_GRANTS, "[gate] grants_max"),
                (statewall_common::maps::MAP_GATE_FLOWS, "[gate] flows_max"),
                (statewall_common::ct::MAP_CT, "[firewall] conntrack_max"),
                (
                    statewall_common::firewall::MAP_FW_BITSETS,
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
            crate::types::check_name(&k.name)
                .map_err(|e| bad(format!("[[knock]] #{} name", i + 1), e.to_string()))?;
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
                let max = crate::xfsm::knockclient::DERIVE_MAX_STEPS;
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
            parse_tcpflags(&k.tcpflags).map_err(|e| bad(at("tcpflags"), e.to_string()))?;
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
                p.bytes()
                    .map_err(|e| bad(at("udp_payload"), e.to_string()))?;
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
                p.bytes().map_err(|e| bad(at, e.to_string()))?;
            }
        }
        let total = self.knocks.len() + self.machines.len();
        if total > max {
            let written = self.machines.iter().filter(|m| m.exempt).count();
            let by_detect = if written > 0 {
                format!(" ({written} of them written by [detect])")
            } else {
                String::new()
            };
            return Err(bad(
                "[[xfsm]]".into(),
                format!(
                    "{} doors and {} machines{by_detect}: at most {max} in all",
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
        let xdp = self
            .interfaces
            .iter()
            .any(|i| matches!(i.ingress, IngressHook::Xdp));
        crate::xfsm::switch_check::check(&self.switches, &self.machines, xdp)
            .map_err(|(at, msg)| bad(at, msg))?;
        let doors = self.doors();
        let raws = self.raw_machines().unwrap_or_default();
        crate::xfsm::compile::compile(&doors, &raws)
            .map_err(|e| bad("[[knock]]/[[xfsm]]".into(), e.to_string()))?;
        Ok(())
    }
}
