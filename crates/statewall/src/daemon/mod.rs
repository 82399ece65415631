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
//!
//! The shell: may import everything below it (stages, `config`, `engine`); nothing
//! imports it but the CLI. Its shared state is in [`state`], below the REST API and the
//! tasks; reading the config and putting it in force is in [`load`], above the state.

pub mod api;
pub mod classify;
pub mod cluster;
pub mod doors;
pub mod durable;
pub mod load;
pub mod metrics;
pub mod policy;
pub mod spa;
pub mod state;
pub mod supervise;

pub use load::{load_config, reload};
pub use state::{apply, status, Inner, Shared, Status};

use state::Overrides;

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
use tokio::net::{TcpListener, UnixListener};

use crate::config::Config;

use crate::{engine::pins::Pins, engine::Engine};

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
        let g = s.lock();
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
                        if supervise::fault(&format!("follower:{map}")) {
                            panic!("fault injected into the follower of {map} (STATEWALL_FAULTS)");
                        }
                    }
                }
                guard.clear_ready();
            }
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
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
    let token = read_token(&cfg)?;
    let pins = Pins::new(&cfg.daemon.bpffs_root);
    let _lock = lock_pins(&pins)?;
    let tcp = bind_tcp(cfg.daemon.listen, "the API").await?;
    let metrics = bind_tcp(cfg.daemon.metrics_listen, "metrics").await?;
    let socket_path = cfg.daemon.socket.clone();
    let link = match &cfg.cluster {
        Some(c) => Some(
            crate::cluster::link::Link::connect(c)
                .await
                .context("[cluster]")?,
        ),
        None => None,
    };
    let cfg = match &link {
        Some(l) => policy::with_kept_sections(cfg, l, config_path.as_deref(), &overrides),
        None => cfg,
    };
    let shared = start_stages(cfg, &pins, config_path, overrides, link)?;
    // Handlers first: a signal that comes as soon as the API answers must find them.
    let signals = Signals::new()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let app = crate::daemon::api::router(shared.clone());
    serve(&mut tasks, unix, app.clone(), &stop_rx);
    if let Some(l) = tcp {
        tracing::info!(addr = %l.local_addr()?, "REST API on TCP");
        let app: Router = match token {
            Some(t) => app.layer(middleware::from_fn(move |req, next| {
                bearer_auth(t.clone(), req, next)
            })),
            None => app,
        };
        serve(&mut tasks, l, app, &stop_rx);
    }
    if let Some(l) = metrics {
        tracing::info!(addr = %l.local_addr()?, "metrics");
        serve(
            &mut tasks,
            l,
            crate::daemon::metrics::router(shared.clone()),
            &stop_rx,
        );
    }
    spawn_background(&shared, &mut tasks, &stop_rx);
    tracing::info!(socket = %socket_path.display(), "statewall daemon ready");
    sd_notify(&format!(
        "READY=1\nSTATUS=serving on {}\nMAINPID={}",
        socket_path.display(),
        std::process::id()
    ));
    wait_for_signals(signals, &shared, &mut tasks).await?;
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

/// The TCP listener's bearer token (none without a TCP listener, or with `no_auth`).
fn read_token(cfg: &Config) -> anyhow::Result<Option<Arc<String>>> {
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
    Ok(token)
}

/// The pin root, created, and locked against a second daemon.
fn lock_pins(pins: &Pins) -> anyhow::Result<std::fs::File> {
    if !pins.on_bpffs() {
        bail!(crate::engine::EngineError::NoBpffs(pins.root.clone()));
    }
    std::fs::create_dir_all(&pins.root)
        .with_context(|| format!("creating {}", pins.root.display()))?;
    crate::engine::sys::lock_exclusive(&pins.root).map_err(|e| {
        anyhow::anyhow!(
            "{} is in use by another statewall daemon ({e}); stop it first",
            pins.root.display()
        )
    })
}

async fn bind_tcp(addr: Option<SocketAddr>, what: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(a) => Ok(Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {what} to {a}"))?,
        )),
        None => Ok(None),
    }
}

/// Opens (or adopts) the kernel side, writes every stage's tables, and builds the state
/// the shell shares.
fn start_stages(
    cfg: Config,
    pins: &Pins,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    cluster: Option<Arc<crate::cluster::link::Link>>,
) -> anyhow::Result<Arc<Shared>> {
    let mut engine = Engine::open(pins, &cfg.map_sizes())?;
    tracing::info!(root = %pins.root.display(), adopted = engine.adopted, "kernel side ready");
    // Firewall instances: what the API made, kept under the state directory; written into
    // the kernel again (same positions: the counters carry on). Their links are known
    // before the first reconcile, which would otherwise detach them as strangers.
    let fw = crate::firewall::FwState::load(&cfg.daemon.state_dir.join("firewall.json"))
        .map_err(anyhow::Error::msg)?;
    engine.stage_links = crate::firewall::kernel::fw_link_spots(&fw, &cfg.links());
    // Adopted states belong to the doors last written: their signatures tell which doors
    // changed while the daemon was down (those lose their knocks in progress).
    let sigs_path = cfg.daemon.state_dir.join("xfsm-doors.json");
    if engine.adopted {
        if let Ok(text) = std::fs::read_to_string(&sigs_path) {
            match serde_json::from_str(&text) {
                Ok(sigs) => engine.stage::<crate::xfsm::kernel::Installed>().door_sigs = sigs,
                Err(e) => tracing::warn!(
                    "{}: {e}: knocks in progress are dropped",
                    sigs_path.display()
                ),
            }
        }
    }
    apply(&mut engine, &cfg)?;
    load::save_door_sigs(&engine, &cfg);
    engine
        .apply_firewall(&cfg.firewall, &cfg.links(), &fw, &[])
        .context("writing the firewall's tables")?;
    let spa = {
        let setup = cfg
            .spa
            .resolve()
            .map_err(|(at, msg)| anyhow::anyhow!("{at}: {msg}"))?;
        let now = crate::engine::clock::unix_secs();
        let path = cfg.daemon.state_dir.join("spa-replay");
        let replay = crate::spa::ReplayCache::open(Some(&path), cfg.spa.replay_max, now)
            .with_context(|| format!("opening the SPA replay cache {}", path.display()))?;
        crate::spa::SpaRuntime::new(setup, replay)
    };
    let mut monitors = crate::monitor::Monitors::default();
    let m = monitors.prepare(&cfg.monitors)?;
    monitors.commit(&cfg.monitors, m);
    let learned = |w| -> anyhow::Result<Mutex<crate::detect::live::Classifier>> {
        let mut c = crate::detect::live::Classifier::default();
        let n = state::prepare_learned(&c, w, cfg.detect.as_ref())?;
        c.commit(n);
        Ok(Mutex::new(c))
    };
    let (classifier, mining) = (
        learned(crate::detect::live::Learned::Flows)?,
        learned(crate::detect::live::Learned::Mining)?,
    );
    let dynmon = crate::dynmon::Dynmons::restore(cfg.daemon.state_dir.join("dynmon.json"));
    let spa_triggers = crate::config::spa_trigger_doors(&cfg.spa);
    let (spa_queue, candidates) = std::sync::mpsc::sync_channel(spa::QUEUE);
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
        classifier,
        mining,
        dynmon: Mutex::new(dynmon),
        tasks: Default::default(),
        spa_triggers: Mutex::new(spa_triggers),
        spa_queue,
        spa_queue_full: Default::default(),
        cluster,
    });
    spa::start_verifier(&shared, candidates).context("starting the SPA verifier thread")?;
    Ok(shared)
}

type Tasks = tokio::task::JoinSet<anyhow::Result<()>>;

/// Serves `app` on `listener` until the stop signal.
fn serve<L>(tasks: &mut Tasks, listener: L, app: Router, stop: &tokio::sync::watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let mut rx = stop.clone();
    tasks.spawn(async move {
        // The router made ready once: served as it is, axum would clone every route for
        // each connection (`with_state` on a shared router), a cost each request paid.
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
            .map_err(anyhow::Error::from)
    });
}

/// The supervised background tasks: kernel events (xfsm state changes), SPA candidates and
/// firewall LOG hits, each read by a follower, and the sweeper. The SPA follower only
/// queues candidates: their verification (decryption, the replay cache's fdatasync) runs
/// on the verifier thread (`spa::start_verifier`), off the async workers.
fn spawn_background(
    shared: &Arc<Shared>,
    tasks: &mut Tasks,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) {
    spawn_follower(
        shared,
        tasks,
        stop_rx,
        "xfsm_events",
        statewall_common::xfsm::MAP_EVENTS,
        crate::engine::ring_record::<statewall_common::xfsm::Event>,
        |s, e| doors::on_kernel_event(s, &e),
    );
    spawn_follower(
        shared,
        tasks,
        stop_rx,
        "spa_events",
        statewall_common::spa::MAP_SPA_EVENTS,
        crate::spa::Candidate::from_record,
        spa::queue,
    );
    spawn_follower(
        shared,
        tasks,
        stop_rx,
        "fw_log",
        statewall_common::firewall::MAP_FW_LOG,
        crate::engine::ring_record::<statewall_common::firewall::FwLog>,
        |s, e| crate::daemon::api::firewall::on_log(s, &e),
    );
    let sup = shared.tasks.clone();
    let (s, rx) = (shared.clone(), stop_rx.clone());
    sup.spawn(tasks, "sweeper", stop_rx.clone(), move || {
        sweeper(s.clone(), rx.clone())
    });
    let (s, rx) = (shared.clone(), stop_rx.clone());
    sup.spawn(tasks, "detect_classifier", stop_rx.clone(), move || {
        classify::run(s.clone(), rx.clone(), crate::detect::live::Learned::Flows)
    });
    let (s, rx) = (shared.clone(), stop_rx.clone());
    sup.spawn(tasks, "detect_mining", stop_rx.clone(), move || {
        classify::run(s.clone(), rx.clone(), crate::detect::live::Learned::Mining)
    });
    if let Some(link) = shared.cluster.clone() {
        let (s, l, rx) = (shared.clone(), link.clone(), stop_rx.clone());
        sup.spawn(tasks, "cluster", stop_rx.clone(), move || {
            cluster::run(s.clone(), l.clone(), rx.clone())
        });
        let (s, rx) = (shared.clone(), stop_rx.clone());
        sup.spawn(tasks, "cluster_policy", stop_rx.clone(), move || {
            policy::run(s.clone(), link.clone(), rx.clone())
        });
    }
}

/// A supervised follower of the ring buffer `map`, as the task `task`.
fn spawn_follower<T: 'static>(
    shared: &Arc<Shared>,
    tasks: &mut Tasks,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
    task: &'static str,
    map: &'static str,
    decode: fn(&[u8]) -> Option<T>,
    handle: fn(&Shared, T),
) {
    let (s, rx) = (shared.clone(), stop_rx.clone());
    shared.tasks.spawn(tasks, task, stop_rx.clone(), move || {
        follow_ring(s.clone(), map, rx.clone(), decode, handle)
    });
}

/// The daemon's signal streams (SIGTERM, SIGINT, SIGHUP), made before anything is served.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Until SIGTERM or SIGINT: SIGHUP reloads; a server that stops is logged.
async fn wait_for_signals(
    signals: Signals,
    shared: &Arc<Shared>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                sd_notify("RELOADING=1");
                if let Err(e) = reload(shared) {
                    tracing::error!("reload rejected, previous config stays in force: {e:#}");
                }
                sd_notify("READY=1");
            }
            Some(r) = tasks.join_next() => {
                if let Ok(Err(e)) = r { tracing::error!("server stopped: {e:#}"); }
            }
        }
    }
}

/// Once a second: keep the config attached, sweep lock records, recompile doors whose
/// sequences turned, refresh the epoch offset, idle out flows, close doors whose grants
/// ended, revert firewall applies not confirmed in time, log dynamic monitors' pcn_log
/// messages, and expire grants.
async fn sweeper(s: Arc<Shared>, rx: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_err: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(rx.clone()) => return Ok(()),
        }
        // The sweep itself (the shared state's lock, map reads and writes, a synced file
        // when an apply is reverted) runs on a blocking thread, not on an async worker; a
        // panic in it ends the task, which the supervisor restarts.
        let (s2, mut err) = (s.clone(), last_err.take());
        last_err = tokio::task::spawn_blocking(move || {
            sweep_once(&s2, &mut err);
            err
        })
        .await?;
    }
}

/// One tick of [`sweeper`]; `last_err` is the last reconcile error logged (logged again
/// only when it changes).
fn sweep_once(s: &Shared, last_err: &mut Option<String>) {
    let mut g = s.lock();
    // Interfaces that were removed and came back get their programs again.
    let cfg = g.config.clone();
    match g.engine.reconcile(&cfg.links()) {
        Ok(()) => *last_err = None,
        Err(e) => {
            let msg = e.to_string();
            if last_err.as_deref() != Some(msg.as_str()) {
                tracing::error!("keeping the config attached: {msg} (retrying every second)");
                *last_err = Some(msg);
            }
        }
    }
    if let Err(e) = g.engine.sweep_locks(&cfg.knocks) {
        tracing::warn!("sweeping lock records: {e}");
    }
    if let Err(e) = g.engine.sweep_fixed() {
        tracing::warn!("sweeping the fixed state table: {e}");
    }
    match g.engine.detect_sweep() {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "detect: blocks or destination mitigations expired"),
        Err(e) => tracing::warn!("sweeping detect blocks: {e}"),
    }
    // One-time sequences used, time windows turned: recompile the doors.
    if let Err(e) = g.engine.refresh_sequences(&cfg.xfsm_input()) {
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
    doors::sweep(s, &live);
    // Firewall applies not confirmed in time go back.
    crate::daemon::api::firewall::revert_due(s);
    // Dynamic monitors' pcn_log messages (rate-limited in the kernel).
    {
        let mut dm = s.dynmon.lock().unwrap_or_else(|p| p.into_inner());
        for (name, d) in dm.by_name.iter_mut() {
            for (path, level, msg) in d.drain_logs(256) {
                // Polycube's levels: trace, debug, info, warn, err, critical.
                match level {
                    0 => tracing::trace!(dynmon = %name, path = %path, "pcn_log: {msg}"),
                    1 => tracing::debug!(dynmon = %name, path = %path, "pcn_log: {msg}"),
                    2 => tracing::info!(dynmon = %name, path = %path, "pcn_log: {msg}"),
                    3 => tracing::warn!(dynmon = %name, path = %path, "pcn_log: {msg}"),
                    _ => tracing::error!(dynmon = %name, path = %path, "pcn_log: {msg}"),
                }
            }
        }
    }
    let mut g = s.lock();
    match g.engine.sweep_grants(&grants, now) {
        Ok(0) => {}
        Ok(n) => tracing::info!(expired = n, "grants expired"),
        Err(e) => tracing::warn!("sweeping grants: {e}"),
    }
}
