//! The host's clocks, and conversions between Unix time and the kernel programs' clock.
//!
//! Kernel programs read `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) plus the test offset in
//! `SW_CLOCK[0]`; [`crate::engine::Engine::kernel_now`] reads that clock, and user space
//! computes expiries in it. This file imports nothing of the workspace, so that any
//! module may tell the time.

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Unix time, whole seconds.
pub fn unix_secs() -> u64 {
    realtime_ns() / 1_000_000_000
}

/// Unix time in milliseconds (`CLOCK_REALTIME`).
pub fn unix_ms() -> u64 {
    realtime_ns() / 1_000_000
}

/// A deadline on the kernel clock (`kernel_now` read with it) as Unix milliseconds: the
/// same instant on another host, whose kernel clock differs.
pub fn kernel_to_unix_ms(deadline_ns: u64, kernel_now: u64) -> u64 {
    unix_ms() + deadline_ns.saturating_sub(kernel_now) / 1_000_000
}

/// Unix milliseconds as a deadline on the kernel clock (`kernel_now` read with it); `None`
/// when the instant has passed.
pub fn unix_ms_to_kernel(at_ms: u64, kernel_now: u64) -> Option<u64> {
    let left = at_ms.saturating_sub(unix_ms());
    (left > 0).then(|| kernel_now + left * 1_000_000)
}

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
