//! Running code inside a named network namespace (`/run/netns/NAME`), as the daemon does to
//! attach programs to interfaces that live in one.

use std::{fs::File, io, os::fd::AsRawFd};

/// Runs `f` on a fresh thread whose network namespace is `/run/netns/<name>` (or the
/// caller's own when `name` is `None`). Sockets and interface lookups made in `f` belong to
/// that namespace; the mount namespace (and so bpffs) is unchanged.
pub fn in_netns<R: Send>(name: Option<&str>, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    let Some(name) = name else { return Ok(f()) };
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::other(format!(
                    "setns {path}: {}",
                    io::Error::last_os_error()
                )));
            }
            Ok(f())
        })
        .join()
        .expect("netns thread panicked")
    })
}

/// The index of interface `name` in namespace `netns` now (0: no such interface).
pub(crate) fn ifindex(netns: Option<&str>, name: &str) -> u32 {
    let name = name.to_string();
    in_netns(netns, move || {
        let c = std::ffi::CString::new(name).unwrap_or_default();
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })
    .unwrap_or(0)
}
