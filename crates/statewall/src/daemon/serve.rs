//! Serving: the Unix and TCP listeners (the socket's mode, the TCP listener's bearer
//! token), the pin root's lock, the service manager's notifications, logging, the ring
//! buffer followers' loop and the daemon's signal streams. The lifecycle that uses them is
//! the daemon's top ([`crate::daemon`]).
//!
//! May import: the shared state and the supervisor below it, the config's data, the
//! engine's pins.

use std::{net::SocketAddr, os::unix::fs::PermissionsExt, sync::Arc};

use anyhow::{bail, Context};
use axum::{extract::Request, http::StatusCode, middleware::Next, response::Response, Router};
use tokio::net::{TcpListener, UnixListener};

use super::{state::Shared, supervise};
use crate::{config::Config, engine::pins::Pins};

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

pub(super) async fn bearer_auth(
    token: Arc<String>,
    req: Request,
    next: Next,
) -> Result<Response, StatusCode> {
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
pub(super) fn bind_unix(path: &std::path::Path) -> anyhow::Result<UnixListener> {
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

/// The TCP listener's bearer token (none without a TCP listener, or with `no_auth`).
pub(super) fn read_token(cfg: &Config) -> anyhow::Result<Option<Arc<String>>> {
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
pub(super) fn lock_pins(pins: &Pins) -> anyhow::Result<std::fs::File> {
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

pub(super) async fn bind_tcp(
    addr: Option<SocketAddr>,
    what: &str,
) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(a) => Ok(Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {what} to {a}"))?,
        )),
        None => Ok(None),
    }
}

pub(super) type Tasks = tokio::task::JoinSet<anyhow::Result<()>>;

/// Serves `app` on `listener` until the stop signal.
pub(super) fn spawn_server<L>(
    tasks: &mut Tasks,
    listener: L,
    app: Router,
    stop: &tokio::sync::watch::Receiver<bool>,
) where
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

/// The daemon's signal streams (SIGTERM, SIGINT, SIGHUP), made before anything is served.
pub(super) struct Signals {
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
    pub(super) hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}
