//! Why a traffic monitor could not be loaded, attached or read (apart from the monitors'
//! code, so that the errors wrapping it import nothing above it).

/// Why a traffic monitor could not be loaded, attached or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MonitorError {
    /// A value of its spec is wrong.
    #[error("monitor {name:?}: {key}: {msg}")]
    Spec {
        /// The monitor.
        name: String,
        /// The key.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// The kernel refused the object or its program (the verifier's log follows).
    #[error("{what}: {msg}")]
    Load {
        /// What was being loaded.
        what: String,
        /// The error, with the verifier's log.
        msg: String,
    },
    /// Attaching to an interface it watches failed.
    #[error("monitor {name:?}: attaching to {ifname} ({hook}): {msg}")]
    Attach {
        /// The monitor.
        name: String,
        /// The interface.
        ifname: String,
        /// The hook.
        hook: String,
        /// The error.
        msg: String,
    },
    /// A map, a test run or the grace period failed.
    #[error("{what}: {msg}")]
    Kernel {
        /// What was being done.
        what: String,
        /// The error.
        msg: String,
    },
}
