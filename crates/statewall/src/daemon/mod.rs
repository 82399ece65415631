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
//! This file is the top: it starts the stages and the tasks, and composes what joins the
//! rooms: the router ([`router`]: each room's routes, and [`polycube`], the Polycube paths
//! several rooms share) and what the fleet's policy task applies ([`policy::Appliers`]).
//! Listeners, logging and the ring followers' loop are in [`serve`].

pub mod api;
pub mod classify;
pub mod cluster;
pub mod doors;
pub mod durable;
pub mod load;
pub mod metrics;
pub mod policy;
pub mod serve;
pub mod spa;
pub mod state;
pub mod supervise;

pub use load::{load_config, reload};
pub use serve::sd_notify;
pub use state::{apply, status, Inner, Shared, Status};

use state::Overrides;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use axum::{middleware, Router};

use crate::config::Config;

use crate::{engine::pins::Pins, engine::Engine};

use serve::{
    bearer_auth, bind_tcp, bind_unix, follow_ring, init_logging, lock_pins, read_token,
    spawn_server, Signals, Tasks,
};

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
        Some(l) => policy::with_kept_sections(cfg, l, |kept| {
            load::load_config_over(config_path.as_deref(), &overrides, kept)
        }),
        None => cfg,
    };
    let shared = start_stages(cfg, &pins, config_path, overrides, link)?;
    // Handlers first: a signal that comes as soon as the API answers must find them.
    let signals = Signals::new()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let app = router(shared.clone());
    spawn_server(&mut tasks, unix, app.clone(), &stop_rx);
    if let Some(l) = tcp {
        tracing::info!(addr = %l.local_addr()?, "REST API on TCP");
        let app: Router = match token {
            Some(t) => app.layer(middleware::from_fn(move |req, next| {
                bearer_auth(t.clone(), req, next)
            })),
            None => app,
        };
        spawn_server(&mut tasks, l, app, &stop_rx);
    }
    if let Some(l) = metrics {
        tracing::info!(addr = %l.local_addr()?, "metrics");
        spawn_server(
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

/// The daemon's REST router: the native API's own routes, each room's (the reload, the
/// doors, detect, the firewall, the monitors, the dynamic monitors) and the Polycube paths
/// they share, composed here, where the rooms meet.
pub fn router(shared: Arc<Shared>) -> Router {
    let r = load::routes(doors::routes(api::routes(Router::new())));
    let r = api::firewall::routes(api::detect::routes(r));
    let r = polycube::routes(api::dynmon::routes(api::monitor::routes(r)));
    api::finish_router(r, shared)
}

/// What the fleet's policy task puts pushed policy in force with: the firewall's commit
/// and the loader, which sit above it.
fn appliers() -> policy::Appliers {
    policy::Appliers {
        firewall: |s, name, value| Ok(api::firewall::apply_policy(s, name, value)?),
        load: |s, sections| {
            load::load_config_over(s.config_path.as_deref(), &s.overrides, sections)
        },
        apply: load::apply_config,
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
            policy::run(s.clone(), link.clone(), appliers(), rx.clone())
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

/// Admins who logged in since the allowlist was written: their addresses join the list
/// in force (those who logged out leave it at the next apply).
fn allowlist_admins(engine: &mut crate::engine::Engine) {
    let admins = crate::detect::admins::admins();
    if admins.is_empty() {
        return;
    }
    let mut allow = match engine.detect_allowlist() {
        Ok(a) => a,
        Err(e) => return tracing::warn!("reading the detect allowlist: {e}"),
    };
    if !crate::detect::Prefix::join(&mut allow, admins.iter().copied()) {
        return;
    }
    match engine.apply_detect_allowlist(&allow) {
        Ok(()) => tracing::info!(?admins, "detect: admins' addresses allowlisted"),
        Err(e) => tracing::warn!("allowlisting the admins' addresses: {e}"),
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
    if cfg.detect.as_ref().is_some_and(|d| d.allow_admins) {
        allowlist_admins(&mut g.engine);
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

pub mod polycube {
    //! The Polycube paths that several kinds of cube share (composed here, with the routes
    //! of the rooms they join; kept in the daemon's top, as a file of its own would stand
    //! above the route files and put the workspace at 9 layers): the Dynmon name space
    //! `/polycube/v1/dynmon/{name}` (COMPAT.md sections 4 and 5), shared by the config's
    //! monitors and the dynamic monitors (a name is looked up among the config's monitors
    //! first, then among the dynamic ones), and `/attach`, `/detach`, shared by firewall
    //! instances and dynamic monitors (a firewall instance's name first).
    //!
    //! | method | path | |
    //! | --- | --- | --- |
    //! | GET | `/polycube/v1/dynmon/{name}` | the monitor as Dynmon shows it (404 when absent) |
    //! | POST | `/polycube/v1/dynmon/{name}` | load a dynamic monitor (409 for a config monitor's name) |
    //! | DELETE | `/polycube/v1/dynmon/{name}` | unload a dynamic monitor (409 for a config monitor) |
    //! | GET | `/polycube/v1/dynmon/{name}/metrics` | take a window, in Dynmon's shape (config monitors: IPv4 only, integer encodings of COMPAT.md) |
    //! | POST | `/polycube/v1/attach`, `/polycube/v1/detach` | `{"cube", "port", "position"?}`: a firewall instance's cube, else a dynamic monitor's |
    //!
    //! The other Dynmon paths (`dataplane-config`, `open-metrics`) are the dynamic monitors'
    //! own ([`crate::daemon::api::dynmon`]); the firewall's other Polycube paths are served
    //! by the firewall's handlers ([`crate::daemon::api::firewall`]).

    use std::sync::Arc;

    use axum::{
        body::Bytes,
        extract::{Path, State},
        http::StatusCode,
        response::{IntoResponse, Response},
        routing::{get, post},
        Json, Router,
    };

    use super::api::{
        call::{off_workers, parse_body, ApiError},
        dynmon, firewall, monitor,
    };
    use crate::daemon::state::Shared;

    type ApiResult = Result<Response, ApiError>;

    /// Adds the shared Polycube routes.
    pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
        let mut r = r;
        for slash in ["", "/"] {
            r = r
                .route(
                    &format!("/polycube/v1/dynmon/{{name}}{slash}"),
                    get(show).post(create).delete(delete),
                )
                .route(
                    &format!("/polycube/v1/dynmon/{{name}}/metrics{slash}"),
                    get(metrics),
                )
                .route(&format!("/polycube/v1/attach{slash}"), post(pc_attach))
                .route(&format!("/polycube/v1/detach{slash}"), post(pc_detach));
        }
        r
    }

    async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
        // (The dynamic monitors' lock is held by reads and synced writes: off the workers.)
        off_workers(move || {
            monitor::pc_show(&s, &name)
                .or_else(|| dynmon::pc_show(&s, &name))
                .map(|v| Json(v).into_response())
                .ok_or_else(|| monitor::not_found(&name))
        })
        .await
    }

    async fn create(
        State(s): State<Arc<Shared>>,
        Path(name): Path<String>,
        body: Bytes,
    ) -> ApiResult {
        dynmon::pc_create(s, name, body).await
    }

    async fn delete(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
        if s.is_builtin_monitor(&name) {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("{name:?} is a monitor of the config file: remove it there and reload"),
            ));
        }
        dynmon::pc_delete(s, name).await
    }

    async fn metrics(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
        let (s2, n2) = (s.clone(), name.clone());
        let dynamic =
            off_workers(move || Ok(!s2.is_builtin_monitor(&n2) && dynmon::exists(&s2, &n2)))
                .await?;
        if dynamic {
            return dynmon::pc_metrics(s, name).await;
        }
        monitor::pc_metrics(s, name).await
    }

    /// Polycube's `/attach` and `/detach`: the instance is the body's `cube`.
    fn pc_attach_detach(s: &Shared, body: &[u8], on: bool) -> ApiResult {
        let b: firewall::AttachBody = parse_body(body)?;
        let name = b
            .cube
            .clone()
            .ok_or_else(|| ApiError::bad("cube: missing"))?;
        if !s.lock().fw.instances.contains_key(&name) && dynmon::exists(s, &name) {
            return dynmon::attach_detach(s, &name, &b.port, b.netns, b.position, on);
        }
        firewall::do_attach(s, &name, b, on)
    }

    async fn pc_attach(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
        off_workers(move || pc_attach_detach(&s, &body, true)).await
    }

    async fn pc_detach(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
        off_workers(move || pc_attach_detach(&s, &body, false)).await
    }
}
