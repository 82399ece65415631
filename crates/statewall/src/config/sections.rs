//! The configuration as data: the `Config` the file reads into, its sections, and what
//! the stages derive from it (doors, machines, links, map sizes). Reading and checking a
//! file is [`super`]'s (`Config::load`, `Config::parse`, `Config::validate`), which asks
//! the stages' own checks (the xfsm compiler, the `[detect]` models); the code below the
//! loader (the daemon's shared state, the importers' `Import`) holds a `Config` through
//! this file and never calls those three (the layout test checks it).

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{
    ebpf::{self, PROG_GATE, PROG_XDP_INGRESS},
    pins::LinkSpot,
};
use statewall_common::maps::{MAP_GATE_FLOWS, MAP_GATE_GRANTS};

pub use crate::{
    firewall::config::FirewallConfig,
    gate::GateConfig,
    types::{
        parse_tcpflags, proto_name, proto_number, step_pairs, Dur, IngressHook, InterfaceConfig,
        PortSpec, Sequence, Step,
    },
    xfsm::config::{
        KnockConfig, Lockout, PayloadSpec, XfsmConfig, XfsmTransition, DEFAULT_KNOCK_PAYLOAD,
    },
};

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
    /// `[[xfsm]]`: machines written by hand (after the doors, in file order), then those
    /// `[detect]` writes (not written back when the config is serialised).
    #[serde(rename = "xfsm", serialize_with = "hand_written")]
    pub machines: Vec<XfsmConfig>,
    /// `[detect]`: flood detectors, countermeasures, allowlist (off without the section).
    pub detect: Option<crate::detect::DetectConfig>,
    /// `[[switch]]`: interfaces tied together by machines that forward between them.
    #[serde(rename = "switch")]
    pub switches: Vec<crate::xfsm::config::SwitchConfig>,
    /// `[spa]`: Single Packet Authorization (pkd and fwknop).
    pub spa: crate::spa::config::SpaConfig,
    /// `[firewall]`: sizes of the firewall's tables (instances and rules are managed
    /// through the API and kept under the state directory).
    pub firewall: FirewallConfig,
    /// `[[monitor]]`: traffic monitors (ddos, crypto).
    #[serde(rename = "monitor")]
    pub monitors: Vec<crate::monitor::MonitorSpec>,
    /// `[cluster]`: the fleet's shared state in etcd (off without the section).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `[maps]`: sizes of the other tables, by map name ([`RESIZABLE_MAPS`]); set at the
    /// first start (a change needs `statewall teardown`).
    pub maps: std::collections::BTreeMap<String, u32>,
}

/// Tables `[maps]` may size: (name, smallest, largest, ring buffer). A ring buffer's size
/// is in bytes, a power of two; the others count entries.
pub const RESIZABLE_MAPS: [(&str, u32, u32, bool); 11] = [
    (statewall_common::xfsm::MAP_STATES, 1024, 1 << 22, false),
    (statewall_common::xfsm::regs::MAP_REGS, 1024, 1 << 22, false),
    (statewall_common::xfsm::MAP_FIXED_STATES, 16, 1 << 22, false),
    (
        statewall_common::xfsm::regs::MAP_FIXED_REGS,
        16,
        1 << 22,
        false,
    ),
    (statewall_common::xfsm::MAP_LOCKS, 64, 1 << 22, false),
    (statewall_common::spa::MAP_SPA_RATE, 64, 1 << 22, false),
    (statewall_common::detect::MAP_SYNS, 1024, 1 << 22, false),
    (
        statewall_common::firewall::MAP_FW_V4,
        2,
        statewall_common::firewall::V4_MAX_BLOCKS,
        false,
    ),
    (statewall_common::xfsm::MAP_EVENTS, 4096, 1 << 28, true),
    (statewall_common::spa::MAP_SPA_EVENTS, 4096, 1 << 28, true),
    (statewall_common::firewall::MAP_FW_LOG, 4096, 1 << 28, true),
];

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
            bpffs_root: crate::engine::pins::DEFAULT_ROOT.into(),
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

impl Config {
    /// The `[[xfsm]]` machines, checked and resolved ([`crate::xfsm::config::raw_machines`]).
    pub fn raw_machines(
        &self,
    ) -> Result<Vec<statewall_common::xfsm::raw::RawMachine>, (String, String)> {
        crate::xfsm::config::raw_machines(&self.machines)
    }

    /// Every protected (protocol, port): `[gate] protected` and the doors' ports.
    pub fn protected_ports(&self) -> Vec<PortSpec> {
        let mut all: BTreeSet<PortSpec> = self.gate.protected.iter().copied().collect();
        for k in &self.knocks {
            all.extend(k.protected.iter().copied());
        }
        for m in &self.machines {
            all.extend(m.grant.iter().copied());
        }
        all.extend(
            self.spa
                .protected()
                .into_iter()
                .map(|(proto, port)| PortSpec { proto, port }),
        );
        all.into_iter().collect()
    }

    /// The doors with their fixed sequences ([`crate::xfsm::config::doors`]).
    pub fn doors(&self) -> Vec<crate::xfsm::door::KnockDoor> {
        crate::xfsm::config::doors(&self.knocks)
    }

    /// The programs statewall attaches, in chain order per hook.
    pub fn links(&self) -> Vec<LinkSpot> {
        let cfg = self;
        let mut v = Vec::new();
        for ifc in &cfg.interfaces {
            let spot = |hook: &str, program: &str| LinkSpot {
                netns: ifc.netns.clone(),
                ifname: ifc.name.clone(),
                hook: hook.into(),
                program: program.into(),
            };
            match ifc.ingress {
                IngressHook::Tcx => {
                    if cfg.detect.is_some() {
                        v.push(spot("ingress", ebpf::PROG_DETECT));
                    }
                    if !cfg.knocks.is_empty() || !cfg.machines.is_empty() {
                        v.push(spot("ingress", ebpf::PROG_XFSM));
                    }
                    v.push(spot("ingress", PROG_GATE));
                }
                IngressHook::Xdp => v.push(spot("xdp", PROG_XDP_INGRESS)),
                IngressHook::Off => continue,
            }
            if cfg
                .raw_machines()
                .is_ok_and(|r| crate::xfsm::config::raw_uses_egress(&r))
            {
                v.push(spot("egress", ebpf::PROG_XFSM_EGRESS));
            }
        }
        for s in &cfg.switches {
            for port in &s.ports {
                v.push(LinkSpot {
                    netns: s.netns.clone(),
                    ifname: port.clone(),
                    hook: "ingress".into(),
                    program: ebpf::PROG_SWITCH.into(),
                });
            }
        }
        v
    }

    /// The map sizes the config sets (the other maps have this build's), for
    /// [`Engine::open`](crate::engine::Engine::open).
    pub fn map_sizes(&self) -> Vec<(&'static str, u32)> {
        let cfg = self;
        let mut v = vec![
            (MAP_GATE_GRANTS, cfg.gate.grants_max),
            (MAP_GATE_FLOWS, cfg.gate.flows_max),
            (
                statewall_common::firewall::MAP_FW_BITSETS,
                cfg.firewall.bitsets_max,
            ),
            (statewall_common::ct::MAP_CT, cfg.firewall.conntrack_max),
        ];
        for (name, n) in &cfg.maps {
            if let Some(m) = RESIZABLE_MAPS.iter().find(|m| m.0 == name) {
                v.push((m.0, *n));
            }
        }
        v
    }

    /// What the xfsm stage reads of the config.
    pub fn xfsm_input(&self) -> crate::xfsm::config::XfsmInput<'_> {
        crate::xfsm::config::XfsmInput {
            knocks: &self.knocks,
            machines: &self.machines,
            switches: &self.switches,
            state_dir: &self.daemon.state_dir,
        }
    }

    /// The interfaces as (network namespace, name), for
    /// [`Engine::hook_states`](crate::engine::Engine::hook_states).
    pub fn interface_names(&self) -> Vec<(Option<String>, String)> {
        self.interfaces
            .iter()
            .map(|i| (i.netns.clone(), i.name.clone()))
            .collect()
    }
}

/// Serialises the hand-written machines only (those `[detect]` writes come from its
/// section when the text is read again).
fn hand_written<S: serde::Serializer>(m: &[XfsmConfig], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(None)?;
    for x in m.iter().filter(|x| !x.exempt) {
        seq.serialize_element(x)?;
    }
    seq.end()
}

/// Actions and stanzas with triggers, as doors for the trigger machinery (name,
/// ports, commands): pkd actions by name, stanzas by `name` or `stanza N`.
pub fn spa_trigger_doors(spa: &crate::spa::config::SpaConfig) -> Vec<KnockConfig> {
    let Ok(set) = spa.resolve() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |name: &str, ports: Vec<(u8, u16)>, t: &crate::spa::config::Triggers| {
        if !t.any() {
            return;
        }
        let mut k = KnockConfig::new(name);
        k.protected = ports
            .into_iter()
            .map(|(proto, port)| PortSpec { proto, port })
            .collect();
        k.start_command = t.start_command.clone();
        k.stop_command = t.stop_command.clone();
        if let Some(d) = t.cmd_timeout {
            k.cmd_timeout = d;
        }
        k.run_as = t.run_as.clone();
        out.push(k);
    };
    let cfgs = spa.pkd_configs().unwrap_or_default();
    for ((_, a), r) in cfgs.iter().zip(&set.pkd) {
        push(
            &r.name,
            r.protos.iter().map(|p| (*p, r.port)).collect(),
            &a.triggers(),
        );
    }
    for (f, r) in spa.fwknop.iter().zip(&set.fwknop) {
        push(&r.name, r.open_ports.clone(), &f.triggers());
    }
    out
}
