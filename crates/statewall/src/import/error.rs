//! The importers' errors: where in the file, and what.

/// Why a file could not be converted, with where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// A line of the file: `origin:line: message`.
    #[error("{origin}:{line}: {msg}")]
    At {
        /// The file (as named on the command line).
        origin: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The converted configuration is refused by statewall's own checks.
    #[error("{0}")]
    Config(String),
}

/// What is wrong with one line or value, before the caller says where
/// ([`ImportError::At`]): the type keeps a reason from leaving the importer without its
/// place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Why(pub String);

impl From<String> for Why {
    fn from(s: String) -> Self {
        Why(s)
    }
}

impl From<&str> for Why {
    fn from(s: &str) -> Self {
        Why(s.to_string())
    }
}
