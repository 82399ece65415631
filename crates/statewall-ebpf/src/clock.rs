//! The one clock every kernel program reads.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::Array};
use statewall_common::maps::{CLOCK_SLOTS, CLOCK_SLOT_FROZEN, CLOCK_SLOT_TEST_OFFSET};

#[map(name = "SW_CLOCK")]
static SW_CLOCK: Array<u64> = Array::with_max_entries(CLOCK_SLOTS, 0);

/// Monotonic nanoseconds plus the test offset (zero in production). Tests move time
/// forward by raising the offset, so timeouts are tested without sleeping.
#[inline(always)]
pub fn now_ns() -> u64 {
    if let Some(f) = SW_CLOCK.get(CLOCK_SLOT_FROZEN) {
        if *f != 0 {
            return *f;
        }
    }
    let off = match SW_CLOCK.get(CLOCK_SLOT_TEST_OFFSET) {
        Some(v) => *v,
        None => 0,
    };
    unsafe { bpf_ktime_get_ns() }.wrapping_add(off)
}
