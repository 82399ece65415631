//! Why the learned classifier could not read, train, load or classify.

use super::{capture::CaptureError, DetectError};
use crate::monitor::MonitorError;

/// The classifier's errors.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// A file could not be read or written.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What the system said.
        msg: String,
    },
    /// A capture is broken.
    #[error("{path}: {err}")]
    Capture {
        /// The file.
        path: String,
        /// Where and what.
        err: CaptureError,
    },
    /// A model file that does not read, or a model and samples that do not fit.
    #[error("model: {0}")]
    Model(String),
    /// Attacker or victim prefixes that do not read, or a manifest that does not.
    #[error("{0}")]
    Labels(String),
    /// Training failed (one class only, or the forest refused the data).
    #[error("training: {0}")]
    Train(String),
    /// The classifier's monitor instance.
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// `[detect.classifier]`.
    #[error(transparent)]
    Config(#[from] DetectError),
}

impl LearnError {
    /// A file error.
    pub fn file(path: &std::path::Path, e: impl std::fmt::Display) -> LearnError {
        LearnError::File {
            path: path.display().to_string(),
            msg: e.to_string(),
        }
    }
}
