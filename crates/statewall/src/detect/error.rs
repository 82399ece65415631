//! Why the learned classifier could not read, train, load or classify.

use super::{
    capture::CaptureError,
    invalid::DetectError,
    model::{FileError, ModelError},
};
use crate::monitor::MonitorError;

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
