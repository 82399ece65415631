//! Why a `[detect]` value cannot be used: the section's own error, apart from the code
//! that checks the section (`detect` for its values, `live::check` for its models too), so
//! that the errors wrapping it ([`super::error::LearnError`]) need nothing of that.

/// A `[detect]` value that cannot be used: (key, what is wrong).
#[derive(Debug, thiserror::Error)]
#[error("[detect] {key}: {msg}")]
pub struct DetectError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}
