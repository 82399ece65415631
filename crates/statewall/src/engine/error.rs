//! The engine's errors, each with what was being done.

use std::path::{Path, PathBuf};

/// Errors of the kernel side, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// bpffs is not mounted where the pins should go.
    #[error("{0} is not on a bpf filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`, done by scripts/setup.sh)")]
    NoBpffs(PathBuf),
    /// The knock doors could not be compiled or their sequences read.
    #[error("knock doors: {0}")]
    Doors(String),
    /// A firewall instance's rules do not fit the classifier's tables.
    #[error("firewall rules: {0}")]
    Rules(String),
    /// A firewall chain cannot run where it would have to (the stages' order).
    #[error("firewall: {0}")]
    Placement(String),
    /// Loading the object or a program failed (the verifier log is in the message).
    #[error("loading the eBPF object: {0}")]
    Load(String),
    /// A pin could not be made, opened or removed.
    #[error("{what} {path}: {msg}")]
    Pin {
        /// What was being done.
        what: &'static str,
        /// The pin path.
        path: PathBuf,
        /// The error.
        msg: String,
    },
    /// Attaching or detaching failed.
    #[error("attaching {program} to {ifname} ({hook}{ns}): {msg}")]
    Attach {
        /// Program.
        program: String,
        /// Interface.
        ifname: String,
        /// Hook.
        hook: String,
        /// Namespace note.
        ns: String,
        /// The error.
        msg: String,
    },
    /// A preallocated table is full: the new entry was refused (fail closed).
    #[error("{map} is full: entry refused")]
    TableFull {
        /// Map name.
        map: String,
    },
    /// A map operation failed.
    #[error("map {map}: {msg}")]
    Map {
        /// Map name.
        map: String,
        /// The error.
        msg: String,
    },
}

/// The engine's result.
pub type Result<T> = std::result::Result<T, EngineError>;

pub(crate) fn pin_err(what: &'static str, path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Pin {
        what,
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

pub(crate) fn map_err(map: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Map {
        map: map.into(),
        msg: e.to_string(),
    }
}
