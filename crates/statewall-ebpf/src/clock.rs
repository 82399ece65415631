//! The one clock every kernel program reads.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_ktime_get_coarse_ns},
    macros::map,
    maps::Array,
};
use statewall_common::maps::{CLOCK_SLOTS, CLOCK_SLOT_FROZEN, CLOCK_SLOT_TEST_OFFSET};

#[map(name = "SW_CLOCK")]
static SW_CLOCK: Array<u64> = Array::with_max_entries(CLOCK_SLOTS, 0);

/// Monotonic nanoseconds plus the test offset (zero in production). Tests move time
/// forward by raising the offset, so timeouts are tested without sleeping.
#[inline(always)]
pub fn now_ns() -> u64 {
    now_ns_of(true)
}

/// As [`now_ns`]; from the coarse clock (its time at the last tick, 4 ms apart at 250 Hz:
/// no TSC read, which costs a VM some 20 ns) unless `precise`.
#[inline(always)]
pub fn now_ns_of(precise: bool) -> u64 {
    if let Some(f) = SW_CLOCK.get(CLOCK_SLOT_FROZEN) {
        if *f != 0 {
            return *f;
        }
    }
    let off = match SW_CLOCK.get(CLOCK_SLOT_TEST_OFFSET) {
        Some(v) => *v,
        None => 0,
    };
    let t = if precise {
        unsafe { bpf_ktime_get_ns() }
    } else {
        unsafe { bpf_ktime_get_coarse_ns() }
    };
    t.wrapping_add(off)
}
