//! What every handler uses: the error type with each stage error's HTTP status in one
//! place, the body parser and the handlers' phase timer (the lock on the shared state is
//! `Shared::lock`).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An API error: status and message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    /// 400 with a message.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    /// 500 with a message.
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
    }
}

/// The HTTP status of each stage error, in one place.
impl From<crate::firewall::FirewallError> for ApiError {
    fn from(e: crate::firewall::FirewallError) -> Self {
        use crate::firewall::FirewallError as F;
        let status = match &e {
            F::Exists(_) | F::NoSlot => StatusCode::CONFLICT,
            F::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

impl From<crate::dynmon::error::DynmonError> for ApiError {
    fn from(e: crate::dynmon::error::DynmonError) -> Self {
        use crate::dynmon::error::DynmonError as D;
        let status = match &e {
            D::Spec(_) | D::Compile(_) | D::Object(_) | D::Verifier(_) | D::Attach(_) => {
                StatusCode::BAD_REQUEST
            }
            D::Host(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<crate::xfsm::error::DoorError> for ApiError {
    fn from(e: crate::xfsm::error::DoorError) -> Self {
        use crate::{engine::EngineError as E, xfsm::error::DoorError as D};
        let status = match &e {
            D::NoDoor(_) => StatusCode::NOT_FOUND,
            D::Engine(E::TableFull { .. }) => StatusCode::CONFLICT,
            D::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// Parses a JSON body whatever its Content-Type, naming the offending field on error.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad(format!("invalid JSON body at `{path}`: {inner}"))
        }
    })
}

/// [`parse_body`] for bodies that may be large (a batch of thousands of rules): read at
/// full speed, and again with the path tracked only when it is refused, for the message.
pub fn parse_large_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).or_else(|_| parse_body(body))
}

/// Runs a handler's body, or the part of it that blocks (the shared state's lock, writes
/// into the kernel, a synced file, a read that waits a grace period), so that no async
/// task waits on a disk or a lock: on the daemon's multi-threaded runtime in place, the
/// worker's other tasks handed to another thread first (`block_in_place`: the request
/// pays no hop to a blocking thread and back, 10 to 25 us here), else on the runtime's
/// blocking threads. Either way the body runs to its end once started, even when the
/// client goes away, and a panic in it is a 500, not a reset connection. Not for a
/// `LocalSet` (none in the daemon), where tokio forbids blocking in place.
pub async fn off_workers<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(ApiError::internal("the request's handler panicked")))
        });
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's task ended: {e}")))?
}

/// A handler's phases, timed one after the other, for its `Server-Timing` header (put
/// into the response's extensions).
#[derive(Clone)]
pub struct Phases {
    last: std::time::Instant,
    done: Vec<(&'static str, f64)>,
}

impl Phases {
    /// Starts timing the first phase.
    pub fn start() -> Phases {
        Phases {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    /// Ends the phase under way, named `name`, and starts the next.
    pub fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.done
            .push((name, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }

    /// The phases ended, in order: (name, ms).
    pub fn done(self) -> Vec<(&'static str, f64)> {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynmon::error::{BadObject, DynmonError};

    #[test]
    fn stage_errors_map_to_their_statuses() {
        let status = |e: ApiError| e.0;
        for e in [
            DynmonError::Spec("s".into()),
            DynmonError::Compile("c".into()),
            DynmonError::Object(BadObject("o".into())),
            DynmonError::Verifier("v".into()),
            DynmonError::Attach("a".into()),
        ] {
            assert_eq!(status(e.into()), StatusCode::BAD_REQUEST);
        }
        let host: ApiError = DynmonError::Host("h".into()).context("reading").into();
        assert_eq!(host.0, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(host.1, "reading: h");
        let no = crate::xfsm::error::DoorError::NoDoor("x".into());
        assert_eq!(status(no.into()), StatusCode::NOT_FOUND);
        let full = crate::xfsm::error::DoorError::Engine(crate::engine::EngineError::TableFull {
            map: "SW_GATE_GRANTS".into(),
        });
        assert_eq!(status(full.into()), StatusCode::CONFLICT);
        let fw = crate::firewall::FirewallError::NoSlot;
        assert_eq!(status(fw.into()), StatusCode::CONFLICT);
    }

    #[test]
    fn a_handler_body_waits_off_the_async_workers() {
        // One async worker, of either kind of runtime: a body run on it holds back every
        // other task until it ends.
        body_waits_off_the_workers(tokio::runtime::Builder::new_current_thread());
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        multi.worker_threads(1);
        body_waits_off_the_workers(multi);
    }

    #[test]
    fn a_handler_body_that_panics_is_a_500_on_either_runtime() {
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for rt in [multi, single] {
            let r = rt.block_on(async {
                tokio::spawn(off_workers(|| -> Result<(), ApiError> {
                    panic!("a handler's bug")
                }))
                .await
                .unwrap()
            });
            assert_eq!(r.unwrap_err().0, StatusCode::INTERNAL_SERVER_ERROR);
        }
    }

    fn body_waits_off_the_workers(mut b: tokio::runtime::Builder) {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
        use std::sync::Arc;
        // Run off the worker, the ticker goes on while the body waits for it (at most
        // 10 s: the bound only keeps a broken build from hanging).
        let rt = b.build().unwrap();
        let ticks = Arc::new(AtomicU32::new(0));
        let ran = Arc::new(AtomicBool::new(false));
        let (t, seen, r2) = (ticks.clone(), ticks.clone(), ran.clone());
        rt.block_on(async move {
            let ticker = tokio::spawn(async move {
                loop {
                    t.fetch_add(1, SeqCst);
                    tokio::task::yield_now().await;
                }
            });
            // A task, as a request's handler is: on the multi-threaded runtime it runs on
            // the worker (`block_on`'s own future does not).
            let r = tokio::spawn(off_workers(move || {
                // The ticker must move while the body runs (it may have ticked before).
                let first = seen.load(SeqCst);
                let start = std::time::Instant::now();
                while seen.load(SeqCst) == first && start.elapsed().as_secs() < 10 {
                    std::thread::yield_now();
                }
                r2.store(seen.load(SeqCst) > first, SeqCst);
                Ok(Json(json!({})).into_response())
            }))
            .await
            .unwrap();
            assert_eq!(r.unwrap().status(), StatusCode::OK);
            ticker.abort();
        });
        assert!(ran.load(SeqCst), "the body held the only async worker");
    }
}
