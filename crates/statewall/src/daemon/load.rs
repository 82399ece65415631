//! Reading the config and putting it in force: at start ([`load_config`]), on `POST
//! /api/v1/reload` and `SIGHUP` ([`reload`]), and when the fleet pushes a section
//! ([`apply_config`]). Above the shared state ([`super::state`]) and the stages whose
//! checks the loader runs. The daemon's lifecycle calls it, the fleet's policy task through
//! [`super::policy::Appliers`]; it serves `POST /api/v1/reload` itself ([`routes`]).

use std::sync::Arc;

use anyhow::Context;
use axum::{
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde_json::json;

use super::{
    api::call::ApiError,
    state::{apply, prepare_learned, Overrides, Shared},
};
use crate::{config::Config, engine::Engine};

/// Adds `POST /api/v1/reload`: the config file read again and put in force; a 400 with the
/// error, and nothing changed, when it does not load or apply.
pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    r.route("/api/v1/reload", post(reload_route))
}

async fn reload_route(State(s): State<Arc<Shared>>) -> Result<Response, ApiError> {
    match reload(&s) {
        Ok(()) => Ok(Json(json!({"reloaded": true})).into_response()),
        Err(e) => Err(ApiError::bad(format!(
            "{e:#} (the previous config stays in force)"
        ))),
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
