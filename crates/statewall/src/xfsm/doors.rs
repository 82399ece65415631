//! The daemon's side of the knock doors: reading xfsm events from the ring buffer (logs,
//! the server-sent event stream, counters), tracking which sources each door has open,
//! running `start_command` / `stop_command`, and manual open and close.
//!
//! The kernel decides every packet on its own (exact expiry); what user space shows follows
//! within a second: the sweeper (`daemon::doors::sweep`) notices grants that ended and closes the
//! door for that source (stop command, `closed` event).

use crate::xfsm::error::XfsmError;
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use serde::Serialize;
use statewall_common::{
    maps::GrantKey,
    xfsm::{reason, Event},
};
use tokio::sync::broadcast;

use crate::xfsm::config::KnockConfig;

/// An event as the API and the logs show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DoorEvent {
    /// Unix time, seconds.
    pub time: f64,
    /// Door name.
    pub door: String,
    /// Source address.
    pub source: IpAddr,
    /// What happened: `transition`, `reset` (a wrong knock), `idle_timeout`,
    /// `hard_timeout`, `lockout`, `opened`, `closed`, `grant_refused`, `window_end`.
    pub kind: String,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
    /// The packet's protocol and destination port (`tcp/7000`), when a packet caused it.
    pub packet: Option<String>,
    /// A transition of a machine with per-flow registers: the registers by name, as the
    /// packet found them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registers: Option<std::collections::BTreeMap<String, u64>>,
}

/// The kind of an event as users see it: its [`reason_name`], except that a transition
/// back to DEFAULT is a `reset` (a wrong knock).
pub fn event_kind(e: &Event) -> &'static str {
    if e.reason == reason::TRANSITION && e.new_state == 0 && e.old_state != 0 {
        "reset"
    } else {
        reason_name(e.reason)
    }
}

/// Names of the event kinds, by [`reason`] code.
pub fn reason_name(r: u8) -> &'static str {
    match r {
        reason::TRANSITION => "transition",
        reason::ACTION => "event",
        reason::IDLE_TIMEOUT => "idle_timeout",
        reason::HARD_TIMEOUT => "hard_timeout",
        reason::LOCKOUT => "lockout",
        reason::GRANT_REFUSED => "grant_refused",
        reason::GRANTED => "opened",
        reason::REVOKED => "closed",
        _ => "unknown",
    }
}

/// A source a door is open for.
#[derive(Clone, Debug, Serialize)]
pub struct OpenDoor {
    /// Door.
    pub door: String,
    /// Source.
    pub source: IpAddr,
    /// Unix time it opened.
    pub since: f64,
    /// How: `knock` or `api`.
    pub by: String,
}

/// Door bookkeeping shared by the event reader, the sweeper and the API.
pub struct Doors {
    /// Live event stream (server-sent events subscribe here).
    pub events: broadcast::Sender<DoorEvent>,
    open: Mutex<BTreeMap<(String, IpAddr), OpenDoor>>,
    /// Events received, by kind.
    pub counts: Mutex<BTreeMap<String, u64>>,
    /// Commands that failed (non-zero exit, timeout, or could not start).
    pub command_failures: std::sync::Arc<AtomicU64>,
    /// Commands run.
    pub commands: AtomicU64,
}

impl Default for Doors {
    fn default() -> Self {
        Doors {
            events: broadcast::channel(1024).0,
            open: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            command_failures: Default::default(),
            commands: AtomicU64::new(0),
        }
    }
}

pub use crate::gate::unix_now;

/// The source address of an event.
pub fn event_source(e: &Event) -> IpAddr {
    statewall_common::maps::addr_ip(e.family, &e.addr)
}

/// Gate keys of a door's protected ports for a source.
pub fn door_keys(k: &KnockConfig, source: IpAddr) -> Vec<GrantKey> {
    k.protected
        .iter()
        .map(|p| statewall_common::maps::key_for(source, p.proto, p.port))
        .collect()
}

impl Doors {
    /// The sources each door is open for.
    pub fn open_doors(&self) -> Vec<OpenDoor> {
        self.open.lock().unwrap().values().cloned().collect()
    }

    /// Logs, counts and streams an event.
    pub fn publish(&self, e: DoorEvent) {
        tracing::info!(
            door = %e.door, source = %e.source, from = %e.from, to = %e.to,
            packet = e.packet.as_deref().unwrap_or("-"), "knock {}", e.kind
        );
        self.publish_quiet(e);
    }

    /// The (door, source) pairs open now.
    pub fn open_keys(&self) -> Vec<(String, IpAddr)> {
        self.open.lock().unwrap().keys().cloned().collect()
    }

    /// Forgets an opening without running its stop command (its door left the config).
    pub fn forget(&self, door: &str, source: IpAddr) {
        self.open
            .lock()
            .unwrap()
            .remove(&(door.to_string(), source));
    }

    /// Counts and streams an event without a log line.
    fn publish_quiet(&self, e: DoorEvent) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(e.kind.clone())
            .or_default() += 1;
        self.stream(e);
    }

    /// Sends an event to the live stream only (not counted as a door event).
    pub fn stream(&self, e: DoorEvent) {
        let _ = self.events.send(e);
    }

    /// Records an opening and runs the start command (once per opening).
    pub fn opened(&self, door: &KnockConfig, source: IpAddr, by: &str) {
        let fresh = self
            .open
            .lock()
            .unwrap()
            .insert(
                (door.name.clone(), source),
                OpenDoor {
                    door: door.name.clone(),
                    source,
                    since: unix_now(),
                    by: by.into(),
                },
            )
            .is_none();
        if fresh {
            if let Some(cmd) = &door.start_command {
                self.run(door, cmd, source);
            }
        }
    }

    /// Records a closing and runs the stop command (when the door was open).
    pub fn closed(&self, door: &KnockConfig, source: IpAddr, window_end: bool) {
        let was = self
            .open
            .lock()
            .unwrap()
            .remove(&(door.name.clone(), source))
            .is_some();
        if !was {
            return;
        }
        if window_end {
            self.publish(DoorEvent {
                time: unix_now(),
                door: door.name.clone(),
                source,
                kind: "window_end".into(),
                from: "OPEN".into(),
                to: "DEFAULT".into(),
                packet: None,
                registers: None,
            });
        }
        if let Some(cmd) = &door.stop_command {
            self.run(door, cmd, source);
        }
    }

    /// Runs a trigger command in the background (argument vector, `%IP%` replaced).
    fn run(&self, door: &KnockConfig, argv: &[String], source: IpAddr) {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("%IP%", &source.to_string()))
            .collect();
        let name = door.name.clone();
        let failures = self.command_failures.clone();
        let fut = run_command(argv.clone(), door.run_as.clone(), door.cmd_timeout.0);
        tokio::spawn(async move {
            match fut.await {
                Ok(()) => tracing::info!(door = %name, cmd = %argv[0], "command done"),
                Err(e) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(door = %name, cmd = ?argv, "command failed: {e}");
                }
            }
        });
    }
}

/// Runs `argv` (no shell) as `user` if given, killing it after `timeout`.
pub async fn run_command(
    argv: Vec<String>,
    user: Option<String>,
    timeout: Duration,
) -> Result<(), XfsmError> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(u) = &user {
        let (uid, gid) = lookup_user(u)?;
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| XfsmError::Command(format!("{}: {e}", argv[0])))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(XfsmError::Command(format!("exited with {st}"))),
        Ok(Err(e)) => Err(XfsmError::Command(e.to_string())),
        Err(_) => {
            let _ = child.kill().await;
            Err(XfsmError::Command(format!(
                "killed after cmd_timeout ({} ms)",
                timeout.as_millis()
            )))
        }
    }
}

/// uid and gid of a user name.
pub fn lookup_user(name: &str) -> Result<(u32, u32), XfsmError> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| XfsmError::Command(format!("bad user name {name:?}")))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(XfsmError::Command(format!("no user {name:?}")));
    }
    // SAFETY: non-null as checked.
    let pw = unsafe { &*pw };
    Ok((pw.pw_uid, pw.pw_gid))
}
