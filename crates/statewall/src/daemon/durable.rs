//! The daemon's durable state under its state directory, as `statewall teardown` sees it.
//!
//! Two kinds of files live there. What the configuration and the API made (firewall
//! instances and their rules, dynamic monitors, the signatures of the door tables last
//! written) is removed by a teardown: a daemon started afterwards begins from its config
//! alone. What protects against reuse (the SPA replay cache, the one-time sequences issued
//! and used, the position of counter-based sequences) is kept unless `purge` is asked for:
//! deleting it would let old SPA packets and used sequences work again. Files of other
//! names are not statewall's and are left alone.

use std::path::Path;

/// One file and what it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The file name under the state directory.
    pub file: String,
    /// What it holds, in words.
    pub what: &'static str,
}

/// What a teardown did under the state directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Removed.
    pub removed: Vec<Item>,
    /// Kept (reuse protection without `purge`).
    pub kept: Vec<Item>,
}

/// What a file of the state directory holds, and whether it protects against reuse;
/// `None` for files that are not statewall's.
pub fn classify(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "firewall.json" => ("firewall instances and rules", false),
        "firewall.journal" => ("firewall rule batches since the last snapshot", false),
        "dynmon.json" => ("dynamic monitors", false),
        "xfsm-doors.json" => ("signatures of the door tables last written", false),
        "spa-replay" => ("SPA replay cache", true),
        "once-issued" => ("one-time sequences issued", true),
        n if n.starts_with("knock-counter-") => ("position of a counter-based sequence", true),
        _ => return None,
    })
}

/// Removes the configuration-derived files (and, with `purge`, the reuse protection too).
/// A missing directory is nothing to clear.
pub fn clear(state_dir: &Path, purge: bool) -> std::io::Result<Cleared> {
    let mut out = Cleared::default();
    let rd = match std::fs::read_dir(state_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for file in names {
        let Some((what, protects)) = classify(&file) else {
            continue;
        };
        let item = Item {
            file: file.clone(),
            what,
        };
        if protects && !purge {
            out.kept.push(item);
            continue;
        }
        std::fs::remove_file(state_dir.join(&file))?;
        out.removed.push(item);
    }
    Ok(out)
}
