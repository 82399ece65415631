//! `statewall daemon`: lifecycle around the [`Engine`].
//!
//! - Start: load the config (or the defaults), adopt or load the kernel side, attach what
//!   the config asks for, write the gate's tables, then serve the API.
//! - SIGHUP (or `POST /api/v1/reload`): re-read the config; an invalid file is rejected
//!   and the running config stays in force.
//! - SIGTERM / SIGINT: stop serving and exit, leaving programs, links and pins in place:
//!   enforcement goes on while no daemon runs. `statewall teardown` removes everything.
//! - A sweeper removes expired grants every second.
//! - Under systemd (`Type=notify`), `READY=1` is sent once the API serves, `RELOADING=1` /
//!   `READY=1` around a SIGHUP reload, `STOPPING=1` on the way out ([`sd_notify`]).

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context};
use axum::{
    extract::Request,
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    Router,
};
use serde::Serialize;
use tokio::net::{TcpListener, UnixListener};

use crate::{
    config::Config,
    engine::{Engine, HookState, LinkState, MapState},
    pins::Pins,
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

/// Follows the pinned ring buffer `map` until `stop`: each record is decoded by `decode`
/// while the ring holds it, then released, then handed to `handle` (so slow handling never
/// holds ring space).
pub async fn follow_ring<T>(
    s: Arc<Shared>,
    map: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    decode: impl Fn(&[u8]) -> Option<T>,
    mut handle: impl FnMut(&Shared, T),
) -> anyhow::Result<()> {
    use aya::maps::{Map, MapData, RingBuf};
    let path = {
        let g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.engine.pins.map(map)
    };
    let md = MapData::from_pin(&path)?;
    let rb: RingBuf<MapData> = RingBuf::try_from(Map::RingBuf(md))?;
    // SAFETY: the AsyncFd owns the ring buffer, so the fd stays open while registered.
    let mut fd = unsafe { tokio::io::unix::AsyncFd::register(rb) }
        .map_err(|_| anyhow::anyhow!("registering ring buffer {map} with the runtime"))?;
    loop {
        tokio::select! {
            r = fd.readable_mut() => {
                let mut guard = r?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    let v = decode(&item);
                    drop(item);
                    if let Some(v) = v {
                        handle(&s, v);
                    }
                }
                guard.clear_ready();
            }
            _ = stop.wait_for(|v| *v) => return Ok(()),
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
    pub doors: crate::doors::Doors,
    /// SPA verifiers, replay cache and counters.
    pub spa: Mutex<crate::spa::SpaRuntime>,
    /// The latest firewall LOG events.
    pub fw_log: Mutex<crate::api_fw::LogRing>,
    /// Traffic monitors (their own lock: a read waits a grace period).
    pub monitors: Mutex<crate::monitor::Monitors>,
    /// Dynamic monitors (kept in `STATE_DIR/dynmon.json`; a read waits a grace period).
    pub dynmon: Mutex<crate::dynmon::Dynmons>,
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
}

/// Builds the status.
pub fn status(g: &Inner) -> Status {
    Status {
        version: env!("CARGO_PKG_VERSION"),
        object_id: format!("{:016x}", crate::ebpf::object_id()),
        adopted: g.engine.adopted,
        bpffs_root: g.engine.pins.root.clone(),
        hooks: g.engine.hook_states(&g.config),
        links: g.engine.link_states(),
        maps: g.engine.map_states(),
    }
}

/// Tells the service manager about the daemon's state (`sd_notify(3)`'s protocol: one
/// datagram to `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract name). A no-op
/// when the variable is not set; failures are logged, never fatal.
pub fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let send = || -> std::io::Result<()> {
        use std::os::{linux::net::SocketAddrExt, unix::ffi::OsStrExt};
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let b = path.as_bytes();
        let addr = match b.strip_prefix(b"@") {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
            None => std::os::unix::net::SocketAddr::from_pathname(&path)?,
        };
        sock.send_to_addr(msg.as_bytes(), &addr)?;
        Ok(())
    };
    if let Err(e) = send() {
        tracing::warn!("notifying the service manager ({path:?}): {e}");
    }
}

/// Re-reads the config and applies it. A config that does not load changes nothing; a
/// kernel error while applying rolls back to the previous config.
pub fn reload(s: &Shared) -> anyhow::Result<()> {
    let mut new = load_config(s.config_path.as_deref(), &s.overrides)?;
    let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
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
        .prepare(&new.monitors)
        .map_err(anyhow::Error::msg)?;
    let applied = apply(&mut g.engine, &new);
    if let Err(e) = applied {
        let old = g.config.clone();
        let back = apply(&mut g.engine, &old);
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
        spa.triggers = new.spa.trigger_doors();
    }
    save_door_sigs(&g.engine, &new);
    s.monitors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .commit(&new.monitors, new_monitors);
    g.config = new;
    tracing::info!("config reloaded");
    Ok(())
}

/// Keeps the door signatures of the xfsm tables in force (see `Engine::door_sigs`).
fn save_door_sigs(engine: &Engine, cfg: &Config) {
    let path = cfg.daemon.state_dir.join("xfsm-doors.json");
    let text = serde_json::to_string(&engine.door_sigs).unwrap_or_default();
    if let Err(e) = crate::sequences::write_synced(&path, text.as_bytes()) {
        tracing::warn!(
            "{}: {e}: a restart will drop knocks in progress",
            path.display()
        );
    }
}

/// Writes a config into the kernel: xfsm tables (before the program that reads them is
/// attached), attachments, then the protected ports.
pub fn apply(engine: &mut Engine, cfg: &Config) -> anyhow::Result<()> {
    engine.apply_xfsm(cfg).context("writing the xfsm tables")?;
    engine.reconcile(cfg).context("attaching")?;
    engine
        .apply_spa(cfg)
        .context("writing the spa stage's tables")?;
    engine
        .apply_gate(cfg)
        .context("writing the gate's tables")?;
    Ok(())
}

/// Sets up logging: `tracing` with the given filter, aya's `log` records bridged in.
pub fn init_logging(filter: &str) {
    let _ = tracing_log::LogTracer::init();
    let f = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn bearer_auth(token: Arc<String>, req: Request, next: Next) -> Result<Response, StatusCode> {
    let ok = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
        .unwrap_or(false);
    if ok {
        Ok(next.run(req).await)
    } else {
        Err(StatusCode::UNAUTHORIZED)
    }
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds the Unix socket with mode 0600, refusing to steal one a live daemon serves.
fn bind_unix(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use: another statewall daemon is running with this socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    // Create it with no permissions for others from the start.
    // SAFETY: umask is process-wide and restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let l = l.with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config_path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let cfg = load_config(config_path.as_deref(), &overrides)?;
    init_logging(&cfg.daemon.log_level);
    std::fs::create_dir_all(&cfg.daemon.state_dir)
        .with_context(|| format!("creating state dir {}", cfg.daemon.state_dir.display()))?;
    // Everything that can refuse to start is checked before the kernel side is touched.
    let unix = bind_unix(&cfg.daemon.socket)?;
    let token = match (
        &cfg.daemon.listen,
        &cfg.daemon.token_file,
        cfg.daemon.no_auth,
    ) {
        (Some(_), Some(f), false) => Some(Arc::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading token file {}", f.display()))?
                .trim()
                .to_string(),
        )),
        _ => None,
    };
    if token.as_ref().is_some_and(|t| t.is_empty()) {
        bail!("token file is empty");
    }
    let pins = Pins::new(&cfg.daemon.bpffs_root);
    if !pins.on_bpffs() {
        bail!(crate::engine::EngineError::NoBpffs(pins.root.clone()));
    }
    std::fs::create_dir_all(&pins.root)
        .with_context(|| format!("creating {}", pins.root.display()))?;
    let _lock = crate::sys::lock_exclusive(&pins.root).map_err(|e| {
        anyhow::anyhow!(
            "{} is in use by another statewall daemon ({e}); stop it first",
            pins.root.display()
        )
    })?;
    let tcp = match cfg.daemon.listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {a}"))?,
        ),
        None => None,
    };
    let metrics = match cfg.daemon.metrics_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding metrics {a}"))?,
        ),
        None => None,
    };
    let mut engine = Engine::open(&pins, &cfg)?;
    tracing::info!(root = %pins.root.display(), adopted = engine.adopted, "kernel side ready");
    // Firewall instances: what the API made, kept under the state directory; written into
    // the kernel again (same positions: the counters carry on). Their links are known
    // before the first reconcile, which would otherwise detach them as strangers.
    let fw = crate::firewall::FwState::load(&cfg.daemon.state_dir.join("firewall.json"))
        .map_err(anyhow::Error::msg)?;
    engine.fw_links = crate::engine::fw_link_spots(&fw);
    // Adopted states belong to the doors last written: their signatures tell which doors
    // changed while the daemon was down (those lose their knocks in progress).
    let sigs_path = cfg.daemon.state_dir.join("xfsm-doors.json");
    if engine.adopted {
        if let Ok(text) = std::fs::read_to_string(&sigs_path) {
            match serde_json::from_str(&text) {
                Ok(sigs) => engine.door_sigs = sigs,
                Err(e) => tracing::warn!(
                    "{}: {e}: knocks in progress are dropped",
                    sigs_path.display()
                ),
            }
        }
    }
    apply(&mut engine, &cfg)?;
    save_door_sigs(&engine, &cfg);
    engine
        .apply_firewall(&cfg, &fw, &[])
        .context("writing the firewall's tables")?;
    let socket_path = cfg.daemon.socket.clone();
    let spa = {
        let setup = cfg
            .spa
            .resolve()
            .map_err(|(at, msg)| anyhow::anyhow!("{at}: {msg}"))?;
        let now = crate::clock::unix_secs();
        let path = cfg.daemon.state_dir.join("spa-replay");
        let replay = crate::spa::ReplayCache::open(Some(&path), cfg.spa.replay_max, now)
            .with_context(|| format!("opening the SPA replay cache {}", path.display()))?;
        let mut rt = crate::spa::SpaRuntime::new(setup, replay);
        rt.triggers = cfg.spa.trigger_doors();
        rt
    };
    let mut monitors = crate::monitor::Monitors::default();
    let m = monitors
        .prepare(&cfg.monitors)
        .map_err(anyhow::Error::msg)?;
    monitors.commit(&cfg.monitors, m);
    let dynmon = crate::dynmon::Dynmons::restore(cfg.daemon.state_dir.join("dynmon.json"));
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            engine,
            config: cfg,
            fw,
        }),
        config_path,
        overrides,
        doors: Default::default(),
        spa: Mutex::new(spa),
        fw_log: Default::default(),
        monitors: Mutex::new(monitors),
        dynmon: Mutex::new(dynmon),
    });

    let app = crate::api::router(shared.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let app = app.clone();
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(stopped(rx))
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(l) = tcp {
        let app: Router = match token {
            Some(t) => app.clone().layer(middleware::from_fn(move |req, next| {
                bearer_auth(t.clone(), req, next)
            })),
            None => app.clone(),
        };
        let rx = stop_rx.clone();
        tracing::info!(addr = %l.local_addr()?, "REST API on TCP");
        tasks.spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stopped(rx))
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(l) = metrics {
        let app = crate::metrics::router(shared.clone());
        let rx = stop_rx.clone();
        tracing::info!(addr = %l.local_addr()?, "metrics");
        tasks.spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stopped(rx))
                .await
                .map_err(anyhow::Error::from)
        });
    }
    // Kernel events (xfsm state changes) and SPA candidates.
    tasks.spawn(follow_ring(
        shared.clone(),
        statewall_common::xfsm::MAP_EVENTS,
        stop_rx.clone(),
        crate::engine::ring_record::<statewall_common::xfsm::Event>,
        |s, e| s.doors.on_kernel_event(s, &e),
    ));
    tasks.spawn(follow_ring(
        shared.clone(),
        statewall_common::spa::MAP_SPA_EVENTS,
        stop_rx.clone(),
        crate::spa::Candidate::from_record,
        |s, c| crate::spa::on_candidate(s, &c),
    ));
    tasks.spawn(follow_ring(
        shared.clone(),
        statewall_common::fw::MAP_FW_LOG,
        stop_rx.clone(),
        crate::engine::ring_record::<statewall_common::fw::FwLog>,
        |s, e| crate::api_fw::on_log(s, &e),
    ));
    {
        let s = shared.clone();
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_err: Option<String> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped(rx.clone()) => return Ok(()),
                }
                let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
                // Interfaces that were removed and came back get their programs again.
                let cfg = g.config.clone();
                match g.engine.reconcile(&cfg) {
                    Ok(()) => last_err = None,
                    Err(e) => {
                        let msg = e.to_string();
                        if last_err.as_deref() != Some(msg.as_str()) {
                            tracing::error!(
                                "keeping the config attached: {msg} (retrying every second)"
                            );
                            last_err = Some(msg);
                        }
                    }
                }
                if let Err(e) = g.engine.sweep_locks(&cfg) {
                    tracing::warn!("sweeping lock records: {e}");
                }
                // One-time sequences used, time windows turned: recompile the doors.
                if let Err(e) = g.engine.refresh_sequences(&cfg) {
                    tracing::warn!("refreshing knock sequences: {e}");
                }
                if let Err(e) = g.engine.refresh_clock() {
                    tracing::warn!("refreshing the epoch offset: {e}");
                }
                match g.engine.sweep_flows() {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(idle = n, "flows idled out"),
                    Err(e) => tracing::warn!("sweeping flows: {e}"),
                }
                // One read of the grant table serves the doors and the grant sweeper.
                let now = g.engine.kernel_now();
                let grants = g.engine.grants().unwrap_or_default();
                drop(g);
                let live: Vec<_> = grants
                    .iter()
                    .filter(|(_, v)| v.expires_ns > now)
                    .map(|(k, _)| *k)
                    .collect();
                // Doors whose window ended (stop commands) before their grants are swept.
                s.doors.sweep(&s, &live);
                // Firewall applies not confirmed in time go back.
                crate::api_fw::revert_due(&s);
                let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
                match g.engine.sweep_grants(&grants, now) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "grants expired"),
                    Err(e) => tracing::warn!("sweeping grants: {e}"),
                }
            }
        });
    }
    tracing::info!(socket = %socket_path.display(), "statewall daemon ready");
    sd_notify(&format!(
        "READY=1\nSTATUS=serving on {}\nMAINPID={}",
        socket_path.display(),
        std::process::id()
    ));

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                sd_notify("RELOADING=1");
                if let Err(e) = reload(&shared) {
                    tracing::error!("reload rejected, previous config stays in force: {e:#}");
                }
                sd_notify("READY=1");
            }
            Some(r) = tasks.join_next() => {
                if let Ok(Err(e)) = r { tracing::error!("server stopped: {e:#}"); }
            }
        }
    }
    sd_notify("STOPPING=1");
    tracing::info!(
        "stopping; programs, links and pins stay in place (statewall teardown removes them)"
    );
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}
