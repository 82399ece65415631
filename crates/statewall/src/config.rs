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
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            protected: Vec::new(),
            grants_max: 4096,
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
        let p = if self.proto == 17 { "udp" } else { "tcp" };
        write!(f, "{p}/{}", self.port)
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
        let mut ports = BTreeSet::new();
        for p in &self.gate.protected {
            if !ports.insert(*p) {
                return Err(bad("[gate] protected".into(), format!("{p} listed twice")));
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
}
