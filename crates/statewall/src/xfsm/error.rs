//! The xfsm stage's errors, by what failed.

/// Why doors or machines could not be compiled, written, or run their commands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XfsmError {
    /// A value of a door or machine is out of its range.
    #[error("{0}")]
    Spec(String),
    /// The doors and machines do not make valid tables (which one, and what).
    #[error("{0}")]
    Compile(String),
    /// Writing the tables into the kernel failed.
    #[error("{0}")]
    Map(String),
    /// A file of durable state (counters, one-time sequences) or a secret could not be
    /// read or written.
    #[error("{0}")]
    File(String),
    /// A door's start or stop command could not be run, failed or was killed.
    #[error("{0}")]
    Command(String),
}

/// Why a door could not be opened or closed by hand.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// The config in force has no door of that name.
    #[error("no door {0:?}")]
    NoDoor(String),
    /// Granting or revoking failed (a full grant table is `EngineError::TableFull`).
    #[error(transparent)]
    Engine(#[from] crate::engine::error::EngineError),
}
