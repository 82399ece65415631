//! The shell's shared state, below the REST API, the lifecycle and the daemon's tasks: what
//! the handlers share ([`Shared`], [`Inner`] behind its lock), the command-line overrides,
//! and the operations they all use: [`status`] and [`apply`] (a config written into the
//! kernel, stage by stage). It holds a config as data
//! ([`crate::config::sections`]); reading one and putting it in force is
//! [`super::load`]'s.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    config::sections::Config,
    daemon::supervise,
    detect::{Configured, Mitigation, SYN_VERIFIER},
    engine::{Engine, HookState, LinkState, MapState},
};

/// Command-line overrides of `[daemon]` keys.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--bpffs-root`.
    pub bpffs_root: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--no-auth`.
    pub no_auth: bool,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
}
impl Overrides {
    /// Applies the overrides to a config.
    pub fn apply(&self, cfg: &mut Config) {
        let d = &mut cfg.daemon;
        if let Some(v) = &self.bpffs_root {
            d.bpffs_root = v.clone();
        }
        if let Some(v) = &self.state_dir {
            d.state_dir = v.clone();
        }
        if let Some(v) = &self.socket {
            d.socket = v.clone();
        }
        if let Some(v) = self.listen {
            d.listen = Some(v);
        }
        if let Some(v) = &self.token_file {
            d.token_file = Some(v.clone());
        }
        if self.no_auth {
            d.no_auth = true;
        }
        if let Some(v) = self.metrics_listen {
            d.metrics_listen = Some(v);
        }
    }
}
/// What the handlers share.
pub struct Shared {
    /// The mutable part.
    pub inner: Mutex<Inner>,
    /// Config file, re-read on reload.
    pub config_path: Option<PathBuf>,
    /// Command-line overrides, re-applied on reload.
    pub overrides: Overrides,
    /// Knock doors: events, open sources, triggers.
    pub doors: crate::xfsm::doors::Doors,
    /// SPA verifiers, replay cache and counters.
    pub spa: Mutex<crate::spa::runtime::SpaRuntime>,
    /// The latest firewall LOG events.
    pub fw_log: Mutex<crate::firewall::log::LogRing>,
    /// Traffic monitors (their own lock: a read waits a grace period).
    pub monitors: Mutex<crate::monitor::Monitors>,
    /// The learned flow classifier (`[detect.classifier]`; its own lock: a read waits a
    /// grace period). Taken after `inner` when both are held.
    pub classifier: Mutex<crate::detect::live::Classifier>,
    /// The learned mining detector (`[detect.mining]`; as `classifier`).
    pub mining: Mutex<crate::detect::live::Classifier>,
    /// Dynamic monitors (kept in `STATE_DIR/dynmon.json`; a read waits a grace period).
    pub dynmon: Mutex<crate::dynmon::Dynmons>,
    /// Background tasks and their restarts.
    pub tasks: Arc<supervise::Supervisor>,
    /// SPA actions and stanzas with start/stop commands, as doors for the trigger
    /// machinery ([`crate::config::sections::spa_trigger_doors`]).
    pub spa_triggers: Mutex<Vec<crate::xfsm::config::KnockConfig>>,
    /// Candidates on their way from the SPA follower to the verifier thread.
    pub spa_queue: std::sync::mpsc::SyncSender<crate::spa::runtime::Candidate>,
    /// Candidates turned away by a full queue (counted without the verifier's lock, which
    /// a verification holds).
    pub spa_queue_full: std::sync::atomic::AtomicU64,
    /// The link to the fleet's etcd (`[cluster]`; read at start).
    pub cluster: Option<Arc<crate::cluster::link::Link>>,
}
/// What the learned detector `w` becomes under the `[detect]` section `d`
/// ([`crate::detect::live::Classifier::prepare`]), its errors named by its section.
pub(crate) fn prepare_learned(
    c: &crate::detect::live::Classifier,
    w: crate::detect::live::Learned,
    d: Option<&crate::detect::DetectConfig>,
) -> anyhow::Result<Option<Option<crate::detect::live::Live>>> {
    c.prepare(d.and_then(|d| w.config(d)), w.kind())
        .map_err(|e| anyhow::anyhow!("[detect.{}]: {e}", w.section()))
}

impl Shared {
    /// The mutable part, locked (a handler that panicked while holding it left it as it
    /// was: taken as it is).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A learned detector's state.
    pub fn learned(
        &self,
        w: crate::detect::live::Learned,
    ) -> &Mutex<crate::detect::live::Classifier> {
        match w {
            crate::detect::live::Learned::Flows => &self.classifier,
            crate::detect::live::Learned::Mining => &self.mining,
        }
    }

    /// Whether a monitor of the config has this name.
    pub fn is_builtin_monitor(&self, name: &str) -> bool {
        self.monitors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .contains_key(name)
    }

    /// The mitigations in force (`GET /api/v1/detect`, `/metrics`): the blocks the
    /// learned detectors hold are their rows, with their reasons.
    pub fn mitigations(&self, g: &Inner) -> Result<Vec<Mitigation>, crate::engine::EngineError> {
        let (machines, verifier) = g.detector_machines();
        let (mut held, dests) = {
            let c = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
            (c.held.clone(), c.dests.clone())
        };
        held.extend(
            self.mining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .held
                .iter()
                .map(|(p, h)| (*p, h.clone())),
        );
        g.engine
            .detect_mitigations(&machines, verifier, &held, &dests)
    }

    /// The SPA verdict counts, with `queue_full` when any candidate was turned away.
    pub fn spa_verdicts(
        &self,
        spa: &crate::spa::runtime::SpaRuntime,
    ) -> BTreeMap<&'static str, u64> {
        let mut out = spa.counts.clone();
        let full = self
            .spa_queue_full
            .load(std::sync::atomic::Ordering::Relaxed);
        if full > 0 {
            out.insert("queue_full", full);
        }
        out
    }
}

impl Inner {
    /// The detectors' machines of the config in force, (machine index, detector), and the
    /// SYN verifier's index.
    pub fn detector_machines(&self) -> (Vec<(usize, Configured)>, Option<usize>) {
        let Some(d) = &self.config.detect else {
            return (Vec::new(), None);
        };
        let dets = d.detectors();
        let nk = self.config.knocks.len();
        let mut verifier = None;
        let mut out = Vec::new();
        for (i, m) in self
            .config
            .machines
            .iter()
            .enumerate()
            .filter(|(_, m)| m.exempt)
        {
            match dets.iter().find(|c| c.machine == m.name) {
                Some(c) => out.push((nk + i, *c)),
                None if m.name == SYN_VERIFIER => verifier = Some(nk + i),
                None => {}
            }
        }
        (out, verifier)
    }
}
/// Daemon state behind the lock.
pub struct Inner {
    /// Kernel side.
    pub engine: Engine,
    /// Config in force.
    pub config: Config,
    /// Firewall instances (kept in `STATE_DIR/firewall.json`).
    pub fw: crate::firewall::FwState,
}
/// `GET /api/v1/status`.
#[derive(Serialize, Debug)]
pub struct Status {
    /// statewall version.
    pub version: &'static str,
    /// Id of the kernel object of this build.
    pub object_id: String,
    /// Whether this daemon adopted pinned programs at start.
    pub adopted: bool,
    /// bpffs root.
    pub bpffs_root: PathBuf,
    /// Per interface and hook, the programs the kernel runs, in order.
    pub hooks: Vec<HookState>,
    /// statewall's pinned links.
    pub links: Vec<LinkState>,
    /// Maps with ids and fill levels.
    pub maps: Vec<MapState>,
    /// Stored objects whose names break today's naming rule (made before it): they keep
    /// working; rename them by making them again under a new name.
    pub names_against_the_rule: Vec<NamedObject>,
    /// The link to the fleet's etcd (`[cluster]`), when configured.
    pub cluster: Option<crate::cluster::link::LinkStatus>,
}

/// A named object: its kind (`firewall`, `dynmon`) and name.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NamedObject {
    /// Kind.
    pub kind: &'static str,
    /// Name.
    pub name: String,
}
/// The configured interfaces, then the firewall instances' ports not among them.
fn hooked_interfaces(g: &Inner) -> Vec<(Option<String>, String)> {
    let mut v = g.config.interface_names();
    let switch_ports = g
        .config
        .switches
        .iter()
        .flat_map(|s| s.ports.iter().map(|p| (s.netns.clone(), p.clone())));
    let fw_ports =
        g.fw.instances
            .values()
            .flat_map(|i| &i.ports)
            .map(|p| (p.netns.clone(), p.ifname.clone()));
    for k in switch_ports.chain(fw_ports).collect::<Vec<_>>() {
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}

/// Builds the status.
pub fn status(g: &Inner) -> Status {
    Status {
        version: env!("CARGO_PKG_VERSION"),
        object_id: format!("{:016x}", crate::engine::ebpf::object_id()),
        adopted: g.engine.adopted,
        bpffs_root: g.engine.pins.root.clone(),
        hooks: g.engine.hook_states(&hooked_interfaces(g)),
        links: g.engine.link_states(),
        maps: g.engine.map_states(),
        names_against_the_rule: g
            .fw
            .instances
            .keys()
            .filter(|n| crate::types::check_name(n).is_err())
            .map(|n| NamedObject {
                kind: "firewall",
                name: n.clone(),
            })
            .collect(),
        cluster: None,
    }
}
/// Writes a config into the kernel: xfsm tables (before the program that reads them is
/// attached), attachments, then the protected ports.
pub fn apply(engine: &mut Engine, cfg: &Config) -> anyhow::Result<()> {
    // The allowlist before the machines it exempts: the configured prefixes, and the
    // gateways of the interfaces' namespaces and the admins' addresses unless told not to.
    let allow = match &cfg.detect {
        Some(d) => {
            let mut allow = d.allow_prefixes()?;
            if d.allow_gateways {
                let mut netns: Vec<Option<String>> = Vec::new();
                for (ns, _) in cfg.interface_names() {
                    if !netns.contains(&ns) {
                        netns.push(ns);
                    }
                }
                crate::detect::Prefix::join(&mut allow, crate::detect::gateways::gateways(&netns));
            }
            if d.allow_admins {
                crate::detect::Prefix::join(&mut allow, crate::detect::admins::admins());
            }
            allow
        }
        None => Vec::new(),
    };
    engine
        .apply_detect_allowlist(&allow)
        .context("writing the detect allowlist")?;
    if cfg.detect.is_none() {
        // The stage is off: no block stays in force (the XDP program checks them always).
        engine
            .detect_unblock_all()
            .context("clearing the detect blocks")?;
    }
    engine
        .apply_xfsm(&cfg.xfsm_input())
        .context("writing the xfsm tables")?;
    engine.reconcile(&cfg.links()).context("attaching")?;
    engine
        .apply_spa(&cfg.spa)
        .context("writing the spa stage's tables")?;
    engine
        .apply_gate(&cfg.protected_ports(), &cfg.spa.reset_ports(), &cfg.gate)
        .context("writing the gate's tables")?;
    Ok(())
}
