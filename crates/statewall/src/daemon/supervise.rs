//! Supervised background tasks: a ring-buffer follower or the sweeper that fails or panics
//! is logged, counted (`statewall_task_restarts_total{task}` on `/metrics`) and started
//! again after a short back-off, until the daemon stops.
//!
//! Fault injection for tests ([`fault`]) is part of the normal build and inert unless
//! `STATEWALL_FAULTS` names a fault: `follower:MAP` makes the follower of the ring buffer
//! `MAP` panic once, right after it has handled its first record; `spa_verifier` makes
//! the SPA verifier thread panic once, right after its first candidate.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicU8, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinSet};

/// First wait before a restart; doubled after each quick failure, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait before a restart.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A task that ran this long before it stopped is restarted after [`BACKOFF_MIN`] again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Restart counts by task name.
#[derive(Default)]
pub struct Supervisor {
    restarts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Supervisor {
    /// Every supervised task with the times it was started again.
    pub fn restarts(&self) -> Vec<(&'static str, u64)> {
        let m = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn register(&self, name: &'static str) {
        let mut m = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name).or_insert(0);
    }

    fn count(&self, name: &'static str) {
        let mut m = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(name).or_insert(0) += 1;
    }

    /// Runs `work` on an OS thread of its own, as the task `name`, for blocking work
    /// (decryption, fsync) that must not hold an async worker: `work` is called again
    /// whenever it panics (logged and counted like a task's restart), and the thread ends
    /// when `work` returns.
    pub fn spawn_thread(
        self: &std::sync::Arc<Self>,
        name: &'static str,
        work: impl Fn() + Send + 'static,
    ) -> std::io::Result<()> {
        self.register(name);
        let sup = self.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&work)) {
                    Ok(()) => return,
                    Err(p) => {
                        tracing::error!(task = name, "panic: {}; started again", panic_text(p));
                        sup.count(name);
                        std::thread::sleep(BACKOFF_MIN);
                    }
                }
            })
            .map(|_| ())
    }

    /// Runs `make()` on `tasks` as the task `name`, and again whenever it ends (with an
    /// error, a panic, or by returning) before `stop` turns true.
    pub fn spawn<F, Fut>(
        self: &std::sync::Arc<Self>,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        name: &'static str,
        mut stop: watch::Receiver<bool>,
        make: F,
    ) where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.register(name);
        let sup = self.clone();
        tasks.spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                let started = Instant::now();
                let r = tokio::spawn(make()).await;
                if *stop.borrow() {
                    return Ok(());
                }
                let why = match r {
                    Ok(Ok(())) => "it returned".to_string(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) if e.is_panic() => format!("panic: {}", panic_text(e.into_panic())),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff = BACKOFF_MIN;
                }
                sup.count(name);
                tracing::error!(
                    task = name,
                    "background task stopped ({why}); starting it again in {} ms",
                    backoff.as_millis()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|v| *v) => return Ok(()),
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "(no message)".into(),
        },
    }
}

/// 0: no fault armed (the variable unset or every fault taken); 1: maybe; 2: not read yet.
static ANY_ARMED: AtomicU8 = AtomicU8::new(2);

/// Faults armed by `STATEWALL_FAULTS` (comma-separated), each taken at most once.
static FAULTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// True once for a fault named in `STATEWALL_FAULTS` (then it is disarmed); false for
/// every other name, and always when the variable is unset.
pub fn fault(name: &str) -> bool {
    // Fast path, on every ring-buffer record: nothing armed, nothing to look up.
    if ANY_ARMED.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let armed = FAULTS.get_or_init(|| {
        let v = std::env::var("STATEWALL_FAULTS").unwrap_or_default();
        let list: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if !list.is_empty() {
            tracing::warn!(faults = %list.join(","), "fault injection armed (STATEWALL_FAULTS)");
        }
        Mutex::new(list)
    });
    let mut a = armed.lock().unwrap_or_else(|p| p.into_inner());
    let hit = match a.iter().position(|f| f == name) {
        Some(i) => {
            a.remove(i);
            true
        }
        None => false,
    };
    ANY_ARMED.store(u8::from(!a.is_empty()), Ordering::Relaxed);
    hit
}

/// Runs `stretch` (one connected stretch: `Ok` when the daemon stops) again after every
/// gap until the daemon stops: `on_gap` hears why, and the next try waits `backoff.0`,
/// doubling up to `backoff.1` (a stretch that lasted that long starts it over).
pub async fn until_stopped<F, Fut>(
    mut stop: tokio::sync::watch::Receiver<bool>,
    backoff: (std::time::Duration, std::time::Duration),
    what: &str,
    on_gap: impl Fn(&crate::cluster::store::StoreError),
    stretch: F,
) -> anyhow::Result<()>
where
    F: Fn(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::cluster::store::StoreError>>,
{
    let mut wait = backoff.0;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let t0 = std::time::Instant::now();
        match stretch(stop.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                // A stretch that lasted starts the backoff over.
                if t0.elapsed() >= backoff.1 {
                    wait = backoff.0;
                }
                on_gap(&e);
                tracing::debug!("{what}: {e}; again in {wait:?}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return Ok(()),
        }
        wait = (wait * 2).min(backoff.1);
    }
}
