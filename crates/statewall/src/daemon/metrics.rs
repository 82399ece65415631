//! `/metrics` on its own listener: Prometheus text format 0.0.4 by default, OpenMetrics
//! 1.0 when the scraper asks for it (`Accept: application/openmetrics-text`).
//!
//! Families: `statewall_up`, `statewall_task_restarts` (counter, label `task`), `statewall_gate_packets` (counter, label `outcome`),
//! `statewall_detect_packets` (counter, label `what`), `statewall_detect_mitigations`
//! (gauge, label `detector`), `statewall_detect_classifier` (counter, label `what`), `statewall_cluster_up` and
//! `statewall_cluster_pending` (gauges), `statewall_cluster` (counter, label `what`), `statewall_xfsm` (counter, label `what`), `statewall_xfsm_transition_packets` (counter,
//! label `transition`), `statewall_door_events` (counter, label `kind`),
//! `statewall_door_open_sources` (gauge, label `door`), `statewall_door_commands` (counter,
//! label `outcome`), `statewall_fw_log_events` (counter, label `what`),
//! `statewall_fw_conntrack_created` (counter), `statewall_fw_v4_fields` (gauge, label
//! `table`), `statewall_fw_v4_blocks` (gauge),
//! `statewall_fw_rule_packets` and `statewall_fw_rule_bytes` (counters, labels `firewall`,
//! `chain`, `rule`), `statewall_monitor_packets` (counter, labels `monitor`, `what`),
//! `statewall_monitor_sessions` (gauge), `statewall_monitor_windows` (counter),
//! `statewall_monitor_grace_seconds` and `statewall_monitor_read_seconds` (gauges, label
//! `monitor`), `statewall_map_entries` and `statewall_map_capacity` (gauges, label
//! `map`), and each dynamic monitor's declared metrics ([`crate::dynmon::openmetrics`]).

use std::{fmt::Write, sync::Arc};

use axum::{
    http::{header, HeaderMap},
    response::IntoResponse,
    routing::get,
    Router,
};

use crate::daemon::state::{Inner, Shared};

/// The metrics router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let s = shared.clone();
            async move {
                let om = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("application/openmetrics-text"));
                // A dynamic monitor's read waits a grace period: off the async workers.
                let body = tokio::task::spawn_blocking(move || render(&s, om))
                    .await
                    .unwrap_or_default();
                let ct = if om {
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                } else {
                    "text/plain; version=0.0.4; charset=utf-8"
                };
                ([(header::CONTENT_TYPE, ct)], body).into_response()
            }
        }),
    )
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    om: bool,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }
    fn counter(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        // OpenMetrics names the family without `_total`; 0.0.4 names it as its samples.
        let sample = format!("{name}_total");
        let family = if self.om {
            name.to_string()
        } else {
            sample.clone()
        };
        self.head(&family, "counter", help);
        for (labels, v) in samples {
            let _ = writeln!(self.out, "{sample}{labels} {v}");
        }
    }
    fn gauge_f(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        self.head(name, "gauge", help);
        for (labels, v) in samples {
            let _ = writeln!(self.out, "{name}{labels} {v}");
        }
    }
    fn gauge(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.head(name, "gauge", help);
        for (labels, v) in samples {
            let _ = writeln!(self.out, "{name}{labels} {v}");
        }
    }
}

/// Renders every metric.
pub fn render(s: &Shared, openmetrics: bool) -> String {
    let mut out = String::new();
    let g = s.lock();
    {
        let mut f = Family {
            out: &mut out,
            om: openmetrics,
        };
        f.gauge(
            "statewall_up",
            "1 while the daemon serves.",
            &[(String::new(), 1)],
        );
        let restarts: Vec<_> = s
            .tasks
            .restarts()
            .iter()
            .map(|(k, v)| (format!("{{task=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_task_restarts",
            "Times a background task (a ring-buffer follower, the sweeper) failed and was started again.",
            &restarts,
        );
        stage_counters(&mut f, s, &g);
        rule_counters(&mut f, &g);
        door_families(&mut f, s, &g);
        monitor_families(&mut f, s);
        map_families(&mut f, &g);
    }
    drop(g);
    {
        // Dynamic monitors' declared metrics (a read: swap-on-read and empty-on-read apply).
        let mut dm = s.dynmon.lock().unwrap_or_else(|p| p.into_inner());
        let mut fams = crate::dynmon::openmetrics::Families::default();
        for d in dm.by_name.values_mut() {
            match d.read() {
                Ok(r) => d.render(&r, openmetrics, &mut fams),
                Err(e) => tracing::warn!(dynmon = %d.name, "reading for /metrics: {e}"),
            }
        }
        fams.finish(&mut out);
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Kernel counters of the gate, xfsm, spa and firewall stages.
fn stage_counters(f: &mut Family, s: &Shared, g: &Inner) {
    if let Ok(c) = g.engine.gate_counters() {
        let samples: Vec<_> = c
            .iter()
            .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_gate_packets",
            "Packets seen by the gate stage, by outcome.",
            &samples,
        );
    }
    if let Ok(c) = g.engine.xfsm_counters() {
        let samples: Vec<_> = c
            .iter()
            .map(|(k, v)| (format!("{{what=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_xfsm",
            "xfsm stage counters (packets seen, lookups, transitions, failures, lockouts, ...).",
            &samples,
        );
    }
    if let Ok(c) = g.engine.detect_counters() {
        let samples: Vec<_> = c
            .iter()
            .map(|(k, v)| (format!("{{what=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_detect_packets",
            "Packets the detect stage's blocks met: from an allowlisted source, dropped by a block, past an expired block.",
            &samples,
        );
    }
    if g.config.detect.is_some() {
        if let Ok(ms) = s.mitigations(g) {
            let mut by: std::collections::BTreeMap<String, u64> = Default::default();
            for m in ms {
                *by.entry(m.detector).or_default() += 1;
            }
            let samples: Vec<_> = by
                .into_iter()
                .map(|(k, n)| (format!("{{detector=\"{}\"}}", label(&k)), n))
                .collect();
            f.gauge(
                "statewall_detect_mitigations",
                "Mitigations in force, by detector (block: by hand or API).",
                &samples,
            );
        }
    }
    learned_counters(f, s);
    if let Some(l) = &s.cluster {
        let st = l.status();
        f.gauge(
            "statewall_cluster_up",
            "1 when the last request to the cluster's etcd succeeded, 0 while it cannot be reached.",
            &[(String::new(), u64::from(st.up))],
        );
        f.gauge(
            "statewall_cluster_pending",
            "Grants, revocations and replay claims waiting for etcd.",
            &[(String::new(), st.pending as u64)],
        );
        let samples: Vec<_> = st
            .counts
            .iter()
            .map(|(k, v)| (format!("{{what=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_cluster",
            "The cluster link: replay claims made, replays refused, claims that failed, grants published, grants installed from other hosts, grants revoked from elsewhere, full reads, unreadable keys.",
            &samples,
        );
    }
    if let Ok(c) = g.engine.spa_counters() {
        let samples: Vec<_> = c
            .iter()
            .map(|(k, v)| (format!("{{what=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_spa_candidates",
            "SPA candidates in the kernel: seen, rate-limited, ring full, queued, oversized.",
            &samples,
        );
    }
    {
        let spa = s.spa.lock().unwrap_or_else(|p| p.into_inner());
        let samples: Vec<_> = s
            .spa_verdicts(&spa)
            .iter()
            .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_spa_verdicts",
            "SPA packets verified in user space, by outcome (accepted, bad_digest, replay, stale, ...).",
            &samples,
        );
        f.gauge(
            "statewall_spa_replay_entries",
            "Live entries in the SPA replay cache.",
            &[(String::new(), spa.replay.len() as u64)],
        );
    }
    if let Ok(c) = g.engine.fw_counters() {
        let samples: Vec<_> = c
            .iter()
            .filter(|(k, _)| k.starts_with("log_"))
            .map(|(k, v)| (format!("{{what=\"{k}\"}}"), *v))
            .collect();
        f.counter(
            "statewall_fw_log_events",
            "Firewall LOG rule hits queued for the daemon, and lost because the ring was full.",
            &samples,
        );
        let created: Vec<_> = c
            .iter()
            .filter(|(k, _)| *k == "ct_created")
            .map(|(_, v)| (String::new(), *v))
            .collect();
        if let Some(t) = g.engine.fw_tables_ref() {
            let (blocks, direct, trie) = t.v4_in_force();
            f.gauge(
                "statewall_fw_v4_fields",
                "Firewall address fields with IPv4 prefixes in force: read through the IPv4 direct table, or through the prefix trie (no room in [maps] SW_FW_V4).",
                &[
                    ("{table=\"direct\"}".to_string(), direct as u64),
                    ("{table=\"trie\"}".to_string(), trie as u64),
                ],
            );
            f.gauge(
                "statewall_fw_v4_blocks",
                "Blocks (1 KiB) of the IPv4 direct table the generation in force uses, its roots' included.",
                &[(String::new(), blocks as u64)],
            );
        }
        f.counter(
            "statewall_fw_conntrack_created",
            "Connections entered in the firewall's conntrack table (an LRU: those beyond the live entries expired, ended or were evicted).",
            &created,
        );
    }
}

/// The learned detectors' windows, samples, attacks and what they could not act on.
fn learned_counters(f: &mut Family, s: &Shared) {
    for (w, name, help) in [
        (
            crate::detect::live::Learned::Flows,
            "statewall_detect_classifier",
            "The learned classifier: windows read, samples classified, attacks found, flows its full table turned away (distinct each window, estimated) and their packets, detections refused (max_blocks held or the block table full), allowlisted sources detected, sources of a single packet not blocked.",
        ),
        (
            crate::detect::live::Learned::Mining,
            "statewall_detect_mining",
            "The learned mining detector: windows read, session samples classified, mining sessions found, sessions its full table turned away (distinct each window, estimated) and their packets, detections refused (max_blocks held or the block table full), allowlisted pools detected.",
        ),
    ] {
        let c = s.learned(w).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &c.live {
            let st = &l.stats;
            let mut counts = vec![
                ("windows", st.windows),
                ("samples", st.samples),
                ("attacks", st.attacks),
                ("unclassified_flows", st.unclassified_flows),
                ("unclassified_packets", st.unclassified_packets),
                ("refused", c.refused),
                ("allowlisted", c.allowlisted),
            ];
            if w == crate::detect::live::Learned::Flows {
                counts.push(("lone", c.lone));
            }
            let samples: Vec<_> = counts
                .iter()
                .map(|(k, v)| (format!("{{what=\"{k}\"}}"), *v))
                .collect();
            f.counter(name, help, &samples);
        }
    }
}

/// Per-rule firewall counters and per-transition xfsm counters.
fn rule_counters(f: &mut Family, g: &Inner) {
    {
        let (mut pk, mut by) = (Vec::new(), Vec::new());
        for (name, inst) in &g.fw.instances {
            for (chain, c) in [("INGRESS", &inst.ingress), ("EGRESS", &inst.egress)] {
                let Ok(no) = inst.chain_no(chain) else {
                    continue;
                };
                let Ok(st) = g.engine.fw_stats(no, c.rules.len()) else {
                    continue;
                };
                for (i, (p, b)) in st.iter().enumerate() {
                    let l = format!(
                        "{{firewall=\"{}\",chain=\"{chain}\",rule=\"{i}\"}}",
                        label(name)
                    );
                    pk.push((l.clone(), *p));
                    by.push((l, *b));
                }
            }
        }
        f.counter(
            "statewall_fw_rule_packets",
            "Packets matched by each firewall rule (LOG rules count what they saw).",
            &pk,
        );
        f.counter(
            "statewall_fw_rule_bytes",
            "Bytes matched by each firewall rule.",
            &by,
        );
    }
    if let Ok(c) = g.engine.xfsm_transition_counters() {
        let samples: Vec<_> = c
            .iter()
            .map(|(k, v)| (format!("{{transition=\"{}\"}}", label(k)), *v))
            .collect();
        f.counter(
            "statewall_xfsm_transition_packets",
            "Packets that took each transition of the xfsm tables.",
            &samples,
        );
    }
}

/// Door events, open sources and trigger commands.
fn door_families(f: &mut Family, s: &Shared, g: &Inner) {
    let ev: Vec<_> = s
        .doors
        .counts
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), *v))
        .collect();
    f.counter(
        "statewall_door_events",
        "Door events (state changes, openings, closings, lockouts), by kind.",
        &ev,
    );
    let open = s.doors.open_doors();
    let per: Vec<_> = g
        .config
        .knocks
        .iter()
        .map(|k| {
            (
                format!("{{door=\"{}\"}}", k.name),
                open.iter().filter(|o| o.door == k.name).count() as u64,
            )
        })
        .collect();
    f.gauge(
        "statewall_door_open_sources",
        "Sources each door is open for.",
        &per,
    );
    use std::sync::atomic::Ordering::Relaxed;
    f.counter(
        "statewall_door_commands",
        "start/stop commands run, by outcome.",
        &[
            ("{outcome=\"run\"}".into(), s.doors.commands.load(Relaxed)),
            (
                "{outcome=\"failed\"}".into(),
                s.doors.command_failures.load(Relaxed),
            ),
        ],
    );
}

/// The traffic monitors.
fn monitor_families(f: &mut Family, s: &Shared) {
    {
        let mons = s.monitors.lock().unwrap_or_else(|p| p.into_inner());
        let (mut pk, mut ses, mut win, mut grace, mut read) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (name, m) in &mons.by_name {
            let l = format!("monitor=\"{}\"", label(name));
            for (k, v) in m.counters().unwrap_or_default() {
                pk.push((format!("{{{l},what=\"{k}\"}}"), v));
            }
            ses.push((format!("{{{l}}}"), m.last_sessions as u64));
            win.push((format!("{{{l}}}"), m.reads));
            grace.push((format!("{{{l}}}"), m.last.0.as_secs_f64()));
            read.push((format!("{{{l}}}"), m.last.1.as_secs_f64()));
        }
        f.counter(
            "statewall_monitor_packets",
            "Packets seen by each monitor: seen, captured, sessions started, sessions turned away (table full), over the per-session share, packet table full, ignored (the sum), ignored by cause (not IP, malformed, protocol not tracked).",
            &pk,
        );
        f.gauge(
            "statewall_monitor_sessions",
            "Sessions in the monitor's last window.",
            &ses,
        );
        f.counter("statewall_monitor_windows", "Windows read.", &win);
        f.gauge_f(
            "statewall_monitor_grace_seconds",
            "Grace period waited by the last read.",
            &grace,
        );
        f.gauge_f(
            "statewall_monitor_read_seconds",
            "Reading and decoding time of the last read.",
            &read,
        );
    }
}

/// Map fill levels.
fn map_families(f: &mut Family, g: &Inner) {
    let maps = g.engine.map_states();
    let e: Vec<_> = maps
        .iter()
        .map(|m| (format!("{{map=\"{}\"}}", m.name), m.entries as u64))
        .collect();
    let c: Vec<_> = maps
        .iter()
        .map(|m| (format!("{{map=\"{}\"}}", m.name), m.max_entries as u64))
        .collect();
    f.gauge(
        "statewall_map_entries",
        "Entries in use in each map (arrays: their size).",
        &e,
    );
    f.gauge("statewall_map_capacity", "Capacity of each map.", &c);
}
