//! `[spa]`: Single Packet Authorization settings, pkd actions (nf-pkd's JSON shape, inline
//! or from `actions_dir`) and fwknop access stanzas (access.conf's keys, lowercase).

use std::{net::IpAddr, path::PathBuf};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::{Deserialize, Serialize};

use super::{
    fwknop::FwknopStanza,
    pkd::{pkd_bytes, PkdAction},
};
use crate::types::Dur;

/// `[spa]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpaConfig {
    /// UDP port of fwknop packets (used when there are `[[spa.fwknop]]` stanzas).
    pub fwknop_port: u16,
    /// Per-source limit on SPA candidates, in the kernel: one per `rate_interval` ...
    pub rate_interval: Dur,
    /// ... after a burst of this many.
    pub rate_burst: u32,
    /// Replay cache size (live entries); full = new SPA packets refused (fail closed).
    pub replay_max: usize,
    /// Allowed clock skew of fwknop packets.
    pub fwknop_skew: Dur,
    /// A directory of nf-pkd action files (`*.json`, each a list of actions), read at
    /// start and on reload.
    pub actions_dir: Option<PathBuf>,
    /// `[[spa.pkd]]`: pkd actions.
    pub pkd: Vec<PkdConfig>,
    /// `[[spa.fwknop]]`: fwknop access stanzas, tried in order.
    pub fwknop: Vec<FwknopConfig>,
}

impl Default for SpaConfig {
    fn default() -> Self {
        SpaConfig {
            fwknop_port: 62201,
            rate_interval: Dur(std::time::Duration::from_millis(200)),
            rate_burst: 5,
            replay_max: 65536,
            fwknop_skew: Dur::secs(120),
            actions_dir: None,
            pkd: Vec::new(),
            fwknop: Vec::new(),
        }
    }
}

/// A pkd action, nf-pkd's JSON shape.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PkdConfig {
    /// Name.
    pub name: String,
    /// Port it opens.
    pub port: u16,
    /// `tcp`, `udp` or `any`.
    #[serde(default = "default_tcp")]
    pub protocol: String,
    /// Tag: up to 4 bytes, `0x...` = hex.
    pub tag: String,
    /// Key: up to 40 bytes, `0x...` = hex.
    pub key: String,
    /// Seconds new connections are let in after a knock.
    #[serde(default = "default_window")]
    pub window: u64,
    /// Allowed clock skew in seconds; -1 = not checked.
    #[serde(default = "default_skew")]
    pub skew: i64,
    /// How a SYN to the port without a grant is refused: `drop` (silently) or `reset` (a
    /// TCP reset, as from a closed port).
    #[serde(default = "default_drop")]
    pub reject: String,
    /// Seconds between two accepted knocks of one source for this action (0 = no limit;
    /// nf-pkd had a fixed 5).
    #[serde(default)]
    pub min_interval: u64,
    /// Run (argument vector, `%IP%` = the source, no shell) when a verified packet opens
    /// the ports for a source.
    #[serde(default)]
    pub start_command: Option<Vec<String>>,
    /// Run when the source's grants from it have all ended.
    #[serde(default)]
    pub stop_command: Option<Vec<String>>,
    /// Each command is killed after this long (default 10 s).
    #[serde(default)]
    pub cmd_timeout: Option<Dur>,
    /// User the commands run as.
    #[serde(default)]
    pub run_as: Option<String>,
}

/// `start_command` / `stop_command` of an SPA action or stanza: run (argument vectors,
/// `%IP%` = the source, no shell) when it opens for a source and when the grant ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Triggers {
    /// Run when a verified packet opens the ports for a source.
    pub start_command: Option<Vec<String>>,
    /// Run when the source's grants have all ended.
    pub stop_command: Option<Vec<String>>,
    /// Each command is killed after this long (default 10 s).
    pub cmd_timeout: Option<Dur>,
    /// User the commands run as.
    pub run_as: Option<String>,
}

impl Triggers {
    fn check(&self) -> Result<(), (String, String)> {
        for (k, c) in [
            ("start_command", &self.start_command),
            ("stop_command", &self.stop_command),
        ] {
            if let Some(c) = c {
                if c.is_empty() || c[0].is_empty() {
                    return Err((k.into(), "an empty command".into()));
                }
            }
        }
        if self.run_as.as_deref() == Some("") {
            return Err(("run_as".into(), "an empty user name".into()));
        }
        Ok(())
    }

    /// True when there is a command to run.
    pub fn any(&self) -> bool {
        self.start_command.is_some() || self.stop_command.is_some()
    }
}

fn default_tcp() -> String {
    "tcp".into()
}
fn default_window() -> u64 {
    60
}
fn default_skew() -> i64 {
    10
}
fn default_drop() -> String {
    "drop".into()
}

/// A fwknop access stanza, access.conf's keys in lowercase.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FwknopConfig {
    /// Name in logs (default `stanza N`).
    pub name: Option<String>,
    /// SOURCE: networks (`10.0.0.0/8`, `2001:db8::/32`) or `ANY`.
    pub source: Vec<String>,
    /// OPEN_PORTS: what may be opened (`tcp/22`); these are protected in the gate.
    pub open_ports: Vec<String>,
    /// RESTRICT_PORTS: never opened.
    pub restrict_ports: Vec<String>,
    /// KEY: the Rijndael passphrase.
    pub key: Option<String>,
    /// KEY_BASE64.
    pub key_base64: Option<String>,
    /// HMAC_KEY.
    pub hmac_key: Option<String>,
    /// HMAC_KEY_BASE64.
    pub hmac_key_base64: Option<String>,
    /// HMAC_DIGEST_TYPE: `sha256` (default), `sha384`, `sha512`.
    pub hmac_digest_type: Option<String>,
    /// FW_ACCESS_TIMEOUT, seconds (default 30).
    pub fw_access_timeout: Option<u64>,
    /// MAX_FW_TIMEOUT, seconds: the longest a client may ask for (default 300; at most a
    /// year).
    pub max_fw_timeout: Option<u64>,
    /// REQUIRE_SOURCE_ADDRESS: refuse messages that say `0.0.0.0`.
    pub require_source_address: bool,
    /// REQUIRE_USERNAME.
    pub require_username: Option<String>,
    /// ENABLE_CMD_EXEC: accept command messages (logged; never run).
    pub enable_cmd_exec: bool,
    /// ENCRYPTION_MODE: only `cbc` (the default) is supported.
    pub encryption_mode: Option<String>,
    /// statewall's own key: `drop` (default) or `reset` for SYNs to OPEN_PORTS without a
    /// grant.
    pub reject: Option<String>,
    /// Run (argument vector, `%IP%` = the source, no shell) when a verified packet opens
    /// the ports for a source.
    #[serde(default)]
    pub start_command: Option<Vec<String>>,
    /// Run when the source's grants from it have all ended.
    #[serde(default)]
    pub stop_command: Option<Vec<String>>,
    /// Each command is killed after this long (default 10 s).
    #[serde(default)]
    pub cmd_timeout: Option<Dur>,
    /// User the commands run as.
    #[serde(default)]
    pub run_as: Option<String>,
}

/// The resolved verifier inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpaSetup {
    /// pkd actions (inline first, then `actions_dir` files in name order).
    pub pkd: Vec<PkdAction>,
    /// fwknop stanzas.
    pub fwknop: Vec<FwknopStanza>,
}

fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    if s.eq_ignore_ascii_case("any") {
        return None;
    }
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.trim().parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match l {
        Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((addr, len))
}

macro_rules! triggers {
    ($t:ty) => {
        impl $t {
            /// Its trigger settings.
            pub fn triggers(&self) -> Triggers {
                Triggers {
                    start_command: self.start_command.clone(),
                    stop_command: self.stop_command.clone(),
                    cmd_timeout: self.cmd_timeout,
                    run_as: self.run_as.clone(),
                }
            }
        }
    };
}
triggers!(PkdConfig);
triggers!(FwknopConfig);

impl PkdConfig {
    /// Resolves one action; errors say which key.
    pub fn resolve(&self) -> Result<PkdAction, (String, String)> {
        let protos = match self.protocol.to_ascii_lowercase().as_str() {
            "tcp" => vec![6],
            "udp" => vec![17],
            "any" => vec![6, 17],
            o => return Err(("protocol".into(), format!("{o:?}: tcp, udp or any"))),
        };
        if self.port == 0 {
            return Err(("port".into(), "0 is not a port".into()));
        }
        self.triggers().check()?;
        let tag = pkd_bytes::<4>(&self.tag).map_err(|e| ("tag".to_string(), e))?;
        if tag == [0; 4] {
            return Err(("tag".into(), "an empty tag".into()));
        }
        let key = pkd_bytes::<40>(&self.key).map_err(|e| ("key".to_string(), e))?;
        if self.key.is_empty() {
            return Err(("key".into(), "an empty key".into()));
        }
        if self.window == 0 || self.window > 86400 {
            return Err((
                "window".into(),
                format!("{}: 1 to 86400 seconds", self.window),
            ));
        }
        let skew = match self.skew {
            -1 => None,
            s if (0..=86400).contains(&s) => Some(s as u64),
            s => return Err(("skew".into(), format!("{s}: -1 (off) or 0 to 86400"))),
        };
        let reset = match self.reject.as_str() {
            "drop" => false,
            "reset" => true,
            o => return Err(("reject".into(), format!("{o:?}: drop or reset"))),
        };
        Ok(PkdAction {
            name: self.name.clone(),
            port: self.port,
            protos,
            tag,
            key,
            window: self.window,
            skew,
            reset,
            min_interval: self.min_interval,
        })
    }
}

impl FwknopConfig {
    /// Resolves one stanza; errors say which key.
    pub fn resolve(&self, i: usize, skew: u64) -> Result<FwknopStanza, (String, String)> {
        let key = match (&self.key, &self.key_base64) {
            (Some(k), None) => k.as_bytes().to_vec(),
            (None, Some(k)) => STANDARD
                .decode(k.trim())
                .map_err(|e| ("key_base64".to_string(), e.to_string()))?,
            _ => {
                return Err((
                    "key".into(),
                    "give exactly one of key and key_base64".into(),
                ))
            }
        };
        let hmac_key = match (&self.hmac_key, &self.hmac_key_base64) {
            (Some(k), None) => k.as_bytes().to_vec(),
            (None, Some(k)) => STANDARD
                .decode(k.trim())
                .map_err(|e| ("hmac_key_base64".to_string(), e.to_string()))?,
            _ => {
                return Err((
                    "hmac_key".into(),
                    "give exactly one of hmac_key and hmac_key_base64 (statewall needs HMAC, fwknop's --use-hmac)".into(),
                ))
            }
        };
        if key.is_empty() || hmac_key.is_empty() {
            return Err(("key".into(), "an empty key".into()));
        }
        self.triggers().check()?;
        let hmac_bits = match self
            .hmac_digest_type
            .as_deref()
            .unwrap_or("sha256")
            .to_ascii_lowercase()
            .as_str()
        {
            "sha256" => 256,
            "sha384" => 384,
            "sha512" => 512,
            o => {
                return Err((
                    "hmac_digest_type".into(),
                    format!("{o:?}: sha256, sha384 or sha512"),
                ))
            }
        };
        match self.reject.as_deref() {
            None | Some("drop") | Some("reset") => {}
            Some(o) => return Err(("reject".into(), format!("{o:?}: drop or reset"))),
        }
        if let Some(m) = &self.encryption_mode {
            if !m.eq_ignore_ascii_case("cbc") {
                return Err(("encryption_mode".into(), format!("{m:?}: only cbc")));
            }
        }
        let access_timeout = self.fw_access_timeout.unwrap_or(30).max(1);
        let max_timeout = self
            .max_fw_timeout
            .unwrap_or(super::policy::DEFAULT_MAX_FW_TIMEOUT);
        for (key, v) in [
            ("fw_access_timeout", access_timeout),
            ("max_fw_timeout", max_timeout),
        ] {
            if v == 0 || v > super::policy::LONGEST_GRANT {
                return Err((
                    key.into(),
                    format!("{v}: seconds from 1 to {}", super::policy::LONGEST_GRANT),
                ));
            }
        }
        let mut sources = Vec::new();
        if self.source.is_empty() {
            return Err(("source".into(), "give ANY or networks".into()));
        }
        for s in &self.source {
            if s.eq_ignore_ascii_case("any") {
                sources.push(("0.0.0.0".parse().unwrap(), 0));
                sources.push(("::".parse().unwrap(), 0));
                continue;
            }
            sources.push(
                parse_net(s)
                    .ok_or_else(|| ("source".to_string(), format!("{s:?}: not a network")))?,
            );
        }
        let ports = |key: &str, v: &[String]| -> Result<Vec<(u8, u16)>, (String, String)> {
            v.iter()
                .map(|p| {
                    super::policy::parse_proto_port(p)
                        .ok_or_else(|| (key.to_string(), format!("{p:?}: tcp/PORT or udp/PORT")))
                })
                .collect()
        };
        Ok(FwknopStanza {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("stanza {}", i + 1)),
            sources,
            open_ports: ports("open_ports", &self.open_ports)?,
            restrict_ports: ports("restrict_ports", &self.restrict_ports)?,
            key,
            hmac_key,
            hmac_bits,
            access_timeout,
            max_timeout,
            require_source_address: self.require_source_address,
            require_username: self.require_username.clone(),
            enable_cmd: self.enable_cmd_exec,
            skew,
        })
    }
}

impl SpaConfig {
    /// The pkd actions, inline then from `actions_dir` files in name order, each with
    /// where it was written (for errors).
    pub fn pkd_configs(&self) -> Result<Vec<(String, PkdConfig)>, (String, String)> {
        let mut out: Vec<(String, PkdConfig)> = self
            .pkd
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("[[spa.pkd]] #{} ({})", i + 1, a.name), a.clone()))
            .collect();
        if let Some(dir) = &self.actions_dir {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| {
                    (
                        "[spa] actions_dir".to_string(),
                        format!("{}: {e}", dir.display()),
                    )
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| (f.display().to_string(), e.to_string()))?;
                let list: Vec<PkdConfig> = serde_json::from_str(&text)
                    .map_err(|e| (f.display().to_string(), e.to_string()))?;
                for (i, a) in list.into_iter().enumerate() {
                    out.push((format!("{} action #{} ({})", f.display(), i + 1, a.name), a));
                }
            }
        }
        Ok(out)
    }

    /// Resolves actions and stanzas, reading `actions_dir`; errors are (where, what).
    pub fn resolve(&self) -> Result<SpaSetup, (String, String)> {
        let mut out = SpaSetup::default();
        for (at, a) in self.pkd_configs()? {
            let r = a.resolve().map_err(|(k, m)| (format!("{at} {k}"), m))?;
            out.pkd.push(r);
        }
        let skew = self.fwknop_skew.0.as_secs();
        for (i, s) in self.fwknop.iter().enumerate() {
            out.fwknop.push(
                s.resolve(i, skew)
                    .map_err(|(k, m)| (format!("[[spa.fwknop]] #{} {k}", i + 1), m))?,
            );
        }
        if self.rate_burst == 0 || self.rate_interval.0.is_zero() {
            return Err((
                "[spa] rate_burst".into(),
                "rate_interval and rate_burst must be above zero".into(),
            ));
        }
        if self.replay_max == 0 {
            return Err(("[spa] replay_max".into(), "must be above zero".into()));
        }
        if !out.fwknop.is_empty() && self.fwknop_port == 0 {
            return Err(("[spa] fwknop_port".into(), "0 with fwknop stanzas".into()));
        }
        Ok(out)
    }

    /// TCP ports whose refused SYNs are answered with a reset (`reject = "reset"`).
    pub fn reset_ports(&self) -> Vec<u16> {
        let Ok(set) = self.resolve() else {
            return Vec::new();
        };
        let mut v: Vec<u16> = set
            .pkd
            .iter()
            .filter(|a| a.reset && a.protos.contains(&6))
            .map(|a| a.port)
            .chain(
                self.fwknop
                    .iter()
                    .zip(&set.fwknop)
                    .filter(|(c, _)| c.reject.as_deref() == Some("reset"))
                    .flat_map(|(_, r)| r.open_ports.iter().filter(|p| p.0 == 6).map(|p| p.1)),
            )
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The ports SPA opens: protected in the gate.
    pub fn protected(&self) -> Vec<(u8, u16)> {
        let Ok(s) = self.resolve() else {
            return Vec::new();
        };
        let mut v: Vec<(u8, u16)> = s
            .pkd
            .iter()
            .flat_map(|a| a.protos.iter().map(move |p| (*p, a.port)))
            .chain(s.fwknop.iter().flat_map(|f| f.open_ports.iter().copied()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
