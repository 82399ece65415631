//! Why the learned classifier could not read, train, load or classify: the errors of the
//! files, captures and forests it reads, and [`LearnError`], which wraps them. Kept apart
//! from the code that raises them (`capture`, `model`, `live`, `learn`), so that this file
//! imports only other leaves.

use super::invalid::DetectError;
use crate::monitor::error::MonitorError;

/// A file that could not be read or written: which, and what the system (or the parse of
/// its text) said. Models' and the learners' errors both carry it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct FileError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub msg: String,
}

impl FileError {
    /// `e` about `path`.
    pub fn new(path: &std::path::Path, e: impl std::fmt::Display) -> FileError {
        FileError {
            path: path.display().to_string(),
            msg: e.to_string(),
        }
    }
}

/// Why a model could not be read, trained or applied.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A model file that does not read, or a model and samples that do not fit.
    #[error("model: {0}")]
    Model(String),
    /// Training failed (one class only, or the forest refused the data).
    #[error("training: {0}")]
    Train(String),
}

/// Why a capture could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("capture, byte {offset}: {msg}")]
pub struct CaptureError {
    /// Where in the file.
    pub offset: usize,
    /// What is wrong.
    pub msg: String,
}

/// The classifier's errors.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A capture is broken.
    #[error("{path}: {err}")]
    Capture {
        /// The file.
        path: String,
        /// Where and what.
        err: CaptureError,
    },
    /// A model that does not read, train or fit its samples.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Attacker or victim prefixes that do not read, or a manifest that does not.
    #[error("{0}")]
    Labels(String),
    /// The classifier's monitor instance.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// `[detect.classifier]`.
    #[error(transparent)]
    Config(#[from] DetectError),
}
