//! The dynamic monitors' errors, by whose fault and what failed: the user's spec or code
//! (400 through the API), the kernel's verifier with its log (400), or the host (500).
//! Their HTTP statuses are set in one place, `daemon::api::call`.

/// An object file that is not a usable eBPF ELF object (what is wrong, and where).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadObject(pub String);

impl From<String> for BadObject {
    fn from(s: String) -> Self {
        BadObject(s)
    }
}

impl From<&str> for BadObject {
    fn from(s: &str) -> Self {
        BadObject(s.to_string())
    }
}

/// Why a dynamic monitor could not be made, loaded, attached or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DynmonError {
    /// The spec is wrong: a missing or unknown field, a metric naming no map, an unusable
    /// map type, a direction the program cannot take.
    #[error("{0}")]
    Spec(String),
    /// The code is in a dialect statewall does not compile (BCC), or clang refused it
    /// (its diagnostics follow), or clang is missing.
    #[error("{0}")]
    Compile(String),
    /// The object is not a usable eBPF ELF object.
    #[error("{0}")]
    Object(#[from] BadObject),
    /// The kernel refused a program or a map: the verifier's log follows.
    #[error("{0}")]
    Verifier(String),
    /// Attaching to the interface the request names failed (no such interface or
    /// namespace, or the hook refused).
    #[error("{0}")]
    Attach(String),
    /// Switching, reading, pinning or a file on the host failed.
    #[error("{0}")]
    Host(String),
}

impl DynmonError {
    /// The same error with `context` in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        let f = |m: String| format!("{context}: {m}");
        match self {
            DynmonError::Spec(m) => DynmonError::Spec(f(m)),
            DynmonError::Compile(m) => DynmonError::Compile(f(m)),
            DynmonError::Object(BadObject(m)) => DynmonError::Object(BadObject(f(m))),
            DynmonError::Verifier(m) => DynmonError::Verifier(f(m)),
            DynmonError::Attach(m) => DynmonError::Attach(f(m)),
            DynmonError::Host(m) => DynmonError::Host(f(m)),
        }
    }
}
