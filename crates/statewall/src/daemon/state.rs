//! The shell's shared state, below the REST API and the lifecycle: what the handlers
//! share ([`Shared`], [`Inner`] behind its lock), the command-line overrides, and the
//! operations both the API and the lifecycle use: [`status`], [`apply`] (the config
//! written into the kernel, stage by stage) and [`reload`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    config::Config,
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
/// Loads the config file (or the defaults) and applies the overrides.
pub fn load_config(path: Option<&std::path::Path>, ov: &Overrides) -> anyhow::Result<Config> {
    let mut cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    ov.apply(&mut cfg);
    cfg.validate(
        &path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(command line)".into()),
    )?;
    Ok(cfg)
}
/// Loads the config file with the cluster's pushed sections in place of its own
/// ([`crate::cluster::sections`]), and applies the overrides.
pub fn load_config_over(
    path: Option<&std::path::Path>,
    ov: &Overrides,
    pushed: &crate::cluster::sections::Sections,
) -> anyhow::Result<Config> {
    if pushed.is_empty() {
        return load_config(path, ov);
    }
    let file = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(command line)".into());
    let text = match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {file}"))?,
        None => String::new(),
    };
    // Each text alone first, so that a type error points at its own lines (the merged
    // text is written anew, in another order).
    let typed = |text: &str, path: String| {
        toml::from_str::<Config>(text)
            .map(drop)
            .map_err(|e| crate::config::ConfigError::Parse {
                path,
                message: e.to_string().trim_end().into(),
            })
    };
    typed(&text, file.clone())?;
    for (name, p) in &pushed.by_name {
        let what = crate::cluster::sections::header(name);
        typed(
            &p.text,
            format!("the cluster's {what} (revision {})", p.revision),
        )?;
    }
    let origin = format!("{file} with the cluster's {}", pushed.describe());
    let mut cfg = Config::parse(&pushed.over(&text, &file)?, &origin)?;
    ov.apply(&mut cfg);
    cfg.validate(&origin)?;
    Ok(cfg)
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
    pub spa: Mutex<crate::spa::SpaRuntime>,
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
    /// machinery ([`crate::config::spa_trigger_doors`]).
    pub spa_triggers: Mutex<Vec<crate::config::KnockConfig>>,
    /// Candidates on their way from the SPA follower to the verifier thread.
    pub spa_queue: std::sync::mpsc::SyncSender<crate::spa::Candidate>,
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
    pub fn spa_verdicts(&self, spa: &crate::spa::SpaRuntime) -> BTreeMap<&'static str, u64> {
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
/// Re-reads the config (with the cluster's pushed sections in place of the file's) and
/// applies it. A config that does not load changes nothing; a kernel error while applying
/// rolls back to the previous config. Once the file loads again, pushed sections it made
/// this host refuse are tried again.
pub fn reload(s: &Shared) -> anyhow::Result<()> {
    let path = s.config_path.as_deref();
    match &s.cluster {
        Some(link) => {
            let pushed = link.sections.lock().unwrap_or_else(|p| p.into_inner());
            apply_config(s, load_config_over(path, &s.overrides, &pushed)?)?;
            drop(pushed);
            link.retry_sections();
            Ok(())
        }
        None => apply_config(s, load_config(path, &s.overrides)?),
    }
}
/// Applies a config read anew (a reload, a pushed section). `[daemon]` keys and the
/// gate's sizes stay as they are (they take effect at the next start). On a kernel error
/// the previous config is put back.
pub fn apply_config(s: &Shared, mut new: Config) -> anyhow::Result<()> {
    let mut g = s.lock();
    if new.daemon != g.config.daemon {
        tracing::warn!("[daemon] changes (paths, listeners) take effect at the next start");
        new.daemon = g.config.daemon.clone();
    }
    if new.gate.grants_max != g.config.gate.grants_max
        || new.gate.flows_max != g.config.gate.flows_max
    {
        tracing::warn!(
            "[gate] grants_max and flows_max changes take effect after `statewall teardown` and a start"
        );
        new.gate.grants_max = g.config.gate.grants_max;
        new.gate.flows_max = g.config.gate.flows_max;
    }
    // Monitors the new config adds or changes are loaded first: if one fails, nothing
    // changes.
    let new_monitors = s
        .monitors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .prepare(&new.monitors)?;
    let mut new_learned = Vec::new();
    for w in crate::detect::live::Learned::ALL {
        let c = s.learned(w).lock().unwrap_or_else(|p| p.into_inner());
        new_learned.push((w, prepare_learned(&c, w, new.detect.as_ref())?));
    }
    // Where the firewall's chains run follows the interfaces' hooks: the links first (so
    // that the reconcile of `apply` keeps them), the interface entries after.
    let fw = g.fw.clone();
    let old_links = g.engine.stage_links.clone();
    g.engine.stage_links = crate::firewall::kernel::fw_link_spots(&fw, &new.links());
    let applied = apply(&mut g.engine, &new).and_then(|()| {
        g.engine
            .apply_firewall(&new.firewall, &new.links(), &fw, &[])
            .context("placing the firewall's chains")
    });
    if let Err(e) = applied {
        let old = g.config.clone();
        g.engine.stage_links = old_links;
        let back = apply(&mut g.engine, &old).and_then(|()| {
            g.engine
                .apply_firewall(&old.firewall, &old.links(), &fw, &[])
                .context("placing the firewall's chains")
        });
        return Err(match back {
            Ok(()) => e.context("rolled back to the previous config"),
            Err(b) => e.context(format!(
                "rolling back to the previous config failed too: {b}"
            )),
        });
    }
    if let Ok(setup) = new.spa.resolve() {
        let mut spa = s.spa.lock().unwrap_or_else(|p| p.into_inner());
        spa.setup = setup;
        // Setup and triggers change together: a candidate reads both under `spa`.
        *s.spa_triggers.lock().unwrap_or_else(|p| p.into_inner()) =
            crate::config::spa_trigger_doors(&new.spa);
        drop(spa);
    }
    save_door_sigs(&g.engine, &new);
    s.monitors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .commit(&new.monitors, new_monitors);
    for (w, n) in new_learned {
        s.learned(w)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commit(n);
    }
    g.config = new;
    tracing::info!("config reloaded");
    Ok(())
}
/// Keeps the door signatures of the xfsm tables in force (see `Engine::door_sigs`).
pub(crate) fn save_door_sigs(engine: &Engine, cfg: &Config) {
    let path = cfg.daemon.state_dir.join("xfsm-doors.json");
    let sigs = engine
        .stage_ref::<crate::xfsm::kernel::Installed>()
        .map(|i| i.door_sigs.clone())
        .unwrap_or_default();
    let text = serde_json::to_string(&sigs).unwrap_or_default();
    if let Err(e) = crate::engine::sys::write_synced(&path, text.as_bytes()) {
        tracing::warn!(
            "{}: {e}: a restart will drop knocks in progress",
            path.display()
        );
    }
}
/// Writes a config into the kernel: xfsm tables (before the program that reads them is
/// attached), attachments, then the protected ports.
pub fn apply(engine: &mut Engine, cfg: &Config) -> anyhow::Result<()> {
    // The allowlist before the machines it exempts.
    let allow = match &cfg.detect {
        Some(d) => d.allow_prefixes()?,
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
